"""Synthesize particle images with ground truth (the paper's protocol).

Writes OUT/particles.mrcs, OUT/particles.xmd (ground truth in Xmipp names),
OUT/particles.star, OUT/modes.xmd + OUT/modes/vec.N and OUT/reference.pdb.
Defaults follow the paper: AK modes 7-9 on the helix, uniform orientations,
+-1.625 Å shifts, CTF 200 kV / Cs 2 mm / 5000 Å underfocus, and the paper's
noise chain: rendered at ~0.325 Å/px (2x for the default 128 px at 0.65 Å/px),
SNR 0.1 there, then downscaled (the output images have SNR ~0.4 at 0.65 Å/px,
~1.6 at 1.3 Å/px). --snr-in-output puts the SNR in the output images instead
(harder). The images are not phase-flipped (align, train and predict flip them
from the CTF columns, as the paper does). Running the same command again after
an interruption continues.

Examples:
  deephemnma simulate --structure AK.pdb --modes nma/ --out data/ -n 20000 \\
      --box 64 --pixel-size 1.3
  deephemnma simulate --structure AK.pdb --out hard/ -n 2000 --snr-in-output
  deephemnma simulate --structure AK.pdb --out clean/ -n 100 --no-noise --no-ctf
  deephemnma simulate --structure AK.pdb --out cons/ -n 1000 --consensus-error 3,0.5
"""
from . import run_and_summarize
from ..stages import simulate as stage


def add_args(p):
    d = stage.Config()
    p.add_argument("--structure", required=True, help="reference PDB/mmCIF (e.g. AK.pdb)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("-n", "--number", type=int, default=d.n, help="number of images")
    p.add_argument("--modes", default=d.modes,
                   help="ContinuousFlex modes folder/modes.xmd (default: compute NMA)")
    p.add_argument("--mode-list", default=d.mode_list, help="modes to deform with")
    p.add_argument("--selection", default=d.selection, help="atoms of the structure")
    p.add_argument("--box", type=int, default=d.box, help="image size (px, even)")
    p.add_argument("--pixel-size", type=float, default=d.pixel_size,
                   help="Å/px of the output images")
    p.add_argument("--law", default=d.law, choices=stage.LAWS)
    p.add_argument("--amplitude-scale", type=float, default=d.amplitude_scale)
    p.add_argument("--snr", type=float, default=d.snr)
    p.add_argument("--no-noise", action="store_true")
    p.add_argument("--no-ctf", action="store_true")
    p.add_argument("--defocus", type=float, default=d.defocus, help="Å, positive = underfocus")
    p.add_argument("--voltage", type=float, default=d.voltage, help="kV")
    p.add_argument("--cs", type=float, default=d.cs, help="mm")
    p.add_argument("--q0", type=float, default=d.q0, help="amplitude contrast")
    p.add_argument("--shift-range", type=float, default=d.shift_range,
                   help="shifts U[-r, r] in Å")
    p.add_argument("--render-factor", type=int, default=d.render_factor,
                   help="render at this many times the sampling, then downscale (default: "
                        "the factor closest to the paper's 0.325 Å/px; 2 with "
                        "--snr-in-output)")
    p.add_argument("--snr-in-output", action="store_true",
                   help="the SNR holds in the output images (harder than the paper, whose "
                        "SNR 0.1 is in the 0.325 Å/px rendering, before downscaling)")
    p.add_argument("--snr-at-render", action="store_true",
                   help="the default (the paper's chain); accepted for old scripts")
    p.add_argument("--phase-flip", action="store_true",
                   help="phase-flip the output images (then give --images-flipped to align, "
                        "train and predict)")
    p.add_argument("--sigma", type=float, default=d.sigma, help="atom Gaussian std (Å)")
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--consensus-error", default=None, metavar="DEG,Å",
                   help="also write OUT/consensus.xmd: the particles with poses off the true "
                        "ones by this RMS rotation (degrees, about random axes) and RMS shift "
                        "(Å), as a consensus refinement gives them, e.g. 3,0.5")
    p.add_argument("--device", default=d.device)


def config(args):
    return stage.Config(
        structure=args.structure, out=args.out, n=args.number, modes=args.modes,
        mode_list=args.mode_list, selection=args.selection, box=args.box,
        pixel_size=args.pixel_size, law=args.law, amplitude_scale=args.amplitude_scale,
        noise=not args.no_noise, snr=args.snr, snr_at_render=not args.snr_in_output,
        ctf=not args.no_ctf, defocus=args.defocus, voltage=args.voltage, cs=args.cs,
        q0=args.q0, shift_range=args.shift_range, render_factor=args.render_factor,
        phase_flip=args.phase_flip, sigma=args.sigma, seed=args.seed, device=args.device,
        **consensus_error(args.consensus_error))


def consensus_error(text):
    """``--consensus-error DEG,Å`` -> the config's consensus_angle, consensus_shift."""
    from ..errors import InputError
    if text in (None, ""):
        return {}
    try:
        deg, shift = (float(v) for v in text.split(","))
    except ValueError:
        raise InputError(f"--consensus-error {text}: expected DEG,Å (two numbers, e.g. "
                         "3,0.5)") from None
    return {"consensus_angle": deg, "consensus_shift": shift}


def main(args):
    from ..errors import InputError
    if args.snr_in_output and args.snr_at_render:
        raise InputError("--snr-in-output and --snr-at-render contradict each other")
    return run_and_summarize(stage, config(args))

"""Synthesize particle images with ground truth (the paper's protocol).

Writes OUT/particles.mrcs, OUT/particles.xmd (ground truth in Xmipp names),
OUT/particles.star, OUT/modes.xmd + OUT/modes/vec.N and OUT/reference.pdb.
Defaults follow the paper after its downscaling: AK modes 7-9 on the helix,
uniform orientations, +-1.625 Å shifts, CTF 200 kV / Cs 2 mm / 5000 Å underfocus,
SNR 0.1, rendered at 2x and downscaled.
"""
import os
import time

from ..errors import InputError


def add_args(p):
    p.add_argument("--structure", required=True, help="reference PDB/mmCIF (e.g. AK.pdb)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("-n", "--number", type=int, default=1000, help="number of images")
    p.add_argument("--modes", default=None,
                   help="ContinuousFlex modes folder/modes.xmd (default: compute NMA)")
    p.add_argument("--mode-list", default="7-9", help="modes to deform with")
    p.add_argument("--selection", default="heavy", help="atoms of the structure")
    p.add_argument("--box", type=int, default=128)
    p.add_argument("--pixel-size", type=float, default=0.65, help="Å/px of the output images")
    p.add_argument("--law", default="helix", choices=["helix", "uniform", "clusters"])
    p.add_argument("--amplitude-scale", type=float, default=200.0)
    p.add_argument("--snr", type=float, default=0.1)
    p.add_argument("--no-noise", action="store_true")
    p.add_argument("--no-ctf", action="store_true")
    p.add_argument("--defocus", type=float, default=5000.0, help="Å, positive = underfocus")
    p.add_argument("--voltage", type=float, default=200.0)
    p.add_argument("--cs", type=float, default=2.0)
    p.add_argument("--q0", type=float, default=0.1, help="amplitude contrast")
    p.add_argument("--shift-range", type=float, default=1.625, help="shifts U[-r, r] in Å")
    p.add_argument("--render-factor", type=int, default=None,
                   help="render at this many times the sampling, then downscale (default 2; "
                        "with --snr-at-render, the factor closest to 0.325 Å/px)")
    p.add_argument("--snr-at-render", action="store_true",
                   help="the SNR holds in the rendered images, before downscaling, as in "
                        "the paper (SNR 0.1 at 256 px, 0.325 Å/px; the output images then "
                        "have SNR ~0.4 at 0.65 Å/px, ~1.6 at 1.3 Å/px)")
    p.add_argument("--phase-flip", action="store_true", help="phase-flip the output images")
    p.add_argument("--sigma", type=float, default=1.0, help="atom Gaussian std (Å)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu")


def load_reference(structure_path, selection="heavy", modes_path=None, mode_list="7-9",
                   n_modes=20):
    """Centred structure + selected modes (computed with RTB, 1 residue/block,
    8 Å cutoff when no modes are given)."""
    from ..core.nma import compute_modes, parse_mode_list, read_continuousflex
    from ..core.structure import read_structure
    s, _ = read_structure(structure_path, selection).center()
    wanted = parse_mode_list(mode_list)
    if modes_path:
        modes = read_continuousflex(modes_path, ref_coords=s.coords)
    else:
        if max(wanted) > n_modes:
            n_modes = max(wanted)
        modes = compute_modes(s, n_modes=n_modes, cutoff=8.0,
                              method="anm" if s.is_pseudoatomic else "rtb", block_size=1)
    return s, modes.select(wanted)


def main(args):
    from ..core.simulate import render_factor_for, simulate_to_folder
    if os.path.exists(os.path.join(args.out, "particles.xmd")):
        raise InputError(f"{args.out} already holds particles.xmd; choose another --out")
    s, modes = load_reference(args.structure, args.selection, args.modes, args.mode_list)
    rf = args.render_factor if args.render_factor is not None else (
        render_factor_for(args.pixel_size) if args.snr_at_render else 2)
    if rf < 1:
        raise InputError(f"--render-factor must be >= 1, got {rf}")
    t0 = time.perf_counter()
    table = simulate_to_folder(
        args.out, s, modes, args.number, box=args.box, pixel_size=args.pixel_size,
        amplitudes=args.law, amplitude_scale=args.amplitude_scale,
        snr=None if args.no_noise else args.snr, ctf=not args.no_ctf, defocus=args.defocus,
        voltage=args.voltage, cs=args.cs, q0=args.q0, shift_range=args.shift_range,
        render_factor=rf, phase_flip=args.phase_flip, sigma=args.sigma,
        seed=args.seed, device=args.device, snr_at_render=args.snr_at_render)
    dt = time.perf_counter() - t0
    q = table["nmaDisplacements"]
    print(f"{len(table)} images {args.box}x{args.box} px at {args.pixel_size} Å/px "
          f"in {dt:.1f} s ({len(table) / dt:.0f} images/s) -> {args.out}")
    print(f"modes {list(modes.numbers)}; amplitude ranges: " +
          ", ".join(f"[{a:.0f}, {b:.0f}]" for a, b in zip(q.min(0), q.max(0))))

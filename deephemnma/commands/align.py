"""HEMNMA: elastic + rigid-body alignment of particle images with normal modes.

Writes an .xmd with angleRot angleTilt anglePsi shiftX shiftY nmaDisplacements
cost (Xmipp/ContinuousFlex names), in input order. Work is done in chunks saved
under OUT.parts/: re-running the same command after an interruption continues
where it stopped (a run with other inputs or options starts afresh). Rows with
a non-finite value or an unusable image are left out alone and listed in
OUT.rejected.xmd. Under torchrun, each process aligns every world_size-th chunk
and rank 0 merges.

--from-poses: the particles carry poses (e.g. a consensus refinement's); the
orientations are searched within --cone degrees of each particle's, the shifts
within --shift-window Å of its own, the amplitudes as in the global search, then
a Levenberg-Marquardt refinement (--local-coarse-iters, --local-fine-iters),
each orientation held near the particle's by a Gaussian prior (--pose-sigma)
(benchmarks/bench_from_poses.py, 64 px, starting errors of 2-5 degrees: 3.5-4.2x
faster than the global search, no misses, amplitude error 0.8x its).

Example:
  deephemnma align --particles subset.xmd --modes nma/ --structure AK.pdb \\
      --pixel-size 1.3 --out hemnma/aligned.xmd --outlier-threshold 3.2
"""
from . import run_and_summarize
from ..stages import align as stage


def add_args(p):
    d = stage.Config()
    p.add_argument("--particles", required=True, help=".xmd/.star referencing the images")
    p.add_argument("--modes", required=True, help="modes folder / modes.xmd (ContinuousFlex)")
    p.add_argument("--structure", required=True, help="the reference the modes belong to")
    p.add_argument("--selection", default=d.selection)
    p.add_argument("--mode-list", default=d.mode_list, help="HEMNMA numbers, e.g. 7-9,11")
    p.add_argument("--pixel-size", type=float, required=True, help="Å/px of the images")
    p.add_argument("--out", required=True, help="output .xmd")
    p.add_argument("--pyramid", default=None, help="e.g. 32,64 (default box/2,box)")
    p.add_argument("--angular-step", type=float, default=d.angular_step)
    p.add_argument("--search-amplitude", type=float, default=d.search_amplitude)
    p.add_argument("--max-shift", type=float, default=d.max_shift, help="Å, global search")
    p.add_argument("--candidates", type=int, default=d.n_candidates)
    p.add_argument("--search-corners", type=int, default=d.search_corners,
                   help="global search: references deformed by +-search-amplitude along all "
                        "modes at once (at most this many of the 2^M corners)")
    p.add_argument("--search-pairs", type=int, default=d.search_pairs,
                   help="global search: references deformed by +-search-amplitude along two "
                        "modes at once (at most this many of the 2M(M-1); 0: none)")
    p.add_argument("--amplitude-candidates", type=int, default=d.amplitude_candidates,
                   help="global search: the best candidate's projection direction is also "
                        "refined from its next best amplitudes, this many amplitudes in all")
    p.add_argument("--fine-candidates", type=int, default=d.fine_candidates,
                   help="best candidates of the coarse level refined at the finer levels")
    p.add_argument("--coarse-iters", type=int, default=d.coarse_iters)
    p.add_argument("--fine-iters", type=int, default=d.fine_iters)
    p.add_argument("--from-poses", action="store_true",
                   help="start from the particles' poses (angleRot angleTilt anglePsi, "
                        "shiftX shiftY, e.g. a consensus refinement's): a local orientation and "
                        "shift search instead of the global one (the amplitude search stays "
                        "full)")
    p.add_argument("--cone", type=float, default=d.cone,
                   help="degrees: --from-poses searches orientations within this angle of "
                        "each particle's")
    p.add_argument("--shift-window", type=float, default=d.shift_window,
                   help="Å: --from-poses searches shifts within this distance of each "
                        "particle's (per axis)")
    p.add_argument("--local-candidates", type=int, default=d.local_candidates,
                   help="--from-poses: best amplitudes of the local search refined at the "
                        "coarse level")
    p.add_argument("--local-coarse-iters", type=int, default=d.local_coarse_iters,
                   help="--from-poses: Levenberg-Marquardt iterations at the coarse level "
                        "(the first two thirds on low-passed images); --coarse-iters and "
                        "--fine-iters are the global search's")
    p.add_argument("--local-fine-iters", type=int, default=d.local_fine_iters,
                   help="--from-poses: Levenberg-Marquardt iterations at each finer level")
    p.add_argument("--pose-sigma", type=float, default=d.pose_sigma,
                   help="degrees: --from-poses keeps each orientation near the particle's by "
                        "a Gaussian prior whose RMS angle is this, weighed against the image "
                        "(0: none; the given poses' expected error, e.g. the consensus "
                        "refinement's angular accuracy)")
    add_run_args(p, d)


def add_run_args(p, d):
    """The options align and refine share after their own: CTF, outputs,
    chunks, threads, device (defaults from the stage config ``d``)."""
    p.add_argument("--atom-model", default=d.atom_model,
                   help="atoms as projected: gaussian (std --sigma, weight Z), scattering (one "
                        "Gaussian per element fitted to its electron scattering factor), "
                        "scattering5 (its five Gaussians; slower)")
    p.add_argument("--sigma", type=float, default=d.sigma,
                   help="Å: std of the gaussian atom model")
    p.add_argument("--b-factor", default=d.b_factor, type=stage.parse_b_factor,
                   help="Å² widening every atom (exp(-B s²)), or 'auto': estimated from the "
                        "particles")
    p.add_argument("--images-flipped", action="store_true",
                   help="images are already CTF phase-flipped")
    p.add_argument("--no-ctf", action="store_true", help="ignore CTF columns")
    p.add_argument("--outlier-threshold", type=float, default=d.outlier_threshold,
                   help="also write OUT minus Mahalanobis outliers (paper: 3.2) as OUT_kept.xmd")
    p.add_argument("--chunk", type=int, default=d.chunk)
    p.add_argument("--downscale", type=int, default=d.downscale, metavar="BOX",
                   help="align the images Fourier-downscaled to BOX px (even, >= "
                        f"{stage.MIN_DOWNSCALE}; 0: full size); --pyramid sizes are of the "
                        "downscaled images; shifts are read and written in the images' pixels")
    p.add_argument("--absolute-paths", action="store_true",
                   help="absolute image references in the outputs")
    p.add_argument("--threads", type=int, default=d.threads,
                   help="CPU worker threads, one torch thread each (0: all CPUs)")
    p.add_argument("--device", default=d.device)


def config(args):
    return stage.Config(
        **shared_config(args), angular_step=args.angular_step,
        search_amplitude=args.search_amplitude, max_shift=args.max_shift,
        n_candidates=args.candidates, search_corners=args.search_corners,
        search_pairs=args.search_pairs, amplitude_candidates=args.amplitude_candidates,
        fine_candidates=args.fine_candidates, coarse_iters=args.coarse_iters,
        fine_iters=args.fine_iters, from_poses=args.from_poses,
        cone=args.cone, shift_window=args.shift_window, local_candidates=args.local_candidates,
        local_coarse_iters=args.local_coarse_iters, local_fine_iters=args.local_fine_iters,
        pose_sigma=args.pose_sigma)


def shared_config(args):
    """The config fields align and refine share, from their common options."""
    from ..errors import InputError
    pyramid = None
    if args.pyramid:
        try:
            pyramid = tuple(int(x) for x in args.pyramid.split(","))
        except ValueError:
            raise InputError(f"--pyramid {args.pyramid}: expected sizes like 32,64") from None
    return dict(
        particles=args.particles, modes=args.modes, structure=args.structure,
        selection=args.selection, mode_list=args.mode_list, pixel_size=args.pixel_size,
        out=args.out, pyramid=pyramid, threads=args.threads,
        images_flipped=args.images_flipped, use_ctf=not args.no_ctf,
        outlier_threshold=args.outlier_threshold, chunk=args.chunk, downscale=args.downscale,
        absolute_paths=args.absolute_paths, device=args.device, atom_model=args.atom_model,
        sigma=args.sigma, b_factor=args.b_factor)


def main(args):
    return run_and_summarize(stage, config(args))

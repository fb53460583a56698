"""Local HEMNMA: refine the particles' amplitudes, angles and shifts from
their current values (e.g. the predict command's output, or an alignment),
without HEMNMA's global search.

The particles must carry angleRot angleTilt anglePsi nmaDisplacements
(shiftX shiftY: 0 when absent). Writes the same files as align: OUT.xmd with
angleRot angleTilt anglePsi shiftX shiftY nmaDisplacements cost, in input
order, OUT_kept.xmd without Mahalanobis outliers, OUT.rejected.xmd for rows
with a non-finite value or an unusable image. Resumable (OUT.parts/) and
torchrun-sharded like align. --coarse-iters steps at the coarse pyramid
level first (default 10; 0: none, ~15 % faster but fails more often from
starting errors beyond ~5 degrees), then --fine-iters at full size.

Example:
  deephemnma refine --particles predicted.xmd --modes nma/ --structure AK.pdb \\
      --pixel-size 1.3 --out refined/refined.xmd
"""
from . import run_stage
from ..stages import refine as stage


def add_args(p):
    d = stage.Config()
    p.add_argument("--particles", required=True,
                   help=".xmd/.star with images, angles, shifts and nmaDisplacements")
    p.add_argument("--modes", required=True, help="modes folder / modes.xmd (ContinuousFlex)")
    p.add_argument("--structure", required=True, help="the reference the modes belong to")
    p.add_argument("--selection", default=d.selection)
    p.add_argument("--mode-list", default=d.mode_list,
                   help="HEMNMA numbers of the particles' amplitudes, e.g. 7-9,11")
    p.add_argument("--pixel-size", type=float, required=True, help="Å/px of the images")
    p.add_argument("--out", required=True, help="output .xmd")
    p.add_argument("--pyramid", default=None, help="e.g. 32,64 (default box/2,box)")
    p.add_argument("--coarse-iters", type=int, default=d.refine_coarse_iters,
                   help="optimisation steps at the coarse level first (0: none)")
    p.add_argument("--fine-iters", type=int, default=d.refine_fine_iters,
                   help="optimisation steps at each finer level (full size)")
    p.add_argument("--images-flipped", action="store_true",
                   help="images are already CTF phase-flipped")
    p.add_argument("--no-ctf", action="store_true", help="ignore CTF columns")
    p.add_argument("--outlier-threshold", type=float, default=d.outlier_threshold,
                   help="also write OUT minus Mahalanobis outliers (paper: 3.2) as OUT_kept.xmd")
    p.add_argument("--chunk", type=int, default=d.chunk)
    p.add_argument("--absolute-paths", action="store_true",
                   help="absolute image references in the outputs")
    p.add_argument("--threads", type=int, default=d.threads,
                   help="CPU worker threads, one torch thread each (0: all CPUs)")
    p.add_argument("--device", default=d.device)


def config(args):
    from ..errors import InputError
    pyramid = None
    if args.pyramid:
        try:
            pyramid = tuple(int(x) for x in args.pyramid.split(","))
        except ValueError:
            raise InputError(f"--pyramid {args.pyramid}: expected sizes like 32,64") from None
    return stage.Config(
        particles=args.particles, modes=args.modes, structure=args.structure,
        selection=args.selection, mode_list=args.mode_list, pixel_size=args.pixel_size,
        out=args.out, pyramid=pyramid, refine_coarse_iters=args.coarse_iters,
        refine_fine_iters=args.fine_iters, images_flipped=args.images_flipped,
        use_ctf=not args.no_ctf, outlier_threshold=args.outlier_threshold, chunk=args.chunk,
        threads=args.threads, absolute_paths=args.absolute_paths, device=args.device)


def main(args):
    return run_stage(stage, config(args))

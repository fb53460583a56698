"""Local HEMNMA: refine the particles' amplitudes, angles and shifts from
their current values (e.g. the predict command's output, or an alignment),
without HEMNMA's global search.

The particles must carry angleRot angleTilt anglePsi (shiftX shiftY: 0 when
absent; nmaDisplacements: the amplitudes start at zero when absent, as the
summary says; align --from-poses searches them instead). Writes the same files as align: OUT.xmd with
angleRot angleTilt anglePsi shiftX shiftY nmaDisplacements cost, in input
order, OUT_kept.xmd without Mahalanobis outliers, OUT.rejected.xmd for rows
with a non-finite value or an unusable image. Resumable (OUT.parts/) and
torchrun-sharded like align. --refine-coarse-iters steps at the coarse
pyramid level first (default 10; 0: none, ~15 % faster but fails more often
from starting errors beyond ~5 degrees), then --refine-fine-iters at full size
(the names differ from align's --coarse-iters and --fine-iters, which are the
global search's steps, with other defaults).

Example:
  deephemnma refine --particles predicted.xmd --modes nma/ --structure AK.pdb \\
      --pixel-size 1.3 --out refined/refined.xmd
"""
from . import run_and_summarize
from ..stages import refine as stage
from .align import add_run_args, shared_config


def add_args(p):
    d = stage.Config()
    p.add_argument("--particles", required=True,
                   help=".xmd/.star with images, angles, shifts and (else 0) nmaDisplacements")
    p.add_argument("--modes", required=True, help="modes folder / modes.xmd (ContinuousFlex)")
    p.add_argument("--structure", required=True, help="the reference the modes belong to")
    p.add_argument("--selection", default=d.selection)
    p.add_argument("--mode-list", default=d.mode_list,
                   help="HEMNMA numbers of the particles' amplitudes, e.g. 7-9,11")
    p.add_argument("--pixel-size", type=float, required=True, help="Å/px of the images")
    p.add_argument("--out", required=True, help="output .xmd")
    p.add_argument("--pyramid", default=None, help="e.g. 32,64 (default box/2,box)")
    p.add_argument("--refine-coarse-iters", type=int, default=d.refine_coarse_iters,
                   help="optimisation steps at the coarse level first (0: none)")
    p.add_argument("--refine-fine-iters", type=int, default=d.refine_fine_iters,
                   help="optimisation steps at each finer level (full size)")
    add_run_args(p, d)


def config(args):
    return stage.Config(**shared_config(args), refine_coarse_iters=args.refine_coarse_iters,
                        refine_fine_iters=args.refine_fine_iters)


def main(args):
    return run_and_summarize(stage, config(args))

"""Compare estimated parameters with ground truth (the paper's Tables 1-2).

Per-mode amplitude MAE, angular distance (deg), shift errors (Å) and the RMSD
terms (Å) when the normal modes are given (the amplitudes belong to their
first flexible modes).

Example:
  deephemnma evaluate --est hemnma/aligned.xmd --truth data/particles.xmd \\
      --pixel-size 1.3 --modes nma/ --json hemnma/accuracy.json
"""
from . import run_and_summarize
from ..stages import evaluate as stage


def add_args(p):
    d = stage.Config()
    p.add_argument("--est", required=True, help="estimated .xmd/.star")
    p.add_argument("--truth", required=True, help="ground-truth .xmd/.star")
    p.add_argument("--pixel-size", type=float, required=True, help="Å/px of the shifts")
    p.add_argument("--modes", default=d.modes,
                   help="modes folder (ContinuousFlex layout) for RMSD")
    p.add_argument("--json", default=d.json, help="write the results as JSON")


def config(args):
    return stage.Config(est=args.est, truth=args.truth, pixel_size=args.pixel_size,
                        modes=args.modes, json=args.json)


def main(args):
    return run_and_summarize(stage, config(args))

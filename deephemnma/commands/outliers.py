"""Drop images whose normal-mode amplitudes are far from the majority
(Mahalanobis distance > threshold, 3.2 in the paper).

Rows with non-finite amplitudes are left out alone and listed in
OUT.rejected.xmd; they do not enter the mean and covariance.

Example:
  deephemnma outliers --input hemnma/aligned.xmd --out hemnma/kept.xmd --threshold 3.2
"""
from . import run_and_summarize
from ..stages import outliers as stage


def add_args(p):
    d = stage.Config()
    p.add_argument("--input", required=True, help=".xmd/.star with nmaDisplacements")
    p.add_argument("--out", required=True, help="output .xmd with the kept images")
    p.add_argument("--threshold", type=float, default=d.threshold)
    p.add_argument("--robust", action="store_true", help="robust (MCD) covariance")
    p.add_argument("--absolute-paths", action="store_true",
                   help="absolute image references in the output")


def config(args):
    return stage.Config(input=args.input, out=args.out, threshold=args.threshold,
                        robust=args.robust, absolute_paths=args.absolute_paths)


def main(args):
    return run_and_summarize(stage, config(args))

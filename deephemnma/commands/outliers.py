"""Drop images whose normal-mode amplitudes are far from the majority
(Mahalanobis distance > threshold, 3.2 in the paper)."""


def add_args(p):
    p.add_argument("--input", required=True, help=".xmd with nmaDisplacements")
    p.add_argument("--out", required=True, help="output .xmd with the kept images")
    p.add_argument("--threshold", type=float, default=3.2)
    p.add_argument("--robust", action="store_true", help="robust (MCD) covariance")


def main(args):
    from ..core.outliers import mahalanobis_filter
    from ..io.metadata import read_metadata, write_xmd
    t = read_metadata(args.input)
    t.require(["nmaDisplacements"], "normal-mode amplitude", args.input)
    keep, d = mahalanobis_filter(t["nmaDisplacements"], args.threshold, args.robust)
    out = t.copy()
    out["mahalanobis"] = d
    write_xmd(args.out, out.subset(keep))
    print(f"kept {keep.sum()} of {len(t)} images (Mahalanobis <= {args.threshold}) -> {args.out}")

"""Compare estimated parameters with ground truth (the paper's Tables 1-2).

Per-mode amplitude MAE, angular distance (deg), shift errors (Å) and the RMSD
terms (Å) when the normal modes are given.
"""
import os

from ..errors import InputError


def add_args(p):
    p.add_argument("--est", required=True, help="estimated .xmd/.star")
    p.add_argument("--truth", required=True, help="ground-truth .xmd/.star")
    p.add_argument("--pixel-size", type=float, required=True, help="Å/px of the shifts")
    p.add_argument("--modes", default=None, help="modes folder (ContinuousFlex layout) for RMSD")
    p.add_argument("--json", default=None, help="write the results as JSON")


def main(args):
    from ..core.metrics import evaluate, format_table, save_json
    from ..core.nma import read_continuousflex
    from ..io.metadata import read_metadata
    est, truth = read_metadata(args.est), read_metadata(args.truth)
    vectors = ref = nums = None
    if args.modes:
        m = read_continuousflex(args.modes)
        if "nmaDisplacements" in est:
            k = est["nmaDisplacements"].shape[1]
            flex = [n for n in m.numbers if n > 6]
            if len(flex) < k:
                raise InputError(f"{args.modes}: {len(flex)} flexible modes, metadata has {k}")
            m = m.select(flex[:k])
        vectors, ref, nums = m.vectors, m.ref_coords, list(m.numbers)
    res = evaluate(est, truth, args.pixel_size, ref, vectors, nums)
    print(format_table(res, os.path.basename(args.est)))
    if args.json:
        save_json(res, args.json)

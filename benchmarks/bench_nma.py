"""Normal-mode analysis speed and memory: 20 modes of the ribosome 6ZU5
(CA+P, RTB) and of adenylate kinase (all heavy atoms). Prints a markdown table.

    python benchmarks/bench_nma.py [--shared DIR]   # DIR/structures/mmcif_6zu5.cif (not shipped)
"""
import argparse
import os
import resource
import sys
import time
import tracemalloc
from deephemnma.data import data_file  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))


def peak_rss_gb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 ** 2


def main():
    ap = argparse.ArgumentParser()
    # files not shipped with the package (ContinuousFlex's test set, 6ZU5)
    ap.add_argument("--shared", default=os.environ.get("DEEPHEMNMA_EXTRA_TEST_DATA", os.path.join(
        HERE, "..", "..", "shared", "data")))
    args = ap.parse_args()
    from deephemnma.core.nma import compute_modes
    from deephemnma.core.structure import read_structure
    cases = [
        ("ribosome 6ZU5 CA+P", os.path.join(args.shared, "structures", "mmcif_6zu5.cif"),
         "ca+p", dict(method="rtb", block_size=10, cutoff=20.0)),
        ("ribosome 6ZU5 CA+P (paper: RTB 20 res)", os.path.join(args.shared, "structures",
                                                               "mmcif_6zu5.cif"),
         "ca+p", dict(method="rtb", block_size=20, cutoff=20.0)),
        ("AK heavy atoms", data_file("AK.pdb"), "heavy",
         dict(method="rtb", block_size=1, cutoff=8.0)),
        ("AK heavy atoms", data_file("AK.pdb"), "heavy",
         dict(method="anm", cutoff=8.0)),
    ]
    print("| structure | atoms | method | cutoff Å | modes | read s | NMA s | peak traced GB | peak RSS GB |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, path, sel, kw in cases:
        if not os.path.exists(path):
            print(f"| {name} | missing {path} | | | | | | | |")
            continue
        t0 = time.perf_counter()
        s = read_structure(path, sel)
        t1 = time.perf_counter()
        tracemalloc.start()
        m = compute_modes(s, n_modes=20, **kw)
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        t2 = time.perf_counter()
        meth = kw["method"] + (f" {kw['block_size']} res/block" if kw["method"] == "rtb" else "")
        print(f"| {name} | {len(s)} | {meth} | {kw['cutoff']} | {len(m)} | {t1 - t0:.1f} | "
              f"{t2 - t1:.1f} | {peak / 1024 ** 3:.2f} | {peak_rss_gb():.2f} |")
        sys.stdout.flush()


if __name__ == "__main__":
    main()

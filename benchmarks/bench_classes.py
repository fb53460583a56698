"""The landscape beside discrete classes (the paper's Fig. 8, where the
DeepHEMNMA landscape of EMPIAR-10016 sits beside the 3D classes of FREALIGN),
on synthetic AK amplitudes that carry discrete labels.

The particles come from ``--states`` discrete conformations of AK (centres
on modes 7 and 8, on the paper's helix) with a continuous spread around each
(along the helix, across it and on mode 9). Their amplitudes are the ground
truth plus Gaussian noise of ``--noise`` (the amplitude error of HEMNMA or of
the network; the paper's Table 1: MAE ~7 at 128 px): no image is simulated
or aligned, so this measures the landscape and its groups, not the
alignment. A classifier's labels are the true state with ``--mislabel`` of
them changed to another state at random. The landscape is then run with the
classes coloured (``--class-column``), grouped by k-means (k = the number of
states) and by a split along PC1; each grouping's agreement with the classes
and with the true states is printed (adjusted Rand index, and the fraction
of particles in the group matched to their class by the best one-to-one
matching).

    python benchmarks/bench_classes.py [--n 20000] [--states 3] [--mislabel 0.1]
"""
import argparse
import os
import shutil
import time

import numpy as np


def states(k, scale=200.0):
    """``k`` state centres (k, 3) on modes 7-9: points of the paper's helix
    (q7 = -200 r, q8 = 200 sin(pi r), q9 = 200 cos(pi r)) at r evenly spread
    in [0.1, 0.9], mode 9 set to 0 (it carries a continuous motion only)."""
    from deephemnma.core.simulate import helix_amplitudes
    c = helix_amplitudes(np.linspace(0.1, 0.9, k), scale)
    c[:, 2] = 0.0
    return c


def particles(n, k, noise, mislabel, seed=0, along=40.0, across=15.0, mode9=40.0):
    """(estimated amplitudes (n, 3), true state (n,) 1..k, class label (n,))."""
    rng = np.random.default_rng(seed)
    centres = states(k)
    true = rng.integers(1, k + 1, n)
    # the continuous spread: along the helix (its tangent at the state), across
    # it in the (7, 8) plane, and on mode 9
    r = np.linspace(0.1, 0.9, k)
    tangent = np.stack([-np.ones(k), np.pi * np.cos(np.pi * r), np.zeros(k)], -1)
    tangent /= np.linalg.norm(tangent, axis=1, keepdims=True)
    normal = np.stack([tangent[:, 1], -tangent[:, 0], np.zeros(k)], -1)
    t = true - 1
    q = (centres[t] + rng.normal(0, along, (n, 1)) * tangent[t]
         + rng.normal(0, across, (n, 1)) * normal[t]
         + rng.normal(0, mode9, (n, 1)) * np.array([0.0, 0.0, 1.0]))
    estimated = q + rng.normal(0, noise, q.shape)
    label = true.copy()
    wrong = rng.random(n) < mislabel
    label[wrong] = 1 + (true[wrong] - 1 + rng.integers(1, k, wrong.sum())) % k
    return estimated, true, label


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=20000)
    ap.add_argument("--states", type=int, default=3, choices=(2, 3, 4, 5))
    ap.add_argument("--noise", type=float, default=10.0,
                    help="amplitude error (standard deviation) of the estimated amplitudes")
    ap.add_argument("--mislabel", type=float, default=0.1,
                    help="fraction of particles the classifier puts in another class")
    ap.add_argument("--spread", type=float, default=40.0,
                    help="continuous spread (standard deviation) of a state along the helix")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="/tmp/deephemnma_bench_classes")
    ap.add_argument("--png", default=None, help="copy the coloured landscape here")
    args = ap.parse_args()
    from deephemnma.cli import main as cli
    from deephemnma.core.landscape import class_agreement, format_table
    from deephemnma.io.metadata import Table, read_metadata, write_xmd
    from deephemnma.stages import landscape

    t0 = time.perf_counter()
    q, true, label = particles(args.n, args.states, args.noise, args.mislabel, args.seed,
                               along=args.spread)
    shutil.rmtree(args.out, ignore_errors=True)
    os.makedirs(args.out)
    src = os.path.join(args.out, "particles.xmd")
    write_xmd(src, Table({
        "image": np.array([f"{i + 1:06d}@particles.mrcs" for i in range(args.n)], dtype=object),
        "itemId": np.arange(1, args.n + 1), "nmaDisplacements": q, "ref": label}))
    k = args.states
    print(f"## Landscape vs discrete classes: {args.n} synthetic AK particles, {k} states "
          f"(modes 7-9), spread {args.spread:g} along the helix, amplitude noise {args.noise:g}, "
          f"{100 * args.mislabel:g}% of the class labels wrong\n")
    print("Amplitudes: ground truth + Gaussian noise (no images simulated or aligned). "
          f"Classifier agreement with the true states: "
          f"{100 * (label == true).mean():.1f}% of the particles.\n")
    runs = [("kmeans", "k-means", ["--kmeans", str(k)]),
            ("split", "split along PC1", ["--split", f"1:{args.n // (2 * k)}"])]
    results = []
    for folder, name, extra in runs:
        out = os.path.join(args.out, folder)
        cmd = ["landscape", "--particles", src, "--out", out, "--class-column", "ref"] + extra
        print(f"$ deephemnma {' '.join(cmd)}")
        start = time.perf_counter()
        assert cli(cmd) == 0
        files = landscape.Outputs(out)
        groups = np.full(args.n, -1)
        for g in files.groups():
            groups[read_metadata(files.group(g))["itemId"] - 1] = g - 1
        results.append((name, len(files.groups()), class_agreement(label - 1, groups),
                        class_agreement(true - 1, groups), time.perf_counter() - start))
        print()
    print("| grouping | groups | ARI vs classes | % matched vs classes | ARI vs true states "
          "| % matched vs true states | time s |")
    print("|---|---|---|---|---|---|---|")
    ari_c, m_c = class_agreement(true - 1, label - 1)
    print(f"| the classes themselves | {k} | 1.00 | 100.0 | {ari_c:.2f} | {100 * m_c:.1f} | - |")
    for name, n_groups, (a1, m1), (a2, m2), dt in results:
        print(f"| {name} | {n_groups} | {a1:.2f} | {100 * m1:.1f} | {a2:.2f} | {100 * m2:.1f} "
              f"| {dt:.1f} |")
    truth = [["state"] + [f"class {c}" for c in range(1, k + 1)] + ["total"]]
    for s in range(1, k + 1):
        m = true == s
        truth.append([f"state {s}"] + [int((m & (label == c)).sum()) for c in range(1, k + 1)]
                     + [int(m.sum())])
    print("\nTrue state x class (the simulated classifier):\n")
    print("\n".join("    " + line for line in format_table(truth)))
    png = os.path.join(args.out, "kmeans", "density.png")
    if args.png:
        shutil.copyfile(png, args.png)
        png = args.png
    print(f"\nColoured landscape: {png}")
    print(f"Total time {time.perf_counter() - t0:.1f} s")


if __name__ == "__main__":
    main()

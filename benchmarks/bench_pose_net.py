"""The paper's network vs the pose-aware network (train --pose-input), at equal
epochs, on the demo's data.

Data (cached in ``--work``): ``-n`` synthetic AK particles (modes 7-9 on the
paper's helix, 64 px at 1.3 Å/px, the paper's noise chain and CTF) with
consensus poses (``simulate --consensus-error 3,0.5``: the true poses turned
by 3° RMS and shifted by 0.5 Å RMS); set 1 = the first ``--train-subset``
particles, set 2 = the others. Labels: HEMNMA from the consensus poses on set
1 (``align --from-poses``). Both networks train on the labels of set 1 for
``--epochs`` epochs (the demo's CPU recipe: images seen at ``--input-size``
px, no dropout, batch 32, lr 3e-4) and predict set 2:

- the paper's network: one image channel plus coordinate channels, in-plane
  augmentation; it predicts the poses;
- the pose-aware network: set 1's images at their consensus poses, beside the
  reference's projection there and its derivatives along the modes
  (core.pose_input), trunk ``--trunk``; it predicts set 2 from its consensus
  poses (predicted poses: consensus composed with the predicted correction).

One table: training wall time (the train stage), PC1 |r| (PC1 of the
predicted amplitudes vs that of the true ones), cross-validated R² of the true
amplitudes from the predicted ones (core.metrics), amplitude MAE (mean over
modes), mean angle error; the labels' own (HEMNMA from poses on set 1) and
the consensus poses' angle error for reference.

    OMP_NUM_THREADS=2 nice python benchmarks/bench_pose_net.py -n 3000 \\
        --train-subset 1500 --epochs 30 --work /tmp/bench_pose_net

Small runs to iterate: ``-n 600 --train-subset 300 --epochs 8``.

Measured (2 shared cores under a load of ~10, OMP_NUM_THREADS=2; the pose-aware
network's time includes its Gauss-Newton estimate of the 1,500 images): at 30
epochs the paper's network took 1,332 s for PC1 |r| 0.651, CV R² 0.370, angles
49°; the pose-aware network (ResNet-18, stopped early at epoch 21) 515 s for
0.976, 0.947, 2.20°; with ``--epochs 15`` 295 s for 0.972, 0.939, 2.18°. Its
pose corrections do not improve on the consensus poses (2.17°), those of the
HEMNMA labels do (0.34°).
"""
import argparse
import os
import time

import numpy as np


def _stage(module, **kw):
    t0 = time.perf_counter()
    out = module.run(module.Config(**kw), progress=False)
    return out, time.perf_counter() - t0


def prepare(work, n, n1, seed=0):
    """(sim folder, set1.xmd, set2.xmd, labels.xmd, truth Table, HEMNMA s)."""
    from deephemnma.data import data_file
    from deephemnma.io.metadata import read_metadata, write_xmd
    from deephemnma.stages import align, simulate
    sim = os.path.join(work, "sim")
    if not os.path.exists(os.path.join(sim, "consensus.xmd")):
        _stage(simulate, structure=data_file("AK.pdb"), out=sim, n=n, box=64, pixel_size=1.3,
               consensus_angle=3.0, consensus_shift=0.5, seed=seed)
    cons = read_metadata(os.path.join(sim, "consensus.xmd"))
    truth = read_metadata(os.path.join(sim, "particles.xmd"))
    set1, set2 = (os.path.join(work, f"set{k}.xmd") for k in (1, 2))
    if not os.path.exists(set2):
        write_xmd(set1, cons.subset(np.arange(n1)))
        write_xmd(set2, cons.subset(np.arange(n1, len(cons))))
    labels = os.path.join(work, "hemnma", "aligned.xmd")
    timing = os.path.join(work, "hemnma", "seconds.txt")        # the alignment's wall time
    if not os.path.exists(labels):
        _, seconds = _stage(align, particles=set1, modes=sim,
                            structure=os.path.join(sim, "reference.pdb"), out=labels,
                            pixel_size=1.3, from_poses=True, device="cpu")
        with open(timing, "w") as f:
            f.write(f"{seconds}\n")
    seconds = float(open(timing).read()) if os.path.exists(timing) else float("nan")
    return sim, set1, set2, labels, truth, seconds


def scores(est, truth):
    """PC1 |r|, CV R², amplitude MAE, mean angle error (°) of ``est``."""
    from deephemnma.core.metrics import cv_r2, match_rows, pc1_correlation
    from deephemnma.core.rotations import angular_distance, euler_to_matrix
    ie, it = match_rows(est, truth)
    e, t = est.subset(ie), truth.subset(it)
    q, qt = e["nmaDisplacements"], t["nmaDisplacements"]
    ang = angular_distance(euler_to_matrix(e.angles()), euler_to_matrix(t.angles()))
    return {"pc1": pc1_correlation(q, qt), "r2": cv_r2(q, qt),
            "mae": float(np.abs(q - qt).mean()), "angle": float(np.mean(ang)), "n": len(ie)}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-n", type=int, default=3000)
    ap.add_argument("--train-subset", type=int, default=1500)
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--input-size", type=int, default=32)
    ap.add_argument("--trunk", default="resnet18", help="the pose-aware network's trunk")
    ap.add_argument("--work", default="bench_pose_net")
    ap.add_argument("--only", choices=["paper", "pose"], default=None)
    args = ap.parse_args(argv)
    from deephemnma.io.metadata import read_metadata
    from deephemnma.stages import predict, train
    work = os.path.abspath(args.work)
    os.makedirs(work, exist_ok=True)
    sim, set1, set2, labels, truth, t_align = prepare(work, args.n, args.train_subset)
    common = dict(particles=labels, epochs=args.epochs, batch_size=32, lr=3e-4, dropout=0.0,
                  input_size=args.input_size, device="cpu", restart=True)
    runs = {"paper's network (1 channel + coordinates, augmentation)":
            ("paper", dict(coord_channels=True, augment=True)),
            f"pose-aware network ({args.trunk}, consensus poses)":
            ("pose", dict(pose_input=True, structure=os.path.join(sim, "reference.pdb"),
                          modes=sim, consensus=set1, trunk=args.trunk))}
    rows = {"labels: HEMNMA from consensus poses (set 1)": (
        t_align, scores(read_metadata(labels), truth)),
        # consensus.xmd keeps the true amplitudes: only its angles are a result
        "consensus poses (set 2)": (float("nan"), scores(read_metadata(set2), truth))}
    for label, (key, kw) in runs.items():
        if args.only not in (None, key):
            continue
        out = os.path.join(work, f"net_{key}_{args.epochs}")
        res, _ = _stage(train, out=out, **{**common, **kw})
        pred, _ = _stage(predict, model=res.model, particles=set2,
                         out=os.path.join(work, f"pred_{key}_{args.epochs}.xmd"), device="cpu")
        rows[label] = (res.seconds, scores(read_metadata(pred.particles), truth))
    print(f"\n{args.n} AK particles, 64 px at 1.3 Å/px (paper's noise chain, CTF), consensus "
          f"poses 3°/0.5 Å; labels on {args.train_subset}, predicted {args.n - args.train_subset}; "
          f"{args.epochs} epochs at {args.input_size} px; {os.cpu_count()} CPUs, "
          f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', '')}\n")
    print("| method | training s | PC1 \\|r\\| | CV R² | amplitude MAE | angles ° | n |")
    print("|---|---|---|---|---|---|---|")
    for label, (sec, r) in rows.items():
        if label.startswith("consensus"):      # its amplitudes are the truth's (none estimated)
            print(f"| {label} | | | | | {r['angle']:.2f} | {r['n']} |")
            continue
        print(f"| {label} | {sec:.0f} | {r['pc1']:.3f} | {r['r2']:.3f} | {r['mae']:.1f} | "
              f"{r['angle']:.2f} | {r['n']} |")
    print("(training s: the train stage's wall time (labels row: the alignment's); metrics "
          "against the ground truth)")


if __name__ == "__main__":
    main()

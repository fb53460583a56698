"""The paper's Supplementary Table 3: the network trained on GROUND-TRUTH labels.

What it is: the sensitivity of the learned normal-mode amplitudes to in-plane
rotations, in-plane shifts, noise + CTF and the number of training images
(6,000, or 16,000 made by the paper's augmentation), with the network trained
on the ground truth (independently of HEMNMA). Each row: images simulated with
that row's conditions (uniform projection directions; in-plane rotation psi
uniform or 0; shifts U[-1.625, 1.625] Å or 0; SNR 0.1 + CTF 5000 Å or
neither), not downscaled (``--noise output``: SNR 0.1 in the images the
network sees, as the paper's 256 px images), trained with the train stage on
the ground-truth labels, amplitude errors on the test images beside the
paper's row. Augmented rows: 8,000 originals (scaled) each with one copy
rotated at random and shifted by up to 7 px (``--augment-copies 1``): 16,000
training images; validation and test images are originals (the split keeps a
particle and its copy together; the paper split its 20,000 images after
augmentation). Our network is the joint one (all parameters; the paper trained
one network for the amplitudes).

CPU default: 64 px (1.3 Å/px), --scale 0.02 (6,000 -> 120 training images),
rows 1, 10 and 11 (no rotation/shift/noise; all four with 6,000; with 16,000
augmented). The paper's scale (GPU):

    python benchmarks/bench_supp_table3.py --box 256 --scale 1 --rows all \\
        --schedule paper --input-size 256 --device cuda
"""
import argparse
import json
import os
import tempfile
import time

import numpy as np

import paper


def _yn(v):
    return "yes" if v else "no"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--box", type=int, default=64, help="px (paper: 256 at 0.325 Å/px)")
    ap.add_argument("--scale", type=float, default=0.02,
                    help="fraction of the paper's image counts (6,000/16,000 training, 2,000 "
                         "validation, 2,000 test)")
    ap.add_argument("--rows", default="1,10,11", help="rows of the table (1-11) or 'all'")
    ap.add_argument("--noise", choices=["paper", "output"], default="output",
                    help="output: SNR 0.1 in the images (not downscaled, as Supp. D)")
    ap.add_argument("--schedule", choices=["onecycle", "paper"], default="onecycle")
    ap.add_argument("--epochs", type=int, default=None)
    ap.add_argument("--batch-size", type=int, default=None)
    ap.add_argument("--input-size", type=int, default=None)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--work", default=None)
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    from deephemnma.core.config import PAPER_SCHEDULE, TrainConfig
    rows = range(1, 12) if args.rows == "all" else [int(r) for r in args.rows.split(",")]
    sched = PAPER_SCHEDULE if args.schedule == "paper" else {
        "epochs": 20, "batch_size": TrainConfig.batch_size, "lr": TrainConfig.lr}
    epochs = args.epochs or sched["epochs"]
    batch = args.batch_size or sched["batch_size"]
    insize = args.input_size or (args.box if args.device.startswith("cuda") else args.box // 2)
    work = args.work or tempfile.mkdtemp(prefix="bench_supp3_")
    ps = paper.pixel_size_for(args.box)
    ref = paper.reference()
    n_eval = max(8, int(round(2000 * args.scale)))
    results = []
    print(f"## Supplementary Table 3: network trained on ground-truth amplitudes; {args.box} px "
          f"at {ps:.3g} Å/px seen at {insize} px; noise when on: "
          f"{paper.noise_text(args.noise, args.box)}, CTF 5000 Å (phase-flipped by train and "
          f"predict); {n_eval} validation and {n_eval} test images; {args.schedule} schedule, "
          f"batch {batch}, {epochs} epochs; joint network on {args.device}\n")
    print("| row | training images | in-plane rotation | in-plane shift | noise + CTF | "
          "amplitude MAE mean | mode 7 | mode 8 | mode 9 | paper: mean | paper: mode 7 | "
          "paper: mode 8 | paper: mode 9 | train s |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        n_train, rot, shift, noisy, aug, pmean, p7, p8, p9 = paper.SUPP_TABLE3[r - 1]
        n_orig = int(round((n_train // 2 if aug else n_train) * args.scale))
        n = n_orig + 2 * n_eval
        folder = os.path.join(work, f"row{r}")
        gt = paper.simulate_set(os.path.join(folder, "data"), n, args.box, 100 + r, ref,
                                args.noise if noisy else "none", ctf=noisy, in_plane=rot,
                                shifts=shift, device=args.device)
        res, t_train = paper.train(
            os.path.join(folder, "data", "particles.xmd"), os.path.join(folder, "net"),
            pixel_size=ps, mode_list="7-9", schedule=args.schedule, epochs=epochs,
            batch_size=batch, lr=sched["lr"], patience=sched.get("patience", 100),
            val_fraction=n_eval / n, test_fraction=n_eval / n, input_size=insize,
            augment_copies=1 if aug else 0, device=args.device)
        test = paper.write_rows(gt.subset(np.load(res.split)["test"]),
                                os.path.join(folder, "test.xmd"))
        pred, _ = paper.predict(res.model, os.path.join(folder, "test.xmd"),
                                os.path.join(folder, "pred.xmd"), args.device)
        m = paper.compare(pred, test, ps, ref)
        seen = res.n_train * (2 if aug else 1)
        results.append({"row": r, "training_images": seen, "paper_training_images": n_train,
                        "in_plane_rotation": rot, "in_plane_shift": shift, "noise_ctf": noisy,
                        "augmented": aug, "ours": m, "paper": {
                            "amplitude_mae_mean": pmean, "mode_7": p7, "mode_8": p8,
                            "mode_9": p9}, "train_s": t_train})
        label = f"{seen}" + (f" ({res.n_train} + copies)" if aug else "")
        print(f"| {r} | {label} | {_yn(rot)} | {_yn(shift)} | {_yn(noisy)} | "
              f"{m['amplitude_mae_mean']['mean']:.1f} | "
              + " | ".join(f"{m[k]['mean']:.1f} ± {m[k]['std']:.1f}"
                           for k in ("mode_7", "mode_8", "mode_9"))
              + f" | {pmean:.1f} | " + " | ".join(f"{a:.1f} ± {b:.1f}" for a, b in (p7, p8, p9))
              + f" | {t_train:.0f} |", flush=True)
    print("\n(paper: 6,000 / 16,000 training images at 256 px, "
          "400 epochs on V100 GPUs; training image counts here are the paper's x --scale)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)
    return results


if __name__ == "__main__":
    t0 = time.perf_counter()
    main()
    print(f"\ntotal {time.perf_counter() - t0:.0f} s")

"""The paper's Tables 1-4 experiment: the network trained on HEMNMA labels.

What it is (the paper's protocol at any scale, benchmarks/paper.py): image set
1 (``--n1``, paper 20,000) is aligned by our HEMNMA (the align stage) and
filtered by the Mahalanobis distance (3.2); the network (the train stage, the
joint network unless --architecture separate) trains on the kept rows' HEMNMA
labels, minus ``--val`` validation and ``--small-test`` test rows (paper 2,000
each: 14,055 training images); the small test set gives Table 1 (inferred vs
ground truth, inferred vs HEMNMA, HEMNMA vs ground truth: per-mode mean ±
std) and Table 2 (RMSDs), and image set 2 (``--n2``, paper 50,000) Tables 3-4.
``--labels truth`` trains on the ground truth instead (the setting of the
paper's Supplementary Table 3; bench_supp_table3.py reproduces that table).
Images: the paper's chain (SNR 0.1 at 0.325 Å/px, downscaled; CTF; phase
flipped by align, train and predict), ``--box`` px over the paper's 83 Å field.

CPU default (minutes on 2 cores; the numbers are a small-scale run, not the
paper's): 64 px, 600 + 300 images, 20 epochs, images seen at 32 px.
The paper's scale (GPU):

    python benchmarks/bench_network.py --box 128 --n1 20000 --n2 50000 --val 2000 \\
        --small-test 2000 --input-size 128 --schedule paper --device cuda

Prints markdown tables (ours beside the paper's, means with means) and, with
--json, writes them as JSON.
"""
import argparse
import json
import os
import tempfile
import time

import numpy as np

import paper


def main(argv=None):
    from deephemnma.core.config import PAPER_SCHEDULE, TrainConfig
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--labels", choices=["hemnma", "truth"], default="hemnma")
    ap.add_argument("--box", type=int, default=64, help="px (paper: 128 at 0.65 Å/px)")
    ap.add_argument("--n1", type=int, default=600, help="image set 1 (paper: 20,000)")
    ap.add_argument("--n2", type=int, default=300, help="image set 2 (paper: 50,000)")
    ap.add_argument("--val", type=int, default=60, help="validation images (paper: 2,000)")
    ap.add_argument("--small-test", type=int, default=60, help="paper: 2,000")
    ap.add_argument("--schedule", choices=["onecycle", "paper"], default="onecycle")
    ap.add_argument("--epochs", type=int, default=None)
    ap.add_argument("--batch-size", type=int, default=None)
    ap.add_argument("--lr", type=float, default=None)
    ap.add_argument("--architecture", default=TrainConfig.architecture)
    ap.add_argument("--input-size", type=int, default=None,
                    help="px the network sees (default box/2 on the CPU, box on CUDA)")
    ap.add_argument("--augment-copies", type=int, default=0)
    ap.add_argument("--noise", choices=["paper", "output"], default="paper")
    ap.add_argument("--align-step", type=float, default=None,
                    help="HEMNMA global search step in degrees (default the align stage's)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--work", default=None, help="keep the data, labels and model here")
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    cuda = args.device.startswith("cuda")
    sched = PAPER_SCHEDULE if args.schedule == "paper" else {
        "epochs": 20, "batch_size": TrainConfig.batch_size, "lr": TrainConfig.lr,
        "patience": 100}
    epochs = args.epochs or sched["epochs"]
    batch = args.batch_size or sched["batch_size"]
    lr = args.lr or sched["lr"]
    insize = args.input_size or (args.box if cuda else args.box // 2)
    work = args.work or tempfile.mkdtemp(prefix="bench_network_")
    ps = paper.pixel_size_for(args.box)
    ref = paper.reference()
    t0 = time.perf_counter()
    gt1 = paper.simulate_set(os.path.join(work, "set1"), args.n1, args.box, 1, ref, args.noise,
                             device=args.device)
    gt2 = paper.simulate_set(os.path.join(work, "set2"), args.n2, args.box, 2, ref, args.noise,
                             device=args.device)
    t_sim = time.perf_counter() - t0
    hem = kept = None
    t_hem = 0.0
    if args.labels == "hemnma":
        opts = {} if args.align_step is None else {"angular_step": args.align_step}
        hem, kept, t_hem = paper.hemnma(os.path.join(work, "set1", "particles.xmd"),
                                        os.path.join(work, "set1"),
                                        os.path.join(work, "hemnma", "aligned.xmd"), ps,
                                        args.device, **opts)
        labels = os.path.join(work, "hemnma", "aligned_kept.xmd")
        n_lab = len(kept)
    else:
        labels = os.path.join(work, "set1", "particles.xmd")
        n_lab = len(gt1)
    res, t_train = paper.train(
        labels, os.path.join(work, "net"), pixel_size=ps, mode_list="7-9",
        architecture=args.architecture, schedule=args.schedule, epochs=epochs,
        batch_size=batch, lr=lr, weight_decay=1e-5, patience=sched.get("patience", 100),
        val_fraction=args.val / n_lab, test_fraction=args.small_test / n_lab,
        input_size=insize, augment_copies=args.augment_copies, device=args.device)
    from deephemnma.io.metadata import read_metadata
    train_t = read_metadata(labels)
    split = np.load(res.split)
    small = paper.write_rows(train_t.subset(split["test"]), os.path.join(work, "small.xmd"))
    p_small, _ = paper.predict(res.model, os.path.join(work, "small.xmd"),
                               os.path.join(work, "pred_small.xmd"), args.device)
    t0 = time.perf_counter()
    p_large, pres = paper.predict(res.model, os.path.join(work, "set2", "particles.xmd"),
                                  os.path.join(work, "pred_large.xmd"), args.device)
    t_pred = time.perf_counter() - t0
    truth_small = gt1.subset(np.isin(gt1["itemId"], small["itemId"]))
    cols = {"inferred vs ground truth": paper.compare(p_small, truth_small, ps, ref)}
    if hem is not None:
        cols["inferred vs HEMNMA"] = paper.compare(p_small, small, ps, ref)
        cols["HEMNMA vs ground truth"] = paper.compare(small, truth_small, ps, ref)
    train_truth = gt1.subset(np.isin(gt1["itemId"], train_t.subset(split["train"])["itemId"]))
    cols["predict-the-mean vs ground truth"] = paper.compare(
        paper.predict_the_mean(train_truth, truth_small), truth_small, ps, ref)
    large = {"inferred vs ground truth": paper.compare(p_large, gt2, ps, ref)}
    what = ("HEMNMA labels (the paper's Tables 1-4)" if hem is not None else
            "ground-truth labels (the setting of the paper's Supplementary Table 3)")
    head = (f"{args.architecture} network trained on {what}; {args.box} px at {ps:.3g} Å/px "
            f"seen at {insize} px; {paper.noise_text(args.noise, args.box)}, CTF 5000 Å, phase "
            f"flip; {res.n_train} training / {res.n_val} validation / {res.n_test} small-test "
            f"images ({n_lab} labelled of {args.n1}); {args.schedule} schedule, batch {batch}, "
            f"lr {lr:g}, {res.epochs_done} epochs ({t_train:.0f} s on {args.device})")
    print(f"## Table 1: small test set, {head}\n")
    print(paper.table({**cols, **paper.paper_columns(paper.TABLE1, "paper Table 1")},
                      paper.METRICS[:7]))
    print("\n## Table 2: small test set as RMSDs (Å)\n")
    print(paper.table({"inferred vs ground truth": cols["inferred vs ground truth"],
                       "predict-the-mean": cols["predict-the-mean vs ground truth"],
                       **paper.paper_columns(paper.TABLE2, "paper Table 2")},
                      paper.METRICS[7:]))
    print(f"\n## Tables 3-4: image set 2 ({len(gt2)} images; paper 50,000)\n")
    print(paper.table({**large, **paper.paper_columns(paper.TABLE3, "paper Table 3"),
                       **paper.paper_columns(paper.TABLE4, "paper Table 4")}))
    n_seen = res.n_train * (1 + args.augment_copies) * res.epochs_done
    rates = {"simulate_s": t_sim, "hemnma_s": t_hem,
             "hemnma_images_per_s": (args.n1 / t_hem) if t_hem else None,
             "train_s": t_train, "train_images_per_s": n_seen / max(t_train, 1e-9),
             "predict_images_per_s": len(gt2) / max(t_pred, 1e-9)}
    print("\n## Times\n")
    print("| step | s | images/s |\n|---|---|---|")
    print(f"| simulate {args.n1 + args.n2} images | {t_sim:.0f} | |")
    if t_hem:
        print(f"| HEMNMA on {args.n1} images | {t_hem:.0f} | {rates['hemnma_images_per_s']:.2f} |")
    print(f"| training ({n_seen} images seen) | {t_train:.0f} | "
          f"{rates['train_images_per_s']:.0f} |")
    print(f"| predict {len(gt2)} images (end to end) | {t_pred:.1f} | "
          f"{rates['predict_images_per_s']:.0f} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"setting": head, "table1": cols, "table3": large, "times": rates,
                       "work": work}, f, indent=1)
    return {"table1": cols, "table3": large, "times": rates, "model": res.model, "work": work}


if __name__ == "__main__":
    main()

"""Network benchmark (issue 3): accuracy vs a predict-the-mean baseline on the
paper's synthetic protocol, and training / inference throughput.

CPU default: 64 px (1.3 Å/px), 7,500 images (6,000 train / 750 val / 750 test),
ground-truth labels, a few epochs. Prints markdown tables.

    python benchmarks/bench_network.py [--epochs 6] [--n 7500] [--box 64] [--device cuda]
"""
import argparse
import os
import tempfile
import time

import numpy as np
import torch

from synthetic import noise_label, synthetic

HERE = os.path.dirname(os.path.abspath(__file__))


def main():
    from deephemnma.core.config import TrainConfig
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=7500)
    ap.add_argument("--epochs", type=int, default=6)
    ap.add_argument("--box", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=TrainConfig.batch_size)
    ap.add_argument("--architecture", default=TrainConfig.architecture)
    ap.add_argument("--input-size", type=int, default=32,
                    help="network input size (images are Fourier-downscaled)")
    ap.add_argument("--dropout", type=float, default=TrainConfig.dropout)
    ap.add_argument("--lr", type=float, default=TrainConfig.lr)
    ap.add_argument("--coord-channels", action="store_true")
    ap.add_argument("--out", default=None, help="keep the trained model in this folder "
                    "(e.g. for bench_group_poses.py --model OUT/model.pt)")
    ap.add_argument("--noise", choices=["paper", "output"], default="paper",
                    help="paper: SNR 0.1 at 256 px then downscaled; output: SNR 0.1 at --box")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--shared", default=os.path.join(HERE, "..", "..", "shared", "data"))
    args = ap.parse_args()
    from deephemnma.stages.reference import load_reference
    from deephemnma.core.inference import Predictor
    from deephemnma.core.metrics import evaluate, format_table
    from deephemnma.core.network import DeepHEMNMANet
    from deephemnma.core.models import load_model
    from deephemnma.io.metadata import Table, image_ref, write_xmd
    from deephemnma.io.stacks import write_stack
    from deephemnma.stages import train

    s, modes = load_reference(os.path.join(args.shared, "continuousflex", "AK.pdb"))
    t0 = time.perf_counter()
    imgs, truth, ps = synthetic(s, modes, args.n, args.box, seed=7, noise=args.noise)
    print(f"simulated {args.n} images {args.box} px in {time.perf_counter() - t0:.0f} s")
    out = args.out or tempfile.mkdtemp()
    # the images and their labels as a user gives them to `deephemnma train`
    data = tempfile.mkdtemp()
    write_stack(os.path.join(data, "particles.mrcs"), imgs, ps)
    labelled = truth.copy()
    labelled["image"] = np.array([image_ref(i + 1, "particles.mrcs") for i in range(len(truth))],
                                 dtype=object)
    write_xmd(os.path.join(data, "particles.xmd"), labelled)
    cfg = train.Config(particles=os.path.join(data, "particles.xmd"), out=out, pixel_size=ps,
                       mode_list=",".join(str(int(n)) for n in modes.numbers),
                       architecture=args.architecture, epochs=args.epochs,
                       batch_size=args.batch_size, val_fraction=0.1, test_fraction=0.1,
                       device=args.device, patience=100, input_size=args.input_size,
                       dropout=args.dropout, lr=args.lr, coord_channels=args.coord_channels,
                       restart=True)
    t0 = time.perf_counter()
    res = train.run(cfg, progress=False)
    t_train = time.perf_counter() - t0
    split = np.load(res.split)
    te, tr = split["test"], split["train"]
    nets, meta = load_model(res.model, args.device)
    pred = Predictor(nets, meta, args.device)
    t0 = time.perf_counter()
    p = pred.predict(imgs[te])
    t_inf = time.perf_counter() - t0
    truth_te = truth.subset(te)
    est = Table({"itemId": truth_te["itemId"], "angleRot": p["angles"][:, 0],
                 "angleTilt": p["angles"][:, 1], "anglePsi": p["angles"][:, 2],
                 "shiftX": p["shifts"][:, 0], "shiftY": p["shifts"][:, 1],
                 "nmaDisplacements": p["amplitudes"]})
    # predict-the-mean baseline: training means; for orientations the constant
    # rotation that is the chordal mean of the training rotations
    from deephemnma.core import rotations as R
    tr_t = truth.subset(tr)
    Am = R.euler_to_matrix(tr_t.angles()).mean(0)
    u, _, vt = np.linalg.svd(Am)
    Abar = u @ np.diag([1, 1, np.linalg.det(u @ vt)]) @ vt
    ang_bar = R.matrix_to_euler(Abar)
    base = Table({"itemId": truth_te["itemId"],
                  "angleRot": np.full(len(te), ang_bar[0]), "angleTilt": np.full(len(te), ang_bar[1]),
                  "anglePsi": np.full(len(te), ang_bar[2]),
                  "shiftX": np.full(len(te), tr_t["shiftX"].mean()),
                  "shiftY": np.full(len(te), tr_t["shiftY"].mean()),
                  "nmaDisplacements": np.tile(tr_t["nmaDisplacements"].mean(0), (len(te), 1))})
    r_net = evaluate(est, truth_te, ps, s.coords, modes.vectors, list(modes.numbers))
    r_base = evaluate(base, truth_te, ps, s.coords, modes.vectors, list(modes.numbers))
    print(f"\n## Inferred vs ground truth ({args.architecture} network, {args.box} px images "
          f"seen at {args.input_size} px, {noise_label(args.noise, args.box)}, dropout {args.dropout}, lr {args.lr}, "
          f"batch {args.batch_size}, coordinate channels {args.coord_channels}, "
          f"{res.n_train} training images, {res.epochs_done} epochs, {t_train:.0f} s "
          f"training on {args.device})\n")
    print(format_table({"network": r_net, "predict-the-mean": r_base}))
    print("\npaper (Table 1, 128 px, 14,055 training images, 400 epochs): amplitude MAE 7.5, "
          "angles 2.5 deg, shifts 0.2 Å; RMSD 0.4 / 0.9 / 0.3 Å")
    # throughput ----------------------------------------------------------
    print("\n## Throughput (images/s, one joint network, all parameters, at the full box)\n")
    print("| box | training | inference | device |")
    print("|---|---|---|---|")
    for box in (64, 128):
        net = DeepHEMNMANet({"amplitudes": 3, "orientation": 4, "shifts": 2}).to(args.device)
        opt = torch.optim.AdamW(net.parameters(), 1e-3)
        x = torch.randn(args.batch_size, box, box, device=args.device)
        net.train()
        steps = 3
        t0 = time.perf_counter()
        for _ in range(steps):
            opt.zero_grad()
            sum(v.abs().mean() for v in net(x).values()).backward()
            opt.step()
        tr_rate = steps * args.batch_size / (time.perf_counter() - t0)
        net.eval()
        with torch.no_grad():
            xb = torch.randn(256, box, box, device=args.device)
            net(xb)
            t0 = time.perf_counter()
            net(xb)
            inf_rate = 256 / (time.perf_counter() - t0)
        print(f"| {box} | {tr_rate:.0f} | {inf_rate:.0f} | {args.device} |")
    print(f"\nend-to-end predict of {len(te)} test images with the trained {args.architecture} "
          f"model (incl. conversion): "
          f"{len(te) / t_inf:.0f} images/s")


if __name__ == "__main__":
    main()

"""Simulation and projection speed: projector images/s for AK (1,656
atoms) at 64 and 128 px, and `simulate` of 20,000 images of 64 px at 1.3 Å/px
with the command's default chain, the paper's (helix, CTF, SNR 0.1 at 0.325
Å/px: rendered at 256 px, then downscaled), and with --snr-in-output (SNR 0.1
in the 64 px images, rendered at 128 px).

    python benchmarks/bench_simulate.py [-n 20000]
"""
import argparse
import os
import shutil
import tempfile
import time

import numpy as np
import torch
from deephemnma.data import data_file  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("-n", type=int, default=20000)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    from deephemnma.stages.reference import load_reference
    from deephemnma.core import rotations
    from deephemnma.core.projector import Projector
    from deephemnma.core.simulate import render_factor_for, simulate_to_folder
    s, modes = load_reference(data_file("AK.pdb"))
    print(f"torch threads: {torch.get_num_threads()}, device {args.device}\n")
    print("| projector (AK, 1656 atoms, 3 modes) | box | batch | images/s |")
    print("|---|---|---|---|")
    rng = np.random.default_rng(0)
    for box, ps in ((64, 1.3), (128, 0.65)):
        P = Projector(s.coords, s.weights, modes.vectors, box, ps, device=args.device)
        B = 256
        q = torch.tensor(rng.normal(0, 100, (B, 3)), dtype=torch.float32)
        A = torch.tensor(rotations.euler_to_matrix(rotations.random_euler(B, rng)),
                         dtype=torch.float32)
        sh = torch.zeros(B, 2)
        P(q, A, sh)
        t0 = time.perf_counter()
        reps = 3
        for _ in range(reps):
            P(q, A, sh)
        dt = (time.perf_counter() - t0) / reps
        print(f"| forward | {box} | {B} | {B / dt:.0f} |")
        qq, AA = q.clone().requires_grad_(), A.clone().requires_grad_()
        t0 = time.perf_counter()
        P(qq, AA, sh).square().sum().backward()
        dt = time.perf_counter() - t0
        print(f"| forward + backward | {box} | {B} | {B / dt:.0f} |")
    print("\n| simulate | images | box | time s | images/s | target |")
    print("|---|---|---|---|---|---|")
    chains = [("the paper's chain (default): SNR 0.1 at 0.325 Å/px, render 256 -> 64",
               dict(snr_at_render=True, render_factor=render_factor_for(1.3))),
              ("--snr-in-output: SNR 0.1 in the 64 px images, render 128 -> 64",
               dict(snr_at_render=False, render_factor=2))]
    for label, kw in chains:
        out = tempfile.mkdtemp()
        try:
            t0 = time.perf_counter()
            simulate_to_folder(out, s, modes, args.n, box=64, pixel_size=1.3, quiet=True,
                               device=args.device, snr=0.1, **kw)
            dt = time.perf_counter() - t0
        finally:
            shutil.rmtree(out)
        print(f"| helix, CTF, {label} | {args.n} | 64 | {dt:.1f} | {args.n / dt:.0f} | "
              "< 120 s for 20,000 |", flush=True)


if __name__ == "__main__":
    main()

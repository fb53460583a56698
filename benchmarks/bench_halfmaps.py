"""Gold-standard half maps on synthetic data: does the half-map FSC at 0.143
give the resolution of the full map against the truth (FSC 0.5)?

Simulated AK particles (``deephemnma simulate``'s core: all heavy atoms, one
conformation, uniform projection directions, known poses and shifts, no CTF)
at a few SNRs (in the output images). For each SNR the particles are
reconstructed with the stage's half maps (halves fixed by particle id) and:

* FSC_half: between the two half maps; its 0.143 resolution;
* FSC_truth: between the full map and the truth's map, the reconstruction of
  the noiseless images with the same poses; its 0.5 resolution.

Rosenthal & Henderson (2003): FSC_truth = sqrt(2 FSC_half / (1 + FSC_half)),
so FSC_half = 0.143 where FSC_truth = 0.5. Both are given unmasked and within
the stage's soft mask (the same mask for both); within the mask FSC_half is
also given corrected by phase randomisation (the stage's reported value,
``core.reconstruct.masked_fsc``), with the relative difference of the
(corrected) half-map and truth resolutions, and the mean |sqrt(2 FSC_half /
(1 + FSC_half)) - FSC_truth| over the shells up to the half-map resolution
("curve").

    python benchmarks/bench_halfmaps.py [-n 2000] [--box 64] [--pixel-size 1.3]
"""
import argparse
import os
import time

import numpy as np
import torch
from deephemnma.data import data_file  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("-n", type=int, default=2000)
    ap.add_argument("--box", type=int, default=64)
    ap.add_argument("--pixel-size", type=float, default=1.3)
    ap.add_argument("--snr", default="0.02,0.05,0.1,0.3")
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    from deephemnma.core.reconstruct import (fsc, half_sets, masked_fsc, reconstruct,
                                             reconstruct_halves, resolution_at, soft_mask)
    from deephemnma.core.simulate import simulate
    from deephemnma.io.metadata import Table
    from deephemnma.stages.reconstruct import Config
    from deephemnma.stages.reference import load_reference
    s, modes = load_reference(data_file("AK.pdb"))
    n, box, ps = args.n, args.box, args.pixel_size
    d = Config()

    def sim(snr):
        out = list(simulate(s.coords, s.weights, modes.vectors, n, box, ps, snr=snr,
                            amplitude_scale=0.0, ctf=False, render_factor=2, seed=1,
                            device=args.device))
        return (np.concatenate([im for _, im, _ in out]),
                Table.concatenate([t for *_, t in out]))

    clean, t = sim(None)
    ang, sh = t.angles(), t.shifts()
    truth = reconstruct(clean, ang, sh, pixel_size=ps, device=args.device)
    halves = half_sets(t["itemId"])
    print(f"AK (1656 atoms), {n} particles of {box} px at {ps:g} Å/px (Nyquist "
          f"{2 * ps:.2f} Å), no CTF, known poses; halves {np.bincount(halves)[0]} + "
          f"{np.bincount(halves)[1]}; torch threads {torch.get_num_threads()}, device "
          f"{args.device}; mask: threshold {d.mask_threshold:g} of the 15 Å low-passed map's "
          f"maximum, dilated {d.mask_dilate:g} px, cosine edge {d.soft_edge:g} px\n")
    print("| SNR | mask | FSC_half 0.143 (Å) | corrected (Å) | FSC_truth 0.5 (Å) | difference | "
          "curve | FSC_half 0.5 (Å) | randomised beyond (Å) | reconstruct s |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for snr in [float(x) for x in args.snr.split(",")]:
        imgs, _ = sim(snr)
        t0 = time.perf_counter()
        full, h1, h2 = reconstruct_halves(imgs, ang, halves, sh, pixel_size=ps,
                                          device=args.device)
        dt = time.perf_counter() - t0
        m = soft_mask(full, ps, d.mask_threshold, d.mask_dilate, d.soft_edge)
        c = masked_fsc(h1, h2, m, ps)
        beyond = f"{1 / c['freq'][c['randomised_from']]:.2f}"
        for name, mask in (("none", None), (f"soft ({(m > 0.5).mean():.0%} of box)", m)):
            f, ft = fsc(full, truth, ps) if mask is None else fsc(full * mask, truth * mask, ps)
            raw, fh = ((c["unmasked"], c["unmasked"]) if mask is None
                       else (c["masked"], c["corrected"]))
            r_raw = resolution_at(f, raw, 0.143)
            r_half, r_truth = resolution_at(f, fh, 0.143), resolution_at(f, ft, 0.5)
            up_to = (f > 0) & (f <= 1 / r_half)
            pred = np.sqrt(np.clip(2 * fh / (1 + fh), 0, None))
            curve = np.abs(pred - ft)[up_to].mean()
            print(f"| {snr:g} | {name} | {r_raw:.2f} | "
                  f"{'-' if mask is None else f'{r_half:.2f}'} | {r_truth:.2f} | "
                  f"{100 * (r_half - r_truth) / r_truth:+.1f} % | {curve:.3f} | "
                  f"{resolution_at(f, fh, 0.5):.2f} | {'-' if mask is None else beyond} | "
                  f"{dt:.1f} |", flush=True)


if __name__ == "__main__":
    main()

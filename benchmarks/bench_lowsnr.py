"""Why HEMNMA misses at low SNR: a diagnosis of every miss (angular error > 5 deg).

Images as benchmarks/bench_engines.py renders them with our own engine (AK, modes
7-9, helix law, 64 px at 1.3 Å/px, CTF 300 kV with defocus 0.5-2.5 µm, white noise
at ``--snr`` in the 64 px images). Each set of AlignOptions (``--configs``) aligns
them all; for each miss:

* ``truth costs less``: HEMNMA's refinement started from the true pose (amplitudes,
  angles, shifts; Aligner.refine with the alignment's coarse/fine steps) ends at a
  lower cost than the pose found: a search failure (the truth was not among the
  global search's candidates, or was lost in the refinement);
* ``truth costs more``: the data prefer the wrong pose; no aligner minimising
  this cost finds the truth for that image.

The truth's rank: the first of the global search's separated candidates (as
n_candidates would keep them, up to 64) within ``angular_step`` of the true
orientation (0: the best). Prints one table per configuration (the misses with
their truth rank, costs, error, true amplitudes, viewing direction) and a summary
(misses, search failures vs truth-costs-more, amplitude MAE, images/s).

    cd benchmarks
    nice python bench_lowsnr.py -n 300 --snr 0.1 --configs default \\
        search_pairs=12,amplitude_candidates=3,fine_candidates=2
    nice python bench_lowsnr.py -n 32 --snr 1 --quiet --configs default \\
        search_pairs=12,amplitude_candidates=3,fine_candidates=2

A configuration is ``default`` or comma-separated AlignOptions ``name=value``
(a tuple as ``pyramid=48/64``).
Speeds: this machine, one run each, the same images; compare within a run.
"""
import argparse
import dataclasses
import time

import numpy as np

from bench_engines import clean_ours, degrade, draw, MISS_DEG
from deephemnma.data import data_file


def parse_config(text):
    from deephemnma.core.config import AlignOptions
    if text == "default":
        return {}
    types = {f.name: type(f.default) for f in dataclasses.fields(AlignOptions)}
    out = {}
    for item in text.split(","):
        k, v = item.split("=")
        if "/" in v:
            out[k] = tuple(int(x) for x in v.split("/"))
        else:
            out[k] = types[k](v) if types[k] is not bool else v.lower() in ("1", "true")
    return out


def truth_rank(al, imgs, ctf, true_angles, within):
    """Rank (0 best, 64: not among them) of the first separated global-search
    candidate within ``within`` degrees of the true orientation."""
    import torch
    from deephemnma.core.metrics import angular_errors
    opt = al.opt
    al.opt = dataclasses.replace(opt, n_candidates=64)
    try:
        with torch.no_grad():
            levels, absctf = al._prepare(al._images(imgs), ctf)
            c0 = al.pyramid[0]
            ang, _, _ = al._global_search(levels[c0], absctf[c0])
    finally:
        al.opt = opt
    B, K = ang.shape[:2]
    err = angular_errors(ang.reshape(-1, 3), np.repeat(true_angles, K, 0)).reshape(B, K)
    near = err < within
    return np.where(near.any(1), near.argmax(1), K)


def diagnose(s, modes, imgs, ctf, truth, box, ps, extra, batch=32):
    from deephemnma.core.align import AlignOptions, Aligner
    from deephemnma.core.metrics import angular_errors
    opt = AlignOptions(device="cpu", **extra)
    al = Aligner(s.coords, s.weights, modes.vectors, box, ps, opt)
    t0 = time.perf_counter()
    res = {k: [] for k in ("angles", "shifts", "amplitudes", "cost")}
    for i in range(0, len(imgs), batch):
        idx = np.arange(i, min(len(imgs), i + batch))
        r = al.align(imgs[idx], ctf.subset(idx))
        for k in res:
            res[k].append(r[k])
    dt = time.perf_counter() - t0
    res = {k: np.concatenate(v) for k, v in res.items()}
    ang = angular_errors(res["angles"], truth["angles"])
    miss = np.flatnonzero(ang > MISS_DEG)
    mae = float(np.abs(res["amplitudes"] - truth["amplitudes"]).mean())
    rows = []
    if len(miss):
        ropt = dataclasses.replace(opt, refine_coarse_iters=opt.coarse_iters,
                                   refine_fine_iters=opt.fine_iters)
        ral = Aligner(s.coords, s.weights, modes.vectors, box, ps, ropt)
        at = ral.refine(imgs[miss], ctf.subset(miss), truth["angles"][miss],
                        truth["shifts"][miss], truth["amplitudes"][miss])
        rank = truth_rank(al, imgs[miss], ctf.subset(miss), truth["angles"][miss],
                          opt.angular_step)
        drift = angular_errors(at["angles"], truth["angles"][miss])
        for j, i in enumerate(miss):
            rows.append(dict(i=int(i), err=float(ang[i]), rank=int(rank[j]),
                             found=float(res["cost"][i]), truth=float(at["cost"][j]),
                             drift=float(drift[j]), amp=truth["amplitudes"][i],
                             angles=truth["angles"][i]))
    return dict(n=len(imgs), misses=rows, mae=mae, ips=len(imgs) / dt, seconds=dt,
                ang=ang, res=res)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("-n", type=int, default=300)
    ap.add_argument("--snr", type=float, default=0.1)
    ap.add_argument("--box", type=int, default=64)
    ap.add_argument("--pixel-size", type=float, default=1.3)
    ap.add_argument("--seed", type=int, default=11)
    ap.add_argument("--configs", nargs="+", default=["default"])
    ap.add_argument("--quiet", action="store_true", help="summary only")
    args = ap.parse_args()
    from deephemnma.stages.reference import load_reference
    s, modes = load_reference(data_file("AK.pdb"))
    box, ps, n = args.box, args.pixel_size, args.n
    truth = draw(n, box, ps, args.seed)
    imgs, ctf = degrade(clean_ours(s, modes, truth, box, ps), truth, ps, args.snr,
                        seed=args.seed + int(100 * args.snr))
    summary = []
    for text in args.configs:
        d = diagnose(s, modes, imgs, ctf, truth, box, ps, parse_config(text))
        m = d["misses"]
        search = sum(r["truth"] < r["found"] for r in m)
        summary.append((text, d, search))
        if args.quiet or not m:
            continue
        print(f"## misses of `{text}` ({n} images, SNR {args.snr:g}, {box} px)\n")
        print("| image | error deg | truth rank | cost found | cost from truth | "
              "truth - found | truth drift deg | true amplitudes | true rot/tilt/psi |")
        print("|---|---|---|---|---|---|---|---|---|")
        for r in m:
            print(f"| {r['i']} | {r['err']:.1f} | {r['rank']} | {r['found']:.5f} | "
                  f"{r['truth']:.5f} | {r['truth'] - r['found']:+.5f} | {r['drift']:.1f} | "
                  f"{np.round(r['amp']).astype(int).tolist()} | "
                  f"{np.round(r['angles']).astype(int).tolist()} |")
        print(flush=True)
    print(f"## HEMNMA misses (> {MISS_DEG:g} deg) at SNR {args.snr:g}: {n} images, {box} px, "
          f"{ps} Å/px, CTF 300 kV, our renderer (bench_engines.py), seed {args.seed}\n")
    print("| options | misses | truth costs less (search failure) | of which truth not in "
          "candidates | truth costs more (data prefer it) | amplitude MAE | angle median deg "
          "| images/s |")
    print("|---|---|---|---|---|---|---|---|")
    for text, d, search in summary:
        from deephemnma.core.config import AlignOptions
        K = AlignOptions(**parse_config(text)).n_candidates
        m = d["misses"]
        notin = sum(r["truth"] < r["found"] and r["rank"] >= K for r in m)
        print(f"| {text} | {len(m)} ({100 * len(m) / n:.1f} %) | {search} | {notin} | "
              f"{len(m) - search} ({100 * (len(m) - search) / n:.1f} %) | {d['mae']:.1f} | "
              f"{np.median(d['ang']):.2f} | {d['ips']:.2f} |", flush=True)


if __name__ == "__main__":
    main()

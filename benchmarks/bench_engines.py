"""HEMNMA on images rendered by an engine this project did not write.

AK (heavy atoms) deformed along modes 7-9 (the paper's helix law), one
conformation per image, rendered two ways:

* ``ttsim3d``: the deformed structure written as a PDB (element column),
  its 3D electrostatic potential simulated by ttsim3d (per-element electron
  scattering factors, an added B-factor; no dose or detector filters) at the
  images' sampling, projected by xmippLib's FourierProjector at a random
  orientation and shifted (Xmipp's convention);
* ``ours``: core.projector's equal Gaussians of sigma 1 Å (weights Z),
  rendered 4x finer and Fourier-downscaled, as core.simulate does.

Both then get the same CTF (300 kV, Cs 2.7 mm, Q0 0.1, defocus U[0.5, 2.5] µm
per image; core.ctf) and white noise at the SNR (variance of the CTF-modulated
image / variance of the noise) in the 64 px images. Aligned with modes 7-9 by
HEMNMA (core.align) with the atom models ``gaussian`` (sigma 1 Å, B 0: the
default) and ``scattering`` with the B-factor estimated from the particles
(Aligner.estimate_b_factor on the first ``--b-subset`` images, then all
images aligned with it). A miss: angular error > 5 degrees (bench_align.py).

ttsim3d is run by another Python (its own virtual environment, so that it
cannot change this one's torch)::

    python3 -m venv /tmp/ttsim-venv
    /tmp/ttsim-venv/bin/pip install torch==2.13.0 && /tmp/ttsim-venv/bin/pip install ttsim3d
    python benchmarks/bench_engines.py --renderer /tmp/ttsim-venv/bin/python [-n 200] \
        [--models gaussian] [--from-poses 3]

or ``DEEPHEMNMA_TTSIM_PYTHON``. The clean projections are cached under
bench_output/engines/ (a run without the renderer uses the cache, else skips
the ttsim3d rows with a message). Table 1: correlation of noiseless images
with each atom model at the true poses, and projection speed; table 2:
alignment accuracy (``--from-poses DEG``: also from poses DEG off, as a
consensus refinement leaves them, with and without align --from-poses' pose
prior).
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
RENDER = "--render-maps"
VOLTAGE, CS, Q0 = 300.0, 2.7, 0.1
MISS_DEG = 5.0


def render_maps(job_path):
    """Run by the renderer's Python: ttsim3d maps of the job's PDBs."""
    import torch
    from ttsim3d.models import Simulator, SimulatorConfig
    torch.set_num_threads(1)
    job = json.load(open(job_path))
    cfg = SimulatorConfig(voltage=VOLTAGE, apply_dose_weighting=False, apply_dqe=False,
                          store_volume=False)
    for pdb, mrc in job["items"]:
        # ttsim3d scales B-factors by 0.25 (as cisTEM): 4 B gives exp(-B s^2)
        Simulator(pdb_filepath=pdb, pixel_spacing=job["pixel_size"],
                  volume_shape=(job["box"],) * 3, center_atoms=False, b_factor_scaling=0.0,
                  additional_b_factor=4.0 * job["b_factor"],
                  simulator_config=cfg).export_to_mrc(mrc, device="cpu")


def draw(n, box, ps, seed):
    """Ground truth: amplitudes (helix, modes 7-9), angles, shifts px, defocus Å."""
    from deephemnma.core.rotations import random_euler
    from deephemnma.core.simulate import helix_amplitudes
    rng = np.random.default_rng(seed)
    return dict(amplitudes=helix_amplitudes(rng.uniform(0, 1, n)), angles=random_euler(n, rng),
                shifts=rng.uniform(-1.625, 1.625, (n, 2)) / ps,
                defocus=rng.uniform(5000.0, 25000.0, n))


def clean_ttsim(s, modes, truth, box, ps, b_factor, renderer):
    """Noiseless projections (n, box, box) of ttsim3d maps."""
    import torch
    from deephemnma.core.projector import fourier_shift
    from deephemnma.core.structure import write_pdb
    n = len(truth["angles"])
    out = np.empty((n, box, box))
    with tempfile.TemporaryDirectory() as d:
        items = []
        for i in range(n):
            xyz = s.coords + np.tensordot(truth["amplitudes"][i], modes.vectors, 1)
            write_pdb(os.path.join(d, f"{i}.pdb"), s, xyz)
            items.append((os.path.join(d, f"{i}.pdb"), os.path.join(d, f"{i}.mrc")))
        job = os.path.join(d, "job.json")
        json.dump({"items": items, "box": box, "pixel_size": ps, "b_factor": b_factor},
                  open(job, "w"))
        subprocess.run([renderer, os.path.abspath(__file__), RENDER, job], check=True,
                       env=dict(os.environ, PYTHONPATH=""))
        # xmippLib keeps each FourierProjector's padded volume (~32 MB at 64 px):
        # project in child processes of 20 maps each, whose memory is returned
        from concurrent.futures import ProcessPoolExecutor
        parts = [list(range(i, min(n, i + 20))) for i in range(0, n, 20)]
        with ProcessPoolExecutor(1, max_tasks_per_child=1) as pool:
            for idx, imgs in zip(parts, pool.map(
                    xmipp_projections, [[items[i][1] for i in k] for k in parts],
                    [truth["angles"][k] for k in parts])):
                out[idx] = imgs
    # image(x) = P(x + shift): the particle at minus the shift
    return fourier_shift(torch.tensor(out), -torch.tensor(truth["shifts"])).numpy()


def xmipp_projections(maps, angles):
    """xmippLib FourierProjector projections of the maps at the angles."""
    import xmippLib as xm
    out = []
    for mrc, a in zip(maps, angles):
        V = xm.Image(mrc)
        V.convert2DataType(xm.DT_DOUBLE)
        img = xm.Image()
        img.setDataType(xm.DT_DOUBLE)
        xm.FourierProjector(V, 2.0, 0.5, 1).projectVolume(img, *a)
        out.append(img.getData())
    return np.array(out)


def clean_ours(s, modes, truth, box, ps, factor=4):
    """Noiseless projections of equal sigma-1 Gaussians (core.simulate's model)."""
    import torch
    from deephemnma.core.image import downscale
    from deephemnma.core.projector import Projector
    from deephemnma.core.rotations import euler_to_matrix
    P = Projector(s.coords, s.weights, modes.vectors, box * factor, ps / factor, sigma=1.0,
                  dtype=torch.float64, radius=5.0)
    img = P(truth["amplitudes"], euler_to_matrix(truth["angles"]), truth["shifts"] * factor)
    return downscale(img, box).numpy()


def degrade(clean, truth, ps, snr, seed):
    """CTF per image, then white noise at ``snr`` (float32 images)."""
    import torch
    from deephemnma.core.ctf import CTFParams, apply_ctf
    ctf = CTFParams(truth["defocus"], voltage=VOLTAGE, cs=CS, amplitude_contrast=Q0)
    x = apply_ctf(torch.tensor(clean), ctf, ps)
    g = torch.Generator().manual_seed(seed)
    noise = torch.randn(x.shape, generator=g, dtype=x.dtype)
    x = x + noise * (x.var(dim=(-2, -1), keepdim=True) / snr).sqrt()
    return x.float().numpy(), ctf


def cached(path, make):
    if os.path.exists(path):
        return np.load(path)["clean"]
    clean = make()
    if clean is not None:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        np.savez_compressed(path, clean=clean)
    return clean


def model_table(s, modes, sets, truth, box, ps):
    """Correlation of noiseless images with each atom model at the true poses,
    and the time of one projection batch."""
    import torch
    from deephemnma.core.projector import Projector
    from deephemnma.core.rotations import euler_to_matrix
    from deephemnma.core.scattering import atom_model
    models = [("gaussian sigma 1 Å", "gaussian", 1.0, 0.0), ("gaussian sigma 0.5 Å", "gaussian",
                                                            0.5, 0.0),
              ("scattering (1 Gaussian/element), B 0", "scattering", 1.0, 0.0),
              ("scattering5 (5 Gaussians/atom), B 0", "scattering5", 1.0, 0.0),
              ("scattering, B 80", "scattering", 1.0, 80.0),
              ("scattering5, B 80", "scattering5", 1.0, 80.0)]
    k = min(50, len(truth["angles"]))
    A = torch.tensor(euler_to_matrix(truth["angles"][:k]), dtype=torch.float32)
    q = torch.tensor(truth["amplitudes"][:k], dtype=torch.float32)
    sh = torch.tensor(truth["shifts"][:k], dtype=torch.float32)
    print(f"## 1. Noiseless images vs atom models at the true poses ({k} images, {box} px, "
          f"{ps} Å/px): mean correlation; time of one projection of {k} images\n")
    print("| atom model | " + " | ".join(sets) + " | projection ms |")
    print("|---|" + "---|" * (len(sets) + 1))
    for label, model, sigma, b in models:
        w, sig = atom_model(model, s.weights, s.elements, s.names, sigma, b, pixel_size=ps)
        P = Projector(s.coords, w, modes.vectors, box, ps, sigma=sig, radius=5.0)
        P(q, A, sh)
        t0 = time.perf_counter()
        for _ in range(3):
            img = P(q, A, sh).numpy()
        dt = (time.perf_counter() - t0) / 3 * 1e3
        cells = [f"{np.mean([np.corrcoef(img[i].ravel(), c[i].ravel())[0, 1] for i in range(k)]):.4f}"
                 for c in sets.values()]
        print(f"| {label} | " + " | ".join(cells) + f" | {dt:.0f} |")
    print()


def align_all(s, modes, imgs, ctf, box, ps, model, b_factor, b_subset, batch=32, poses=None,
              **options):
    """HEMNMA of all images (the global search; from ``poses`` = (angles,
    shifts px) with align --from-poses' local search and prior instead)."""
    from deephemnma.core.align import AlignOptions, Aligner
    opt = AlignOptions(atom_model=model, b_factor=b_factor, device="cpu", **options)
    al = Aligner(s.coords, s.weights, modes.vectors, box, ps, opt, elements=s.elements,
                 names=s.names)
    t0 = time.perf_counter()
    est = None
    if b_factor == "auto":
        idx = np.arange(min(b_subset, len(imgs)))
        est, _ = al.estimate_b_factor(imgs[idx], ctf.subset(idx))
        al.set_b_factor(est)
    out = {k: [] for k in ("angles", "shifts", "amplitudes")}
    for i in range(0, len(imgs), batch):
        idx = np.arange(i, min(len(imgs), i + batch))
        if poses is None:
            r = al.align(imgs[idx], ctf.subset(idx))
        else:
            r = al.align_from_poses(imgs[idx], ctf.subset(idx), poses[0][idx], poses[1][idx])
        for k in out:
            out[k].append(r[k])
    return {k: np.concatenate(v) for k, v in out.items()}, est, time.perf_counter() - t0


def main():
    if len(sys.argv) > 2 and sys.argv[1] == RENDER:
        return render_maps(sys.argv[2])
    ap = argparse.ArgumentParser()
    ap.add_argument("-n", type=int, default=200, help="images per condition")
    ap.add_argument("--box", type=int, default=64)
    ap.add_argument("--pixel-size", type=float, default=1.3)
    ap.add_argument("--snr", type=float, nargs="+", default=[1.0, 0.1])
    ap.add_argument("--b-factors", type=float, nargs="+", default=[0.0, 80.0],
                    help="B-factors (Å^2) of the ttsim3d maps")
    ap.add_argument("--b-subset", type=int, default=48,
                    help="images aligned first to estimate the B-factor")
    ap.add_argument("--renderer", default=os.environ.get("DEEPHEMNMA_TTSIM_PYTHON"),
                    help="the Python that has ttsim3d (or DEEPHEMNMA_TTSIM_PYTHON)")
    ap.add_argument("--cache", default=os.path.join(HERE, "..", "bench_output", "engines"))
    ap.add_argument("--seed", type=int, default=11)
    ap.add_argument("--skip-align", action="store_true", help="table 1 only")
    ap.add_argument("--models", nargs="+", default=["gaussian", "scattering"],
                    help="atom models of the aligner (scattering: with the B-factor estimated)")
    ap.add_argument("--from-poses", type=float, default=None, metavar="DEG",
                    help="also align from consensus-like poses (the truth rotated by DEG "
                         "about random axes, shifts 0.5 Å off) with align --from-poses, with "
                         "its default pose prior and without (--pose-sigma 0)")
    args = ap.parse_args()
    import dataclasses
    from deephemnma.core.metrics import angular_errors
    from deephemnma.data import data_file
    from deephemnma.core.scattering import element_symbols
    from deephemnma.stages.reference import load_reference
    s, modes = load_reference(data_file("AK.pdb"))
    s = dataclasses.replace(s, elements=element_symbols(s.elements, s.names))
    box, ps, n = args.box, args.pixel_size, args.n
    truth = draw(n, box, ps, args.seed)
    tag = f"n{n}_b{box}_p{ps}_s{args.seed}"
    sets = {}
    for b in args.b_factors:
        path = os.path.join(args.cache, f"ttsim3d_B{b:g}_{tag}.npz")
        if not os.path.exists(path) and not args.renderer:
            print(f"(no ttsim3d renderer (--renderer / DEEPHEMNMA_TTSIM_PYTHON) and no cache "
                  f"{path}: ttsim3d B {b:g} skipped)")
            continue
        t0 = time.perf_counter()
        sets[f"ttsim3d B {b:g}"] = cached(path, lambda: clean_ttsim(s, modes, truth, box, ps, b,
                                                                    args.renderer))
        print(f"(ttsim3d B {b:g}: {time.perf_counter() - t0:.0f} s to render or load)")
    sets["ours (gaussian sigma 1)"] = clean_ours(s, modes, truth, box, ps)
    print()
    model_table(s, modes, sets, truth, box, ps)
    if args.skip_align:
        return
    print(f"## 2. HEMNMA on {n} images per row ({box} px, {ps} Å/px, CTF 300 kV / Cs 2.7 mm, "
          f"defocus 0.5-2.5 µm, white noise): miss = angular error > {MISS_DEG:g} deg\n")
    print("| images | SNR | atom model (aligner) | B used Å² | angle median deg | "
          "angle mean (hits) deg | misses | amplitude MAE | MAE / ours | s |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    ours_mae = {}
    poses = None
    if args.from_poses is not None:
        from realistic_standin import perturbed_poses
        poses = perturbed_poses(truth["angles"], truth["shifts"], args.from_poses, 0.5 / ps,
                                np.random.default_rng(args.seed + 1))
    order = ["ours (gaussian sigma 1)"] + [k for k in sets if k.startswith("ttsim3d")]
    for name in order:
        for snr in args.snr:
            imgs, ctf = degrade(sets[name], truth, ps, snr, seed=args.seed + int(100 * snr))
            runs = [(m, 0.0 if m == "gaussian" else "auto", m, {}) for m in args.models]
            if args.from_poses is not None:
                from deephemnma.core.config import AlignOptions
                sigma = AlignOptions().pose_sigma
                for v in (sigma, 0.0):
                    runs.append(("gaussian", 0.0, f"gaussian, from poses {args.from_poses:g} "
                                 f"deg off, prior {v:g} deg",
                                 dict(poses=poses, from_poses=True, pose_sigma=v)))
            for model, b, label, extra in runs:
                r, est, dt = align_all(s, modes, imgs, ctf, box, ps, model, b, args.b_subset,
                                       **extra)
                ang = angular_errors(r["angles"], truth["angles"])
                hit = ang <= MISS_DEG
                mae = float(np.abs(r["amplitudes"] - truth["amplitudes"]).mean())
                if name.startswith("ours"):
                    ours_mae.setdefault(snr, mae)
                ratio = mae / ours_mae[snr] if snr in ours_mae else float("nan")
                bs = f"{est:.0f} (auto)" if est is not None else f"{b:g}"
                print(f"| {name} | {snr:g} | {label} | {bs} | {np.median(ang):.2f} | "
                      f"{ang[hit].mean():.2f} | {(~hit).sum()} of {n} ({100 * (~hit).mean():.1f} %)"
                      f" | {mae:.1f} | {ratio:.2f} | {dt:.0f} |", flush=True)
    print("\nMAE / ours: the row's amplitude MAE over that of the default aligner (gaussian) "
          "on our own images at the same SNR.")


if __name__ == "__main__":
    main()

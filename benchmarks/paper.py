"""The paper's synthetic-data experiments (Hamitouche & Jonic 2022, Front. Mol.
Biosci. 9:965645), as functions shared by the benchmarks and gpu_check.py,
and the numbers the paper reports, quoted per table with means and standard
deviations kept apart (``(mean, std)``; the "mean over modes 7-9" has no std).

The paper's protocol (Results, "Performance of DeepHEMNMA with synthetic
data"): AK (4AKE chain A) deformed along modes 7-9 on the helix q7 = -200 r,
q8 = 200 sin(pi r), q9 = 200 cos(pi r); uniform orientations; shifts U[-5, 5]
px at 0.325 Å/px (+-1.625 Å); CTF 200 kV, Cs 2 mm, 5000 Å underfocus; SNR 0.1
in the 256 px / 0.325 Å/px images; phase flip; downscaled to 128 px (0.65
Å/px). 20,000 images (image set 1) are aligned by HEMNMA, the Mahalanobis
filter (3.2) keeps 18,055, the network trains on 14,055 with 2,000 for
validation and 2,000 for the small test set (Tables 1-2); 50,000 more images
(image set 2) are the large test set (Tables 3-4, Fig. 7).

Everything here runs at any scale: the benchmarks default to small CPU sizes
(64 px at 1.3 Å/px, the same field of view) and take the paper's sizes as flags.
Images are written as a user's would be: not phase-flipped, with CTF columns;
align, train and predict flip them (the package's and the paper's chain).
"""
import os
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

# --------------------------------------------------------------------------
# the paper's numbers (means and stds apart; keys as core.metrics.evaluate's)


def _row(mean_over_modes, m7, m8, m9, angles=None, sx=None, sy=None):
    r = {"amplitude_mae_mean": (mean_over_modes, None), "mode_7": m7, "mode_8": m8,
         "mode_9": m9}
    if angles is not None:
        r.update(angles_deg=angles, shift_x_A=sx, shift_y_A=sy)
    return r


# Table 1: small test set (2,000 images of image set 1), 128 px, 0.65 Å/px
TABLE1 = {
    "inferred vs ground truth": _row(7.5, (5.4, 6.5), (8.2, 9.2), (8.9, 10.5), (2.5, 3.3),
                                     (0.2, 0.1), (0.2, 0.1)),
    "inferred vs HEMNMA": _row(6.9, (5.4, 6.7), (7.3, 9.0), (7.9, 9.6), (1.9, 3.4),
                               (0.2, 0.1), (0.2, 0.1)),
    "HEMNMA vs ground truth": _row(6.6, (5.7, 8.4), (6.2, 7.2), (7.8, 7.2), (1.0, 0.9),
                                   (0.2, 0.2), (0.2, 0.2)),
}
# Table 2: Table 1's inferred vs ground truth as RMSDs of the displaced atoms (Å)
TABLE2 = {"inferred vs ground truth": {"rmsd_amplitudes_A": (0.4, 0.2),
                                       "rmsd_angles_A": (0.9, 1.0),
                                       "rmsd_shifts_A": (0.3, 0.2)}}
# Tables 3-4: large test set (50,000 images of image set 2)
TABLE3 = {"inferred vs ground truth": _row(7.8, (6.6, 8.7), (9.5, 10.6), (7.3, 9.9), (2.6, 3.4),
                                           (0.2, 0.2), (0.2, 0.2))}
TABLE4 = {"inferred vs ground truth": {"rmsd_amplitudes_A": (0.4, 0.2),
                                       "rmsd_angles_A": (0.9, 1.2),
                                       "rmsd_shifts_A": (0.3, 0.2)}}
# Supplementary Table 3: network trained on GROUND-TRUTH amplitudes, 256 px
# images (not downscaled), 2,000 test images. Columns: training images,
# in-plane rotation, in-plane shift, noise (SNR 0.1) + CTF (-0.5 um), the
# training set made by augmentation (the table's grey rows), mean over modes,
# mode 7/8/9 (mean, std).
SUPP_TABLE3 = [
    (6000, False, False, False, False, 2.3, (1.5, 2.1), (3.1, 4.5), (2.3, 2.9)),
    (6000, False, False, True, False, 5.8, (3.6, 4.9), (7.3, 10.7), (6.5, 9.1)),
    (16000, False, False, True, True, 4.3, (2.7, 3.5), (5.3, 7.9), (5.0, 6.9)),
    (6000, False, True, False, False, 4.8, (3.0, 4.5), (6.1, 10.1), (5.3, 8.6)),
    (6000, False, True, True, False, 7.9, (4.9, 6.7), (9.8, 14.7), (9.1, 13.3)),
    (6000, True, False, False, False, 16.9, (10.3, 15.4), (19.5, 29.6), (20.7, 33.4)),
    (6000, True, False, True, False, 19.6, (12.0, 17.6), (22.3, 31.9), (24.5, 39.0)),
    (6000, True, True, False, False, 23.5, (14.7, 21.1), (24.4, 34.0), (31.4, 49.1)),
    (16000, True, True, False, True, 11.3, (7.0, 13.7), (12.3, 23.8), (14.7, 32.5)),
    (6000, True, True, True, False, 27.6, (17.1, 23.6), (29.1, 39.4), (36.5, 54.5)),
    (16000, True, True, True, True, 15.3, (9.5, 16.6), (16.7, 27.8), (19.8, 38.7)),
]
# Supplementary Table 4: network on HEMNMA labels, 14,055 training images
SUPP_TABLE4 = {256: _row(20.2, (12.6, 16.8), (20.9, 27.4), (27.1, 36.8)),
               128: _row(7.5, (5.4, 6.5), (8.2, 9.2), (8.9, 10.5))}
# Fig. 7 / Supplementary Fig. 3: ten groups along the first principal axis of
# the inferred amplitudes (large test set), maps from the 256 px images
# (0.325 Å/px; shifts x 2); FSC against the map of each group's centroid
# model. Full groups (inferred poses) and subgroups of 899 images (the smallest
# group) with inferred, ground-truth and HEMNMA poses: ranges over the groups, Å.
FIG7 = {"groups": 10, "subgroup_images": 899, "box": 256, "pixel_size": 0.325,
        "full groups, inferred poses": {"fsc_0.5": (3.6, 4.0), "fsc_0.143": (3.1, 3.2),
                                        "mean_fsc_0.5": 3.8, "mean_fsc_0.143": 3.2},
        "subgroups": {"network": {"fsc_0.5": (3.7, 4.4), "fsc_0.143": (3.1, 3.3)},
                      "ground truth": {"fsc_0.5": (3.6, 3.7), "fsc_0.143": (3.0, 3.1)},
                      "HEMNMA": {"fsc_0.5": (3.7, 4.4), "fsc_0.143": (3.0, 3.3)}}}
# Supplementary Tables 5-7 (128 px): HEMNMA 4 min per image on one CPU core;
# training 19 h per parameter type for 14,000 images on 4 V100 (the paper
# trains 3 networks); inference 5 min for 50,000 images per parameter type on
# one V100 (x 3 types: ~56 images/s for all parameters).
TIMES = {"hemnma_s_per_image_core": 240.0, "train_h_per_type_14000": 19.0,
         "infer_50000_min_per_type": 5.0}
METRICS = ("amplitude_mae_mean", "mode_7", "mode_8", "mode_9", "angles_deg", "shift_x_A",
           "shift_y_A", "rmsd_amplitudes_A", "rmsd_angles_A", "rmsd_shifts_A")


# --------------------------------------------------------------------------
# data and sizes
def ak_pdb():
    """The package's AK.pdb (deephemnma/data: PDB 4AKE chain A)."""
    from deephemnma.data import data_file
    return data_file("AK.pdb")


def pixel_size_for(box):
    """Å/px keeping the paper's field of view (128 px at 0.65 Å/px, 83.2 Å)."""
    return 0.65 * 128 / box


def reference(structure=None):
    """(centred AK Structure, modes 7-9), as every stage loads them."""
    from deephemnma.stages.reference import load_reference
    return load_reference(structure or ak_pdb())


def simulate_set(folder, n, box, seed, ref=None, noise="paper", ctf=True, in_plane=True,
                 shifts=True, device="cpu", pixel_size=None):
    """The paper's synthetic AK images in ``folder`` (particles.mrcs, ground truth
    particles.xmd with CTF columns, modes/ + modes.xmd, reference.pdb), not
    phase-flipped. ``noise``: 'paper' (SNR 0.1 at ~0.325 Å/px, then downscaled),
    'output' (SNR 0.1 in these images; at 256 px / 0.325 Å/px both are the
    paper's), or 'none'. Returns the ground-truth Table (image references
    resolve from ``folder``)."""
    from deephemnma.core.simulate import render_factor_for, simulate_to_folder
    from deephemnma.io.metadata import read_metadata
    s, modes = ref or reference()
    ps = pixel_size or pixel_size_for(box)
    kw = dict(snr=0.1, snr_at_render=True, render_factor=render_factor_for(ps))
    if noise == "output":
        kw.update(snr_at_render=False, render_factor=2)
    elif noise == "none":
        kw.update(snr=None, snr_at_render=False, render_factor=2)
    elif noise != "paper":
        raise ValueError(f"noise: paper, output or none, not {noise!r}")
    simulate_to_folder(folder, s, modes, n, box=box, pixel_size=ps, quiet=True, seed=seed,
                       ctf=ctf, shift_range=1.625 if shifts else 0.0, in_plane=in_plane,
                       device=device, **kw)
    return read_metadata(os.path.join(folder, "particles.xmd"))


def noise_text(noise, box, pixel_size=None):
    ps = pixel_size or pixel_size_for(box)
    if noise == "paper":
        from deephemnma.core.simulate import render_factor_for
        f = render_factor_for(ps)
        return (f"SNR 0.1 at {ps / f:.3g} Å/px ({box * f} px) then downscaled to {box} px, "
                "the paper's chain")
    if noise == "output":
        return f"SNR 0.1 in the {box} px images"
    return "no noise"


def downscale_set(src_folder, dst_folder, box, device="cpu", chunk=1024):
    """The images of ``src_folder`` Fourier-cropped to ``box`` px (same field:
    pixel size x N/box, shifts / (N/box)) in ``dst_folder``/particles.mrcs +
    particles.xmd (ground truth and CTF kept). Returns (Table, factor N/box)."""
    import torch
    from deephemnma.core.image import downscale
    from deephemnma.io.metadata import image_ref, read_metadata, write_xmd
    from deephemnma.io.stacks import StackWriter, open_stack
    t = read_metadata(os.path.join(src_folder, "particles.xmd"))
    st = open_stack(os.path.join(src_folder, "particles.mrcs"))
    N = st.shape[-1]
    k = N / box
    ps = float(st.pixel_size) * k if getattr(st, "pixel_size", None) else None
    os.makedirs(dst_folder, exist_ok=True)
    w = StackWriter(os.path.join(dst_folder, "particles.mrcs"), len(st), box, ps)
    for s in range(0, len(st), chunk):
        x = torch.as_tensor(np.asarray(st[s:s + chunk]), device=device)
        w.write(s, downscale(x, box).cpu().numpy())
    w.close()
    out = t.copy()
    out["shiftX"], out["shiftY"] = t["shiftX"] / k, t["shiftY"] / k
    out["image"] = np.array([image_ref(i + 1, "particles.mrcs") for i in range(len(t))],
                            dtype=object)
    out.root = dst_folder
    write_xmd(os.path.join(dst_folder, "particles.xmd"), out)
    return read_metadata(os.path.join(dst_folder, "particles.xmd")), k


def write_rows(table, path):
    """An .xmd of some rows of a table (image references rebased)."""
    from deephemnma.io.metadata import read_metadata, write_xmd
    write_xmd(path, table)
    return read_metadata(path)


# --------------------------------------------------------------------------
# the stages
def hemnma(particles, data_folder, out, pixel_size, device="cpu", progress=False, **options):
    """Our HEMNMA (the align stage) on ``particles`` with the modes and the
    reference of ``data_folder`` (a simulate_set folder); the paper's
    Mahalanobis filter (3.2) writes OUT_kept.xmd. -> (aligned Table, kept
    Table, seconds)."""
    from deephemnma.io.metadata import read_metadata
    from deephemnma.stages import align
    cfg = align.Config(particles=particles, modes=data_folder,
                       structure=os.path.join(data_folder, "reference.pdb"), out=out,
                       pixel_size=pixel_size, device=device, outlier_threshold=3.2, **options)
    t0 = time.perf_counter()
    res = align.run(cfg, progress=progress)
    dt = time.perf_counter() - t0
    return read_metadata(res.particles), read_metadata(res.kept), dt


def train(particles, out, progress=False, **options):
    """The train stage (-> its Outputs and the seconds it took)."""
    from deephemnma.stages import train as stage
    cfg = stage.Config(particles=particles, out=out, restart=True, **options)
    t0 = time.perf_counter()
    res = stage.run(cfg, progress=progress)
    return res, time.perf_counter() - t0


def predict(model, particles, out, device="cpu", batch_size=256, progress=False, **options):
    """The predict stage -> (predicted Table, its Outputs)."""
    from deephemnma.io.metadata import read_metadata
    from deephemnma.stages import predict as stage
    res = stage.run(stage.Config(model=model, particles=particles, out=out, device=device,
                                 batch_size=batch_size, **options), progress=progress)
    return read_metadata(res.particles), res


def compare(est, truth, pixel_size, ref=None):
    """core.metrics.evaluate with the reference atoms and modes 7-9 (RMSDs)."""
    from deephemnma.core.metrics import evaluate
    s, modes = ref or reference()
    return evaluate(est, truth, pixel_size, s.coords, modes.vectors, list(modes.numbers))


def predict_the_mean(train_truth, test_truth):
    """A baseline table (core.metrics.predict_the_mean): every test row gets
    the training rows' mean amplitudes and shifts and their chordal-mean
    orientation."""
    from deephemnma.core.metrics import predict_the_mean as baseline
    return baseline(train_truth, test_truth)


# --------------------------------------------------------------------------
# tables
def _cell(v):
    if v is None:
        return ""
    if isinstance(v, dict):
        return f"{v['mean']:.2f} ± {v['std']:.2f}"
    mean, std = v
    return f"{mean:.1f}" + ("" if std is None else f" ± {std:.1f}")


def table(columns, metrics=METRICS):
    """Markdown: one row per metric, one column per {name: results}; results
    are core.metrics.evaluate dicts (ours, "mean ± std") or the paper's
    {metric: (mean, std)} (quoted as printed)."""
    names = list(columns)
    head = [f"{n} (n={columns[n]['n']})" if "n" in columns[n] else n for n in names]
    lines = ["| metric | " + " | ".join(head) + " |", "|---|" + "---|" * len(names)]
    for m in metrics:
        cells = [_cell(columns[n].get(m)) for n in names]
        if any(cells):
            lines.append(f"| {m} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def paper_columns(tab, prefix):
    return {f"{prefix}: {k}": v for k, v in tab.items()}


# --------------------------------------------------------------------------
# Fig. 7: groups along PC1 and their maps
def pc1_groups(amplitudes, k=10, trim=0.02):
    """Labels (n,) of ``k`` equal-width groups along the first principal axis
    of ``amplitudes`` between its ``trim`` and 1 - ``trim`` quantiles (-1:
    outside), and the PC1 coordinates."""
    from deephemnma.core.landscape import fit_pca, transform
    x = transform(fit_pca(amplitudes, 2), amplitudes)[:, 0]
    lo, hi = np.quantile(x, [trim, 1 - trim])
    lab = np.clip(np.searchsorted(np.linspace(lo, hi, k + 1), x, side="right") - 1, 0, k - 1)
    return np.where((x >= lo) & (x <= hi), lab, -1), x


def centroid_map(amplitudes, box, pixel_size, ref=None, device="cpu"):
    """The map (box^3, numpy) of the atomic model at the mean ``amplitudes``
    (the group's centroid), Gaussian atoms as in the simulation."""
    import torch
    from deephemnma.core.projector import atoms_to_volume
    s, modes = ref or reference()
    x = modes.deform(np.asarray(amplitudes, float).mean(0))
    return atoms_to_volume(torch.as_tensor(x, device=device),
                           torch.as_tensor(s.weights, device=device), box,
                           pixel_size).cpu().numpy()


def group_fsc(images, table, rows, poses, scale, pixel_size, ref_map, device="cpu"):
    """FSC resolutions (Å) of the maps reconstructed from ``images`` (a Stack,
    not phase-flipped; CTF from ``table``) at the ``rows`` with each of
    ``poses`` {name: (angles (n, 3), shifts (n, 2) in px of the pose images)},
    shifts multiplied by ``scale`` -> {name: {"fsc_0.5", "fsc_0.143"}}."""
    from deephemnma.core.ctf import CTFParams
    from deephemnma.core.reconstruct import fsc_resolution, reconstruct
    rows = np.sort(np.asarray(rows))
    imgs = np.asarray(images[rows])
    ctf = CTFParams.from_table(table.subset(rows))
    out = {}
    for name, (ang, sh) in poses.items():
        vol = reconstruct(imgs, np.asarray(ang)[rows], np.asarray(sh)[rows] * scale, ctf,
                          pixel_size, device=device)
        r = fsc_resolution(vol, ref_map, pixel_size)
        out[name] = {"fsc_0.5": float(r["res_0.5"]), "fsc_0.143": float(r["res_0.143"])}
    return out

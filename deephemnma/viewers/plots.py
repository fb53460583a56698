"""The viewers' figures, from arrays or stage outputs (no protocol needed):
the normal modes (eigenvalues, collectivity), the amplitudes of a set of
particles (histograms, pairs of modes, PCA landscape, cost), maps (central
slices, FSC) and mode animations. Every amplitude is labelled by its HEMNMA mode number.

Figures are made with pyplot (a viewer shows them); under MPLBACKEND=Agg
they are only drawn, and :func:`save` writes them."""
import os

import numpy as np

from .common import mode_label

__all__ = ["nma_figure", "amplitude_figure", "map_figure", "draw_fsc", "write_mode_animations",
           "class_table_figure", "save"]


def save(fig, path, dpi=90):
    """Write ``fig`` as a PNG, atomically; returns ``path``."""
    from ..utils import atomic_path
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=dpi, format="png")
    return path


def _read_modes_table(modes_xmd):
    """(numbers, eigenvalues, collectivity) from a ContinuousFlex modes.xmd."""
    from ..core.nma import mode_number
    from ..io.metadata import read_xmd
    t = read_xmd(modes_xmd)
    if "order_" in t:
        numbers = np.asarray(t["order_"], dtype=int)
    else:
        numbers = np.array([mode_number(f) or k + 1 for k, f in enumerate(t["nmaModefile"])])
    eig = np.asarray(t["nmaEigenval"], float) if "nmaEigenval" in t else \
        np.full(len(t), np.nan)
    col = np.asarray(t["nmaCollectivity"], float) if "nmaCollectivity" in t else \
        np.full(len(t), np.nan)
    return numbers, eig, col


def nma_figure(modes_xmd=None, numbers=None, eigenvalues=None, collectivity=None):
    """Eigenvalue and collectivity of each normal mode against its HEMNMA
    number (from ``modes_xmd``, or the arrays). The rigid-body modes 1-6 are
    drawn grey. Returns the figure."""
    import matplotlib.pyplot as plt
    from ..core.nma import is_rigid
    if modes_xmd is not None:
        numbers, eigenvalues, collectivity = _read_modes_table(modes_xmd)
    numbers = np.asarray(numbers, dtype=int)
    rigid = np.array([is_rigid(n) for n in numbers])
    colors = np.where(rigid, "0.7", "C0")
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    ax = axes[0]
    ax.bar(numbers, np.asarray(eigenvalues, float), color=colors)
    flex = np.asarray(eigenvalues, float)[~rigid]
    if flex.size and np.all(flex[np.isfinite(flex)] > 0):
        ax.set_yscale("log")
    ax.set_xlabel("mode (HEMNMA number)")
    ax.set_ylabel("eigenvalue")
    ax.set_title("eigenvalues (grey: rigid-body modes 1-6)")
    ax = axes[1]
    ax.bar(numbers, np.asarray(collectivity, float), color=colors)
    ax.set_ylim(0, 1)
    ax.set_xlabel("mode (HEMNMA number)")
    ax.set_ylabel("collectivity")
    ax.set_title("collectivity (fraction of atoms moved)")
    for a in axes:
        a.set_xticks(numbers if len(numbers) <= 30 else numbers[::max(1, len(numbers) // 15)])
    fig.tight_layout()
    return fig


def amplitude_figure(amplitudes, numbers, cost=None, title=""):
    """The amplitudes of a set of particles (n, k), without ground truth:
    one histogram per mode, the density of the first two modes against each
    other, the PCA landscape (PC1, PC2) and, with ``cost`` (n,), the
    alignment cost histogram. ``numbers``: the k HEMNMA mode numbers (the
    labels). Rows with a non-finite value are left out. Returns the figure."""
    import matplotlib.pyplot as plt
    q = np.asarray(amplitudes, dtype=np.float64)
    q = q.reshape(len(q), -1)
    numbers = [int(n) for n in numbers]
    if len(numbers) != q.shape[1]:
        raise ValueError(f"{q.shape[1]} amplitudes per particle, {len(numbers)} mode numbers")
    ok = np.isfinite(q).all(1)
    q = q[ok]
    panels = ["hist"] + (["pair", "pca"] if q.shape[1] >= 2 and len(q) >= 3 else [])
    if cost is not None:
        cost = np.asarray(cost, float)[ok]
        panels.append("cost")
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.8), squeeze=False)
    axes = dict(zip(panels, axes[0]))
    ax = axes["hist"]
    for k, n in enumerate(numbers):
        ax.hist(q[:, k], bins=min(60, max(5, len(q) // 5)), histtype="step", lw=1.2,
                label=mode_label(n))
    ax.set_xlabel("amplitude")
    ax.set_ylabel("images")
    ax.set_title("amplitude histograms")
    ax.legend(fontsize=8)
    if "pair" in axes:
        ax = axes["pair"]
        ax.hexbin(q[:, 0], q[:, 1], gridsize=60, bins="log", mincnt=1, cmap="viridis")
        ax.set_xlabel(f"{mode_label(numbers[0])} amplitude")
        ax.set_ylabel(f"{mode_label(numbers[1])} amplitude")
        ax.set_title(f"{mode_label(numbers[0])} vs {numbers[1]}")
    if "pca" in axes:
        from ..core.landscape import fit_pca, transform
        pca = fit_pca(q, 2)
        c = transform(pca, q)
        ax = axes["pca"]
        ax.hexbin(c[:, 0], c[:, 1], gridsize=60, bins="log", mincnt=1, cmap="viridis")
        r = pca["explained_variance_ratio"]
        ax.set_xlabel(f"PC1 ({100 * r[0]:.0f} %)")
        ax.set_ylabel(f"PC2 ({100 * r[1]:.0f} %)")
        ax.set_title("landscape (PCA of modes " + ", ".join(map(str, numbers)) + ")")
    if "cost" in axes:
        ax = axes["cost"]
        ax.hist(cost[np.isfinite(cost)], bins=50)
        ax.set_xlabel("cost (lower is better)")
        ax.set_title("alignment cost")
    fig.suptitle(title or f"{len(q)} particles")
    fig.tight_layout()
    return fig


def class_table_figure(rows, title=""):
    """The particles per class and group (rows of the landscape's
    classes.tsv, header first) as a table figure; the "total" row and column
    in bold. Returns the figure."""
    import matplotlib.pyplot as plt
    header, body = [str(c) for c in rows[0]], [[str(c) for c in r] for r in rows[1:]]
    fig, ax = plt.subplots(figsize=(min(14, 1.6 + 1.1 * len(header)),
                                    min(12, 1.0 + 0.3 * (len(body) + 1))))
    ax.axis("off")
    table = ax.table(cellText=body, colLabels=header, loc="center", cellLoc="right")
    table.auto_set_font_size(False)
    table.set_fontsize(9)
    for (r, c), cell in table.get_celld().items():
        if r == 0 or c == 0 or header[c] == "total" or body[r - 1][0] == "total":
            cell.set_text_props(weight="bold")
    ax.set_title(title or "particles per class and group")
    fig.tight_layout()
    return fig


def read_fsc(path):
    """The FSC written by the fsc stage (its ``--json``): dict with 'freq'
    (1/Å), 'fsc', 'res_0.5' and 'res_0.143' (Å)."""
    import json
    with open(path) as f:
        return json.load(f)


def draw_fsc(ax, fsc):
    """The FSC curve of ``fsc`` (:func:`read_fsc`) on the axes ``ax``, with
    the 0.5 and 0.143 thresholds and their resolutions."""
    ax.plot(fsc["freq"], fsc["fsc"], color="C0")
    for th, key, color in ((0.5, "res_0.5", "C1"), (0.143, "res_0.143", "C2")):
        ax.axhline(th, ls="--", lw=0.8, color=color,
                   label=f"{th:g}: {fsc[key]:.2f} Å" if fsc.get(key) else f"{th:g}")
    ax.set_xlabel("spatial frequency (1/Å)")
    ax.set_ylabel("FSC")
    ax.set_ylim(-0.1, 1.05)
    ax.set_title("FSC")
    ax.legend(fontsize=8, loc="upper right")


def draw_fsc_halves(ax, r):
    """The half-map FSC ``r`` (the reconstruct stage's OUT_fsc_halves.json),
    unmasked, masked (corrected by phase randomisation, and uncorrected) and
    that of the phase-randomised halves, on the axes ``ax``, with the 0.143
    threshold and the resolutions."""
    from ..stages.fsc import half_map_curves
    for y, style, label in half_map_curves(r):
        ax.plot(r["freq"], y, label=label, **style)
    ax.axhline(0.143, ls="--", lw=0.8, color="C2")
    ax.set_xlabel("spatial frequency (1/Å)")
    ax.set_ylabel("FSC")
    ax.set_ylim(-0.1, 1.05)
    ax.set_title("half-map FSC")
    ax.legend(fontsize=8, loc="upper right", title="at 0.143", title_fontsize=8)


def map_figure(path, fsc_json=None, title="", halves_json=None):
    """The central slices of the map at ``path`` in its three directions;
    with ``fsc_json`` (the fsc stage's JSON), its FSC curve; with
    ``halves_json`` (the reconstruct stage's OUT_fsc_halves.json), the FSC
    between its half maps. Returns the figure."""
    import matplotlib.pyplot as plt
    from ..io.stacks import read_volume
    vol, vs = read_volume(path)
    nz, ny, nx = vol.shape
    slices = [(vol[nz // 2], f"XY (z = {nz // 2})", "x", "y"),
              (vol[:, ny // 2, :], f"XZ (y = {ny // 2})", "x", "z"),
              (vol[:, :, nx // 2], f"YZ (x = {nx // 2})", "y", "z")]
    n = len(slices) + (1 if fsc_json else 0) + (1 if halves_json else 0)
    fig, axes = plt.subplots(1, n, figsize=(3.5 * n, 3.9), squeeze=False)
    axes = axes[0]
    for ax, (img, name, xl, yl) in zip(axes, slices):
        ax.imshow(img, cmap="gray", origin="lower", interpolation="nearest")
        ax.set_title(f"central slice {name}", fontsize=9)
        ax.set_xlabel(xl)
        ax.set_ylabel(yl)
        ax.set_xticks([])
        ax.set_yticks([])
    if fsc_json:
        draw_fsc(axes[len(slices)], read_fsc(fsc_json))
    if halves_json:
        draw_fsc_halves(axes[-1], read_fsc(halves_json))
    size = f"{nx} x {ny} x {nz} voxels" + (f" of {vs:.3g} Å" if vs else "")
    fig.suptitle(f"{title or os.path.basename(path)} ({size})", fontsize=10)
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    return fig


def write_mode_animations(modes_xmd, reference_pdb, folder, numbers=None, frames=20,
                          max_shift=8.0):
    """One multi-model PDB per flexible mode (``folder/mode_N.pdb``, N its
    HEMNMA number): the reference moved along the mode from -A to +A in
    ``frames`` models, A chosen so that the atom moving most moves by
    ``max_shift`` Å; with a ChimeraX script ``mode_N.cxc`` that opens it as a
    trajectory and plays it back and forth (``open mode_N.cxc`` in ChimeraX)
    and a VMD script ``mode_N.vmd``. ``reference_pdb``: the atoms the modes
    move (the NMA's reference.pdb, all its atoms). Returns the PDB paths."""
    from ..core.nma import is_rigid, read_continuousflex
    from ..core.structure import read_pdb, write_pdb
    from ..errors import InputError
    from ..utils import atomic_path
    s = read_pdb(reference_pdb)        # no ProDy: viewers run under python -O
    modes = read_continuousflex(modes_xmd, s.coords)
    wanted = [int(n) for n in modes.numbers if not is_rigid(n)] if numbers is None else \
        [int(n) for n in numbers]
    modes = modes.select(wanted)
    if int(frames) < 2:
        raise InputError(f"frames must be >= 2, got {frames}")
    os.makedirs(folder, exist_ok=True)
    paths = []
    t = np.linspace(-1.0, 1.0, int(frames))
    for k, n in enumerate(modes.numbers):
        v = modes.vectors[k]
        a = max_shift / max(np.linalg.norm(v, axis=1).max(), 1e-12)
        models = s.coords[None] + (a * t)[:, None, None] * v[None]
        pdb = os.path.join(folder, f"mode_{int(n)}.pdb")
        write_pdb(pdb, s, models, remarks=[
            f"REMARK   1 DEEPHEMNMA MODE {int(n)}: {int(frames)} MODELS, AMPLITUDE "
            f"{-a:.4g} TO {a:.4g} (MAX ATOM SHIFT {max_shift:g} A)"])
        name = os.path.basename(pdb)
        with atomic_path(pdb[:-4] + ".cxc") as tmp, open(tmp, "w") as f:
            f.write(f"open {name} coordsets true\nstyle stick\ncolor bychain\n"
                    f"coordset #1 1,{int(frames)} loop 100 bounce true\n")
        with atomic_path(pdb[:-4] + ".vmd") as tmp, open(tmp, "w") as f:
            f.write(f"mol new {name} type pdb waitfor all\nmol modstyle 0 top NewCartoon\n"
                    "animate style rock\nanimate forward\n")
        paths.append(pdb)
    return paths

"""The conformational landscape (Stage 3): PCA of amplitudes, groups of images
in that space, and animations of the reference along its axes.

* :func:`fit_pca` / :func:`transform` / :func:`inverse`: PCA (scikit-learn's
  SVD) stored as plain arrays (npz) so new particles land in the same space;
* group selection: :func:`select_rectangle`, :func:`select_polygon`,
  :func:`select_expression` (``"PC1 > 100 and PC2 < 0"``, parsed safely),
  :func:`split_axis` (quasi-uniform groups along an axis with a minimum size and
  trimmed tails, the paper's Fig. 9), :func:`kmeans_groups`;
* :func:`density_plot`: hexbin PNG with log counts (fine for 10^6 points),
  drawn on a bare matplotlib Figure: no pyplot, no backend is chosen here;
* :func:`axis_trajectory`: amplitudes along a principal axis (inverse PCA), to
  be applied to the reference atoms for movies.
"""
from __future__ import annotations

import ast
import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Union

import numpy as np

from ..errors import InputError

if TYPE_CHECKING:
    from matplotlib.axes import Axes

    from .structure import Structure

PathLike = Union[str, os.PathLike]     # a path as str or pathlib.Path

__all__ = ["fit_pca", "transform", "inverse", "save_pca", "load_pca", "select_rectangle",
           "select_polygon", "select_expression", "split_axis", "kmeans_groups",
           "density_plot", "draw_apart", "axis_trajectory", "write_animation"]


def fit_pca(amplitudes: np.ndarray, n_components: int = 2) -> dict[str, np.ndarray]:
    """PCA of (n, M) amplitudes with ``n_components`` <= min(n, M) axes: a dict
    of arrays (mean (M,), components (k, M), explained_variance (k,) and its
    ratio)."""
    x = np.asarray(amplitudes, dtype=np.float64)
    if x.ndim != 2 or len(x) < 2:
        raise InputError(f"PCA needs at least 2 amplitude vectors, got shape {x.shape}")
    if not np.isfinite(x).all():
        raise InputError("amplitudes contain NaN or infinite values")
    k = int(n_components)
    if not 1 <= k <= min(x.shape):
        raise InputError(f"PCA of {len(x)} vectors of {x.shape[1]} amplitudes: components "
                         f"must be in [1, {min(x.shape)}], got {k}")
    from sklearn.decomposition import PCA
    p = PCA(n_components=k, svd_solver="full").fit(x)
    return {"mean": p.mean_, "components": p.components_,
            "explained_variance": p.explained_variance_,
            "explained_variance_ratio": p.explained_variance_ratio_}


def transform(pca: dict[str, np.ndarray], amplitudes: np.ndarray) -> np.ndarray:
    """Coordinates (n, k) of amplitudes (n, M) on the principal axes."""
    return (np.asarray(amplitudes, float) - pca["mean"]) @ pca["components"].T


def inverse(pca: dict[str, np.ndarray], coords: np.ndarray) -> np.ndarray:
    """Amplitudes (n, M) at coordinates (n, k) on the principal axes."""
    return np.asarray(coords, float) @ pca["components"] + pca["mean"]


PCA_KEYS = ("mean", "components", "explained_variance", "explained_variance_ratio")


def save_pca(pca: dict[str, np.ndarray], path: PathLike) -> None:
    """Write a PCA (:func:`fit_pca`) as .npz (atomic)."""
    from ..utils import atomic_path
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.savez(f, **{k: np.asarray(pca[k]) for k in PCA_KEYS})


def load_pca(path: PathLike) -> dict[str, np.ndarray]:
    """A PCA saved by :func:`save_pca`; InputError when the file is not one."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"PCA file not found: {path}")
    try:
        with np.load(path, allow_pickle=False) as z:
            pca = {k: z[k] for k in z.files}
    except Exception as e:      # not an npz (zip) file, truncated...
        raise InputError(f"{path}: not a PCA file ({type(e).__name__})") from None
    missing = [k for k in PCA_KEYS if k not in pca]
    if missing:
        raise InputError(f"{path}: not a PCA file (no {', '.join(missing)})")
    m, c = pca["mean"], pca["components"]
    if m.ndim != 1 or c.ndim != 2 or c.shape[1] != len(m) or not len(c) or \
            not (np.isfinite(m).all() and np.isfinite(c).all()):
        raise InputError(f"{path}: not a usable PCA (mean {m.shape}, components {c.shape})")
    return pca


def select_rectangle(coords: np.ndarray, xmin: float, xmax: float, ymin: float, ymax: float,
                     axes: tuple[int, int] = (0, 1)) -> np.ndarray:
    """Mask of the points inside [xmin, xmax] x [ymin, ymax] (edges included)."""
    x, y = coords[:, axes[0]], coords[:, axes[1]]
    return (x >= xmin) & (x <= xmax) & (y >= ymin) & (y <= ymax)


def select_polygon(coords: np.ndarray, vertices: np.ndarray | Sequence[Sequence[float]],
                   axes: tuple[int, int] = (0, 1)) -> np.ndarray:
    """Mask of the points inside the polygon ``vertices`` ((V, 2), V >= 3)."""
    from matplotlib.path import Path
    v = np.asarray(vertices, float)
    if v.ndim != 2 or len(v) < 3:
        raise InputError("a polygon needs at least 3 vertices")
    return Path(v).contains_points(coords[:, list(axes)])


_ALLOWED = (ast.Expression, ast.BoolOp, ast.And, ast.Or, ast.UnaryOp, ast.Not, ast.USub,
            ast.UAdd, ast.Compare, ast.Lt, ast.LtE, ast.Gt, ast.GtE, ast.Eq, ast.NotEq,
            ast.BinOp, ast.Add, ast.Sub, ast.Mult, ast.Div, ast.Pow, ast.Name, ast.Load,
            ast.Constant)


def select_expression(coords: np.ndarray, expr: str) -> np.ndarray:
    """Boolean mask from an expression on PC1, PC2, ... (and/or/not, comparisons,
    arithmetic). Raises InputError for bad syntax or unknown names."""
    try:
        tree = ast.parse(expr, mode="eval")
    except SyntaxError as e:
        raise InputError(f"cannot parse selection '{expr}': {e.msg}") from None
    names = {f"PC{i + 1}": coords[:, i] for i in range(coords.shape[1])}
    for node in ast.walk(tree):
        if not isinstance(node, _ALLOWED):
            raise InputError(f"selection '{expr}': '{type(node).__name__}' is not allowed "
                             "(use comparisons, and/or/not, arithmetic on PC1, PC2, ...)")
        if isinstance(node, ast.Name) and node.id not in names:
            raise InputError(f"selection '{expr}': unknown axis '{node.id}' "
                             f"(available: {', '.join(names)})")
        if isinstance(node, ast.Constant) and not isinstance(node.value, (int, float)):
            raise InputError(f"selection '{expr}': only numbers are allowed as constants")

    def ev(node):
        if isinstance(node, ast.Expression):
            return ev(node.body)
        if isinstance(node, ast.BoolOp):
            vals = [np.asarray(ev(v), bool) for v in node.values]
            out = vals[0]
            for v in vals[1:]:
                out = (out & v) if isinstance(node.op, ast.And) else (out | v)
            return out
        if isinstance(node, ast.UnaryOp):
            v = ev(node.operand)
            return ~np.asarray(v, bool) if isinstance(node.op, ast.Not) else (
                -v if isinstance(node.op, ast.USub) else v)
        if isinstance(node, ast.Compare):
            left = ev(node.left)
            out = np.ones(len(coords), bool)
            for op, comp in zip(node.ops, node.comparators):
                right = ev(comp)
                out &= {ast.Lt: np.less, ast.LtE: np.less_equal, ast.Gt: np.greater,
                        ast.GtE: np.greater_equal, ast.Eq: np.equal,
                        ast.NotEq: np.not_equal}[type(op)](left, right)
                left = right
            return out
        if isinstance(node, ast.BinOp):
            a, b = ev(node.left), ev(node.right)
            return {ast.Add: np.add, ast.Sub: np.subtract, ast.Mult: np.multiply,
                    ast.Div: np.divide, ast.Pow: np.power}[type(node.op)](a, b)
        if isinstance(node, ast.Name):
            return names[node.id]
        return node.value
    res = np.asarray(ev(tree))
    if res.dtype != bool or res.shape != (len(coords),):
        raise InputError(f"selection '{expr}' is not a condition on the points")
    return res


def split_axis(coords: np.ndarray, axis: int = 0, min_size: int = 900, trim: float = 0.02,
               max_groups: int = 20) -> np.ndarray:
    """Quasi-uniform groups along one axis (the paper's Fig. 9): drop the
    ``trim`` fraction of points at each tail, then split the remaining range into
    the largest number of equal-width intervals that all hold >= ``min_size``
    points. Returns group labels (n,) with -1 for points not in any group."""
    x = np.asarray(coords)[:, axis]
    n = len(x)
    if n < min_size:
        raise InputError(f"{n} points: too few for groups of at least {min_size}")
    lo, hi = np.quantile(x, [trim, 1 - trim])
    labels = np.full(n, -1)
    for k in range(min(max_groups, n // min_size), 0, -1):
        edges = np.linspace(lo, hi, k + 1)
        lab = np.clip(np.searchsorted(edges, x, side="right") - 1, 0, k - 1)
        inside = (x >= lo) & (x <= hi)
        counts = np.bincount(lab[inside], minlength=k)
        if counts.min() >= min_size:
            labels[inside] = lab[inside]
            return labels
    raise InputError(f"cannot make groups of at least {min_size} points along axis "
                     f"{axis + 1} (only {((x >= lo) & (x <= hi)).sum()} points after trimming)")


def kmeans_groups(coords: np.ndarray, k: int, seed: int = 0) -> np.ndarray:
    """k-means labels (n,) in 0..k-1 (fixed seed: reproducible)."""
    from sklearn.cluster import KMeans
    if k < 1 or k > len(coords):
        raise InputError(f"k-means: k must be in [1, {len(coords)}], got {k}")
    return KMeans(n_clusters=k, n_init=10, random_state=seed).fit_predict(coords)


def draw_apart(ax: Axes, x: np.ndarray, y: np.ndarray, apart: np.ndarray | None,
               label: str) -> None:
    """Draw the points ``apart`` ((n,) bool, or None) of x, y over a density
    on the matplotlib axes ``ax``: orange dots named ``label`` (with their
    count) in a legend. Used by :func:`density_plot` and the landscape viewer."""
    if apart is None or not np.any(apart):
        return
    apart = np.asarray(apart, bool)
    ax.scatter(x[apart], y[apart], s=4, c="orange", alpha=0.8, linewidths=0,
               label=f"{label} ({apart.sum()})")
    ax.legend(loc="upper right", fontsize=8, markerscale=4)


def draw_groups(ax: Axes, x: np.ndarray, y: np.ndarray, labels: np.ndarray | None) -> None:
    """Each group's number (``labels`` (n,): 0-based group of each point, -1
    for none; None: no groups) and size, in red at the mean of its points on
    the matplotlib axes ``ax``, on a light box (readable over the density
    and a selection). Used by :func:`density_plot` and the landscape viewer."""
    if labels is None:
        return
    labels = np.asarray(labels)
    for g in np.unique(labels[labels >= 0]):
        m = labels == g
        ax.annotate(f"{g + 1}\n({m.sum()})", (x[m].mean(), y[m].mean()), color="red",
                    ha="center", va="center", fontsize=8, weight="bold",
                    bbox=dict(boxstyle="round,pad=0.1", fc="white", ec="none", alpha=0.7))


def density_plot(coords: np.ndarray, path: PathLike, labels: np.ndarray | None = None,
                 title: str = "", axes: tuple[int, int] = (0, 1), gridsize: int = 120,
                 apart: np.ndarray | None = None, apart_label: str = "shown apart") -> None:
    """Hexbin density (log counts) of the points on two axes (one axis: against
    zero), each group's number and size at its mean; PNG written atomically.
    ``apart`` (n,) bool: points also drawn on their own, as orange dots over
    the density (e.g. the HEMNMA-labelled particles of a combined landscape),
    named ``apart_label`` in the legend.
    Uses a bare Figure (Agg canvas): works whatever pyplot backend is set."""
    from matplotlib.figure import Figure
    from ..utils import atomic_path
    coords = np.asarray(coords)
    x = coords[:, axes[0]]
    two = coords.shape[1] > axes[1]
    y = coords[:, axes[1]] if two else np.zeros(len(coords))
    fig = Figure(figsize=(6, 5))
    ax = fig.subplots()
    hb = ax.hexbin(x, y, gridsize=gridsize, bins="log", mincnt=1, cmap="viridis")
    fig.colorbar(hb, ax=ax, label="images (log)")
    draw_apart(ax, x, y, apart, apart_label)
    draw_groups(ax, x, y, labels)
    ax.set_xlabel(f"PC{axes[0] + 1}")
    ax.set_ylabel(f"PC{axes[1] + 1}" if two else "")
    ax.set_title(title or f"{len(coords)} images")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)


def axis_trajectory(pca: dict[str, np.ndarray], coords: np.ndarray, axis: int = 0,
                    n_frames: int = 10, span: float = 2.0) -> np.ndarray:
    """Amplitudes (n_frames, M) along principal ``axis`` from -span to +span
    standard deviations of the data's coordinates on that axis."""
    sd = np.asarray(coords)[:, axis].std()
    t = np.linspace(-span * sd, span * sd, n_frames)
    c = np.zeros((n_frames, pca["components"].shape[0]))
    c[:, axis] = t
    return inverse(pca, c)


def write_animation(path_prefix: str, structure: Structure, models: np.ndarray) -> str:
    """Multi-model PDB plus ChimeraX (.cxc) and VMD (.vmd) scripts that play it."""
    from ..utils import atomic_path
    from .structure import write_pdb
    pdb = path_prefix + ".pdb"
    write_pdb(pdb, structure, models)
    name = os.path.basename(pdb)
    with atomic_path(path_prefix + ".cxc") as tmp, open(tmp, "w") as f:
        f.write(f"open {name} coordset true\nstyle stick\ncolor bychain\n"
                f"coordset #1 1,{len(models)} loop 100 bounce true\n")
    with atomic_path(path_prefix + ".vmd") as tmp, open(tmp, "w") as f:
        f.write(f"mol new {name} type pdb waitfor all\nmol modstyle 0 top NewCartoon\n"
                "animate style rock\nanimate forward\n")
    return pdb

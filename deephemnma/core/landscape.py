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
  with class labels (e.g. the discrete classes of RELION, cryoSPARC or
  FREALIGN) each class in its own colour over the density;
* classes: :func:`class_codes` (labels -> codes and names), :func:`draw_classes`,
  :func:`class_table` (particles per class and group), :func:`class_agreement`
  (adjusted Rand index and matched fraction between classes and groups);
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
           "density_plot", "draw_apart", "draw_groups", "class_codes", "class_name", "class_colours",
           "draw_classes", "class_table", "format_table", "write_table", "class_agreement",
           "axis_trajectory", "write_animation"]


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


def _class_key(v):
    """A class label as a sortable key: (0, number) or (1, text); None: missing."""
    if v is None:
        return None
    if isinstance(v, (bytes, np.bytes_)):
        v = v.decode()
    if isinstance(v, str):
        v = v.strip()
        if not v:
            return None
        try:
            f = float(v)
        except ValueError:
            return (1, v)
    else:
        try:
            f = float(v)
        except (TypeError, ValueError):
            return (1, str(v))
    if not np.isfinite(f):
        return None
    return (0, int(f) if f == int(f) else f)


def class_codes(values: np.ndarray | Sequence) -> tuple[np.ndarray, list]:
    """The classes of ``values`` (n,) (numbers, or texts such as "open"):
    (codes (n,) in 0..K-1, -1 where the value is missing (empty, NaN); the K
    distinct labels in order, numbers first (ints where whole))."""
    keys = [_class_key(v) for v in np.asarray(values, dtype=object).ravel()]
    distinct = sorted({k for k in keys if k is not None})
    index = {k: i for i, k in enumerate(distinct)}
    codes = np.array([-1 if k is None else index[k] for k in keys], dtype=np.int64)
    return codes, [k[1] for k in distinct]


def class_name(label) -> str:
    """A class's name in legends and tables: "class 3" for a number, the text
    otherwise."""
    if isinstance(label, (int, np.integer)):
        return f"class {int(label)}"
    if isinstance(label, (float, np.floating)):
        return f"class {float(label):g}"
    return str(label)


def class_colours(k: int) -> list:
    """``k`` distinct RGBA colours: tab10 up to 10 classes, tab20 up to 20,
    evenly spaced hues beyond."""
    import matplotlib
    if k <= 10:
        return [matplotlib.colormaps["tab10"](i) for i in range(k)]
    if k <= 20:
        return [matplotlib.colormaps["tab20"](i) for i in range(k)]
    cmap = matplotlib.colormaps["gist_rainbow"]
    return [cmap(i / k) for i in range(k)]


def draw_classes(ax: Axes, x: np.ndarray, y: np.ndarray, codes: np.ndarray, names: Sequence[str],
                 max_points: int = 30000, seed: int = 0) -> None:
    """Each point of class ``codes`` (n,) (0..K-1; -1: none, not drawn) as a
    dot in its class's colour, in random order (no class hides another
    wholesale), at most ``max_points`` of them; a legend entry per class: its
    name (``names``) and its number of points. Used by :func:`density_plot`
    and the landscape viewer."""
    codes = np.asarray(codes)
    colours = class_colours(len(names))
    shown = np.random.default_rng(seed).permutation(np.flatnonzero(codes >= 0))[:max_points]
    if len(shown):
        ax.scatter(x[shown], y[shown], s=4, c=[colours[c] for c in codes[shown]], alpha=0.7,
                   linewidths=0, rasterized=True)
    for k, name in enumerate(names):
        ax.scatter([], [], s=12, color=colours[k], label=f"{name} ({int((codes == k).sum())})")
    ax.legend(loc="upper right", fontsize=7 if len(names) <= 12 else 6, markerscale=1.5,
              ncol=1 if len(names) <= 12 else 2, framealpha=0.8)


def class_table(codes: np.ndarray, names: Sequence[str],
                groups: np.ndarray | None = None) -> list[list]:
    """Particles per class and group: rows of cells, the header first, one row
    per class (``codes`` (n,) 0..K-1, ``names`` their names), a "total" row.
    With ``groups`` (n,) (0-based, -1: none): a column per group ("group 1"
    ...), "no group" when some particle is in none, and "total"; without:
    "particles" and "%"."""
    codes = np.asarray(codes)
    k = len(names)
    if groups is None:
        n = np.bincount(codes[codes >= 0], minlength=k)
        total = max(int(n.sum()), 1)
        rows = [["class", "particles", "%"]]
        rows += [[names[i], int(n[i]), f"{100 * n[i] / total:.1f}"] for i in range(k)]
        return rows + [["total", int(n.sum()), "100.0"]]
    groups = np.asarray(groups)
    numbers = sorted(set(groups[groups >= 0].tolist()))
    cols = numbers + ([-1] if (groups < 0).any() else [])
    header = ["class"] + [f"group {g + 1}" if g >= 0 else "no group" for g in cols] + ["total"]
    rows = [header]
    for i in range(k):
        m = codes == i
        cells = [int((m & (groups == g)).sum()) for g in cols]
        rows.append([names[i]] + cells + [int(m.sum())])
    m = codes >= 0
    rows.append(["total"] + [int((m & (groups == g)).sum()) for g in cols] + [int(m.sum())])
    return rows


def format_table(rows: Sequence[Sequence]) -> list[str]:
    """The rows of :func:`class_table` as aligned text lines (names left,
    numbers right)."""
    cells = [[str(c) for c in r] for r in rows]
    widths = [max(len(r[j]) for r in cells) for j in range(len(cells[0]))]
    return ["  ".join(c.ljust(w) if j == 0 else c.rjust(w)
                      for j, (c, w) in enumerate(zip(r, widths))) for r in cells]


def write_table(path: PathLike, rows: Sequence[Sequence]) -> None:
    """The rows of :func:`class_table` as a tab-separated file (atomic)."""
    from ..utils import atomic_path
    with atomic_path(path) as tmp, open(tmp, "w") as f:
        for r in rows:
            f.write("\t".join(str(c) for c in r) + "\n")


def class_agreement(codes: np.ndarray, groups: np.ndarray) -> tuple[float, float]:
    """How well the groups (n,) (0-based, -1: none) match the classes (n,)
    (0-based, -1: none), over the particles in both: (adjusted Rand index,
    fraction of them in the group matched to their class by the best
    one-to-one matching of groups and classes)."""
    from scipy.optimize import linear_sum_assignment
    from sklearn.metrics import adjusted_rand_score
    codes, groups = np.asarray(codes), np.asarray(groups)
    m = (codes >= 0) & (groups >= 0)
    if not m.any():
        return float("nan"), float("nan")
    a, b = codes[m], groups[m]
    table = np.zeros((a.max() + 1, b.max() + 1))
    np.add.at(table, (a, b), 1)
    r, c = linear_sum_assignment(-table)
    return float(adjusted_rand_score(a, b)), float(table[r, c].sum() / m.sum())


def density_plot(coords: np.ndarray, path: PathLike, labels: np.ndarray | None = None,
                 title: str = "", axes: tuple[int, int] = (0, 1), gridsize: int = 120,
                 apart: np.ndarray | None = None, apart_label: str = "shown apart",
                 classes: np.ndarray | None = None,
                 class_names: Sequence[str] = ()) -> None:
    """Hexbin density (log counts) of the points on two axes (one axis: against
    zero), each group's number and size at its mean; PNG written atomically.
    ``apart`` (n,) bool: points also drawn on their own, as orange dots over
    the density (e.g. the HEMNMA-labelled particles of a combined landscape),
    named ``apart_label`` in the legend. ``classes`` (n,) (0..K-1, -1: none)
    with their ``class_names``: each point in its class's colour over a grey
    density, a legend entry per class with its size (:func:`draw_classes`).
    Uses a bare Figure (Agg canvas): works whatever pyplot backend is set."""
    from matplotlib.figure import Figure
    from ..utils import atomic_path
    coords = np.asarray(coords)
    x = coords[:, axes[0]]
    two = coords.shape[1] > axes[1]
    y = coords[:, axes[1]] if two else np.zeros(len(coords))
    fig = Figure(figsize=(6, 5))
    ax = fig.subplots()
    hb = ax.hexbin(x, y, gridsize=gridsize, bins="log", mincnt=1,
                   cmap="viridis" if classes is None else "Greys")
    fig.colorbar(hb, ax=ax, label="images (log)")
    if classes is not None:
        draw_classes(ax, x, y, classes, class_names)
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

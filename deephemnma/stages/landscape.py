"""The conformational landscape (Stage 3): PCA of the particles' normal-mode
amplitudes, a density plot, groups of particles in that space, animations of
the reference along each principal axis and the centroid model of each group.

Everything lands in one folder (:class:`Outputs` owns the names): ``pca.npz``
(the projection, to place other particles in the same space),
``landscape.xmd`` (the particles with PC1, PC2, ... columns and ``source``,
the name of the file each row came from: its path as given when the second
set's file has the same name), ``density.png``;
with a grouping option ``group_NN.xmd`` (one subset per group, NN from 01) and
``groups.xmd`` (size and centroid amplitudes per group); with a class column
(``class_column``: the particles' discrete classes, e.g. RELION's
``rlnClassNumber``) each class in its own colour in ``density.png`` and
``classes.tsv`` (particles per class and group; ``by_class``: one group per
class); with a reference and
its modes ``axis_K.pdb/.cxc/.vmd`` (K from 1) and ``centroid_NN.pdb``. Rows
whose amplitudes are not finite are left out alone and listed in
``rejected.xmd``: the other rows' coordinates are those of a run without them.
A group reconstructed into the folder (``group_NN.mrc``, by the Scipion
protocol or ``deephemnma reconstruct --out OUT/group_NN.mrc``) brings its half
maps, mask, filtered map and half-map FSC (the reconstruct stage's names);
:func:`resolution_lines` lists each group's half-map resolution beside its
FSC with its centroid model's map (``fsc_NN.json``).

Every check (options, files, group sizes, the reference and its modes) is done
before the first file is written; a failed run leaves no new file behind.
"""
from __future__ import annotations
import dataclasses
import os
import re

import numpy as np

from . import base
from .base import InputError, need

__all__ = ["Config", "Outputs", "run", "summary", "resolution_lines", "parse_split",
           "parse_numbers"]

GROUPINGS = ("select", "rect", "polygon", "split", "kmeans", "by_class")
MAX_CLASSES = 50        # a class column with more distinct values is refused


@dataclasses.dataclass
class Config(base.StageConfig):
    particles: str = None         # .xmd/.star with nmaDisplacements
    out: str = None               # output folder
    also: str = None              # a second set placed in the same landscape (same modes)
    also_label: str = "second set"  # its name in the density plot, where it is drawn apart
    components: int = 2           # PCA dimensions (<= number of modes)
    pca: str = None               # place the particles in this pca.npz instead of fitting
    # grouping (at most one): an expression on PC1, PC2...; a rectangle
    # (xmin, xmax, ymin, ymax) or a polygon ((x, y), ...) on PC1, PC2; equal-
    # width groups along an axis (axis from 1, minimum size, trimmed fraction
    # at each tail); k-means with k clusters
    select: str = None
    rect: tuple = None
    polygon: tuple = None
    split: tuple = None
    kmeans: int = None
    by_class: bool = None         # one group per class of class_column
    # a column of class labels (a metadata label: ref, rlnClassNumber,
    # classId... found under its aliases): each class coloured in the density
    # plot, the particles per class and group counted in classes.tsv
    class_column: str = None
    min_group: int = 10           # refuse groups smaller than this
    structure: str = None         # reference (PDB/mmCIF) for animations and centroid models
    modes: str = None             # its modes (ContinuousFlex layout)
    selection: str = "heavy"      # atoms of the reference the modes move
    frames: int = 10              # frames per axis animation
    absolute_paths: bool = False  # absolute image references in the .xmd files

    def grouping(self):
        """The grouping option given (a name of :data:`GROUPINGS`), or None."""
        given = [g for g in GROUPINGS               # by_class=False: not given
                 if getattr(self, g) is not None and getattr(self, g) is not False]
        need(len(given) <= 1, "give at most one grouping option (--"
             + ", --".join(given) + " given)")
        return given[0] if given else None

    def validate_options(self, n_components=None):
        """Checks of the numbers and options alone (no file is read).
        ``n_components``: the number of axes when known (from ``--pca``)."""
        base.at_least("--components", self.components, 1)
        k = n_components or self.components
        g = self.grouping()
        if g == "select":
            from ..core.landscape import select_expression
            need(str(self.select).strip(), "--select: empty expression")
            select_expression(np.zeros((1, k)), self.select)
        elif g == "rect":
            v = parse_numbers(self.rect, "--rect")
            need(len(v) == 4, f"--rect needs 4 numbers xmin,xmax,ymin,ymax, got {len(v)}")
            need(v[0] < v[1] and v[2] < v[3],
                 f"--rect {','.join(f'{x:g}' for x in v)}: needs xmin < xmax and ymin < ymax")
        elif g == "polygon":
            v = parse_numbers(self.polygon, "--polygon")
            need(len(v) % 2 == 0, f"--polygon needs x,y pairs, got {len(v)} numbers")
            need(len(v) >= 6, f"--polygon needs at least 3 points, got {len(v) // 2}")
        elif g == "split":
            need(isinstance(self.split, (tuple, list)) and len(self.split) in (2, 3),
                 f"--split {self.split}: expected AXIS:MIN_SIZE[:TRIM]")
            axis, size = self.split[0], self.split[1]
            trim = self.split[2] if len(self.split) > 2 else 0.02
            need(_whole(axis) and 1 <= axis <= k, f"--split axis {axis}: only PC1..PC{k} exist")
            base.at_least("--split minimum group size", size, 1)
            base.fraction("--split trim", trim, 0.0, 0.5)
        elif g == "kmeans":
            base.at_least("--kmeans", self.kmeans, 1)
        elif g == "by_class":
            need(self.class_column not in (None, ""),
                 "--by-class needs --class-column (the column whose classes become the groups)")
        if self.class_column is not None:
            need(str(self.class_column).strip().lstrip("_"),
                 "--class-column: give a column name (e.g. ref, rlnClassNumber)")
        if g in ("rect", "polygon"):
            need(k >= 2, f"--{g} works on PC1 and PC2: needs at least 2 components")
        base.at_least("--min-group", self.min_group, 1)
        base.at_least("--frames", self.frames, 2)
        need((self.structure in (None, "")) == (self.modes in (None, "")),
             "--structure and --modes go together (the reference and its modes)")
        return self

    def validate(self):
        base.existing("--particles", self.particles)
        inputs = [self.particles]
        for name, path, what in (("--also", self.also, "file"), ("--pca", self.pca, "file"),
                                 ("--structure", self.structure, "file"),
                                 ("--modes", self.modes, "path")):
            if path not in (None, ""):
                base.existing(name, path, what)
                inputs.append(path)
        base.output_path("--out", self.out, inputs, folder=True)
        for p in inputs:       # an input among the files this run replaces or removes
            if p != self.pca and _inside(p, self.out) and _owned(os.path.basename(p)):
                raise InputError(f"--out {self.out} holds the input {p}, which this run "
                                 "would replace: choose another folder")
        n = None
        if self.pca:
            from ..core.landscape import load_pca
            n = len(load_pca(self.pca)["components"])
        return self.validate_options(n)

    def selection_mask(self, coords, classes=None):
        """Group labels (n,) of the points (coordinates on the axes) for the
        grouping option given: 0, 1, ... and -1 outside every group; None
        without grouping. ``classes`` (n,): the points' class codes
        (:func:`deephemnma.core.landscape.class_codes`), the groups of
        ``by_class``."""
        from ..core import landscape as L
        g = self.grouping()
        if g is None:
            return None
        if g == "by_class":
            return np.asarray(classes)
        if g == "select":
            return np.where(L.select_expression(coords, self.select), 0, -1)
        if g == "rect":
            rect = parse_numbers(self.rect, "--rect")
            return np.where(L.select_rectangle(coords, *rect), 0, -1)
        if g == "polygon":
            v = np.asarray(parse_numbers(self.polygon, "--polygon")).reshape(-1, 2)
            return np.where(L.select_polygon(coords, v), 0, -1)
        if g == "split":
            trim = self.split[2] if len(self.split) > 2 else 0.02
            return L.split_axis(coords, int(self.split[0]) - 1, int(self.split[1]), trim)
        return L.kmeans_groups(coords, int(self.kmeans))


def parse_numbers(values, name):
    """The numbers of a flat or nested sequence (or of 'a,b,c'), finite."""
    if isinstance(values, str):
        values = values.replace(" ", "").split(",")
    try:
        v = [float(x) for x in np.asarray(values, dtype=object).ravel()]
    except (TypeError, ValueError):
        raise InputError(f"{name} {values}: expected comma-separated numbers") from None
    need(np.isfinite(v).all(), f"{name}: numbers must be finite")
    return v


def _whole(x):
    try:
        return float(x) == int(x)
    except (TypeError, ValueError, OverflowError):
        return False


def parse_split(text):
    """'AXIS:MIN_SIZE[:TRIM]' (e.g. '1:900:0.02') -> (axis, min_size, trim)."""
    parts = str(text).split(":")
    try:
        need(len(parts) in (2, 3), "")
        axis, size = int(parts[0]), int(parts[1])
        trim = float(parts[2]) if len(parts) > 2 else 0.02
    except (ValueError, InputError):
        raise InputError(f"--split {text}: expected AXIS:MIN_SIZE[:TRIM], "
                         "e.g. 1:900 or 1:900:0.02") from None
    return axis, size, trim


def _inside(path, folder):
    return os.path.dirname(os.path.realpath(path)) == os.path.realpath(folder)


_PATTERNS = {"group": r"group_(\d+)\.xmd", "centroid": r"centroid_(\d+)\.pdb",
             "axis": r"axis_(\d+)\.(?:pdb|cxc|vmd)", "group_map": r"group_(\d+)\.mrc",
             "centroid_map": r"centroid_(\d+)\.mrc", "fsc": r"fsc_(\d+)\.(?:png|json)",
             # a group map's half maps, mask, filtered map and half-map FSC
             # (named by the reconstruct stage's Outputs)
             "group_halves": r"group_(\d+)_(?:half1\.mrc|half2\.mrc|mask\.mrc|filtered\.mrc|"
                             r"fsc_halves\.png|fsc_halves\.json)"}
_FIXED = ("pca.npz", "landscape.xmd", "density.png", "groups.xmd", "rejected.xmd",
          "classes.tsv")


def _owned(name):
    """The file name is one a landscape folder's :class:`Outputs` owns."""
    return name in _FIXED or any(re.match(p + "$", name) for p in _PATTERNS.values())


@dataclasses.dataclass
class Outputs:
    """The files of a landscape folder (the only place their names are
    spelled), and the counts of a run."""
    folder: str
    n_particles: int = 0          # particles placed in the landscape
    n_rejected: int = 0           # rows left out (non-finite amplitudes)
    n_also: int = 0               # particles of the --also set among them
    n_modes: int = 0
    explained: tuple = ()         # explained variance ratio per axis
    group_sizes: dict = dataclasses.field(default_factory=dict)   # group number -> size
    n_axes: int = 0               # animations written (0: no reference given)
    class_column: str = ""        # the column of the classes (as found in the particles)
    class_rows: list = dataclasses.field(default_factory=list)   # classes.tsv's rows
    group_names: dict = dataclasses.field(default_factory=dict)  # group -> its class (by_class)
    agreement: tuple = ()         # (adjusted Rand index, matched fraction): classes vs groups

    def _path(self, name):
        return os.path.join(self.folder, name)

    @property
    def pca(self):
        """The PCA (mean, components, explained variance) as .npz."""
        return self._path("pca.npz")

    @property
    def landscape(self):
        """All particles with their coordinates (PC1, PC2, ...)."""
        return self._path("landscape.xmd")

    @property
    def density(self):
        """Density plot (PNG) of the particles on PC1, PC2."""
        return self._path("density.png")

    @property
    def groups_table(self):
        """One row per group: ref (its number), classCount, nmaDisplacements
        (the centroid's amplitudes)."""
        return self._path("groups.xmd")

    @property
    def class_table(self):
        """Particles per class (rows) and group (columns), tab-separated."""
        return self._path("classes.tsv")

    @property
    def rejected(self):
        """Rows left out (non-finite amplitudes), with the reason."""
        return self._path("rejected.xmd")

    def group(self, k):
        """The particles of group ``k`` (from 1)."""
        return self._path(f"group_{k:02d}.xmd")

    def centroid(self, k):
        """The reference deformed by group ``k``'s centroid amplitudes (PDB)."""
        return self._path(f"centroid_{k:02d}.pdb")

    def axis(self, k, ext=".pdb"):
        """Animation along principal axis ``k`` (from 1): .pdb (multi-model),
        .cxc (ChimeraX script), .vmd (VMD script)."""
        return self._path(f"axis_{k}{ext}")

    def group_map(self, k):
        """Reconstruction of group ``k`` (written by the Scipion protocol)."""
        return self._path(f"group_{k:02d}.mrc")

    def group_reconstruction(self, k):
        """The files of group ``k``'s reconstruction: the reconstruct stage's
        :class:`~deephemnma.stages.reconstruct.Outputs` of :meth:`group_map`
        (half maps, mask, filtered map, half-map FSC)."""
        from .reconstruct import Outputs as ReconstructOutputs
        return ReconstructOutputs(self.group_map(k))

    def group_resolutions(self):
        """{group: (half-map FSC 0.143 masked, unmasked, centroid-map FSC 0.143)}
        in Å, None where the file is missing, for the groups with a map."""
        import json
        res = {}
        for k in self.groups():
            if not os.path.exists(self.group_map(k)):
                continue
            half = cen = None
            rec = self.group_reconstruction(k)
            if os.path.exists(rec.fsc_halves_json):
                with open(rec.fsc_halves_json) as f:
                    half = json.load(f)
            if os.path.exists(self.fsc_json(k)):
                with open(self.fsc_json(k)) as f:
                    cen = json.load(f)
            res[k] = (half and half["res_0.143_masked"], half and half["res_0.143"],
                      cen and cen["res_0.143"])
        return res

    def centroid_map(self, k):
        """Map simulated from the centroid model of group ``k``."""
        return self._path(f"centroid_{k:02d}.mrc")

    def fsc_png(self, k):
        """FSC curve between the group's map and its centroid model's map."""
        return self._path(f"fsc_{k:02d}.png")

    def fsc_json(self, k):
        """The same FSC: resolutions at 0.5 and 0.143 and the curve (JSON)."""
        return self._path(f"fsc_{k:02d}.json")

    def _numbers(self, kind):
        if not os.path.isdir(self.folder):
            return []
        pat = re.compile(_PATTERNS[kind] + "$")
        return sorted({int(m.group(1)) for m in map(pat.match, os.listdir(self.folder)) if m})

    def groups(self):
        """Numbers of the groups whose particle file exists, in order."""
        return self._numbers("group")

    def axes(self):
        """Numbers of the axes whose animation exists, in order."""
        return self._numbers("axis")

    def owned_files(self):
        """Every file of this folder that the stage (or the protocol's group
        reconstructions) writes."""
        if not os.path.isdir(self.folder):
            return []
        return sorted(self._path(n) for n in os.listdir(self.folder) if _owned(n))

    run_record = base.record_property("folder", folder=True)


def _read(path, label):
    from ..io.metadata import read_metadata
    t = read_metadata(path)
    t.require(["nmaDisplacements"], "normal-mode amplitude", path)
    need(len(t) > 0, f"{label} {path}: no particles")
    t["source"] = np.full(len(t), os.path.basename(path), dtype=object)
    return t


def _class_column(t, name, path):
    """The column of ``t`` (read from ``path``) that ``--class-column name`` designates."""
    from ..io.metadata import find_label
    col = find_label(t, name)
    shown = [c for c in t.columns if c not in ("source", "nmaDisplacements")]
    need(col is not None, f"--class-column {name}: no such column in {path} "
         f"(columns: {', '.join(shown)})")
    return col


@base.recorded(lambda cfg: Outputs(cfg.out))
def run(cfg: Config, progress: bool = True) -> Outputs:
    """Compute the landscape of ``cfg.particles`` into ``cfg.out``; returns
    :class:`Outputs`. ``progress`` is accepted for symmetry with the other
    stages (the work is quick)."""
    from ..core import landscape as L
    from ..core.structure import write_pdb
    from ..io.metadata import Table, write_xmd
    cfg.validate()
    out = Outputs(cfg.out)
    # ---- read and check every input --------------------------------------
    t = _read(cfg.particles, "--particles")
    col = _class_column(t, cfg.class_column, cfg.particles) if cfg.class_column else None
    if cfg.also:
        t2 = _read(cfg.also, "--also")
        if t2["source"][0] == t["source"][0]:
            # files of the same name (e.g. predicted.xmd of two runs): the
            # column 'source' names each by its path as given
            t["source"] = np.full(len(t), os.path.normpath(cfg.particles), dtype=object)
            t2["source"] = np.full(len(t2), os.path.normpath(cfg.also), dtype=object)
        if col:     # the second set's classes under the first set's column name
            t2[col] = t2[_class_column(t2, cfg.class_column, cfg.also)]
        m1, m2 = t["nmaDisplacements"].shape[1], t2["nmaDisplacements"].shape[1]
        need(m1 == m2, f"--also {cfg.also} has {m2} amplitudes per particle, "
             f"--particles {cfg.particles} has {m1}: the two sets must use the same modes")
        n1 = len(t)
        t = Table.concatenate([t, t2])
    else:
        n1 = len(t)
    rejected = base.Rejected()
    ok = base.finite_rows(t, ("nmaDisplacements",))
    rejected.add(t, ~ok, "non-finite amplitude")
    apart = (np.arange(len(t)) >= n1)[ok]     # rows of the --also set, drawn apart
    t = t.subset(ok)
    need(len(t) > 0, f"{cfg.particles}: no particle with finite amplitudes")
    q = t["nmaDisplacements"]
    out.n_modes = q.shape[1]
    # ---- PCA, coordinates, groups -----------------------------------------
    if cfg.pca:
        pca = L.load_pca(cfg.pca)
        need(len(pca["mean"]) == q.shape[1],
             f"--pca {cfg.pca} was fitted on {len(pca['mean'])} amplitudes per particle, "
             f"the particles have {q.shape[1]}")
    else:
        need(cfg.components <= q.shape[1],
             f"--components {cfg.components}: the particles have {q.shape[1]} amplitudes")
        pca = L.fit_pca(q, cfg.components)
    codes, names = None, []
    if col:
        codes, keys = L.class_codes(t[col])
        names = [L.class_name(k) for k in keys]
        where = cfg.particles + (f" and {cfg.also}" if cfg.also else "")
        need((codes >= 0).all(), f"--class-column {cfg.class_column}: {(codes < 0).sum()} "
             f"particle(s) of {where} have no class (empty or nan)")
        need(len(names) <= MAX_CLASSES, f"--class-column {cfg.class_column}: {len(names)} "
             f"distinct values in {where}, more than {MAX_CLASSES}: not a class label")
    c = L.transform(pca, q)
    for i in range(c.shape[1]):
        t[f"PC{i + 1}"] = c[:, i]
    labels = cfg.selection_mask(c, codes)
    groups = []
    if labels is not None:
        numbers = sorted(set(labels[labels >= 0].tolist()))
        need(numbers, "the selection contains no particle")
        for g in numbers:
            m = labels == g
            what = f" ({names[g]})" if cfg.grouping() == "by_class" else ""
            need(m.sum() >= cfg.min_group, f"group {g + 1}{what} has {m.sum()} particles, "
                 f"fewer than --min-group {cfg.min_group}")
            groups.append((g + 1, t.subset(m)))
    # ---- the reference, its modes, and what they give ----------------------
    models = {}
    if cfg.structure:
        from .reference import load_reference
        s, modes = load_reference(cfg.structure, cfg.selection, cfg.modes, q.shape[1])
        for ax in range(c.shape[1]):
            models[out.axis(ax + 1, "")] = modes.deform(
                L.axis_trajectory(pca, c, ax, cfg.frames))
    # ---- write -------------------------------------------------------------
    stale = out.owned_files()
    written = [out.pca, out.landscape, out.density]
    written += [out.rejected] if len(rejected) else []
    written += [out.class_table] if col else []
    written += [out.groups_table] + [out.group(k) for k, _ in groups] if groups else []
    written += [out.centroid(k) for k, _ in groups] if models else []
    written += [p + e for p in models for e in (".pdb", ".cxc", ".vmd")]
    with base.cleanup_on_error(cfg.out, *written):
        os.makedirs(cfg.out, exist_ok=True)
        for p in stale:        # files of an earlier run that this one does not replace
            if p not in written and os.path.exists(p):
                os.remove(p)
        if not (cfg.pca and base.same_file(cfg.pca, out.pca)):
            L.save_pca(pca, out.pca)
        write_xmd(out.landscape, t, absolute=cfg.absolute_paths)
        L.density_plot(c, out.density, labels, apart=apart if cfg.also else None,
                       apart_label=cfg.also_label, classes=codes, class_names=names,
                       title=f"{len(t)} images, coloured by class ({col})" if col else "")
        if col:
            out.class_rows = L.class_table(codes, names, labels)
            L.write_table(out.class_table, out.class_rows)
        rejected.write(out.rejected)
        for prefix, frames in models.items():
            L.write_animation(prefix, s, frames)
        if groups:
            cen = np.array([sub["nmaDisplacements"].mean(0) for _, sub in groups])
            for (k, sub), a in zip(groups, cen):
                write_xmd(out.group(k), sub, absolute=cfg.absolute_paths)
                if cfg.structure:
                    write_pdb(out.centroid(k), s, modes.deform(a[None])[0])
            write_xmd(out.groups_table, Table({
                "ref": np.array([k for k, _ in groups]),
                "classCount": np.array([len(sub) for _, sub in groups]),
                "nmaDisplacements": cen}))
    out.n_particles, out.n_rejected = len(t), len(rejected)
    out.n_also = int(apart.sum())
    out.explained = tuple(float(v) for v in pca["explained_variance_ratio"])
    out.group_sizes = {k: len(sub) for k, sub in groups}
    out.n_axes = len(models)
    if col:
        out.class_column = col
        if cfg.grouping() == "by_class":
            out.group_names = {k: names[k - 1] for k, _ in groups}
        elif labels is not None:
            out.agreement = L.class_agreement(codes, labels)
    return out


def summary(out: Outputs, cfg: Config) -> list[str]:
    """Lines for the user after :func:`run`."""
    lines = [f"PCA of {out.n_particles} particles x {out.n_modes} modes: explained variance "
             + ", ".join(f"PC{i + 1} {100 * v:.1f}%" for i, v in enumerate(out.explained))
             + f" -> {out.landscape}"]
    if out.n_also:
        lines.append(f"of which {out.n_also} from the second set ({cfg.also_label}), drawn "
                     f"apart in {out.density}")
    if out.n_rejected:
        lines.append(f"left out {out.n_rejected} row(s) with non-finite amplitudes, "
                     f"listed in {out.rejected}")
    if out.n_axes:
        lines.append(f"animations along {out.n_axes} axes -> {out.axis(1)} ... (.cxc, .vmd)")
    if out.group_sizes:
        lines.append("groups: " + ", ".join(
            f"{k}" + (f" ({out.group_names[k]})" if k in out.group_names else "")
            + f": {n} particles" for k, n in out.group_sizes.items())
            + f" -> {out.group(min(out.group_sizes))} ...")
    if out.class_rows:
        from ..core.landscape import format_table
        lines.append(f"particles per class ({out.class_column})"
                     + (" and group" if out.group_sizes else "") + f" -> {out.class_table}")
        lines += ["  " + r for r in format_table(out.class_rows)]
    if out.agreement:
        ari, matched = out.agreement
        lines.append(f"groups vs classes: adjusted Rand index {ari:.2f}; {100 * matched:.1f}% "
                     "of the grouped particles are in the group matched to their class")
    lines += resolution_lines(out)
    return lines


def resolution_lines(out: Outputs) -> list[str]:
    """One line per group with a map: its half-map (gold-standard) resolution
    at FSC 0.143, masked and unmasked, beside its FSC with its centroid
    model's map (not an independent check: the model is the one fitted)."""
    def a(x):
        return "-" if x is None else f"{x:.2f} Å"
    lines = []
    for k, (m, u, c) in out.group_resolutions().items():
        lines.append(f"group {k:02d}: half maps FSC 0.143 {a(m)} masked, {a(u)} unmasked; "
                     f"vs its centroid model's map FSC 0.143 {a(c)}")
    return lines

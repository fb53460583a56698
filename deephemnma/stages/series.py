"""A series of maps along a path in the conformational landscape: the motion
shown as maps, one per sliding window of particles, to play in ChimeraX.

The path is a principal axis (``axis``: 1 for PC1) or a polyline of points in
the PC1-PC2 plane (``path``: "x1,y1;x2,y2;..." or a file with one point per
line, e.g. the ``path.txt`` drawn in the landscape viewer). ``frames``
positions are evenly spaced along it: along an axis from the particle of rank
window/2 to that of rank n - window/2, along a polyline from its first point
to its last. Each particle has a position on the path (its coordinate on the
axis; on a polyline, the arc length of its nearest point on the path, the
particles farther than ``band`` from the path left out), and each frame's
window holds the ``window`` particles (a number, or a fraction of the
particles on the path when below 1) nearest to its position: windows slide
and may overlap.

The particles come from a landscape folder (``landscape``: its
``landscape.xmd`` with the PC columns, as the landscape stage wrote it) or a
particle file (``particles``) with PC columns, or with amplitudes placed by
``pca`` (a landscape's ``pca.npz``) or by a PCA fitted on them.

Each window is reconstructed by the reconstruct stage, with its half maps
(``frame_NNN.mrc`` with ``frame_NNN_half1.mrc``, ``_half2``, ``_mask``,
``_filtered``, ``_fsc_halves.json/.png``: the reconstruct stage's names) from
its particles ``frame_NNN.xmd``. The folder also holds (:class:`Outputs` owns
the names) ``series.tsv`` (frame, position, mean position, particles, mean
PC coordinates, half-map resolution), ``series.cxc`` (ChimeraX: opens the
frames as a volume series and plays it), ``path.txt`` (the polyline used)
and, with a reference and its modes, ``centroids.pdb`` (one model per frame:
the reference deformed by the mean amplitudes of the window's particles) with
``centroids.cxc`` and ``centroids.vmd``.

Every check (options, files, window sizes, the images' stacks, the reference
and its modes) is done before the first file is written; a failed run leaves
no new file behind.
"""
from __future__ import annotations
import dataclasses
import os
import re

import numpy as np

from . import base
from .base import need

__all__ = ["Config", "Outputs", "run", "summary", "read_path"]

MAX_FRAMES = 999           # frame numbers have three digits


@dataclasses.dataclass
class Config(base.StageConfig):
    landscape: str = None         # a landscape folder (its landscape.xmd)
    particles: str = None         # or particles (.xmd/.star) with PC columns or amplitudes
    pca: str = None               # with particles: place their amplitudes in this pca.npz
    out: str = None               # output folder
    axis: int = None              # the path: a principal axis (1: PC1) ...
    path: str = None              # ... or points "x1,y1;x2,y2;..." on PC1, PC2, or a file
    frames: int = 10              # maps in the series
    window: float = 0.1           # particles per window; below 1: a fraction of those on the path
    band: float = None            # with a path: leave out particles farther from it than this
    pixel_size: float = None      # Å/px of the images
    flipped: bool = False         # images are CTF phase-flipped
    use_ctf: bool = True          # Wiener CTF correction when CTF columns exist
    min_images: int = 50          # refuse smaller windows
    half_maps: bool = True        # half maps, their FSC, the mask and the filtered map
    mask_threshold: float = 0.1
    mask_dilate: float = 3.0
    soft_edge: float = 4.0
    structure: str = None         # reference (PDB/mmCIF) for the centroid models
    modes: str = None             # its modes (ContinuousFlex layout)
    selection: str = "heavy"      # atoms of the reference the modes move
    device: str = "auto"

    def reconstruct_config(self, particles=None, out=None):
        """The reconstruct stage's config of one frame."""
        from . import reconstruct
        return reconstruct.Config(
            particles=particles, out=out, pixel_size=self.pixel_size, flipped=self.flipped,
            use_ctf=self.use_ctf, min_images=self.min_images, half_maps=self.half_maps,
            mask_threshold=self.mask_threshold, mask_dilate=self.mask_dilate,
            soft_edge=self.soft_edge, device=self.device)

    def validate_options(self):
        """Checks of the numbers and options alone (no file is read)."""
        need((self.axis is None) != (self.path in (None, "")),
             "give the path: --axis (a principal axis) or --path (points x,y;x,y...), "
             "one of them")
        if self.axis is not None:
            need(base.is_whole(self.axis) and self.axis >= 1,
                 f"--axis must be a whole number >= 1 (1: PC1), got {self.axis}")
            need(self.band is None, "--band goes with --path (the distance from a drawn path)")
        need(base.is_whole(self.frames) and 2 <= self.frames <= MAX_FRAMES,
             f"--frames must be a whole number from 2 to {MAX_FRAMES}, got {self.frames}")
        w = self.window
        need(base._finite_number(w) and w > 0 and (w < 1 or float(w) == int(w)),
             f"--window must be a number of particles (a whole number) or a fraction of "
             f"them in (0, 1), got {w}")
        if self.band is not None:
            base.positive("--band", self.band)
        need((self.structure in (None, "")) == (self.modes in (None, "")),
             "--structure and --modes go together (the reference and its modes)")
        need(self.landscape in (None, "") or self.pca in (None, ""),
             "--pca goes with --particles (a landscape folder has its PCA)")
        if self.path not in (None, "") and not _is_file_path(self.path):
            read_path(self.path)
        self.reconstruct_config().validate_options()
        if base.is_whole(w) or (base._finite_number(w) and w >= 1):
            need(w >= self.min_images, f"--window {w:g}: fewer particles than --min-images "
                 f"{self.min_images} for a reconstruction")
        return self

    def validate(self):
        need((self.landscape in (None, "")) != (self.particles in (None, "")),
             "give the particles: --landscape (a landscape folder) or --particles, "
             "one of them")
        inputs = []
        if self.landscape:
            base.existing("--landscape", self.landscape, "folder")
            from .landscape import Outputs as LandscapeOutputs
            land = LandscapeOutputs(self.landscape).landscape
            need(os.path.isfile(land), f"--landscape {self.landscape}: no "
                 f"{os.path.basename(land)} in it (the landscape stage's output folder)")
            inputs.append(land)
        else:
            base.existing("--particles", self.particles)
            inputs.append(self.particles)
        for name, p, what in (("--pca", self.pca, "file"), ("--structure", self.structure, "file"),
                              ("--modes", self.modes, "path")):
            if p not in (None, ""):
                base.existing(name, p, what)
                inputs.append(p)
        if self.path not in (None, "") and _is_file_path(self.path):
            base.existing("--path", self.path)
        base.output_path("--out", self.out, inputs, folder=True)
        for p in inputs:
            need(not (_inside(p, self.out) and _owned(os.path.basename(p))),
                 f"--out {self.out} holds the input {p}, which this run would replace: "
                 "choose another folder")
        self.validate_options()
        if self.path not in (None, ""):
            read_path(self.path)
        return self


def _is_file_path(text):
    """``--path`` names a file (not "x,y;x,y" points)."""
    return os.path.exists(str(text)) or not re.fullmatch(r"[\s\d.,;:eE+\-#\n]*", str(text))


def read_path(text):
    """The polyline (m, 2) of ``--path``: points "x1,y1;x2,y2;..." or a file
    of them (one point per line)."""
    from ..core.series import parse_path
    if _is_file_path(text):
        base.existing("--path", text)
        with open(text) as fh:
            return parse_path(fh.read(), f"--path {text}")
    return parse_path(text)


def _inside(path, folder):
    return os.path.dirname(os.path.realpath(path)) == os.path.realpath(folder)


_FRAME = r"frame_(\d{3})(?:[._].*)"
_FIXED = ("series.tsv", "series.cxc", "path.txt", "centroids.pdb", "centroids.cxc",
          "centroids.vmd")


def _owned(name):
    return name in _FIXED or re.fullmatch(_FRAME, name) is not None


@dataclasses.dataclass
class Outputs:
    """The files of a series folder (the only place their names are spelled),
    and what a run found."""
    folder: str
    along: str = ""               # "PC1", or "the path" (a polyline)
    n_particles: int = 0          # particles read
    n_on_path: int = 0            # of which within the band of the path
    window: int = 0               # particles per window
    rows: list = dataclasses.field(default_factory=list)   # series.tsv's rows (dicts)
    n_models: int = 0             # centroid models written

    def _path(self, name):
        return os.path.join(self.folder, name)

    def frame_map(self, k):
        """The map of frame ``k`` (from 1)."""
        return self._path(f"frame_{k:03d}.mrc")

    def frame_particles(self, k):
        """The particles of frame ``k``'s window."""
        return self._path(f"frame_{k:03d}.xmd")

    def frame_reconstruction(self, k):
        """The reconstruct stage's :class:`~deephemnma.stages.reconstruct.Outputs`
        of frame ``k``'s map (half maps, mask, filtered map, half-map FSC)."""
        from .reconstruct import Outputs as ReconstructOutputs
        return ReconstructOutputs(self.frame_map(k))

    @property
    def table(self):
        """One row per frame: frame, position, mean_position, particles, mean
        PC coordinates, half-map resolutions (tab-separated)."""
        return self._path("series.tsv")

    @property
    def chimerax(self):
        """ChimeraX commands opening the frames as a volume series and playing it."""
        return self._path("series.cxc")

    @property
    def path_file(self):
        """The polyline used, one "x y" point per line (PC1, PC2)."""
        return self._path("path.txt")

    def centroids(self, ext=".pdb"):
        """The centroid model of each frame: .pdb (multi-model), .cxc, .vmd."""
        return self._path("centroids" + ext)

    def frames(self):
        """Numbers of the frames whose map exists, in order."""
        if not os.path.isdir(self.folder):
            return []
        return sorted(int(m.group(1)) for m in
                      (re.fullmatch(r"frame_(\d{3})\.mrc", n) for n in os.listdir(self.folder))
                      if m)

    def read_table(self):
        """series.tsv's rows as dicts (numbers as floats, '-' as None)."""
        with open(self.table) as fh:
            lines = [ln.rstrip("\n").split("\t") for ln in fh if ln.strip()]
        rows = []
        for values in lines[1:]:
            rows.append({k: (None if v == "-" else float(v)) for k, v in zip(lines[0], values)})
        return rows

    def owned_files(self):
        if not os.path.isdir(self.folder):
            return []
        return sorted(self._path(n) for n in os.listdir(self.folder) if _owned(n))

    run_record = base.record_property("folder", folder=True)


def _particles(cfg, need_axes):
    """(table, coordinates (n, need_axes)) of the particles."""
    from ..core import landscape as L
    from ..io.metadata import read_metadata
    if cfg.landscape:
        from .landscape import Outputs as LandscapeOutputs
        path, name = LandscapeOutputs(cfg.landscape).landscape, "--landscape"
    else:
        path, name = cfg.particles, "--particles"
    t = read_metadata(path)
    need(len(t) > 0, f"{name} {path}: no particles")
    cols = [f"PC{i + 1}" for i in range(need_axes)]
    if cfg.pca:
        t.require(["nmaDisplacements"], "normal-mode amplitude", path)
        pca = L.load_pca(cfg.pca)
        q = t["nmaDisplacements"]
        need(len(pca["mean"]) == q.shape[1], f"--pca {cfg.pca} was fitted on "
             f"{len(pca['mean'])} amplitudes per particle, the particles have {q.shape[1]}")
        need(len(pca["components"]) >= need_axes, f"--pca {cfg.pca} has "
             f"{len(pca['components'])} axes, the path needs PC1..PC{need_axes}")
        c = L.transform(pca, q)[:, :need_axes]
    elif all(col in t for col in cols):
        c = np.column_stack([np.asarray(t[col], float) for col in cols])
    else:
        missing = [col for col in cols if col not in t]
        need(not cfg.landscape, f"--landscape {path} has no {', '.join(missing)} column: "
             f"compute the landscape with at least {need_axes} components")
        need("nmaDisplacements" in t, f"--particles {path} has no {', '.join(missing)} column "
             "and no normal-mode amplitudes to place them")
        q = t["nmaDisplacements"]
        need(q.shape[1] >= need_axes, f"--axis {need_axes}: the particles have "
             f"{q.shape[1]} amplitudes")
        c = L.transform(L.fit_pca(q, need_axes), q)
    ok = np.isfinite(c).all(1)
    need(ok.any(), f"{name} {path}: no particle with finite PC coordinates")
    t = base.numbered(t, 1)
    if "itemId" not in t:           # the half a particle is in: the same in every frame
        t["itemId"] = t[base.ROW]
    return t.subset(np.flatnonzero(ok)), c[ok]


@base.recorded(lambda cfg: Outputs(cfg.out))
def run(cfg: Config, progress: bool = True) -> Outputs:
    """Reconstruct the series of ``cfg`` into ``cfg.out``; returns :class:`Outputs`."""
    from ..core import series as S
    from ..core.landscape import write_animation
    from ..io.metadata import write_xmd
    from ..utils import atomic_path
    from . import reconstruct
    cfg.validate()
    out = Outputs(cfg.out)
    points = read_path(cfg.path) if cfg.path not in (None, "") else None
    need_axes = 2 if points is not None else cfg.axis
    t, c = _particles(cfg, need_axes)
    out.n_particles = len(t)
    if points is None:
        positions, on = c[:, cfg.axis - 1], np.ones(len(t), bool)
        out.along = f"PC{cfg.axis}"
    else:
        positions, dist = S.path_positions(c, points)
        on = dist <= cfg.band if cfg.band is not None else np.ones(len(t), bool)
        out.along = "the path"
        need(on.any(), f"--band {cfg.band}: no particle within this distance of the path")
    idx_on = np.flatnonzero(on)
    out.n_on_path = len(idx_on)
    w = int(round(cfg.window * len(idx_on))) if cfg.window < 1 else int(cfg.window)
    what = "on the path" if points is not None and cfg.band is not None else "in all"
    need(w <= len(idx_on), f"--window {cfg.window:g}: {w} particles per window, but "
         f"{len(idx_on)} particles {what}")
    need(w >= cfg.min_images, f"--window {cfg.window:g}: {w} particles per window, fewer "
         f"than --min-images {cfg.min_images} for a reconstruction")
    out.window = w
    centres = (S.axis_centres(positions[idx_on], cfg.frames, w) if points is None
               else S.path_centres(points, cfg.frames))
    wins = [idx_on[i] for i in S.windows(positions[idx_on], centres, w)]
    base.StackCheck(cfg.pixel_size).check(t)          # images and pixel size, before writing
    models = None
    if cfg.structure:
        from .reference import load_reference
        t.require(["nmaDisplacements"], "normal-mode amplitude")
        q = t["nmaDisplacements"]
        s, modes = load_reference(cfg.structure, cfg.selection, cfg.modes, q.shape[1])
        models = modes.deform(np.array([q[i].mean(0) for i in wins]))
    # ---- write -------------------------------------------------------------
    n = cfg.frames
    stale = out.owned_files()
    written = [out.table, out.chimerax] + ([out.path_file] if points is not None else [])
    written += [out.centroids(e) for e in (".pdb", ".cxc", ".vmd")] if models is not None else []
    for k in range(1, n + 1):
        rec = out.frame_reconstruction(k)
        written += [out.frame_particles(k), rec.map, rec.rejected, rec.run_record]
        written += rec.half_map_files()
    with base.cleanup_on_error(cfg.out, *written):
        os.makedirs(cfg.out, exist_ok=True)
        for p in stale:         # files of an earlier run that this one does not replace
            if p not in written and os.path.exists(p):
                os.remove(p)
        if points is not None:
            with atomic_path(out.path_file) as tmp, open(tmp, "w") as fh:
                fh.write(S.format_path(points))
        for k, (centre, rows) in enumerate(zip(centres, wins), start=1):
            sub = base.public(t.subset(rows))
            write_xmd(out.frame_particles(k), sub)
            if progress:
                base.say(f"frame {k}/{n}: {len(rows)} particles around {out.along} = "
                         f"{centre:.4g}")
            rec = reconstruct.run(cfg.reconstruct_config(out.frame_particles(k),
                                                         out.frame_map(k)), progress=progress)
            row = {"frame": k, "position": float(centre),
                   "mean_position": float(positions[rows].mean()), "particles": rec.n_images}
            for i in range(c.shape[1]):
                row[f"PC{i + 1}"] = float(c[rows, i].mean())
            h = rec.halves or {}
            row["res_0.143_masked"] = h.get("res_0.143_masked")
            row["res_0.143"] = h.get("res_0.143")
            out.rows.append(row)
        _write_table(out.table, out.rows)
        _write_chimerax(out, n)
        if models is not None:
            write_animation(out.centroids(""), s, models)
            out.n_models = len(models)
    return out


def _write_table(path, rows):
    from ..utils import atomic_path

    def fmt(v):
        if v is None:
            return "-"
        return str(v) if isinstance(v, (int, np.integer)) else f"{v:.6g}"
    with atomic_path(path) as tmp, open(tmp, "w") as fh:
        fh.write("\t".join(rows[0]) + "\n")
        for r in rows:
            fh.write("\t".join(fmt(v) for v in r.values()) + "\n")


def _write_chimerax(out, n):
    """series.cxc: the frames opened as one volume series (model #1), played
    back and forth."""
    from ..utils import atomic_path
    names = " ".join(os.path.basename(out.frame_map(k)) for k in range(1, n + 1))
    with atomic_path(out.chimerax) as tmp, open(tmp, "w") as fh:
        fh.write(f"# {n} maps along {out.along} (their positions: series.tsv); the file "
                 "names are relative to this script's folder\n"
                 f"open {names} vseries true\n"
                 "volume #1 style surface\n"
                 "vseries play #1 loop true direction oscillate normalize true\n"
                 "# to stop: vseries stop #1\n")


def summary(out: Outputs, cfg: Config) -> list[str]:
    """Lines for the user after :func:`run`."""
    rows = out.rows
    where = (f"{out.n_on_path} of {out.n_particles} particles within {cfg.band:g} of the path"
             if cfg.band is not None else f"{out.n_particles} particles")
    lines = [f"{len(rows)} maps along {out.along} ({where}), {out.window} particles per "
             f"window, positions {rows[0]['position']:.4g} to {rows[-1]['position']:.4g} "
             f"-> {out.frame_map(1)} ... {out.frame_map(len(rows))}",
             f"table {out.table}; ChimeraX: open {out.chimerax}"]

    def a(x):
        return "-" if x is None else f"{x:.2f} Å"
    if cfg.half_maps:
        lines += [f"frame {r['frame']:03d} at {r['position']:.4g}: {r['particles']} particles, "
                  f"half maps FSC 0.143 {a(r['res_0.143_masked'])} masked, "
                  f"{a(r['res_0.143'])} unmasked" for r in rows]
    if out.n_models:
        lines.append(f"centroid model of each window -> {out.centroids()} (.cxc, .vmd)")
    return lines

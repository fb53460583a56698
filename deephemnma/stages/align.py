"""HEMNMA: elastic and rigid-body alignment of particle images with normal modes.

For every usable particle: the normal-mode amplitudes, Xmipp ZYZ Euler angles
(degrees), shifts (pixels of the images) and a cost (lower is better), written
in input order with Xmipp/ContinuousFlex names (``nmaDisplacements``,
``angleRot``..., ``cost``). With ``downscale`` (px) the images are aligned
Fourier-downscaled to that box (the pixel size grows by box / downscale);
the shifts read and written stay in the original images' pixels. Rows with a
non-finite value or an unusable image are left out alone and listed in
``OUT.rejected.xmd``; the others' results are those of a run without them.

Work is done in chunks of usable rows kept in ``OUT.parts/`` under a run stamp
(input rows, reference, modes, options, chunk size): running the same command
again after an interruption continues; a run with other inputs or options
starts afresh. Under torchrun each process aligns every world_size-th chunk
and rank 0 joins them.
"""
from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Callable

import numpy as np

from ..core.config import AlignOptions, result_options
from . import base
from .base import InputError, need

__all__ = ["Config", "Outputs", "run"]


@dataclasses.dataclass
class Config(base.StageConfig, AlignOptions):
    particles: str = None            # .xmd/.star referencing the images
    modes: str = None                # modes folder / modes.xmd (ContinuousFlex layout)
    structure: str = None            # the reference the modes belong to
    out: str = None                  # output .xmd
    pixel_size: float = None         # Å/px of the images
    selection: str = "heavy"
    mode_list: str = "7-9"           # HEMNMA numbers
    use_ctf: bool = True             # use the CTF columns (phase flip, |CTF| on projections)
    outlier_threshold: float = 3.2   # > 0: also write OUT_kept.xmd without Mahalanobis outliers (paper: 3.2; 0: no filter)
    chunk: int = 256
    downscale: int = 0               # > 0: align the images Fourier-downscaled to this box (px)
    absolute_paths: bool = False     # image references in the outputs absolute
    device: str = "auto"

    def validate(self):
        base.existing("--particles", self.particles)
        base.existing("--modes", self.modes, "path")
        base.existing("--structure", self.structure)
        base.output_path("--out", self.out, [self.particles, self.structure, self.modes])
        return self.validate_options()

    def validate_options(self):
        """The checks that need no file (a Scipion form validates these before
        the upstream protocols have run)."""
        self.validate_run_options()
        base.positive("--angular-step", self.angular_step)
        need(self.angular_step <= 90, f"--angular-step {self.angular_step}: at most 90 degrees")
        base.at_least("--search-amplitude", self.search_amplitude, 0)
        base.at_least("--max-shift", self.max_shift, 0)
        for name in ("n_candidates", "coarse_iters", "fine_iters", "amplitude_candidates",
                     "fine_candidates"):
            base.at_least("--" + name.replace("_", "-").replace("n-candidates", "candidates"),
                          getattr(self, name), 1)
        base.at_least("--search-corners", self.search_corners, 0)
        base.at_least("--search-pairs", self.search_pairs, 0)
        if self.from_poses:
            need(0 < self.cone <= 180, f"--cone {self.cone}: more than 0 and at most 180 "
                                       f"degrees")
            base.at_least("--shift-window", self.shift_window, 0)
            base.at_least("--local-candidates", self.local_candidates, 1)
            base.at_least("--local-coarse-iters", self.local_coarse_iters, 1)
            base.at_least("--local-fine-iters", self.local_fine_iters, 1)
            base.at_least("--pose-sigma", self.pose_sigma, 0)
        return self

    def validate_run_options(self):
        """The option checks align and refine share: pixel size, mode list,
        chunks, batches, outlier threshold, threads, pyramid."""
        from ..core.nma import parse_mode_list
        base.positive("--pixel-size", self.pixel_size)
        parse_mode_list(self.mode_list)
        base.at_least("--chunk", self.chunk, 1)
        base.at_least("--batch-size", self.batch_size, 1)
        base.at_least("--outlier-threshold", self.outlier_threshold, 0)
        base.at_least("--threads", self.threads, 0)
        check_downscale(self.downscale)
        self.validate_atom_model()
        if self.pyramid is not None:
            need(len(self.pyramid) >= 1 and all(int(b) >= 8 for b in self.pyramid),
                 f"--pyramid {self.pyramid}: sizes of at least 8 px")
        return self

    def validate_atom_model(self):
        """--atom-model one of core.scattering.ATOM_MODELS, --b-factor a number
        >= 0 or 'auto', --sigma > 0."""
        from ..core.scattering import ATOM_MODELS
        need(self.atom_model in ATOM_MODELS, f"--atom-model {self.atom_model}: one of "
                                             f"{', '.join(ATOM_MODELS)}")
        base.positive("--sigma", self.sigma)
        if self.b_factor != "auto":
            need(isinstance(self.b_factor, (int, float)) and not isinstance(self.b_factor, bool),
                 f"--b-factor {self.b_factor}: a number (Å²) or 'auto'")
            base.at_least("--b-factor", self.b_factor, 0)

    def options(self, device):
        """The core AlignOptions of this config, on ``device``."""
        return AlignOptions(**{f.name: getattr(self, f.name)
                               for f in dataclasses.fields(AlignOptions)} | {"device": device})


#: the smallest --downscale box (px): the default pyramid's coarse level is half of it
MIN_DOWNSCALE = 16


def check_downscale(downscale, box=None):
    """--downscale: 0 (none) or an even box of at least :data:`MIN_DOWNSCALE`
    px, not larger than the images' ``box`` (when known)."""
    ok = isinstance(downscale, (int, np.integer)) and not isinstance(downscale, bool)
    need(ok and (downscale == 0 or (downscale >= MIN_DOWNSCALE and downscale % 2 == 0)),
         f"--downscale {downscale}: 0 (no downscaling) or an even box of at least "
         f"{MIN_DOWNSCALE} px")
    need(box is None or downscale <= box, f"--downscale {downscale}: larger than the images "
                                          f"({box} px)")


def parse_b_factor(value):
    """A --b-factor text: 'auto', else a number; other text is kept for
    Config.validate to name."""
    if str(value).strip().lower() == "auto":
        return "auto"
    try:
        return float(value)
    except (TypeError, ValueError):
        return str(value)


@dataclasses.dataclass
class Outputs:
    particles: str                   # the aligned particles (.xmd)
    n_aligned: int = 0
    n_rejected: int = 0
    n_kept: int = None
    b_factor: float = None           # Å², estimated from the particles (--b-factor auto)
    seconds: float = 0.0
    resumed_chunks: int = 0
    primary: bool = True             # False in the other processes under torchrun
    search: str = None               # how the poses were found (the summary says it)

    @property
    def stem(self):
        return os.path.splitext(self.particles)[0]

    @property
    def rejected(self):
        """Rows left out (non-finite values, unusable images), with the reason."""
        return self.stem + ".rejected.xmd"

    @property
    def kept(self):
        """The aligned particles minus Mahalanobis outliers (with a threshold)."""
        return self.stem + "_kept.xmd"

    @property
    def parts(self):
        return self.particles + ".parts"

    run_record = base.record_property("particles")


POSE_ANGLES = ("angleRot", "angleTilt", "anglePsi")


@base.recorded(lambda cfg: Outputs(cfg.out))
def run(cfg: Config, progress: bool = True) -> Outputs:
    """Align ``cfg.particles``: the global search, or (``from_poses``) the
    local search around the particles' own poses; returns :class:`Outputs`."""
    if not cfg.from_poses:
        out = run_alignment(cfg, "align", lambda aligner, imgs, ctf, t: aligner.align(imgs, ctf),
                            progress=progress)
        out.search = "global orientation and shift search"
        return out

    def check(table, modes):
        table.require(list(POSE_ANGLES), "poses to start from (--from-poses)", cfg.particles)

    out = run_alignment(cfg, "align", lambda aligner, imgs, ctf, t: aligner.align_from_poses(
        imgs, ctf, t.angles(), t.shifts()), check=check, progress=progress)
    out.search = (f"local search from the particles' poses: orientations within "
                  f"{cfg.cone:g} deg, shifts within {cfg.shift_window:g} Å, "
                  + (f"a {cfg.pose_sigma:g} deg prior on the orientations" if cfg.pose_sigma
                     else "no prior on the orientations"))
    return out


def run_alignment(cfg: Config, label: str, compute: Callable, check: Callable = None,
                  progress: bool = True) -> Outputs:
    """What the align and refine stages share: validate ``cfg``, read the
    particles and the reference, process the usable rows in resumable chunks
    (``compute(aligner, images, ctf, rows) -> dict`` of angles (b, 3), shifts
    (b, 2) px, amplitudes (b, M), cost (b,) for one batch of rows, a Table),
    and write OUT.xmd, OUT_kept.xmd (Mahalanobis filter) and OUT.rejected.xmd.
    ``check(table, modes)`` raises InputError for particles the stage cannot
    use (before anything is written). ``label`` ('align' or 'refine') names
    the stage: its run stamp holds the AlignOptions that change its results
    (:func:`deephemnma.core.config.result_options`). Returns :class:`Outputs`."""
    from ..core.align import Aligner
    from ..core.ctf import CTFParams
    from ..io.metadata import read_metadata, write_xmd
    from ..io.stacks import load_images
    from ..utils import Progress, distributed, resolve_device
    from .reference import check_fits, load_reference
    cfg.validate()
    out = Outputs(cfg.out)
    rank, world, dist = distributed(backend="gloo")
    table = read_metadata(cfg.particles)
    table.require(["image"], "image", cfg.particles)
    need(len(table) > 0, f"{cfg.particles}: no particles")
    if cfg.use_ctf:
        table.require(["ctfDefocusU"], "CTF (or set use_ctf off / --no-ctf)", cfg.particles)
    stacks = base.StackCheck(cfg.pixel_size).check(table)
    s, modes = load_reference(cfg.structure, cfg.selection, cfg.modes, cfg.mode_list)
    if check is not None:
        check(table, modes)
    check_downscale(cfg.downscale, stacks.box)
    box = cfg.downscale or stacks.box
    scale = stacks.box / box              # original px per aligned px
    ps = cfg.pixel_size * scale
    check_fits(s, box, ps)
    device = resolve_device(cfg.device)
    if world > 1 and device.type == "cuda":
        import torch
        device = torch.device(f"cuda:{rank % torch.cuda.device_count()}")
    opt = cfg.options(str(device))
    aligner = Aligner(s.coords, s.weights, modes.vectors, box, ps, opt,
                      elements=s.elements, names=s.names, pseudo_sigma=s.sigma)
    load, compute = _scaled(load_images, compute, box, scale)
    if cfg.b_factor == "auto":
        out.b_factor = auto_b_factor(aligner, table, cfg, compute, load)
    stamp = {"rows": base.table_digest(table), "structure": base.file_digest(cfg.structure),
             "modes": [int(n) for n in modes.numbers],
             "vectors": base.array_digest(modes.vectors), "chunk": cfg.chunk,
             "options": result_options(opt, label),
             "selection": cfg.selection, "use_ctf": cfg.use_ctf, "pixel_size": cfg.pixel_size,
             "downscale": cfg.downscale, "b_factor_used": aligner.b_factor}
    t0 = time.perf_counter()
    base.remove_stale_temporaries(out.particles, out.rejected, out.kept)   # of a killed run
    with base.cleanup_on_error(out.particles, out.rejected, out.kept, out.parts):
        store = base.ChunkStore(out.parts, stamp, label, quiet=rank != 0, primary=rank == 0,
                                barrier=None if dist is None else dist.barrier)
        rejected = base.Rejected()
        prog = Progress(len(table), f"{label}[{rank}]" if world > 1 else label,
                        quiet=None if progress else True)
        n_chunks = 0
        for k, t, imgs in base.accepted_chunks([base.numbered(table)], cfg.chunk, load,
                                               rejected):
            n_chunks = k + 1
            if k % world != rank:
                continue
            if store.done(k, ".npz"):
                out.resumed_chunks += 1
            else:
                ctf = CTFParams.from_table(t) if cfg.use_ctf else None
                res = {"angles": [], "shifts": [], "amplitudes": [], "cost": []}
                for b in range(0, len(t), opt.batch_size):
                    sel = np.arange(b, min(len(t), b + opt.batch_size))
                    r = compute(aligner, imgs[sel], None if ctf is None else ctf.subset(sel),
                                t.subset(sel))
                    for key in res:
                        res[key].append(r[key])
                    prog.update(len(sel))
                store.save_npz(k, rows=t[base.ROW], **{key: np.concatenate(v)
                                                       for key, v in res.items()})
                continue
            prog.update(len(t))
        prog.update(len(rejected))
        prog.close()
        if dist is not None:
            dist.barrier()
        if rank != 0:
            out.primary = False
            return out
        if not n_chunks:
            raise InputError(f"{cfg.particles}: no usable particle ({rejected.summary()})")
        parts = [store.load_npz(k) for k in range(n_chunks)]
        res = {key: np.concatenate([p[key] for p in parts])
               for key in ("rows", "angles", "shifts", "amplitudes", "cost")}
        t = table.subset(res["rows"])
        t["angleRot"], t["angleTilt"], t["anglePsi"] = res["angles"].T
        t["shiftX"], t["shiftY"] = (res["shifts"] * scale).T     # the images' pixels
        t["nmaDisplacements"] = res["amplitudes"]
        t["cost"] = res["cost"]
        if "itemId" not in t:
            t["itemId"] = res["rows"] + 1
        write_xmd(out.particles, t, absolute=cfg.absolute_paths)
        rejected.write(out.rejected)
        out.n_aligned, out.n_rejected = len(t), len(rejected)
        if cfg.outlier_threshold > 0 and len(t) >= 2:   # a covariance needs 2 rows
            from ..core.outliers import mahalanobis_filter
            keep, d = mahalanobis_filter(t["nmaDisplacements"], cfg.outlier_threshold)
            t["mahalanobis"] = d
            write_xmd(out.kept, t.subset(keep), absolute=cfg.absolute_paths)
            out.n_kept = int(keep.sum())
        elif os.path.exists(out.kept):
            os.remove(out.kept)
    store.remove()
    out.seconds = time.perf_counter() - t0
    return out


#: particles (spread evenly over the input) from which --b-factor auto is estimated
AUTO_B_PARTICLES = 48


def _scaled(load_images, compute, box, scale):
    """(load, compute) on images downscaled to ``box`` px (``scale``
    original px per px): ``compute`` gets rows whose shifts are in those
    pixels (and returns shifts in them)."""
    if scale == 1:
        return (lambda t: load_images(t)), compute

    def load(t):
        import torch
        from ..core.image import downscale
        return downscale(torch.from_numpy(np.asarray(load_images(t))), box).numpy()

    def scaled_compute(aligner, imgs, ctf, t):
        if "shiftX" in t:
            t = t.copy()
            t["shiftX"], t["shiftY"] = (t.shifts() / scale).T
        return compute(aligner, imgs, ctf, t)
    return load, scaled_compute


def auto_b_factor(aligner, table, cfg, compute, load):
    """Estimate the atoms' B-factor from :data:`AUTO_B_PARTICLES` usable
    particles spread over ``table``: their poses by ``compute`` (the stage's
    own work, with the aligner's starting B), then the B maximising the mean
    correlation of projections with the images at those poses
    (core.align.Aligner.estimate_b_factor); ``load(rows) -> images``. Sets
    it on the aligner and returns it."""
    from ..core.ctf import CTFParams
    n = min(len(table), 4 * AUTO_B_PARTICLES)
    pick = np.unique(np.linspace(0, len(table) - 1, n).round().astype(int))
    got = next(base.accepted_chunks([table.subset(pick)], AUTO_B_PARTICLES, load,
                                    base.Rejected()), None)
    need(got is not None, f"{cfg.particles}: no usable particle to estimate --b-factor auto")
    _, t, imgs = got
    ctf = CTFParams.from_table(t) if cfg.use_ctf else None
    poses = compute(aligner, imgs, ctf, t)
    b, _ = aligner.estimate_b_factor(imgs, ctf, poses)
    aligner.set_b_factor(b)
    return b


def summary(out: Outputs, cfg: Config, verb: str = "aligned") -> list[str]:
    """Lines for the user after :func:`run`."""
    lines = [f"{verb} {out.n_aligned} images in {out.seconds:.1f} s -> {out.particles}"]
    if out.search:
        lines.append(out.search)
    if cfg.downscale:
        lines.append(f"images aligned Fourier-downscaled to {cfg.downscale} px; shifts in the "
                     "images' pixels")
    if out.b_factor is not None:
        lines.append(f"atoms' B-factor estimated from the particles: {out.b_factor:.0f} Å²")
    if out.n_rejected:
        lines.append(f"left out {out.n_rejected} unusable row(s), listed in {out.rejected}")
    if out.n_kept is not None:
        lines.append(f"Mahalanobis <= {cfg.outlier_threshold}: kept {out.n_kept} of "
                     f"{out.n_aligned} -> {out.kept}")
    return lines

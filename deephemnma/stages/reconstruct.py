"""3D reconstruction of a group of particles from their Euler angles and shifts
(Fourier direct inversion, Wiener CTF correction when CTF columns exist), its
gold-standard half maps and their FSC, and optionally its FSC against a
reference map.

Half maps (on by default, ``half_maps``): the particles are split in two
random halves fixed by particle id (``itemId``, else the row's position in
``particles`` from 1; :func:`deephemnma.core.reconstruct.half_sets`), so a
particle is in the same half in every run and every group. Besides the map
``OUT.mrc`` a run writes (:class:`Outputs` owns the names) ``OUT_half1.mrc``
and ``OUT_half2.mrc``; ``OUT_mask.mrc``, a soft mask made from the map (the
map low-passed at 15 Å, or 4 px when the pixels are larger than 3.75 Å,
thresholded at ``mask_threshold`` times its maximum, dilated by
``mask_dilate`` px, with a raised-cosine edge ``soft_edge`` px wide); the FSC
between the halves, unmasked and within the mask, the masked one corrected for
the mask by phase randomisation
(:func:`deephemnma.core.reconstruct.masked_fsc`, Chen et al. 2013), as
``OUT_fsc_halves.json`` (resolutions in Å at 0.143 and 0.5, frequencies in
1/Å) and ``OUT_fsc_halves.png``; and ``OUT_filtered.mrc``, the map low-pass
filtered at its corrected masked 0.143 resolution (the map ``OUT.mrc`` itself
is not filtered).

Rows with a non-finite angle, shift or CTF value, or an unusable image (NaN,
infinite or constant), are left out alone and listed in ``OUT.rejected.xmd``;
the map is then that of a run without them (same batches). The pixel size is
checked against every stack's header (when it has one) and every stack's box
against the others. A map with a non-finite voxel is never written.
"""
from __future__ import annotations
import dataclasses
import math
import os
import time

import numpy as np

from . import base
from .base import need

__all__ = ["Config", "Outputs", "run", "summary"]

# the numbers of a row that the reconstruction uses (CTF ones only with CTF)
POSE_COLUMNS = ("angleRot", "angleTilt", "anglePsi", "shiftX", "shiftY")
CTF_COLUMNS = ("ctfDefocusU", "ctfDefocusV", "ctfDefocusAngle", "ctfVoltage",
               "ctfSphericalAberration", "ctfQ0", "ctfPhaseShift")


@dataclasses.dataclass
class Config(base.StageConfig):
    particles: str = None        # .xmd/.star with angles (and shifts, CTF)
    out: str = None              # output map (.mrc)
    pixel_size: float = None     # Å/px of the images used
    images: str = None           # another metadata whose image column is used (e.g. full size)
    shift_scale: float = 1.0     # multiplies the stored shifts (e.g. 2: shifts of 64 px images)
    use_ctf: bool = True         # Wiener CTF correction when CTF columns exist
    flipped: bool = False        # images are CTF phase-flipped
    min_images: int = 50         # refuse smaller groups
    pad: float = 1.0             # Fourier oversampling (>= 1)
    reference: str = None        # map to compute the FSC against
    half_maps: bool = True       # half maps, their FSC, the mask and the filtered map
    mask_threshold: float = 0.1  # mask: fraction of the low-passed map's maximum, in (0, 1)
    mask_dilate: float = 3.0     # mask: dilation (px)
    soft_edge: float = 4.0       # mask: raised-cosine edge width (px)
    device: str = "auto"

    def validate_options(self):
        """Checks of the numbers alone (no file is read)."""
        base.positive("--pixel-size", self.pixel_size)
        if self.half_maps:
            need(base._finite_number(self.mask_threshold) and 0 < self.mask_threshold < 1,
                      f"--mask-threshold must be in (0, 1) (a fraction of the low-passed "
                      f"map's maximum), got {self.mask_threshold}")
            base.at_least("--mask-dilate", self.mask_dilate, 0)
            base.at_least("--soft-edge", self.soft_edge, 0)
        base.at_least("--pad", self.pad, 1)
        base.positive("--shift-scale", self.shift_scale)
        base.at_least("--min-images", self.min_images, 1)
        return self

    def validate(self):
        base.existing("--particles", self.particles)
        inputs = [self.particles]
        for name, path in (("--images", self.images), ("--reference", self.reference)):
            if path not in (None, ""):
                base.existing(name, path)
                inputs.append(path)
        base.output_path("--out", self.out, inputs)
        if self.half_maps:
            for p in Outputs(self.out).half_map_files():
                for i in inputs:
                    need(not base.same_file(p, i), f"--out {self.out}: its half-map file {p} "
                         "is an input of this run; choose another --out")
        return self.validate_options()


@dataclasses.dataclass
class Outputs:
    map: str                     # the reconstruction (.mrc)
    box: int = 0                 # its size (voxels), the images' box
    n_images: int = 0            # images used
    n_rejected: int = 0          # rows left out
    fsc: dict = None             # against --reference: res_0.5, res_0.143 (Å), freq, fsc
    halves: dict = None          # half-map FSC (the JSON's content, see fsc_halves_json)
    seconds: float = 0.0

    def _beside(self, suffix):
        return os.path.splitext(self.map)[0] + suffix

    @property
    def rejected(self):
        """Rows left out (non-finite values, unusable images), with the reason."""
        return self._beside(".rejected.xmd")

    def half(self, k):
        """Half map ``k`` (1 or 2)."""
        return self._beside(f"_half{int(k)}.mrc")

    @property
    def mask(self):
        """The soft mask of the masked half-map FSC."""
        return self._beside("_mask.mrc")

    @property
    def filtered(self):
        """The map low-pass filtered at its corrected masked half-map 0.143
        resolution."""
        return self._beside("_filtered.mrc")

    @property
    def fsc_halves_json(self):
        """The half-map FSC: res_0.143, res_0.5 (Å, unmasked), freq (1/Å), fsc;
        res_0.143_masked, res_0.5_masked, fsc_masked (masked, corrected by
        phase randomisation); res_0.143_masked_uncorrected,
        fsc_masked_uncorrected; fsc_phase_randomised (the masked FSC of the
        halves with their phases randomised beyond phase_randomised_from Å,
        where the unmasked FSC first drops below phase_randomised_at_fsc, or
        the mask's lowpass_A if finer);
        pixel_size (Å), n_half1, n_half2, mask (its options: threshold,
        dilate_px, soft_edge_px, lowpass_A) and filtered_at (Å)."""
        return self._beside("_fsc_halves.json")

    @property
    def fsc_halves_png(self):
        """The half-map FSC curves: unmasked, masked (uncorrected and
        corrected) and of the phase-randomised halves (PNG)."""
        return self._beside("_fsc_halves.png")

    def half_map_files(self):
        """Every file the half maps add."""
        return [self.half(1), self.half(2), self.mask, self.filtered, self.fsc_halves_json,
                self.fsc_halves_png]

    run_record = base.record_property("map")


def _table(cfg):
    """The particle rows with the image column to use (from ``--images`` when
    given, matched by itemId/image)."""
    from ..io.metadata import read_metadata
    t = base.numbered(read_metadata(cfg.particles), 1)     # the row's position: a half's id
    t.require(["angleRot", "angleTilt", "anglePsi"], "Euler angle", cfg.particles)
    need(len(t) > 0, f"{cfg.particles}: no particles")
    if cfg.images:
        from ..core.metrics import match_rows
        src = read_metadata(cfg.images)
        src.require(["image"], "image", cfg.images)
        need(len(src) > 0, f"--images {cfg.images}: no particles")
        ie, isrc = match_rows(t, src)
        t = t.subset(ie)
        t["image"] = src.subset(isrc).rebased(None, absolute=True)["image"]
    t.require(["image"], "image", cfg.particles)
    return t


@base.recorded(lambda cfg: Outputs(cfg.out))
def run(cfg: Config, progress: bool = True) -> Outputs:
    """Reconstruct ``cfg.particles`` into ``cfg.out``; returns :class:`Outputs`."""
    from ..core.ctf import CTFParams
    from ..core.reconstruct import fsc_resolution, half_sets, reconstruct, reconstruct_halves
    from ..io.stacks import load_images, read_volume, write_volume
    from ..utils import Progress, resolve_device
    cfg.validate()
    out = Outputs(cfg.out)
    t = _table(cfg)
    stacks = base.StackCheck(cfg.pixel_size).check(t)
    ref = None
    if cfg.reference:
        ref, ref_ps = read_volume(cfg.reference)
        need(ref.shape == (stacks.box,) * 3,
             f"--reference {cfg.reference} is {'x'.join(map(str, ref.shape))} voxels, the "
             f"reconstruction will be {stacks.box}^3: give a map of the images' box")
        ref_ps = base.header_pixel_size(ref_ps)
        need(ref_ps is None or abs(ref_ps - cfg.pixel_size) <= 0.01 * cfg.pixel_size,
             f"--reference {cfg.reference}: voxel size {ref_ps:g} Å, "
             f"--pixel-size {cfg.pixel_size:g}")
    rejected = base.Rejected()
    columns = POSE_COLUMNS + (CTF_COLUMNS if cfg.use_ctf else ())
    t, imgs = base.usable_rows(t, load_images, rejected,
                               lambda rows: base.finite_rows(rows, columns))
    note = f" ({rejected.summary()})" if len(rejected) else ""
    need(len(t) > 0, f"{cfg.particles}: no usable particle{note}")
    need(len(t) >= cfg.min_images, f"{cfg.particles}: {len(t)} usable images{note}, fewer "
         f"than --min-images {cfg.min_images} for a reconstruction")
    ctf = CTFParams.from_table(t) if cfg.use_ctf else None
    halves = None
    if cfg.half_maps:
        halves = half_sets(t["itemId"] if "itemId" in t else t[base.ROW])
        need(0 < halves.sum() < len(halves), f"{cfg.particles}: all {len(t)} usable images "
             "fall in one half: no half maps (give more images, or --no-half-maps)")
    t0 = time.perf_counter()
    prog = Progress(len(t), "reconstruct", quiet=None if progress else True)
    args = dict(shifts=t.shifts() * cfg.shift_scale, ctf=ctf, pixel_size=cfg.pixel_size,
                pad=cfg.pad, flipped=cfg.flipped, device=str(resolve_device(cfg.device)),
                progress=prog)
    if halves is None:
        maps = [reconstruct(imgs, t.angles(), **args)]
    else:
        maps = list(reconstruct_halves(imgs, t.angles(), halves, **args))
    prog.close()
    need(all(np.isfinite(v).all() for v in maps), f"{cfg.particles}: the reconstruction has "
         "non-finite voxels; nothing written")
    vol = maps[0]
    if ref is not None:
        out.fsc = fsc_resolution(vol, ref, cfg.pixel_size)
    extra = {}
    if halves is not None:
        out.halves, extra = _half_map_results(cfg, maps, halves)
    files = [out.map, out.rejected] + (out.half_map_files() if halves is not None else [])
    with base.cleanup_on_error(*files):
        write_volume(out.map, vol, cfg.pixel_size)
        rejected.write(out.rejected)
        if halves is not None:
            for k in (1, 2):
                write_volume(out.half(k), maps[k], cfg.pixel_size)
            write_volume(out.mask, extra["mask"], cfg.pixel_size)
            write_volume(out.filtered, extra["filtered"], cfg.pixel_size)
            _write_halves_fsc(out)
        else:                      # half-map files of an earlier run would mislead
            for p in out.half_map_files():
                if os.path.exists(p):
                    os.remove(p)
    out.box, out.n_images, out.n_rejected = stacks.box, len(t), len(rejected)
    out.seconds = time.perf_counter() - t0
    return out


def _half_map_results(cfg, maps, halves):
    """The half-map FSC (unmasked, and masked corrected by phase
    randomisation), the mask and the filtered map -> (the JSON's dict,
    {"mask", "filtered"} arrays)."""
    from ..core.reconstruct import MASK_LOWPASS, RANDOMISE_FSC, lowpass, masked_fsc, \
        resolution_at, soft_mask
    full, h1, h2 = maps
    ps = cfg.pixel_size
    mask = soft_mask(full, ps, cfg.mask_threshold, cfg.mask_dilate, cfg.soft_edge)
    lowpass_at = max(MASK_LOWPASS, 4 * ps)           # the mask's resolution (Å)
    c = masked_fsc(h1, h2, mask, ps, min_shell=math.floor(h1.shape[-1] * ps / lowpass_at))
    freq = c["freq"]

    def curve(x):
        return np.asarray(x, float).tolist()
    k = c["randomised_from"]
    r = {"res_0.143": resolution_at(freq, c["unmasked"], 0.143),
         "res_0.5": resolution_at(freq, c["unmasked"], 0.5),
         "res_0.143_masked": resolution_at(freq, c["corrected"], 0.143),
         "res_0.5_masked": resolution_at(freq, c["corrected"], 0.5),
         "res_0.143_masked_uncorrected": resolution_at(freq, c["masked"], 0.143),
         "freq": curve(freq), "fsc": curve(c["unmasked"]), "fsc_masked": curve(c["corrected"]),
         "fsc_masked_uncorrected": curve(c["masked"]),
         "fsc_phase_randomised": curve(c["randomised"]),
         "phase_randomised_from": float(1 / freq[k]),
         "phase_randomised_at_fsc": float(RANDOMISE_FSC), "pixel_size": float(ps),
         "n_half1": int((halves == 0).sum()), "n_half2": int((halves == 1).sum()),
         "mask": {"threshold": float(cfg.mask_threshold), "dilate_px": float(cfg.mask_dilate),
                  "soft_edge_px": float(cfg.soft_edge),
                  "lowpass_A": float(lowpass_at)}}
    r["filtered_at"] = r["res_0.143_masked"]
    return r, {"mask": mask, "filtered": lowpass(full, ps, r["filtered_at"])}


def _write_halves_fsc(out):
    import json
    from ..utils import atomic_path
    from .fsc import plot_fsc_halves
    with atomic_path(out.fsc_halves_json) as tmp, open(tmp, "w") as f:
        json.dump(out.halves, f)
    plot_fsc_halves(out.halves, out.fsc_halves_png,
                    title=f"half maps of {os.path.basename(out.map)}")


def summary(out: Outputs, cfg: Config) -> list[str]:
    """Lines for the user after :func:`run`."""
    lines = [f"reconstructed {out.n_images} images in {out.seconds:.1f} s -> {out.map}"]
    if out.n_rejected:
        lines.append(f"left out {out.n_rejected} unusable row(s), listed in {out.rejected}")
    if out.halves is not None:
        h = out.halves
        lines.append(f"half maps ({h['n_half1']} + {h['n_half2']} images): FSC 0.143 "
                     f"{h['res_0.143_masked']:.2f} Å masked (corrected by phase randomisation "
                     f"beyond {h['phase_randomised_from']:.1f} Å; "
                     f"{h['res_0.143_masked_uncorrected']:.2f} Å uncorrected), "
                     f"{h['res_0.143']:.2f} Å unmasked -> {out.half(1)}, {out.half(2)}; "
                     f"curve {out.fsc_halves_png}")
        lines.append(f"map filtered at {h['filtered_at']:.2f} Å -> {out.filtered}")
    if out.fsc is not None:
        lines.append(f"FSC vs {cfg.reference}: {out.fsc['res_0.5']:.2f} Å at 0.5, "
                     f"{out.fsc['res_0.143']:.2f} Å at 0.143")
    return lines

"""3D reconstruction of a group of particles from their Euler angles and shifts
(Fourier direct inversion, Wiener CTF correction when CTF columns exist), and
its FSC against a reference map.

Rows with a non-finite angle, shift or CTF value, or an unusable image (NaN,
infinite or constant), are left out alone and listed in ``OUT.rejected.xmd``;
the map is then that of a run without them (same batches). The pixel size is
checked against every stack's header (when it has one) and every stack's box
against the others. A map with a non-finite voxel is never written.
"""
from __future__ import annotations
import dataclasses
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
    device: str = "auto"

    def validate_options(self):
        """Checks of the numbers alone (no file is read)."""
        base.positive("--pixel-size", self.pixel_size)
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
        return self.validate_options()


@dataclasses.dataclass
class Outputs:
    map: str                     # the reconstruction (.mrc)
    box: int = 0                 # its size (voxels), the images' box
    n_images: int = 0            # images used
    n_rejected: int = 0          # rows left out
    fsc: dict = None             # against --reference: res_0.5, res_0.143 (Å), freq, fsc
    seconds: float = 0.0

    @property
    def rejected(self):
        """Rows left out (non-finite values, unusable images), with the reason."""
        return os.path.splitext(self.map)[0] + ".rejected.xmd"

    run_record = base.record_property("map")


def _table(cfg):
    """The particle rows with the image column to use (from ``--images`` when
    given, matched by itemId/image)."""
    from ..io.metadata import read_metadata
    t = read_metadata(cfg.particles)
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
    from ..core.reconstruct import fsc_resolution, reconstruct
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
    t0 = time.perf_counter()
    prog = Progress(len(t), "reconstruct", quiet=None if progress else True)
    vol = reconstruct(imgs, t.angles(), t.shifts() * cfg.shift_scale, ctf, cfg.pixel_size,
                      pad=cfg.pad, flipped=cfg.flipped,
                      device=str(resolve_device(cfg.device)), progress=prog)
    prog.close()
    need(np.isfinite(vol).all(), f"{cfg.particles}: the reconstruction has non-finite "
         "voxels; nothing written")
    if ref is not None:
        out.fsc = fsc_resolution(vol, ref, cfg.pixel_size)
    with base.cleanup_on_error(out.map, out.rejected):
        write_volume(out.map, vol, cfg.pixel_size)
        rejected.write(out.rejected)
    out.box, out.n_images, out.n_rejected = stacks.box, len(t), len(rejected)
    out.seconds = time.perf_counter() - t0
    return out


def summary(out: Outputs, cfg: Config) -> list[str]:
    """Lines for the user after :func:`run`."""
    lines = [f"reconstructed {out.n_images} images in {out.seconds:.1f} s -> {out.map}"]
    if out.n_rejected:
        lines.append(f"left out {out.n_rejected} unusable row(s), listed in {out.rejected}")
    if out.fsc is not None:
        lines.append(f"FSC vs {cfg.reference}: {out.fsc['res_0.5']:.2f} Å at 0.5, "
                     f"{out.fsc['res_0.143']:.2f} Å at 0.143")
    return lines

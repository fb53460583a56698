"""Local HEMNMA: refine every particle's amplitudes, angles and shifts from
its current ones (a network's predictions, or any alignment), without
HEMNMA's global search.

The particles carry ``angleRot angleTilt anglePsi`` (Xmipp ZYZ, degrees),
``shiftX shiftY`` (pixels of the images; 0 when absent) and
``nmaDisplacements`` (one amplitude per mode of the mode list; all 0 when
absent, e.g. particles imported with a consensus refinement's poses: the
summary says so; align --from-poses, which searches the amplitudes, was
more accurate from such starts in benchmarks/bench_from_poses.py). For each
usable particle, the continuous refinement of :mod:`deephemnma.stages.align`
(Adam on 1 - NCC of the amplitudes, rotation and shifts against the
projection of the deformed reference with the particle's |CTF|) runs from
these values: ``refine_coarse_iters`` steps at the coarse pyramid level
(default 10; 0: none, ~15 % faster but less robust to starting errors beyond
~5 degrees), then ``refine_fine_iters`` (25) at full size. The outputs are those of align (``OUT.xmd``, ``OUT_kept.xmd``,
``OUT.rejected.xmd``), with the same chunks, resume and row rejection: a row
with a non-finite angle, shift, amplitude, CTF value or image is left out
alone. benchmarks/bench_refine.py measures it against full HEMNMA.
"""
from __future__ import annotations
import dataclasses

import numpy as np

from . import align, base
from .align import Outputs
from .base import need

__all__ = ["Config", "Outputs", "run", "summary"]

POSE_COLUMNS = align.POSE_ANGLES        # required; nmaDisplacements: 0 when absent


@dataclasses.dataclass
class Config(align.Config):
    """align's Config (same files and outputs); of its AlignOptions, refine
    uses the pyramid, the refinement's steps, learning rates, mask, atom
    sigma, batch size, threads and device (not the global search's)."""

    def validate_options(self):
        """The checks that need no file."""
        self.validate_run_options()
        base.at_least("--refine-coarse-iters", self.refine_coarse_iters, 0)
        base.at_least("--refine-fine-iters", self.refine_fine_iters, 1)
        return self


def _check(cfg, start):
    """The particles' check; ``start['zero_amplitudes']``: they carry none."""
    def check(table, modes):
        table.require(list(POSE_COLUMNS), "starting pose (angles)", cfg.particles)
        start["zero_amplitudes"] = "nmaDisplacements" not in table
        if start["zero_amplitudes"]:
            return
        k = table["nmaDisplacements"].reshape(len(table), -1).shape[1]
        M = len(modes.numbers)
        need(k == M, f"{cfg.particles}: the particles have {k} amplitudes but --mode-list "
                     f"{cfg.mode_list} names {M} modes")
    return check


def _refine(aligner, images, ctf, rows):
    amps = rows["nmaDisplacements"].reshape(len(rows), -1) if "nmaDisplacements" in rows \
        else np.zeros((len(rows), aligner.M))
    return aligner.refine(images, ctf, rows.angles(), rows.shifts(), amps)


@base.recorded(lambda cfg: Outputs(cfg.out))
def run(cfg: Config, progress: bool = True) -> Outputs:
    """Refine ``cfg.particles`` from their poses (their amplitudes from zero
    when they carry none); returns :class:`Outputs`."""
    start = {}
    out = align.run_alignment(cfg, "refine", _refine, check=_check(cfg, start),
                              progress=progress)
    if start.get("zero_amplitudes"):
        out.search = "the particles carry no amplitudes (nmaDisplacements): they started at zero"
    return out


def summary(out: Outputs, cfg: Config) -> list[str]:
    """Lines for the user after :func:`run`."""
    return align.summary(out, cfg, verb="refined")

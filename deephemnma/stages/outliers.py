"""Mahalanobis outlier rejection on normal-mode amplitudes (the paper keeps
images whose distance is <= 3.2).

Reads particles with ``nmaDisplacements``; writes those within ``threshold``
to OUT (.xmd) with a ``mahalanobis`` column, their image references resolving
from OUT's folder. Rows whose amplitudes are not all finite are left out alone
(they do not enter the mean and covariance) and listed in
``OUT.rejected.xmd`` with the reason.
"""
from __future__ import annotations
import dataclasses
import os

import numpy as np

from . import base
from .base import InputError, need

__all__ = ["Config", "Outputs", "run", "summary"]


@dataclasses.dataclass
class Config(base.StageConfig):
    input: str = None                # .xmd/.star with nmaDisplacements
    out: str = None                  # output .xmd (the kept particles)
    threshold: float = 3.2           # Mahalanobis distance kept (<=)
    robust: bool = False             # minimum covariance determinant estimate
    absolute_paths: bool = False     # image references in the output absolute

    def validate_options(self):
        base.positive("--threshold", self.threshold)
        return self

    def validate(self):
        base.existing("--input", self.input)
        base.output_path("--out", self.out, [self.input])
        base.output_path("--out", Outputs(self.out).rejected, [self.input])
        return self.validate_options()


@dataclasses.dataclass
class Outputs:
    particles: str                   # the kept particles (.xmd)
    n_input: int = 0
    n_kept: int = 0
    n_rejected: int = 0              # rows with non-finite amplitudes

    @property
    def rejected(self):
        """Rows left out (non-finite amplitudes), with the reason."""
        return os.path.splitext(self.particles)[0] + ".rejected.xmd"

    run_record = base.record_property("particles")


@base.recorded(lambda cfg: Outputs(cfg.out))
def run(cfg: Config, progress: bool = True) -> Outputs:
    """Filter ``cfg.input``; returns :class:`Outputs`."""
    from ..core.outliers import mahalanobis_filter
    from ..io.metadata import read_metadata, write_xmd
    cfg.validate()
    out = Outputs(cfg.out)
    t = read_metadata(cfg.input)
    need(len(t) > 0, f"{cfg.input}: no particles")
    t.require(["nmaDisplacements"], "normal-mode amplitude", cfg.input)
    out.n_input = len(t)
    ok = base.finite_rows(t, ["nmaDisplacements"])
    rejected = base.Rejected()
    rejected.add(t, ~ok, "non-finite amplitude")
    usable = t.subset(np.nonzero(ok)[0])
    if len(usable) < 2:
        raise InputError(f"{cfg.input}: {len(usable)} particle(s) with finite amplitudes; "
                         "at least 2 are needed for a covariance")
    keep, d = mahalanobis_filter(usable["nmaDisplacements"], cfg.threshold, cfg.robust)
    usable["mahalanobis"] = d
    with base.cleanup_on_error(out.particles, out.rejected):
        write_xmd(out.particles, usable.subset(np.nonzero(keep)[0]),
                  absolute=cfg.absolute_paths)
        rejected.write(out.rejected)
    out.n_kept, out.n_rejected = int(keep.sum()), len(rejected)
    return out


def summary(out: Outputs, cfg: Config) -> list[str]:
    lines = [f"kept {out.n_kept} of {out.n_input - out.n_rejected} images (Mahalanobis <= "
             f"{cfg.threshold}) -> {out.particles}"]
    if out.n_rejected:
        lines.append(f"left out {out.n_rejected} row(s) with non-finite amplitudes, listed "
                     f"in {out.rejected}")
    return lines

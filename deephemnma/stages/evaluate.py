"""Estimated parameters against ground truth (the paper's Tables 1-2).

Per-mode amplitude MAE, angular distance (degrees), shift errors (Å, from
shifts in pixels of ``pixel_size`` Å) and, when the normal modes are given,
the RMSD terms (Å). The estimated amplitudes belong to the first flexible
modes of the given modes (:func:`deephemnma.core.nma.flexible_numbers`).
Rows are matched by ``itemId`` (else ``image``, else position); rows with a
non-finite value in either table are left out and counted.
"""
from __future__ import annotations
import dataclasses
import os

from . import base
from .base import need

__all__ = ["Config", "Outputs", "run", "summary"]

COMPARED = ("nmaDisplacements", "angleRot", "angleTilt", "anglePsi", "shiftX", "shiftY")


@dataclasses.dataclass
class Config(base.StageConfig):
    est: str = None                  # estimated .xmd/.star
    truth: str = None                # ground-truth .xmd/.star
    pixel_size: float = None         # Å/px of the shifts
    modes: str = None                # modes folder / modes.xmd, for the RMSD terms
    json: str = None                 # write the results here

    def validate_options(self):
        base.positive("--pixel-size", self.pixel_size)
        return self

    def validate(self):
        base.existing("--est", self.est)
        base.existing("--truth", self.truth)
        if self.modes not in (None, ""):
            base.existing("--modes", self.modes, "path")
        if self.json not in (None, ""):
            base.output_path("--json", self.json, [self.est, self.truth, self.modes])
        return self.validate_options()


@dataclasses.dataclass
class Outputs:
    results: dict = None             # {metric: {mean, std}}, "n": rows compared
    json: str = None
    n_left_out: int = 0              # estimated rows with a non-finite value
    n_truth_left_out: int = 0        # true rows with a non-finite value
    mode_numbers: list = None        # the modes the amplitudes belong to (with modes)

    run_record = base.record_property("json")


@base.recorded(lambda cfg: Outputs(json=cfg.json or None))
def run(cfg: Config, progress: bool = True) -> Outputs:
    """Compare ``cfg.est`` with ``cfg.truth``; returns :class:`Outputs`."""
    from ..core.metrics import evaluate, save_json
    from ..core.nma import flexible_numbers, read_continuousflex
    from ..io.metadata import read_metadata
    from ..utils import atomic_path
    cfg.validate()
    out = Outputs(json=cfg.json or None)
    est, truth = read_metadata(cfg.est), read_metadata(cfg.truth)
    need(len(est) > 0, f"{cfg.est}: no rows")
    need(len(truth) > 0, f"{cfg.truth}: no rows")
    ok_e, ok_t = base.finite_rows(est, COMPARED), base.finite_rows(truth, COMPARED)
    out.n_left_out, out.n_truth_left_out = int((~ok_e).sum()), int((~ok_t).sum())
    est, truth = est.subset(ok_e), truth.subset(ok_t)
    need(len(est) > 0, f"{cfg.est}: no row with finite values")
    vectors = ref = None
    if cfg.modes:
        m = read_continuousflex(cfg.modes)
        if "nmaDisplacements" in est:
            k = est["nmaDisplacements"].shape[1]
            m = m.select(flexible_numbers(m.numbers, k, cfg.modes))
        vectors, ref, out.mode_numbers = m.vectors, m.ref_coords, [int(n) for n in m.numbers]
    out.results = evaluate(est, truth, cfg.pixel_size, ref, vectors, out.mode_numbers)
    if out.json:
        with base.cleanup_on_error(out.json), atomic_path(out.json) as tmp:
            save_json(out.results, tmp)
    return out


def summary(out: Outputs, cfg: Config) -> list[str]:
    from ..core.metrics import format_table
    lines = format_table(out.results, os.path.basename(cfg.est)).splitlines()
    if out.n_left_out or out.n_truth_left_out:
        lines.append(f"left out {out.n_left_out} estimated and {out.n_truth_left_out} true "
                     "row(s) with a non-finite value")
    if out.json:
        lines.append(f"results -> {out.json}")
    return lines

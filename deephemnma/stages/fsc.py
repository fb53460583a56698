"""Fourier shell correlation between two maps: resolutions at 0.5 and 0.143,
optionally the curve as a PNG and as JSON.

The maps must have the same cubic shape, finite values and, when both headers
carry a voxel size, the same one. The voxel size is ``pixel_size`` when given,
else the first map's header.

The PNG is drawn on a :class:`matplotlib.figure.Figure` (no pyplot, no
backend chosen here: the caller's, if any, is left alone).
"""
from __future__ import annotations
import dataclasses
import json
import os

import numpy as np

from . import base
from .base import InputError, need

__all__ = ["Config", "Outputs", "run", "summary", "plot_fsc", "plot_fsc_halves",
           "half_map_curves"]


@dataclasses.dataclass
class Config(base.StageConfig):
    map1: str = None
    map2: str = None
    pixel_size: float = None         # Å/voxel (default: the first map's header)
    png: str = None                  # write the FSC curve here
    json: str = None                 # write the resolutions and curve here

    def validate_options(self):
        if self.pixel_size is not None:
            base.positive("--pixel-size", self.pixel_size)
        return self

    def validate(self):
        base.existing("map1", self.map1)
        base.existing("map2", self.map2)
        for name, p in (("--png", self.png), ("--json", self.json)):
            if p not in (None, ""):
                base.output_path(name, p, [self.map1, self.map2])
        need(self.png in (None, "") or self.json in (None, "") or
             not base.same_file(self.png, self.json), "--png and --json are the same file")
        return self.validate_options()


@dataclasses.dataclass
class Outputs:
    png: str = None
    json: str = None
    pixel_size: float = None         # Å/voxel used
    res_05: float = None             # Å, FSC = 0.5
    res_0143: float = None           # Å, FSC = 0.143
    freq: np.ndarray = None          # 1/Å, one per shell
    fsc: np.ndarray = None

    run_record = base.record_property("json", "png")


def _read(name, path):
    from ..io.stacks import read_volume
    from .base import header_pixel_size
    vol, vs = read_volume(path)
    need(len(set(vol.shape)) == 1, f"{name} {path}: the map is not cubic ({vol.shape})")
    need(np.isfinite(vol).all(), f"{name} {path}: the map has NaN or infinite values")
    return vol, header_pixel_size(vs)


@base.recorded(lambda cfg: Outputs(png=cfg.png or None, json=cfg.json or None))
def run(cfg: Config, progress: bool = True) -> Outputs:
    """FSC of ``cfg.map1`` and ``cfg.map2``; returns :class:`Outputs`."""
    from ..core.reconstruct import fsc_resolution
    from ..utils import atomic_path
    cfg.validate()
    a, pa = _read("map1", cfg.map1)
    b, pb = _read("map2", cfg.map2)
    if a.shape != b.shape:
        raise InputError(f"maps of different shapes: {cfg.map1} is {a.shape}, {cfg.map2} is "
                         f"{b.shape}")
    if pa and pb and abs(pa - pb) > 0.01 * pa:
        raise InputError(f"maps of different voxel sizes: {cfg.map1} {pa:g} Å, "
                         f"{cfg.map2} {pb:g} Å")
    ps = cfg.pixel_size or pa or pb
    need(ps, f"{cfg.map1}: no voxel size in the header; give --pixel-size")
    r = fsc_resolution(a, b, ps)
    out = Outputs(png=cfg.png or None, json=cfg.json or None, pixel_size=float(ps),
                  res_05=float(r["res_0.5"]), res_0143=float(r["res_0.143"]),
                  freq=np.asarray(r["freq"], float), fsc=np.asarray(r["fsc"], float))
    with base.cleanup_on_error(out.png, out.json):
        if out.json:
            with atomic_path(out.json) as tmp, open(tmp, "w") as f:
                json.dump({"res_0.5": out.res_05, "res_0.143": out.res_0143,
                           "freq": out.freq.tolist(), "fsc": out.fsc.tolist()}, f)
        if out.png:
            plot_fsc(out, out.png)
    return out


def plot_fsc(out, path, title=None):
    """Draw the FSC curve of ``out`` (:class:`Outputs`) with the 0.5 and 0.143
    lines into ``path`` (format from the extension)."""
    from matplotlib.figure import Figure
    from ..utils import atomic_path
    fig = Figure(figsize=(5, 3.5))
    ax = fig.subplots()
    ax.plot(out.freq, out.fsc)
    for th in (0.5, 0.143):
        ax.axhline(th, ls="--", lw=0.8, color="gray")
    ax.set_xlabel("spatial frequency (1/Å)")
    ax.set_ylabel("FSC")
    ax.set_ylim(-0.1, 1.05)
    if title:
        ax.set_title(title)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100, format=os.path.splitext(path)[1][1:].lower() or "png")


def half_map_curves(r):
    """The curves of the half-map FSC ``r`` (``OUT_fsc_halves.json``'s
    content) to draw: [(values, matplotlib style, label)]: unmasked, masked
    corrected by phase randomisation, and (when ``r`` has them) the masked
    uncorrected one and that of the phase-randomised halves."""
    def a(x):
        return "-" if x is None else f"{x:.2f} Å"
    out = [(r["fsc"], dict(color="C0"), f"unmasked: {a(r['res_0.143'])}")]
    if "fsc_masked_uncorrected" in r:
        out += [(r["fsc_masked"], dict(color="C3"), f"masked, corrected: "
                 f"{a(r['res_0.143_masked'])}"),
                (r["fsc_masked_uncorrected"], dict(color="C1", lw=0.8, ls=":"),
                 f"masked, uncorrected: {a(r.get('res_0.143_masked_uncorrected'))}"),
                (r["fsc_phase_randomised"], dict(color="C4", lw=0.8),
                 f"phase-randomised beyond {a(r.get('phase_randomised_from'))}")]
    else:
        out.append((r["fsc_masked"], dict(color="C3"), f"masked: {a(r['res_0.143_masked'])}"))
    return out


def plot_fsc_halves(r, path, title=None):
    """Draw the half-map FSC ``r`` (the reconstruct stage's
    ``OUT_fsc_halves.json`` content): unmasked, masked, that of the
    phase-randomised halves and the corrected masked one, with the 0.143
    line and the resolutions, into ``path`` (format from the extension)."""
    from matplotlib.figure import Figure
    from ..utils import atomic_path
    fig = Figure(figsize=(5, 3.5))
    ax = fig.subplots()
    for y, style, label in half_map_curves(r):
        ax.plot(r["freq"], y, label=label, **style)
    ax.axhline(0.143, ls="--", lw=0.8, color="gray")
    ax.set_xlabel("spatial frequency (1/Å)")
    ax.set_ylabel("FSC between half maps")
    ax.set_ylim(-0.1, 1.05)
    ax.legend(fontsize=8, loc="upper right", title="at 0.143", title_fontsize=8)
    if title:
        ax.set_title(title)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100, format=os.path.splitext(path)[1][1:].lower() or "png")


def summary(out: Outputs, cfg: Config) -> list[str]:
    lines = [f"FSC 0.5: {out.res_05:.2f} Å   FSC 0.143: {out.res_0143:.2f} Å"]
    lines += [f"{what} -> {p}" for what, p in (("curve", out.png), ("values", out.json)) if p]
    return lines

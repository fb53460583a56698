"""An EM map as Gaussian pseudoatoms (for normal modes and HEMNMA without an atomic model).

Outputs from the prefix OUT (a trailing ``.pdb`` is dropped): ``OUT.pdb``
(pseudoatoms; weights relative to the largest in the occupancy column, sigma
in a REMARK that every deephemnma stage recognises) and ``OUT_approx.mrc``
(the map the pseudoatoms reproduce). The conversion raises InputError, and
writes nothing, when the target error is out of reach.

Gaussian width: ``sigma`` (Å) or ``sigma_voxels``; neither (the default):
automatic, from the width of the map's sharpest peaks, narrowed and tried
again while the error stalls above the target
(:func:`deephemnma.core.pseudoatoms.convert`). For normal modes of
pseudoatoms use a cutoff from the pseudoatoms' spacing, as ContinuousFlex
does (:func:`deephemnma.core.pseudoatoms.neighbour_cutoff`; the Scipion NMA
protocol does this for an EM map).
"""
from __future__ import annotations
import dataclasses
import os
import time

import numpy as np

from . import base
from .base import need

__all__ = ["Config", "Outputs", "run", "summary"]


@dataclasses.dataclass
class Config(base.StageConfig):
    map: str = None                  # MRC/SPIDER map
    out: str = None                  # output prefix
    voxel_size: float = None         # Å (default: the map's header)
    sigma: float = None              # Gaussian std, Å (default: automatic)
    sigma_voxels: float = None       # Gaussian std in voxels (instead of sigma)
    target_error: float = 5.0        # relative error to reach, %
    threshold: float = None          # density below is ignored
    mask: str = None                 # MRC mask (> 0.5 inside)
    max_atoms: int = 20000
    device: str = "cpu"

    def validate_options(self):
        for name, v in (("--voxel-size", self.voxel_size), ("--sigma", self.sigma),
                        ("--sigma-voxels", self.sigma_voxels)):
            if v is not None:
                base.positive(name, v)
        need(self.sigma is None or self.sigma_voxels is None,
             "give --sigma or --sigma-voxels, not both")
        need(base._finite_number(self.target_error) and 0 < self.target_error < 100,
             f"--target-error must be in (0, 100) %, got {self.target_error}")
        if self.threshold is not None:
            need(base._finite_number(self.threshold),
                 f"--threshold must be a number, got {self.threshold}")
        base.at_least("--max-atoms", self.max_atoms, 1)
        return self

    def validate(self):
        base.existing("--map", self.map)
        if self.mask is not None:
            base.existing("--mask", self.mask)
        need(self.out not in (None, ""), "--out is required")
        out = Outputs(self.out)
        for p in (out.pdb, out.approx):
            base.output_path("--out", p, [self.map, self.mask])
        return self.validate_options()


@dataclasses.dataclass
class Outputs:
    prefix: str
    n_atoms: int = 0
    error: float = None              # relative error reached (fraction)
    voxel_size: float = None         # Å
    sigma: float = None              # Å, the width used
    estimated: float = None          # Å, the map's own width (automatic width only)
    tried: list = None               # (sigma Å, error, pseudoatoms) per width tried
    seconds: float = 0.0

    @property
    def stem(self):
        p = os.fspath(self.prefix)
        return p[:-4] if p.lower().endswith(".pdb") else p

    @property
    def pdb(self):
        """The pseudoatoms."""
        return self.stem + ".pdb"

    @property
    def approx(self):
        """The map the pseudoatoms reproduce (same box and voxel size as the input)."""
        return self.stem + "_approx.mrc"

    run_record = base.record_property("pdb")


@base.recorded(lambda cfg: Outputs(cfg.out))
def run(cfg: Config, progress: bool = True) -> Outputs:
    """Convert ``cfg.map``; returns :class:`Outputs`."""
    from ..core.pseudoatoms import convert
    from ..core.structure import Structure, write_pdb
    from ..io.stacks import read_volume, write_volume
    cfg.validate()
    out = Outputs(cfg.out)
    vol, header_vs = read_volume(cfg.map)
    vs = cfg.voxel_size or header_vs
    need(vs, f"{cfg.map}: no voxel size in the header; give --voxel-size")
    need(np.isfinite(vol).all(), f"{cfg.map}: the map has NaN or infinite values")
    mask = None
    if cfg.mask:
        m, _ = read_volume(cfg.mask)
        mask = m > 0.5
    sigma = cfg.sigma if cfg.sigma is not None else (
        cfg.sigma_voxels * vs if cfg.sigma_voxels is not None else None)   # None: automatic
    report = (lambda n, e: print(f"  {n} pseudoatoms: error {100 * e:.2f} %", flush=True)) \
        if progress else None
    t0 = time.perf_counter()
    r = convert(vol, vs, sigma, cfg.target_error / 100.0, cfg.threshold, mask, cfg.max_atoms,
                device=cfg.device, progress=report)
    c, w, approx, err, sigma = r.coords, r.weights, r.approx, r.error, r.sigma
    n = len(c)
    s = Structure(coords=c, weights=w / w.max(), names=np.array(["CA"] * n, dtype=object),
                  resnames=np.array(["PSE"] * n, dtype=object), resnums=np.arange(1, n + 1),
                  chains=np.array(["A"] * n, dtype=object),
                  elements=np.array(["C"] * n, dtype=object), source=cfg.map, sigma=sigma)
    folder = os.path.dirname(os.path.abspath(out.pdb))
    with base.cleanup_on_error(folder if not os.path.isdir(folder) else None,
                               out.pdb, out.approx):
        write_pdb(out.pdb, s)
        write_volume(out.approx, approx, vs)
    out.n_atoms, out.error, out.voxel_size, out.sigma = n, err, vs, sigma
    out.estimated, out.tried = r.estimated, r.tried
    out.seconds = time.perf_counter() - t0
    return out


def summary(out: Outputs, cfg: Config) -> list[str]:
    lines = [f"{out.n_atoms} pseudoatoms (sigma {out.sigma:.3g} Å = "
             f"{out.sigma / out.voxel_size:.3g} voxel) reproduce {cfg.map} with "
             f"{100 * out.error:.2f} % relative error in {out.seconds:.1f} s -> {out.pdb}"]
    if out.estimated is not None:
        lines.append("automatic width: the map's sharpest peaks suggest "
                     f"{out.estimated:.3g} Å; tried " + ", ".join(
                         f"{s:.3g} Å ({100 * e:.1f} %)" for s, e, _ in out.tried))
    return lines + [f"approximation -> {out.approx}"]

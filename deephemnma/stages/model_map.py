"""Density map simulated from an atomic or pseudoatomic model (e.g. a group's centroid model).

The model is centred on the centroid of its atoms, where every deephemnma
projection puts the reference (normal modes do not move the centroid), so the
map is aligned with the group reconstructions and can be compared with them by
the fsc stage (the paper's Fig. 7 / Supp. Fig. 3). Atoms are voxel-integrated
Gaussians (sigma: the pseudoatoms' own, else ``sigma``).
"""
from __future__ import annotations
import dataclasses

import numpy as np

from . import base
from .base import InputError, need

__all__ = ["Config", "Outputs", "run", "summary"]


@dataclasses.dataclass
class Config(base.StageConfig):
    structure: str = None            # PDB/mmCIF model
    out: str = None                  # output map (.mrc)
    box: int = None                  # map size, voxels
    pixel_size: float = None         # voxel size, Å
    selection: str = "heavy"
    sigma: float = 1.0               # atom Gaussian std, Å (atomic models)

    def validate_options(self):
        need(base.is_whole(self.box) and self.box >= 8,
             f"--box must be an integer >= 8 voxels, got {self.box}")
        base.positive("--pixel-size", self.pixel_size)
        base.positive("--sigma", self.sigma)
        return self

    def validate(self):
        base.existing("--structure", self.structure)
        base.output_path("--out", self.out, [self.structure])
        return self.validate_options()


@dataclasses.dataclass
class Outputs:
    map: str
    n_atoms: int = 0
    extent: float = 0.0              # largest distance of an atom from the centroid, Å

    run_record = base.record_property("map")


@base.recorded(lambda cfg: Outputs(cfg.out))
def run(cfg: Config, progress: bool = True) -> Outputs:
    """Write the map of ``cfg.structure``; returns :class:`Outputs`."""
    from ..core.projector import atoms_to_volume
    from ..core.structure import read_structure
    from ..io.stacks import write_volume
    cfg.validate()
    out = Outputs(cfg.out)
    s, _ = read_structure(cfg.structure, cfg.selection).center()
    out.extent = float(np.abs(s.coords).max())
    half = cfg.box * cfg.pixel_size / 2
    if out.extent > half:
        raise InputError(f"the model extends {out.extent:.0f} Å from its centre, beyond the "
                         f"half box ({half:.0f} Å): a larger --box or --pixel-size")
    sigma = s.sigma if s.is_pseudoatomic else cfg.sigma
    vol = atoms_to_volume(s.coords, s.weights, cfg.box, cfg.pixel_size, sigma).numpy()
    with base.cleanup_on_error(out.map):
        write_volume(out.map, vol.astype(np.float32), cfg.pixel_size)
    out.n_atoms = len(s.coords)
    return out


def summary(out: Outputs, cfg: Config) -> list[str]:
    return [f"{out.n_atoms} atoms -> {out.map} ({cfg.box}^3, {cfg.pixel_size} Å/voxel)"]

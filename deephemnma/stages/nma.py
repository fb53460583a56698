"""Normal modes of an atomic structure or of pseudoatoms, in ContinuousFlex's layout.

One rule for the command line and the Scipion protocol:

* the structure (after the atom selection) is centred on the centroid of its
  atoms, where every deephemnma projection puts the reference (normal modes
  do not depend on the position, and do not move the centroid);
  ``reference.pdb`` holds those centred atoms, the ones the modes move;
* method ``auto`` (the default) is RTB with ``block_size`` residues per block
  for atomic structures and ANM for pseudoatoms (which have no residues to
  make blocks of); ``rtb`` on pseudoatoms is refused;
* the interaction radius is ``cutoff`` Å, or, when ``percentile`` is given,
  that percentile of the interatomic distances (HEMNMA's choice for
  pseudoatoms).

Outputs in the folder OUT: ``modes.xmd``, ``modes/vec.N`` (unit-norm 3N
vectors, HEMNMA numbering: 1-6 rigid, 7 the first flexible),
``reference_coords.txt`` and ``reference.pdb``. A folder that already holds
modes is refused.
"""
from __future__ import annotations
import dataclasses
import os
import time

import numpy as np

from . import base
from .base import InputError, need
from .reference import DEFAULT_NMA

__all__ = ["Config", "Outputs", "run", "summary", "METHODS", "resolve_method"]

METHODS = ("auto", "rtb", "anm")


@dataclasses.dataclass
class Config(base.StageConfig):
    structure: str = None                   # PDB/mmCIF, or a pseudoatom PDB
    out: str = None                         # output folder
    n_modes: int = DEFAULT_NMA["n_modes"]   # modes computed, the 6 rigid ones included
    method: str = "auto"                    # auto | rtb | anm (see resolve_method)
    cutoff: float = DEFAULT_NMA["cutoff"]   # interaction radius, Å
    percentile: float = None                # cutoff as a percentile of distances (0, 100]
    selection: str = "heavy"                # heavy | all | ca | ca+p | ProDy selection
    block_size: int = DEFAULT_NMA["block_size"]   # RTB: residues per rigid block

    def validate_options(self):
        """The numbers and choices (no file is looked at)."""
        need(self.method in METHODS,
             f"--method {self.method}: expected one of {', '.join(METHODS)}")
        need(base.is_whole(self.n_modes) and self.n_modes >= 7,
             f"--modes {self.n_modes}: ask for at least 7 modes (modes 1-6 are "
             "rigid-body motions)")
        if self.percentile is not None:
            need(base._finite_number(self.percentile) and 0 < self.percentile <= 100,
                 f"--percentile must be in (0, 100], got {self.percentile}")
        else:
            base.positive("--cutoff", self.cutoff)
        need(base.is_whole(self.block_size) and self.block_size >= 1,
             f"--block-size must be an integer >= 1, got {self.block_size}")
        need(bool(self.selection and str(self.selection).strip()), "--selection is empty")
        return self

    def validate(self):
        base.existing("--structure", self.structure)
        base.output_path("--out", self.out, [self.structure], folder=True)
        out = Outputs(self.out)
        for p in (out.modes_xmd, out.reference):
            base.output_path("--out", p, [self.structure])
        need(not os.path.exists(out.modes_xmd),
             f"{self.out} already holds modes.xmd; choose another --out")
        return self.validate_options()


def resolve_method(method, structure):
    """The elastic network used for ``structure``: 'auto' -> RTB for atoms,
    ANM for pseudoatoms; RTB on pseudoatoms is refused (no residues)."""
    if method == "auto":
        return "anm" if structure.is_pseudoatomic else "rtb"
    if method == "rtb" and structure.is_pseudoatomic:
        raise InputError("--method rtb: pseudoatoms have no residues to make blocks of; "
                         "use --method anm (or auto)")
    return method


@dataclasses.dataclass
class Outputs:
    folder: str
    n_modes: int = 0
    n_atoms: int = 0
    method: str = None                # the method used (rtb or anm)
    cutoff: float = None              # the interaction radius used, Å
    offset: np.ndarray = None         # centroid of the input atoms (Å), removed
    numbers: np.ndarray = None
    eigenvalues: np.ndarray = None
    collectivity: np.ndarray = None
    seconds: float = 0.0

    @property
    def modes_xmd(self):
        """ContinuousFlex mode metadata (the path to give to other stages)."""
        return os.path.join(self.folder, "modes.xmd")

    @property
    def modes_dir(self):
        """The mode vectors: ``vec.N``, one line "x y z" per atom."""
        return os.path.join(self.folder, "modes")

    @property
    def reference(self):
        """The centred atoms the modes move (PDB)."""
        return os.path.join(self.folder, "reference.pdb")

    @property
    def reference_coords(self):
        return os.path.join(self.folder, "reference_coords.txt")

    def paths(self):
        return [self.modes_xmd, self.modes_dir, self.reference, self.reference_coords]

    run_record = base.record_property("folder", folder=True)


@base.recorded(lambda cfg: Outputs(cfg.out))
def run(cfg: Config, progress: bool = True) -> Outputs:
    """Compute the modes of ``cfg.structure`` into ``cfg.out``; returns :class:`Outputs`."""
    from ..core.nma import compute_modes, percentile_cutoff, write_continuousflex
    from ..core.structure import read_structure, write_pdb
    cfg.validate()
    out = Outputs(cfg.out)
    s, out.offset = read_structure(cfg.structure, cfg.selection).center()
    out.method = resolve_method(cfg.method, s)
    out.cutoff = (percentile_cutoff(s.coords, cfg.percentile) if cfg.percentile is not None
                  else float(cfg.cutoff))
    t0 = time.perf_counter()
    modes = compute_modes(s, n_modes=cfg.n_modes, cutoff=out.cutoff, method=out.method,
                          block_size=cfg.block_size)
    out.seconds = time.perf_counter() - t0
    with base.cleanup_on_error(cfg.out, *out.paths()):
        write_continuousflex(modes, cfg.out)
        write_pdb(out.reference, s)
    out.n_modes, out.n_atoms = len(modes), len(s)
    out.numbers, out.eigenvalues, out.collectivity = (modes.numbers, modes.eigenvalues,
                                                      modes.collectivity)
    return out


def summary(out: Outputs, cfg: Config) -> list[str]:
    """Lines for the user after :func:`run`: the modes and a table of them."""
    how = (f"{out.method.upper()}"
           + (f", {cfg.block_size} residue(s)/block" if out.method == "rtb" else "")
           + f", cutoff {out.cutoff:.3g} Å"
           + (f" (percentile {cfg.percentile:g})" if cfg.percentile is not None else ""))
    lines = [f"{out.n_modes} modes of {out.n_atoms} atoms ({how}) in {out.seconds:.1f} s "
             f"-> {out.modes_xmd}",
             f"reference centred on its atoms' centroid (moved by "
             f"{', '.join(f'{-x:.2f}' for x in out.offset)} Å) -> {out.reference}",
             " mode  eigenvalue  collectivity"]
    lines += [f" {n:4d}  {e:10.4g}  {c:8.3f}"
              for n, e, c in zip(out.numbers, out.eigenvalues, out.collectivity)]
    return lines

"""Atomic (or pseudoatomic) structures: reading, selecting, centring, writing.

Reading uses ProDy (PDB and mmCIF); :func:`read_pdb` reads the fixed
columns of a PDB's atoms without it (where ProDy cannot be imported: under
``python -O``, as Scipion's GUI runs, Biopython 1.81 fails at ProDy's import). Each atom gets an electron-scattering
weight for projections: its atomic number Z. Pseudoatom PDBs written by
:mod:`deephemnma.core.pseudoatoms` carry ``REMARK deephemnma pseudoatoms
sigma=<Å>`` and the Gaussian weights in the occupancy column; they are
recognised and keep those weights (and their sigma).
"""
from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Iterable
from typing import Union

import numpy as np

from ..errors import InputError
from ..utils import atomic_path

PathLike = Union[str, os.PathLike]     # a path as str or pathlib.Path

__all__ = ["Structure", "read_structure", "read_pdb", "write_pdb", "SELECTIONS"]

SELECTIONS = {
    "heavy": "not hydrogen",
    "all": "all",
    "ca": "name CA and protein",
    "ca+p": "(name CA and protein) or (name P and nucleic)",
}

_Z = {"H": 1, "C": 6, "N": 7, "O": 8, "F": 9, "NA": 11, "MG": 12, "P": 15, "S": 16,
      "CL": 17, "K": 19, "CA": 20, "MN": 25, "FE": 26, "CO": 27, "NI": 28, "CU": 29,
      "ZN": 30, "SE": 34, "BR": 35, "I": 53}

PSEUDO_REMARK = "REMARK deephemnma pseudoatoms"


@dataclasses.dataclass
class Structure:
    coords: np.ndarray              # (N, 3) Å
    weights: np.ndarray             # (N,) scattering weight (Z, or pseudoatom weight)
    names: np.ndarray
    resnames: np.ndarray
    resnums: np.ndarray
    chains: np.ndarray
    elements: np.ndarray
    source: str = ""
    sigma: float | None = None      # Gaussian std (Å) for pseudoatoms, else None

    def __len__(self) -> int:
        return len(self.coords)

    @property
    def is_pseudoatomic(self) -> bool:
        return self.sigma is not None

    def center(self) -> tuple[Structure, np.ndarray]:
        """Copy centred on the centroid of its atoms, and the offset removed."""
        offset = self.coords.mean(0)
        return dataclasses.replace(self, coords=self.coords - offset), offset

    def subset(self, mask: np.ndarray) -> Structure:
        m = np.asarray(mask)
        return dataclasses.replace(
            self, coords=self.coords[m], weights=self.weights[m], names=self.names[m],
            resnames=self.resnames[m], resnums=self.resnums[m], chains=self.chains[m],
            elements=self.elements[m])


def _element_weights(elements, names):
    w = np.empty(len(elements))
    for i, (e, n) in enumerate(zip(elements, names)):
        e = (e or "").strip().upper()
        if not e:
            e = re.sub(r"[^A-Z]", "", n.upper())[:1]
        w[i] = _Z.get(e, _Z.get(e[:1], 6))
    return w


def read_structure(path: PathLike, selection: str = "heavy") -> Structure:
    """Read a PDB or mmCIF file and select atoms.

    ``selection``: 'heavy' (default, no hydrogens), 'all', 'ca', 'ca+p'
    (protein CA + nucleic P, for large complexes) or any ProDy selection string.
    Raises InputError if the file cannot be parsed or no atom matches."""
    import prody
    prody.confProDy(verbosity="none")
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"structure file not found: {path}")
    low = path.lower()
    try:
        if low.endswith((".cif", ".mmcif", ".cif.gz")):
            ag = prody.parseMMCIF(path)
        else:
            ag = prody.parsePDB(path)
    except Exception as e:  # ProDy raises various errors on bad files
        raise InputError(f"{path}: cannot read structure ({e})") from None
    if ag is None or ag.numAtoms() == 0:
        raise InputError(f"{path}: no atoms found")
    sigma = None
    if not low.endswith((".cif", ".mmcif", ".cif.gz")):
        with open(path, errors="replace") as f:
            for line in f:
                if line.startswith(PSEUDO_REMARK):
                    m = re.search(r"sigma=([0-9.eE+-]+)", line)
                    sigma = float(m.group(1)) if m else 1.0
                    break
                if line.startswith(("ATOM", "HETATM")):
                    break
    expr = SELECTIONS.get(selection, selection)
    if sigma is not None:
        expr = "all"
    try:
        sel = ag.select(expr)
    except Exception as e:
        raise InputError(f"bad atom selection '{selection}': {e}") from None
    if sel is None or sel.numAtoms() == 0:
        raise InputError(f"{path}: no atom matches the selection '{selection}'")
    names = np.array(sel.getNames(), dtype=object)
    elements = np.array(sel.getElements(), dtype=object)
    if sigma is not None:
        weights = np.asarray(sel.getOccupancies(), dtype=np.float64)
    else:
        weights = _element_weights(elements, names)
    return Structure(coords=np.asarray(sel.getCoords(), np.float64), weights=weights,
                     names=names, resnames=np.array(sel.getResnames(), dtype=object),
                     resnums=np.asarray(sel.getResnums()),
                     chains=np.array(sel.getChids(), dtype=object), elements=elements,
                     source=path, sigma=sigma)


def read_pdb(path: PathLike) -> Structure:
    """All the atoms (ATOM and HETATM records of the first model) of a PDB
    file, read from its fixed columns without ProDy: what
    ``read_structure(path, "all")`` gives for the PDBs :func:`write_pdb`
    writes, weights and pseudoatom sigma included. Raises InputError if the
    file holds no atom."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"structure file not found: {path}")
    rows, sigma = [], None
    with open(path, errors="replace") as f:
        for line in f:
            if line.startswith(PSEUDO_REMARK) and not rows:
                m = re.search(r"sigma=([0-9.eE+-]+)", line)
                sigma = float(m.group(1)) if m else 1.0
            elif line[:6].strip() in ("ENDMDL", "END") and rows:
                break           # the first model only
            elif line.startswith(("ATOM  ", "HETATM")):
                rows.append(line.rstrip("\n").ljust(80))
    if not rows:
        raise InputError(f"{path}: no atoms found")
    try:
        coords = np.array([[float(r[30:38]), float(r[38:46]), float(r[46:54])] for r in rows])
        occ = np.array([float(r[54:60]) if r[54:60].strip() else 1.0 for r in rows])
        resnums = np.array([int(r[22:26]) for r in rows])
    except ValueError as e:
        raise InputError(f"{path}: cannot read structure ({e})") from None
    names = np.array([r[12:16].strip() for r in rows], dtype=object)
    elements = np.array([r[76:78].strip() for r in rows], dtype=object)
    return Structure(coords=coords, names=names,
                     weights=occ if sigma is not None else _element_weights(elements, names),
                     resnames=np.array([r[17:21].strip() for r in rows], dtype=object),
                     resnums=resnums, chains=np.array([r[21] for r in rows], dtype=object),
                     elements=elements, source=path, sigma=sigma)


def write_pdb(path: PathLike, structure: Structure, coords: np.ndarray | None = None,
              remarks: Iterable[str] = ()) -> None:
    """Write a PDB; ``coords`` (N, 3) or (K, N, 3) for a multi-model file
    (animations). Weights are written in the occupancy column for
    pseudoatoms (and B-factor 0)."""
    coords = structure.coords if coords is None else np.asarray(coords)
    models = coords[None] if coords.ndim == 2 else coords
    if models.shape[1] != len(structure):
        raise InputError(f"{len(structure)} atoms but coordinates for {models.shape[1]}")
    if np.abs(models).max() >= 1e4:
        raise InputError("coordinates too large for the PDB format")
    occ = structure.weights if structure.is_pseudoatomic else np.ones(len(structure))
    lines = list(remarks)
    if structure.is_pseudoatomic:
        lines.insert(0, f"{PSEUDO_REMARK} sigma={structure.sigma:.6g} (weights in occupancy)")
    for k, xyz in enumerate(models):
        if len(models) > 1:
            lines.append(f"MODEL     {k + 1:4d}")
        for i in range(len(structure)):
            name = str(structure.names[i])
            name = f" {name:<3s}" if len(name) < 4 else name[:4]
            chain = (str(structure.chains[i]) or "A")[:1]
            el = str(structure.elements[i] or "")[:2]
            lines.append(
                f"ATOM  {(i + 1) % 100000:5d} {name:4s} {str(structure.resnames[i])[:3]:>3s} "
                f"{chain:1s}{int(structure.resnums[i]) % 10000:4d}    "
                f"{xyz[i, 0]:8.3f}{xyz[i, 1]:8.3f}{xyz[i, 2]:8.3f}"
                f"{min(occ[i], 999.99):6.2f}{0.0:6.2f}          {el:>2s}")
        if len(models) > 1:
            lines.append("ENDMDL")
    lines.append("END")
    with atomic_path(path) as tmp, open(tmp, "w") as f:
        f.write("\n".join(lines) + "\n")

"""Elastic-network normal modes (ANM, RTB) in HEMNMA's conventions.

* The anisotropic network model (Tirion 1996; Atilgan 2001) connects atoms
  closer than a cutoff (Å, or a percentile of the interatomic distance
  histogram, as HEMNMA does for pseudoatoms) by springs of constant ``gamma``.
  The Hessian is built sparse and vectorised (scipy cKDTree), checked against
  ProDy's ANM in the tests.
* RTB (Tama 2000): consecutive residues grouped in blocks of ``block_size`` that
  only rotate and translate; the Hessian is projected on the 6 rigid-body
  motions of each block (sparse projector P, H_b = P^T H P), diagonalised, and
  the block modes expanded back to atoms. This keeps the ribosome (14k CA+P)
  within seconds and < 1 GB.
* HEMNMA numbering: modes 1-6 are the rigid-body modes (eigenvalue ~0), the
  first flexible mode is 7. Every mode is a unit-norm 3N vector over the atoms.
* ContinuousFlex layout: ``modes/vec.N`` (one line "x y z" per atom) and
  ``modes.xmd`` (``_nmaModefile _order_ _enabled _nmaCollectivity _nmaScore
  _nmaEigenval``).
"""
from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Union

import numpy as np
import scipy.linalg
import scipy.spatial.distance
import scipy.sparse as sp
from scipy.spatial import cKDTree

from ..errors import InputError
from ..io.metadata import Table, read_xmd, write_xmd
from ..utils import atomic_path

if TYPE_CHECKING:
    from .structure import Structure

PathLike = Union[str, os.PathLike]     # a path as str or pathlib.Path

__all__ = ["NormalModes", "anm_hessian", "percentile_cutoff", "compute_modes", "mode_overlap",
           "collectivity", "write_continuousflex", "read_continuousflex",
           "parse_mode_list"]


@dataclasses.dataclass
class NormalModes:
    vectors: np.ndarray        # (M, N, 3), each mode unit norm over 3N
    eigenvalues: np.ndarray    # (M,)
    numbers: np.ndarray        # (M,) HEMNMA numbers, 1-based
    collectivity: np.ndarray   # (M,)
    ref_coords: np.ndarray     # (N, 3) coordinates the modes were computed on

    def __len__(self) -> int:
        return len(self.numbers)

    @property
    def n_atoms(self) -> int:
        return self.vectors.shape[1]

    def select(self, numbers: Iterable[int]) -> NormalModes:
        numbers = list(numbers)
        index = {int(n): i for i, n in enumerate(self.numbers)}
        missing = [n for n in numbers if int(n) not in index]
        if missing:
            raise InputError(f"mode(s) {missing} not available (modes "
                             f"{int(self.numbers.min())}-{int(self.numbers.max())})")
        idx = [index[int(n)] for n in numbers]
        return NormalModes(self.vectors[idx], self.eigenvalues[idx], self.numbers[idx],
                           self.collectivity[idx], self.ref_coords)

    def deform(self, amplitudes: np.ndarray, coords: np.ndarray | None = None) -> np.ndarray:
        """X0 + sum_k q_k V_k for amplitudes (B, M) or (M,) -> (B, N, 3)/(N, 3)."""
        q = np.asarray(amplitudes, dtype=np.float64)
        x0 = self.ref_coords if coords is None else coords
        return x0 + np.tensordot(q, self.vectors, axes=([-1], [0]))


N_RIGID = 6   # HEMNMA numbering: modes 1-6 are the rigid-body motions, 7 the first flexible


def is_rigid(number: int) -> bool:
    """True for HEMNMA mode numbers 1-6 (rigid-body motions)."""
    return int(number) <= N_RIGID


def mode_number(path: PathLike) -> int | None:
    """HEMNMA number of a ContinuousFlex mode file ``.../vec.N`` (None when the
    name carries none)."""
    tail = os.path.basename(os.fspath(path)).rsplit(".", 1)[-1]
    return int(tail) if tail.isdigit() else None


def flexible_numbers(numbers: Iterable[int], k: int | None = None,
                     where: str = "the normal modes") -> list[int]:
    """The first ``k`` flexible mode numbers among ``numbers`` (all when k is
    None), in increasing order: the modes that amplitudes without explicit
    numbers belong to (HEMNMA's convention)."""
    flex = sorted(int(n) for n in numbers if not is_rigid(n))
    if k is not None:
        if len(flex) < k:
            raise InputError(f"{where}: {len(flex)} flexible modes, the particles have {k} "
                             "amplitudes")
        flex = flex[:k]
    return flex


def parse_mode_list(spec: str | Sequence[int] | np.ndarray) -> list[int]:
    """'7-9,11' -> [7, 8, 9, 11]; also accepts lists of ints."""
    if isinstance(spec, (list, tuple, np.ndarray)):
        return [int(x) for x in spec]
    out = []
    for part in str(spec).replace(" ", "").split(","):
        if not part:
            continue
        try:
            if "-" in part:
                a, b = part.split("-")
                out.extend(range(int(a), int(b) + 1))
            else:
                out.append(int(part))
        except ValueError:
            raise InputError(f"bad mode list '{spec}' (expected e.g. '7-9,11')") from None
    if not out or min(out) < 1:
        raise InputError(f"bad mode list '{spec}'")
    return out


def percentile_cutoff(coords: np.ndarray, percentile: float, max_atoms: int = 3000,
                      seed: int = 0) -> float:
    """Distance (Å) below which ``percentile`` % of interatomic distances lie
    (computed on a random subset of atoms for large structures)."""
    x = np.asarray(coords)
    if len(x) > max_atoms:
        x = x[np.random.default_rng(seed).choice(len(x), max_atoms, replace=False)]
    d = scipy.spatial.distance.pdist(x)
    return float(np.percentile(d, percentile))


def anm_hessian(coords: np.ndarray, cutoff: float, gamma: float = 1.0) -> sp.csr_matrix:
    """Sparse ANM Hessian (3N x 3N, CSR)."""
    x = np.asarray(coords, dtype=np.float64)
    n = len(x)
    pairs = cKDTree(x).query_pairs(cutoff, output_type="ndarray")
    i, j = pairs[:, 0], pairs[:, 1]
    d = x[j] - x[i]
    r2 = (d ** 2).sum(1)
    blocks = -gamma * d[:, :, None] * d[:, None, :] / r2[:, None, None]   # (P, 3, 3)
    a, b = np.meshgrid(np.arange(3), np.arange(3), indexing="ij")
    a, b = a.ravel(), b.ravel()
    rows, cols, vals = [], [], []
    for (p, q) in ((i, j), (j, i)):
        rows.append((3 * p[:, None] + a).ravel())
        cols.append((3 * q[:, None] + b).ravel())
        vals.append(blocks.reshape(-1, 9).ravel())
    # diagonal blocks: minus the sum of the off-diagonal blocks of the row
    diag = np.zeros((n, 3, 3))
    np.add.at(diag, i, -blocks)
    np.add.at(diag, j, -blocks)
    idx = np.arange(n)
    rows.append((3 * idx[:, None] + a).ravel())
    cols.append((3 * idx[:, None] + b).ravel())
    vals.append(diag.reshape(-1, 9).ravel())
    H = sp.coo_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
                      shape=(3 * n, 3 * n)).tocsr()
    return H


def _rtb_projector(coords, block_ids):
    """Sparse (3N x 6B) matrix of orthonormal rigid-body motions of each block."""
    x = np.asarray(coords, dtype=np.float64)
    n = len(x)
    uniq, inv = np.unique(block_ids, return_inverse=True)
    rows, cols, vals = [], [], []
    col0 = 0
    for b in range(len(uniq)):
        idx = np.nonzero(inv == b)[0]
        xc = x[idx] - x[idx].mean(0)
        m = len(idx)
        basis = np.zeros((3 * m, 6))
        for k in range(3):                     # translations
            basis[k::3, k] = 1.0
        for k, axis in enumerate(np.eye(3)):   # rotations: axis x r
            basis[:, 3 + k] = np.cross(axis, xc).ravel()
        # orthonormalise (a single atom or colinear block has fewer dofs)
        u, s, _ = np.linalg.svd(basis, full_matrices=False)
        keep = s > 1e-6 * max(s[0], 1e-12)
        u = u[:, keep]
        r = (3 * idx[:, None] + np.arange(3)).ravel()
        rr, cc = np.meshgrid(r, np.arange(u.shape[1]) + col0, indexing="ij")
        rows.append(rr.ravel())
        cols.append(cc.ravel())
        vals.append(u.ravel())
        col0 += u.shape[1]
    return sp.csr_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
                         shape=(3 * n, col0))


def _residue_blocks(structure, block_size):
    """Block id per atom: ``block_size`` consecutive residues of a chain."""
    chains = np.asarray(structure.chains).astype(str)
    res = np.asarray(structure.resnums)
    # a new residue starts whenever chain or residue number changes
    new_res = np.ones(len(res), bool)
    new_res[1:] = (res[1:] != res[:-1]) | (chains[1:] != chains[:-1])
    res_index = np.cumsum(new_res) - 1
    new_chain = np.ones(len(res), bool)
    new_chain[1:] = chains[1:] != chains[:-1]
    chain_index = np.cumsum(new_chain) - 1
    first_res_of_chain = np.zeros(chain_index.max() + 1, np.int64)
    first_res_of_chain[chain_index[::-1]] = res_index[::-1]
    within = res_index - first_res_of_chain[chain_index]
    return chain_index * 10 ** 7 + within // block_size


def collectivity(vectors: np.ndarray) -> np.ndarray:
    """Brüschweiler's collectivity of modes (M, N, 3) -> (M,), in (0, 1]."""
    v = np.asarray(vectors)
    u2 = (v ** 2).sum(-1)
    u2 = u2 / u2.sum(-1, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        ent = -np.where(u2 > 0, u2 * np.log(u2), 0.0).sum(-1)
    return np.exp(ent) / v.shape[1]


def compute_modes(structure: Structure | np.ndarray, n_modes: int = 20, cutoff: float = 8.0,
                  percentile: float | None = None, method: str = "rtb", block_size: int = 1,
                  gamma: float = 1.0) -> NormalModes:
    """Normal modes of a Structure (or an (N, 3) array for ANM).

    ``n_modes`` counts the 6 rigid-body modes (HEMNMA numbering 1..n_modes).
    ``percentile``: if given, the cutoff is that percentile of the interatomic
    distances (HEMNMA's choice for pseudoatoms). ``method``: 'anm' (all
    atoms) or 'rtb' (blocks of ``block_size`` residues)."""
    coords = np.asarray(getattr(structure, "coords", structure), dtype=np.float64)
    n = len(coords)
    if n < 3:
        raise InputError(f"{n} atoms: too few for normal mode analysis")
    if percentile is not None:
        if not 0 < percentile <= 100:
            raise InputError(f"percentile cutoff must be in (0, 100], got {percentile}")
        cutoff = percentile_cutoff(coords, percentile)
    if cutoff <= 0:
        raise InputError(f"cutoff must be positive, got {cutoff}")
    H = anm_hessian(coords, cutoff, gamma)
    if method == "rtb":
        if not hasattr(structure, "resnums"):
            raise InputError("RTB needs residue information (a Structure)")
        P = _rtb_projector(coords, _residue_blocks(structure, block_size))
    elif method == "anm":
        P = None
    else:
        raise InputError(f"unknown NMA method '{method}' (anm or rtb)")
    dof = 3 * n if P is None else P.shape[1]
    if not 7 <= n_modes <= dof:
        raise InputError(f"{n_modes} modes requested but the model has {dof} degrees "
                         f"of freedom ({n} atoms{', RTB' if P is not None else ''}); "
                         "ask for 7 or more and at most that")
    Hr = H if P is None else (P.T @ H @ P)
    if dof <= 12000:
        Hd = Hr.toarray() if sp.issparse(Hr) else Hr
        w, v = scipy.linalg.eigh(Hd, subset_by_index=[0, n_modes - 1], driver="evr")
    else:  # huge ANM: sparse shift-invert Lanczos just below zero
        from scipy.sparse.linalg import eigsh
        w, v = eigsh(Hr.tocsc(), k=n_modes, sigma=-1e-6, which="LM")
        order = np.argsort(w)
        w, v = w[order], v[:, order]
    vec = v if P is None else (P @ v)
    vec = vec / np.linalg.norm(vec, axis=0, keepdims=True)
    vectors = vec.T.reshape(n_modes, n, 3)
    w = np.where(np.arange(n_modes) < 6, np.abs(w), w)
    # canonical sign: largest-magnitude component positive (reproducible output)
    flat = vectors.reshape(n_modes, -1)
    sign = np.sign(flat[np.arange(n_modes), np.abs(flat).argmax(1)])
    vectors = vectors * sign[:, None, None]
    return NormalModes(vectors=vectors, eigenvalues=w, numbers=np.arange(1, n_modes + 1),
                       collectivity=collectivity(vectors), ref_coords=coords.copy())


def mode_overlap(coords_a: np.ndarray, vectors_a: np.ndarray, coords_b: np.ndarray,
                 vectors_b: np.ndarray, k: int = 4) -> np.ndarray:
    """|cosine| overlap matrix (Ma, Mb) between the modes of two models of the
    same molecule with different nodes (e.g. atoms and pseudoatoms): the
    displacements of model b are interpolated at the nodes of model a (mean of
    the ``k`` nearest nodes of b) before comparing."""
    from scipy.spatial import cKDTree
    _, nearest = cKDTree(np.asarray(coords_b)).query(np.asarray(coords_a), k=k)
    nearest = nearest.reshape(len(coords_a), -1)
    a = np.asarray(vectors_a).reshape(len(vectors_a), -1)
    b = np.stack([np.asarray(v)[nearest].mean(1).ravel() for v in vectors_b])
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    return np.abs(a @ b.T)


def write_continuousflex(modes: NormalModes, folder: PathLike) -> str:
    """ContinuousFlex/Xmipp layout: folder/modes/vec.N and folder/modes.xmd.
    Returns the path of modes.xmd."""
    folder = os.fspath(folder)
    mdir = os.path.join(folder, "modes")
    os.makedirs(mdir, exist_ok=True)
    for k, num in enumerate(modes.numbers):
        with atomic_path(os.path.join(mdir, f"vec.{int(num)}")) as tmp:
            np.savetxt(tmp, modes.vectors[k], fmt="%.10e")
    t = Table({
        "nmaModefile": np.array([f"modes/vec.{int(n)}" for n in modes.numbers], dtype=object),
        "order_": modes.numbers.astype(np.int64),
        "enabled": np.array([-1 if is_rigid(n) else 1 for n in modes.numbers], np.int64),
        "nmaCollectivity": modes.collectivity,
        "nmaScore": _scores(modes),
        "nmaEigenval": modes.eigenvalues,
    })
    path = os.path.join(folder, "modes.xmd")
    write_xmd(path, t)
    np.savetxt(os.path.join(folder, "reference_coords.txt"), modes.ref_coords, fmt="%.6f")
    return path


def _scores(modes):
    """Xmipp's mode score: combines eigenvalue rank and collectivity rank
    (lower eigenvalue and higher collectivity are better); in (0, 1]."""
    m = len(modes)
    r_eig = np.argsort(np.argsort(modes.eigenvalues)) + 1
    r_col = np.argsort(np.argsort(-modes.collectivity)) + 1
    return (r_eig + r_col) / (2.0 * m)


def read_continuousflex(path: PathLike, ref_coords: np.ndarray | None = None) -> NormalModes:
    """Read modes written by :func:`write_continuousflex` or by ContinuousFlex
    (``modes.xmd`` or its folder). ``ref_coords`` (N, 3) if the folder has no
    reference_coords.txt (ContinuousFlex keeps the reference as a PDB)."""
    path = os.fspath(path)
    xmd = os.path.join(path, "modes.xmd") if os.path.isdir(path) else path
    if not os.path.exists(xmd):
        raise FileNotFoundError(f"normal modes metadata not found: {xmd}")
    folder = os.path.dirname(os.path.abspath(xmd))
    t = read_xmd(xmd)
    t.require(["nmaModefile"], "mode file", xmd)
    vecs = []
    for f in t["nmaModefile"]:
        p = f if os.path.isabs(f) else os.path.join(folder, f)
        if not os.path.exists(p):
            alt = os.path.join(folder, "modes", os.path.basename(f))
            p = alt if os.path.exists(alt) else p
        if not os.path.exists(p):
            raise FileNotFoundError(f"mode file not found: {p}")
        v = np.loadtxt(p, dtype=np.float64).reshape(-1, 3)
        vecs.append(v / np.linalg.norm(v))
    vectors = np.array(vecs)
    numbers = (t["order_"] if "order_" in t else np.arange(1, len(t) + 1)).astype(np.int64)
    eig = t["nmaEigenval"] if "nmaEigenval" in t else np.full(len(t), np.nan)
    col = t["nmaCollectivity"] if "nmaCollectivity" in t else collectivity(vectors)
    if ref_coords is None:
        ref = os.path.join(folder, "reference_coords.txt")
        ref_coords = np.loadtxt(ref).reshape(-1, 3) if os.path.exists(ref) else \
            np.zeros_like(vectors[0])
    ref_coords = np.asarray(ref_coords, dtype=np.float64)
    if ref_coords.shape != vectors.shape[1:]:
        raise InputError(f"{xmd}: modes have {vectors.shape[1]} atoms, the reference "
                         f"has {len(ref_coords)}")
    return NormalModes(vectors, np.asarray(eig, float), numbers, np.asarray(col, float),
                       ref_coords)

"""EM maps as Gaussian pseudoatoms (Jonić & Sorzano 2016), for normal modes
and projections when no atomic model exists.

The map is approximated by a sum of 3D Gaussians of one standard deviation
``sigma`` (Å) with free centres and weights (the same voxel-integrated
Gaussians as :func:`projector.atoms_to_volume`, so the pseudoatoms project
exactly like atoms). Greedy seeding puts new pseudoatoms at the maxima of the
residual (map minus current approximation), then Adam refines all centres and
weights jointly; the number of pseudoatoms grows until the relative error
``||map - approx|| / ||map||`` (inside the mask) reaches the target (5 %,
Xmipp's default).

Gaussian width. Pseudoatoms cannot reproduce features sharper than
themselves: a sampled atomic potential (cisTEM's test volume, 1 Å voxels)
stalls at 61.7 % error with Gaussians of 1.5 voxels and converts with 0.5.
When no ``sigma`` is given, :func:`estimate_sigma` reads the width of the
map's sharpest peaks (the curvature of the log-density at its local maxima),
and :func:`convert` narrows the Gaussians by 0.7 and starts again (at most
:data:`AUTO_TRIES` widths) while the error stalls above the target.

For the elastic network of pseudoatoms, :func:`neighbour_cutoff` is the
interaction radius ContinuousFlex computes by default (the 95th percentile of
the distances between each pseudoatom and its 3 nearest neighbours, as Xmipp's
``pdb_analysis --operation distance_histogram``), and :func:`network_cutoff`
raises it until the network holds together (with that radius alone, the
pseudoatoms of cisTEM's test volume form 17 separate pieces, and all their
"flexible" modes have zero energy).
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np
import torch

from ..errors import InputError
from .projector import atoms_to_volume_local

__all__ = ["volume_to_pseudoatoms", "convert", "Conversion", "estimate_sigma",
           "neighbour_cutoff", "network_cutoff", "relative_error", "AUTO_TRIES"]

AUTO_TRIES = 3            # Gaussian widths tried when the width is automatic
AUTO_SHRINK = 0.7         # each retry narrows the Gaussians by this factor
MIN_SIGMA_VOXELS = 0.3    # narrowest automatic width (voxels)
MAX_SIGMA_VOXELS = 4.0    # widest automatic width (voxels)


def relative_error(vol: np.ndarray, approx: np.ndarray, mask: np.ndarray | None = None) -> float:
    v = np.asarray(vol, float)
    a = np.asarray(approx, float)
    if mask is not None:
        v, a = v[mask], a[mask]
    return float(np.linalg.norm(v - a) / max(np.linalg.norm(v), 1e-30))


def _voxel_coords(idx, box, voxel_size):
    """(k, j, i) indices -> (x, y, z) Å about the centre box//2."""
    k, j, i = idx
    return np.stack([i, j, k], -1).astype(np.float64) * voxel_size - (box // 2) * voxel_size


@dataclasses.dataclass
class Conversion:
    """Result of :func:`convert`."""
    coords: np.ndarray          # (N, 3) Å about the box centre (index box//2)
    weights: np.ndarray         # (N,) integral of each Gaussian (map units x voxel)
    approx: np.ndarray          # the map the pseudoatoms reproduce [z, y, x]
    error: float                # relative error reached (fraction)
    sigma: float                # Gaussian std used, Å
    estimated: float | None = None   # the map's own width (Å) when the width was automatic
    # (sigma Å, error, N) per try
    tried: list[tuple[float, float, int]] = dataclasses.field(default_factory=list)


def _prepare(vol, voxel_size, threshold, mask):
    """Checked map (float64, threshold and mask applied) and the error mask."""
    v = np.asarray(vol, dtype=np.float64)
    if v.ndim != 3 or len(set(v.shape)) != 1:
        raise InputError(f"the map must be a cubic 3D volume, got shape {v.shape}")
    if not voxel_size or voxel_size <= 0:
        raise InputError("the map has no voxel size: give it explicitly (Å)")
    if threshold is not None:
        if threshold >= v.max():
            raise InputError(f"threshold {threshold} is above the map's maximum {v.max():.4g}")
        v = np.where(v > threshold, v, 0.0)
    if mask is not None:
        mask = np.asarray(mask, bool)
        if mask.shape != v.shape:
            raise InputError(f"mask shape {mask.shape} differs from the map's {v.shape}")
        if not mask.any():
            raise InputError("the mask is empty")
        v = np.where(mask, v, 0.0)
    else:
        mask = v > 0 if threshold is not None else np.ones_like(v, bool)
    if not (v > 0).any():
        raise InputError("the map has no positive density to represent")
    return v, mask


def peak_widths(vol: np.ndarray, level: float = 0.2) -> np.ndarray:
    """Widths (voxels) of the local maxima of ``vol`` above ``level`` x its
    maximum: for a Gaussian peak exp(-x²/2s²) the log-density changes by
    -1/s² between a voxel and its two neighbours along an axis, so
    s = 1/sqrt(2 log v(x) - log v(x-1) - log v(x+1)) (mean of the 3 axes).
    A voxel-integrated Gaussian of std s measures about sqrt(s² + 1/12)."""
    from scipy import ndimage
    v = np.asarray(vol, float)
    top = v.max()
    if not top > 0:
        return np.zeros(0)
    peaks = (v == ndimage.maximum_filter(v, size=3, mode="constant")) & (v > level * top)
    peaks[[0, -1], :, :] = peaks[:, [0, -1], :] = peaks[:, :, [0, -1]] = False
    z, y, x = np.nonzero(peaks)
    lv = np.log(np.maximum(v, 1e-12 * top))
    c = 2 * lv[z, y, x]
    curv = np.mean([c - lv[z - 1, y, x] - lv[z + 1, y, x], c - lv[z, y - 1, x] - lv[z, y + 1, x],
                    c - lv[z, y, x - 1] - lv[z, y, x + 1]], axis=0)
    curv = curv[curv > 1e-6]               # flat tops (plateaus) have no width
    return 1.0 / np.sqrt(curv)


def estimate_sigma(vol: np.ndarray, voxel_size: float, threshold: float | None = None,
                   mask: np.ndarray | None = None) -> float:
    """Gaussian std (Å) for the pseudoatoms of ``vol``, from the map's own
    sharpness: the 10th percentile of :func:`peak_widths` (its sharpest
    features), less the voxel's own width (1/12 voxel² in variance), times
    0.8 (margin: atomic potentials have sharp cores and wide tails), kept in
    [0.3, 4] voxels; 1.5 voxels (Xmipp's default) when the map has no peak.
    Calibrated on cisTEM's 64³ test volume (0.49 voxel; it converts with
    0.5 and stalls at 11 % with 0.6) and the 3j9g potential (0.40 voxel)."""
    v, _ = _prepare(vol, voxel_size, threshold, mask)
    w = peak_widths(v)
    if len(w) == 0:
        return 1.5 * voxel_size
    s = np.percentile(w, 10)
    s = 0.8 * np.sqrt(max(s * s - 1.0 / 12.0, 0.0))
    return float(np.clip(s, MIN_SIGMA_VOXELS, MAX_SIGMA_VOXELS) * voxel_size)


def neighbour_cutoff(coords: np.ndarray, percentile: float = 95.0, n_nearest: int = 3) -> float:
    """Elastic-network radius (Å) as ContinuousFlex computes it by default
    (``cutoffMode`` relative, ``rcPercentage`` 95): the ``percentile`` of the
    distances between each (pseudo)atom and its ``n_nearest`` nearest
    neighbours (Xmipp's ``pdb_analysis --operation distance_histogram``)."""
    from scipy.spatial import cKDTree
    x = np.asarray(coords, float)
    if len(x) <= n_nearest:
        raise InputError(f"{len(x)} atoms: too few for a neighbour-distance cutoff")
    if not 0 < percentile <= 100:
        raise InputError(f"the cutoff percentile must be in (0, 100], got {percentile}")
    d, _ = cKDTree(x).query(x, k=n_nearest + 1)
    return float(np.percentile(d[:, 1:], percentile))


def network_cutoff(coords: np.ndarray, percentile: float = 95.0, n_nearest: int = 3,
                   min_contacts: int = 3, grow: float = 1.2) -> tuple[float, float]:
    """:func:`neighbour_cutoff`, multiplied by ``grow`` until the elastic
    network is one connected piece in which every (pseudo)atom has at least
    ``min_contacts`` neighbours within the cutoff (fewer leave it free to move
    at no energy cost). Returns (cutoff Å, ContinuousFlex's cutoff Å)."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components
    from scipy.spatial import cKDTree
    x = np.asarray(coords, float)
    n = len(x)
    first = rc = neighbour_cutoff(x, percentile, n_nearest)
    tree = cKDTree(x)
    for _ in range(60):
        pairs = tree.query_pairs(rc, output_type="ndarray")
        if len(pairs) and np.bincount(pairs.ravel(), minlength=n).min() >= min(min_contacts,
                                                                                 n - 1):
            graph = coo_matrix((np.ones(len(pairs)), (pairs[:, 0], pairs[:, 1])), shape=(n, n))
            if connected_components(graph, directed=False)[0] == 1:
                break
        rc *= grow
    return float(rc), first


def convert(vol: np.ndarray, voxel_size: float, sigma: float | None = None,
            target_error: float = 0.05, threshold: float | None = None,
            mask: np.ndarray | None = None, max_atoms: int = 20000, initial: int | None = None,
            grow: float = 0.3, iters: int = 60, max_rounds: int = 30,
            device: str | torch.device = "cpu",
            progress: Callable[[int, float], None] | None = None) -> Conversion:
    """Map [z, y, x] -> :class:`Conversion`.

    ``sigma`` Å; None: automatic (:func:`estimate_sigma`, then narrower
    Gaussians while the error stalls above the target). ``threshold``: only
    voxels above it are fitted (others set to 0); ``mask`` boolean array:
    region where the error is measured and atoms may be seeded. Raises
    InputError when the target error cannot be reached."""
    v, mask = _prepare(vol, voxel_size, threshold, mask)
    auto = sigma is None
    first = estimate_sigma(v, voxel_size) if auto else float(sigma)
    tried, s = [], first
    while True:
        c, w, approx, err, stalled = _fit(v, mask, voxel_size, s, target_error, max_atoms,
                                          initial, grow, iters, max_rounds, device, progress)
        tried.append((s, err, len(c)))
        if err <= target_error:
            return Conversion(c, w, approx, err, s, first if auto else None, tried)
        narrower = s * AUTO_SHRINK
        if not (auto and stalled and len(tried) < AUTO_TRIES
                and narrower >= MIN_SIGMA_VOXELS * voxel_size * 0.999):
            break
        s = narrower
    widths = ", ".join(f"{t[0]:.3g} Å: {100 * t[1]:.1f} % with {t[2]}" for t in tried)
    hint = ("allow more pseudoatoms (max_atoms)" if not stalled else
            "a smaller sigma" if not auto else "give a sigma")
    raise InputError(f"relative error above the target {100 * target_error:.1f} % "
                     f"(Gaussian width {widths} pseudoatoms): {hint}, a threshold or a mask, "
                     "or a larger target error")


def volume_to_pseudoatoms(vol: np.ndarray, voxel_size: float, sigma: float | None = None,
                          target_error: float = 0.05, threshold: float | None = None,
                          mask: np.ndarray | None = None, max_atoms: int = 20000,
                          initial: int | None = None, grow: float = 0.3, iters: int = 60,
                          max_rounds: int = 30, device: str | torch.device = "cpu",
                          progress: Callable[[int, float], None] | None = None
                          ) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """Map [z, y, x] -> (coords (N, 3) Å, weights (N,), approximation, error);
    :func:`convert` without the record of the widths tried."""
    r = convert(vol, voxel_size, sigma, target_error, threshold, mask, max_atoms, initial, grow,
                iters, max_rounds, device, progress)
    return r.coords, r.weights, r.approx, r.error


def _fit(v, mask, voxel_size, sigma, target_error, max_atoms, initial, grow, iters, max_rounds,
         device, progress):
    """One conversion at one width -> (coords, weights, approx, error, stalled):
    ``stalled`` when more pseudoatoms no longer lowered the error (rather than
    ``max_atoms`` or ``max_rounds`` being reached)."""
    box = v.shape[0]
    dev = torch.device(device)
    target = torch.as_tensor(v, dtype=torch.float32, device=dev)
    mask_t = torch.as_tensor(mask, device=dev)
    # pseudoatoms are seeded only where there is density (not in the solvent)
    seed_t = mask_t & (target > 0.02 * target.max())
    # the integral of one unit Gaussian is 1: weight ~ local density x voxel volume
    peak_w = float((2 * np.pi) ** 1.5 * (sigma / voxel_size) ** 3)
    n0 = initial or max(8, int(0.2 * (v > 0.2 * v.max()).sum() / (sigma / voxel_size) ** 3))
    coords = torch.zeros(0, 3, dtype=torch.float32, device=dev)
    weights = torch.zeros(0, dtype=torch.float32, device=dev)
    approx = torch.zeros_like(target)
    err, history, stalled = 1.0, [], False
    for _ in range(max_rounds):
        k = n0 if len(coords) == 0 else max(1, int(grow * len(coords)))
        if len(coords) + k > max_atoms:
            k = max_atoms - len(coords)
        if k <= 0:
            break
        resid = ((target - approx) * seed_t).flatten()
        chosen = _seed(resid, v.shape, k, 1.5 * sigma / voxel_size)
        if len(chosen) == 0:
            stalled = True               # no positive residual left to seed
            break
        pts = _voxel_coords(np.unravel_index(chosen, v.shape), box, voxel_size)
        new_c = torch.as_tensor(pts, dtype=torch.float32, device=dev)
        new_w = resid[torch.as_tensor(chosen, device=dev)].clamp_min(0) * peak_w
        coords = torch.cat([coords, new_c])
        weights = torch.cat([weights, new_w])
        coords, weights = _refine(coords, weights, target, mask_t, box, voxel_size, sigma, iters)
        # drop pseudoatoms whose weight vanished or that left the density: they
        # would be loose nodes of the elastic network
        idx = torch.round(coords / voxel_size + box // 2).long().clamp(0, box - 1)
        inside = seed_t[idx[:, 2], idx[:, 1], idx[:, 0]]
        keep = (weights > 0.01 * weights.max()) & inside
        coords, weights = coords[keep], weights[keep]
        approx = atoms_to_volume_local(coords, weights, box, voxel_size, sigma).detach()
        err = float(torch.linalg.norm((target - approx)[mask_t]) /
                    torch.linalg.norm(target[mask_t]))
        if progress is not None:
            progress(len(coords), err)
        if err <= target_error:
            break
        history.append(err)
        if len(history) >= 3 and history[-3] - err < 0.002:
            stalled = True               # more pseudoatoms no longer help
            break
    return (coords.cpu().numpy().astype(np.float64), weights.cpu().numpy().astype(np.float64),
            approx.cpu().numpy(), err, stalled)


def _seed(resid, shape, k, min_dist):
    """Up to ``k`` voxel indices at the largest positive residuals, at least
    ``min_dist`` voxels apart (greedy non-maximum suppression on a grid of
    blocked voxels: O(candidates + k d^3))."""
    cand = torch.topk(resid, min(len(resid), 20 * k)).indices.cpu().numpy()
    cand = cand[resid[torch.as_tensor(cand, device=resid.device)].cpu().numpy() > 0]
    zz, yy, xx = np.unravel_index(cand, shape)
    blocked = np.zeros(shape, bool)
    r = int(np.floor(min_dist))
    off = np.arange(-r, r + 1)
    oz, oy, ox = np.meshgrid(off, off, off, indexing="ij")
    ball = (oz ** 2 + oy ** 2 + ox ** 2) < min_dist ** 2
    ball_idx = [a[ball] for a in (oz, oy, ox)]
    chosen = []
    for c, z, y, x in zip(cand, zz, yy, xx):
        if blocked[z, y, x]:
            continue
        chosen.append(c)
        if len(chosen) == k:
            break
        bz, by, bx = z + ball_idx[0], y + ball_idx[1], x + ball_idx[2]
        ok = ((bz >= 0) & (bz < shape[0]) & (by >= 0) & (by < shape[1]) & (bx >= 0) &
              (bx < shape[2]))
        blocked[bz[ok], by[ok], bx[ok]] = True
    return np.array(chosen, dtype=np.int64)


def _refine(coords, weights, target, mask, box, voxel_size, sigma, iters):
    c = coords.clone().requires_grad_(True)
    lw = torch.log(weights.clamp_min(1e-8)).clone().requires_grad_(True)   # positive weights
    opt = torch.optim.Adam([{"params": [c], "lr": 0.1 * voxel_size},
                            {"params": [lw], "lr": 0.05}])
    norm = float((target[mask] ** 2).sum())
    for _ in range(iters):
        opt.zero_grad()
        approx = atoms_to_volume_local(c, torch.exp(lw), box, voxel_size, sigma)
        loss = ((approx - target)[mask] ** 2).sum() / norm
        loss.backward()
        opt.step()
    return c.detach(), torch.exp(lw).detach()

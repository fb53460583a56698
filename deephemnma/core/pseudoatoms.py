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
"""
import numpy as np
import torch

from ..errors import InputError
from .projector import atoms_to_volume_local

__all__ = ["volume_to_pseudoatoms", "relative_error"]


def relative_error(vol, approx, mask=None):
    v = np.asarray(vol, float)
    a = np.asarray(approx, float)
    if mask is not None:
        v, a = v[mask], a[mask]
    return float(np.linalg.norm(v - a) / max(np.linalg.norm(v), 1e-30))


def _voxel_coords(idx, box, voxel_size):
    """(k, j, i) indices -> (x, y, z) Å about the centre box//2."""
    k, j, i = idx
    return np.stack([i, j, k], -1).astype(np.float64) * voxel_size - (box // 2) * voxel_size


def volume_to_pseudoatoms(vol, voxel_size, sigma=None, target_error=0.05, threshold=None,
                          mask=None, max_atoms=20000, initial=None, grow=0.3, iters=60,
                          max_rounds=30, device="cpu", progress=None):
    """Map [z, y, x] -> (coords (N, 3) Å, weights (N,), approximation, error).

    ``sigma`` Å (default 1.5 voxels). ``threshold``: only voxels above it are
    fitted (others set to 0); ``mask`` boolean array: region where the error is
    measured and atoms may be seeded. Raises InputError when the target error
    cannot be reached with ``max_atoms`` pseudoatoms."""
    v = np.asarray(vol, dtype=np.float64)
    if v.ndim != 3 or len(set(v.shape)) != 1:
        raise InputError(f"the map must be a cubic 3D volume, got shape {v.shape}")
    if not voxel_size or voxel_size <= 0:
        raise InputError("the map has no voxel size: give it explicitly (Å)")
    box = v.shape[0]
    sigma = 1.5 * voxel_size if sigma is None else float(sigma)
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
    err, history = 1.0, []
    for _ in range(max_rounds):
        k = n0 if len(coords) == 0 else max(1, int(grow * len(coords)))
        if len(coords) + k > max_atoms:
            k = max_atoms - len(coords)
        if k <= 0:
            break
        resid = ((target - approx) * seed_t).flatten()
        chosen = _seed(resid, v.shape, k, 1.5 * sigma / voxel_size)
        if len(chosen) == 0:
            break                        # no positive residual left to seed
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
            break                        # more pseudoatoms no longer help
    if err > target_error:
        raise InputError(f"relative error {100 * err:.1f} % with {len(coords)} pseudoatoms, "
                         f"above the target {100 * target_error:.1f} %: allow more pseudoatoms "
                         "(max_atoms), a smaller sigma, or a larger target error")
    return (coords.cpu().numpy().astype(np.float64), weights.cpu().numpy().astype(np.float64),
            approx.cpu().numpy(), err)


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

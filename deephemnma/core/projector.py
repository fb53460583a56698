"""Projections of (deformed) atomic structures, and of volumes.

Atoms are 3D Gaussians of standard deviation ``sigma`` (Å) and weight ``w``:
one ``sigma`` for all, or one per atom (weights (N,), sigma (N,)), or a few
Gaussian components per atom (weights and sigma (N, C): e.g. electron
scattering factors, core.scattering).
The projection of a Gaussian along z is a 2D Gaussian, integrated exactly over
each pixel (differences of erf). Because a 2D Gaussian is separable, a batch of
images is two small per-atom tables and one batched matrix product::

    image[b, y, x] = sum_n w_n gy[b, n, y] gx[b, n, x]

so the cost is B x N x box (not B x N x box^2): fast on CPU and GPU, exact,
and differentiable by autograd in the coordinates (hence the normal-mode
amplitudes), the rotation matrices and the shifts.

With ``radius`` (in sigmas), each atom's two 1D profiles are computed only on
the K = 2 ceil(radius sigma / pixel) + 2 pixels around it (truncation < 6e-7
of its weight at 5 sigma), scattered into the per-atom tables a few images at
a time, with an analytic gradient (:class:`_LocalRender`): the erf/exp work
drops from box + 1 to K + 1 values per atom and axis, and the working memory
from B x N x box floats to a few MB (no page-faulting allocations).

Conventions (docs/ARCHITECTURE.md; tested against xmippLib and cisTEM):
an atom at model coordinates ``r`` (Å, about the reference centre) lands at
pixel ``N//2 + (A r)[0:2] / pixel_size - shift`` with ``A`` Xmipp's
Euler matrix and ``shift = (shiftX, shiftY)`` in pixels: **a positive shiftX
moves the particle towards negative x** (Xmipp: image(x) = P(x + shift)).
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    import numpy as np

__all__ = ["deform", "project", "Projector", "atoms_to_volume", "atoms_to_volume_local",
           "project_volume", "fourier_shift"]

_SQRT2 = math.sqrt(2.0)


def deform(ref: torch.Tensor, vectors: torch.Tensor, amplitudes: torch.Tensor) -> torch.Tensor:
    """X0 + sum_k q_k V_k: ref (N, 3), vectors (M, N, 3), amplitudes (B, M) ->
    (B, N, 3) (torch)."""
    return ref + torch.einsum("bm,mnc->bnc", amplitudes, vectors)


def _pixel_profiles(u, box, s):
    """Integrals over pixels [i-0.5, i+0.5] of unit 1D Gaussians centred at u
    (..., N) in pixel units with std s (pixels) -> (..., N, box)."""
    edges = torch.arange(box + 1, device=u.device, dtype=u.dtype) - 0.5
    cdf = torch.erf((edges - u[..., None]) / (_SQRT2 * s))
    return 0.5 * (cdf[..., 1:] - cdf[..., :-1])


def _local_profiles(u, box, s, K):
    """Pixel integrals of unit 1D Gaussians at u (..., N) (pixels, std s) on
    the K pixels around each. Returns the pixel indices (..., N, K) long
    (clamped to the box), the values p (..., N, K) (0 on pixels outside the
    box), the K + 1 pixel edges relative to u (..., N, K + 1), and the inside
    mask (..., N, K) (None when every window lies inside the box)."""
    base = torch.floor(u.detach()) - (K // 2 - 1)                   # first pixel
    t = (base - 0.5 - u)[..., None] + torch.arange(K + 1, device=u.device, dtype=u.dtype)
    e = torch.erf(t * (1.0 / (_SQRT2 * s)))
    p = e[..., 1:] - e[..., :-1]
    p *= 0.5
    idx = base.long()[..., None] + torch.arange(K, device=u.device)
    inside = None
    if float(base.min()) < 0 or float(base.max()) + K > box:
        inside = ((idx >= 0) & (idx < box)).to(u.dtype)
        p *= inside
        idx.clamp_(0, box - 1)
    return idx, p, t, inside


class _LocalRender(torch.autograd.Function):
    """image[b, y, x] = sum_n w_n gy[b, n, y] gx[b, n, x] from K-pixel
    profiles at u (B, N, 2) pixels; forward and backward a chunk of images at
    a time so that the dense per-atom tables stay a few MB. Gradient for u
    only (weights constant)."""

    @staticmethod
    def forward(ctx, u, weights, box, s, K, chunk):
        B, N, _ = u.shape
        ix, px, tx, inx = _local_profiles(u[..., 0], box, s, K)
        iy, py, ty, iny = _local_profiles(u[..., 1], box, s, K)
        py *= weights[:, None]
        out = u.new_empty(B, box, box)
        gx, gy = u.new_empty(min(B, chunk), N, box), u.new_empty(min(B, chunk), N, box)
        for a in range(0, B, chunk):
            z = slice(a, min(B, a + chunk))
            n = z.stop - z.start
            torch.bmm(gy[:n].zero_().scatter_add_(2, iy[z], py[z]).transpose(1, 2),
                      gx[:n].zero_().scatter_add_(2, ix[z], px[z]), out=out[z])
        ctx.save_for_backward(weights, ix, px, tx, iy, py, ty)
        ctx.inside, ctx.box, ctx.s, ctx.chunk = (inx, iny), box, s, chunk
        return out

    @staticmethod
    def backward(ctx, grad):
        weights, ix, px, tx, iy, py, ty = ctx.saved_tensors
        box, s, chunk = ctx.box, ctx.s, ctx.chunk
        sv = s if isinstance(s, float) else s[:, 0]          # per-atom std (N,)
        B, N, K = px.shape
        grad = grad.contiguous()
        dx, dy = px.new_empty(B, N, K), px.new_empty(B, N, K)
        gx, gy = px.new_empty(min(B, chunk), N, box), px.new_empty(min(B, chunk), N, box)
        for a in range(0, B, chunk):
            z = slice(a, min(B, a + chunk))
            n = z.stop - z.start
            gx[:n].zero_().scatter_add_(2, ix[z], px[z])
            gy[:n].zero_().scatter_add_(2, iy[z], py[z])
            dx[z] = torch.bmm(gy[:n], grad[z]).gather(2, ix[z])                  # dL/dgx
            dy[z] = torch.bmm(gx[:n], grad[z].transpose(1, 2)).gather(2, iy[z])  # dL/d(w gy)
        # d p_k / du = f_k - f_{k+1}, f the Gaussian density at the pixel edges
        du = []
        for d, t, inside in ((dx, tx, ctx.inside[0]), (dy, ty, ctx.inside[1])):
            f = torch.exp(t * t * (-0.5 / (s * s)))
            f = f[..., :-1] - f[..., 1:]
            if inside is not None:
                f *= inside
            du.append((d * f).sum(-1) * (1.0 / (math.sqrt(2 * math.pi) * sv)))
        return torch.stack([du[0], du[1] * weights], -1), None, None, None, None, None


def _per_atom(sigma, pixel_size, like):
    """sigma (Å; a number, or per atom (n,)) -> std in pixels: a float, or a
    tensor (n, 1) (broadcasts against per-atom tables (..., n, k))."""
    if isinstance(sigma, (int, float)):
        return float(sigma) / pixel_size
    s = torch.as_tensor(sigma, dtype=like.dtype, device=like.device).reshape(-1, 1)
    return s / pixel_size


def project(coords: torch.Tensor, weights: torch.Tensor, rotations: torch.Tensor,
            shifts: torch.Tensor | None, box: int, pixel_size: float,
            sigma: float | torch.Tensor = 1.0, radius: float | None = None) -> torch.Tensor:
    """Project atoms as Gaussians.

    coords (B, N, 3) or (N, 3) Å; weights (N,); rotations (B, 3, 3) Xmipp
    matrices; shifts (B, 2) pixels or None; returns (B, box, box).
    ``sigma`` (Å): one number, or one per atom (N,); with weights (N, C),
    C Gaussian components per atom of widths sigma (N, C) (or one number).
    ``radius`` None: exact dense profiles; a number of sigmas (e.g. 5): each
    atom on its nearby pixels only, the window of the widest (module
    docstring; no gradient for the weights)."""
    B = rotations.shape[0]
    if coords.dim() == 2:
        coords = coords.expand(B, -1, -1)
    xy = torch.einsum("bij,bnj->bni", rotations[:, :2, :], coords) / pixel_size
    centre = float(box // 2)
    if shifts is not None:
        xy = xy - shifts[:, None, :]
    if weights.dim() == 2:                          # C components per atom
        N, C = weights.shape
        xy = xy[:, :, None, :].expand(-1, -1, C, -1).reshape(B, N * C, 2)
        weights = weights.reshape(-1)
        if not isinstance(sigma, (int, float)):
            sigma = torch.as_tensor(sigma).expand(N, C).reshape(-1)
    s = _per_atom(sigma, pixel_size, xy)
    if radius is not None:
        K = 2 * int(math.ceil(radius * float(s if isinstance(s, float) else s.max()))) + 2
        # dense tables of ~4 MB (float32) per chunk on CPU (cache), ~1 GB on GPUs
        chunk = max(1, (1 << (20 if xy.device.type == "cpu" else 28)) // (xy.shape[1] * box))
        return _LocalRender.apply((xy + centre).contiguous(), weights.detach(), box, s, K,
                                  chunk)
    gx = _pixel_profiles(xy[..., 0] + centre, box, s)          # (B, N, box)
    gy = _pixel_profiles(xy[..., 1] + centre, box, s)
    return torch.bmm((gy * weights[None, :, None]).transpose(1, 2), gx)


class Projector:
    """Projections of a reference deformed by normal modes, held on a device.

    ``Projector(ref_coords, weights, vectors, box, pixel_size, sigma, device)``
    (weights (N,) or (N, C), sigma a number or (N,) or (N, C): :func:`project`)
    then ``proj(amplitudes (B, M), rotations (B, 3, 3), shifts (B, 2))`` ->
    (B, box, box). ``vectors`` may be None (rigid reference). ``radius``
    (sigmas): local profiles (:func:`project`)."""

    def __init__(self, ref_coords: np.ndarray | torch.Tensor, weights: np.ndarray | torch.Tensor,
                 vectors: np.ndarray | torch.Tensor | None, box: int, pixel_size: float,
                 sigma: float | np.ndarray | torch.Tensor = 1.0,
                 device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32,
                 max_batch_elems: int = 2 ** 26, radius: float | None = None) -> None:
        self.device = torch.device(device)
        self.dtype = dtype
        t = lambda a: torch.as_tensor(a, dtype=dtype, device=self.device)  # noqa: E731
        self.ref = t(ref_coords)
        self.weights = t(weights)
        self.vectors = None if vectors is None else t(vectors)
        self.box = int(box)
        self.pixel_size = float(pixel_size)
        # one std (Å) for all atoms, or per atom (N,) / per component (N, C)
        self.sigma = float(sigma) if isinstance(sigma, (int, float)) else t(sigma)
        self.max_batch_elems = max_batch_elems
        self.radius = radius

    @property
    def n_modes(self) -> int:
        return 0 if self.vectors is None else self.vectors.shape[0]

    def coords(self, amplitudes: torch.Tensor | None = None) -> torch.Tensor:
        if amplitudes is None or self.vectors is None:
            return self.ref
        return deform(self.ref, self.vectors, amplitudes)

    def __call__(self, amplitudes: np.ndarray | torch.Tensor | None,
                 rotations: np.ndarray | torch.Tensor,
                 shifts: np.ndarray | torch.Tensor | None = None) -> torch.Tensor:
        cast = lambda a: None if a is None else torch.as_tensor(  # noqa: E731
            a, dtype=self.dtype, device=self.device)
        amplitudes, rotations, shifts = cast(amplitudes), cast(rotations), cast(shifts)
        B = rotations.shape[0]
        # keep the (B, N, box) tables within memory: split big batches
        per = self.weights.numel() * (self.box + 1) * 4
        chunk = max(1, self.max_batch_elems // per)
        outs = []
        for i in range(0, B, chunk):
            a = None if amplitudes is None else amplitudes[i:i + chunk]
            outs.append(project(self.coords(a), self.weights, rotations[i:i + chunk],
                                None if shifts is None else shifts[i:i + chunk],
                                self.box, self.pixel_size, self.sigma, self.radius))
        return outs[0] if len(outs) == 1 else torch.cat(outs)


def atoms_to_volume(coords: np.ndarray | torch.Tensor, weights: np.ndarray | torch.Tensor,
                    box: int, voxel_size: float, sigma: float = 1.0,
                    chunk: int = 256) -> torch.Tensor:
    """Density volume [z, y, x] (box^3) of Gaussian atoms (voxel-integrated),
    centre at index box//2. coords (N, 3) Å, weights (N,). Torch in, torch out
    (numpy accepted)."""
    coords = torch.as_tensor(coords)
    dtype = coords.dtype if coords.dtype.is_floating_point else torch.float64
    coords = coords.to(dtype)
    weights = torch.as_tensor(weights, dtype=dtype, device=coords.device)
    s = sigma / voxel_size
    c = float(box // 2)
    vol = torch.zeros(box, box * box, dtype=dtype, device=coords.device)
    for i in range(0, coords.shape[0], chunk):
        x = coords[i:i + chunk] / voxel_size + c
        gx = _pixel_profiles(x[:, 0], box, s)
        gy = _pixel_profiles(x[:, 1], box, s)
        gz = _pixel_profiles(x[:, 2], box, s) * weights[i:i + chunk, None]
        gyx = (gy[:, :, None] * gx[:, None, :]).reshape(len(x), -1)
        vol += gz.T @ gyx
    return vol.reshape(box, box, box)


def atoms_to_volume_local(coords: np.ndarray | torch.Tensor,
                          weights: np.ndarray | torch.Tensor, box: int, voxel_size: float,
                          sigma: float = 1.0, radius: float = 4.0,
                          chunk: int = 4096) -> torch.Tensor:
    """Same volume as :func:`atoms_to_volume`, each atom stamped only on the
    voxels within ``radius`` sigma of it (truncation error < 1e-4 of its
    weight at 4 sigma): cost N x (8 radius sigma/voxel)^3 instead of
    N x box^3, so large maps and many small pseudoatoms stay cheap.
    Differentiable in coords and weights (index_add)."""
    coords = torch.as_tensor(coords)
    dtype = coords.dtype if coords.dtype.is_floating_point else torch.float64
    coords = coords.to(dtype)
    weights = torch.as_tensor(weights, dtype=dtype, device=coords.device)
    s = sigma / voxel_size
    K = 2 * int(math.ceil(radius * s)) + 2
    off = torch.arange(K, device=coords.device)
    vol = torch.zeros(box ** 3, dtype=dtype, device=coords.device)
    for i in range(0, coords.shape[0], chunk):
        x = coords[i:i + chunk] / voxel_size + float(box // 2)          # (n, 3) voxels
        base = torch.floor(x.detach()).long() - (K // 2 - 1)
        idx = base[:, :, None] + off                                      # (n, 3, K)
        t = idx.to(dtype)
        prof = 0.5 * (torch.erf((t + 0.5 - x[:, :, None]) / (_SQRT2 * s)) -
                      torch.erf((t - 0.5 - x[:, :, None]) / (_SQRT2 * s)))
        prof = prof * ((idx >= 0) & (idx < box)).to(dtype)
        gx, gy, gz = prof[:, 0], prof[:, 1], prof[:, 2]
        stamp = (gz[:, :, None, None] * gy[:, None, :, None] * gx[:, None, None, :] *
                 weights[i:i + chunk, None, None, None])
        ic = idx.clamp(0, box - 1)
        flat = ((ic[:, 2, :, None, None] * box + ic[:, 1, None, :, None]) * box +
                ic[:, 0, None, None, :])
        vol = vol.index_add(0, flat.reshape(-1), stamp.reshape(-1))
    return vol.reshape(box, box, box)


def fourier_shift(images: torch.Tensor, shifts: torch.Tensor) -> torch.Tensor:
    """Translate images (B, N, N) by ``shifts`` (B, 2) pixels (dx, dy) with
    Fourier phases: out(x) = in(x - shift)."""
    n = images.shape[-1]
    ky = torch.fft.fftfreq(n, device=images.device, dtype=images.dtype)
    kx = torch.fft.rfftfreq(n, device=images.device, dtype=images.dtype)
    phase = -2j * math.pi * (shifts[:, 0, None, None] * kx[None, None, :] +
                             shifts[:, 1, None, None] * ky[None, :, None])
    return torch.fft.irfft2(torch.fft.rfft2(images) * torch.exp(phase), s=images.shape[-2:])


def project_volume(vol: torch.Tensor, rotations: torch.Tensor, shifts: torch.Tensor | None = None,
                   oversample: int = 1) -> torch.Tensor:
    """Real-space projection of a volume [z, y, x] (centre box//2) at Xmipp
    rotations (B, 3, 3): rotate the sampling grid by A^T, trilinear
    interpolation, sum along z. Shifts (B, 2) pixels with Xmipp's sign. Used as
    an independent check of conventions and for tests of reconstruction."""
    box = vol.shape[-1]
    B = rotations.shape[0]
    dtype = vol.dtype
    c = box // 2
    lin = torch.arange(box, dtype=dtype, device=vol.device) - c
    zs = (torch.arange(box * oversample, dtype=dtype, device=vol.device) / oversample
          - c)
    Z, Y, X = torch.meshgrid(zs, lin, lin, indexing="ij")
    pts = torch.stack([X, Y, Z], -1).reshape(-1, 3)             # image-frame coords
    out = []
    for b in range(B):
        r = pts @ rotations[b].to(dtype)                          # A^T p as row vectors
        g = (r + c) / (box - 1) * 2 - 1                           # align_corners=True
        g = g.reshape(1, len(zs), box, box, 3)
        img = torch.nn.functional.grid_sample(vol[None, None], g, mode="bilinear",
                                              padding_mode="zeros", align_corners=True)
        out.append(img[0, 0].sum(0) / oversample)
    proj = torch.stack(out)
    if shifts is not None:
        proj = fourier_shift(proj, -shifts.to(dtype))
    return proj

"""Image preprocessing shared by simulation, alignment, training and prediction.

All functions take and return torch tensors (B, N, N) and keep Xmipp's centre
convention (pixel N//2). :func:`normalize` is the package's one image
normaliser (what the network sees, in training and in inference)."""
from __future__ import annotations

from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    import numpy as np

__all__ = ["downscale", "circular_mask", "normalize", "rotate_images"]


def downscale(images: torch.Tensor, new_box: int) -> torch.Tensor:
    """Antialiased downscaling by Fourier cropping (B, N, N) -> (B, n, n).

    Cropping the spectrum is an ideal low-pass at the new Nyquist frequency
    followed by resampling; pixel values keep their scale (a constant image
    stays the same constant). The pixel size grows by N / n; the centre pixel
    N//2 maps to n//2 (both even sizes)."""
    N = images.shape[-1]
    n = int(new_box)
    if n == N:
        return images
    if n > N:
        raise ValueError(f"downscale: new box {n} larger than {N}")
    F = torch.fft.fftshift(torch.fft.fft2(images), dim=(-2, -1))
    c, h = N // 2, n // 2
    crop = F[..., c - h:c - h + n, c - h:c - h + n]
    if n % 2 == 0:
        # the new Nyquist row/column holds both +-Nyquist: keep it real-symmetric
        crop = crop.clone()
        crop[..., 0, :] = crop[..., 0, :].real.to(crop.dtype)
        crop[..., :, 0] = crop[..., :, 0].real.to(crop.dtype)
    out = torch.fft.ifft2(torch.fft.ifftshift(crop, dim=(-2, -1))).real
    return out * (n * n) / (N * N)


def circular_mask(box: int, radius: float | None = None, device: str | torch.device | None = None,
                  dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """1 inside a circle of ``radius`` px (default box//2 - 1) around N//2."""
    r = box // 2 - 1 if radius is None else radius
    lin = torch.arange(box, device=device, dtype=dtype) - box // 2
    return ((lin[None, :] ** 2 + lin[:, None] ** 2) <= r * r).to(dtype)


def normalize(images: torch.Tensor, size: int | None = None) -> torch.Tensor:
    """The network's image normalisation (training and inference): optional
    antialiased downscaling to ``size`` px (:func:`downscale`), then zero mean
    and unit standard deviation over each whole image. (B, N, N) torch ->
    (B, n, n); a constant image becomes 0 (std floored at 1e-6)."""
    if size and size < images.shape[-1]:
        images = downscale(images, size)
    mu = images.mean((-2, -1), keepdim=True)
    sd = images.std((-2, -1), keepdim=True).clamp_min(1e-6)
    return (images - mu) / sd


def rotate_images(images: torch.Tensor,
                  alpha: float | np.ndarray | torch.Tensor) -> torch.Tensor:
    """Rotate images (B, N, N) about pixel N//2 so that content at image
    coordinates p moves to R(alpha) p, with R = rotations.inplane_rotation_matrix:
    the projection at Euler angles (rot, tilt, psi) becomes the one at
    (rot, tilt, psi + alpha). ``alpha`` degrees, scalar or (B,) (one per image),
    or (P,) with a single image to make P rotated copies. Bilinear; corners
    outside the original field become 0."""
    from .rotations import inplane_rotation_matrix
    b = images.shape[-1]
    alpha = torch.as_tensor(alpha, dtype=images.dtype, device=images.device).reshape(-1)
    R = inplane_rotation_matrix(alpha)                                  # (P, 2, 2)
    lin = torch.arange(b, dtype=images.dtype, device=images.device) - b // 2
    Y, X = torch.meshgrid(lin, lin, indexing="ij")
    pts = torch.stack([X, Y], -1).reshape(-1, 2)
    src = torch.einsum("pji,nj->pni", R, pts)                           # R^T p'
    grid = ((src + b // 2) / (b - 1) * 2 - 1).reshape(len(alpha), b, b, 2)
    imgs = images.reshape(-1, 1, b, b)
    if imgs.shape[0] == 1 and len(alpha) > 1:
        imgs = imgs.expand(len(alpha), -1, -1, -1)
    elif len(alpha) == 1 and imgs.shape[0] > 1:
        grid = grid.expand(imgs.shape[0], -1, -1, -1)
    return torch.nn.functional.grid_sample(imgs, grid, mode="bilinear", padding_mode="zeros",
                                           align_corners=True)[:, 0]

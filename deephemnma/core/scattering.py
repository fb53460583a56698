"""Atom models for projections: electron scattering factors and B-factors.

Electron scattering factors of neutral atoms (Peng, Ren, Dudarev & Whelan
1996, Acta Cryst. A52, 257-276, Table 3, fits for 0 < s < 6 Å^-1, the table
Xmipp's volume-from-PDB uses)::

    f(s) = sum_i a_i exp(-b_i s^2),   s = sin(theta) / lambda = |k| / 2   (Å)

Each term is the Fourier transform of a 3D Gaussian of integral ``a_i`` and
variance ``b_i / (8 pi^2)`` Å^2 (exp(-b s^2) = exp(-2 pi^2 sigma^2 |k|^2) with
|k| = 2 s). A B-factor (Debye-Waller factor exp(-B s^2)) adds B to every b_i,
so it widens every Gaussian by ``B / (8 pi^2)`` in variance: for the equal
Gaussians of the ``gaussian`` model too.

Atom models (:func:`atom_model`):

* ``gaussian``: every atom one Gaussian of std ``sigma`` (Å), weight its
  atomic number Z (core.structure; pseudoatoms: their own weights and sigma);
* ``scattering``: every atom one Gaussian per element fitted to the five-term
  f(s) at the resolutions of the images (:func:`fitted_gaussian`): the same
  projection cost as ``gaussian``;
* ``scattering5``: the five Gaussians of f(s) per atom (5 x the cost).

Pseudoatoms have no element: they keep their own weights and sigma in every
model (with the B-factor added).

:func:`estimate_b_factor` reads the B-factor from particle images at known
poses: the B that maximises the mean normalised cross-correlation of the
model's projections (with each image's |CTF|) with the images.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, SupportsFloat

import numpy as np

if TYPE_CHECKING:
    import torch

    from .projector import Projector

__all__ = ["PENG", "ATOM_MODELS", "element_symbols", "scattering_factor", "peng_gaussians",
           "fitted_gaussian", "atom_model", "b_to_variance", "estimate_b_factor",
           "projection_scores"]

ATOM_MODELS = ("gaussian", "scattering", "scattering5")

# Peng et al. (1996) Table 3 (0 < s < 6 Å^-1): element -> (a_1..a_5 Å, b_1..b_5 Å^2)
PENG = {
    "H": ((0.0088, 0.0449, 0.1481, 0.2356, 0.0914), (0.1152, 1.0867, 4.9755, 16.5591, 43.2743)),
    "C": ((0.0489, 0.2091, 0.7537, 1.1420, 0.3555), (0.1140, 1.0825, 5.4281, 17.8811, 51.1341)),
    "N": ((0.0267, 0.1328, 0.5301, 1.1020, 0.4215), (0.0541, 0.5165, 2.8207, 10.6297, 34.3764)),
    "O": ((0.0365, 0.1729, 0.5805, 0.8814, 0.3121), (0.0652, 0.6184, 2.9449, 9.6298, 28.2194)),
    "S": ((0.0915, 0.4312, 1.0847, 2.4671, 1.0852), (0.0838, 0.7788, 4.3462, 15.5846, 44.6365)),
    "P": ((0.1005, 0.4615, 1.0663, 2.5854, 1.2725), (0.0977, 0.9084, 4.9654, 18.5471, 54.3648)),
}
FALLBACK = "C"          # elements without a row (ions, metals, unknown) scatter as carbon

_8PI2 = 8 * math.pi ** 2


def b_to_variance(b: float | np.ndarray) -> np.ndarray:
    """Variance (Å^2) of the real-space Gaussian of exp(-b s^2)."""
    return np.asarray(b, dtype=np.float64) / _8PI2


def element_symbols(elements: Sequence[str | None] | np.ndarray,
                    names: Sequence[str] | np.ndarray | None = None) -> np.ndarray:
    """Upper-case element symbols: the PDB element column, else the first
    letter of the atom name."""
    out = []
    for i, e in enumerate(elements):
        e = str(e or "").strip().upper()
        if not e and names is not None:
            e = "".join(c for c in str(names[i]).upper() if c.isalpha())[:1]
        out.append(e)
    return np.array(out, dtype=object)


def peng_gaussians(element: str) -> tuple[np.ndarray, np.ndarray]:
    """(a (5,), b (5,)) of an element (the fallback's when it has no row)."""
    a, b = PENG.get(str(element).upper(), PENG[FALLBACK])
    return np.array(a), np.array(b)


def scattering_factor(element: str, s: float | np.ndarray) -> float | np.ndarray:
    """f(s) (Å) of an element at s = sin(theta)/lambda (Å^-1)."""
    a, b = peng_gaussians(element)
    s = np.asarray(s, dtype=np.float64)
    return (a * np.exp(-b * s[..., None] ** 2)).sum(-1)


def fitted_gaussian(element: str, s_max: float) -> tuple[float, float]:
    """One Gaussian (weight w Å, b Å^2) with w exp(-b s^2) closest (least
    squares on 0 <= s <= ``s_max``) to the element's f(s): w is f(0)'s fit."""
    s = np.linspace(0.0, s_max, 200)
    f = scattering_factor(element, s)
    bs = np.linspace(0.0, 80.0, 1601)
    E = np.exp(-bs[:, None] * s ** 2)                               # (nb, ns)
    w = (E @ f) / (E * E).sum(1)
    err = ((w[:, None] * E - f) ** 2).sum(1)
    i = int(err.argmin())
    return float(w[i]), float(bs[i])


def atom_model(model: str, weights: np.ndarray, elements: np.ndarray | None = None,
               names: np.ndarray | None = None, sigma: float = 1.0, b_factor: float = 0.0,
               pseudo_sigma: float | None = None, pixel_size: float | None = None
               ) -> tuple[np.ndarray, float | np.ndarray]:
    """(weights, sigmas) of an atom model for :class:`core.projector.Projector`.

    ``model``: one of :data:`ATOM_MODELS`. ``weights`` (N,) the structure's
    (Z, or pseudoatom weights); ``elements``/``names`` (N,) its PDB columns;
    ``sigma`` (Å) the ``gaussian`` model's width; ``pseudo_sigma``: the
    structure is pseudoatomic, with this width (then only B is added);
    ``pixel_size`` (Å/px): the finest sampling, whose Nyquist frequency bounds
    the fit of ``scattering``. Returns weights (N,) and sigma a float, or (N,)
    arrays, or (N, 5) arrays (``scattering5``)."""
    if model not in ATOM_MODELS:
        raise ValueError(f"unknown atom model {model!r} (one of {', '.join(ATOM_MODELS)})")
    extra = float(b_to_variance(b_factor))
    weights = np.asarray(weights, dtype=np.float64)
    if pseudo_sigma is not None or model == "gaussian":
        s0 = float(pseudo_sigma if pseudo_sigma is not None else sigma)
        return weights, math.sqrt(s0 * s0 + extra)
    if elements is None:
        raise ValueError(f"the {model} atom model needs each atom's element")
    sym = element_symbols(elements, names)
    uniq = sorted(set(sym))
    if model == "scattering5":
        table = {e: peng_gaussians(e) for e in uniq}
        a = np.stack([table[e][0] for e in sym])
        b = np.stack([table[e][1] for e in sym])
        return a, np.sqrt(b_to_variance(b) + extra)
    s_max = 0.5 / (2.0 * (pixel_size or 1.0))                  # Nyquist |k| = 1/(2 px), s = k/2
    table = {e: fitted_gaussian(e, s_max) for e in uniq}
    w = np.array([table[e][0] for e in sym])
    b = np.array([table[e][1] for e in sym])
    return w, np.sqrt(b_to_variance(b) + extra)


def projection_scores(projector: Projector, images: torch.Tensor, absctf: torch.Tensor | None,
                      rotations: torch.Tensor, shifts: torch.Tensor,
                      amplitudes: torch.Tensor | None, mask: torch.Tensor) -> torch.Tensor:
    """Normalised cross-correlations (B,) inside ``mask`` of the images (B, n, n)
    (phase-flipped) with the projector's projections at the poses, filtered by
    |CTF| (B, n, n//2+1) (None: no CTF). Torch in, torch out."""
    import torch
    from .align import _normalize_masked
    with torch.no_grad():
        model = projector(amplitudes, rotations, shifts)
        if absctf is not None:
            model = torch.fft.irfft2(torch.fft.rfft2(model) * absctf, s=model.shape[-2:])
        return (_normalize_masked(model, mask) * _normalize_masked(images, mask)).sum((-2, -1))


def estimate_b_factor(score: Callable[[float], SupportsFloat],
                      grid: Sequence[float] = (0.0, 20.0, 40.0, 60.0, 80.0, 100.0, 130.0, 160.0,
                                               200.0)) -> tuple[float, dict[float, float]]:
    """The B-factor (Å^2) maximising ``score(B)`` (the mean correlation of
    projections with images at their poses) on ``grid``, refined by a
    parabola through the best point and its neighbours (clipped to the grid).
    Returns (B, {B: score})."""
    grid = sorted(float(b) for b in grid)
    scores = {b: float(score(b)) for b in grid}
    v = np.array([scores[b] for b in grid])
    i = int(v.argmax())
    best = grid[i]
    if 0 < i < len(grid) - 1:
        x = np.array(grid[i - 1:i + 2])
        c = np.polyfit(x, v[i - 1:i + 2], 2)
        if c[0] < 0:
            best = float(np.clip(-c[1] / (2 * c[0]), x[0], x[2]))
    return best, scores

"""3D reconstruction by Fourier-space direct inversion, and FSC.

Each image is re-centred with its shift (Xmipp sign: image(x) = P(x + shift)),
zero-padded by ``pad``, Fourier transformed and inserted as a central slice
(projection-slice theorem: the 2D transform at image frequency k equals the 3D
transform at model frequency A^T k) with trilinear weights. Both the data and
the weights are accumulated; with a CTF, the Wiener form is used:

    V(k) = sum_i CTF_i F_i / (sum_i CTF_i^2 + 1/snr)

(images phase-flipped beforehand are handled by passing |CTF|). The result is
inverse transformed, cropped and divided by the trilinear kernel's sinc^2
(gridding correction). Batched and chunked in torch (CPU or CUDA).

Gold-standard half maps (:func:`reconstruct_halves`): the images are split in
two random halves fixed by particle id (:func:`half_sets`: a hash of the id
with a fixed seed, so a particle lands in the same half in every run and every
group), each half is accumulated apart in the same pass, and the full map is
made from the sum of both accumulations. Their FSC at 0.143 estimates the full
map's resolution (Rosenthal & Henderson 2003), unmasked and within a soft mask
made from the map (:func:`soft_mask`); :func:`lowpass` filters a map to it.

A mask made from the map correlates the halves beyond their true correlation
(it spreads their correlated low frequencies into the high ones, and its own
shape follows their common noise): :func:`masked_fsc` corrects the masked FSC
by phase randomisation (Chen et al. 2013): the phases of both half maps are
randomised, independently, beyond the shell where their unmasked FSC first
drops below :data:`RANDOMISE_FSC` (or beyond :data:`RANDOMISE_FALLBACK` of
Nyquist if it never does), but not below ``min_shell`` (the stage: the
resolution the mask is made at, below which the masked FSC of any two maps
is mostly the mask's own spectrum); the masked FSC of the randomised halves,
FSC_n, is then what the mask alone gives, and beyond that shell

    FSC_true = (FSC_masked - FSC_n) / (1 - FSC_n).
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from ..errors import InputError
from . import rotations
from .ctf import ctf_image
from .projector import fourier_shift

if TYPE_CHECKING:
    from ..io.stacks import Stack
    from ..utils import Progress
    from .ctf import CTFParams

__all__ = ["reconstruct", "reconstruct_halves", "half_sets", "fsc", "resolution_at",
           "fsc_resolution", "lowpass", "soft_mask", "randomise_phases", "masked_fsc",
           "MASK_LOWPASS", "HALF_SEED", "RANDOMISE_FSC", "RANDOMISE_FALLBACK"]

#: seed of the half assignment (:func:`half_sets`)
HALF_SEED = 0x5EED_4A1F
#: the soft mask is made from the map low-passed at this resolution (Å), or
#: at 4 px (half the Nyquist frequency) when the pixels are larger than 3.75 Å
MASK_LOWPASS = 15.0
#: the phases are randomised beyond the shell where the unmasked half-map FSC
#: first drops below this value (:func:`masked_fsc`)
RANDOMISE_FSC = 0.8
#: ... or beyond this fraction of the Nyquist frequency if it never does
RANDOMISE_FALLBACK = 0.75
#: seed of the phase randomisation (each half its own stream)
RANDOMISE_SEED = 0x9A5E


def _pad(images, P):
    N = images.shape[-1]
    out = torch.zeros(images.shape[:-2] + (P, P), dtype=images.dtype, device=images.device)
    o = P // 2 - N // 2
    out[..., o:o + N, o:o + N] = images
    return out


def reconstruct(images: np.ndarray | Stack, angles: np.ndarray, shifts: np.ndarray | None = None,
                ctf: CTFParams | None = None, pixel_size: float = 1.0, pad: float = 1,
                snr: float | None = None, batch: int = 256, device: str | torch.device = "cpu",
                flipped: bool = False, progress: Progress | None = None,
                max_freq: float | None = None) -> np.ndarray:
    """images (n, N, N) array/Stack-like; angles (n, 3) Xmipp Euler degrees;
    shifts (n, 2) px; ctf CTFParams or None -> volume (N, N, N) numpy [z, y, x].

    ``pad``: Fourier oversampling of the insertion grid. 1 (default) already
    gives FSC > 0.99 up to ~0.95 Nyquist on noiseless AK projections and is
    5-13x faster on CPU than 2, which is slightly better at Nyquist.
    ``flipped``: images were phase-flipped (use |CTF| in the Wiener weights).
    ``snr``: Wiener constant (default: 1/mean weight, i.e. mild regularisation
    where few images contribute). ``max_freq`` in 1/Å (default Nyquist)."""
    acc = _accumulate(images, angles, shifts, ctf, pixel_size, pad, batch, device, flipped,
                      progress, max_freq, None)
    return acc.volume(acc.num[0], acc.den[0], snr)


def reconstruct_halves(images: np.ndarray | Stack, angles: np.ndarray, halves: np.ndarray,
                       shifts: np.ndarray | None = None, ctf: CTFParams | None = None,
                       pixel_size: float = 1.0, pad: float = 1, snr: float | None = None,
                       batch: int = 256, device: str | torch.device = "cpu",
                       flipped: bool = False, progress: Progress | None = None,
                       max_freq: float | None = None
                       ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The full map and the two half maps in one pass -> (full, half1, half2).
    ``halves`` (n,): 0 or 1 per image (:func:`half_sets`); both halves must
    hold images. The other arguments are those of :func:`reconstruct`; the
    full map is that of the summed accumulations of both halves."""
    halves = np.asarray(halves)
    if halves.shape != (len(images),) or not np.isin(halves, (0, 1)).all():
        raise InputError("half maps need a half (0 or 1) for every image")
    counts = np.bincount(halves.astype(np.int64), minlength=2)
    if counts.min() == 0:
        raise InputError(f"all {len(halves)} images fall in one half: no half maps")
    acc = _accumulate(images, angles, shifts, ctf, pixel_size, pad, batch, device, flipped,
                      progress, max_freq, halves)
    full = acc.volume(acc.num[0] + acc.num[1], acc.den[0] + acc.den[1], snr)
    return full, acc.volume(acc.num[0], acc.den[0], snr), acc.volume(acc.num[1], acc.den[1], snr)


def half_sets(ids: np.ndarray, seed: int = HALF_SEED) -> np.ndarray:
    """Random halves fixed by particle id: (n,) integer ids -> (n,) 0/1, a
    hash (splitmix64) of each id with ``seed``; the same id is always in the
    same half, whatever the other ids."""
    x = np.asarray(ids).astype(np.int64).astype(np.uint64) ^ np.uint64(seed)
    with np.errstate(over="ignore"):
        x = x + np.uint64(0x9E3779B97F4A7C15)
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        x = x ^ (x >> np.uint64(31))
    return (x >> np.uint64(63)).astype(np.int64)


class _Accumulated:
    """Fourier accumulations (num, den: (sets, P^3)) and their inversion."""

    def __init__(self, num, den, N, P, k, rmax, dev):
        self.num, self.den, self.N, self.P, self.k, self.rmax, self.dev = \
            num, den, N, P, k, rmax, dev

    def volume(self, num, den, snr):
        N, P, k, rmax, dev = self.N, self.P, self.k, self.rmax, self.dev
        den_pos = den[den > 0]
        reg = (1.0 / snr) if snr else (float(den_pos.mean()) * 1e-3 if len(den_pos) else 1.0)
        V = (num / (den + reg)).reshape(P, P, P)
        # keep only frequencies inside the sphere
        kz, ky3, kx3 = torch.meshgrid(k, k, k, indexing="ij")
        V = V * ((kx3 ** 2 + ky3 ** 2 + kz ** 2) <= rmax ** 2)
        vol = torch.fft.fftshift(torch.fft.ifftn(V).real, dim=(0, 1, 2))
        o = P // 2 - N // 2
        vol = vol[o:o + N, o:o + N, o:o + N]
        # gridding correction for trilinear interpolation on the padded grid
        r = (torch.arange(N, device=dev, dtype=torch.float32) - N // 2) / P
        sinc = torch.special.sinc(r) ** 2
        corr = sinc[:, None, None] * sinc[None, :, None] * sinc[None, None, :]
        return (vol / corr.clamp_min(1e-3)).cpu().numpy()


def _accumulate(images, angles, shifts, ctf, pixel_size, pad, batch, device, flipped,
                progress, max_freq, halves):
    """Insert every image's central slice; ``halves`` (n,) 0/1 or None (one
    accumulation)."""
    n = len(images)
    if n == 0:
        raise InputError("no images to reconstruct from")
    angles = np.asarray(angles, dtype=np.float64)
    if angles.shape != (n, 3) or not np.isfinite(angles).all():
        raise InputError("reconstruction needs finite Euler angles for every image")
    N = images.shape[-1]
    P = int(round(N * pad)) // 2 * 2
    dev = torch.device(device)
    sets = 1 if halves is None else 2
    num = torch.zeros(sets * P * P * P, dtype=torch.complex64, device=dev)
    den = torch.zeros(sets * P * P * P, dtype=torch.float32, device=dev)
    k = torch.fft.fftfreq(P, device=dev) * P                       # integer frequencies
    ky, kx = torch.meshgrid(k, k, indexing="ij")
    rmax = (P / 2 - 1) if max_freq is None else min(P / 2 - 1, max_freq * P * pixel_size)
    inside = (kx ** 2 + ky ** 2) <= rmax ** 2
    kxy = torch.stack([kx[inside], ky[inside]], -1)                 # (F, 2)
    for s in range(0, n, batch):
        e = min(n, s + batch)
        x = torch.as_tensor(np.asarray(images[s:e]), dtype=torch.float32, device=dev)
        if shifts is not None:
            x = fourier_shift(x, torch.as_tensor(np.asarray(shifts[s:e]), dtype=torch.float32,
                                                 device=dev))
        xp = _pad(x, P)
        F = torch.fft.fft2(torch.fft.ifftshift(xp, dim=(-2, -1)))[:, inside]   # (b, F)
        if ctf is not None:
            c = ctf_image(ctf.subset(np.arange(s, e)), P, pixel_size, rfft=False,
                          device=dev)[:, inside]
            if flipped:
                c = c.abs()
            F = F * c
            w = c * c
        else:
            w = torch.ones(F.shape, device=dev)
        A = torch.as_tensor(rotations.euler_to_matrix(angles[s:e]), dtype=torch.float32,
                            device=dev)
        # model-frame frequency of each image frequency: A^T (kx, ky, 0)
        k3 = torch.einsum("bji,fj->bfi", A[:, :2, :], kxy)          # (b, F, 3) as (x, y, z)
        g = k3.reshape(-1, 3)
        F = F.reshape(-1)
        w = w.reshape(-1)
        g0 = torch.floor(g)
        frac = g - g0
        g0 = g0.long()
        offset = 0
        if halves is not None:       # each image's half: its own accumulation
            h = torch.as_tensor(np.asarray(halves[s:e], dtype=np.int64), device=dev)
            offset = (h * (P * P * P)).repeat_interleave(kxy.shape[0])
        for dz in (0, 1):
            for dy in (0, 1):
                for dx in (0, 1):
                    wt = ((frac[:, 0] if dx else 1 - frac[:, 0]) *
                          (frac[:, 1] if dy else 1 - frac[:, 1]) *
                          (frac[:, 2] if dz else 1 - frac[:, 2]))
                    ix = (g0[:, 0] + dx) % P
                    iy = (g0[:, 1] + dy) % P
                    iz = (g0[:, 2] + dz) % P
                    lin = (iz * P + iy) * P + ix + offset
                    num.index_add_(0, lin, (F * wt).to(num.dtype))
                    den.index_add_(0, lin, w * wt)
        if progress is not None:
            progress.update(e - s)
    return _Accumulated(num.reshape(sets, -1), den.reshape(sets, -1), N, P, k, rmax, dev)


def fsc(vol1: np.ndarray, vol2: np.ndarray,
        pixel_size: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Fourier shell correlation -> (frequencies 1/Å (S,), fsc (S,)); shells of
    one Fourier pixel up to Nyquist."""
    a = torch.fft.fftn(torch.as_tensor(np.asarray(vol1), dtype=torch.float64))
    b = torch.fft.fftn(torch.as_tensor(np.asarray(vol2), dtype=torch.float64))
    if a.shape != b.shape:
        raise InputError(f"FSC: maps of different sizes {tuple(a.shape)} and {tuple(b.shape)}")
    N = a.shape[-1]
    k = torch.fft.fftfreq(N, dtype=torch.float64) * N
    kz, ky, kx = torch.meshgrid(k, k, k, indexing="ij")
    shell = torch.round(torch.sqrt(kx ** 2 + ky ** 2 + kz ** 2)).long().reshape(-1)
    S = N // 2 + 1
    m = shell < S
    sh = shell[m]
    num = torch.zeros(S, dtype=torch.float64).index_add_(0, sh, (a * b.conj()).real.reshape(-1)[m])
    pa = torch.zeros(S, dtype=torch.float64).index_add_(0, sh, (a.abs() ** 2).reshape(-1)[m])
    pb = torch.zeros(S, dtype=torch.float64).index_add_(0, sh, (b.abs() ** 2).reshape(-1)[m])
    f = num / torch.sqrt(pa * pb).clamp_min(1e-30)
    freq = np.arange(S) / (N * pixel_size)
    return freq, f.numpy()


def resolution_at(freq: np.ndarray, curve: np.ndarray, threshold: float) -> float:
    """Resolution (Å) where the FSC first drops below ``threshold`` (linear
    interpolation); the Nyquist resolution if it never does."""
    for i in range(1, len(curve)):
        if curve[i] < threshold:
            f0, f1, c0, c1 = freq[i - 1], freq[i], curve[i - 1], curve[i]
            f = f0 + (c0 - threshold) / (c0 - c1) * (f1 - f0) if c0 != c1 else f1
            return 1.0 / f if f > 0 else math.inf
    return 1.0 / freq[-1]


def fsc_resolution(vol1: np.ndarray, vol2: np.ndarray, pixel_size: float) -> dict[str, Any]:
    freq, curve = fsc(vol1, vol2, pixel_size)
    return {"res_0.5": resolution_at(freq, curve, 0.5),
            "res_0.143": resolution_at(freq, curve, 0.143), "freq": freq, "fsc": curve}


def lowpass(vol: np.ndarray, pixel_size: float, resolution: float,
            edge_shells: float = 2.0) -> np.ndarray:
    """``vol`` low-pass filtered at ``resolution`` (Å): Fourier components
    kept below 1/resolution, with a raised-cosine fall-off ``edge_shells``
    Fourier shells wide centred on it (no ringing of a hard cut-off)."""
    v = torch.as_tensor(np.asarray(vol), dtype=torch.float64)
    N = v.shape[-1]
    k = torch.fft.fftfreq(N, dtype=torch.float64) * N
    kz, ky, kx = torch.meshgrid(k, k, torch.fft.rfftfreq(N, dtype=torch.float64) * N,
                                indexing="ij")
    r = torch.sqrt(kx ** 2 + ky ** 2 + kz ** 2)          # shells (Fourier pixels)
    rc = N * pixel_size / resolution
    t = ((r - (rc - edge_shells / 2)) / edge_shells).clamp(0, 1)
    filt = 0.5 * (1 + torch.cos(math.pi * t))
    out = torch.fft.irfftn(torch.fft.rfftn(v) * filt, s=v.shape)
    return out.numpy().astype(np.asarray(vol).dtype, copy=False)


def soft_mask(vol: np.ndarray, pixel_size: float, threshold: float = 0.1, dilate: float = 3.0,
              soft_edge: float = 4.0) -> np.ndarray:
    """A soft mask (values in [0, 1]) around the density of ``vol``: the map
    low-passed at :data:`MASK_LOWPASS` Å (or 4 px), thresholded at
    ``threshold`` times its maximum, dilated by ``dilate`` px, with a
    raised-cosine edge ``soft_edge`` px wide beyond it."""
    from scipy.ndimage import distance_transform_edt
    low = lowpass(vol, pixel_size, max(MASK_LOWPASS, 4 * pixel_size))
    top = float(low.max())
    if not top > 0:
        raise InputError("the map has no positive density to make a mask from")
    inside = low >= threshold * top
    d = distance_transform_edt(~inside)                  # px to the nearest inside voxel
    if soft_edge > 0:
        t = np.clip((d - dilate) / soft_edge, 0, 1)
        m = 0.5 * (1 + np.cos(np.pi * t))
    else:
        m = (d <= dilate).astype(np.float64)
    return m.astype(np.float32)


def _shells(N: int, rfft: bool) -> np.ndarray:
    """The Fourier shell (rounded radius in Fourier pixels, as in :func:`fsc`)
    of every component of an N^3 map's (r)fftn."""
    k = np.fft.fftfreq(N) * N
    kx = np.fft.rfftfreq(N) * N if rfft else k
    kz, ky, kx = np.meshgrid(k, k, kx, indexing="ij", sparse=True)
    return np.rint(np.sqrt(kx ** 2 + ky ** 2 + kz ** 2)).astype(np.int64)


def randomise_phases(vol: np.ndarray, beyond: int, seed: int = RANDOMISE_SEED) -> np.ndarray:
    """``vol`` with the phases of its Fourier components in the shells >=
    ``beyond`` (Fourier pixels, as :func:`fsc`'s) replaced by random ones
    (uniform, from ``seed``), their amplitudes kept; a real map again (the
    random phases are those of a real white-noise map, so Hermitian)."""
    v = np.asarray(vol, dtype=np.float64)
    N = v.shape[-1]
    F = np.fft.rfftn(v)
    noise = np.fft.rfftn(np.random.default_rng(seed).standard_normal(v.shape))
    phase = noise / np.maximum(np.abs(noise), 1e-300)
    F = np.where(_shells(N, rfft=True) >= beyond, np.abs(F) * phase, F)
    return np.fft.irfftn(F, s=v.shape).astype(np.asarray(vol).dtype, copy=False)


def masked_fsc(half1: np.ndarray, half2: np.ndarray, mask: np.ndarray, pixel_size: float,
               randomise_fsc: float = RANDOMISE_FSC, min_shell: int = 1,
               seed: int = RANDOMISE_SEED) -> dict[str, Any]:
    """The half maps' FSC unmasked and within ``mask``, corrected for the mask
    by phase randomisation (see the module's doc) -> dict of arrays over the
    shells: 'freq' (1/Å), 'unmasked', 'masked' (uncorrected), 'randomised'
    (FSC_n: the masked FSC of the phase-randomised halves; equal to 'masked'
    below the randomisation shell), 'corrected'; and 'randomised_from' (the
    first randomised shell, Fourier pixels)."""
    freq, unmasked = fsc(half1, half2, pixel_size)
    _, masked = fsc(half1 * mask, half2 * mask, pixel_size)
    S = len(freq)
    below = np.flatnonzero(unmasked[1:] < randomise_fsc)
    k = int(below[0]) + 1 if below.size else int(round(RANDOMISE_FALLBACK * (S - 1)))
    k = min(max(k, int(min_shell), 1), S - 1)
    r1 = randomise_phases(half1, k, seed)
    r2 = randomise_phases(half2, k, seed + 1)
    _, rand = fsc(r1 * mask, r2 * mask, pixel_size)
    beyond = np.arange(S) >= k
    rand = np.where(beyond, rand, masked)
    den = 1.0 - rand
    corr = np.where(beyond, (masked - rand) / np.where(np.abs(den) > 1e-6, den, np.inf), masked)
    return {"freq": freq, "unmasked": unmasked, "masked": masked, "randomised": rand,
            "corrected": corr, "randomised_from": k}

"""The previous HEMNMA alignment (deephemnma/core/align.py before the
polar-ring search and the local atom stamps, CHANGES.md), kept only so that
benchmarks/bench_align.py can time it against the current one in the same
run. Not part of the package.

Differences from the current core: dense pixel-integrated Gaussians through
autograd (the dense path of core.projector, radius None, unchanged), a
Cartesian search (every in-plane rotation of every projection in the bank, a
3x3 shift grid, references filtered by the batch's mean |CTF| for every
batch), deformed references along single modes only, torch's own threads.
:func:`previous_aligner` builds it with the defaults of that time
(:class:`PreviousOptions`), whatever the current defaults are.
"""
import dataclasses
import math

import numpy as np
import torch

from deephemnma.errors import InputError
from deephemnma.core import rotations
from deephemnma.core.ctf import ctf_image, phase_flip
from deephemnma.core.image import circular_mask, downscale, rotate_images
from deephemnma.core.projector import Projector

__all__ = ["Aligner", "PreviousOptions", "previous_aligner"]


def fibonacci_orientations(step_deg):
    """Xmipp Euler angles (K, 3) covering SO(3) with ~``step_deg`` spacing:
    projection directions on a Fibonacci sphere x in-plane angles."""
    step = math.radians(step_deg)
    n_dir = max(2, int(round(4 * math.pi / step ** 2)))
    i = np.arange(n_dir) + 0.5
    z = 1 - 2 * i / n_dir
    phi = (math.pi * (1 + 5 ** 0.5) * i) % (2 * math.pi)
    tilt = np.degrees(np.arccos(z))
    rot = np.degrees(phi)
    n_psi = max(1, int(round(360 / step_deg)))
    psi = np.arange(n_psi) * 360.0 / n_psi
    R = np.repeat(rot, n_psi)
    T = np.repeat(tilt, n_psi)
    P = np.tile(psi, n_dir)
    return np.stack([R, T, P], -1)


def check_images(images):
    """Indices of unusable images (NaN/inf, or constant)."""
    flat = images.reshape(len(images), -1)
    bad = ~np.isfinite(flat).all(1)
    with np.errstate(invalid="ignore"):
        bad |= ~(np.nanstd(np.where(np.isfinite(flat), flat, 0), axis=1) > 0)
    return np.nonzero(bad)[0]


def _skew(w):
    z = torch.zeros_like(w[..., 0])
    return torch.stack([torch.stack([z, -w[..., 2], w[..., 1]], -1),
                        torch.stack([w[..., 2], z, -w[..., 0]], -1),
                        torch.stack([-w[..., 1], w[..., 0], z], -1)], -2)


def _normalize_masked(x, mask):
    """Zero mean, unit norm inside the mask (x: (..., N, N))."""
    m = mask / mask.sum()
    mu = (x * m).sum((-2, -1), keepdim=True)
    y = (x - mu) * mask
    return y / y.flatten(-2).norm(dim=-1)[..., None, None].clamp_min(1e-12)


class Aligner:
    """HEMNMA alignment against one reference and its modes.

    ``Aligner(ref_coords, weights, vectors (M, N, 3), box, pixel_size, options)``
    then ``align(images (B, box, box) numpy/torch, ctf=CTFParams or None)`` ->
    dict of numpy arrays: angles (B, 3), shifts (B, 2) px, amplitudes (B, M),
    cost (B,)."""

    def __init__(self, ref_coords, weights, vectors, box, pixel_size, options=None):
        self.opt = options or PreviousOptions()
        o = self.opt
        self.device = torch.device(o.device)
        self.box = int(box)
        self.pixel_size = float(pixel_size)
        vectors = np.zeros((0,) + np.asarray(ref_coords).shape) if vectors is None else \
            np.asarray(vectors)
        if vectors.shape[1:] != np.asarray(ref_coords).shape:
            raise InputError(f"the modes move {vectors.shape[1]} atoms but the reference "
                             f"has {len(ref_coords)}")
        self.M = vectors.shape[0]
        self.pyramid = tuple(o.pyramid) if o.pyramid else (self.box // 2, self.box)
        if any(b > self.box or b % 2 for b in self.pyramid):
            raise InputError(f"pyramid sizes {self.pyramid} must be even and <= box {self.box}")
        self.proj = {b: Projector(ref_coords, weights, vectors, b, self.pixel_size * self.box / b,
                                  sigma=o.sigma, device=self.device) for b in self.pyramid}
        self.masks = {b: circular_mask(b, o.mask_radius * b, self.device) for b in self.pyramid}
        self._refs = None

    # ------------------------------------------------------------------
    def _reference_bank(self):
        """Normalised coarse projections for the search grid (computed once)."""
        if self._refs is not None:
            return self._refs
        o, b = self.opt, self.pyramid[0]
        ang = fibonacci_orientations(o.angular_step)
        amps = [np.zeros(self.M)]
        if o.search_amplitude > 0:
            for k in range(self.M):
                for s in (-1, 1):
                    a = np.zeros(self.M)
                    a[k] = s * o.search_amplitude
                    amps.append(a)
        amps = np.array(amps)
        # project each direction at psi = 0 once, then make the in-plane
        # versions by rotating those images (psi + a rotates image coordinates
        # by inplane_rotation_matrix(a)): n_psi times fewer projections
        dirs = ang[ang[:, 2] == 0]
        psis = np.unique(ang[:, 2])
        A = torch.as_tensor(rotations.euler_to_matrix(dirs), dtype=torch.float32,
                            device=self.device)
        bank = []
        for a in amps:
            q = torch.as_tensor(a, dtype=torch.float32, device=self.device)
            base = self.proj[b](q.expand(len(A), -1), A)             # (D, b, b)
            bank.append(torch.cat([rotate_images(img[None], psis) for img in base]))
        bank = torch.cat(bank)                                      # (R, b, b)
        ang = np.column_stack([np.repeat(dirs[:, :2], len(psis), 0),
                               np.tile(psis, len(dirs))])
        ang = np.tile(ang, (len(amps), 1))
        quat = torch.as_tensor(rotations.euler_to_quaternion(ang), dtype=torch.float32,
                               device=self.device)
        self._refs = (torch.fft.rfft2(bank), ang, np.repeat(amps, len(ang) // len(amps), 0),
                      quat)
        return self._refs

    def _global_search(self, coarse, absctf):
        """Top candidates (angles, shifts px at the coarse level, amplitudes):
        the best score of every reference over the shift grid, then the
        ``n_candidates`` best references whose orientations are pairwise more
        than ``candidate_separation`` x ``angular_step`` apart (near-duplicates
        of one pose would waste the refinement on a single basin)."""
        o, b = self.opt, self.pyramid[0]
        fbank, ang, amps, quat = self._reference_bank()
        # the images are phase-flipped (|CTF| x projection): filter the bank by
        # the batch's mean |CTF| so that both carry the same spectral weights
        filt = fbank if absctf is None else fbank * absctf.mean(0)
        refs = _normalize_masked(torch.fft.irfft2(filt, s=(b, b)), self.masks[b]).flatten(1)
        ps = self.pixel_size * self.box / b
        r = int(math.floor(o.max_shift / ps))
        offs = [(dx, dy) for dx in range(-r, r + 1) for dy in range(-r, r + 1)]
        B = coarse.shape[0]
        best = torch.full((B, refs.shape[0]), -2.0, device=self.device)
        best_off = torch.zeros((B, refs.shape[0]), dtype=torch.long, device=self.device)
        for j, (dx, dy) in enumerate(offs):
            # image(x) = P(x + shift): undo a candidate shift by rolling by +shift
            shifted = torch.roll(coarse, shifts=(dy, dx), dims=(-2, -1))
            x = _normalize_masked(shifted, self.masks[b]).flatten(1)
            score = x @ refs.T                                       # (B, R)
            better = score > best
            best = torch.where(better, score, best)
            best_off[better] = j
        K = o.n_candidates
        T = min(refs.shape[0], 64 * K)
        top = best.topk(T, dim=1).indices                            # (B, T) by score
        q = quat[top]                                                # (B, T, 4)
        cos_half = math.cos(math.radians(o.candidate_separation * o.angular_step) / 2)
        near = (q @ q.transpose(1, 2)).abs() > cos_half              # (B, T, T)
        keep = torch.zeros((B, T), dtype=torch.bool, device=self.device)
        for t in range(T):                                           # greedy, best first
            keep[:, t] = ~(near[:, t, :t] & keep[:, :t]).any(1) & (keep.sum(1) < K)
        # the kept ones in score order, then (if fewer than K) the best others
        order = (~keep).long() * T + torch.arange(T, device=self.device)
        sel = top.gather(1, order.argsort(1)[:, :K])                 # (B, K)
        bi = sel.cpu().numpy()
        sh = np.array(offs, dtype=np.float64)[best_off.gather(1, sel).cpu().numpy()]
        return ang[bi], sh, amps[bi]

    def _refine(self, images, absctf, A0, shifts, amps, level, iters):
        """Adam on 1 - NCC; images (B, b, b) already normalised; A0 (B, 3, 3);
        shifts (B, 2) px of this level; amps (B, M). Returns refined + cost."""
        o = self.opt
        mask = self.masks[level]
        P = self.proj[level]
        w = torch.zeros(len(A0), 3, device=self.device, requires_grad=True)
        s = shifts.clone().requires_grad_(True)
        qs = 100.0                                                   # amplitude scaling
        q = (amps / qs).clone().requires_grad_(True)
        params = [{"params": [w], "lr": o.lr_rotation},
                  {"params": [s], "lr": o.lr_shift}]
        if self.M:
            params.append({"params": [q], "lr": o.lr_amplitude / qs})
        opt = torch.optim.Adam(params)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, max(iters, 1))
        target = _normalize_masked(images, mask)
        for _ in range(iters):
            opt.zero_grad()
            A = torch.linalg.matrix_exp(_skew(w)) @ A0
            model = P(q * qs if self.M else None, A, s)
            if absctf is not None:
                model = torch.fft.irfft2(torch.fft.rfft2(model) * absctf, s=model.shape[-2:])
            ncc = (_normalize_masked(model, mask) * target).sum((-2, -1))
            (1 - ncc).sum().backward()
            opt.step()
            sched.step()
        with torch.no_grad():
            A = torch.linalg.matrix_exp(_skew(w)) @ A0
            model = P(q * qs if self.M else None, A, s)
            if absctf is not None:
                model = torch.fft.irfft2(torch.fft.rfft2(model) * absctf, s=model.shape[-2:])
            cost = 1 - (_normalize_masked(model, mask) * target).sum((-2, -1))
        return A.detach(), s.detach(), (q * qs).detach(), cost

    # ------------------------------------------------------------------
    def align(self, images, ctf=None):
        o = self.opt
        x = torch.as_tensor(np.asarray(images), dtype=torch.float32, device=self.device)
        if x.ndim != 3 or x.shape[-1] != self.box or x.shape[-2] != self.box:
            raise InputError(f"images are {tuple(x.shape[1:])}, the reference projects to "
                             f"{self.box}x{self.box}")
        B = x.shape[0]
        if ctf is not None and not o.images_flipped:
            x = phase_flip(x, ctf, self.pixel_size)
        levels = {b: downscale(x, b) for b in self.pyramid}
        absctf = {}
        for b in self.pyramid:
            absctf[b] = None if ctf is None else ctf_image(
                ctf, b, self.pixel_size * self.box / b, device=self.device).abs()
        c0 = self.pyramid[0]
        cand_ang, cand_sh, cand_amp = self._global_search(levels[c0], absctf[c0])
        K = cand_ang.shape[1]
        # refine all K candidates at the coarse level
        rep = lambda t: None if t is None else t.repeat_interleave(K, 0)  # noqa: E731
        A0 = torch.as_tensor(rotations.euler_to_matrix(cand_ang.reshape(-1, 3)),
                             dtype=torch.float32, device=self.device)
        sh = torch.as_tensor(cand_sh.reshape(-1, 2), dtype=torch.float32, device=self.device)
        am = torch.as_tensor(cand_amp.reshape(-1, self.M), dtype=torch.float32,
                             device=self.device)
        A, sh, am, cost = self._refine(rep(levels[c0]), rep(absctf[c0]), A0, sh, am, c0,
                                       o.coarse_iters)
        F = max(1, min(o.fine_candidates, K))
        best = cost.view(B, K).topk(F, dim=1, largest=False).indices       # (B, F)
        pick = (torch.arange(B, device=self.device)[:, None] * K + best).reshape(-1)
        A, sh, am, cost = A[pick], sh[pick], am[pick], cost[pick]
        prev = c0
        repF = lambda t: None if t is None else t.repeat_interleave(F, 0)  # noqa: E731
        for b in self.pyramid[1:]:
            sh = sh * (b / prev)
            A, sh, am, cost = self._refine(repF(levels[b]), repF(absctf[b]), A, sh, am, b,
                                           o.fine_iters)
            prev = b
        if F > 1:
            best = cost.view(B, F).argmin(1)
            pick = torch.arange(B, device=self.device) * F + best
            A, sh, am, cost = A[pick], sh[pick], am[pick], cost[pick]
        sh = sh * (self.box / prev)
        return {"angles": rotations.matrix_to_euler(A.double()).cpu().numpy(),
                "shifts": sh.double().cpu().numpy(),
                "amplitudes": am.double().cpu().numpy().reshape(B, self.M),
                "cost": cost.double().cpu().numpy()}


@dataclasses.dataclass
class PreviousOptions:
    """AlignOptions' defaults of the previous implementation."""
    pyramid: tuple = None
    angular_step: float = 12.0
    search_amplitude: float = 150.0
    max_shift: float = 3.0
    n_candidates: int = 4
    candidate_separation: float = 1.5
    fine_candidates: int = 1
    coarse_iters: int = 40
    fine_iters: int = 25
    lr_rotation: float = 0.03
    lr_shift: float = 0.3
    lr_amplitude: float = 8.0
    mask_radius: float = 0.45
    sigma: float = 1.0
    batch_size: int = 64
    images_flipped: bool = False
    device: str = "cpu"


def previous_aligner(ref_coords, weights, vectors, box, pixel_size, options=None):
    """The previous Aligner with its own defaults; only ``images_flipped``,
    ``device`` and ``pyramid`` are taken from ``options`` (what a user set
    for the data, not for the method)."""
    keep = {k: getattr(options, k) for k in ("images_flipped", "device", "pyramid")
            if options is not None}
    return Aligner(ref_coords, weights, vectors, box, pixel_size, PreviousOptions(**keep))

"""Embedded HEMNMA: elastic and rigid-body 3D-to-2D alignment of particle images.

For every image, the normal-mode amplitudes, the three Euler angles (Xmipp ZYZ)
and the two shifts that make the projection of the deformed, rotated, shifted
reference match the image, and a cost (1 - normalised cross-correlation inside
a circular mask; lower is better; Xmipp's HEMNMA also reports a cost where
lower is better).

Design (all batched in torch, CPU or CUDA, one process; every step measured
with benchmarks/bench_align.py):

1. preprocessing as HEMNMA: phase flip when the CTF is known (unless the images
   are already flipped), Fourier downscaling to the pyramid sizes, masked
   normalisation;
2. global search at the coarsest level against a bank computed once: the
   projections at psi = 0 of the reference deformed by each search amplitude
   (the reference, +-``search_amplitude`` along each mode and at the corners
   (+-a, ..., +-a)) in directions on a Fibonacci sphere ~``angular_step``
   apart, as angular Fourier coefficients of polar rings. An image is scored
   against every reference at every in-plane angle (``n_psi`` of them) and
   every shift of a small grid by one matrix product per angular frequency
   and one inverse FFT, with its own |CTF| (normalised cross-correlation, the
   reference's norm from its power spectrum); the best ``n_candidates`` poses
   with distinct orientations are kept;
3. joint continuous refinement of amplitudes, rotation (a small rotation vector
   composed with the candidate) and shifts by Adam steps on 1 - NCC, with the
   projection multiplied by |CTF| (the images being phase-flipped), from the
   candidates at the coarse level, then the best candidate at the full level;
   projections with local atom stamps and an analytic gradient
   (core.projector, ``radius``).

From given poses (:meth:`Aligner.align_from_poses`, e.g. a consensus
refinement's), step 2 is local: each image's projection direction tilted
within ``cone`` degrees (a small Fibonacci set ~``angular_step`` apart) x the
same search amplitudes, projected for that image and scored as the bank (every
in-plane angle by one inverse FFT, kept where the whole rotation stays in the
cone), at the shifts within ``shift_window`` Å of its own; the
``local_candidates`` best amplitudes go to step 3, done there by
Levenberg-Marquardt on the same cost and parameters (:meth:`Aligner._lm`):
the Jacobian of the normalised model from the model's image gradient (shifts,
in-plane angle) and forward differences (tilts, amplitudes), a damped
Gauss-Newton step per image, tried at its length and at twice it;
``local_coarse_iters`` iterations at the coarse level, the first two thirds
on images and model low-passed by a Gaussian of :data:`LOCAL_BLUR` Å (the
search's amplitudes are up to ~100 units off, and the sharp images' basin is
narrower than that), then ``local_fine_iters`` at each finer level for the
best candidate. Each iteration costs about as much as 2-3 Adam steps and
converges in a few where Adam needs dozens.

Every image's result depends on that image alone. On CPU, worker threads
(``threads``) align parts of a batch, each running torch on one thread.
"""
from __future__ import annotations

import math
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Union

import numpy as np
import torch

from ..errors import InputError
from . import rotations
from .config import AlignOptions
from .ctf import CTFParams, ctf_image, phase_flip
from .image import circular_mask, downscale
from .projector import Projector

__all__ = ["AlignOptions", "Aligner", "fibonacci_orientations", "AUTO_START_B"]

#: images (B, box, box) as the Aligner takes them
ImagesT = Union[np.ndarray, torch.Tensor]

#: Å: std of the Gaussian low-pass of the first Levenberg-Marquardt iterations of
#: align_from_poses (benchmarks/bench_from_poses.py: 2 px at 64 px / 1.3 Å/px;
#: without it, images far from the search's amplitudes stalled)
LOCAL_BLUR = 5.2

#: B-factor (Å^2) of the atoms while an 'auto' B-factor is being estimated
AUTO_START_B = {"gaussian": 0.0, "scattering": 50.0, "scattering5": 50.0}


def fibonacci_orientations(step_deg: float) -> np.ndarray:
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


def _skew(w):
    z = torch.zeros_like(w[..., 0])
    return torch.stack([torch.stack([z, -w[..., 2], w[..., 1]], -1),
                        torch.stack([w[..., 2], z, -w[..., 0]], -1),
                        torch.stack([-w[..., 1], w[..., 0], z], -1)], -2)


def _rotvec_matrix(w):
    """Rotation matrices (..., 3, 3) of rotation vectors w (..., 3) (radians),
    by Rodrigues' formula: elementwise, so a matrix does not depend on the
    others in the batch (torch.linalg.matrix_exp's rounding does)."""
    t2 = w.square().sum(-1)[..., None, None]
    t = t2.sqrt()
    small = t2 < 1e-8
    ts = torch.where(small, torch.ones_like(t), t)
    a = torch.where(small, 1 - t2 / 6, torch.sin(ts) / ts)
    b = torch.where(small, 0.5 - t2 / 24, (1 - torch.cos(ts)) / ts.square())
    K = _skew(w)
    return torch.eye(3, dtype=w.dtype, device=w.device) + a * K + b * (K @ K)


def _matrix_rotvec(R):
    """Rotation vectors (..., 3) (radians) of rotation matrices (..., 3, 3),
    the inverse of :func:`_rotvec_matrix` for angles below 180 degrees."""
    v = torch.stack([R[..., 2, 1] - R[..., 1, 2], R[..., 0, 2] - R[..., 2, 0],
                     R[..., 1, 0] - R[..., 0, 1]], -1)
    s = v.norm(dim=-1) / 2                                          # sin(angle)
    c = (torch.diagonal(R, dim1=-2, dim2=-1).sum(-1) - 1) / 2       # cos(angle)
    t = torch.atan2(s, c)
    f = torch.where(s < 1e-6, torch.full_like(s, 0.5), t / (2 * s.clamp_min(1e-6)))
    return v * f[..., None]


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
    cost (B,).

    Atoms are projected with the ``atom_model`` of the options
    (core.scattering): ``elements`` and ``names`` (N,) (the PDB columns) are
    needed by the scattering models; ``pseudo_sigma`` (Å): the reference is
    pseudoatomic, with this width. ``b_factor`` 'auto': the atoms start at
    :data:`AUTO_START_B` until :meth:`estimate_b_factor` and
    :meth:`set_b_factor`."""

    n_psi = 64              # in-plane angles of the global search (5.6 deg apart)

    def __init__(self, ref_coords: np.ndarray, weights: np.ndarray, vectors: np.ndarray | None,
                 box: int, pixel_size: float, options: AlignOptions | None = None,
                 elements: np.ndarray | None = None, names: np.ndarray | None = None,
                 pseudo_sigma: float | None = None) -> None:
        self.opt = options or AlignOptions()
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
        self._atoms = (np.asarray(ref_coords), weights, vectors, elements, names, pseudo_sigma)
        self.masks = {b: circular_mask(b, o.mask_radius * b, self.device) for b in self.pyramid}
        self.set_b_factor(AUTO_START_B.get(o.atom_model, 0.0) if o.b_factor == "auto"
                          else float(o.b_factor))

    def set_b_factor(self, b_factor: float) -> None:
        """Project the atoms with this B-factor (Å^2) from now on."""
        self.b_factor = float(b_factor)
        self.proj = {b: self._projector(b, self.b_factor) for b in self.pyramid}
        self._refs = None
        self._ring_ncc = None

    def _projector(self, b, b_factor):
        """The projector of the pyramid level ``b`` px (local stamps)."""
        from .scattering import atom_model
        o = self.opt
        coords, weights, vectors, elements, names, pseudo = self._atoms
        w, sigma = atom_model(o.atom_model, weights, elements, names, o.sigma, b_factor,
                              pseudo, self.pixel_size)
        return Projector(coords, w, vectors, b, self.pixel_size * self.box / b, sigma=sigma,
                         device=self.device, radius=5.0)

    def estimate_b_factor(self, images: ImagesT, ctf: CTFParams | None = None,
                          poses: dict | None = None,
                          grid: Sequence[float] | None = None) -> tuple[float, dict]:
        """The B-factor (Å^2) under which the model's projections best match
        ``images`` (B, box, box) with their CTF at their poses (a dict of
        angles, shifts, amplitudes, as :meth:`align` returns; None: aligned
        here first, with the current B): the maximum of the mean normalised
        cross-correlation inside the mask over ``grid`` (core.scattering.
        estimate_b_factor). Returns (B, {B: mean correlation})."""
        from .scattering import estimate_b_factor, projection_scores
        x = self._images(images)
        if poses is None:
            poses = self.align(x, ctf)
        b = self.box
        levels, absctf = self._prepare(x, ctf)
        t = lambda a: torch.as_tensor(np.asarray(a), dtype=torch.float32,  # noqa: E731
                                      device=self.device)
        A = t(rotations.euler_to_matrix(np.asarray(poses["angles"], np.float64)))
        sh, am = t(poses["shifts"]), t(np.asarray(poses["amplitudes"]).reshape(len(x), self.M))

        def score(bf):
            P = self._projector(b, bf)
            return projection_scores(P, levels[b], absctf[b], A, sh, am if self.M else None,
                                     self.masks[b]).mean()
        kw = {} if grid is None else {"grid": grid}
        return estimate_b_factor(score, **kw)

    # ------------------------------------------------------------------
    def _search_amplitudes(self):
        """Amplitudes (S, M) of the deformed references of the global search:
        the reference, +-a along each mode, and the 2^M corners (+-a, ..., +-a)
        (a fixed pseudo-random subset of ``search_corners`` of them when 2^M
        is larger): images deformed along several modes at once find a
        reference near their shape (without the corners, most misses at 64 px
        were such images); then +-a on two modes at once (at most
        ``search_pairs`` of the 2M(M-1) pairs, a fixed pseudo-random subset)."""
        o, M = self.opt, self.M
        amps = [np.zeros(M)]
        if o.search_amplitude > 0 and M:
            for k in range(M):
                for s in (-1, 1):
                    a = np.zeros(M)
                    a[k] = s * o.search_amplitude
                    amps.append(a)
            if M > 1 and o.search_corners > 0:
                rng = np.random.default_rng(0)
                if M < 62:              # corners numbered by their sign bits
                    n = 2 ** M
                    codes = np.arange(n) if n <= o.search_corners else \
                        np.sort(rng.choice(n, o.search_corners, replace=False))
                    signs = ((codes[:, None] >> np.arange(M)) & 1) * 2.0 - 1.0
                else:
                    signs = rng.choice([-1.0, 1.0], (o.search_corners, M))
                amps.extend(signs * o.search_amplitude)
            if M > 1 and o.search_pairs > 0:
                pairs = [(j, k, sj, sk) for j in range(M) for k in range(j + 1, M)
                         for sj in (-1, 1) for sk in (-1, 1)]
                if len(pairs) > o.search_pairs:
                    keep = np.sort(np.random.default_rng(1).choice(len(pairs), o.search_pairs,
                                                                   replace=False))
                    pairs = [pairs[i] for i in keep]
                for j, k, sj, sk in pairs:
                    a = np.zeros(M)
                    a[j], a[k] = sj * o.search_amplitude, sk * o.search_amplitude
                    amps.append(a)
        return np.array(amps)

    def _polar_points(self, b):
        """Pixel offsets (x, y) of the polar samples (rings 1..mask radius px,
        ``n_psi`` angles) and the ring weights (the area element r)."""
        n = self.n_psi
        radii = torch.arange(1, int(self.opt.mask_radius * b) + 1, dtype=torch.float32,
                             device=self.device)
        th = torch.arange(n, dtype=torch.float32, device=self.device) * (2 * math.pi / n)
        pts = torch.stack([radii[:, None] * torch.cos(th), radii[:, None] * torch.sin(th)], -1)
        return pts, radii                                           # (R, n, 2), (R,)

    def _polar(self, images, offsets):
        """Polar samples (B, S, R, n) of images (B, b, b) around centre + offsets
        (B, S, 2) px (bilinear)."""
        b = images.shape[-1]
        pts, _ = self._polar_points(b)
        B, S = offsets.shape[:2]
        p = (offsets[:, :, None, None, :] + pts + b // 2) / (b - 1) * 2 - 1  # align_corners
        g = p.reshape(B, S * pts.shape[0], pts.shape[1], 2)
        out = torch.nn.functional.grid_sample(images[:, None], g, mode="bilinear",
                                              padding_mode="zeros", align_corners=True)
        return out.reshape(B, S, pts.shape[0], pts.shape[1])

    def _reference_bank(self, pool=None):
        """The global search's references, computed once: for every projection
        direction (Fibonacci sphere, ~``angular_step`` apart) and every search
        amplitude, the coarse projection at psi = 0 as angular Fourier
        coefficients of its polar rings (all in-plane angles are then one
        inverse FFT), and its power spectrum (for its norm after any CTF)."""
        if self._refs is not None:
            return self._refs
        o, b = self.opt, self.pyramid[0]
        ang = fibonacci_orientations(o.angular_step)
        dirs = ang[ang[:, 2] == 0][:, :2]                            # (D, 2) rot, tilt
        amps = self._search_amplitudes()                             # (S, M)
        A = torch.as_tensor(rotations.euler_to_matrix(
            np.column_stack([dirs, np.zeros(len(dirs))])), dtype=torch.float32,
            device=self.device)

        def project(a):
            a = torch.as_tensor(a, dtype=torch.float32, device=self.device)
            return self.proj[b](a.expand(len(A), -1) if self.M else None, A)
        imgs = torch.cat(list(map(project, amps) if pool is None else
                              pool.map(project, amps)))                      # (J, b, b)
        coef, power = self._ring_coefficients(imgs)
        bank = coef.permute(2, 1, 0).contiguous()                    # (m, R, J)
        self._refs = (bank, power.T.contiguous(), np.tile(dirs, (len(amps), 1)),
                      np.repeat(amps, len(dirs), 0))
        return self._refs

    def _ring_coefficients(self, imgs):
        """What the searches correlate images with, for references ``imgs``
        (J, b, b) (projections at psi = 0): the angular Fourier coefficients
        of their polar rings (J, R, m), ring weights and conjugate folded in
        (sum_r r I_m(r) conj(R_m(r)) is then a product), and their centred
        power spectra with the rfft2 Parseval weights (J, F) (their norm
        after any |CTF|)."""
        b = imgs.shape[-1]
        zero = torch.zeros(len(imgs), 1, 2, device=self.device)
        _, radii = self._polar_points(b)
        pol = torch.fft.rfft(self._polar(imgs, zero)[:, 0], dim=-1)  # (J, R, m)
        coef = pol.conj() * radii[:, None]
        power = torch.fft.rfft2(imgs).abs().square().flatten(1)     # (J, F)
        power[:, 0] = 0                                              # centred norm
        w = torch.full((b // 2 + 1,), 2.0, device=self.device)      # rfft2 Parseval weights
        w[0] = w[-1] = 1.0
        return coef, (power.view(len(imgs), b, -1) * w).flatten(1)

    def _search_images(self, coarse, absctf):
        """The coarse images as the searches correlate them: masked,
        normalised, filtered by their |CTF|."""
        b = self.pyramid[0]
        x = _normalize_masked(coarse, self.masks[b])
        if absctf is not None:
            x = torch.fft.irfft2(torch.fft.rfft2(x) * absctf, s=(b, b))
        return x

    def _shift_grid(self, half_range):
        """Shifts (G, 2) coarse px of a search: the integer grid within
        +-``half_range`` Å."""
        ps = self.pixel_size * self.box / self.pyramid[0]
        r = int(math.floor(half_range / ps))
        return torch.tensor([(dx, dy) for dx in range(-r, r + 1) for dy in range(-r, r + 1)],
                            dtype=torch.float32, device=self.device)

    def _shifted_rings(self, x, shifts):
        """Angular Fourier coefficients (B, G, R, m) of the polar rings of the
        search images x (B, b, b) centred where a reference shifted by
        ``shifts`` (B, G, 2) px has its centre."""
        # image(x) = P(x + shift): P's centre is at -shift in the image
        return torch.fft.rfft(self._polar(x, -shifts), dim=-1)

    def _psi_degrees(self, index):
        """Euler psi (degrees) of in-plane index ``index`` of a search:
        rotating a reference by psi moves its polar angle theta to theta - psi."""
        return (-index.double() * (360.0 / self.n_psi)) % 360.0

    def _global_search(self, coarse, absctf):
        """Top candidates (angles (B, K, 3), shifts (B, K, 2) px at the coarse
        level, amplitudes (B, K, M)). Score of an image against a reference at
        every in-plane angle and every shift of the grid: the correlation of
        the masked, normalised image filtered by its |CTF| with the reference,
        divided by the norm of the reference filtered by the same |CTF|
        (the normalised cross-correlation of the refinement, without its
        mask on the reference), computed on polar rings: one matrix product
        per angular frequency and one inverse FFT over the in-plane angle.
        The best (angle, shift) of every reference, then the ``n_candidates``
        best references whose orientations are pairwise more than
        ``candidate_separation`` x ``angular_step`` apart, then (with
        ``amplitude_candidates`` > 1) the references of the best one's
        projection direction with the next best ``amplitude_candidates`` - 1
        amplitudes, each at its own best in-plane angle and shift (at low
        SNR the refinement from one amplitude often stops a few degrees off,
        trading rotation against deformation)."""
        o = self.opt
        bank, power, dirs, amps = self._reference_bank()
        B, J, n = coarse.shape[0], bank.shape[-1], self.n_psi
        x = self._search_images(coarse, absctf)
        if absctf is not None:
            norm = (absctf.square().flatten(1) @ power).sqrt_()         # (B, J)
        else:
            norm = power.sum(0).sqrt()[None].expand(B, -1)
        offs = self._shift_grid(o.max_shift)                             # shifts (px)
        S = len(offs)
        pol = self._shifted_rings(x, offs.expand(B, -1, -1))             # (B, S, R, m)
        pol = pol.permute(3, 0, 1, 2).reshape(pol.shape[-1], B * S, -1)  # (m, BS, R)
        best = torch.empty(B * S, J, device=self.device)
        arg = torch.empty(B * S, J, dtype=torch.long, device=self.device)
        # rows per chunk: scores of ~4 MB on CPU (cache), ~256 MB on GPUs
        step = max(1, (1 << (20 if self.device.type == "cpu" else 26)) // (n * J))
        for i in range(0, B * S, step):
            c = torch.fft.irfft(pol[:, i:i + step] @ bank, n=n, dim=0)   # (n, rows, J)
            torch.max(c, 0, out=(best[i:i + step], arg[i:i + step]))
        best, arg = best.view(B, S, J), arg.view(B, S, J)
        score, si = best.max(1)                                       # over shifts
        psi_i = arg.gather(1, si[:, None]).squeeze(1)                 # (B, J)
        score = score / norm.clamp_min(1e-20)
        psi = self._psi_degrees(psi_i)
        K = o.n_candidates
        T = min(J, 64 * K)
        top = score.topk(T, dim=1).indices                            # (B, T) by score
        topi = top.cpu().numpy()
        cand = np.concatenate([dirs[topi], psi.gather(1, top).cpu().numpy()[..., None]], -1)
        q = torch.as_tensor(rotations.euler_to_quaternion(cand.reshape(-1, 3)),
                            dtype=torch.float32, device=self.device).view(B, T, 4)
        cos_half = math.cos(math.radians(o.candidate_separation * o.angular_step) / 2)
        near = (q @ q.transpose(1, 2)).abs() > cos_half              # (B, T, T)
        keep = torch.zeros((B, T), dtype=torch.bool, device=self.device)
        for t in range(T):                                           # greedy, best first
            keep[:, t] = ~(near[:, t, :t] & keep[:, :t]).any(1) & (keep.sum(1) < K)
        # the kept ones in score order, then (if fewer than K) the best others
        order = (~keep).long() * T + torch.arange(T, device=self.device)
        pick = order.argsort(1)[:, :K].cpu().numpy()                  # (B, K) into top
        rows = np.arange(B)[:, None]
        sel = topi[rows, pick]
        shj = si.cpu().numpy()                                        # (B, J) shift index
        sh = offs.cpu().numpy().astype(np.float64)[shj[rows, sel]]
        cand, amp = cand[rows, pick], amps[sel]
        S = len(self._search_amplitudes())
        X = min(o.amplitude_candidates, S) - 1
        if X > 0:
            # the best candidate's projection direction with the next best amplitudes
            D = J // S                                                # j = s * D + d
            same = sel[:, :1] % D + D * np.arange(S)                  # (B, S)
            sc = score.cpu().numpy()[rows, same]
            sc[same == sel[:, :1]] = -np.inf
            extra = same[rows, np.argsort(-sc, 1)[:, :X]]             # (B, X)
            psi_x = psi.cpu().numpy()[rows, extra]
            cand = np.concatenate([cand, np.concatenate([dirs[extra], psi_x[..., None]], -1)], 1)
            sh = np.concatenate([sh, offs.cpu().numpy().astype(np.float64)[shj[rows, extra]]], 1)
            amp = np.concatenate([amp, amps[extra]], 1)
        return cand, sh, amp

    def _cone_tilts(self):
        """Small rotations (D, 3, 3) tilting a projection direction within
        ``cone`` degrees, the identity first: a Fibonacci (sunflower) set on
        the spherical cap of that radius, ~``angular_step`` apart. The
        in-plane angle is not sampled here (all of them are one inverse FFT)."""
        o = self.opt
        cone, step = math.radians(o.cone), math.radians(o.angular_step)
        n = max(1, int(round(2 * math.pi * (1 - math.cos(cone)) / step ** 2)))
        i = np.arange(n)
        theta = cone * np.sqrt(i / max(1, n - 1))
        phi = i * math.pi * (3 - 5 ** 0.5)                           # golden angle
        axes = np.stack([np.cos(phi), np.sin(phi), np.zeros(n)], -1) * theta[:, None]
        from scipy.spatial.transform import Rotation
        return Rotation.from_rotvec(axes).as_matrix()

    def _local_search(self, coarse, absctf, A, shifts):
        """Top candidates around given poses, as :meth:`_global_search`
        returns them (angles (B, K, 3), shifts (B, K, 2) coarse px, amplitudes
        (B, K, M)); A (B, 3, 3) the images' rotations, shifts (B, 2) coarse px.
        References: each image's projection direction tilted within ``cone``
        (:meth:`_cone_tilts`) x the search amplitudes of the global search,
        projected for that image; scored as the global search scores its bank
        (polar rings, every in-plane angle by one inverse FFT, |CTF|-filtered
        normalised cross-correlation) at the in-plane angles whose whole
        rotation stays within the cone of the image's, and at the shifts
        within ``shift_window`` Å of its own. The ``local_candidates`` best
        amplitudes, each at its best orientation and shift (the orientation is
        known within the cone; the shape is what is searched)."""
        o, b, n = self.opt, self.pyramid[0], self.n_psi
        tilts = self._cone_tilts()                                   # (D, 3, 3)
        amps = self._search_amplitudes()                             # (S, M)
        B, D, S = len(A), len(tilts), len(amps)
        E = torch.as_tensor(tilts, dtype=torch.float32, device=self.device)
        Aref = (E[None] @ A[:, None]).reshape(B * D, 3, 3)           # psi 0 of the search
        P = self.proj[b]
        imgs = torch.stack([P(torch.as_tensor(a, dtype=torch.float32, device=self.device)
                              .expand(B * D, -1) if self.M else None, Aref)
                            for a in amps], 1)                       # (BD, S, b, b)
        coef, power = self._ring_coefficients(imgs.reshape(-1, b, b))
        J = D * S                                                    # j = d * S + s
        coef, power = coef.view(B, J, *coef.shape[1:]), power.view(B, J, -1)
        if absctf is not None:
            norm = torch.einsum("bf,bjf->bj", absctf.square().flatten(1), power).sqrt_()
        else:
            norm = power.sum(-1).sqrt()
        grid = self._shift_grid(o.shift_window)
        offs = shifts[:, None] + grid                                # (B, G, 2)
        pol = self._shifted_rings(self._search_images(coarse, absctf), offs)   # (B, G, R, m)
        c = torch.fft.irfft(torch.einsum("bgrm,bjrm->bgjm", pol, coef), n=n, dim=-1)
        # the whole rotation Rz(psi) E_d A stays within the cone of A
        psi = self._psi_degrees(torch.arange(n, device=self.device))
        Rpsi = rotations.euler_to_matrix(np.column_stack([np.zeros((n, 2)), psi.cpu().numpy()]))
        tr = np.einsum("kij,dji->dk", Rpsi, tilts)                    # trace (D, n)
        angle = np.arccos(np.clip((tr - 1) / 2, -1, 1))                    # radians (D, n)
        inside = np.degrees(angle) <= o.cone + 1e-6
        inside = torch.as_tensor(np.repeat(inside, S, 0), device=self.device)   # (J, n)
        c = c.masked_fill(~inside, -float("inf")) / norm.clamp_min(1e-20)[:, None, :, None]
        if o.pose_sigma > 0:
            # the prior of _lm on the rotation from the given pose, weighed against each
            # image's best score (in the units of the score: NCC x _ring_scale)
            ang2 = torch.as_tensor(np.repeat(angle ** 2, S, 0), dtype=c.dtype,
                                   device=self.device)
            k = self._ring_scale()
            w = self._prior_weight(c.amax((1, 2, 3)) / k, b) * k
            c = c - 0.5 * w[:, None, None, None] * ang2
        best, arg = c.max(-1)                                        # (B, G, J) over psi
        score, gi = best.max(1)                                      # (B, J) over shifts
        psi_i = arg.gather(1, gi[:, None]).squeeze(1)                # (B, J)
        score = score.view(B, D, S)
        # the best orientation of each amplitude, then the best amplitudes
        score, dbest = score.max(1)                                  # (B, S)
        K = max(1, min(o.local_candidates, S))
        si = score.topk(K, dim=1).indices                            # (B, K)
        top = dbest.gather(1, si) * S + si                           # into J
        d, si = (top // S).cpu().numpy(), si.cpu().numpy()
        rows = np.arange(B)[:, None]
        ps = psi_i.gather(1, top)
        Rp = rotations.euler_to_matrix(torch.stack(
            [torch.zeros_like(ps), torch.zeros_like(ps), self._psi_degrees(ps)], -1)
            .reshape(-1, 3)).to(torch.float32)
        Ab = Aref.view(B, D, 3, 3)[torch.as_tensor(rows), torch.as_tensor(d)].reshape(-1, 3, 3)
        ang = rotations.matrix_to_euler((Rp.to(self.device) @ Ab).double()).cpu().numpy()
        sh = offs[torch.arange(B, device=self.device)[:, None], gi.gather(1, top)]
        return ang.reshape(B, K, 3), sh.double().cpu().numpy(), amps[si]

    def _refine(self, images, absctf, A0, shifts, amps, level, iters):
        """Adam on 1 - NCC; images (B, b, b); A0 (B, 3, 3); shifts (B, 2) px
        of this level; amps (B, M). Returns refined A, shifts, amps and cost.
        Adam (torch's update, betas 0.9/0.999) with a cosine-annealed step,
        written out: torch.optim costs ~2 s of imports per process and a
        dozen small operations per parameter and step."""
        o = self.opt
        mask = self.masks[level]
        P = self.proj[level]
        qs = 100.0                                                   # amplitude scaling
        params = [torch.zeros(len(A0), 3, device=self.device), shifts.clone(),
                  (amps / qs).clone()]
        lrs = [o.lr_rotation, o.lr_shift, o.lr_amplitude / qs]
        if not self.M:
            params, lrs = params[:2], lrs[:2]
        m1 = [torch.zeros_like(t) for t in params]
        m2 = [torch.zeros_like(t) for t in params]
        target = _normalize_masked(images, mask)

        def cost(w, s, q=None):
            A = torch.linalg.matrix_exp(_skew(w)) @ A0
            model = P(q * qs if self.M else None, A, s)
            if absctf is not None:
                model = torch.fft.irfft2(torch.fft.rfft2(model) * absctf, s=model.shape[-2:])
            return A, 1 - (_normalize_masked(model, mask) * target).sum((-2, -1))

        b1, b2, eps = 0.9, 0.999, 1e-8
        for t in range(iters):
            for p in params:
                p.requires_grad_(True)
            grads = torch.autograd.grad(cost(*params)[1].sum(), params)
            decay = 0.5 * (1 + math.cos(math.pi * t / iters))       # cosine annealing
            c1, c2 = 1 - b1 ** (t + 1), 1 - b2 ** (t + 1)
            with torch.no_grad():
                for p, g, m, v, lr in zip(params, grads, m1, m2, lrs):
                    p.requires_grad_(False)
                    m.mul_(b1).add_(g, alpha=1 - b1)
                    v.mul_(b2).addcmul_(g, g, value=1 - b2)
                    p.addcdiv_(m, (v.sqrt() / math.sqrt(c2)).add_(eps), value=-lr * decay / c1)
        with torch.no_grad():
            for p in params:
                p.requires_grad_(False)
            A, c = cost(*params)
        q = params[2] * qs if self.M else torch.zeros(len(A0), 0, device=self.device)
        return A, params[1], q, c

    def _ring_scale(self):
        """The searches' score (:meth:`_local_search`) of the reference's
        projection against itself: the factor from the normalised
        cross-correlation to that score (a property of the polar sampling,
        the same for every image of the coarse level)."""
        if self._ring_ncc is None:
            b = self.pyramid[0]
            A = torch.eye(3, device=self.device)[None]
            img = self.proj[b](torch.zeros(1, self.M, device=self.device) if self.M else None, A)
            coef, power = self._ring_coefficients(img)
            pol = self._shifted_rings(self._search_images(img, None),
                                      torch.zeros(1, 1, 2, device=self.device))
            c = torch.fft.irfft(torch.einsum("bgrm,jrm->bgjm", pol, coef), n=self.n_psi, dim=-1)
            self._ring_ncc = float(c.max() / power.sum().sqrt())
        return self._ring_ncc

    def _prior_weight(self, ncc, level, blur=0.0):
        """The pose prior's weight (B,) in units of 1 - NCC per rad^2 at
        pyramid ``level``, for images whose best NCC is ``ncc`` (B,);
        ``blur`` (px): the images low-passed by a Gaussian of this std.

        With white Gaussian noise, the likelihood of an image, profiled over
        the model's scale and offset and the noise's variance, is
        -(N / 2) log(1 - NCC^2) nats (N: pixels in the mask), so near the
        optimum one unit of 1 - NCC is worth N NCC / (1 - NCC^2) nats. The
        prior: an isotropic Gaussian on the rotation vector w from the given
        pose whose RMS angle |w| is ``pose_sigma`` (std pose_sigma / sqrt(3)
        per axis), |w|^2 3 / (2 pose_sigma^2) nats. Noisy images (small NCC)
        lean on the given pose, clear ones on themselves; a coarse level
        (fewer pixels) leans more than a fine one, and a low-passed image
        more still (its noise is correlated over ~4 pi blur^2 pixels: N of
        them count as N / (4 pi blur^2) independent ones)."""
        n = self.masks[level].sum() / max(1.0, 4 * math.pi * blur ** 2)
        r = ncc.clamp(0.02, 0.95)
        return 3 * (1 - r.square()) / (n * r * math.radians(self.opt.pose_sigma) ** 2)

    @staticmethod
    def _prior_cost(A, given, weight):
        """The pose prior (B,) in units of 1 - NCC: weight |w|^2 / 2, w the
        rotation vector from the given poses (B, 3, 3) to A (B, 3, 3)."""
        return 0.5 * weight * _matrix_rotvec(A @ given.transpose(1, 2)).square().sum(1)

    def _lm(self, images, absctf, A0, shifts, amps, level, iters, blur=0.0, prior=None):
        """Levenberg-Marquardt on 1 - NCC = |n(model) - n(image)|^2 / 2 (n:
        zero mean and unit norm inside the mask) in the rotation vector
        (composed with A0), the shifts and the amplitudes; images (B, b, b),
        A0 (B, 3, 3), shifts (B, 2) px of this level, amps (B, M). Returns
        refined A, shifts, amps and cost, as :meth:`_refine`.

        The Jacobian of the |CTF|-filtered model: for the shifts and the
        in-plane angle from the model's own image gradient (spectral
        derivatives), for the two tilts and the amplitudes by forward
        differences (one batched projection of every image at each step);
        then through the normalisation. The step d solves (J^T J + lambda
        diag(J^T J)) d = -J^T r per image; d and 2d are tried and the better
        is kept where it lowers the cost (lambda / 3), else the image stays
        (lambda x 4). ``blur`` (px): images and model low-passed by a Gaussian
        of this std (a wider basin for large moves). ``prior`` (B, 3, 3):
        the given poses, with the Gaussian prior of :meth:`_prior_weight` on
        the rotation from them (the cost minimised is then the negative log
        posterior, in units of 1 - NCC; the cost returned stays 1 - NCC)."""
        mask = self.masks[level]
        P = self.proj[level]
        B, M = len(A0), self.M
        dev = self.device
        b = images.shape[-1]
        fy = torch.fft.fftfreq(b, device=dev)[:, None]
        fx = torch.fft.rfftfreq(b, device=dev)[None, :]
        if blur > 0:
            G = torch.exp(-2 * math.pi ** 2 * blur ** 2 * (fx ** 2 + fy ** 2))
            images = torch.fft.irfft2(torch.fft.rfft2(images) * G, s=(b, b))
            absctf = G if absctf is None else absctf * G
        target = _normalize_masked(images, mask).flatten(1)             # (B, n)
        mw, mflat = (mask / mask.sum()).flatten(), mask.flatten()
        kx, ky = fx * (2j * math.pi), fy * (2j * math.pi)
        kx[:, -1] = 0                                                    # Nyquist
        ky[b // 2] = 0
        grid = torch.arange(b, dtype=torch.float32, device=dev) - b // 2
        # forward differences: the two tilts (radians) and the amplitudes
        h = torch.tensor([0.01, 0.01] + [2.0] * M, device=dev)
        nfd = len(h)
        steps = torch.zeros(nfd, 3 + M, device=dev)
        steps[0, 0], steps[1, 1] = h[0], h[1]
        steps[2:, 3:] = torch.diag(h[2:])

        def spectrum(A, s, q, ctf):
            F = torch.fft.rfft2(P(q if M else None, A, s))
            return F if ctf is None else F * ctf

        def state(A, s, q):
            """Spectrum, normalised model (B, n) and the norm before."""
            F = spectrum(A, s, q, absctf)
            m = torch.fft.irfft2(F, s=(b, b)).flatten(1)
            y = (m - (m * mw).sum(1, keepdim=True)) * mflat
            ny = y.norm(dim=1, keepdim=True).clamp_min(1e-12)
            return F, y / ny, ny

        A, s, q = A0, shifts, amps
        F, cur, ny = state(A, s, q)
        cost = 0.5 * (cur - target).square().sum(1)
        if prior is not None:
            wp = self._prior_weight(1 - cost, level, blur)
            total = cost + self._prior_cost(A, prior, wp)
        else:
            total = cost
        lam = torch.full((B,), 1e-2, device=dev)
        rep = lambda t: None if t is None else t.repeat_interleave(nfd, 0)  # noqa: E731
        for _ in range(iters):
            m = torch.fft.irfft2(F, s=(b, b)).flatten(1)
            d = steps.repeat(B, 1)                                       # (B nfd, 3 + M)
            Ap = _rotvec_matrix(d[:, :3]) @ rep(A)
            mp = torch.fft.irfft2(spectrum(Ap, rep(s), rep(q) + d[:, 3:], rep(absctf)),
                                  s=(b, b))
            Jfd = (mp.view(B, nfd, -1) - m[:, None]) / h[:, None]
            # d/d shift: the model's gradient; in-plane angle: (y, -x) . gradient about
            # the centre the rotation turns around
            dx = torch.fft.irfft2(F * kx, s=(b, b))
            dy = torch.fft.irfft2(F * ky, s=(b, b))
            rot = (grid[None, :, None] + s[:, 1, None, None]) * dx - \
                (grid[None, None, :] + s[:, 0, None, None]) * dy
            Jm = torch.cat([Jfd[:, :2], rot.flatten(1)[:, None], dx.flatten(1)[:, None],
                            dy.flatten(1)[:, None], Jfd[:, 2:]], 1)      # (B, 5 + M, n)
            # through the normalisation: dn = (dy - n (n . dy)) / |y|
            Jy = (Jm - (Jm * mw).sum(2, keepdim=True)) * mflat
            J = (Jy - cur[:, None] * (Jy * cur[:, None]).sum(2, keepdim=True)) / ny[:, None]
            # the curvature of 1 - n . t on the unit sphere: NCC J^T J (Gauss-Newton's
            # J^T J overestimates it by 1 / NCC: steps too short on noisy images)
            H = (J @ J.transpose(1, 2)) * (1 - cost).clamp_min(0.05)[:, None, None]
            g = (J * (cur - target)[:, None]).sum(2)
            if prior is not None:
                # the rotation from the given pose after a step d: ~ omega + d
                omega = _matrix_rotvec(A @ prior.transpose(1, 2))
                H[:, :3, :3] += wp[:, None, None] * torch.eye(3, device=dev)
                g[:, :3] += wp[:, None] * omega
            Hd = torch.diagonal(H, dim1=1, dim2=2)
            step = -torch.linalg.solve(H + torch.diag_embed(lam[:, None] * Hd + 1e-9), g)
            A_, s_, q_ = A, s, q
            better = torch.zeros(B, dtype=torch.bool, device=dev)
            for f in (1.0, 2.0):
                At = _rotvec_matrix(f * step[:, :3]) @ A_
                st, qt = s_ + f * step[:, 3:5], q_ + f * step[:, 5:]
                Ft, mt, nt = state(At, st, qt)
                ct = 0.5 * (mt - target).square().sum(1)
                tt = ct if prior is None else ct + self._prior_cost(At, prior, wp)
                ok = tt < total
                A = torch.where(ok[:, None, None], At, A)
                s = torch.where(ok[:, None], st, s)
                q = torch.where(ok[:, None], qt, q)
                F = torch.where(ok[:, None, None], Ft, F)
                cur = torch.where(ok[:, None], mt, cur)
                ny = torch.where(ok[:, None], nt, ny)
                cost = torch.where(ok, ct, cost)
                total = torch.where(ok, tt, total)
                better |= ok
            lam = torch.where(better, lam / 3, lam * 4)
        return A, s, q, cost

    # ------------------------------------------------------------------
    def _workers(self, n):
        """Worker threads for n images on CPU (``threads``; 0: the CPUs this
        process may use)."""
        if self.device.type != "cpu":
            return 1
        t = self.opt.threads or (len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
                                 else os.cpu_count() or 1)
        return max(1, min(int(t), n))

    def _images(self, images):
        x = torch.as_tensor(np.asarray(images), dtype=torch.float32, device=self.device)
        if x.ndim != 3 or x.shape[-1] != self.box or x.shape[-2] != self.box:
            raise InputError(f"images are {tuple(x.shape[1:])}, the reference projects to "
                             f"{self.box}x{self.box}")
        return x

    def _in_workers(self, work, x, ctf, extra=(), bank=True):
        """``work(x, ctf, *extra)`` on the images x (B, box, box) with their
        CTF and per-image arrays ``extra`` (B, ...): on CPU split into 2 parts
        per worker thread, each running torch with one thread; the results
        (dicts of numpy arrays) joined in order. ``bank``: build the global
        search's reference bank first (with the workers)."""
        B = x.shape[0]
        workers = self._workers(B)
        if self.device.type != "cpu":
            if bank:
                self._reference_bank()
            return work(x, ctf, *extra)
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            if workers == 1:
                if bank:
                    self._reference_bank()
                return work(x, ctf, *extra)
            with ThreadPoolExecutor(workers) as pool:
                if bank:
                    self._reference_bank(pool)
                step = max(1, -(-B // (2 * workers)))                 # 2 parts per worker
                parts = [np.arange(i, min(B, i + step)) for i in range(0, B, step)]
                res = list(pool.map(lambda idx: work(
                    x[idx], None if ctf is None else ctf.subset(idx),
                    *[e[idx] for e in extra]), parts))
            return {k: np.concatenate([r[k] for r in res]) for k in res[0]}
        finally:
            torch.set_num_threads(threads)

    def align(self, images: ImagesT, ctf: CTFParams | None = None) -> dict[str, np.ndarray]:
        """Align images (B, box, box) (numpy or torch) with their CTF
        (CTFParams or None): dict of numpy arrays angles (B, 3) degrees,
        shifts (B, 2) px, amplitudes (B, M), cost (B,). Every image's result
        depends on that image alone (not on the others in the batch).

        On CPU the images are aligned by ``threads`` worker threads, a few
        images at a time, each running torch with one thread: a busy core
        then delays only its own images, instead of every operation of every
        image (with torch's own threads each operation waits for all of them,
        measured 3-5x slower on 2 shared cores)."""
        return self._in_workers(self._align, self._images(images), ctf)

    def align_from_poses(self, images: ImagesT, ctf: CTFParams | None, angles: np.ndarray,
                         shifts: np.ndarray) -> dict[str, np.ndarray]:
        """HEMNMA with a local orientation and shift search: as :meth:`align`,
        the global search replaced by a search around each image's own pose
        (angles (B, 3) Xmipp ZYZ degrees, shifts (B, 2) px of the images):
        orientations within ``cone`` degrees of it, shifts within
        ``shift_window`` Å of its own, and all the amplitudes of the global
        search; the ``local_candidates`` best are refined by
        ``local_coarse_iters`` Levenberg-Marquardt iterations at the coarse
        level (:meth:`_lm`; the first two thirds low-passed), the best of them
        by ``local_fine_iters`` at each finer level. Returns the dict of
        :meth:`align`; no reference bank is built."""
        x = self._images(images)
        B = x.shape[0]
        angles = np.asarray(angles, np.float64).reshape(B, 3)
        shifts = np.asarray(shifts, np.float64).reshape(B, 2)
        return self._in_workers(self._align_local, x, ctf, (angles, shifts), bank=False)

    def refine(self, images: ImagesT, ctf: CTFParams | None, angles: np.ndarray,
               shifts: np.ndarray, amplitudes: np.ndarray) -> dict[str, np.ndarray]:
        """Local HEMNMA only: the continuous refinement of :meth:`align`
        (Adam on 1 - NCC of amplitudes, rotation and shifts) started from
        given poses, without the global search (no reference bank).

        images (B, box, box) numpy/torch, ctf CTFParams or None; angles (B, 3)
        Xmipp ZYZ degrees, shifts (B, 2) px of the images, amplitudes (B, M).
        ``refine_coarse_iters`` steps at the coarsest pyramid level (0: none),
        then ``refine_fine_iters`` at each finer level (at the only level when
        the pyramid has one). Returns the dict of :meth:`align`. Every image's
        result depends on that image alone; same worker threads as align."""
        x = self._images(images)
        B = x.shape[0]
        angles = np.asarray(angles, np.float64).reshape(B, 3)
        shifts = np.asarray(shifts, np.float64).reshape(B, 2)
        amplitudes = np.asarray(amplitudes, np.float64).reshape(B, self.M)
        return self._in_workers(self._refine_from, x, ctf, (angles, shifts, amplitudes),
                                bank=False)

    def _prepare(self, x, ctf):
        """Phase-flipped images at each pyramid level, and |CTF| per level."""
        o = self.opt
        if ctf is not None and not o.images_flipped:
            x = phase_flip(x, ctf, self.pixel_size)
        levels = {b: downscale(x, b) for b in self.pyramid}
        absctf = {}
        for b in self.pyramid:
            absctf[b] = None if ctf is None else ctf_image(
                ctf, b, self.pixel_size * self.box / b, device=self.device).abs()
        return levels, absctf

    def _result(self, A, sh, am, cost, B):
        return {"angles": rotations.matrix_to_euler(A.double()).cpu().numpy(),
                "shifts": sh.double().cpu().numpy(),
                "amplitudes": am.double().cpu().numpy().reshape(B, self.M),
                "cost": cost.double().cpu().numpy()}

    def _refine_from(self, x, ctf, angles, shifts, amplitudes):
        o = self.opt
        B = x.shape[0]
        levels, absctf = self._prepare(x, ctf)
        A = torch.as_tensor(rotations.euler_to_matrix(angles), dtype=torch.float32,
                            device=self.device)
        am = torch.as_tensor(amplitudes, dtype=torch.float32, device=self.device)
        steps = [(b, o.refine_fine_iters) for b in self.pyramid[1:]]
        if o.refine_coarse_iters > 0 or len(self.pyramid) == 1:
            steps.insert(0, (self.pyramid[0], o.refine_coarse_iters if len(self.pyramid) > 1
                             else o.refine_fine_iters))
        prev = self.box
        sh = torch.as_tensor(shifts, dtype=torch.float32, device=self.device)
        cost = None
        for b, iters in steps:
            sh = sh * (b / prev)
            A, sh, am, cost = self._refine(levels[b], absctf[b], A, sh, am, b, iters)
            prev = b
        sh = sh * (self.box / prev)
        return self._result(A, sh, am, cost, B)

    def _align(self, x, ctf):
        levels, absctf = self._prepare(x, ctf)
        c0 = self.pyramid[0]
        cand = self._global_search(levels[c0], absctf[c0])
        return self._refine_candidates(levels, absctf, *cand, self.opt.coarse_iters,
                                       self.opt.fine_candidates)

    def _align_local(self, x, ctf, angles, shifts):
        o = self.opt
        levels, absctf = self._prepare(x, ctf)
        c0 = self.pyramid[0]
        t = lambda a: torch.as_tensor(a, dtype=torch.float32, device=self.device)  # noqa: E731
        given = t(rotations.euler_to_matrix(angles))
        cand_ang, cand_sh, cand_amp = self._local_search(levels[c0], absctf[c0], given,
                                                         t(shifts * (c0 / self.box)))
        B, K = cand_ang.shape[:2]
        rep = lambda a: None if a is None else a.repeat_interleave(K, 0)  # noqa: E731
        prior = rep(given) if o.pose_sigma > 0 else None
        A, sh = t(rotations.euler_to_matrix(cand_ang.reshape(-1, 3))), t(cand_sh.reshape(-1, 2))
        am = t(cand_amp.reshape(B * K, self.M))
        blurred = 2 * o.local_coarse_iters // 3
        blur = LOCAL_BLUR / (self.pixel_size * self.box / c0)           # px of the level
        if blurred:
            A, sh, am, _ = self._lm(rep(levels[c0]), rep(absctf[c0]), A, sh, am, c0, blurred,
                                    blur=blur, prior=prior)
        A, sh, am, cost = self._lm(rep(levels[c0]), rep(absctf[c0]), A, sh, am, c0,
                                   o.local_coarse_iters - blurred, prior=prior)
        total = cost
        if prior is not None:
            total = cost + self._prior_cost(A, prior, self._prior_weight(1 - cost, c0))
        pick = torch.arange(B, device=self.device) * K + total.view(B, K).argmin(1)
        A, sh, am, cost = A[pick], sh[pick], am[pick], cost[pick]
        prior = None if prior is None else given
        prev = c0
        for b in self.pyramid[1:]:
            sh = sh * (b / prev)
            A, sh, am, cost = self._lm(levels[b], absctf[b], A, sh, am, b, o.local_fine_iters,
                                       prior=prior)
            prev = b
        return self._result(A, sh * (self.box / prev), am, cost, B)

    def _refine_candidates(self, levels, absctf, cand_ang, cand_sh, cand_amp, coarse_iters,
                           fine_candidates):
        """The continuous refinement of a search's candidates (angles (B, K,
        3), shifts (B, K, 2) coarse px, amplitudes (B, K, M)): all of them
        ``coarse_iters`` steps at the coarse level, then the
        ``fine_candidates`` best ``fine_iters`` steps at each finer level; the
        best -> the dict of :meth:`align`."""
        o = self.opt
        c0 = self.pyramid[0]
        B, K = cand_ang.shape[:2]
        # refine all K candidates at the coarse level
        rep = lambda t: None if t is None else t.repeat_interleave(K, 0)  # noqa: E731
        A0 = torch.as_tensor(rotations.euler_to_matrix(cand_ang.reshape(-1, 3)),
                             dtype=torch.float32, device=self.device)
        sh = torch.as_tensor(cand_sh.reshape(-1, 2), dtype=torch.float32, device=self.device)
        am = torch.as_tensor(cand_amp.reshape(B * K, self.M), dtype=torch.float32,
                             device=self.device)
        A, sh, am, cost = self._refine(rep(levels[c0]), rep(absctf[c0]), A0, sh, am, c0,
                                       coarse_iters)
        F = max(1, min(fine_candidates, K))
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
        return self._result(A, sh, am, cost, B)

"""The pose-aware network's inputs and labels (``train --pose-input``).

Particles of a real data set carry consensus poses (a refinement's angles and
shifts, a few degrees off). The pose-aware network reads each image in the
frame of its consensus pose, so that its task is the deformation (and a small
pose correction), not the pose:

* the image (phase-flipped) moved by its consensus shifts and turned in-plane
  by minus its consensus psi (:func:`canonical_images`): the projection at
  (rot, tilt, 0), centred;
* the reference's projection at that pose, P0, and its derivatives along the
  modes dP/dq_k (forward differences), each filtered by the image's |CTF|
  (a phase-flipped image has the spectrum |CTF| P), projected at the seen size
  directly: the network reads the deformation as the image's difference from
  P0 in the directions dP/dq_k (:class:`PoseReference`, :func:`pose_inputs`);
  the channels are 1 + 1 + M;
* the view: the rows of the rotation matrix at (rot, tilt, 0) (9 numbers),
  given to the MLP beside the trunk's features, with a first estimate of the
  amplitudes: Gauss-Newton steps fitting the image with P and dP/dq_k
  (:func:`linear_estimate`; the channels are then those at the estimate).

Labels (:func:`pose_corrections`): the amplitudes, and the correction that
takes the consensus pose to the labelled one, in the frame the network sees
(a rotation vector in degrees and a shift in px, both turned by minus the
consensus psi). Predicted poses are the consensus pose composed with the
predicted correction (:func:`apply_corrections`).
"""
from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

import numpy as np
import torch

from . import rotations
from .image import downscale, rotate_images
from .projector import fourier_shift, project

if TYPE_CHECKING:
    from ..io.metadata import Table
    from .ctf import CTFParams

__all__ = ["PoseData", "PoseReference", "canonical_images", "view_features", "pose_inputs",
           "pose_corrections", "apply_corrections", "linear_estimate", "N_VIEW", "POSE_COLUMNS"]

N_VIEW = 9                   # view features: the rotation matrix at (rot, tilt, 0)
POSE_COLUMNS = ("angleRot", "angleTilt", "anglePsi")


class PoseReference:
    """The reference the channels P0 and dP/dq_k are projected from: atom
    coordinates (N, 3) Å about the centre, weights (N,), mode vectors (M, N, 3),
    atom sigma (Å). ``step``: the amplitude step of the forward differences
    (the largest atom moves by 0.5 Å)."""

    def __init__(self, coords, weights, vectors, sigma: float = 1.0) -> None:
        t = lambda a: torch.as_tensor(np.asarray(a), dtype=torch.float32)  # noqa: E731
        self.coords, self.weights, self.vectors = t(coords), t(weights), t(vectors)
        self.sigma = float(sigma)
        norms = self.vectors.norm(dim=-1).amax(-1).clamp_min(1e-12)       # (M,)
        self.step = 0.5 / norms

    @property
    def n_modes(self) -> int:
        return int(self.vectors.shape[0])

    def to_payload(self) -> dict:
        """Tensors and numbers for a model file (loads with weights_only)."""
        return {"coords": self.coords.clone(), "weights": self.weights.clone(),
                "vectors": self.vectors.clone(), "sigma": self.sigma}

    @classmethod
    def from_payload(cls, d: dict) -> PoseReference:
        return cls(d["coords"], d["weights"], d["vectors"], float(d["sigma"]))

    def channels(self, canon_rot: torch.Tensor, box: int, pixel_size: float,
                 ctf: CTFParams | None = None,
                 amplitudes: torch.Tensor | None = None) -> torch.Tensor:
        """(B, 1 + M, box, box): P and dP/dq_k (forward differences) of the
        reference deformed by ``amplitudes`` (B, M; None: 0) at rotations
        ``canon_rot`` (B, 3, 3), centred, filtered by |CTF| when ``ctf`` is
        given."""
        dev, B, M = canon_rot.device, canon_rot.shape[0], self.n_modes
        ref, vec = self.coords.to(dev), self.vectors.to(dev)
        step = self.step.to(dev)
        base = ref[None].expand(B, -1, -1) if amplitudes is None else \
            ref + torch.einsum("bm,mnc->bnc", amplitudes.to(ref), vec)     # (B, N, 3)
        sets = [base] + [base + step[k] * vec[k] for k in range(M)]
        c = torch.stack(sets, 1)                                            # (B, S, N, 3)
        S = c.shape[1]
        rot = canon_rot.to(torch.float32)[:, None].expand(B, S, 3, 3).reshape(B * S, 3, 3)
        c = c.reshape(B * S, -1, 3)
        p = project(c, self.weights.to(dev), rot, None, box, pixel_size, self.sigma,
                    radius=5.0).reshape(B, S, box, box)
        out = [p[:, 0]] + [(p[:, 1 + k] - p[:, 0]) / step[k] for k in range(M)]
        out = torch.stack(out, 1)
        if ctf is not None:
            from .ctf import ctf_image
            v = ctf_image(ctf, box, pixel_size, device=dev, dtype=out.dtype).abs()[:, None]
            out = torch.fft.irfft2(torch.fft.rfft2(out) * v, s=out.shape[-2:])
        return out


@dataclasses.dataclass
class PoseData:
    """What the pose-aware network reads beside the images, one row per
    particle: the reference, the consensus poses (angles (n, 3) degrees,
    shifts (n, 2) px), the images' pixel size and CTF (their |CTF| filters
    the reference channels; None: images without CTF)."""
    reference: PoseReference
    angles: np.ndarray
    shifts: np.ndarray
    pixel_size: float
    ctf: CTFParams | None = None

    def subset(self, rows) -> PoseData:
        rows = np.asarray(rows)
        return PoseData(self.reference, np.asarray(self.angles)[rows],
                        np.asarray(self.shifts)[rows], self.pixel_size,
                        None if self.ctf is None else self.ctf.subset(rows))

    def corrections(self, table: Table) -> tuple[np.ndarray, np.ndarray]:
        """The corrections from these poses to ``table``'s (its rows those of
        this PoseData): :func:`pose_corrections`."""
        return pose_corrections(self.angles, self.shifts, table.angles(), table.shifts())


GN_ITERATIONS = 4


def linear_estimate(canon: torch.Tensor, canon_rot: torch.Tensor, reference: PoseReference,
                    pixel_size: float, size: int | None = None, ctf: CTFParams | None = None,
                    iterations: int = GN_ITERATIONS) -> tuple[torch.Tensor, torch.Tensor]:
    """Amplitudes of centred images ``canon`` (B, N, N) at rotations
    ``canon_rot`` by Gauss-Newton steps: each fits the image (seen at
    ``size`` px) as a P + b + sum_k c_k dP/dq_k around the current amplitudes
    (least squares) and moves them by c / a. -> (amplitudes (B, M), the
    channels P, dP/dq_k (B, 1 + M, n, n) at the last amplitudes)."""
    N, B, M = canon.shape[-1], canon.shape[0], reference.n_modes
    n = int(size) if size and size < N else N
    y = downscale(canon, n) if n < N else canon
    q = torch.zeros(B, M, dtype=torch.float64, device=canon.device)
    for it in range(iterations + 1):
        # projected at the seen size directly (the same field: pixel size x N / n)
        ch = reference.channels(canon_rot, n, pixel_size * N / n, ctf, q.to(torch.float32))
        if it == iterations:
            return q.to(torch.float32), ch
        A = torch.cat([ch, torch.ones_like(ch[:, :1])], 1).reshape(B, M + 2, -1)
        A = A.transpose(1, 2).double()
        sol = torch.linalg.lstsq(A, y.reshape(B, -1, 1).double()).solution[:, :, 0]
        a = sol[:, :1]
        a = torch.where(a.abs() < 1e-6, torch.full_like(a, 1e-6), a)
        step = (sol[:, 1:M + 1] / a).nan_to_num(0.0)
        q = q + step


def canonical_images(images: torch.Tensor, angles: np.ndarray,
                     shifts: np.ndarray) -> torch.Tensor:
    """Images (B, N, N) moved by their shifts (Xmipp: image(x) = P(x + shift))
    and turned in-plane by -psi: the projections at (rot, tilt, 0), centred."""
    dev, dt = images.device, images.dtype
    x = fourier_shift(images, torch.as_tensor(np.asarray(shifts), dtype=dt, device=dev))
    return rotate_images(x, -np.asarray(angles, float)[:, 2])


def _canon_angles(angles: np.ndarray) -> np.ndarray:
    a = np.array(angles, float).reshape(-1, 3)
    a[:, 2] = 0.0
    return a


def view_features(angles: np.ndarray) -> np.ndarray:
    """(B, 9): the rotation matrix at (rot, tilt, 0), rows flattened."""
    return rotations.euler_to_matrix(_canon_angles(angles)).reshape(len(angles), 9)


def pose_inputs(images: torch.Tensor, angles: np.ndarray, shifts: np.ndarray,
                reference: PoseReference, pixel_size: float, size: int | None = None,
                ctf: CTFParams | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The network's inputs of phase-flipped ``images`` (B, N, N) at their
    consensus poses: (channels (B, 2 + M, n, n), view (B, 9), amplitudes
    (B, M)): the amplitudes of :func:`linear_estimate`, the centred image
    and the reference's channels at those amplitudes, every channel
    downscaled to ``size`` px (None: N) and normalised (zero mean, unit std)
    per image."""
    N = images.shape[-1]
    canon = canonical_images(images, angles, shifts)
    R = torch.as_tensor(rotations.euler_to_matrix(_canon_angles(angles)), dtype=torch.float32,
                        device=images.device)
    q, ch = linear_estimate(canon, R, reference, pixel_size, size, ctf)
    img = downscale(canon, int(size)) if size and size < N else canon
    x = torch.cat([img[:, None], ch.to(img)], 1)
    mu = x.mean((-2, -1), keepdim=True)
    sd = x.std((-2, -1), keepdim=True).clamp_min(1e-6)
    view = torch.as_tensor(view_features(angles), dtype=x.dtype, device=x.device)
    return (x - mu) / sd, view, q


def _rz(psi: np.ndarray) -> np.ndarray:
    z = np.zeros_like(psi)
    return rotations.euler_to_matrix(np.stack([z, z, psi], -1))


def pose_corrections(cons_angles: np.ndarray, cons_shifts: np.ndarray, angles: np.ndarray,
                     shifts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The correction taking consensus poses to ``angles``/``shifts`` in the
    frame the network sees: (rotation vector (n, 3) degrees, shift (n, 2) px).
    :func:`apply_corrections` inverts it."""
    from scipy.spatial.transform import Rotation
    Ac = rotations.euler_to_matrix(np.asarray(cons_angles, float))
    A = rotations.euler_to_matrix(np.asarray(angles, float))
    psi = np.asarray(cons_angles, float)[:, 2]
    Rz = _rz(psi)
    D = np.einsum("nji,njk,nlk,nlm->nim", Rz, A, Ac, Rz)          # Rz^T A Ac^T Rz
    rv = np.degrees(Rotation.from_matrix(D).as_rotvec())
    ds = np.asarray(shifts, float) - np.asarray(cons_shifts, float)
    return rv, np.einsum("nij,nj->ni", rotations.inplane_rotation_matrix(-psi), ds)


def apply_corrections(cons_angles: np.ndarray, cons_shifts: np.ndarray, rotvec: np.ndarray,
                      dshift: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Consensus poses composed with corrections (:func:`pose_corrections`)
    -> (angles (n, 3) degrees, shifts (n, 2) px)."""
    from scipy.spatial.transform import Rotation
    Ac = rotations.euler_to_matrix(np.asarray(cons_angles, float))
    psi = np.asarray(cons_angles, float)[:, 2]
    Rz = _rz(psi)
    Dc = Rotation.from_rotvec(np.radians(np.asarray(rotvec, float))).as_matrix()
    A = np.einsum("nij,njk,nlk,nlm->nim", Rz, Dc, Rz, Ac)          # Rz Dc Rz^T Ac
    ds = np.einsum("nij,nj->ni", rotations.inplane_rotation_matrix(psi),
                   np.asarray(dshift, float))
    return rotations.matrix_to_euler(A), np.asarray(cons_shifts, float) + ds

"""Rotations in Xmipp's conventions: ZYZ Euler angles, matrices, unit quaternions.

Conventions (checked against ``xmippLib.Euler_angles2matrix`` in the tests):

* Euler angles ``(rot, tilt, psi)`` in degrees, ZYZ, as Xmipp and Scipion store
  them (``_angleRot _angleTilt _anglePsi``).
* ``A = euler_to_matrix(rot, tilt, psi)`` is Xmipp's matrix
  ``A = R_z(psi) R_y(tilt) R_z(rot)`` with Xmipp's sign convention. It maps the
  coordinates ``r`` of the reference (model frame) to the projection frame:
  an atom at ``r`` projects onto the image at ``(A r)[0:2]`` (x, y) and the
  projection direction is ``A[2, :]`` in model coordinates.
* A unit quaternion ``q = (w, x, y, z)`` stands for the matrix ``A`` (active
  rotation of the vector ``r``). It is canonical when ``w > 0`` (ties broken by
  the first non-zero component being positive), since ``q`` and ``-q`` are the
  same rotation.
* The angular distance between two orientations is the paper's: the mean of
  the angles between the three corresponding rotated coordinate axes (rows of
  ``A``, i.e. the image frame's axes seen from the model), in degrees.

Each function accepts numpy arrays or torch tensors of any leading batch shape
and returns the same kind. There is one implementation (torch, differentiable);
numpy inputs go through it in float64.
"""
from __future__ import annotations

import math
from typing import TypeVar

import numpy as np
import torch

__all__ = [
    "euler_to_matrix", "matrix_to_euler", "matrix_to_quaternion",
    "quaternion_to_matrix", "euler_to_quaternion", "quaternion_to_euler",
    "canonical_quaternion", "angular_distance", "random_euler",
    "inplane_rotation_matrix",
]

# numpy in, numpy out; torch in, torch out
ArrayT = TypeVar("ArrayT", np.ndarray, torch.Tensor)


def _as_torch(x):
    """Return (tensor, was_numpy)."""
    if isinstance(x, torch.Tensor):
        return x, False
    return torch.as_tensor(np.asarray(x, dtype=np.float64)), True


def _back(t, was_numpy):
    return t.detach().cpu().numpy() if was_numpy else t


def euler_to_matrix(rot: ArrayT, tilt: ArrayT | None = None,
                    psi: ArrayT | None = None) -> ArrayT:
    """Xmipp ``Euler_angles2matrix``: degrees -> (..., 3, 3).

    Call as ``euler_to_matrix(angles)`` with angles (..., 3) or with three
    arrays ``euler_to_matrix(rot, tilt, psi)``."""
    if tilt is None:
        a, was_np = _as_torch(rot)
        rot, tilt, psi = a[..., 0], a[..., 1], a[..., 2]
    else:
        rot, was_np = _as_torch(rot)
        tilt, _ = _as_torch(tilt)
        psi, _ = _as_torch(psi)
        rot, tilt, psi = torch.broadcast_tensors(rot, tilt.to(rot), psi.to(rot))
    d = math.pi / 180.0
    ca, sa = torch.cos(rot * d), torch.sin(rot * d)
    cb, sb = torch.cos(tilt * d), torch.sin(tilt * d)
    cg, sg = torch.cos(psi * d), torch.sin(psi * d)
    cc, cs = cb * ca, cb * sa
    sc, ss = sb * ca, sb * sa
    row0 = torch.stack([cg * cc - sg * sa, cg * cs + sg * ca, -cg * sb], -1)
    row1 = torch.stack([-sg * cc - cg * sa, -sg * cs + cg * ca, sg * sb], -1)
    row2 = torch.stack([sc, ss, cb], -1)
    return _back(torch.stack([row0, row1, row2], -2), was_np)


def matrix_to_euler(A: ArrayT) -> ArrayT:
    """Rotation matrices (..., 3, 3) -> Xmipp Euler angles (..., 3) in degrees,
    rot and psi in (-180, 180], tilt in [0, 180]. At tilt 0 or 180 (gimbal lock)
    rot is set to 0 and the whole in-plane angle goes to psi."""
    A, was_np = _as_torch(A)
    sb = torch.sqrt(A[..., 0, 2] ** 2 + A[..., 1, 2] ** 2)
    tilt = torch.atan2(sb, A[..., 2, 2])
    rot = torch.atan2(A[..., 2, 1], A[..., 2, 0])
    psi = torch.atan2(A[..., 1, 2], -A[..., 0, 2])
    lock = sb < 1e-6
    # gimbal lock: A = Rz(psi) Ry(tilt) Rz(rot) depends only on psi +- rot
    psi_up = torch.atan2(-A[..., 1, 0], A[..., 0, 0])      # tilt = 0: psi + rot
    psi_down = torch.atan2(A[..., 1, 0], -A[..., 0, 0])    # tilt = 180: psi - rot
    psi_lock = torch.where(A[..., 2, 2] > 0, psi_up, psi_down)
    rot = torch.where(lock, torch.zeros_like(rot), rot)
    psi = torch.where(lock, psi_lock, psi)
    out = torch.stack([rot, tilt, psi], -1) * (180.0 / math.pi)
    return _back(out, was_np)


def canonical_quaternion(q: ArrayT) -> ArrayT:
    """Choose the sign of (..., 4) quaternions so that w > 0 (first non-zero
    component positive on ties) and normalise them."""
    q, was_np = _as_torch(q)
    q = q / torch.linalg.norm(q, dim=-1, keepdim=True).clamp_min(1e-12)
    eps = 1e-9
    sign = torch.ones_like(q[..., 0])
    decided = torch.zeros_like(sign, dtype=torch.bool)
    for i in range(4):
        c = q[..., i]
        this = (~decided) & (c.abs() > eps)
        sign = torch.where(this & (c < 0), -torch.ones_like(sign), sign)
        decided = decided | this
    return _back(q * sign[..., None], was_np)


def matrix_to_quaternion(A: ArrayT) -> ArrayT:
    """(..., 3, 3) -> canonical unit quaternions (..., 4) as (w, x, y, z).

    Uses the numerically stable largest-diagonal branch (Shepperd)."""
    A, was_np = _as_torch(A)
    m00, m11, m22 = A[..., 0, 0], A[..., 1, 1], A[..., 2, 2]
    # four candidate (unnormalised) quaternions, pick the best conditioned one
    qw = torch.stack([1 + m00 + m11 + m22, A[..., 2, 1] - A[..., 1, 2],
                      A[..., 0, 2] - A[..., 2, 0], A[..., 1, 0] - A[..., 0, 1]], -1)
    qx = torch.stack([A[..., 2, 1] - A[..., 1, 2], 1 + m00 - m11 - m22,
                      A[..., 0, 1] + A[..., 1, 0], A[..., 0, 2] + A[..., 2, 0]], -1)
    qy = torch.stack([A[..., 0, 2] - A[..., 2, 0], A[..., 0, 1] + A[..., 1, 0],
                      1 - m00 + m11 - m22, A[..., 1, 2] + A[..., 2, 1]], -1)
    qz = torch.stack([A[..., 1, 0] - A[..., 0, 1], A[..., 0, 2] + A[..., 2, 0],
                      A[..., 1, 2] + A[..., 2, 1], 1 - m00 - m11 + m22], -1)
    cands = torch.stack([qw, qx, qy, qz], -2)              # (..., 4, 4)
    diag = torch.stack([m00 + m11 + m22, m00, m11, m22], -1)
    best = torch.argmax(diag, dim=-1)
    q = torch.gather(cands, -2, best[..., None, None].expand(*best.shape, 1, 4))[..., 0, :]
    return _back(canonical_quaternion(q), was_np)


def quaternion_to_matrix(q: ArrayT) -> ArrayT:
    """(..., 4) quaternions (w, x, y, z; normalised here) -> (..., 3, 3)."""
    q, was_np = _as_torch(q)
    q = q / torch.linalg.norm(q, dim=-1, keepdim=True).clamp_min(1e-12)
    w, x, y, z = q.unbind(-1)
    row0 = torch.stack([1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)], -1)
    row1 = torch.stack([2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)], -1)
    row2 = torch.stack([2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)], -1)
    return _back(torch.stack([row0, row1, row2], -2), was_np)


def euler_to_quaternion(angles: ArrayT) -> ArrayT:
    """Xmipp Euler angles (..., 3) in degrees -> canonical quaternions (..., 4)."""
    return matrix_to_quaternion(euler_to_matrix(angles))


def quaternion_to_euler(q: ArrayT) -> ArrayT:
    """Quaternions (..., 4) -> Xmipp Euler angles (..., 3) in degrees."""
    return matrix_to_euler(quaternion_to_matrix(q))


def angular_distance(A1: ArrayT, A2: ArrayT) -> ArrayT:
    """Mean angle (degrees) between the corresponding rotated axes (rows) of two
    batches of rotation matrices (..., 3, 3). 0 for identical orientations."""
    A1, was_np = _as_torch(A1)
    A2, _ = _as_torch(A2)
    A2 = A2.to(A1)
    cos = (A1 * A2).sum(-1).clamp(-1.0, 1.0)               # (..., 3) row dots
    return _back(torch.rad2deg(torch.acos(cos)).mean(-1), was_np)


def random_euler(n: int,
                 rng: int | np.random.Generator | None = None) -> np.ndarray:
    """``n`` orientations uniform on SO(3), as Xmipp Euler angles (n, 3) in
    degrees: rot, psi uniform in [0, 360), tilt = arccos(U[-1, 1]) in [0, 180]."""
    rng = np.random.default_rng(rng)
    rot = rng.uniform(0.0, 360.0, n)
    tilt = np.degrees(np.arccos(rng.uniform(-1.0, 1.0, n)))
    psi = rng.uniform(0.0, 360.0, n)
    return np.stack([rot, tilt, psi], -1)


def inplane_rotation_matrix(alpha: ArrayT) -> ArrayT:
    """2D rotation matrices (..., 2, 2) for in-plane angles in degrees, in the
    image's (x, y) frame, matching a change of psi by ``alpha``: rotating the
    projection by alpha equals ``euler_to_matrix(rot, tilt, psi + alpha)``."""
    a, was_np = _as_torch(alpha)
    a = torch.deg2rad(a)
    c, s = torch.cos(a), torch.sin(a)
    # Rz(psi) in Xmipp's convention is [[c, s], [-s, c]] in the (x, y) plane
    m = torch.stack([torch.stack([c, s], -1), torch.stack([-s, c], -1)], -2)
    return _back(m, was_np)

"""Rotation conventions against Xmipp's own Euler_angles2matrix / Euler_matrix2angles."""
import numpy as np
import pytest
import torch

from deephemnma.core import rotations as R

from conftest import xmipplib


def _random_angles(n, rng):
    ang = np.column_stack([rng.uniform(-180, 360, n), rng.uniform(0, 180, n),
                           rng.uniform(-180, 360, n)])
    ang[:50, 1] = 0.0        # gimbal lock cases
    ang[50:100, 1] = 180.0
    return ang


def test_matrix_matches_xmipp(rng):
    xm = xmipplib()
    ang = _random_angles(1000, rng)
    ours = R.euler_to_matrix(ang)
    theirs = np.array([xm.Euler_angles2matrix(*a) for a in ang])
    assert np.abs(ours - theirs).max() < 1e-12


def test_matrix_to_euler_round_trip_and_xmipp(rng):
    xm = xmipplib()
    ang = _random_angles(1000, rng)
    A = R.euler_to_matrix(ang)
    back = R.matrix_to_euler(A)
    assert np.abs(R.euler_to_matrix(back) - A).max() < 1e-10
    assert back[:, 1].min() >= 0 and back[:, 1].max() <= 180
    # Xmipp's own inverse gives the same rotation as ours
    xm_ang = np.array([xm.Euler_matrix2angles(a.tolist()) for a in A])
    assert np.abs(R.angular_distance(R.euler_to_matrix(xm_ang), R.euler_to_matrix(back))).max() < 1e-4
    # away from gimbal lock the angles themselves agree (mod 360)
    ok = (back[:, 1] > 1) & (back[:, 1] < 179)
    d = (back[ok] - xm_ang[ok] + 180) % 360 - 180
    assert np.abs(d).max() < 1e-6


def test_quaternion_round_trip_canonical(rng):
    ang = _random_angles(1000, rng)
    A = R.euler_to_matrix(ang)
    q = R.matrix_to_quaternion(A)
    assert np.allclose(np.linalg.norm(q, axis=1), 1)
    assert q[:, 0].min() > -1e-12
    assert np.abs(R.quaternion_to_matrix(q) - A).max() < 1e-10
    assert np.abs(R.quaternion_to_matrix(-q) - A).max() < 1e-10
    assert np.abs(R.euler_to_matrix(R.quaternion_to_euler(q)) - A).max() < 1e-10


def test_paper_quaternion_formula(rng):
    """Supplementary A: q = q_rot (x) q_tilt (x) q_psi (about z, y, z) is the
    active rotation Rz(rot) Ry(tilt) Rz(psi); Xmipp's A is its transpose, so our
    quaternion is its conjugate. (The paper prints the x component as
    -sin(t/2) sin((psi-rot)/2); the Hamilton product gives +: a sign typo.)"""
    ang = _random_angles(200, rng)
    q = R.euler_to_quaternion(ang)
    h = np.radians(ang) / 2
    phi, th, psi = h[:, 0], h[:, 1], h[:, 2]
    active = np.column_stack([np.cos(th) * np.cos(psi + phi), np.sin(th) * np.sin(psi - phi),
                              np.sin(th) * np.cos(psi - phi), np.cos(th) * np.sin(psi + phi)])
    conj = active * np.array([1, -1, -1, -1])
    assert np.abs(R.canonical_quaternion(conj) - q).max() < 1e-9


def test_angular_distance_properties(rng):
    ang = _random_angles(200, rng)
    A = R.euler_to_matrix(ang)
    assert R.angular_distance(A, A).max() < 1e-5
    # a rotation by 10 degrees about the projection axis moves 2 axes by 10, one by 0
    B = R.euler_to_matrix(ang + np.array([0, 0, 10.0]))
    assert np.allclose(R.angular_distance(A, B), 20.0 / 3, atol=1e-6)
    # symmetric, and torch gives the same as numpy
    assert np.allclose(R.angular_distance(A, B), R.angular_distance(B, A))
    t = R.angular_distance(torch.as_tensor(A), torch.as_tensor(B)).numpy()
    assert np.allclose(t, R.angular_distance(A, B))


def test_torch_batched_differentiable():
    ang = torch.tensor([[10.0, 20.0, 30.0], [0.0, 90.0, 45.0]], dtype=torch.float64,
                       requires_grad=True)
    A = R.euler_to_matrix(ang)
    assert A.shape == (2, 3, 3)
    A.sum().backward()
    assert torch.isfinite(ang.grad).all() and ang.grad.abs().sum() > 0


def test_random_euler_uniform_on_sphere():
    ang = R.random_euler(20000, rng=1)
    d = R.euler_to_matrix(ang)[:, 2, :]       # projection directions
    # uniform on the sphere: mean ~0 and each coordinate's variance ~1/3
    assert np.abs(d.mean(0)).max() < 0.02
    assert np.allclose((d ** 2).mean(0), 1 / 3, atol=0.02)


@pytest.mark.parametrize("alpha", [15.0, -70.0, 180.0])
def test_inplane_rotation_is_psi_change(alpha):
    A = R.euler_to_matrix([10.0, 40.0, 30.0])
    B = R.euler_to_matrix([10.0, 40.0, 30.0 + alpha])
    assert np.abs(R.inplane_rotation_matrix(alpha) @ A[:2] - B[:2]).max() < 1e-12

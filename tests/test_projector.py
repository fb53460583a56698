"""Projector conventions against xmippLib's FourierProjector and cisTEM projections."""
import numpy as np
import pytest
import torch

from deephemnma.core.image import downscale, normalize
from deephemnma.core.projector import (Projector, atoms_to_volume, fourier_shift, project,
                                       project_volume)
from deephemnma.core.rotations import euler_to_matrix, random_euler
from deephemnma.core.structure import read_structure
from deephemnma.io.stacks import write_volume

from conftest import shared_file, xmipplib


@pytest.fixture(scope="module")
def ak():
    s = read_structure(shared_file("continuousflex", "AK.pdb"))
    return s.center()[0]


def _corr(a, b):
    return np.corrcoef(np.ravel(a), np.ravel(b))[0, 1]


def test_against_xmipp_fourier_projector(ak, tmp_path):
    """50 random poses with shifts: our atom projection vs xmippLib's projection
    of a volume made from the same atoms, shifted the Xmipp way."""
    xm = xmipplib()
    box, ps, sig = 64, 1.5, 1.5
    vol = atoms_to_volume(torch.tensor(ak.coords), torch.tensor(ak.weights), box, ps, sig)
    write_volume(tmp_path / "ak.mrc", vol.numpy(), ps)
    V = xm.Image(str(tmp_path / "ak.mrc"))
    V.convert2DataType(xm.DT_DOUBLE)
    fp = xm.FourierProjector(V, 2.0, 0.5, 1)
    rng = np.random.default_rng(7)
    ang = random_euler(50, rng)
    ang[:3, 1] = [0.0, 180.0, 90.0]
    sh = rng.uniform(-4, 4, (50, 2))
    ours = project(torch.tensor(ak.coords), torch.tensor(ak.weights),
                   torch.tensor(euler_to_matrix(ang)), torch.tensor(sh), box, ps, sig).numpy()
    corrs = []
    for i in range(50):
        out = xm.Image()
        out.setDataType(xm.DT_DOUBLE)
        fp.projectVolume(out, *ang[i])
        theirs = fourier_shift(torch.tensor(out.getData()[None]),
                               -torch.tensor(sh[i:i + 1]))[0].numpy()
        corrs.append(_corr(ours[i], theirs))
        assert ours[i].sum() == pytest.approx(theirs.sum(), rel=0.02)
    assert min(corrs) >= 0.98, min(corrs)


def test_volume_projection_matches_cistem():
    d = np.load(shared_file("oracles", "cistem_projection.npz"))
    vol = torch.tensor(d["volume"], dtype=torch.float64)
    proj = project_volume(vol, torch.tensor(euler_to_matrix(d["angles"]))).numpy()
    corrs = [_corr(proj[i], d["projections"][i]) for i in range(len(proj))]
    # cisTEM/RELION ZYZ angles are Xmipp's (incl. tilt 0 / 180 cases)
    assert min(corrs) >= 0.98, corrs


def test_shift_convention(ak):
    """A positive shiftX moves the particle towards negative x (Xmipp)."""
    box, ps = 64, 1.0
    A = torch.tensor(euler_to_matrix(np.zeros((2, 3))))
    sh = torch.tensor([[0.0, 0.0], [5.0, 0.0]])
    img = project(torch.tensor(ak.coords), torch.tensor(ak.weights), A, sh, box, ps).numpy()
    x = np.arange(box) - box // 2
    cx = [(im.sum(0) * x).sum() / im.sum() for im in img]
    assert cx[1] - cx[0] == pytest.approx(-5.0, abs=1e-3)
    # and an atom at r lands at N//2 + (A r)_xy / ps - shift
    one = project(torch.tensor([[3.0, -2.0, 7.0]], dtype=torch.float64),
                  torch.ones(1, dtype=torch.float64),
                  torch.tensor(euler_to_matrix([[30.0, 40.0, 50.0]])),
                  torch.tensor([[1.0, 2.0]]), box, ps, sigma=0.5)[0].numpy()
    Ar = euler_to_matrix([30.0, 40.0, 50.0]) @ np.array([3.0, -2.0, 7.0])
    cy, cxx = [(one.sum(a) * x).sum() / one.sum() for a in (1, 0)]
    assert cxx == pytest.approx(Ar[0] - 1.0, abs=5e-3)   # pixel discretisation bias
    assert cy == pytest.approx(Ar[1] - 2.0, abs=5e-3)


def test_gradients():
    torch.manual_seed(0)
    coords = torch.randn(5, 3, dtype=torch.float64) * 4
    w = torch.rand(5, dtype=torch.float64) + 0.5
    vec = torch.randn(2, 5, 3, dtype=torch.float64)
    vec = vec / vec.flatten(1).norm(dim=1)[:, None, None]
    ang = torch.tensor([[20.0, 50.0, 80.0]], dtype=torch.float64, requires_grad=True)
    q = torch.tensor([[1.0, -2.0]], dtype=torch.float64, requires_grad=True)
    sh = torch.tensor([[0.3, -0.7]], dtype=torch.float64, requires_grad=True)

    def f(q, ang, sh):
        P = Projector(coords, w, vec, 12, 1.0, sigma=1.2, dtype=torch.float64)
        return P(q, euler_to_matrix(ang), sh)
    assert torch.autograd.gradcheck(f, (q, ang, sh), eps=1e-6, atol=1e-5)


def test_projector_chunks_and_deformation(ak):
    vec = np.zeros((1,) + ak.coords.shape)
    vec[0, :, 0] = 1 / np.sqrt(len(ak))            # unit-norm rigid x translation
    P = Projector(ak.coords, ak.weights, vec, 32, 2.0, max_batch_elems=10 ** 5)
    amp = torch.tensor([[0.0], [2.0 * np.sqrt(len(ak))]])   # moves atoms by +2 Å = 1 px
    A = torch.eye(3).expand(2, 3, 3)
    img = P(amp, A, torch.zeros(2, 2))
    shifted = P(amp[:1], A[:1], torch.tensor([[-1.0, 0.0]]))
    assert torch.allclose(img[1], shifted[0], atol=1e-4)


def test_downscale_and_normalize(ak):
    big = project(torch.tensor(ak.coords), torch.tensor(ak.weights),
                  torch.eye(3, dtype=torch.float64)[None], None, 128, 0.65)
    small = downscale(big, 64)
    direct = project(torch.tensor(ak.coords), torch.tensor(ak.weights),
                     torch.eye(3, dtype=torch.float64)[None], None, 64, 1.3)
    assert _corr(small, direct) > 0.995
    # downscale keeps pixel values (averages), projections integrate over pixels
    assert float(small.sum()) * 4 == pytest.approx(float(direct.sum()), rel=1e-3)
    n = normalize(torch.randn(3, 64, 64) * 5 + 2)
    assert float(n.mean((-2, -1)).abs().max()) < 1e-5
    assert torch.allclose(n.std((-2, -1)), torch.ones(3), atol=1e-5)


def test_local_volume_equals_dense():
    """atoms_to_volume_local (stamps within 4 sigma) == atoms_to_volume (dense),
    values and gradients, including atoms near and beyond the box edge."""
    from deephemnma.core.projector import atoms_to_volume, atoms_to_volume_local
    g = torch.Generator().manual_seed(0)
    c = ((torch.rand(800, 3, generator=g, dtype=torch.float64) - 0.5) * 90).requires_grad_(True)
    w = torch.rand(800, generator=g, dtype=torch.float64)
    for sigma in (0.8, 2.0, 5.0):
        a = atoms_to_volume(c, w, 40, 2.0, sigma)
        b = atoms_to_volume_local(c, w, 40, 2.0, sigma)
        assert float((a - b).abs().max() / a.abs().max()) < 1e-3
        ga = torch.autograd.grad((a * a).sum(), c)[0]
        gb = torch.autograd.grad((b * b).sum(), c)[0]
        assert float((ga - gb).abs().max() / ga.abs().max()) < 1e-3


def test_local_projection_equals_dense():
    """project(radius=5) (each atom on its nearby pixels, analytic gradient)
    == the dense exact projection: values, and gradients in the coordinates,
    rotations and shifts, for atoms across and beyond the box edge or all
    inside it; gradcheck in float64 over several image chunks."""
    g = torch.Generator().manual_seed(3)
    coords = ((torch.rand(300, 3, generator=g, dtype=torch.float64) - 0.5) * 50)
    w = torch.rand(300, generator=g, dtype=torch.float64) + 0.5
    rot = torch.tensor(euler_to_matrix(random_euler(5, 1)))
    sh = torch.randn(5, 2, generator=g, dtype=torch.float64) * 3
    for box, ps, sigma, scale in ((24, 2.0, 1.0, 1.0), (32, 1.0, 1.5, 1.0), (16, 3.0, 0.7, 1.0),
                                  (48, 1.0, 1.0, 0.3)):          # the last: all inside
        c = (coords * scale).requires_grad_(True)
        r = rot.clone().requires_grad_(True)
        s = sh.clone().requires_grad_(True)
        dense = project(c, w, r, s, box, ps, sigma)
        local = project(c, w, r, s, box, ps, sigma, radius=5.0)
        assert float((dense - local).abs().max() / dense.abs().max()) < 1e-6
        weight = torch.randn(dense.shape, generator=g, dtype=torch.float64)
        gd = torch.autograd.grad((dense * weight).sum(), (c, r, s))
        gl = torch.autograd.grad((local * weight).sum(), (c, r, s))
        for a, b in zip(gd, gl):
            assert float((a - b).abs().max() / a.abs().max()) < 1e-5
    from deephemnma.core.projector import _LocalRender
    u = (torch.rand(3, 7, 2, generator=g, dtype=torch.float64) * 16 - 2).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda u: _LocalRender.apply(u, w[:7], 12, 0.8, 6, 2), (u,))

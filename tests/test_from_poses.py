"""Alignment from the particles' poses (Aligner.align_from_poses, align
--from-poses) and refine from zero amplitudes, on synthetic images with known
parameters."""
import numpy as np
import pytest

from deephemnma.core import rotations as R
from deephemnma.core.align import AlignOptions, Aligner
from deephemnma.core.ctf import CTFParams
from deephemnma.core.metrics import angular_errors
from deephemnma.core.simulate import simulate_to_folder
from deephemnma.io.metadata import read_metadata, write_xmd

from conftest import simulated_particles

BOX, PS = 48, 1.8


@pytest.fixture(scope="module")
def ref(ak_reference):
    return ak_reference


def _data(ref, n, snr, seed):
    return simulated_particles(ref, n, snr, seed, box=BOX, pixel_size=PS)


def _perturb(truth, deg, px, seed=0):
    """Truth's angles rotated by ``deg`` degrees about random axes, shifts
    moved by ``px`` pixels in random directions."""
    from scipy.spatial.transform import Rotation
    rng = np.random.default_rng(seed)
    n = len(truth)
    axis = rng.normal(size=(n, 3))
    axis /= np.linalg.norm(axis, axis=1, keepdims=True)
    dR = Rotation.from_rotvec(axis * np.radians(deg)).as_matrix()
    phi = rng.uniform(0, 2 * np.pi, n)
    return (R.matrix_to_euler(dR @ R.euler_to_matrix(truth.angles())),
            truth.shifts() + px * np.column_stack([np.cos(phi), np.sin(phi)]))


def test_cone_tilts_stay_within_the_cone():
    """The local directions: the identity first, all within the cone, more
    of them for a wider cone or a finer step."""
    al = Aligner(np.zeros((2, 3)), np.ones(2), None, 32, 2.0, AlignOptions(cone=12.0))
    E = al._cone_tilts()
    assert np.allclose(E[0], np.eye(3))
    ang = np.degrees(np.arccos(np.clip((np.trace(E, axis1=1, axis2=2) - 1) / 2, -1, 1)))
    assert ang.max() <= 12.0 + 1e-6 and ang.max() > 6.0
    wide = Aligner(np.zeros((2, 3)), np.ones(2), None, 32, 2.0,
                   AlignOptions(cone=12.0, angular_step=4.0))._cone_tilts()
    assert len(wide) > 3 * len(E)


def test_local_search_finds_the_pose_from_a_5_degree_perturbation(ref):
    """From the truth rotated by 5 deg and shifted by 0.5 px (noisy images,
    no amplitudes known): angles come back within a degree, amplitudes near
    the truth; no reference bank is built; the search's candidates stay
    within the cone of the start."""
    import torch
    s, modes = ref
    imgs, t = _data(ref, 6, 1.0, seed=41)
    angles, shifts = _perturb(t, 5.0, 0.5)
    ctf = CTFParams.from_table(t)
    al = Aligner(s.coords, s.weights, modes.vectors, BOX, PS, AlignOptions(cone=10.0))
    r = al.align_from_poses(imgs, ctf, angles, shifts)
    assert al._refs is None
    ang = angular_errors(r["angles"], t.angles())
    assert np.median(ang) < 1.0 and ang.max() < 2.0, ang
    amp = np.abs(r["amplitudes"] - t["nmaDisplacements"])
    assert np.median(amp) < 10.0, amp                          # amplitudes up to ~150
    assert np.median(np.linalg.norm(r["shifts"] - t.shifts(), axis=1)) < 0.3
    # the candidates of the search: within the cone of the start
    levels, absctf = al._prepare(al._images(imgs), ctf)
    c0 = al.pyramid[0]
    A = torch.as_tensor(R.euler_to_matrix(angles), dtype=torch.float32)
    cand, _, _ = al._local_search(levels[c0], absctf[c0], A,
                                  torch.as_tensor(shifts * c0 / BOX, dtype=torch.float32))
    for k in range(cand.shape[1]):
        assert R.angular_distance(R.euler_to_matrix(cand[:, k]),
                                  R.euler_to_matrix(angles)).max() <= 10.0 + 0.01


def test_levenberg_marquardt_recovers_amplitudes_at_the_true_pose(ref):
    """Noiseless images with CTF at their true orientation and shift, the
    amplitudes started at zero (up to 150 away): a few Levenberg-Marquardt
    iterations at full size bring them within a few units, the orientation
    and shift stay, the cost falls ~100-fold; every column of the Jacobian
    matters (a wrong sign in the image-space derivatives of the shifts and
    the in-plane angle would stall: started 1.5 px and 3 deg off, they come
    back too)."""
    import torch
    s, modes = ref
    imgs, t = _data(ref, 4, None, seed=43)
    ctf = CTFParams.from_table(t)
    al = Aligner(s.coords, s.weights, modes.vectors, BOX, PS, AlignOptions(threads=1))
    levels, absctf = al._prepare(al._images(imgs), ctf)
    f32 = lambda a: torch.as_tensor(np.asarray(a), dtype=torch.float32)  # noqa: E731
    A, sh, truth = f32(R.euler_to_matrix(t.angles())), f32(t.shifts()), t["nmaDisplacements"]
    zero = torch.zeros(4, 3)
    _, _, _, c0 = al._lm(levels[BOX], absctf[BOX], A, sh, zero, BOX, 0)
    A1, sh1, q, c = al._lm(levels[BOX], absctf[BOX], A, sh, zero, BOX, 8)
    assert np.abs(truth).max(1).min() > 50                     # far from the start
    assert np.abs(q.numpy() - truth).max() < 3.0, (q.numpy(), truth)
    assert (c < 0.01).all() and (c0 > 20 * c).all(), (c0, c)
    assert R.angular_distance(A1.double().numpy(), R.euler_to_matrix(t.angles())).max() < 0.3
    assert np.abs(sh1.numpy() - t.shifts()).max() < 0.1
    # started off in plane and in shift too
    Rz = torch.as_tensor(R.euler_to_matrix(np.array([[0.0, 0.0, 3.0]])), dtype=torch.float32)
    A2, sh2, q2, _ = al._lm(levels[BOX], absctf[BOX], Rz @ A, sh + torch.tensor([1.5, -1.0]),
                            zero, BOX, 10)
    assert R.angular_distance(A2.double().numpy(), R.euler_to_matrix(t.angles())).max() < 0.3
    assert np.abs(sh2.numpy() - t.shifts()).max() < 0.1
    assert np.abs(q2.numpy() - truth).max() < 3.0


def test_from_poses_recovers_noiseless_truth_from_10_degrees(ref):
    """Noiseless particles, poses 10 deg and 1 px off, no amplitudes: the
    local search and the Levenberg-Marquardt refinement (defaults) recover
    orientations, shifts and amplitudes."""
    s, modes = ref
    imgs, t = _data(ref, 8, None, seed=44)
    angles, shifts = _perturb(t, 10.0, 1.0, seed=5)
    al = Aligner(s.coords, s.weights, modes.vectors, BOX, PS, AlignOptions(threads=1))
    r = al.align_from_poses(imgs, CTFParams.from_table(t), angles, shifts)
    assert angular_errors(r["angles"], t.angles()).max() < 0.5
    assert np.abs(r["shifts"] - t.shifts()).max() < 0.2
    assert np.abs(r["amplitudes"] - t["nmaDisplacements"]).max() < 5.0, \
        (r["amplitudes"], t["nmaDisplacements"])


def test_rotation_vector_inverts_rodrigues():
    """_matrix_rotvec(_rotvec_matrix(w)) == w for angles up to 170 deg, and
    the angle of the rotation is its norm."""
    import torch
    from deephemnma.core.align import _matrix_rotvec, _rotvec_matrix
    rng = np.random.default_rng(3)
    axis = rng.normal(size=(200, 3))
    axis /= np.linalg.norm(axis, axis=1, keepdims=True)
    w = torch.as_tensor(axis * rng.uniform(0, np.radians(170), (200, 1)))
    w[:3] = torch.as_tensor([[0, 0, 0], [1e-9, 0, 0], [0, 2e-4, -1e-4]])
    back = _matrix_rotvec(_rotvec_matrix(w))
    assert torch.allclose(back, w, atol=1e-7)
    tr = np.trace(_rotvec_matrix(w).numpy(), axis1=1, axis2=2)
    assert np.allclose(np.arccos(np.clip((tr - 1) / 2, -1, 1))[3:], w.norm(dim=1).numpy()[3:])


def test_pose_prior_weight_follows_the_likelihood():
    """The prior's weight against 1 - NCC: smaller for a clearer image
    (higher NCC) and for more pixels (a finer level), larger for a tighter
    prior; zero pose_sigma is no prior (align_from_poses then never builds
    one)."""
    import torch
    def weight(sigma, ncc, level):
        al = Aligner(np.zeros((2, 3)), np.ones(2), None, 64, 2.0,
                     AlignOptions(pose_sigma=sigma, pyramid=(32, 64)))
        return float(al._prior_weight(torch.tensor([ncc]), level)[0])
    assert weight(3.0, 0.1, 32) > weight(3.0, 0.5, 32) > 0
    assert weight(3.0, 0.1, 32) > 3 * weight(3.0, 0.1, 64)
    assert np.isclose(weight(1.5, 0.2, 64), 4 * weight(3.0, 0.2, 64))


def test_search_score_over_ring_scale_is_the_ncc(ref):
    """The local search's polar-ring score divided by _ring_scale is the
    normalised cross-correlation of the refinement (Cartesian, masked), for a
    deformed projection and a noisy one: the prior is weighed in the same
    units in the search and in the refinement."""
    import torch
    from deephemnma.core.align import _normalize_masked
    s, modes = ref
    al = Aligner(s.coords, s.weights, modes.vectors, BOX, PS,
                 AlignOptions(pyramid=(BOX,), threads=1))
    k = al._ring_scale()
    assert 0 < k < 1
    A = torch.as_tensor(R.euler_to_matrix(np.array([[30.0, 70.0, 0.0]])), dtype=torch.float32)
    P = al.proj[BOX]
    refimg = P(torch.zeros(1, 3), A)
    coef, power = al._ring_coefficients(refimg)
    rng = np.random.default_rng(2)
    for q, noise in ((80.0, 0.0), (0.0, 3.0)):
        img = P(torch.tensor([[q, 0.0, 0.0]]), A)
        img = img + noise * img.std() * torch.as_tensor(rng.normal(size=img.shape),
                                                          dtype=torch.float32)
        pol = al._shifted_rings(al._search_images(img, None), torch.zeros(1, 1, 2))
        c = torch.fft.irfft(torch.einsum("bgrm,jrm->bgjm", pol, coef), n=al.n_psi, dim=-1)
        score = float(c[..., 0].max() / power.sum().sqrt())
        ncc = float((_normalize_masked(img, al.masks[BOX])
                     * _normalize_masked(refimg, al.masks[BOX])).sum())
        assert abs(score / k - ncc) < 0.03 + 0.05 * abs(ncc), (score / k, ncc)


def test_pose_prior_keeps_pure_noise_at_the_given_poses(ref):
    """Images of pure noise carry no pose: without a prior the local search
    and refinement wander within the cone; with a 1 deg prior the
    orientations stay at the given ones (the posterior is the prior)."""
    s, modes = ref
    _, t = _data(ref, 8, None, seed=46)
    noise = np.random.default_rng(7).normal(size=(8, BOX, BOX)).astype(np.float32)
    angles, shifts = _perturb(t, 4.0, 0.5, seed=8)
    ctf = CTFParams.from_table(t)
    moved = {}
    for sigma in (0.0, 1.0):
        al = Aligner(s.coords, s.weights, modes.vectors, BOX, PS,
                     AlignOptions(pose_sigma=sigma, threads=1))
        r = al.align_from_poses(noise, ctf, angles, shifts)
        moved[sigma] = angular_errors(r["angles"], angles)
    assert np.median(moved[0.0]) > 4.0, moved
    assert np.median(moved[1.0]) < 1.0 and moved[1.0].max() < 2.5, moved


def test_local_result_of_an_image_does_not_depend_on_its_batch(ref):
    s, modes = ref
    imgs, t = _data(ref, 4, 0.5, seed=42)
    ctf = CTFParams.from_table(t)
    angles, shifts = _perturb(t, 4.0, 0.5, seed=2)
    al = Aligner(s.coords, s.weights, modes.vectors, BOX, PS,
                 AlignOptions(local_coarse_iters=3, local_fine_iters=1, threads=2))
    a = al.align_from_poses(imgs, ctf, angles, shifts)
    al1 = Aligner(s.coords, s.weights, modes.vectors, BOX, PS,
                  AlignOptions(local_coarse_iters=3, local_fine_iters=1, threads=1))
    b = [al1.align_from_poses(imgs[i:i + 2], ctf.subset(np.arange(i, i + 2)), angles[i:i + 2],
                              shifts[i:i + 2]) for i in (0, 2)]
    for k in a:
        assert np.allclose(a[k], np.concatenate([x[k] for x in b]), atol=1e-4), k


# --------------------------------------------------------------------------
# the commands
@pytest.fixture(scope="module")
def folder(ref, tmp_path_factory):
    """6 noiseless particles; start.xmd: their poses rotated by 5 deg, no
    amplitudes (as imported from a consensus refinement)."""
    s, modes = ref
    d = tmp_path_factory.mktemp("poses") / "d"
    simulate_to_folder(d, s, modes, 6, box=BOX, pixel_size=PS, snr=None, seed=5, quiet=True,
                       amplitude_scale=150)
    t = read_metadata(d / "particles.xmd")
    angles, shifts = _perturb(t, 5.0, 0.3, seed=3)
    u = t.copy()
    del u["nmaDisplacements"]
    u["angleRot"], u["angleTilt"], u["anglePsi"] = angles.T
    u["shiftX"], u["shiftY"] = shifts.T
    write_xmd(d / "start.xmd", u)
    return d


def _args(cmd, d, particles, out, *extra):
    return [cmd, "--particles", str(particles), "--modes", str(d), "--structure",
            str(d / "reference.pdb"), "--pixel-size", str(PS), "--out", str(out), *extra]


def test_cli_from_poses_and_refine_from_zero_amplitudes(folder, tmp_path, capsys):
    """align --from-poses on particles with poses and no amplitudes: the
    summary says the local search ran, the result is near the truth; without
    the flag: the global search; refine on them: amplitudes from zero, as the
    summary says, refined away from zero."""
    from deephemnma.cli import main
    truth = read_metadata(folder / "particles.xmd")
    assert main(_args("align", folder, folder / "start.xmd", tmp_path / "a.xmd",
                      "--from-poses", "--cone", "10", "--shift-window", "2")) == 0
    out = capsys.readouterr().out
    assert "local search from the particles' poses" in out and "within 10 deg" in out, out
    a = read_metadata(tmp_path / "a.xmd")
    assert np.median(angular_errors(a.angles(), truth.angles())) < 1.0
    assert np.median(np.abs(a["nmaDisplacements"] - truth["nmaDisplacements"])) < 10.0
    assert main(_args("align", folder, folder / "start.xmd", tmp_path / "g.xmd",
                      "--coarse-iters", "2", "--fine-iters", "2")) == 0
    assert "global orientation and shift search" in capsys.readouterr().out
    assert main(_args("refine", folder, folder / "start.xmd", tmp_path / "r.xmd",
                      "--refine-fine-iters", "4")) == 0
    out = capsys.readouterr().out
    assert "no amplitudes" in out and "started at zero" in out, out
    r = read_metadata(tmp_path / "r.xmd")
    assert r["nmaDisplacements"].shape == (6, 3)
    assert np.isfinite(r["nmaDisplacements"]).all() and np.abs(r["nmaDisplacements"]).max() > 1
    # with amplitudes: no such line
    assert main(_args("refine", folder, folder / "particles.xmd", tmp_path / "r2.xmd",
                      "--refine-fine-iters", "2")) == 0
    assert "started at zero" not in capsys.readouterr().out


@pytest.mark.parametrize("extra,word", [
    (("--cone", "0"), "--cone"), (("--cone", "181"), "--cone"),
    (("--shift-window", "-1"), "--shift-window"), (("--local-candidates", "0"),
                                                   "--local-candidates"),
    (("--local-coarse-iters", "0"), "--local-coarse-iters"),
    (("--local-fine-iters", "0"), "--local-fine-iters"),
    (("--pose-sigma", "-1"), "--pose-sigma")])
def test_cli_bad_local_options(folder, tmp_path, capsys, extra, word):
    """A bad local-search option: exit 2, one line naming it, nothing written;
    the same value without --from-poses is not checked (not used)."""
    from deephemnma.cli import main
    capsys.readouterr()
    assert main(_args("align", folder, folder / "start.xmd", tmp_path / "o" / "a.xmd",
                      "--from-poses", *extra)) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and word in err[0] and "Traceback" not in err[0], err
    assert not (tmp_path / "o").exists()
    from deephemnma.cli import build_parser
    from deephemnma.commands import align as align_cmd
    cfg = align_cmd.config(build_parser().parse_args(
        _args("align", folder, folder / "start.xmd", tmp_path / "b.xmd", *extra)))
    cfg.validate_options()


def test_cli_from_poses_needs_angles(folder, tmp_path, capsys):
    from deephemnma.cli import main
    t = read_metadata(folder / "start.xmd")
    del t["angleRot"]
    t.root = str(folder)
    write_xmd(tmp_path / "noangles.xmd", t)
    capsys.readouterr()
    assert main(_args("align", folder, tmp_path / "noangles.xmd", tmp_path / "o" / "a.xmd",
                      "--from-poses")) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "angleRot" in err[0] and "--from-poses" in err[0], err
    assert not (tmp_path / "o").exists()

"""Embedded HEMNMA alignment on synthetic images with known parameters."""
import numpy as np
import pytest

from deephemnma.core.align import AlignOptions, Aligner, fibonacci_orientations
from deephemnma.core.ctf import CTFParams
from deephemnma.core.metrics import angular_errors
from deephemnma.core.simulate import simulate, simulate_to_folder
from deephemnma.errors import InputError
from deephemnma.io.metadata import read_metadata
from deephemnma.io.stacks import open_stack, write_stack

from conftest import simulated_particles

BOX, PS = 48, 1.8


@pytest.fixture(scope="module")
def ref(ak_reference):
    return ak_reference


def _data(ref, n, snr, seed):
    return simulated_particles(ref, n, snr, seed, box=BOX, pixel_size=PS)


def _opts(**kw):
    return AlignOptions(angular_step=15.0, coarse_iters=30, fine_iters=20, **kw)


def test_orientation_grid_covers_so3():
    ang = fibonacci_orientations(15.0)
    from deephemnma.core.rotations import euler_to_matrix, random_euler
    probe = euler_to_matrix(random_euler(200, 0))
    grid = euler_to_matrix(ang)
    # every random orientation has a grid point within ~ the step
    # geodesic distance from each probe to its nearest grid rotation
    tr = np.einsum("gij,pij->pg", grid, probe)           # trace(G^T P)
    d = np.degrees(np.arccos(np.clip((tr.max(1) - 1) / 2, -1, 1)))
    assert d.max() < 15.0


def test_global_search_candidates_are_distinct_poses(ref):
    """The refined candidates differ in orientation by more than
    candidate_separation x angular_step (near-duplicates of the best pose would
    crowd out the second basin); without separation they crowd; the true pose
    is among them for noiseless images."""
    import torch
    from deephemnma.core.image import downscale
    from deephemnma.core.rotations import euler_to_matrix
    s, modes = ref
    imgs, t = _data(ref, 6, None, seed=12)

    def candidates(**kw):
        al = Aligner(s.coords, s.weights, modes.vectors, BOX, PS, _opts(**kw))
        coarse = downscale(torch.as_tensor(imgs), al.pyramid[0])
        return al._global_search(coarse, None)[0]                   # (B, K, 3)

    def pair_min(ang):
        A = euler_to_matrix(ang.reshape(-1, 3)).reshape(len(ang), -1, 3, 3)
        tr = np.einsum("bkij,blij->bkl", A, A)
        d = np.degrees(np.arccos(np.clip((tr - 1) / 2, -1, 1)))
        d[:, np.arange(d.shape[1]), np.arange(d.shape[1])] = np.inf
        return d.min((1, 2))
    apart = candidates(n_candidates=4)
    assert (pair_min(apart) > 1.5 * 15.0).all()
    crowded = candidates(n_candidates=4, candidate_separation=0.0)
    assert (pair_min(crowded) < 15.0).any()
    truth = euler_to_matrix(t.angles())
    tr = np.einsum("bij,bkij->bk", truth, euler_to_matrix(apart.reshape(-1, 3)).reshape(
        len(apart), -1, 3, 3))
    nearest = np.degrees(np.arccos(np.clip((tr - 1) / 2, -1, 1))).min(1)
    assert (nearest < 15.0).all()


def test_noiseless_recovery(ref):
    s, modes = ref
    imgs, t = _data(ref, 8, None, seed=11)
    al = Aligner(s.coords, s.weights, modes.vectors, BOX, PS, _opts())
    r = al.align(imgs, CTFParams.from_table(t))
    ang = angular_errors(r["angles"], t.angles())
    assert np.median(ang) < 1.0 and (ang < 3).mean() >= 7 / 8
    ok = ang < 3
    assert np.median(np.abs(r["amplitudes"] - t["nmaDisplacements"])[ok]) < 10
    assert np.median(np.abs(r["shifts"] - t.shifts())[ok]) * PS < 0.3
    assert np.median(r["cost"]) < 0.02


def test_noisy_recovery(ref):
    s, modes = ref
    imgs, t = _data(ref, 8, 0.3, seed=12)
    al = Aligner(s.coords, s.weights, modes.vectors, BOX, PS, _opts())
    r = al.align(imgs, CTFParams.from_table(t))
    ang = angular_errors(r["angles"], t.angles())
    assert np.median(ang) < 5.0
    err = np.abs(r["amplitudes"] - t["nmaDisplacements"])
    spread = np.abs(t["nmaDisplacements"] - t["nmaDisplacements"].mean(0)).mean()
    assert np.median(err) < spread          # better than predicting the mean


def test_bad_input(ref):
    s, modes = ref
    with pytest.raises(InputError, match="atoms"):
        Aligner(s.coords[:100], s.weights[:100], modes.vectors, BOX, PS)
    al = Aligner(s.coords, s.weights, modes.vectors, BOX, PS, _opts())
    with pytest.raises(InputError, match="images are"):
        al.align(np.zeros((2, 64, 64), np.float32))


def test_cli_resume_and_corrupt_image(ref, tmp_path, monkeypatch):
    from deephemnma.cli import main
    import deephemnma.core.align as core_align
    s, modes = ref
    simulate_to_folder(tmp_path / "d", s, modes, 6, box=BOX, pixel_size=PS, snr=None, seed=3,
                       quiet=True, amplitude_scale=150)
    # corrupt image 3 in the stack
    st = np.array(open_stack(tmp_path / "d" / "particles.mrcs")[:])
    st[2] = np.nan
    write_stack(tmp_path / "d" / "particles.mrcs", st, PS)
    args = ["align", "--particles", str(tmp_path / "d" / "particles.xmd"),
            "--modes", str(tmp_path / "d"), "--structure", str(tmp_path / "d" / "reference.pdb"),
            "--pixel-size", str(PS), "--out", str(tmp_path / "a.xmd"), "--chunk", "2",
            "--angular-step", "20", "--coarse-iters", "10", "--fine-iters", "5"]
    real = core_align.Aligner.align
    calls = {"n": 0}

    def flaky(self, *a, **k):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return real(self, *a, **k)
    monkeypatch.setattr(core_align.Aligner, "align", flaky)
    assert main(args) == 130
    assert not (tmp_path / "a.xmd").exists()
    assert len(list((tmp_path / "a.xmd.parts").glob("*.npz"))) == 1
    monkeypatch.setattr(core_align.Aligner, "align", real)
    assert main(args) == 0
    out = read_metadata(tmp_path / "a.xmd")
    assert list(out["itemId"]) == [1, 2, 4, 5, 6]            # input order, image 3 skipped
    assert read_metadata(tmp_path / "a.rejected.xmd")["itemId"].tolist() == [3]
    for c in ("angleRot", "shiftX", "nmaDisplacements", "cost"):
        assert c in out
    assert out["nmaDisplacements"].shape == (5, 3)
    bad = args[:]
    bad[bad.index("--pixel-size") + 1] = "0.3"
    bad[bad.index("--out") + 1] = str(tmp_path / "b.xmd")
    assert main(bad) == 2


def test_torchrun_two_processes_equal_single(ref, tmp_path):
    """The same command under torchrun (2 CPU processes, gloo) shards the chunks
    and merges them in input order: identical to a single-process run."""
    import os
    import subprocess
    import sys
    s, modes = ref
    simulate_to_folder(tmp_path / "d", s, modes, 6, box=BOX, pixel_size=PS, snr=None, seed=5,
                       quiet=True, amplitude_scale=150)
    common = ["align", "--particles", str(tmp_path / "d" / "particles.xmd"),
              "--modes", str(tmp_path / "d"), "--structure", str(tmp_path / "d" / "reference.pdb"),
              "--pixel-size", str(PS), "--chunk", "2", "--angular-step", "20",
              "--coarse-iters", "10", "--fine-iters", "5", "--device", "cpu"]
    env = dict(os.environ, OMP_NUM_THREADS="1", DEEPHEMNMA_QUIET="1")
    subprocess.run([sys.executable, "-m", "deephemnma"] + common + ["--out", str(tmp_path / "a.xmd")],
                   env=env, check=True, capture_output=True, timeout=300)
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                        "--master_port", "29517", "-m", "deephemnma"] + common +
                       ["--out", str(tmp_path / "b.xmd")], env=env, capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    a, b = read_metadata(tmp_path / "a.xmd"), read_metadata(tmp_path / "b.xmd")
    assert list(a["itemId"]) == list(b["itemId"]) == [1, 2, 3, 4, 5, 6]
    for c in ("angleRot", "angleTilt", "anglePsi", "shiftX", "shiftY", "cost"):
        assert np.allclose(a[c], b[c], atol=1e-4), c
    assert np.allclose(a["nmaDisplacements"], b["nmaDisplacements"], atol=1e-3)
    assert not (tmp_path / "b.xmd.parts").exists()


def test_search_amplitudes_reference_axes_and_corners(ref):
    """The deformed references of the global search: the reference, +-a on
    each mode, and the 2^M corners (+-a, ..., +-a), or a fixed subset of
    ``search_corners`` distinct corners when 2^M is larger."""
    s, modes = ref
    a = Aligner(s.coords, s.weights, modes.vectors, BOX, PS, _opts())._search_amplitudes()
    assert a.shape == (1 + 6 + 8, 3) and len(np.unique(a, axis=0)) == 15
    assert (np.abs(a[7:]) == 150).all()                                # corners
    none = Aligner(s.coords, s.weights, modes.vectors, BOX, PS, _opts(search_corners=0))
    assert none._search_amplitudes().shape == (7, 3)
    six = np.concatenate([modes.vectors] * 2)                          # 6 modes
    al = Aligner(s.coords, s.weights, six, BOX, PS, _opts(search_corners=10))
    a6 = al._search_amplitudes()
    assert a6.shape == (1 + 12 + 10, 6) and len(np.unique(a6[13:], axis=0)) == 10
    assert np.array_equal(a6, al._search_amplitudes())                 # deterministic


def test_search_pairs(ref):
    """``search_pairs``: after the corners, +-a on two modes at once, the others
    at 0 (all 12 of 3 modes; a fixed subset of distinct ones when fewer)."""
    s, modes = ref
    base = Aligner(s.coords, s.weights, modes.vectors, BOX, PS, _opts())._search_amplitudes()
    a = Aligner(s.coords, s.weights, modes.vectors, BOX, PS,
                _opts(search_pairs=12))._search_amplitudes()
    assert np.array_equal(a[:15], base) and a.shape == (27, 3)
    assert ((a[15:] != 0).sum(1) == 2).all() and (np.abs(a[15:]).max(1) == 150).all()
    assert len(np.unique(a, axis=0)) == 27                             # the whole 3^3 grid
    five = Aligner(s.coords, s.weights, modes.vectors, BOX, PS,
                   _opts(search_pairs=5))._search_amplitudes()
    assert five.shape == (20, 3) and len(np.unique(five, axis=0)) == 20


def test_amplitude_candidates_share_the_best_direction(ref):
    """``amplitude_candidates`` 3: after the n_candidates separated ones, the
    best candidate's projection direction with two other amplitudes, the
    best-scoring ones there (a noiseless image of the far end of the
    helix: the reference deformed along modes 7 and 9 scores next)."""
    import torch
    from deephemnma.core.image import downscale
    from deephemnma.core.projector import Projector
    from deephemnma.core.rotations import euler_to_matrix
    s, modes = ref
    al = Aligner(s.coords, s.weights, modes.vectors, BOX, PS,
                 _opts(search_pairs=12, amplitude_candidates=3))
    one = Aligner(s.coords, s.weights, modes.vectors, BOX, PS, _opts(search_pairs=12))
    _, _, dirs, amps = al._reference_bank()
    ang = np.array([[dirs[5, 0], dirs[5, 1], 30.0]])
    P = Projector(s.coords, s.weights, modes.vectors, BOX, PS)
    img = P(torch.tensor([[-200.0, 0.0, -200.0]]),
            torch.tensor(euler_to_matrix(ang), dtype=torch.float32))
    x = downscale(img, al.pyramid[0])
    cand, sh, amp = al._global_search(x, None)
    c1, s1, a1 = one._global_search(x, None)
    K = al.opt.n_candidates
    assert cand.shape == (1, K + 2, 3) and amp.shape == (1, K + 2, 3)
    assert np.array_equal(cand[:, :K], c1) and np.array_equal(amp[:, :K], a1)
    assert np.allclose(cand[0, K:, :2], cand[0, 0, :2])                # same direction
    assert len(np.unique(amp[0, [0, K, K + 1]], axis=0)) == 3          # other amplitudes
    assert np.array_equal(amp[0, 0], [-150, 0, -150])
    assert angular_errors(cand[0, :1], ang)[0] < 360 / 64


def test_search_finds_inplane_angle(ref):
    """Projections of the undeformed reference at bank directions with random
    in-plane angles and shifts: the best candidate of the polar search has
    the right psi (within one polar step, 360/64 deg) and the right shift."""
    import torch
    from deephemnma.core.image import downscale
    from deephemnma.core.projector import Projector
    from deephemnma.core.rotations import euler_to_matrix
    s, modes = ref
    al = Aligner(s.coords, s.weights, modes.vectors, BOX, PS, _opts(max_shift=4.0))
    _, _, dirs, amps = al._reference_bank()                            # shifts of +-1 px (3.6 Å)
    rng = np.random.default_rng(4)
    j = rng.choice(np.nonzero((amps == 0).all(1))[0], 6, replace=False)
    ang = np.column_stack([dirs[j], rng.uniform(0, 360, 6)])
    shift = rng.integers(-1, 2, (6, 2)).astype(float)                   # coarse px
    P = Projector(s.coords, s.weights, None, BOX, PS)
    imgs = P(None, torch.tensor(euler_to_matrix(ang), dtype=torch.float32),
             torch.tensor(shift * 2, dtype=torch.float32))
    cand, sh, _ = al._global_search(downscale(imgs, al.pyramid[0]), None)
    err = angular_errors(cand[:, 0], ang)
    assert (err < 360 / 64).all(), err
    assert np.array_equal(sh[:, 0], shift)


def test_result_of_an_image_does_not_depend_on_its_batch(ref):
    """Every image's result depends on that image alone: aligned in one batch
    of 6 with 2 worker threads, or as two batches of 3 with one thread."""
    s, modes = ref
    imgs, t = _data(ref, 6, 0.5, seed=21)
    ctf = CTFParams.from_table(t)
    fast = dict(angular_step=20.0, coarse_iters=8, fine_iters=4)
    whole = Aligner(s.coords, s.weights, modes.vectors, BOX, PS,
                    AlignOptions(threads=2, **fast)).align(imgs, ctf)
    one = Aligner(s.coords, s.weights, modes.vectors, BOX, PS, AlignOptions(threads=1, **fast))
    parts = [one.align(imgs[i:i + 3], ctf.subset(np.arange(i, i + 3))) for i in (0, 3)]
    for k in ("angles", "shifts", "amplitudes", "cost"):
        assert np.allclose(whole[k], np.concatenate([p[k] for p in parts]), atol=1e-3), k


def test_images_deformed_along_several_modes(ref):
    """Noiseless images deformed along modes 7 and 9 at once (the helix's far
    end, where most misses of a search with references deformed along one
    mode at a time were): aligned within 1.5 deg and 15 amplitude units."""
    from deephemnma.core.simulate import helix_amplitudes
    s, modes = ref
    amps = helix_amplitudes(np.linspace(0.8, 1.0, 6), 200.0)
    ch = list(simulate(s.coords, s.weights, modes.vectors, 6, box=BOX, pixel_size=PS, snr=None,
                       seed=8, amplitudes=amps))
    imgs, t = ch[0][1], ch[0][2]
    al = Aligner(s.coords, s.weights, modes.vectors, BOX, PS, _opts())
    r = al.align(imgs, CTFParams.from_table(t))
    # measured: <= 0.7 deg and 6 amplitude units (without the corner references
    # of the search, search_corners=0: 2.4 deg and 44)
    assert angular_errors(r["angles"], t.angles()).max() < 1.5
    assert np.abs(r["amplitudes"] - amps).max() < 15


def test_rigid_reference_without_modes(ref):
    """No modes (vectors None): rigid alignment, amplitudes of shape (B, 0)."""
    s, modes = ref
    ch = list(simulate(s.coords, s.weights, modes.vectors, 3, box=BOX, pixel_size=PS, snr=None,
                       seed=2, amplitudes=np.zeros((3, 3))))
    imgs, t = ch[0][1], ch[0][2]
    r = Aligner(s.coords, s.weights, None, BOX, PS, _opts()).align(imgs, CTFParams.from_table(t))
    assert r["amplitudes"].shape == (3, 0)
    assert angular_errors(r["angles"], t.angles()).max() < 1.0

"""Local HEMNMA refinement (Aligner.refine, the refine stage and command) on
synthetic images with known parameters."""
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


def perturb(truth, deg, px, amp, seed=0):
    """Truth's angles rotated by ``deg`` degrees about random axes, shifts
    moved by ``px`` pixels in random directions, amplitudes by +-``amp``."""
    from scipy.spatial.transform import Rotation
    rng = np.random.default_rng(seed)
    n = len(truth)
    axis = rng.normal(size=(n, 3))
    axis /= np.linalg.norm(axis, axis=1, keepdims=True)
    dR = Rotation.from_rotvec(axis * np.radians(deg)).as_matrix()
    angles = R.matrix_to_euler(dR @ R.euler_to_matrix(truth.angles()))
    phi = rng.uniform(0, 2 * np.pi, n)
    shifts = truth.shifts() + px * np.column_stack([np.cos(phi), np.sin(phi)])
    q = truth["nmaDisplacements"]
    amps = q + amp * rng.choice([-1.0, 1.0], q.shape)
    return angles, shifts, amps


def test_refine_brings_a_perturbed_start_back_to_the_truth(ref):
    """From the truth perturbed by 4 deg, 1 px and 25 amplitude units (noisy
    images): angles, shifts and amplitudes come back close to the truth, far
    closer than the start; no reference bank is built (no global search)."""
    s, modes = ref
    imgs, t = _data(ref, 8, 1.0, seed=31)
    start = perturb(t, 4.0, 1.0, 25.0)
    al = Aligner(s.coords, s.weights, modes.vectors, BOX, PS, AlignOptions())
    r = al.refine(imgs, CTFParams.from_table(t), *start)
    assert al._refs is None
    ang0 = angular_errors(start[0], t.angles())
    ang = angular_errors(r["angles"], t.angles())
    assert np.median(ang) < 0.8 and ang.max() < 1.5 and np.median(ang) < np.median(ang0) / 4
    amp = np.abs(r["amplitudes"] - t["nmaDisplacements"])
    assert np.median(amp) < 6.0, amp                         # from 25
    sh = np.linalg.norm(r["shifts"] - t.shifts(), axis=1)
    assert np.median(sh) < 0.15, sh                            # px, from 1
    assert r["cost"].shape == (8,) and np.isfinite(r["cost"]).all()
    # at the full size only (refine_coarse_iters 0): also converges from here
    al2 = Aligner(s.coords, s.weights, modes.vectors, BOX, PS,
                  AlignOptions(refine_coarse_iters=0, refine_fine_iters=25))
    r2 = al2.refine(imgs, CTFParams.from_table(t), *start)
    assert np.median(angular_errors(r2["angles"], t.angles())) < 1.0


def test_refine_result_of_an_image_does_not_depend_on_its_batch(ref):
    """Refined in one batch of 6 with 2 worker threads, or as two batches of
    3 with one thread: the same results."""
    s, modes = ref
    imgs, t = _data(ref, 6, 0.5, seed=21)
    ctf = CTFParams.from_table(t)
    start = perturb(t, 3.0, 0.5, 10.0, seed=1)
    fast = dict(refine_fine_iters=8, refine_coarse_iters=4)
    whole = Aligner(s.coords, s.weights, modes.vectors, BOX, PS,
                    AlignOptions(threads=2, **fast)).refine(imgs, ctf, *start)
    one = Aligner(s.coords, s.weights, modes.vectors, BOX, PS, AlignOptions(threads=1, **fast))
    parts = [one.refine(imgs[i:i + 3], ctf.subset(np.arange(i, i + 3)),
                        *[a[i:i + 3] for a in start]) for i in (0, 3)]
    for k in ("angles", "shifts", "amplitudes", "cost"):
        assert np.allclose(whole[k], np.concatenate([p[k] for p in parts]), atol=1e-4), k


# --------------------------------------------------------------------------
# the command
@pytest.fixture(scope="module")
def folder(ref, tmp_path_factory):
    """6 noiseless particles whose metadata carry the true poses (a start)."""
    s, modes = ref
    d = tmp_path_factory.mktemp("refine") / "d"
    simulate_to_folder(d, s, modes, 6, box=BOX, pixel_size=PS, snr=None, seed=3, quiet=True,
                       amplitude_scale=150)
    return d


def _args(d, particles, out, *extra):
    return ["refine", "--particles", str(particles), "--modes", str(d), "--structure",
            str(d / "reference.pdb"), "--pixel-size", str(PS), "--out", str(out), "--chunk", "2",
            "--refine-fine-iters", "4", *extra]


def test_cli_bad_inputs(folder, tmp_path, capsys):
    """Particles without angles, amplitudes for other modes, zero steps:
    exit 2, one line naming the problem, nothing written (particles without
    amplitudes start from zero: tests/test_from_poses.py)."""
    from deephemnma.cli import main
    t = read_metadata(folder / "particles.xmd")
    cases = []
    for name, drop in (("noangles", ("angleRot",)),):
        u = t.copy()
        for c in drop:
            del u[c]
        u.root = str(folder)
        write_xmd(tmp_path / f"{name}.xmd", u)
        cases.append((_args(folder, tmp_path / f"{name}.xmd", tmp_path / "o" / "r.xmd"),
                      drop[0]))
    cases.append((_args(folder, folder / "particles.xmd", tmp_path / "o" / "r.xmd",
                        "--mode-list", "7-8"), "2 modes"))
    cases.append((_args(folder, folder / "particles.xmd", tmp_path / "o" / "r.xmd",
                        "--refine-fine-iters", "0"), "--refine-fine-iters"))
    for argv, word in cases:
        before = sorted(p.name for p in tmp_path.iterdir())
        capsys.readouterr()
        assert main(argv) == 2, argv
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and word in err[0] and "Traceback" not in err[0], err
        assert sorted(p.name for p in tmp_path.iterdir()) == before
        assert not (tmp_path / "o").exists()


def test_cli_nan_row_rejected_alone_and_resume(folder, tmp_path, monkeypatch):
    """A NaN amplitude in row 3: that row alone is left out (listed in
    OUT.rejected.xmd), the others' results are bit-identical to a run on the
    file without it; an interrupted run continues from its saved chunks to
    the same result; the pose columns are refined, not copied."""
    import deephemnma.core.align as core_align
    from deephemnma.cli import main
    t = read_metadata(folder / "particles.xmd")
    q = t["nmaDisplacements"].copy()
    q[2, 1] = np.nan
    u = t.copy()
    u["nmaDisplacements"] = q
    u.root = str(folder)
    write_xmd(tmp_path / "nan.xmd", u)
    w = t.subset(np.array([0, 1, 3, 4, 5]))
    w.root = str(folder)
    write_xmd(tmp_path / "without.xmd", w)
    assert main(_args(folder, tmp_path / "without.xmd", tmp_path / "a.xmd")) == 0
    real = core_align.Aligner.refine
    calls = {"n": 0}

    def flaky(self, *a, **k):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return real(self, *a, **k)
    monkeypatch.setattr(core_align.Aligner, "refine", flaky)
    args = _args(folder, tmp_path / "nan.xmd", tmp_path / "b.xmd")
    assert main(args) == 130
    assert not (tmp_path / "b.xmd").exists()
    assert len(list((tmp_path / "b.xmd.parts").glob("*.npz"))) == 1
    monkeypatch.setattr(core_align.Aligner, "refine", real)
    assert main(args) == 0
    a, b = read_metadata(tmp_path / "a.xmd"), read_metadata(tmp_path / "b.xmd")
    assert list(b["itemId"]) == [1, 2, 4, 5, 6]
    assert read_metadata(tmp_path / "b.rejected.xmd")["itemId"].tolist() == [3]
    for c in ("angleRot", "angleTilt", "anglePsi", "shiftX", "shiftY", "nmaDisplacements",
              "cost"):
        assert np.array_equal(a[c], b[c]), c
    assert not (tmp_path / "b.xmd.parts").exists()
    assert (tmp_path / "b_kept.xmd").exists()
    assert not np.array_equal(b["nmaDisplacements"], w["nmaDisplacements"])
    assert np.abs(b["nmaDisplacements"] - w["nmaDisplacements"]).max() < 20
    assert angular_errors(b.angles(), w.angles()).max() < 2.0


def test_cli_row_with_too_few_amplitudes_rejected_alone(folder, tmp_path):
    """A row whose nmaDisplacements has 2 values where the others have 3 is
    left out alone (listed in OUT.rejected.xmd); the others are refined."""
    from deephemnma.cli import main
    t = read_metadata(folder / "particles.xmd")
    t.root = str(folder)
    write_xmd(tmp_path / "ok.xmd", t)
    import re
    text = (tmp_path / "ok.xmd").read_text()
    line = next(ln for ln in text.splitlines() if ln.startswith("000002@"))
    short = re.sub(r"'\s*(\S+)\s+(\S+)\s+\S+\s*'", r"'\1 \2'", line)
    assert short != line
    text = text.replace(line, short)
    (tmp_path / "short.xmd").write_text(text)
    assert main(_args(folder, tmp_path / "short.xmd", tmp_path / "r.xmd")) == 0
    assert read_metadata(tmp_path / "r.rejected.xmd")["itemId"].tolist() == [2]
    assert read_metadata(tmp_path / "r.xmd")["itemId"].tolist() == [1, 3, 4, 5, 6]


def test_refine_and_align_steps_have_their_own_flags():
    """refine's steps are --refine-coarse-iters/--refine-fine-iters (its
    Config fields, default 10/25); align's --coarse-iters/--fine-iters are the
    global search's (40/25); refine refuses align's names."""
    from deephemnma.cli import build_parser
    from deephemnma.commands import align as align_cmd, refine as refine_cmd
    files = ["--particles", "p.xmd", "--modes", "m", "--structure", "s.pdb",
             "--pixel-size", "2", "--out", "o.xmd"]
    p = build_parser()
    r = refine_cmd.config(p.parse_args(["refine", *files, "--refine-coarse-iters", "3",
                                        "--refine-fine-iters", "4"]))
    assert (r.refine_coarse_iters, r.refine_fine_iters) == (3, 4)
    d = refine_cmd.config(p.parse_args(["refine", *files]))
    a = align_cmd.config(p.parse_args(["align", *files]))
    assert (d.refine_coarse_iters, a.coarse_iters) == (AlignOptions.refine_coarse_iters,
                                                       AlignOptions.coarse_iters)
    assert AlignOptions.refine_coarse_iters != AlignOptions.coarse_iters
    for name in ("--coarse-iters", "--fine-iters"):
        with pytest.raises(SystemExit):
            p.parse_args(["refine", *files, name, "3"])

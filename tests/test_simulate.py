"""Synthetic data: ground truth consistent with the projector, SNR, laws, resume."""
import os

import numpy as np
import pytest
import torch

from deephemnma.core import rotations
from deephemnma.core.projector import Projector
from deephemnma.core.simulate import helix_amplitudes, simulate, simulate_to_folder
from deephemnma.errors import InputError
from deephemnma.io.metadata import read_metadata
from deephemnma.io.stacks import load_images

from conftest import shared_file


@pytest.fixture(scope="module")
def ref():
    from deephemnma.stages.reference import load_reference
    return load_reference(shared_file("continuousflex", "AK.pdb"))


def _all(gen):
    chunks = list(gen)
    return (np.concatenate([c[1] for c in chunks]),
            __import__("deephemnma.io.metadata", fromlist=["Table"]).Table.concatenate(
                [c[2] for c in chunks]))


def test_noiseless_images_equal_projection_of_ground_truth(ref):
    s, modes = ref
    imgs, t = _all(simulate(s.coords, s.weights, modes.vectors, 6, box=48, pixel_size=1.5,
                            snr=None, ctf=False, render_factor=1, seed=3))
    P = Projector(s.coords, s.weights, modes.vectors, 48, 1.5)
    expect = P(torch.tensor(t["nmaDisplacements"]),
               torch.tensor(rotations.euler_to_matrix(t.angles())),
               torch.tensor(t.shifts())).numpy()
    assert np.abs(imgs - expect).max() < 1e-4 * np.abs(expect).max()
    assert t.angles()[:, 1].min() >= 0 and t.angles()[:, 1].max() <= 180
    assert np.abs(t.shifts()).max() <= 1.625 / 1.5 + 1e-9


def test_snr_and_helix_law(ref):
    s, modes = ref
    kw = dict(box=48, pixel_size=1.6, seed=5, ctf=True, render_factor=2)
    noisy, t = _all(simulate(s.coords, s.weights, modes.vectors, 40, snr=0.1, **kw))
    clean, _ = _all(simulate(s.coords, s.weights, modes.vectors, 40, snr=None, **kw))
    snr = clean.var(axis=(1, 2)) / (noisy - clean).var(axis=(1, 2))
    assert np.mean(snr) == pytest.approx(0.1, rel=0.15)
    q = t["nmaDisplacements"]
    r = -q[:, 0] / 200
    assert np.allclose(q, helix_amplitudes(r), atol=1e-9)
    assert (r >= 0).all() and (r <= 1).all()
    again, t2 = _all(simulate(s.coords, s.weights, modes.vectors, 40, snr=0.1, **kw))
    assert np.array_equal(again, noisy) and np.array_equal(t2["angleRot"], t["angleRot"])


def test_snr_at_render_is_the_papers_chain(ref):
    """snr_at_render: noise at SNR 0.1 in the rendered (4x finer) images, then
    downscaling, which divides white noise variance by 16: the output noise
    variance must be var(rendered clean image) / 0.1 / 16."""
    from deephemnma.core.simulate import render_factor_for
    s, modes = ref
    assert render_factor_for(1.3) == 4 and render_factor_for(0.65) == 2
    kw = dict(seed=8, ctf=False)
    noisy, _ = _all(simulate(s.coords, s.weights, modes.vectors, 30, 48, 1.6, snr=0.1,
                             render_factor=4, snr_at_render=True, **kw))
    clean, _ = _all(simulate(s.coords, s.weights, modes.vectors, 30, 48, 1.6, snr=None,
                             render_factor=4, **kw))
    fine, _ = _all(simulate(s.coords, s.weights, modes.vectors, 30, 192, 0.4, snr=None,
                            render_factor=1, **kw))
    expected = fine.var(axis=(1, 2)) / 0.1 / 16
    measured = (noisy - clean).var(axis=(1, 2))
    assert np.mean(measured / expected) == pytest.approx(1.0, rel=0.05)
    # the output SNR is ~16x the nominal one (not 0.1)
    assert 1.0 < np.mean(clean.var(axis=(1, 2)) / measured) < 2.5


def test_bad_input(ref):
    s, modes = ref
    with pytest.raises(InputError, match="3 modes"):
        next(simulate(s.coords, s.weights, modes.vectors[:2], 4))
    with pytest.raises(InputError, match="box"):
        next(simulate(s.coords, s.weights, modes.vectors, 4, box=31))
    with pytest.raises(InputError, match="atoms"):
        next(simulate(s.coords[:10], s.weights[:10], modes.vectors, 4))


def test_folder_output_and_resume(ref, tmp_path):
    s, modes = ref
    kw = dict(box=32, pixel_size=2.6, seed=1, chunk=8, render_factor=1)
    full = simulate_to_folder(tmp_path / "a", s, modes, 20, quiet=True, **kw)
    # interrupted run: simulate only the first chunk, then resume
    import deephemnma.core.simulate as sim
    real = sim.simulate

    def broken(*a, **k):
        for i, chunk in enumerate(real(*a, **k)):
            if i == 1:
                raise KeyboardInterrupt
            yield chunk
    sim.simulate = broken
    with pytest.raises(KeyboardInterrupt):
        simulate_to_folder(tmp_path / "b", s, modes, 20, quiet=True, **kw)
    sim.simulate = real
    assert not (tmp_path / "b" / "particles.mrcs").exists()
    simulate_to_folder(tmp_path / "b", s, modes, 20, quiet=True, **kw)
    ta = read_metadata(tmp_path / "a" / "particles.xmd")
    tb = read_metadata(tmp_path / "b" / "particles.xmd")
    ia = load_images(ta, root=str(tmp_path / "a"))
    ib = load_images(tb, root=str(tmp_path / "b"))
    assert ia.shape == (20, 32, 32) and np.array_equal(ia, ib)
    assert np.allclose(ta["nmaDisplacements"], full["nmaDisplacements"])
    star = read_metadata(tmp_path / "a" / "particles.star")
    assert np.allclose(star["shiftX"], ta["shiftX"], atol=1e-6)
    assert (tmp_path / "a" / "modes" / "vec.7").exists()


# --------------------------------------------------------------------------
# the simulate stage
def _stage_cfg(tmp_path, folder, **kw):
    from deephemnma.stages import simulate as stage
    base = dict(structure=str(shared_file("continuousflex", "AK.pdb")),
                out=str(tmp_path / folder), n=20, box=32, pixel_size=2.6, render_factor=1)
    return stage.Config(**dict(base, **kw))


def _in_chunks_of_8(monkeypatch, stop_after=None):
    """Make the stage simulate in chunks of 8 images (the default, 512, would
    be one chunk), stopping as Ctrl-C would after ``stop_after`` chunks."""
    import deephemnma.core.simulate as sim

    def chunked(*a, **k):
        for i, chunk in enumerate(simulate(*a, **dict(k, chunk=8))):
            if i == stop_after:
                raise KeyboardInterrupt
            yield chunk
    monkeypatch.setattr(sim, "simulate", chunked)


def _images(folder):
    t = read_metadata(folder / "particles.xmd")
    return load_images(t), t


def test_stage_resumes_only_its_own_run(tmp_path, monkeypatch, capsys):
    """A rerun of an interrupted run continues it; a run with other options
    discards the partial stack (one line says so) instead of mixing images."""
    from deephemnma.stages import simulate as stage
    _in_chunks_of_8(monkeypatch)
    full = stage.run(_stage_cfg(tmp_path, "a", seed=1), progress=False)
    assert full.n == 20 and not os.path.exists(full.stamp)
    ia, ta = _images(tmp_path / "a")
    for seed_first, folder in ((1, "same"), (2, "other")):
        cfg = _stage_cfg(tmp_path, folder, seed=seed_first)
        _in_chunks_of_8(monkeypatch, stop_after=1)
        with pytest.raises(KeyboardInterrupt):
            stage.run(cfg, progress=False)
        assert os.path.exists(stage.Outputs(cfg.out).stack + ".part")
        capsys.readouterr()
        _in_chunks_of_8(monkeypatch)
        out = stage.run(cfg.replace(seed=1), progress=False)
        said = capsys.readouterr().err
        assert out.restarted == (seed_first != 1)
        assert ("starting afresh" in said) == (seed_first != 1)
        ib, tb = _images(tmp_path / folder)
        assert np.array_equal(ia, ib) and np.array_equal(ta["angleRot"], tb["angleRot"])
        assert sorted(os.listdir(tmp_path / folder)) == sorted(os.listdir(tmp_path / "a"))


@pytest.mark.parametrize("changes,match", [
    (dict(n=-5), "-n"), (dict(n=0), "-n"), (dict(box=-48), "--box"), (dict(box=31), "--box"),
    (dict(box=8), "--box"), (dict(pixel_size=0.0), "--pixel-size"),
    (dict(snr=0.0), "--snr"), (dict(snr=float("nan")), "--snr"),
    (dict(render_factor=0), "--render-factor"), (dict(shift_range=-1.0), "--shift-range"),
    (dict(q0=1.0), "--q0"), (dict(voltage=0.0), "--voltage"), (dict(sigma=0.0), "--sigma"),
    (dict(defocus=-5.0), "--defocus"), (dict(seed=-1), "--seed"), (dict(law="spiral"), "--law"),
    (dict(mode_list="7,8"), "exactly 3 modes"), (dict(mode_list="x"), "bad mode list"),
    (dict(modes="nowhere"), "not found"), (dict(pixel_size=0.3), "does not fit")])
def test_stage_refuses_bad_options(tmp_path, changes, match):
    from deephemnma.stages import simulate as stage
    cfg = _stage_cfg(tmp_path, "o").replace(**changes)
    with pytest.raises(InputError, match=match):
        stage.run(cfg, progress=False)
    assert not (tmp_path / "o").exists()


def test_stage_refuses_to_overwrite_its_inputs(tmp_path):
    from deephemnma.stages import nma, simulate as stage
    modes = nma.run(nma.Config(structure=str(shared_file("continuousflex", "AK.pdb")),
                               out=str(tmp_path / "nma"), n_modes=10))
    before = open(modes.modes_xmd).read()
    for m in (modes.folder, modes.modes_xmd):
        with pytest.raises(InputError, match="also an input"):
            stage.run(_stage_cfg(tmp_path, "nma", modes=m), progress=False)
    assert open(modes.modes_xmd).read() == before
    assert not os.path.exists(os.path.join(modes.folder, "particles.mrcs"))
    # no noise, no CTF: switched off, their numbers are not checked
    out = stage.run(_stage_cfg(tmp_path, "s", modes=modes.folder, noise=False, snr=0.0,
                               ctf=False, defocus=0.0, n=3), progress=False)
    assert out.n == 3 and out.mode_numbers == [7, 8, 9]
    with pytest.raises(InputError, match="already holds particles"):
        stage.run(_stage_cfg(tmp_path, "s", modes=modes.folder), progress=False)


def test_default_noise_chain_is_the_papers(tmp_path):
    """One default chain for the command, the stage and the Scipion protocol:
    the paper's (SNR at ~0.325 Å/px before downscaling); --snr-in-output is
    the explicit harder variant. The stage's images are those of
    core.simulate with snr_at_render and the paper's rendering factor."""
    from deephemnma.cli import build_parser, main as cli
    from deephemnma.commands import simulate as command
    from deephemnma.core.simulate import render_factor_for
    from deephemnma.stages import simulate as stage
    d = stage.Config()
    assert d.snr_at_render and d.rendering() == render_factor_for(d.pixel_size) == 2
    assert d.replace(pixel_size=1.3).rendering() == 4
    assert d.replace(snr_at_render=False, pixel_size=1.3).rendering() == 2
    base = ["simulate", "--structure", "AK.pdb", "--out", "o"]
    c = command.config(build_parser().parse_args(base))
    assert c.snr_at_render and c.snr == 0.1
    assert command.config(build_parser().parse_args(base + ["--snr-at-render"])).snr_at_render
    hard = command.config(build_parser().parse_args(base + ["--snr-in-output"]))
    assert not hard.snr_at_render and hard.rendering() == 2
    assert "in the output images" in stage.noise_description(hard)
    assert "the paper's chain" in stage.noise_description(c)
    ak = str(shared_file("continuousflex", "AK.pdb"))
    assert cli(["simulate", "--structure", ak, "--out", str(tmp_path / "x"),
                "--snr-in-output", "--snr-at-render"]) == 2
    assert not (tmp_path / "x").exists()
    # the stage's images: the paper's chain at 2.6 Å/px = rendered 8x (256 px at 0.325 Å)
    cfg = stage.Config(structure=ak, out=str(tmp_path / "s"), n=3, box=32, pixel_size=2.6,
                       seed=4)
    out = stage.run(cfg, progress=False)
    assert out.render_factor == 8
    assert any("the paper's chain" in line for line in stage.summary(out, cfg))
    imgs, t = _images(tmp_path / "s")
    from deephemnma.stages.reference import load_reference
    s, modes = load_reference(ak)
    ref, _ = _all(simulate(s.coords, s.weights, modes.vectors, 3, box=32, pixel_size=2.6,
                           seed=4, snr=0.1, render_factor=8, snr_at_render=True))
    assert np.allclose(imgs, ref, atol=1e-5)


def test_protocol_default_is_the_stage_default():
    """The synthesize protocol's form starts on the stage's (the paper's) chain
    and says its images are not phase-flipped."""
    pytest.importorskip("pyworkflow")
    from deephemnma.protocols.protocol_synthesize import DeepHEMNMAProtSynthesize
    from deephemnma.stages import simulate as stage
    prot = DeepHEMNMAProtSynthesize()
    assert prot.snrAtRender.get() is stage.Config().snr_at_render is True
    cfg = prot._config()
    assert cfg.snr_at_render and not cfg.phase_flip and cfg.rendering() == 4     # 1.3 Å/px


# --------------------------------------------------------------------------
# consensus poses: the true ones a few degrees and Ångströms off
def _rotation_angles(a, b):
    """Angle (deg) of the rotation between orientations ``a`` and ``b``."""
    from deephemnma.core import rotations
    r = np.einsum("nji,njk->nik", rotations.euler_to_matrix(a), rotations.euler_to_matrix(b))
    return np.degrees(np.arccos(np.clip((np.trace(r, axis1=1, axis2=2) - 1) / 2, -1, 1)))


def test_consensus_poses_are_off_by_the_rms_error_about_random_axes():
    from deephemnma.core import rotations
    from deephemnma.core.simulate import consensus_poses
    ang = rotations.random_euler(4000, 3)
    sh = np.random.default_rng(0).uniform(-1, 1, (4000, 2))
    a, s = consensus_poses(ang, sh, 3.0, 0.5, rng=1)
    turn = _rotation_angles(ang, a)
    assert abs(np.sqrt((turn ** 2).mean()) - 3.0) < 0.1 and turn.max() < 12
    assert abs(np.sqrt((np.linalg.norm(s - sh, axis=1) ** 2).mean()) - 0.5) < 0.02
    # random axes: the turn is not about one fixed axis (e.g. only psi)
    assert np.std(np.diff(a - ang, axis=0)) > 0.1
    a2, s2 = consensus_poses(ang, sh, 3.0, 0.5, rng=1)
    assert np.array_equal(a, a2) and np.array_equal(s, s2)
    a0, s0 = consensus_poses(ang, sh, 0.0, 0.0, rng=1)
    assert _rotation_angles(ang, a0).max() < 1e-3 and np.allclose(s0, sh)


def test_stage_writes_consensus_poses_beside_the_truth(tmp_path):
    """--consensus-error: consensus.xmd holds the same images with poses off
    the true ones of particles.xmd and no amplitudes (a consensus refinement
    has none); the images do not change."""
    from deephemnma.cli import build_parser, main as cli
    from deephemnma.commands import simulate as command
    from deephemnma.stages import simulate as stage
    cfg = _stage_cfg(tmp_path, "c", n=40, seed=2, consensus_angle=5.0, consensus_shift=1.3)
    out = stage.run(cfg, progress=False)
    truth, cons = read_metadata(out.particles), read_metadata(out.consensus)
    assert np.array_equal(truth["image"], cons["image"])
    assert "nmaDisplacements" in truth and "nmaDisplacements" not in cons
    turn = _rotation_angles(truth.angles(), cons.angles())
    assert 2.5 < np.sqrt((turn ** 2).mean()) < 7.5
    moved = np.linalg.norm(cons.shifts() - truth.shifts(), axis=1) * cfg.pixel_size
    assert 0.6 < np.sqrt((moved ** 2).mean()) < 2.0
    assert any("consensus poses" in line for line in stage.summary(out, cfg))
    plain = stage.run(_stage_cfg(tmp_path, "p", n=40, seed=2), progress=False)
    assert not os.path.exists(plain.consensus)
    assert np.array_equal(_images(tmp_path / "c")[0], _images(tmp_path / "p")[0])
    # the command's --consensus-error DEG,Å
    base = ["simulate", "--structure", "AK.pdb", "--out", "o"]
    c = command.config(build_parser().parse_args(base + ["--consensus-error", "3,0.5"]))
    assert (c.consensus_angle, c.consensus_shift) == (3.0, 0.5) and c.consensus()
    assert not command.config(build_parser().parse_args(base)).consensus()
    ak = str(shared_file("continuousflex", "AK.pdb"))
    for bad in ("3", "a,b", "-1,0.5", "200,0.5", "3,-0.5"):
        assert cli(["simulate", "--structure", ak, "--out", str(tmp_path / "x"), "-n", "2",
                    f"--consensus-error={bad}"]) == 2
    assert not (tmp_path / "x").exists()


def test_protocol_consensus_fields_reach_the_stage_and_speak_the_forms_words():
    pytest.importorskip("pyworkflow")
    from deephemnma.protocols.protocol_synthesize import DeepHEMNMAProtSynthesize
    prot = DeepHEMNMAProtSynthesize()
    assert not prot._config().consensus()
    prot.consensusAngle.set(3.0)
    prot.consensusShift.set(0.5)
    cfg = prot._config()
    assert (cfg.consensus_angle, cfg.consensus_shift) == (3.0, 0.5)
    prot.consensusAngle.set(-2.0)
    prot.consensusShift.set(-1.0)
    errors = prot._configErrors(prot._config)
    assert any("*Consensus pose error: rotation (deg)*" in e for e in errors), errors
    assert any("*Consensus pose error: shift (Å)*" in e for e in errors), errors

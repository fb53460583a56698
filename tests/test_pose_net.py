"""The pose-aware network (train --pose-input, core.pose_input): its inputs,
its labels, training and prediction through the stages, and its errors."""
import os

import numpy as np
import pytest
import torch

from deephemnma.cli import main as cli
from deephemnma.core import pose_input as P
from deephemnma.core import rotations as R
from deephemnma.core.models import load_model
from deephemnma.core.projector import project
from deephemnma.data import data_file
from deephemnma.io.metadata import read_metadata, write_xmd


def test_canonical_image_is_the_projection_at_psi_zero_centred(ak_reference):
    s, _ = ak_reference
    rng = np.random.default_rng(0)
    ang = np.column_stack([rng.uniform(0, 360, 4), rng.uniform(20, 160, 4),
                           rng.uniform(0, 360, 4)])
    sh = rng.uniform(-2, 2, (4, 2))
    c, w = (torch.as_tensor(a, dtype=torch.float32) for a in (s.coords, s.weights))
    img = project(c, w, torch.as_tensor(R.euler_to_matrix(ang), dtype=torch.float32),
                  torch.as_tensor(sh, dtype=torch.float32), 64, 1.3)
    a0 = ang.copy()
    a0[:, 2] = 0
    ref = project(c, w, torch.as_tensor(R.euler_to_matrix(a0), dtype=torch.float32), None, 64,
                  1.3)
    err = float((P.canonical_images(img, ang, sh) - ref).norm() / ref.norm())
    assert err < 0.08
    # not a trivial match: the image as given is far from it
    assert float((img - ref).norm() / ref.norm()) > 0.5


def test_pose_corrections_round_trip():
    rng = np.random.default_rng(1)
    ang = np.column_stack([rng.uniform(0, 360, 20), rng.uniform(5, 175, 20),
                           rng.uniform(0, 360, 20)])
    sh = rng.normal(0, 1, (20, 2))
    ang2, sh2 = ang + rng.normal(0, 3, ang.shape), sh + rng.normal(0, 0.5, sh.shape)
    rv, ds = P.pose_corrections(ang, sh, ang2, sh2)
    back, sb = P.apply_corrections(ang, sh, rv, ds)
    assert R.angular_distance(R.euler_to_matrix(back), R.euler_to_matrix(ang2)).max() < 1e-4
    np.testing.assert_allclose(sb, sh2, atol=1e-9)
    # the rotation vector's size is the angle between the poses
    dist = R.angular_distance(R.euler_to_matrix(ang), R.euler_to_matrix(ang2))
    assert np.all(np.linalg.norm(rv, axis=1) > 0.5 * dist)


def test_linear_estimate_recovers_amplitudes_of_noiseless_projections(ak_reference):
    s, modes = ak_reference
    rng = np.random.default_rng(2)
    q = rng.normal(0, 60, (6, modes.vectors.shape[0]))
    ang = np.column_stack([rng.uniform(0, 360, 6), rng.uniform(20, 160, 6), np.zeros(6)])
    coords = torch.as_tensor(s.coords, dtype=torch.float32) + torch.einsum(
        "bm,mnc->bnc", torch.as_tensor(q, dtype=torch.float32),
        torch.as_tensor(modes.vectors, dtype=torch.float32))
    rot = torch.as_tensor(R.euler_to_matrix(ang), dtype=torch.float32)
    img = project(coords, torch.as_tensor(s.weights, dtype=torch.float32), rot, None, 48, 1.8)
    ref = P.PoseReference(s.coords, s.weights, modes.vectors)
    est, _ = P.linear_estimate(img, rot, ref, 1.8)
    err = np.abs(est.numpy() - q).mean()
    assert err < 0.2 * np.abs(q).mean(), err


@pytest.fixture(scope="module")
def pose_set(tmp_path_factory):
    """Noiseless particles (CTF, 32 px) with consensus poses: (folder, truth)."""
    from deephemnma.stages import simulate
    d = tmp_path_factory.mktemp("pose_set")
    sim = str(d / "sim")
    simulate.run(simulate.Config(structure=data_file("AK.pdb"), out=sim, n=140, box=32,
                                 pixel_size=2.6, noise=False, consensus_angle=3.0,
                                 consensus_shift=0.5, seed=3), progress=False)
    truth = read_metadata(os.path.join(sim, "particles.xmd"))
    cons = read_metadata(os.path.join(sim, "consensus.xmd"))
    write_xmd(str(d / "labels.xmd"), truth.subset(np.arange(100)))
    write_xmd(str(d / "cons1.xmd"), cons.subset(np.arange(100)))
    write_xmd(str(d / "cons2.xmd"), cons.subset(np.arange(100, 140)))
    return d, sim, truth


def _train_argv(d, sim, out, *extra):
    return ["train", "--particles", str(d / "labels.xmd"), "--out", str(out), "--pose-input",
            "--structure", os.path.join(sim, "reference.pdb"), "--modes", sim,
            "--consensus", str(d / "cons1.xmd"), "--epochs", "3", "--batch-size", "16",
            "--dropout", "0", "--trunk", "resnet18", "--device", "cpu", *extra]


def test_pose_aware_network_beats_the_mean_and_round_trips(pose_set, capsys):
    d, sim, truth = pose_set
    out = d / "net"
    assert cli(_train_argv(d, sim, out)) == 0
    nets, meta = load_model(str(out / "model.pt"))
    assert meta["pose_input"] is True and meta["train_config"]["pose_input"] is True
    net = nets["joint"]
    assert net.n_view == 9 + 3 and net.in_channels == 5 and net.trunk_name == "resnet18"
    assert set(meta["pose_reference"]) >= {"coords", "weights", "vectors", "sigma"}
    pred = str(d / "pred.xmd")
    assert cli(["predict", "--model", str(out / "model.pt"), "--particles",
                str(d / "cons2.xmd"), "--out", pred, "--device", "cpu"]) == 0
    est = read_metadata(pred)
    t2 = truth.subset(np.arange(100, 140))
    q, qt = est["nmaDisplacements"], t2["nmaDisplacements"]
    mean = truth.subset(np.arange(100))["nmaDisplacements"].mean(0)
    assert np.abs(q - qt).mean() < 0.5 * np.abs(mean - qt).mean()
    # the predicted poses stay near the consensus (3° off the truth), not lost
    ang = R.angular_distance(R.euler_to_matrix(est.angles()), R.euler_to_matrix(t2.angles()))
    assert np.mean(ang) < 6.0


def test_predict_without_poses_is_refused(pose_set, capsys):
    d, sim, _ = pose_set
    out = d / "net_nopose"
    assert cli(_train_argv(d, sim, out, "--epochs", "1")) == 0
    t = read_metadata(str(d / "cons2.xmd"))
    for c in ("angleRot", "angleTilt", "anglePsi"):
        del t[c]
    write_xmd(str(d / "noposes.xmd"), t)
    capsys.readouterr()
    assert cli(["predict", "--model", str(out / "model.pt"), "--particles",
                str(d / "noposes.xmd"), "--out", str(d / "x.xmd"), "--device", "cpu"]) == 2
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert len(err) == 1 and "pose-aware" in err[0] and "angleRot" in err[0], err
    assert not os.path.exists(d / "x.xmd")


@pytest.mark.parametrize("extra,words", [
    (["--augment"], "leave out --augment"),
    (["--coord-channels"], "leave out --coord-channels"),
    (["--architecture", "separate"], "--architecture joint"),
])
def test_pose_input_option_errors(pose_set, capsys, extra, words):
    d, sim, _ = pose_set
    capsys.readouterr()
    assert cli(_train_argv(d, sim, d / "bad", *extra)) == 2
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert len(err) == 1 and words in err[0], err


def test_pose_input_needs_the_reference_and_consensus_needs_pose_input(pose_set, capsys):
    d, sim, _ = pose_set
    capsys.readouterr()
    assert cli(["train", "--particles", str(d / "labels.xmd"), "--out", str(d / "bad2"),
                "--pose-input"]) == 2
    assert "--structure and --modes" in capsys.readouterr().err
    assert cli(["train", "--particles", str(d / "labels.xmd"), "--out", str(d / "bad3"),
                "--consensus", str(d / "cons1.xmd")]) == 2
    assert "only with --pose-input" in capsys.readouterr().err

"""benchmarks/bench_peer.py: the pieces that need no cryoDRGN (what each path
is given, the halves, the table) and, when the cryoDRGN venv is there
(``make peer-venv``, or $DEEPHEMNMA_PEER_VENV), the conversion of our
particles to cryoDRGN's pose and CTF files by its own parse_pose_star and
parse_ctf_star, checked against hand-computed rotations."""
import os
import subprocess
import sys

import numpy as np
import pytest

from conftest import ROOT

sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
import bench_peer  # noqa: E402

from deephemnma.io.metadata import Table, read_metadata, write_star, write_xmd  # noqa: E402

PEER_VENV = os.environ.get("DEEPHEMNMA_PEER_VENV") or os.path.join(ROOT, "bench_output", "peer",
                                                                    "peer-venv")
CRYODRGN = os.path.join(PEER_VENV, "bin", "cryodrgn")


def _particles(n=4):
    return Table({
        "image": np.array([f"{i:06d}@particles.mrcs" for i in range(1, n + 1)]),
        "itemId": np.arange(1, n + 1),
        "angleRot": np.array([90.0, 0.0, 30.0, 10.0][:n]),
        "angleTilt": np.array([0.0, 90.0, 50.0, 20.0][:n]),
        "anglePsi": np.array([0.0, 0.0, 70.0, 30.0][:n]),
        "shiftX": np.array([2.0, -1.0, 0.5, 0.0][:n]),
        "shiftY": np.array([-3.0, 1.5, 0.0, 0.25][:n]),
        "nmaDisplacements": np.arange(3.0 * n).reshape(n, 3),
        "ctfDefocusU": np.full(n, 5000.0), "ctfDefocusV": np.full(n, 4800.0),
        "ctfDefocusAngle": np.full(n, 10.0), "ctfVoltage": np.full(n, 200.0),
        "ctfSphericalAberration": np.full(n, 2.0), "ctfQ0": np.full(n, 0.1),
    })


def test_paths_are_not_given_the_true_amplitudes():
    t = _particles()
    images, poses = bench_peer.strip(t, False), bench_peer.strip(t, True)
    assert "nmaDisplacements" not in images and "nmaDisplacements" not in poses
    assert "angleRot" not in images and "shiftX" not in images
    np.testing.assert_array_equal(poses["angleRot"], t["angleRot"])
    assert "ctfDefocusU" in images and "image" in images
    np.testing.assert_array_equal(images["ctfPhaseShift"], 0)   # cryoDRGN: NaN when absent
    assert "nmaDisplacements" in t                       # the truth itself is untouched


def test_halves_split_every_row_once():
    s1, s2 = bench_peer.halves(11, seed=3)
    assert len(s1) == 5 and len(s2) == 6
    assert sorted(np.concatenate([s1, s2]).tolist()) == list(range(11))
    assert not np.array_equal(s1, np.arange(5))           # shuffled
    np.testing.assert_array_equal(s1, bench_peer.halves(11, seed=3)[0])


def test_scores_of_a_perfect_and_a_useless_output():
    rng = np.random.default_rng(0)
    truth = rng.normal(size=(200, 3)) * [5.0, 2.0, 1.0]
    pc1, r2 = bench_peer.scores(truth @ rng.normal(size=(3, 8)), truth)   # a linear map
    assert pc1 > 0.5 and r2 > 0.999
    pc1, r2 = bench_peer.scores(rng.normal(size=(200, 8)), truth)
    assert pc1 < 0.3 and r2 < 0.05


def test_table_lists_present_paths_in_order_and_the_unavailable_one():
    row = dict(method="m", poses="no", n_scored=10, n_input=12, wall_s=12.4, pc1_r=0.987,
               r2=0.91234, steps={"align set 1": 3.0, "train": 8.6, "predict set 2": 0.8})
    text = bench_peer.format_table({"network": dict(row), "hemnma": dict(row, wall_s=3.0)},
                                   {"pose-network": bench_peer.NO_POSE_INPUT})
    lines = text.splitlines()
    assert [ln.split("|")[1].strip() for ln in lines[2:]] == ["hemnma", "network",
                                                              "pose-network"]
    assert "| 10/12 | 12 s | 9 s | 0.99 | 0.912 |" in lines[3]
    assert "| 10/12 | 3 s | 9 s |" in lines[2]
    assert bench_peer.training_cell(dict(steps={"align": 3.0})) == ""
    assert "n/a (train has no --pose-input)" in lines[4]


def test_data_key_names_every_data_parameter():
    keys = {bench_peer.data_key(n, box, ps, seed, cons)
            for n, box, ps, seed, cons in [(600, 64, 1.3, 0, "3,0.5"), (3000, 64, 1.3, 0, "3,0.5"),
                                           (600, 128, 1.3, 0, "3,0.5"), (600, 64, 0.65, 0, "3,0.5"),
                                           (600, 64, 1.3, 1, "3,0.5"), (600, 64, 1.3, 0, "5,0.5")]}
    assert len(keys) == 6


def _peer_python(code, *args):
    out = subprocess.run([os.path.join(PEER_VENV, "bin", "python"), "-c", code, *args],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout


@pytest.mark.skipif(not os.path.isfile(os.path.join(PEER_VENV, ".built")),
                    reason=f"no cryoDRGN venv at {PEER_VENV} (make peer-venv)")
def test_cryodrgn_reads_our_star_as_hand_computed(tmp_path):
    """Our RELION STAR (deephemnma.io.write_star, as bench_peer.py writes it)
    through cryoDRGN's parse_pose_star and parse_ctf_star: RELION's rotation
    matrices (rot 90°: Rz(90) = [[0, 1, 0], [-1, 0, 0], [0, 0, 1]]; tilt 90°:
    Ry(90) = [[0, 0, -1], [0, 1, 0], [1, 0, 0]]), shifts as fractions of the
    box with our sign, our CTF values."""
    box, ps = 64, 1.3
    t = _particles()
    write_xmd(tmp_path / "p.xmd", t)                 # image references relative to tmp_path
    star = tmp_path / "p.star"
    write_star(star, bench_peer.strip(read_metadata(tmp_path / "p.xmd"), True), ps, box)
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)
    for cmd in (["parse_pose_star", str(star), "-o", str(tmp_path / "pose.pkl")],
                ["parse_ctf_star", str(star), "-o", str(tmp_path / "ctf.pkl")]):
        out = subprocess.run([CRYODRGN, *cmd, "-D", str(box), "--Apix", str(ps)],
                             capture_output=True, text=True, env=env)
        assert out.returncode == 0, out.stderr[-2000:]
    # the pickles hold the peer's numpy arrays: save them as .npy there
    _peer_python("import pickle, sys, numpy as np\n"
                 "rot, trans = pickle.load(open(sys.argv[1], 'rb'))\n"
                 "np.save(sys.argv[2], rot); np.save(sys.argv[3], trans)\n"
                 "np.save(sys.argv[5], pickle.load(open(sys.argv[4], 'rb')))",
                 str(tmp_path / "pose.pkl"), str(tmp_path / "rot.npy"),
                 str(tmp_path / "trans.npy"), str(tmp_path / "ctf.pkl"),
                 str(tmp_path / "ctf.npy"))
    rot, trans = np.load(tmp_path / "rot.npy"), np.load(tmp_path / "trans.npy")
    ctf = np.load(tmp_path / "ctf.npy")
    np.testing.assert_allclose(rot[0], [[0, 1, 0], [-1, 0, 0], [0, 0, 1]], atol=1e-6)
    np.testing.assert_allclose(rot[1], [[0, 0, -1], [0, 1, 0], [1, 0, 0]], atol=1e-6)
    from deephemnma.core.rotations import euler_to_matrix
    np.testing.assert_allclose(rot, euler_to_matrix(t.angles()), atol=1e-6)
    np.testing.assert_allclose(trans, t.shifts() / box, atol=1e-6)
    # cryoDRGN's CTF columns: D, Apix, dfU, dfV, dfang, kV, Cs, w, phase shift
    np.testing.assert_allclose(ctf[:, :9], np.tile([box, ps, 5000, 4800, 10, 200, 2, 0.1, 0],
                                                   (len(t), 1)), atol=1e-4)

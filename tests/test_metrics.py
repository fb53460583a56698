"""Metrics on controlled perturbations with known answers."""
import numpy as np
import pytest

from deephemnma.core.metrics import evaluate, format_table, match_rows, rmsd_terms
from deephemnma.core.rotations import random_euler
from deephemnma.errors import InputError
from deephemnma.io.metadata import Table, write_xmd


def _truth(n=50, seed=0):
    rng = np.random.default_rng(seed)
    ang = random_euler(n, rng)
    return Table({"itemId": np.arange(1, n + 1), "angleRot": ang[:, 0], "angleTilt": ang[:, 1],
                  "anglePsi": ang[:, 2], "shiftX": rng.uniform(-2, 2, n),
                  "shiftY": rng.uniform(-2, 2, n),
                  "nmaDisplacements": rng.uniform(-100, 100, (n, 3))})


def test_known_errors():
    t = _truth()
    e = t.copy()
    e["anglePsi"] = e["anglePsi"] + 10.0           # in-plane 10 deg: 2 axes move 10, one 0
    e["shiftX"] = e["shiftX"] + 0.5                # 0.5 px at 2 Å/px = 1 Å
    e["nmaDisplacements"] = e["nmaDisplacements"] + np.array([3.0, -6.0, 0.0])
    r = evaluate(e, t, pixel_size=2.0)
    assert r["angles_deg"]["mean"] == pytest.approx(20 / 3, abs=1e-6)
    assert r["shift_x_A"]["mean"] == pytest.approx(1.0) and r["shift_y_A"]["mean"] == 0
    assert r["mode_1"]["mean"] == pytest.approx(3) and r["mode_2"]["mean"] == pytest.approx(6)
    assert r["amplitude_mae_mean"]["mean"] == pytest.approx(3)
    assert "angles_deg" in format_table(r)


def test_rows_matched_by_id_not_position():
    t = _truth()
    e = t.subset(np.arange(49, -1, -2))            # reversed, every other row
    ie, it = match_rows(e, t)
    assert np.array_equal(e["itemId"][ie], t["itemId"][it])
    assert evaluate(e, t, 1.0)["angles_deg"]["mean"] < 1e-4


def test_rmsd_terms():
    rng = np.random.default_rng(1)
    x0 = rng.normal(size=(100, 3)) * 10
    V = rng.normal(size=(3, 100, 3))
    V /= np.linalg.norm(V.reshape(3, -1), axis=1)[:, None, None]
    t = _truth(10)
    e = t.copy()
    e["nmaDisplacements"] = e["nmaDisplacements"] + np.array([10.0, 0, 0])
    e["shiftY"] = e["shiftY"] + 1.0
    r = rmsd_terms(x0, V, e, t, pixel_size=1.5)
    # unit-norm mode: RMSD = |dq| / sqrt(N)
    assert np.allclose(r["amplitudes"], 10 / np.sqrt(100))
    assert np.allclose(r["shifts"], 1.5) and np.allclose(r["angles"], 0, atol=1e-6)
    e2 = t.copy()
    e2["anglePsi"] = e2["anglePsi"] + 90
    r2 = rmsd_terms(x0, V, e2, t, 1.0)["angles"]
    from deephemnma.core.rotations import euler_to_matrix
    Ae, At = euler_to_matrix(e2.angles()), euler_to_matrix(t.angles())
    xc = x0 - x0.mean(0)
    direct = [np.sqrt(((xc @ a.T - xc @ b.T) ** 2).sum(1).mean()) for a, b in zip(Ae, At)]
    assert np.allclose(r2, direct)


def test_cli_evaluate(tmp_path, capsys):
    from deephemnma.cli import main
    t = _truth()
    e = t.copy()
    e["shiftX"] = e["shiftX"] + 1
    write_xmd(tmp_path / "t.xmd", t)
    write_xmd(tmp_path / "e.xmd", e)
    assert main(["evaluate", "--est", str(tmp_path / "e.xmd"), "--truth", str(tmp_path / "t.xmd"),
                 "--pixel-size", "2", "--json", str(tmp_path / "r.json")]) == 0
    import json
    assert json.load(open(tmp_path / "r.json"))["shift_x_A"]["mean"] == pytest.approx(2.0)
    assert "shift_x_A" in capsys.readouterr().out


# --------------------------------------------------------------------------
# the evaluate stage
def _modes_folder(path, numbers, n_atoms=50, seed=0):
    from deephemnma.core.nma import NormalModes, write_continuousflex
    rng = np.random.default_rng(seed)
    v = rng.normal(size=(len(numbers), n_atoms, 3))
    v /= np.linalg.norm(v.reshape(len(v), -1), axis=1)[:, None, None]
    m = NormalModes(v, np.arange(len(numbers), dtype=float), np.array(numbers),
                    np.full(len(numbers), 0.5), rng.normal(size=(n_atoms, 3)) * 10)
    write_continuousflex(m, path)
    return m


def test_stage_amplitudes_belong_to_the_first_flexible_modes(tmp_path):
    """3 amplitudes with modes 1-12 given: they are modes 7-9 (named so, and
    their vectors give the RMSD); a row with a NaN is left out and counted."""
    import json
    from deephemnma.errors import InputError
    from deephemnma.stages import evaluate as stage
    _modes_folder(tmp_path / "modes", list(range(1, 13)))
    t = _truth(20)
    e = t.copy()
    e["nmaDisplacements"] = e["nmaDisplacements"] + np.array([10.0, 0, 0])
    e["angleRot"] = e["angleRot"].copy()
    e["angleRot"][3] = np.nan
    write_xmd(tmp_path / "t.xmd", t)
    write_xmd(tmp_path / "e.xmd", e)
    cfg = stage.Config(est=str(tmp_path / "e.xmd"), truth=str(tmp_path / "t.xmd"),
                       pixel_size=1.0, modes=str(tmp_path / "modes"),
                       json=str(tmp_path / "r" / "r.json"))
    out = stage.run(cfg)
    r = out.results
    assert out.mode_numbers == [7, 8, 9] and out.n_left_out == 1 and r["n"] == 19
    assert r["mode_7"]["mean"] == pytest.approx(10) and r["mode_8"]["mean"] == 0
    assert "mode_1" not in r
    # unit-norm mode 7 over 50 atoms: RMSD = 10 / sqrt(50)
    assert r["rmsd_amplitudes_A"]["mean"] == pytest.approx(10 / np.sqrt(50))
    assert json.load(open(out.json))["mode_7"]["mean"] == pytest.approx(10)
    assert any("left out 1 estimated" in x for x in stage.summary(out, cfg))
    _modes_folder(tmp_path / "few", [1, 2, 3, 4, 5, 6, 7, 8])
    for changes, match in [(dict(modes=str(tmp_path / "few")), "2 flexible modes"),
                           (dict(pixel_size=0.0), "--pixel-size"),
                           (dict(json=str(tmp_path / "e.xmd")), "also an input"),
                           (dict(truth=str(tmp_path / "none.xmd")), "not found")]:
        with pytest.raises(InputError, match=match):
            stage.run(cfg.replace(json=str(tmp_path / "q" / "r.json")).replace(**changes))
        assert not (tmp_path / "q").exists()


def test_predict_the_mean_baseline():
    """Every row of the baseline carries the training rows' mean amplitudes
    and shifts, and their chordal-mean orientation: for rotations scattered by
    a few degrees about one rotation, that rotation."""
    from deephemnma.core import rotations as R
    from deephemnma.core.metrics import angular_errors, predict_the_mean
    from scipy.spatial.transform import Rotation
    rng = np.random.default_rng(3)
    n = 400
    centre = R.euler_to_matrix(np.array([[40.0, 70.0, 120.0]]))[0]
    d = Rotation.from_rotvec(rng.normal(scale=np.radians(3), size=(n, 3))).as_matrix()
    a = R.matrix_to_euler(d @ centre)
    train = Table({"itemId": np.arange(1, n + 1), "angleRot": a[:, 0], "angleTilt": a[:, 1],
                   "anglePsi": a[:, 2], "shiftX": rng.normal(1, 1, n),
                   "shiftY": rng.normal(-2, 1, n),
                   "nmaDisplacements": rng.normal([5, -5, 50], 3, (n, 3))})
    test = Table({"itemId": np.array([7, 9, 11])})
    b = predict_the_mean(train, test)
    assert list(b["itemId"]) == [7, 9, 11]
    np.testing.assert_allclose(b["nmaDisplacements"], np.tile(
        train["nmaDisplacements"].mean(0), (3, 1)))
    np.testing.assert_allclose(b["shiftX"], train["shiftX"].mean())
    err = angular_errors(b.angles(), np.tile([40.0, 70.0, 120.0], (3, 1)))
    assert err.max() < 0.5, err


def test_pc1_correlation_follows_the_main_axis_whatever_its_sign_or_scale():
    from deephemnma.core.metrics import pc1, pc1_correlation
    rng = np.random.default_rng(0)
    r = rng.uniform(-1, 1, 500)
    truth = np.column_stack([-200 * r, 30 * np.sin(np.pi * r), rng.normal(0, 5, 500)])
    assert np.corrcoef(pc1(truth), r)[0, 1] ** 2 > 0.95
    # the same motion, flipped, rescaled, rotated into other coordinates, a little noise
    q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    est = -0.01 * truth @ q + rng.normal(0, 0.05, truth.shape)
    assert pc1_correlation(est, truth) > 0.97
    # amplitudes unrelated to the truth
    assert pc1_correlation(rng.normal(size=(500, 3)), truth) < 0.2
    with pytest.raises(InputError, match="same particles"):
        pc1_correlation(est[:10], truth)


def test_cv_r2_is_one_for_a_linear_truth_and_near_zero_for_noise():
    from deephemnma.core.metrics import cv_r2
    rng = np.random.default_rng(1)
    x = rng.normal(size=(300, 3))
    y = x @ rng.normal(size=(3, 3)) + 7.0
    assert cv_r2(x, y) > 0.999
    noisy = y + rng.normal(0, y.std(0), y.shape)       # half the variance is noise
    assert 0.35 < cv_r2(x, noisy) < 0.65
    assert cv_r2(rng.normal(size=(300, 3)), y) < 0.05   # held out: no fit of pure noise
    assert cv_r2(x, y, folds=3, seed=2) > 0.999
    with pytest.raises(InputError, match="2 per fold"):
        cv_r2(x[:6], y[:6])

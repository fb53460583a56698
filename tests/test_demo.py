"""The demo: progress echoed from a running protocol's logs, its verdict
on the network, its comparison of the alignment paths, its options."""
import io
import time

import numpy as np
import pytest

from deephemnma.demo import (LogEcho, compare_networks, compare_paths, main, network_verdict,
                             progress_fragment)


def test_progress_fragment_takes_the_last_count_and_ignores_paths_and_dates():
    log = ("\x1b[35mSTARTED\x1b[0m: alignStep, step 1, time 2026-11-26 11:53:22\n"
           "align 64/500     10.1 img/s  ETA 00:00:43 \r"
           "align 128/500    10.4 img/s  ETA 00:00:35 \r")
    assert progress_fragment(log) == "align 128/500 10.4 img/s ETA 00:00:35"
    assert progress_fragment("aligned 500 images -> Runs/000405_X/extra/a.xmd\n"
                             "time 2026-11-26 11:53:22\n") is None
    assert progress_fragment("epoch 3/15 96/416 80.2 img/s ETA 00:00:04 loss 3.3\r") \
        == "epoch 3/15 96/416 80.2 img/s ETA 00:00:04 loss 3.3"


def test_log_echo_prints_new_progress_from_a_growing_log(tmp_path):
    log = tmp_path / "run.stderr"
    out = io.StringIO()
    paths = []                      # no working folder yet: nothing to read
    echo = LogEcho("HEMNMA alignment", lambda: paths, interval=0.0, poll=0.02, stream=out)
    echo.start()
    try:
        time.sleep(0.1)
        paths.append(str(log))
        log.write_text("align 64/500  10.0 img/s ETA 00:00:43 \r")
        time.sleep(0.3)
        with open(log, "a") as f:
            f.write("align 128/500  10.4 img/s ETA 00:00:35 \r")
        time.sleep(0.3)
    finally:
        echo.stop()
    lines = out.getvalue().splitlines()
    assert [ln.split(", ")[0] for ln in lines] == [
        "[demo] HEMNMA alignment: align 64/500 10.0 img/s ETA 00:00:43",
        "[demo] HEMNMA alignment: align 128/500 10.4 img/s ETA 00:00:35"]
    assert all(ln.endswith(" s") for ln in lines) and echo.lines == 2


def test_network_verdict_needs_a_clear_margin_over_the_mean():
    def res(amp, ang):
        return {"amplitude_mae_mean": {"mean": amp}, "angles_deg": {"mean": ang}}
    line = network_verdict(res(76.7, 30.0), res(76.9, 90.7))
    assert "amplitudes 76.7 vs 76.9 (not better" in line
    assert "angles 30.0° vs 90.7° (better)" in line


def _poses(n, seed, amplitudes):
    from deephemnma.core.rotations import random_euler
    from deephemnma.io.metadata import Table
    rng = np.random.default_rng(seed)
    ang = random_euler(n, rng)
    return Table({"itemId": np.arange(1, n + 1), "angleRot": ang[:, 0], "angleTilt": ang[:, 1],
                  "anglePsi": ang[:, 2], "shiftX": np.zeros(n), "shiftY": np.zeros(n),
                  "nmaDisplacements": amplitudes})


def test_compare_paths_reports_each_paths_errors_pc1_and_cv_r2():
    """A path whose amplitudes follow the truth gets PC1 |r| and CV R² near 1
    and a small error; one with unrelated amplitudes gets ~0 for both."""
    rng = np.random.default_rng(0)
    r = rng.uniform(-1, 1, 200)
    q = np.column_stack([-200 * r, 200 * np.sin(np.pi * r), 200 * np.cos(np.pi * r)])
    truth = _poses(200, 1, q)
    good = truth.copy()
    good["nmaDisplacements"] = q + rng.normal(0, 5, q.shape)
    good["shiftX"] = good["shiftX"] + 0.5              # px: 0.65 Å at 1.3 Å/px
    bad = _poses(200, 2, rng.normal(0, 100, q.shape))
    lines = compare_paths({"good": (12.4, good, truth), "bad": (8.0, bad, truth)}, 1.3)
    rows = {ln.split("|")[1].strip(): [c.strip() for c in ln.split("|")[2:-1]]
            for ln in lines if ln.startswith("| good") or ln.startswith("| bad")}
    t, mae, angles, shifts, pc1, r2 = (float(v) for v in rows["good"])
    assert t == 12 and 3 < mae < 5 and angles == 0 and shifts == pytest.approx(0.33, abs=0.01)
    assert pc1 > 0.99 and r2 > 0.99
    t, mae, angles, shifts, pc1, r2 = (float(v) for v in rows["bad"])
    assert t == 8 and mae > 50 and angles > 30 and pc1 < 0.3 and r2 < 0.1
    assert lines[0].startswith("| alignment path | time s |") and "n=200" in lines[-1]


def test_compare_networks_reports_predicted_and_landscape_pc1_and_r2():
    """A path whose predictions follow the truth gets PC1 |r| and R² near 1;
    one with unrelated predictions gets ~0 for the predicted particles and
    in between for the landscape (its labelled half follows the truth)."""
    rng = np.random.default_rng(0)
    r = rng.uniform(-1, 1, 400)
    q = np.column_stack([-200 * r, 200 * np.sin(np.pi * r), 200 * np.cos(np.pi * r)])
    truth, lab_truth = _poses(200, 1, q[:200]), _poses(200, 3, q[200:])
    good, lab = truth.copy(), lab_truth.copy()
    good["nmaDisplacements"] = q[:200] + rng.normal(0, 5, (200, 3))
    bad = _poses(200, 2, rng.normal(0, 100, (200, 3)))
    lines = compare_networks({"good": (40.2, good, truth, lab, lab_truth),
                              "bad": (10.0, bad, truth, lab, lab_truth)})
    rows = {ln.split("|")[1].strip(): [float(c) for c in ln.split("|")[2:-1]]
            for ln in lines if ln.startswith("| good") or ln.startswith("| bad")}
    t, pc1, r2, lpc1, lr2 = rows["good"]
    assert t == 40 and pc1 > 0.99 and r2 > 0.99 and lpc1 > 0.99 and lr2 > 0.99
    t, pc1, r2, lpc1, lr2 = rows["bad"]
    assert t == 10 and pc1 < 0.3 and r2 < 0.1 and 0.2 < lr2 < 0.8
    assert "n=200" in lines[-1] and "n=400" in lines[-1]


def test_demo_refuses_a_bad_pose_epochs_in_one_line(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        main(["--pose-epochs", "0", "--out", str(tmp_path / "o")])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip()
    assert "--pose-epochs 0" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("bad", ["3", "x,0.5", "0,0.5", "3,-1"])
def test_demo_refuses_a_bad_consensus_error_in_one_line(bad, tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        main([f"--consensus-error={bad}", "--out", str(tmp_path / "o")])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip()
    assert "--consensus-error" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "o").exists()

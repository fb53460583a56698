"""The demo: progress echoed from a running protocol's logs, and its verdict
on the network."""
import io
import time

from deephemnma.demo import LogEcho, network_verdict, progress_fragment


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

"""The small helpers every stage and command share: the user's errors as one
line, whole numbers, same files, usable rows, the torchrun process group."""
import os

import numpy as np
import pytest

from deephemnma.errors import USER_ERRORS, InputError, one_line
from deephemnma.stages import base
from deephemnma.utils import distributed


def test_one_line_folds_white_space():
    assert one_line("align", InputError("a\n  b\tc ")) == "deephemnma align: error: a b c"
    for e in (InputError, FileNotFoundError, PermissionError, IsADirectoryError):
        assert issubclass(e, USER_ERRORS)
    assert not issubclass(RuntimeError, USER_ERRORS)


@pytest.mark.parametrize("value, ok", [(3, True), (np.int64(3), True), (0, True),
                                       (3.0, False), (True, False), ("3", False),
                                       (None, False)])
def test_whole_number(value, ok):
    assert base.is_whole(value) == ok
    if ok:
        base.whole_number("--n", value)
    else:
        with pytest.raises(InputError, match=r"--n must be a whole number"):
            base.whole_number("--n", value)


def test_same_file(tmp_path):
    a = tmp_path / "a.txt"
    a.write_text("x")
    os.symlink(a, tmp_path / "link.txt")
    assert base.same_file(a, tmp_path / "link.txt")
    assert base.same_file(a, tmp_path / "sub" / ".." / "a.txt")
    assert not base.same_file(a, tmp_path / "b.txt")


def test_usable_rows_rejects_with_reasons():
    from deephemnma.io.metadata import Table
    t = Table({"angleRot": np.array([0.0, np.nan, 1.0, 2.0])})
    images = np.random.default_rng(0).normal(size=(4, 4, 4))
    images[2] = 1.0                          # constant: unusable
    loaded = []

    def load(rows):
        loaded.append(len(rows))
        return images[np.flatnonzero(np.isfinite(t["angleRot"]))]

    rejected = base.Rejected()
    rows, imgs = base.usable_rows(t, load, rejected)
    assert loaded == [3], "the images of rows with a non-finite value were read"
    assert rows["angleRot"].tolist() == [0.0, 2.0] and len(imgs) == 2
    assert rejected.summary() == "1 non-finite value, 1 unusable image (NaN/inf or constant)"
    none, imgs = base.usable_rows(t.subset(np.array([1])), load, base.Rejected())
    assert len(none) == 0 and imgs is None and loaded == [3]


def test_distributed_without_torchrun(monkeypatch):
    monkeypatch.delenv("RANK", raising=False)
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert distributed() == (0, 1, None)
    assert distributed(start=False) == (0, 1, None)


# --------------------------------------------------------------------------
# run records
def _stage_modules():
    import importlib
    import pkgutil
    import deephemnma.stages as stages
    from deephemnma.stages.__main__ import NOT_STAGES
    names = [m.name for m in pkgutil.iter_modules(stages.__path__)
             if not m.name.startswith("_") and m.name not in NOT_STAGES]
    return [importlib.import_module(f"deephemnma.stages.{n}") for n in names]


def test_every_stage_run_writes_a_record():
    """Every stage's run() is wrapped by base.recorded, and its Outputs name
    the record."""
    modules = _stage_modules()
    assert len(modules) >= 13
    for m in modules:
        assert callable(getattr(m.run, "record_path", None)), m.__name__
        assert isinstance(getattr(m.Outputs, "run_record", None), property), m.__name__


def _cfg(out):
    import dataclasses

    @dataclasses.dataclass
    class Config(base.StageConfig):
        out: str = None
        n: int = 3
        sizes: tuple = (1, 2)
    return Config(out=str(out))


def test_run_record_finished_failed_refused(tmp_path, monkeypatch):
    import json
    from deephemnma.version import __version__
    monkeypatch.delenv("RANK", raising=False)
    path = tmp_path / "o.run.json"
    cfg = _cfg(tmp_path / "o.xmd")
    with base.run_record(str(path), cfg, "demo"):
        pass
    rec = json.loads(path.read_text())
    assert rec["status"] == "finished" and rec["stage"] == "demo"
    assert rec["config"] == {"out": str(tmp_path / "o.xmd"), "n": 3, "sizes": [1, 2]}
    assert rec["version"] == __version__ and rec["command"] == list(__import__("sys").argv)
    assert rec["started"] <= rec["ended"] and "error" not in rec
    with pytest.raises(RuntimeError):
        with base.invoked_by("protocol X, run 3"), base.run_record(lambda: str(path), cfg):
            raise RuntimeError("out of\nmemory")
    rec = json.loads(path.read_text())
    assert rec["status"] == "failed" and rec["error"] == "RuntimeError: out of memory"
    assert rec["command"] == "protocol X, run 3"
    with pytest.raises(KeyboardInterrupt):
        with base.run_record(str(path), cfg):
            raise KeyboardInterrupt
    assert json.loads(path.read_text())["status"] == "interrupted"
    path.unlink()
    for refused in (InputError("--n must be positive"), FileNotFoundError("x")):
        with pytest.raises(type(refused)):
            with base.run_record(str(path), cfg):
                raise refused
        assert not path.exists(), "a refused run wrote a record"
    gone = tmp_path / "gone" / "o.run.json"      # a failed run's folder was removed
    with pytest.raises(RuntimeError):
        with base.run_record(str(gone), cfg):
            raise RuntimeError("x")
    assert not gone.parent.exists()
    monkeypatch.setenv("RANK", "1")              # torchrun: process 0 writes it
    with base.run_record(str(path), cfg):
        pass
    assert not path.exists()


def test_record_beside_and_recorded(tmp_path, monkeypatch):
    import json
    monkeypatch.delenv("RANK", raising=False)
    assert base.record_beside("a/b.xmd") == "a/b.run.json"
    assert base.record_beside(None) is None

    class Outputs:
        def __init__(self, out):
            self.run_record = base.record_beside(out)

    @base.recorded(lambda cfg: Outputs(cfg.out))
    def run(cfg, progress=True):
        """doc"""
        if cfg.n < 0:
            raise InputError("--n must be >= 0")
        return cfg.n

    cfg = _cfg(tmp_path / "o.xmd")
    assert run(cfg) == 3 and run.__doc__ == "doc"
    assert run.record_path(cfg) == str(tmp_path / "o.run.json")
    assert json.loads((tmp_path / "o.run.json").read_text())["stage"] == __name__
    (tmp_path / "o.run.json").unlink()
    with pytest.raises(InputError):
        run(cfg.replace(n=-1))
    assert not (tmp_path / "o.run.json").exists()


# --------------------------------------------------------------------------
# progress: the epoch's ETA and the whole run's
class FakeClock:
    def __init__(self):
        self.t = 100.0

    def __call__(self):
        return self.t


def test_progress_line_shows_the_whole_runs_eta():
    import io
    from deephemnma.utils import Progress, clock_text
    assert clock_text(3725.9) == "01:02:05" and clock_text(90000) == "25:00:00"
    assert clock_text(float("inf")) == clock_text(float("nan")) == "--:--:--"
    clock, out = FakeClock(), io.StringIO()
    p = Progress(100, "epoch 2/5", quiet=False, stream=out, clock=clock,
                 after=lambda elapsed, left: 3 * (elapsed + left))
    assert "ETA --:--:-- run ETA --:--:--" in " ".join(p.line().split())
    clock.t += 10.0
    p.update(25, extra="loss 0.5")           # 25 images in 10 s: 30 s left in the epoch
    assert p.left == pytest.approx(30.0)
    assert p.run_left == pytest.approx(30.0 + 3 * 40.0)
    text = " ".join(out.getvalue().split())
    assert text == "epoch 2/5 25/100 2.5 img/s ETA 00:00:30 run ETA 00:02:30 loss 0.5", text
    plain = Progress(10, "align", quiet=True, clock=clock)
    assert plain.run_left is None and "run ETA" not in plain.line()


def test_later_epochs_seconds():
    from deephemnma.core.training import later_epochs_seconds
    # no epoch done yet: the later epochs last as long as this one's training
    assert later_epochs_seconds(6.0, 4.0, 11) == pytest.approx(110.0)
    # epochs done: their mean wall time (validation, checkpoint included)
    assert later_epochs_seconds(6.0, 4.0, 3, [12.0, 14.0]) == pytest.approx(39.0)
    assert later_epochs_seconds(6.0, 4.0, 0, [12.0]) == 0.0


def test_fit_gives_each_epoch_the_run_eta(monkeypatch):
    """fit's progress bar of epoch e (of E) counts E - e later epochs, timed
    by the epochs done (here: 2 s each on a fake clock), before any by this
    epoch's training."""
    import deephemnma.core.training as T
    from deephemnma.core.config import TrainConfig
    clock = FakeClock()
    monkeypatch.setattr(T.time, "perf_counter", clock)
    seen = []

    class Bar(T.Progress):
        def __init__(self, *a, **k):
            super().__init__(*a, **dict(k, quiet=True, clock=clock))

        def update(self, k=1, extra=""):
            super().update(k, extra)
            seen.append((self.label, self.left, self.run_left))

    monkeypatch.setattr(T, "Progress", Bar)

    class Trainer:
        cfg = TrainConfig(epochs=4, patience=10, batch_size=5)
        rank, steps_per_epoch, lr = 0, 2, 0.1

        def train_epoch(self, epoch, rows, progress):
            for _ in range(2):
                clock.t += 1.0
                progress.update(5)
            return 1.0

        def evaluate(self, rows):
            clock.t += 1.0                   # an epoch: 2 s training + 1 s validation
            return 1.0 / (len(seen) + 1), {}

    T.fit(Trainer(), [0], [1], quiet=True)
    assert [label for label, _, _ in seen] == [f"epoch {e}/4" for e in (1, 1, 2, 2, 3, 3, 4, 4)]
    expected = [(1.0, 1.0 + 3 * 2.0), (0.0, 3 * 2.0),      # epoch 1: 3 more of 2 s training
                (1.0, 1.0 + 2 * 3.0), (0.0, 2 * 3.0),      # then of 3 s (as measured)
                (1.0, 1.0 + 3.0), (0.0, 3.0), (1.0, 1.0), (0.0, 0.0)]
    for (_, left, run_left), (want_left, want_run) in zip(seen, expected):
        assert (left, run_left) == pytest.approx((want_left, want_run))

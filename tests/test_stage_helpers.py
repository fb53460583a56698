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

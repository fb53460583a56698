"""Shared fixtures. Data in ../shared/data is optional: tests that need it skip
with a clear reason when it is absent (a user's checkout has no shared/)."""
import os
import pathlib
import tempfile

os.environ.setdefault("DEEPHEMNMA_QUIET", "1")
os.environ.setdefault("MPLBACKEND", "Agg")


def _scipion_env():
    """A private, headless Scipion home for the tests (pyworkflow reads these
    variables when first imported)."""
    from deephemnma.scipion_env import setup
    setup(tempfile.mkdtemp(prefix="deephemnma_scipion_"))


try:
    _scipion_env()
except ImportError:      # no Scipion (e.g. a GPU machine): its tests skip
    pass

import numpy as np  # noqa: E402
import pytest  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parents[1]
SHARED = pathlib.Path(os.environ.get("DEEPHEMNMA_SHARED", ROOT.parent / "shared")) / "data"


def shared_file(*parts):
    """Path of a file in ../shared/data, or skip the test if it is absent."""
    p = SHARED.joinpath(*parts)
    if not p.exists():
        pytest.skip(f"shared test data not available: {p}")
    return p


@pytest.fixture
def shared():
    return shared_file


@pytest.fixture
def ak_pdb():
    return shared_file("continuousflex", "AK.pdb")


@pytest.fixture
def rng():
    return np.random.default_rng(12345)


def xmipplib():
    """xmippLib (the convention oracle from pyxmipp3), or skip."""
    return pytest.importorskip("xmippLib", reason="xmippLib (pyxmipp3) not installed")

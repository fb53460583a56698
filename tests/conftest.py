"""Shared fixtures. Test data: ``shared_file(...)`` finds a file in tests/data
(or the package's data) and, for the few files the repository does not ship,
in $DEEPHEMNMA_EXTRA_TEST_DATA; a test needing one of those skips with the
reason when it is absent (deephemnma.data.testdata)."""
import os
import pathlib
import unittest

os.environ.setdefault("DEEPHEMNMA_QUIET", "1")
os.environ.setdefault("MPLBACKEND", "Agg")


def _scipion_env():
    """A private, headless Scipion home for the tests, removed at exit
    (pyworkflow reads these variables when first imported)."""
    from deephemnma.scipion_env import temporary_home
    temporary_home()


try:
    _scipion_env()
except ImportError:      # no Scipion (e.g. a GPU machine): its tests skip
    pass

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from deephemnma.data import data_file  # noqa: E402
from deephemnma.data.testdata import locate  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parents[1]


def shared_file(*parts):
    """Path of the test data file ``parts`` (e.g. ``"oracles", "8zpm.cif"``),
    or skip the test with the reason when it is a file the repository does not
    ship and nobody provided (deephemnma.data.testdata.locate)."""
    try:
        return locate(*parts)
    except unittest.SkipTest as e:
        pytest.skip(str(e))


@pytest.fixture
def shared():
    return shared_file


@pytest.fixture
def ak_pdb():
    return pathlib.Path(data_file("AK.pdb"))


@pytest.fixture(scope="module")
def ak_reference():
    """AK.pdb centred, and its normal modes (stages.reference.load_reference)."""
    from deephemnma.stages.reference import load_reference
    return load_reference(data_file("AK.pdb"))


def simulated_particles(reference, n, snr, seed, box=48, pixel_size=1.8, amplitude_scale=150):
    """``n`` particles of ``reference`` (structure, modes) simulated with CTF
    at ``snr`` (None: noiseless), ``box`` px of ``pixel_size`` Å: (images
    (n, box, box), Table with the ground truth)."""
    from deephemnma.core.simulate import simulate
    from deephemnma.io.metadata import Table
    s, modes = reference
    ch = list(simulate(s.coords, s.weights, modes.vectors, n, box=box, pixel_size=pixel_size,
                       snr=snr, seed=seed, amplitude_scale=amplitude_scale))
    return np.concatenate([c[1] for c in ch]), Table.concatenate([c[2] for c in ch])


@pytest.fixture
def rng():
    return np.random.default_rng(12345)


def xmipplib():
    """xmippLib (the convention oracle from pyxmipp3), or skip."""
    return pytest.importorskip("xmippLib", reason="xmippLib (pyxmipp3) not installed")

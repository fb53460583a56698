"""What a clone holds by itself: the demo's structure as package data, the test
data in tests/data with their sources, the lookup of the files not shipped,
and the demo's line that opens its project in the GUI."""
import hashlib
import os
import pathlib
import shlex
import shutil
import subprocess
import sys
import unittest

import pytest

import deephemnma
from deephemnma.data import data_file, testdata
from deephemnma.demo import _find_ak, gui_command

from conftest import ROOT

PACKAGE_DATA = pathlib.Path(deephemnma.__file__).resolve().parent / "data"
MB = 1 << 20


@pytest.fixture
def no_extra_data(monkeypatch):
    """No folder of extra test data: what a bare clone has."""
    monkeypatch.delenv(testdata.EXTRA_VAR, raising=False)
    monkeypatch.delenv("DEEPHEMNMA_SHARED", raising=False)
    assert testdata.extra_dirs() == []


def test_demo_structure_is_the_package_file(no_extra_data):
    from deephemnma.core.structure import read_structure
    path = pathlib.Path(_find_ak(None))
    assert path == PACKAGE_DATA / "AK.pdb" and path.is_absolute()
    assert str(path) == data_file("AK.pdb")
    s = read_structure(path)                    # heavy atoms
    assert len(s) == 1656
    assert len(read_structure(path, "ca")) == 214


def test_demo_structure_given_path(tmp_path, capsys):
    pdb = tmp_path / "my.pdb"
    shutil.copy(data_file("AK.pdb"), pdb)
    assert _find_ak(str(pdb)) == str(pdb)
    with pytest.raises(SystemExit) as e:
        _find_ak(str(tmp_path / "missing.pdb"))
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "missing.pdb" in err[0] and "no such file" in err[0]


def test_data_file_unknown_name():
    with pytest.raises(FileNotFoundError, match="no data file 'nope.pdb'"):
        data_file("nope.pdb")


def test_setup_installs_the_package_data(tmp_path):
    """setup.py's package_data puts deephemnma/data (AK.pdb, its README) in the
    built package: build_py on a copy of the sources (so no egg-info lands in
    the checkout)."""
    src = tmp_path / "src"
    src.mkdir()
    for name in ("setup.py", "README.md", "requirements.txt"):
        shutil.copy(ROOT / name, src / name)
    shutil.copytree(ROOT / "deephemnma", src / "deephemnma",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    out = tmp_path / "build"
    r = subprocess.run([sys.executable, "setup.py", "-q", "build_py", "--build-lib", str(out)],
                       cwd=src, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    built = out / "deephemnma" / "data"
    for name in ("AK.pdb", "README.md", "__init__.py"):
        assert (built / name).read_bytes() == (PACKAGE_DATA / name).read_bytes(), name


def _sha(p):
    return hashlib.sha256(pathlib.Path(p).read_bytes()).hexdigest()


def test_tests_data_documented_and_small():
    sources = (testdata.TESTS_DATA / "SOURCES.md").read_text()
    files = sorted(p for p in testdata.TESTS_DATA.rglob("*") if p.is_file()
                   and p.name != "SOURCES.md")
    assert files, "tests/data is empty"
    for p in files:
        rel = p.relative_to(testdata.TESTS_DATA)
        assert p.stat().st_size < 5 * MB, rel
        # a row of the table of its folder names it, with its size and licence
        section = sources.split(f"## {rel.parts[0]}/", 1)[1].split("\n## ", 1)[0]
        rows = [ln for ln in section.splitlines() if ln.startswith(f"| {rel.name} |")]
        assert len(rows) == 1, rel
        cells = [c.strip() for c in rows[0].strip("|").split("|")]
        assert int(cells[1].replace(",", "")) == p.stat().st_size, rel
        assert cells[4], f"{rel}: no licence"
    not_shipped = sources.split("## Not shipped", 1)[1]
    for parts in testdata.NOT_SHIPPED:
        assert not testdata.TESTS_DATA.joinpath(*parts).exists(), parts
        assert f"| {'/'.join(parts)} |" in not_shipped, parts
    # AK.pdb is package data only, not a second copy in tests/data
    assert not any(_sha(p) == _sha(data_file("AK.pdb")) for p in files)


def test_lookup_order(no_extra_data, tmp_path, monkeypatch):
    shipped = testdata.locate("oracles", "8zpm.cif")
    assert shipped == testdata.TESTS_DATA / "oracles" / "8zpm.cif"
    assert testdata.locate("continuousflex", "AK.pdb") == PACKAGE_DATA / "AK.pdb"
    # a folder of extra data does not shadow the shipped files
    (tmp_path / "oracles").mkdir()
    (tmp_path / "oracles" / "8zpm.cif").write_text("decoy")
    (tmp_path / "continuousflex").mkdir()
    (tmp_path / "continuousflex" / "smallstack_img.stk").write_bytes(b"\0" * 16)
    monkeypatch.setenv(testdata.EXTRA_VAR, str(tmp_path))
    assert testdata.locate("oracles", "8zpm.cif") == shipped
    assert (testdata.locate("continuousflex", "smallstack_img.stk")
            == tmp_path / "continuousflex" / "smallstack_img.stk")


def test_not_shipped_skips_with_reason(no_extra_data):
    with pytest.raises(unittest.SkipTest) as e:
        testdata.locate("continuousflex", "smallstack_img.stk")
    msg = str(e.value)
    assert "continuousflex/smallstack_img.stk" in msg and "licence" in msg
    assert f"${testdata.EXTRA_VAR}/continuousflex/smallstack_img.stk" in msg
    with pytest.raises(unittest.SkipTest, match="21 MB"):
        testdata.locate("structures", "mmcif_6zu5.cif")


def test_unknown_test_file_is_an_error(no_extra_data):
    with pytest.raises(FileNotFoundError, match="SOURCES.md"):
        testdata.locate("oracles", "no_such_file.dat")


def test_demo_and_conftest_do_not_reach_beside_the_clone():
    for f in (ROOT / "tests" / "conftest.py", ROOT / "deephemnma" / "demo.py",
              ROOT / "deephemnma" / "data" / "testdata.py"):
        text = f.read_text()
        assert "shared/data" not in text and "../shared" not in text, f


def test_gui_command_is_a_shell_line():
    env = {"SCIPION_HOME": "/o u t/scipion", "SCIPION_USER_DATA": "/o u t/scipion/data"}
    line = gui_command("deephemnma_demo", env=env, python="/v env/bin/python")
    assert "\n" not in line
    assert shlex.split(line) == [
        "SCIPION_HOME=/o u t/scipion", "SCIPION_USER_DATA=/o u t/scipion/data",
        "SCIPION_PYTHON=/v env/bin/python", "/v env/bin/python", "-O", "-m", "scipion",
        "project", "deephemnma_demo"]
    # default: this Python, absolute, and the Scipion folders of the environment
    env2 = {"SCIPION_HOME": "/h", "SCIPION_USER_DATA": "/h/data"}
    words = shlex.split(gui_command("p", env=env2))
    assert words[3] == sys.executable and os.path.isabs(words[3])

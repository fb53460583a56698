"""Our NMA output in ContinuousFlex's layout, and the round trip through
ContinuousFlex's real protocols and viewers.

The layout tests run here (xmippLib, from pyxmipp3, reads the files as
ContinuousFlex does). The round trip runs in a separate venv holding
scipion-em-xmipp and scipion-em-continuousflex from the registry
(``make continuousflex-venv`` = ``bash tools/continuousflex_venv.sh``, cached
in .cflex-venv/) with Xmipp's pure-Python bindings from the folder named by
$DEEPHEMNMA_XMIPP_PYTHON (or $DEEPHEMNMA_SHARED/vendor/xmipp-python), and
ContinuousFlex's test particles (not shipped, see deephemnma.data.testdata);
it is skipped when any of them is absent.
"""
import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

from conftest import ROOT, shared_file

CFLEX_VENV = ROOT / ".cflex-venv"
CFLEX_PY = CFLEX_VENV / "bin" / "python"


def _xmipp_python():
    """Folder of Xmipp's pure-Python bindings (xmipp_base.py), or None."""
    if os.environ.get("DEEPHEMNMA_XMIPP_PYTHON"):
        return pathlib.Path(os.environ["DEEPHEMNMA_XMIPP_PYTHON"])
    if os.environ.get("DEEPHEMNMA_SHARED"):
        return pathlib.Path(os.environ["DEEPHEMNMA_SHARED"]) / "vendor" / "xmipp-python"
    return None


@pytest.fixture(scope="module")
def nma_run(tmp_path_factory):
    """Our NMA stage's output (AK, 10 modes) completed with the layout."""
    from deephemnma.protocols.convert import write_continuousflex_layout
    from deephemnma.stages import nma
    run = tmp_path_factory.mktemp("nma_run")
    out = nma.run(nma.Config(structure=str(shared_file("continuousflex", "AK.pdb")),
                             out=str(run), n_modes=10), progress=False)
    return run, out, write_continuousflex_layout(run, out.reference)


def test_layout_files_read_by_xmipplib(nma_run):
    xmipp = pytest.importorskip("xmippLib", reason="xmippLib (pyxmipp3) not installed")
    run, out, lay = nma_run
    # atoms.pdb beside modes.sqlite: the atoms the modes move
    with open(lay.atoms_pdb) as a, open(out.reference) as b:
        assert a.read() == b.read()
    # modes.xmd as ContinuousFlex's rowToMode reads it
    md = xmipp.MetaData(lay.modes_xmd)
    assert md.getColumnValues(xmipp.MDL_ORDER) == list(range(1, 11))
    assert md.getColumnValues(xmipp.MDL_NMA_MODEFILE)[6] == "modes/vec.7"
    assert md.getColumnValues(xmipp.MDL_ENABLED) == [-1] * 6 + [1] * 4
    vecs = {n: np.loadtxt(run / "modes" / f"vec.{n}") for n in range(7, 11)}
    # one distance profile per flexible mode: |atom shift| in the unit mode
    for n, v in vecs.items():
        prof = xmipp.MetaData(lay.distance_profile(n))
        d = np.array(prof.getColumnValues(xmipp.MDL_NMA_ATOMSHIFT))
        assert np.allclose(d, np.sqrt((v ** 2).sum(1)), atol=1e-6)
    assert not os.path.exists(lay.distance_profile(6))        # rigid modes have none
    # per atom: the largest shift over the flexible modes and that mode's file
    mx = xmipp.MetaData(lay.max_shifts)
    top = np.array(mx.getColumnValues(xmipp.MDL_NMA_ATOMSHIFT))
    files = mx.getColumnValues(xmipp.MDL_NMA_MODEFILE)
    shifts = np.array([np.sqrt((vecs[n] ** 2).sum(1)) for n in range(7, 11)])
    assert np.allclose(top, shifts.max(0), atol=1e-6)
    best = 7 + shifts.argmax(0)
    assert [int(f.rsplit(".", 1)[1]) for f in files] == best.tolist()
    assert len(set(best.tolist())) > 1 and all(os.path.isabs(f) for f in files)


def test_xmipp_pseudoatoms_format(tmp_path):
    """Pseudoatoms in Xmipp's PDB format: sigma (Å) on the second line (where
    ContinuousFlex's NMA reads it), DENS atoms, relative weights."""
    from deephemnma.core.structure import read_structure
    from deephemnma.protocols.convert import write_xmipp_pseudoatoms
    c = np.array([[1.0, -2.5, 3.25], [-10.125, 0.0, 7.5], [0.0, 0.0, 0.0]])
    write_xmipp_pseudoatoms(tmp_path / "p.pdb", c, [2.0, 4.0, 1.0], 1.75)
    lines = (tmp_path / "p.pdb").read_text().splitlines()
    assert lines[1].split()[2] == "1.750000"
    assert lines[2] == "REMARK intensityColumn occupancy"
    atoms = [ln for ln in lines if ln.startswith("ATOM")]
    assert len(atoms) == 3 and all(ln[12:16] == "DENS" for ln in atoms)
    assert [float(ln[54:60]) for ln in atoms] == [0.5, 1.0, 0.25]
    s = read_structure(tmp_path / "p.pdb", "all")
    assert np.allclose(s.coords, c, atol=1e-3)


def test_modes_set_numbered_like_continuousflex(nma_run, tmp_path):
    """modes_to_set: each NormalMode's objId is its number (ContinuousFlex's
    rowToMode), so 'modes 7-8' selects vec.7 and vec.8."""
    pytest.importorskip("pwem")
    import pwem.objects as emobj
    from deephemnma.protocols.convert import modes_to_set
    run, out, lay = nma_run

    class Holder:
        def _createSetOfNormalModes(self):
            return emobj.SetOfNormalModes(filename=str(tmp_path / "modes.sqlite"))
    nm = modes_to_set(Holder(), lay.modes_xmd, emobj.AtomStruct(filename=lay.atoms_pdb))
    assert [m.getObjId() for m in nm] == list(range(1, 11))
    assert nm[7].getModeFile() == str(run / "modes" / "vec.7")
    assert nm.getPdb().getFileName() == lay.atoms_pdb


def test_continuousflex_round_trip(tmp_path):
    """See tests/continuousflex_roundtrip.py (it runs in the ContinuousFlex
    venv): our NMA -> FlexProtAlignmentNMA(copyDeformations = our HEMNMA)
    -> FlexProtDimredNMA (sklearn PCA); ContinuousFlex's particles -> our
    train and landscape; ContinuousFlex's viewers plot our results."""
    if not (CFLEX_VENV / ".built").exists() or not CFLEX_PY.exists():
        pytest.skip("ContinuousFlex test venv not built (or its build failed): run "
                    "`make continuousflex-venv`")
    xmipp_py = _xmipp_python()
    if xmipp_py is None or not (xmipp_py / "xmipp_base.py").exists():
        pytest.skip("Xmipp's pure-Python bindings not available: set DEEPHEMNMA_XMIPP_PYTHON "
                    f"to the folder holding xmipp_base.py (now: {xmipp_py})")
    stack = shared_file("continuousflex", "smallstack_img.stk")
    home = tmp_path / "cflex_home"
    home.mkdir()
    env = dict(os.environ, PYTHONPATH=str(xmipp_py), CONTINUOUSFLEX_HOME=str(home),
               MPLBACKEND="Agg", DEEPHEMNMA_EXTRA_TEST_DATA=str(stack.parents[1]))
    for k in ("SCIPION_HOME", "SCIPION_USER_DATA", "SCIPION_TESTS", "SCIPION_PYTHON"):
        env.pop(k, None)                 # the inner run makes its own Scipion home
    script = pathlib.Path(__file__).with_name("continuousflex_roundtrip.py")
    r = subprocess.run([str(CFLEX_PY), str(script), str(tmp_path / "out")], env=env,
                       capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, (r.stdout[-3000:] + r.stderr[-6000:])
    res = json.loads((tmp_path / "out" / "result.json").read_text())
    assert res["continuousflex_protocols"] > 20 and res["modes"] == 10
    assert res["pngs"] == ["cflex_alignment_7.png", "cflex_alignment_7_8.png",
                           "cflex_dimred_1_2.png", "cflex_nma_max_shifts.png",
                           "cflex_nma_mode7_profile.png",
                           "cflex_nma_pseudoatoms_max_shifts.png"]
    assert 100 < res["pseudoatoms"] < 3000
    print(json.dumps(res["seconds"]), file=sys.stderr)

"""Structures and normal modes: ProDy's reference ANM of ubiquitin as the oracle."""
import numpy as np
import pytest

from deephemnma.core.nma import (anm_hessian, compute_modes, parse_mode_list,
                                 read_continuousflex, write_continuousflex)
from deephemnma.core.structure import read_structure, write_pdb
from deephemnma.errors import InputError

from conftest import shared_file


@pytest.fixture(scope="module")
def ubi():
    return read_structure(shared_file("oracles", "pdb1ubi_ca.pdb"), "ca")


@pytest.fixture(scope="module")
def ak():
    return read_structure(shared_file("continuousflex", "AK.pdb"))


def test_read_selections(ak):
    assert len(ak) == 1656                      # heavy atoms, as documented
    ca = read_structure(shared_file("continuousflex", "AK.pdb"), "ca")
    assert len(ca) == 214
    assert set(np.unique(ak.weights)) <= {6.0, 7.0, 8.0, 16.0}
    rib = read_structure(shared_file("oracles", "8zpm.cif"), "ca+p")
    assert len(rib) > 0 and set(rib.names) <= {"CA", "P"}
    with pytest.raises(InputError, match="no atom matches"):
        read_structure(shared_file("continuousflex", "AK.pdb"), "name P and nucleic")


def test_anm_eigenvalues_match_prody_oracle(ubi):
    ref = np.loadtxt(shared_file("oracles", "anm1ubi_evalues.dat"))[:, 1]
    m = compute_modes(ubi, n_modes=20, cutoff=15.0, method="anm")
    rel = np.abs(m.eigenvalues[6:20] - ref[6:20]) / ref[6:20]
    assert rel.max() < 1e-3
    assert np.abs(m.eigenvalues[:6]).max() < 1e-8
    assert list(m.numbers[:8]) == list(range(1, 9))


def test_anm_vectors_match_prody_oracle(ubi):
    vec = np.loadtxt(shared_file("oracles", "anm1ubi_vectors.dat"))
    m = compute_modes(ubi, n_modes=20, cutoff=15.0, method="anm")
    # the oracle: 3N rows; column 0 the atom number, then the flexible modes 7, 8, ...
    ours = m.vectors[6:12].reshape(6, -1)
    theirs = vec[:, 1:7].T
    theirs = theirs / np.linalg.norm(theirs, axis=1, keepdims=True)
    ov = np.abs((ours * theirs).sum(1))
    assert ov.min() > 0.999


def test_hessian_matches_prody(ubi):
    prody = pytest.importorskip("prody")
    anm = prody.ANM()
    anm.buildHessian(ubi.coords, cutoff=13.0, gamma=1.0)
    assert np.abs(anm.getHessian() - anm_hessian(ubi.coords, 13.0).toarray()).max() < 1e-10


def test_modes_unit_norm_orthogonal_and_rtb_matches_anm(ak):
    rtb = compute_modes(ak, n_modes=12, cutoff=8.0, method="rtb", block_size=1)
    flat = rtb.vectors.reshape(len(rtb), -1)
    assert np.allclose(np.linalg.norm(flat, axis=1), 1.0)
    assert np.abs(flat @ flat.T - np.eye(len(rtb))).max() < 1e-8
    assert np.all(np.diff(rtb.eigenvalues) >= -1e-10)
    assert np.all((rtb.collectivity > 0) & (rtb.collectivity <= 1))
    ca = read_structure(shared_file("continuousflex", "AK.pdb"), "ca")
    anm = compute_modes(ca, n_modes=9, cutoff=12.0, method="anm")
    rtb_ca = compute_modes(ca, n_modes=9, cutoff=12.0, method="rtb", block_size=1)
    ov = np.abs(np.einsum("inc,inc->i", anm.vectors[6:9], rtb_ca.vectors[6:9]))
    assert ov.min() > 0.95      # one residue = one atom: RTB == ANM up to sign


def test_continuousflex_round_trip(tmp_path, ak):
    m = compute_modes(ak, n_modes=10, cutoff=8.0, method="rtb", block_size=2)
    write_continuousflex(m, tmp_path)
    lines = (tmp_path / "modes" / "vec.7").read_text().splitlines()
    assert len(lines) == len(ak) and len(lines[0].split()) == 3
    xmd = (tmp_path / "modes.xmd").read_text()
    for col in ("_nmaModefile", "_order_", "_enabled", "_nmaCollectivity", "_nmaEigenval"):
        assert col in xmd
    back = read_continuousflex(tmp_path)
    assert np.allclose(back.vectors, m.vectors, atol=1e-9)
    assert np.allclose(back.eigenvalues, m.eigenvalues, rtol=1e-6, atol=1e-12)
    sel = back.select(parse_mode_list("7-9"))
    assert list(sel.numbers) == [7, 8, 9]
    X = sel.deform(np.array([[100.0, 0, 0]]))
    assert np.allclose(np.linalg.norm(X[0] - ak.coords), 100.0)   # unit-norm mode
    with pytest.raises(InputError, match="not available"):
        back.select([7, 30])


def test_bad_mode_requests(ubi):
    with pytest.raises(InputError, match="degrees of freedom"):
        compute_modes(ubi.coords[:3], n_modes=20, method="anm")
    with pytest.raises(InputError, match="bad mode list"):
        parse_mode_list("7-x")


def test_write_pdb_multimodel(tmp_path, ak):
    models = np.stack([ak.coords, ak.coords + 1.0, ak.coords - 1.0])
    write_pdb(tmp_path / "anim.pdb", ak, models)
    text = (tmp_path / "anim.pdb").read_text()
    assert text.count("MODEL ") == 3 and text.count("ENDMDL") == 3
    back = read_structure(tmp_path / "anim.pdb")
    assert len(back) == len(ak) and np.allclose(back.coords, ak.coords, atol=1e-3)


def test_cli_nma(tmp_path):
    from deephemnma.cli import main
    pdb = shared_file("oracles", "pdb1ubi_ca.pdb")
    rc = main(["nma", "--structure", str(pdb), "--out", str(tmp_path / "o"), "--modes", "10",
               "--method", "anm", "--cutoff", "15", "--selection", "ca"])
    assert rc == 0
    assert len(read_continuousflex(tmp_path / "o").numbers) == 10
    assert main(["nma", "--structure", str(tmp_path / "nope.pdb"), "--out",
                 str(tmp_path / "p")]) == 2
    assert not (tmp_path / "p").exists()

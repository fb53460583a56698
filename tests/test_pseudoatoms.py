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

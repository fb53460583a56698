"""EM maps as Gaussian pseudoatoms."""
import numpy as np
import pytest
import torch

from deephemnma.core.nma import compute_modes
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
    # compare on the atoms: interpolate pseudoatom displacements at CA positions
    d = ((ca.coords[:, None, :] - c[None]) ** 2).sum(-1)
    nearest = np.argsort(d, axis=1)[:, :4]
    ov = np.zeros((3, 3))
    for i in range(3):
        vi = atomic.vectors[6 + i].ravel()
        for j in range(3):
            vj = pseudo.vectors[6 + j][nearest].mean(1).ravel()
            ov[i, j] = abs(vi @ vj) / (np.linalg.norm(vi) * np.linalg.norm(vj))
    # each atomic mode 7-9 is well represented by the span of pseudoatomic modes 7-9
    assert np.sqrt((ov ** 2).sum(1)).min() > 0.6, ov


def test_real_map_reports_unreachable_target(tmp_path):
    """The 3j9g potential (64^3, 4.4 Å voxels) is aliased at voxel level; our
    fit stalls near 40 % error (known limitation, see the issue note): the
    command must say so clearly and write nothing."""
    from deephemnma.cli import main
    m = shared_file("oracles", "3j9g_potential_ps4_4.mrc")
    out = tmp_path / "p"
    assert main(["pseudoatoms", "--map", str(m), "--out", str(out), "--sigma-voxels", "1.5",
                 "--max-atoms", "1500"]) == 2
    assert not (tmp_path / "p.pdb").exists()
    # with a reachable target it converts, and the PDB round-trips as pseudoatoms
    assert main(["pseudoatoms", "--map", str(m), "--out", str(out), "--sigma-voxels", "1.5",
                 "--target-error", "60"]) == 0
    pdb = read_structure(str(out) + ".pdb")
    assert pdb.is_pseudoatomic and pdb.sigma == pytest.approx(1.5 * 4.4, rel=1e-3)
    vol, vs = read_volume(m)
    approx, _ = read_volume(str(out) + "_approx.mrc")
    assert relative_error(vol, approx) <= 0.60 + 1e-6
    assert pdb.weights.max() == pytest.approx(1.0)


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

"""Electron-scattering atom models, per-atom widths in the projector, the
B-factor estimate and its options."""
import math

import numpy as np
import pytest
import torch

from deephemnma.core.projector import Projector, project
from deephemnma.core.rotations import euler_to_matrix, random_euler
from deephemnma.core.scattering import (PENG, atom_model, b_to_variance, element_symbols,
                                        estimate_b_factor, fitted_gaussian, scattering_factor)

from conftest import shared_file

# Peng et al. (1996) Table 1: the other published fit (0 < s < 2 Å^-1) of the
# same scattering factors as core.scattering's Table 3 (0 < s < 6 Å^-1)
PENG_TABLE1 = {
    "H": ((0.0349, 0.1201, 0.197, 0.0573, 0.1195), (0.5347, 3.5867, 12.3471, 18.9525, 38.6269)),
    "C": ((0.0893, 0.2563, 0.757, 1.0487, 0.3575), (0.2465, 1.71, 6.4094, 18.6113, 50.2523)),
    "N": ((0.1022, 0.3219, 0.7982, 0.8197, 0.1715), (0.2451, 1.7481, 6.1925, 17.3894, 48.1431)),
    "O": ((0.0974, 0.2921, 0.691, 0.699, 0.2039), (0.2067, 1.3815, 4.6943, 12.7105, 32.4726)),
    "S": ((0.2497, 0.5628, 1.3899, 2.1865, 0.7715), (0.2681, 1.6711, 7.0267, 19.5377, 50.3888)),
    "P": ((0.2548, 0.6106, 1.4541, 2.3204, 0.8477), (0.2908, 1.874, 8.5176, 24.3434, 63.2996)),
}


@pytest.mark.parametrize("element", sorted(PENG))
def test_factors_match_the_other_published_fit(element):
    a, b = map(np.array, PENG_TABLE1[element])
    s = np.array([0.0, 0.1, 0.25, 0.5, 1.0, 2.0])
    other = (a * np.exp(-b * s[:, None] ** 2)).sum(1)
    np.testing.assert_allclose(scattering_factor(element, s), other, rtol=0.02, atol=2e-3)


def test_hydrogen_forward_scattering_is_the_bohr_radius():
    """Mott-Bethe for the hydrogen 1s atom: f_e(0) = a0 = 0.529177 Å."""
    assert scattering_factor("H", 0.0) == pytest.approx(0.529177, rel=2e-3)
    # and carbon scatters ~4.7x hydrogen forward, not 6x (its Z)
    assert scattering_factor("C", 0.0) / scattering_factor("H", 0.0) == pytest.approx(4.74,
                                                                                      abs=0.02)


def test_unknown_elements_fall_back_and_names_give_elements():
    assert scattering_factor("ZN", 0.3) == scattering_factor("C", 0.3)
    assert list(element_symbols(["", " n", "S"], ["CA", "N", "SD"])) == ["C", "N", "S"]


def test_fitted_gaussian_follows_the_factor_in_its_band():
    w, b = fitted_gaussian("C", 0.2)
    s = np.linspace(0, 0.2, 50)
    f = scattering_factor("C", s)
    assert np.abs(w * np.exp(-b * s ** 2) - f).max() < 0.025 * f[0]
    assert 10 < b < 25                      # carbon's width ~0.45 Å, not 1 Å (b = 79)


def test_atom_model_widths_and_b_factor():
    w, s = atom_model("gaussian", [6.0, 7.0], sigma=1.0, b_factor=0.0)
    assert s == 1.0 and list(w) == [6.0, 7.0]           # the default: unchanged
    _, s = atom_model("gaussian", [6.0], sigma=1.0, b_factor=80.0)
    assert s == pytest.approx(math.sqrt(1 + 80 / (8 * math.pi ** 2)))
    w5, s5 = atom_model("scattering5", [6.0, 8.0], ["C", "O"], b_factor=20.0)
    assert w5.shape == s5.shape == (2, 5)
    np.testing.assert_allclose(s5[1] ** 2, b_to_variance(np.array(PENG["O"][1]) + 20.0))
    w1, s1 = atom_model("scattering", [6.0, 8.0], ["C", "O"], pixel_size=1.3)
    assert w1[0] == pytest.approx(scattering_factor("C", 0.0), rel=0.02) and s1.shape == (2,)
    # pseudoatoms keep their own width (and weights), plus B
    wp, sp = atom_model("scattering", [0.3], None, pseudo_sigma=2.0, b_factor=0.0)
    assert sp == 2.0 and list(wp) == [0.3]
    with pytest.raises(ValueError):
        atom_model("scattering", [6.0], None)


@pytest.mark.parametrize("radius", [None, 5.0])
def test_per_atom_sigma_equals_the_scalar_path(radius):
    rng = np.random.default_rng(2)
    c = torch.tensor(rng.normal(0, 8, (40, 3)))
    w = torch.tensor(rng.uniform(0.5, 2, 40))
    A = torch.tensor(euler_to_matrix(random_euler(3, rng)))
    sh = torch.tensor(rng.normal(0, 2, (3, 2)))
    ref = project(c, w, A, sh, 32, 1.2, 0.9, radius)
    per_atom = project(c, w, A, sh, 32, 1.2, torch.full((40,), 0.9, dtype=torch.float64), radius)
    parts = project(c, torch.stack([0.25 * w, 0.75 * w], 1), A, sh, 32, 1.2, 0.9, radius)
    assert torch.equal(ref, per_atom)
    assert torch.allclose(ref, parts, atol=1e-12)
    # per-atom widths: each atom as projected alone, and the gradient
    sig = torch.tensor(rng.uniform(0.4, 1.5, 40))
    both = project(c, w, A, sh, 32, 1.2, sig, radius)
    alone = sum(project(c[i:i + 1], w[i:i + 1], A, sh, 32, 1.2, float(sig[i]), radius)
                for i in range(40))
    # (local stamps: each atom's window is the widest atom's, truncation < 6e-7)
    assert torch.allclose(both, alone, atol=1e-10 if radius is None else 1e-6)
    x = c.clone().requires_grad_(True)
    g = torch.autograd.grad(project(x, w, A, sh, 32, 1.2, sig, radius).square().sum(), x)[0]
    d = torch.zeros_like(c)
    d[5, 0] = 1e-6
    f = lambda y: project(y, w, A, sh, 32, 1.2, sig, radius).square().sum()  # noqa: E731
    assert float(g[5, 0]) == pytest.approx(float((f(c + d) - f(c - d)) / 2e-6), rel=1e-4)


def test_projector_components_match_xmipp_style_volume():
    """The five-Gaussian model of AK through the Projector: same total weight
    as the sum of f(0) over its atoms."""
    from deephemnma.core.structure import read_structure
    s, _ = read_structure(shared_file("continuousflex", "AK.pdb")).center()
    w, sig = atom_model("scattering5", s.weights, s.elements, s.names)
    P = Projector(s.coords, w, None, 96, 1.0, sigma=sig, radius=5.0)
    img = P(None, euler_to_matrix(np.zeros((1, 3))))
    f0 = sum(scattering_factor(e, 0.0) for e in element_symbols(s.elements, s.names))
    assert float(img.sum()) == pytest.approx(f0, rel=1e-3)


def test_estimate_b_factor_peak():
    b, scores = estimate_b_factor(lambda b: -(b - 47.0) ** 2, grid=(0, 20, 40, 60, 80))
    assert b == pytest.approx(47.0, abs=1e-6) and len(scores) == 5


@pytest.fixture(scope="module")
def ref():
    from deephemnma.stages.reference import load_reference
    return load_reference(shared_file("continuousflex", "AK.pdb"))


@pytest.mark.parametrize("b_true", [0.0, 60.0])
def test_b_factor_recovered_from_simulated_particles(ref, b_true):
    """Particles of Gaussian atoms widened by a known B (SNR 1, CTF): the
    estimate at the true poses is that B within 15 Å²."""
    from deephemnma.core.align import AlignOptions, Aligner
    from deephemnma.core.ctf import CTFParams
    from deephemnma.core.simulate import simulate
    from deephemnma.io.metadata import Table
    s, modes = ref
    box, ps = 48, 1.3
    sig = math.sqrt(1.0 + b_true / (8 * math.pi ** 2))
    ch = list(simulate(s.coords, s.weights, modes.vectors, 24, box=box, pixel_size=ps, snr=1.0,
                       seed=5, amplitude_scale=150, sigma=sig, voltage=300.0, cs=2.7,
                       defocus=12000.0))
    imgs, t = np.concatenate([c[1] for c in ch]), Table.concatenate([c[2] for c in ch])
    al = Aligner(s.coords, s.weights, modes.vectors, box, ps, AlignOptions(b_factor="auto"))
    poses = {"angles": t.angles(), "shifts": t.shifts(), "amplitudes": t["nmaDisplacements"]}
    b, scores = al.estimate_b_factor(imgs, CTFParams.from_table(t), poses)
    assert b == pytest.approx(b_true, abs=15.0), scores


def test_options_checked_with_one_line():
    from deephemnma.errors import InputError
    from deephemnma.stages import align, refine
    for cls in (align.Config, refine.Config):
        for kw, word in ((dict(atom_model="spheres"), "--atom-model"),
                         (dict(b_factor=-5.0), "--b-factor"),
                         (dict(b_factor="sharp"), "--b-factor"),
                         (dict(sigma=0.0), "--sigma")):
            with pytest.raises(InputError, match=word):
                cls(pixel_size=1.0, **kw).validate_options()
        cls(pixel_size=1.0, atom_model="scattering", b_factor="auto").validate_options()
        cls(pixel_size=1.0, b_factor=80.0).validate_options()


def test_cli_bad_b_factor_exit_2(tmp_path, capsys):
    from deephemnma.cli import main
    ak = str(shared_file("continuousflex", "AK.pdb"))
    argv = ["align", "--particles", ak, "--modes", str(tmp_path), "--structure", ak,
            "--pixel-size", "1.3", "--out", str(tmp_path / "o" / "a.xmd")]
    for extra, word in ((["--b-factor", "sharp"], "--b-factor"),
                        (["--atom-model", "spheres"], "--atom-model")):
        capsys.readouterr()
        assert main(argv + extra) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and word in err[0], err
    assert not (tmp_path / "o").exists()


def test_refine_stage_estimates_b_factor(ref, tmp_path):
    """refine --atom-model scattering --b-factor auto on particles of sigma-1 Å
    Gaussian atoms: the B that widens carbon's scattering to ~1 Å (~62 Å²)."""
    from deephemnma.core.simulate import simulate_to_folder
    from deephemnma.stages import refine
    s, modes = ref
    d = tmp_path / "d"
    simulate_to_folder(d, s, modes, 12, box=48, pixel_size=1.3, snr=None, seed=3, quiet=True,
                       amplitude_scale=150)
    cfg = refine.Config(particles=str(d / "particles.xmd"), modes=str(d),
                        structure=str(d / "reference.pdb"), pixel_size=1.3,
                        out=str(tmp_path / "r" / "r.xmd"), refine_fine_iters=3,
                        refine_coarse_iters=0, atom_model="scattering", b_factor="auto",
                        device="cpu")
    out = refine.run(cfg, progress=False)
    assert out.n_aligned == 12
    assert out.b_factor == pytest.approx(62.0, abs=15.0)
    assert any("B-factor" in line for line in refine.summary(out, cfg))

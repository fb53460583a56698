"""Landscape (PCA, groups, animations) and reconstruction / FSC."""
import os

import numpy as np
import pytest
import torch

from deephemnma.core import landscape as L
from deephemnma.core.reconstruct import fsc, fsc_resolution, reconstruct, resolution_at
from deephemnma.core.rotations import random_euler
from deephemnma.errors import InputError
from deephemnma.io.metadata import Table, read_metadata, write_xmd

from conftest import shared_file, xmipplib


def test_pca_recovers_plane():
    rng = np.random.default_rng(0)
    basis = np.linalg.qr(rng.normal(size=(4, 2)))[0].T          # a 2D plane in 4D
    z = rng.normal(size=(2000, 2)) * [100, 30]
    x = z @ basis + [5, -3, 1, 0] + rng.normal(size=(2000, 4)) * 0.5
    p = L.fit_pca(x, 2)
    assert p["explained_variance_ratio"].sum() > 0.999
    assert np.abs(np.abs(p["components"] @ basis.T) - np.eye(2)).max() < 0.03
    c = L.transform(p, x)
    assert np.abs(L.inverse(p, c) - x).max() < 3
    assert np.allclose(np.abs(c[:, 0]).std(), np.abs(z[:, 0]).std(), rtol=0.02)


def test_group_selections():
    c = np.array([[x, y] for x in range(-5, 6) for y in range(-5, 6)], float)
    r = L.select_rectangle(c, 0, 2, -1, 1)
    assert r.sum() == 9 and np.all((c[r, 0] >= 0) & (c[r, 0] <= 2))
    poly = L.select_polygon(c, [[-0.5, -0.5], [4, -0.5], [-0.5, 4]])
    assert set(map(tuple, c[poly])) == {(x, y) for x in range(4) for y in range(4) if x + y <= 3}
    e = L.select_expression(c, "PC1 > 2 and not PC2 < 0 or PC1 == -5")
    expect = ((c[:, 0] > 2) & ~(c[:, 1] < 0)) | (c[:, 0] == -5)
    assert np.array_equal(e, expect)
    for bad, msg in (("PC3 > 0", "unknown axis"), ("PC1 >", "cannot parse"),
                     ("__import__('os')", "not allowed"), ("PC1 + 1", "not a condition")):
        with pytest.raises(InputError, match=msg):
            L.select_expression(c, bad)
    x = np.random.default_rng(1).normal(size=(5000, 2))
    lab = L.split_axis(x, 0, min_size=900, trim=0.02)
    counts = np.bincount(lab[lab >= 0])
    assert counts.min() >= 900 and len(counts) >= 2
    assert (lab == -1).sum() == pytest.approx(200, abs=2)        # 2 % tails
    widths = [np.ptp(x[lab == g, 0]) for g in range(len(counts))]
    assert max(widths) / min(widths) < 1.1                       # equal-width intervals
    with pytest.raises(InputError):
        L.split_axis(x[:100], 0, min_size=900)
    km = L.kmeans_groups(np.vstack([x[:100] - 10, x[:100] + 10]), 2)
    assert len(set(km[:100])) == 1 and km[0] != km[150]


def test_density_plot_million_points(tmp_path):
    import time
    c = np.random.default_rng(0).normal(size=(1_000_000, 2))
    t0 = time.perf_counter()
    L.density_plot(c, tmp_path / "d.png", labels=np.where(c[:, 0] > 1, 0, -1))
    assert time.perf_counter() - t0 < 30
    assert (tmp_path / "d.png").stat().st_size > 10_000


def _ak_volume(N, ps, sigma):
    from deephemnma.core.projector import atoms_to_volume
    from deephemnma.core.structure import read_structure
    s, _ = read_structure(shared_file("continuousflex", "AK.pdb")).center()
    return atoms_to_volume(torch.tensor(s.coords), torch.tensor(s.weights), N, ps, sigma).numpy()


def test_reconstruction_from_xmipp_projections(tmp_path):
    """Noiseless projections made by xmippLib (independent projector) at known
    Xmipp angles and shifts: the reconstruction matches the source volume."""
    xm = xmipplib()
    from deephemnma.io.stacks import write_volume
    from deephemnma.core.projector import fourier_shift
    N, ps = 48, 2.0
    vol = _ak_volume(N, ps, 2.0)
    write_volume(tmp_path / "v.mrc", vol, ps)
    V = xm.Image(str(tmp_path / "v.mrc"))
    V.convert2DataType(xm.DT_DOUBLE)
    fp = xm.FourierProjector(V, 2.0, 0.5, 1)
    n = 1500
    ang = random_euler(n, 3)
    sh = np.random.default_rng(4).uniform(-2, 2, (n, 2))
    imgs = np.empty((n, N, N), np.float32)
    for i in range(n):
        out = xm.Image()
        out.setDataType(xm.DT_DOUBLE)
        fp.projectVolume(out, *ang[i])
        imgs[i] = out.getData()
    imgs = fourier_shift(torch.tensor(imgs), -torch.tensor(sh, dtype=torch.float32)).numpy()
    rec = reconstruct(imgs, ang, sh, pixel_size=ps)
    r = fsc_resolution(rec, vol, ps)
    assert r["res_0.143"] < 2 * ps * 1.1              # ~Nyquist (4 Å)
    assert r["res_0.5"] < 2 * ps * 1.25
    assert (rec * vol).sum() / (vol * vol).sum() == pytest.approx(1.0, rel=0.05)
    # wrong angles (psi off by 10 deg) are measurably worse: the test can fail
    bad = reconstruct(imgs, ang + [0, 0, 10], sh, pixel_size=ps)
    assert fsc_resolution(bad, vol, ps)["res_0.5"] > r["res_0.5"] * 1.3


def test_reconstruction_with_ctf_wiener():
    from deephemnma.core.ctf import CTFParams, apply_ctf
    from deephemnma.core.projector import project_volume
    from deephemnma.core.rotations import euler_to_matrix
    N, ps = 40, 2.0
    vol = _ak_volume(N, ps, 2.0)
    ang = random_euler(1200, 5)
    imgs = project_volume(torch.tensor(vol), torch.tensor(euler_to_matrix(ang),
                                                          dtype=torch.float32))
    ctf = CTFParams(np.random.default_rng(0).uniform(8000, 20000, 1200), voltage=300, cs=2.7)
    imgs = apply_ctf(imgs, ctf, ps).numpy()
    with_ctf = reconstruct(imgs, ang, None, ctf, ps)
    without = reconstruct(imgs, ang, None, None, ps)
    r1 = fsc_resolution(with_ctf, vol, ps)
    r0 = fsc_resolution(without, vol, ps)
    assert r1["res_0.5"] < 2 * ps * 1.5 and r1["res_0.5"] < r0["res_0.5"]


def test_fsc_properties():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(32, 32, 32))
    f, c = fsc(a, a, 1.0)
    assert np.allclose(c, 1) and f[-1] == pytest.approx(0.5)
    f, c = fsc(a, rng.normal(size=(32, 32, 32)), 1.0)
    assert np.abs(c[2:]).max() < 0.3
    assert resolution_at(np.array([0, .1, .2, .3]), np.array([1, .8, .4, .1]), 0.5) == \
        pytest.approx(1 / 0.175)


def test_cli_landscape_groups_animation(tmp_path):
    from deephemnma.cli import main
    from deephemnma.core.nma import compute_modes, write_continuousflex
    from deephemnma.core.structure import read_structure, write_pdb
    s, _ = read_structure(shared_file("continuousflex", "AK.pdb"), "ca").center()
    m = compute_modes(s, 12, cutoff=12, method="anm")
    write_continuousflex(m, tmp_path / "modes")
    write_pdb(tmp_path / "ref.pdb", s)
    from deephemnma.core.simulate import helix_amplitudes
    q = helix_amplitudes(np.random.default_rng(0).uniform(0, 1, 3000))
    write_xmd(tmp_path / "p.xmd", Table({"itemId": np.arange(1, 3001), "nmaDisplacements": q}))
    args = ["landscape", "--particles", str(tmp_path / "p.xmd"), "--out", str(tmp_path / "L"),
            "--split", "1:900", "--structure", str(tmp_path / "ref.pdb"), "--modes",
            str(tmp_path / "modes"), "--frames", "7"]
    assert main(args) == 0
    groups = read_metadata(tmp_path / "L" / "groups.xmd")
    assert groups["classCount"].min() >= 900 and groups["nmaDisplacements"].shape[1] == 3
    g1 = read_metadata(tmp_path / "L" / "group_01.xmd")
    assert len(g1) == groups["classCount"][0]
    text = (tmp_path / "L" / "axis_1.pdb").read_text()
    assert text.count("MODEL ") == 7
    assert text.count("\nATOM") + text.startswith("ATOM") == 7 * len(s)
    assert "coordset" in (tmp_path / "L" / "axis_1.cxc").read_text()
    assert (tmp_path / "L" / "centroid_01.pdb").exists()
    assert main(["landscape", "--particles", str(tmp_path / "p.xmd"), "--out",
                 str(tmp_path / "M"), "--select", "PC7 > 0"]) == 2


def _relion_reconstruct():
    import shutil
    root = os.environ.get("DEEPHEMNMA_RELION_ROOT",
                          os.path.join(os.path.dirname(__file__), "..", ".oracles", "relion"))
    exe = os.path.join(root, "usr", "bin", "relion_reconstruct")
    if os.path.exists(exe):
        return exe, os.path.join(root, "usr", "lib", "x86_64-linux-gnu")
    exe = shutil.which("relion_reconstruct")
    if exe:
        return exe, None
    pytest.skip("relion_reconstruct not available (make oracles unpacks Debian's relion)")


def test_reconstruction_matches_relion(tmp_path):
    """Oracle: RELION 3.1's relion_reconstruct on the same images, angles and
    shifts, given through our RELION 3.1 STAR writer (so the STAR shift
    convention is checked too)."""
    import subprocess
    exe, lib = _relion_reconstruct()
    from deephemnma.core.projector import project
    from deephemnma.core.rotations import euler_to_matrix
    from deephemnma.core.structure import read_structure
    from deephemnma.io.metadata import image_ref, write_star
    from deephemnma.io.stacks import read_volume, write_stack
    s, _ = read_structure(shared_file("continuousflex", "AK.pdb")).center()
    N, ps, n = 48, 2.0, 1500
    ang = random_euler(n, 8)
    sh = np.random.default_rng(9).uniform(-2, 2, (n, 2))
    imgs = project(torch.tensor(s.coords), torch.tensor(s.weights),
                   torch.tensor(euler_to_matrix(ang)), torch.tensor(sh), N, ps, 2.0).numpy()
    write_stack(tmp_path / "p.mrcs", imgs, ps)
    t = Table({"image": np.array([image_ref(i + 1, "p.mrcs") for i in range(n)], dtype=object),
               "angleRot": ang[:, 0], "angleTilt": ang[:, 1], "anglePsi": ang[:, 2],
               "shiftX": sh[:, 0], "shiftY": sh[:, 1]})
    write_star(tmp_path / "p.star", t, pixel_size=ps, image_size=N)
    env = dict(os.environ)
    if lib:
        env["LD_LIBRARY_PATH"] = lib + ":" + env.get("LD_LIBRARY_PATH", "")
    subprocess.run([exe, "--i", "p.star", "--o", "relion.mrc", "--angpix", str(ps)],
                   cwd=tmp_path, env=env, check=True, capture_output=True, timeout=300)
    theirs, _ = read_volume(tmp_path / "relion.mrc")
    ours = reconstruct(imgs, ang, sh, pixel_size=ps)
    vol = _ak_volume(N, ps, 2.0)
    r_them = fsc_resolution(theirs, vol, ps)
    r_us = fsc_resolution(ours, vol, ps)
    r_both = fsc_resolution(ours, theirs, ps)
    assert r_both["res_0.5"] < 2 * ps * 1.15            # the two agree to ~Nyquist
    assert r_us["res_0.5"] <= r_them["res_0.5"] * 1.05


def test_model_map_matches_group_reconstruction(tmp_path):
    """`model-map` of the model the images came from (a deformed AK, written
    off-centre) agrees with their reconstruction better than the map of the
    undeformed reference does (the paper's Fig. 7 comparison)."""
    from deephemnma.cli import main
    from deephemnma.core.nma import compute_modes
    from deephemnma.core.projector import project
    from deephemnma.core.rotations import euler_to_matrix
    from deephemnma.core.structure import read_structure, write_pdb
    from deephemnma.io.stacks import read_volume
    s, _ = read_structure(shared_file("continuousflex", "AK.pdb"), "ca").center()
    m = compute_modes(s, 7, cutoff=12, method="anm")
    deformed = s.coords + 250.0 * m.vectors[-1]              # mode 7, ~17 Å RMS
    N, ps = 40, 2.5
    ang = random_euler(1500, 3)
    rot = torch.tensor(euler_to_matrix(ang), dtype=torch.float64)
    imgs = project(torch.tensor(deformed), torch.ones(len(s.coords), dtype=torch.float64),
                   rot, None, N, ps, sigma=1.0).numpy()
    rec = reconstruct(imgs, ang, None, None, ps)
    off = np.array([12.0, -7.0, 3.0])                 # PDB frame != projection frame
    write_pdb(tmp_path / "deformed.pdb", s, coords=deformed + off)
    write_pdb(tmp_path / "ref.pdb", s)
    for name in ("deformed", "ref"):
        assert main(["model-map", "--structure", str(tmp_path / f"{name}.pdb"), "--out",
                     str(tmp_path / f"{name}.mrc"), "--box", str(N), "--pixel-size", str(ps),
                     "--selection", "all"]) == 0
    vd, vs = read_volume(tmp_path / "deformed.mrc")
    vr, _ = read_volume(tmp_path / "ref.mrc")
    assert vs == pytest.approx(ps)
    rd, rr = fsc_resolution(rec, vd, ps), fsc_resolution(rec, vr, ps)
    assert rd["res_0.5"] < 1.2 * 2 * ps                   # near Nyquist (5 Å)
    assert rr["res_0.5"] > 1.5 * rd["res_0.5"]
    assert main(["model-map", "--structure", str(tmp_path / "ref.pdb"), "--out",
                 str(tmp_path / "small.mrc"), "--box", "8", "--pixel-size", "1"]) == 2
    assert not (tmp_path / "small.mrc").exists()

"""Landscape (PCA, groups, animations) and reconstruction / FSC."""
import os
import re

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


# --------------------------------------------------------------------------
# the landscape and reconstruct stages: bad input, rejected rows, folders
N_PART, BOX, PS = 80, 24, 4.0


@pytest.fixture(scope="module")
def lr_data(tmp_path_factory):
    """A reference (AK Cα) and its ANM modes; 80 noiseless projections (24 px,
    4 Å/px, header pixel size set) in data/p.mrcs with angles, shifts, CTF and
    3 amplitudes in data/p.xmd (relative image references)."""
    from deephemnma.core.nma import compute_modes, write_continuousflex
    from deephemnma.core.projector import project
    from deephemnma.core.rotations import euler_to_matrix
    from deephemnma.core.structure import read_structure, write_pdb
    from deephemnma.io.metadata import image_ref
    from deephemnma.io.stacks import write_stack
    d = tmp_path_factory.mktemp("lr")
    s, _ = read_structure(shared_file("continuousflex", "AK.pdb"), "ca").center()
    write_continuousflex(compute_modes(s, 9, cutoff=12, method="anm"), d / "modes")
    write_pdb(d / "ref.pdb", s)
    rng = np.random.default_rng(7)
    ang = random_euler(N_PART, 2)
    sh = rng.uniform(-1, 1, (N_PART, 2))
    imgs = project(torch.tensor(s.coords), torch.ones(len(s.coords), dtype=torch.float64),
                   torch.tensor(euler_to_matrix(ang)), torch.tensor(sh), BOX, PS, 2.0).numpy()
    (d / "data").mkdir()
    write_stack(d / "data" / "p.mrcs", imgs, PS)
    t = Table({"itemId": np.arange(1, N_PART + 1),
               "image": np.array([image_ref(i + 1, "p.mrcs") for i in range(N_PART)],
                                 dtype=object),
               "angleRot": ang[:, 0], "angleTilt": ang[:, 1], "anglePsi": ang[:, 2],
               "shiftX": sh[:, 0], "shiftY": sh[:, 1],
               "ctfDefocusU": rng.uniform(8000, 20000, N_PART),
               "ctfDefocusV": rng.uniform(8000, 20000, N_PART),
               "ctfDefocusAngle": rng.uniform(0, 180, N_PART), "ctfVoltage": 300.0,
               "ctfSphericalAberration": 2.7, "ctfQ0": 0.1,
               "nmaDisplacements": rng.normal(size=(N_PART, 3)) * [100, 30, 10]})
    write_xmd(d / "data" / "p.xmd", t)
    return d


def _cli(capsys, args):
    """(exit code, stdout, stderr) of ``deephemnma ARGS``."""
    from deephemnma.cli import main
    capsys.readouterr()
    rc = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return rc, out, err


def _refused(capsys, args, match, leftovers=()):
    """The command exits 2 with one error line matching ``match``, no traceback,
    and none of ``leftovers`` exists."""
    rc, out, err = _cli(capsys, args)
    lines = [x for x in err.splitlines() if x.strip()]
    assert rc == 2, (args, out, err)
    assert len(lines) == 1 and "Traceback" not in err, err
    assert "error:" in lines[0] and re.search(match, lines[0]), (match, lines[0])
    for p in leftovers:
        assert not os.path.exists(p), f"{p} left behind by {args}"
    return lines[0]


def _xmd(path, table):
    write_xmd(path, table)
    return path


LANDSCAPE_BAD = [
    (["--components", "0"], r"--components must be >= 1"),
    (["--components", "4"], r"--components 4: the particles have 3"),
    (["--rect", "1,2,3"], r"--rect needs 4 numbers"),
    (["--rect", "1,x,3,4"], r"--rect .*numbers"),
    (["--rect", "3,1,0,1"], r"xmin < xmax"),
    (["--polygon", "0,0,1,1"], r"at least 3 points"),
    (["--polygon", "0,0,1,1,2"], r"x,y pairs"),
    (["--split", "x:y"], r"--split x:y: expected AXIS:MIN_SIZE"),
    (["--split", "1"], r"--split 1: expected"),
    (["--split", "3:10"], r"--split axis 3: only PC1..PC2"),
    (["--split", "1:0"], r"minimum group size must be >= 1"),
    (["--split", "1:10:0.7"], r"trim"),
    (["--split", "1:500"], r"too few for groups of at least 500"),
    (["--kmeans", "0"], r"--kmeans must be >= 1"),
    (["--kmeans", "200"], r"k-means: k must be in"),
    (["--min-group", "0"], r"--min-group must be >= 1"),
    (["--kmeans", "3", "--min-group", "70"], r"fewer than --min-group 70"),
    (["--select", "PC7 > 0"], r"unknown axis 'PC7'"),
    (["--select", "PC1 > 1e9"], r"selection contains no particle"),
    (["--frames", "1"], r"--frames must be >= 2"),
    (["--components", "1", "--rect", "0,1,0,1"], r"needs at least 2 components"),
]


@pytest.mark.parametrize("extra,match", LANDSCAPE_BAD)
def test_landscape_refuses_bad_options(lr_data, tmp_path, capsys, extra, match):
    out = tmp_path / "L"
    _refused(capsys, ["landscape", "--particles", lr_data / "data" / "p.xmd", "--out", out]
             + extra, match, [out])


def test_landscape_refuses_bad_files(lr_data, tmp_path, capsys):
    d, p = lr_data, lr_data / "data" / "p.xmd"
    out = tmp_path / "L"
    t = read_metadata(p)
    two = t.copy()
    two["nmaDisplacements"] = two["nmaDisplacements"][:, :2]
    nan = t.copy()
    nan["nmaDisplacements"] = np.full_like(nan["nmaDisplacements"], np.nan)
    (tmp_path / "bad.npz").write_bytes(b"not a zip")
    no_amp = t.copy()
    del no_amp["nmaDisplacements"]
    for args, match in [
            (["--particles", _xmd(tmp_path / "noamp.xmd", no_amp)], r"lacks normal-mode"),
            (["--particles", _xmd(tmp_path / "nan.xmd", nan)], r"no particle with finite"),
            (["--particles", p, "--also", _xmd(tmp_path / "two.xmd", two)],
             r"same modes"),
            (["--particles", p, "--pca", tmp_path / "bad.npz"], r"not a PCA file"),
            (["--particles", p, "--pca", tmp_path / "none.npz"], r"not found"),
            (["--particles", p, "--structure", d / "ref.pdb"], r"go together"),
            (["--particles", p, "--structure", d / "ref.pdb", "--modes", d / "nomodes"],
             r"not found"),
            (["--particles", tmp_path / "missing.xmd"], r"not found")]:
        _refused(capsys, ["landscape", "--out", out] + args, match, [out])
    # a file where the folder goes, the input as output
    _refused(capsys, ["landscape", "--particles", p, "--out", p], r"is a file|also an input")
    # a failure in an existing folder keeps its earlier results untouched
    assert _cli(capsys, ["landscape", "--particles", p, "--out", out, "--kmeans", "2",
                         "--min-group", "1"])[0] == 0
    before = {f.name: f.read_bytes() for f in out.iterdir()}
    _refused(capsys, ["landscape", "--particles", p, "--out", out, "--kmeans", "3",
                      "--min-group", "70"], r"fewer than --min-group")
    assert {f.name: f.read_bytes() for f in out.iterdir()} == before
    # an input among the files the run would replace
    _refused(capsys, ["landscape", "--particles", out / "group_01.xmd", "--out", out],
             r"would replace")


def test_landscape_zero_particles(tmp_path, capsys):
    zero = tmp_path / "zero.xmd"
    zero.write_text("# XMIPP_STAR_1 *\ndata_noname\nloop_\n _itemId\n _image\n"
                    " _nmaDisplacements\n")
    _refused(capsys, ["landscape", "--particles", zero, "--out", tmp_path / "L"],
             r"no particles", [tmp_path / "L"])


def test_landscape_outputs_and_rejected_row(lr_data, tmp_path, capsys):
    """A row with a NaN amplitude is left out alone, listed in rejected.xmd;
    every other row's coordinates and group are those of a run without it.
    Outputs lists the files of the folder; a rerun with fewer groups removes
    the earlier run's extra groups."""
    from deephemnma.stages import landscape
    d = lr_data
    t = read_metadata(d / "data" / "p.xmd")
    bad = t.copy()
    bad["nmaDisplacements"][5, 1] = np.nan
    _xmd(d / "data" / "p_nan.xmd", bad)
    _xmd(d / "data" / "p_without.xmd", t.subset(np.arange(N_PART) != 5))
    common = ["--split", "1:20", "--structure", d / "ref.pdb", "--modes", d / "modes",
              "--frames", "3"]
    rc, out, _ = _cli(capsys, ["landscape", "--particles", d / "data" / "p_nan.xmd",
                               "--out", tmp_path / "A"] + common)
    assert rc == 0 and "left out 1 row" in out
    assert _cli(capsys, ["landscape", "--particles", d / "data" / "p_without.xmd",
                         "--out", tmp_path / "B"] + common)[0] == 0
    a, b = landscape.Outputs(str(tmp_path / "A")), landscape.Outputs(str(tmp_path / "B"))
    rej = read_metadata(a.rejected)
    assert list(rej["itemId"]) == [6] and rej["rejectReason"][0] == "non-finite amplitude"
    assert not os.path.exists(b.rejected)
    la, lb = read_metadata(a.landscape), read_metadata(b.landscape)
    assert np.array_equal(la["itemId"], lb["itemId"]) and 6 not in la["itemId"]
    assert np.array_equal(la["PC1"], lb["PC1"]) and np.array_equal(la["PC2"], lb["PC2"])
    assert a.groups() == b.groups() and len(a.groups()) >= 2
    for k in a.groups():
        assert np.array_equal(read_metadata(a.group(k))["itemId"],
                              read_metadata(b.group(k))["itemId"])
        assert os.path.exists(a.centroid(k))
    assert a.axes() == [1, 2] and os.path.exists(a.axis(2, ".cxc"))
    sizes = read_metadata(a.groups_table)["classCount"]
    assert list(sizes) == [len(read_metadata(a.group(k))) for k in a.groups()]
    # the same folder again with one group: the old groups and animations go
    assert _cli(capsys, ["landscape", "--particles", d / "data" / "p_without.xmd",
                         "--out", tmp_path / "B", "--select", "PC1 > 0"])[0] == 0
    assert b.groups() == [1] and b.axes() == [] and not os.path.exists(b.centroid(1))
    assert (read_metadata(b.group(1))["PC1"] > 0).all()


def test_landscape_then_reconstruct_across_folders(lr_data, tmp_path, capsys, monkeypatch):
    """The README's chain with outputs elsewhere: `landscape --out elsewhere`,
    then `reconstruct --particles elsewhere/group_01.xmd` from another folder;
    the map is the one made from the same rows of the original file."""
    from deephemnma.stages import landscape, reconstruct
    d = lr_data
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    assert _cli(capsys, ["landscape", "--particles", d / "data" / "p.xmd", "--out",
                         "../elsewhere/land", "--split", "1:20"])[0] == 0
    out = landscape.Outputs(str(tmp_path / "elsewhere" / "land"))
    g1 = out.group(1)
    refs = read_metadata(g1)["image"]
    assert all(not os.path.isabs(r.split("@")[1]) for r in refs)      # relative, rebased
    monkeypatch.chdir(tmp_path)
    rc, text, _ = _cli(capsys, ["reconstruct", "--particles", g1, "--out", "maps/g1.mrc",
                                "--pixel-size", PS, "--min-images", 5, "--device", "cpu"])
    assert rc == 0 and "reconstructed" in text
    from deephemnma.io.stacks import read_volume
    vol, vs = read_volume(tmp_path / "maps" / "g1.mrc")
    assert vs == pytest.approx(PS) and np.isfinite(vol).all() and vol.std() > 0
    # the same rows taken from the original file give the same map
    t = read_metadata(d / "data" / "p.xmd")
    ids = read_metadata(g1)["itemId"]
    same = _xmd(d / "data" / "g1_rows.xmd", t.subset(np.isin(t["itemId"], ids)))
    direct = reconstruct.run(reconstruct.Config(
        particles=str(same), out=str(tmp_path / "d.mrc"), pixel_size=PS, min_images=5,
        device="cpu"), progress=False)
    assert np.array_equal(read_volume(direct.map)[0], vol)


def test_reconstruct_refuses_bad_input(lr_data, tmp_path, capsys):
    from deephemnma.io.stacks import write_stack, write_volume
    d, p = lr_data, lr_data / "data" / "p.xmd"
    out = tmp_path / "m.mrc"
    t = read_metadata(p)
    zero = tmp_path / "zero.xmd"
    zero.write_text("# XMIPP_STAR_1 *\ndata_noname\nloop_\n _itemId\n _image\n _angleRot\n"
                    " _angleTilt\n _anglePsi\n")
    # a second stack of another box, referenced by the last rows
    write_stack(d / "data" / "small.mrcs", np.ones((2, 16, 16), np.float32), PS)
    mixed = t.copy()
    mixed["image"] = np.array(list(t["image"][:-1]) + ["000001@small.mrcs"], dtype=object)
    nan_all = t.copy()
    nan_all["angleRot"] = np.full(N_PART, np.nan)
    no_angles = t.copy()
    del no_angles["angleRot"]
    write_volume(tmp_path / "ref16.mrc", np.zeros((16, 16, 16), np.float32), PS)
    write_volume(tmp_path / "ref_ps.mrc", np.zeros((BOX,) * 3, np.float32), 2 * PS)
    for extra, match in [
            (["--particles", p, "--pixel-size", 0], r"--pixel-size must be positive"),
            (["--particles", p, "--pixel-size", -4], r"--pixel-size must be positive"),
            (["--particles", p, "--pixel-size", "nan"], r"--pixel-size must be positive"),
            (["--particles", p, "--pixel-size", PS, "--pad", 0], r"--pad must be >= 1"),
            (["--particles", p, "--pixel-size", PS, "--pad", 0.5], r"--pad must be >= 1"),
            (["--particles", p, "--pixel-size", PS, "--shift-scale", 0],
             r"--shift-scale must be positive"),
            (["--particles", p, "--pixel-size", PS, "--min-images", 0],
             r"--min-images must be >= 1"),
            (["--particles", p, "--pixel-size", PS, "--min-images", 500],
             r"80 usable images, fewer than --min-images 500"),
            (["--particles", p, "--pixel-size", 2 * PS], r"header pixel size 4 Å differs"),
            (["--particles", zero, "--pixel-size", PS], r"no particles"),
            (["--particles", _xmd(d / "data" / "mixed.xmd", mixed), "--pixel-size", PS],
             r"mixed boxes"),
            (["--particles", _xmd(d / "data" / "nan_all.xmd", nan_all), "--pixel-size", PS],
             r"no usable particle \(80 non-finite value\)"),
            (["--particles", _xmd(d / "data" / "no_angles.xmd", no_angles),
              "--pixel-size", PS], r"lacks Euler angle"),
            (["--particles", p, "--pixel-size", PS, "--reference", tmp_path / "ref16.mrc"],
             r"16x16x16 voxels, the reconstruction will be 24\^3"),
            (["--particles", p, "--pixel-size", PS, "--reference", tmp_path / "ref_ps.mrc"],
             r"voxel size 8 Å"),
            (["--particles", p, "--pixel-size", PS, "--images", tmp_path / "none.xmd"],
             r"not found")]:
        _refused(capsys, ["reconstruct", "--out", out] + extra, match,
                 [out, tmp_path / "m.rejected.xmd"])
    _refused(capsys, ["reconstruct", "--particles", p, "--out", p, "--pixel-size", PS],
             r"also an input")


def test_reconstruct_rejects_bad_rows_alone(lr_data, tmp_path, capsys):
    """A NaN angle, a NaN defocus, an unparseable shift and a NaN image each
    reject their row alone (listed with the reason); the map is bit-identical
    to the one from the file without those rows, and finite."""
    from deephemnma.io.metadata import image_ref
    from deephemnma.io.stacks import open_stack, read_volume, write_stack
    from deephemnma.stages import reconstruct
    d = lr_data
    t = read_metadata(d / "data" / "p.xmd")
    imgs = open_stack(d / "data" / "p.mrcs")[:]
    imgs[40, 3, 4] = np.nan
    write_stack(d / "data" / "p_nanimg.mrcs", imgs, PS)
    bad = t.copy()
    bad["angleTilt"][3] = np.nan
    bad["ctfDefocusU"][17] = np.inf
    bad["image"] = np.array([image_ref(i + 1, "p_nanimg.mrcs") for i in range(N_PART)],
                            dtype=object)
    path = _xmd(d / "data" / "p_bad.xmd", bad)
    text = path.read_text().splitlines()
    head = next(i for i, x in enumerate(text)
                if x.strip() and not x.startswith(("#", "data_", "loop_", " _")))
    cols = [x.split()[0][1:] for x in text if x.startswith(" _")]
    row = text[head + 25].split()
    row[cols.index("shiftX")] = "abc"
    text[head + 25] = " ".join(row)
    path.write_text("\n".join(text) + "\n")
    keep = ~np.isin(np.arange(N_PART), [3, 17, 25, 40])
    good = _xmd(d / "data" / "p_good.xmd", t.subset(keep))
    rc, out, _ = _cli(capsys, ["reconstruct", "--particles", path, "--out", tmp_path / "bad.mrc",
                               "--pixel-size", PS, "--min-images", 5, "--device", "cpu"])
    assert rc == 0 and "left out 4 unusable row(s)" in out
    cfg = reconstruct.Config(particles=str(good), out=str(tmp_path / "good.mrc"),
                             pixel_size=PS, min_images=5, device="cpu")
    r = reconstruct.run(cfg, progress=False)
    assert r.n_images == N_PART - 4 and r.n_rejected == 0 and r.box == BOX
    vb, vg = read_volume(tmp_path / "bad.mrc")[0], read_volume(r.map)[0]
    assert np.isfinite(vb).all() and np.array_equal(vb, vg)
    rej = read_metadata(tmp_path / "bad.rejected.xmd")
    assert sorted(rej["itemId"]) == [4, 18, 26, 41]
    assert set(rej["rejectReason"]) == {"non-finite value",
                                        "unusable image (NaN/inf or constant)"}
    # the FSC against a map of the same box is reported
    r2 = reconstruct.run(cfg.replace(out=str(tmp_path / "g2.mrc"), reference=r.map),
                         progress=False)
    assert r2.fsc["res_0.5"] == pytest.approx(2 * PS)        # identical maps: Nyquist


# gold-standard half maps
def test_half_sets_fixed_by_particle_id():
    """Halves are a function of the particle id alone: the same id lands in
    the same half whatever the other ids and their order; about half each."""
    from deephemnma.core.reconstruct import half_sets
    ids = np.arange(1, 20001)
    h = half_sets(ids)
    assert set(np.unique(h)) == {0, 1} and abs(h.mean() - 0.5) < 0.015
    perm = np.random.default_rng(0).permutation(len(ids))
    assert np.array_equal(half_sets(ids[perm]), h[perm])
    assert np.array_equal(half_sets(ids[5000:5100]), h[5000:5100])
    assert not np.array_equal(half_sets(ids, seed=1), h)
    assert np.array_equal(half_sets(ids), h)                   # again: the same


def test_half_map_resolution_matches_fsc_against_truth():
    """Simulated AK particles (known poses, no CTF, 2 SNRs): the half-map FSC
    at 0.143 gives the resolution of the FSC of the full map against the
    truth's map at 0.5 (Rosenthal & Henderson 2003), unmasked and masked,
    within 10 %; the truth's map is the reconstruction of the noiseless
    images with the same poses."""
    from deephemnma.core.reconstruct import (half_sets, reconstruct_halves, soft_mask)
    from deephemnma.core.simulate import simulate
    from deephemnma.stages.reference import load_reference
    s, modes = load_reference(shared_file("continuousflex", "AK.pdb"))
    n, box, ps = 800, 32, 2.6

    def sim(snr):
        out = list(simulate(s.coords, s.weights, modes.vectors, n, box, ps, snr=snr,
                            amplitude_scale=0.0, ctf=False, render_factor=1, seed=3))
        return np.concatenate([im for _, im, _ in out]), Table.concatenate([t for *_, t in out])
    clean, t = sim(None)
    ang, sh = t.angles(), t.shifts()
    truth = reconstruct(clean, ang, sh, pixel_size=ps)
    halves = half_sets(t["itemId"])
    found = []
    for snr in (0.05, 0.2):
        imgs, _ = sim(snr)
        full, h1, h2 = reconstruct_halves(imgs, ang, halves, sh, pixel_size=ps)
        m = soft_mask(full, ps)
        assert 0.05 < (m > 0.5).mean() < 0.8 and m.min() == 0 and m.max() == 1
        for mask in (1.0, m):
            f, half = fsc(h1 * mask, h2 * mask, ps)
            _, vs_truth = fsc(full * mask, truth * mask, ps)
            r_half, r_truth = resolution_at(f, half, 0.143), resolution_at(f, vs_truth, 0.5)
            assert r_truth > 1.1 * 2 * ps                  # below Nyquist: a real test
            assert r_half == pytest.approx(r_truth, rel=0.1), (snr, r_half, r_truth)
            found.append(r_half)
    assert found[2] < found[0] and found[3] < found[1]    # more signal, finer
    assert found[1] < found[0]                            # the mask helps


def test_reconstruct_half_maps_files(lr_data, tmp_path, capsys):
    """The command writes both half maps, the mask, the filtered map and the
    half-map FSC (JSON, PNG) without a reference; each half is the map of its
    particles alone; the halves of a group are those of the whole set;
    --no-half-maps writes none (and removes an earlier run's)."""
    import json
    from deephemnma.core.reconstruct import half_sets, lowpass
    from deephemnma.io.stacks import read_volume
    from deephemnma.stages import reconstruct as stage
    p = lr_data / "data" / "p.xmd"
    out = tmp_path / "m.mrc"
    rc, text, _ = _cli(capsys, ["reconstruct", "--particles", p, "--out", out, "--pixel-size",
                                PS, "--min-images", 5, "--device", "cpu", "--no-ctf"])
    assert rc == 0 and "half maps (" in text and "masked" in text
    o = stage.Outputs(str(out))
    assert o.half(1) == str(tmp_path / "m_half1.mrc") and o.filtered.endswith("m_filtered.mrc")
    for f in o.half_map_files():
        assert os.path.getsize(f) > 0, f
    r = json.load(open(o.fsc_halves_json))
    t = read_metadata(p)
    h = half_sets(t["itemId"])
    assert (r["n_half1"], r["n_half2"]) == ((h == 0).sum(), (h == 1).sum())
    assert len(r["freq"]) == len(r["fsc"]) == len(r["fsc_masked"]) == BOX // 2 + 1
    assert 2 * PS <= r["res_0.143_masked"] <= r["res_0.5_masked"]
    assert r["filtered_at"] == r["res_0.143_masked"]
    # the reported masked FSC: corrected by phase randomisation beyond its shell
    f, raw, rnd, cor = (np.array(r[k]) for k in ("freq", "fsc_masked_uncorrected",
                                                  "fsc_phase_randomised", "fsc_masked"))
    k = int(np.argmin(np.abs(f - 1 / r["phase_randomised_from"])))
    from deephemnma.core.reconstruct import RANDOMISE_FALLBACK
    u = np.array(r["fsc"])
    below = np.flatnonzero(u[1:] < 0.8)
    first = below[0] + 1 if below.size else round(RANDOMISE_FALLBACK * (len(u) - 1))
    floor = int(BOX * PS / r["mask"]["lowpass_A"])     # not below the mask's resolution
    assert k == min(max(first, floor, 1), len(u) - 1), (k, first, floor)
    assert np.array_equal(cor[:k], raw[:k])
    assert np.allclose(cor[k:], (raw[k:] - rnd[k:]) / (1 - rnd[k:]))
    assert r["res_0.143_masked"] == resolution_at(f, cor, 0.143)
    assert r["res_0.143_masked_uncorrected"] == resolution_at(f, raw, 0.143)
    full, h1 = read_volume(out)[0], read_volume(o.half(1))[0]
    sub = t.subset(h == 0)
    from deephemnma.io.stacks import load_images
    alone = reconstruct(load_images(sub), sub.angles(), sub.shifts(), pixel_size=PS)
    assert np.allclose(h1, alone, atol=1e-5 * np.abs(alone).max())
    assert np.allclose(read_volume(o.filtered)[0], lowpass(full, PS, r["filtered_at"]),
                       atol=1e-5 * np.abs(full).max())
    mask = read_volume(o.mask)[0]
    assert mask.min() >= 0 and mask.max() == 1 and 0 < mask.mean() < 1
    # a group (any subset): its particles keep their halves
    g = _xmd(tmp_path / "g.xmd", t.subset(np.arange(N_PART) % 3 == 0))
    gr = stage.run(stage.Config(particles=str(g), out=str(tmp_path / "g.mrc"), pixel_size=PS,
                                min_images=5, use_ctf=False, device="cpu"), progress=False)
    assert gr.halves["n_half1"] == (h[::3] == 0).sum()
    # off: no half-map file, an earlier run's removed; the map is unchanged
    rc, text, _ = _cli(capsys, ["reconstruct", "--particles", p, "--out", out, "--pixel-size",
                                PS, "--min-images", 5, "--device", "cpu", "--no-ctf",
                                "--no-half-maps"])
    assert rc == 0 and "half maps" not in text
    assert not any(os.path.exists(f) for f in o.half_map_files())
    assert np.allclose(read_volume(out)[0], full, atol=1e-5 * np.abs(full).max())


@pytest.mark.parametrize("extra,match", [
    (["--mask-threshold", "0"], r"--mask-threshold must be in \(0, 1\)"),
    (["--mask-threshold", "1"], r"--mask-threshold must be in \(0, 1\)"),
    (["--mask-threshold", "nan"], r"--mask-threshold must be in \(0, 1\)"),
    (["--mask-dilate", "-1"], r"--mask-dilate must be >= 0"),
    (["--soft-edge", "-2"], r"--soft-edge must be >= 0"),
])
def test_reconstruct_refuses_bad_half_map_options(lr_data, tmp_path, capsys, extra, match):
    out = tmp_path / "m.mrc"
    _refused(capsys, ["reconstruct", "--particles", lr_data / "data" / "p.xmd", "--out", out,
                      "--pixel-size", PS] + extra, match,
             [out, tmp_path / "m_half1.mrc", tmp_path / "m_fsc_halves.json"])
    # without half maps these options are not used
    assert _cli(capsys, ["reconstruct", "--particles", lr_data / "data" / "p.xmd", "--out", out,
                         "--pixel-size", PS, "--no-half-maps", "--min-images", 5,
                         "--device", "cpu"] + extra)[0] == 0


def test_reconstruct_refuses_one_sided_halves(lr_data, tmp_path, capsys):
    from deephemnma.core.reconstruct import half_sets
    t = read_metadata(lr_data / "data" / "p.xmd")
    one = t.subset(half_sets(t["itemId"]) == 1)
    p = _xmd(lr_data / "data" / "one_half.xmd", one)
    out = tmp_path / "m.mrc"
    _refused(capsys, ["reconstruct", "--particles", p, "--out", out, "--pixel-size", PS,
                      "--min-images", 5], r"fall in one half.*--no-half-maps",
             [out, tmp_path / "m_half1.mrc"])


def test_landscape_group_half_maps_listed(lr_data, tmp_path, capsys):
    """A group reconstructed into the landscape folder: its half-map
    resolutions (masked, unmasked) are listed per group beside the centroid
    FSC (none here); its half-map files belong to the folder, and a new
    landscape run in it removes them with the map."""
    import json
    from deephemnma.stages import landscape
    d = lr_data
    land = tmp_path / "land"
    assert _cli(capsys, ["landscape", "--particles", d / "data" / "p.xmd", "--out", land,
                         "--split", "1:20"])[0] == 0
    out = landscape.Outputs(str(land))
    assert _cli(capsys, ["reconstruct", "--particles", out.group(1), "--out", out.group_map(1),
                         "--pixel-size", PS, "--min-images", 5, "--device", "cpu"])[0] == 0
    rec = out.group_reconstruction(1)
    r = json.load(open(rec.fsc_halves_json))
    assert out.group_resolutions() == {1: (r["res_0.143_masked"], r["res_0.143"], None)}
    line, = landscape.resolution_lines(out)
    assert line == (f"group 01: half maps FSC 0.143 {r['res_0.143_masked']:.2f} Å masked, "
                    f"{r['res_0.143']:.2f} Å unmasked; vs its centroid model's map "
                    "FSC 0.143 -")
    assert set(rec.half_map_files()) <= set(out.owned_files())
    assert _cli(capsys, ["landscape", "--particles", d / "data" / "p.xmd", "--out", land,
                         "--split", "1:20"])[0] == 0
    assert not any(os.path.exists(f) for f in [rec.map] + rec.half_map_files())


def test_phase_randomisation_corrects_a_mask_made_from_the_noisy_halves():
    """Two halves: a common signal band-limited at 16 Å plus independent
    noise, and a tight mask made from their noisy average. Beyond the
    randomisation shell the true correlation is 0: the uncorrected masked FSC
    is inflated there, the corrected one is ~0 and its 0.143 resolution is the
    unmasked one's (within a Fourier shell); below that shell it is the
    masked FSC; the randomised maps keep the amplitudes of every shell and
    the phases below it."""
    from deephemnma.core.reconstruct import lowpass, masked_fsc, randomise_phases, soft_mask
    N, ps = 48, 2.0
    rng = np.random.default_rng(0)
    z, y, x = np.mgrid[:N, :N, :N] - N / 2
    sig = sum(np.exp(-((z - a) ** 2 + (y - b) ** 2 + (x - c) ** 2) / 18.0)
              for a, b, c in rng.uniform(-8, 8, (6, 3)))
    sig = lowpass(sig, ps, 16.0)
    h1, h2 = (sig + 0.25 * sig.std() * rng.standard_normal(sig.shape) for _ in range(2))
    for edge in (0.0, 4.0):                       # a hard and a soft mask edge
        mask = soft_mask((h1 + h2) / 2, ps, 0.1, 0.0, edge)
        r = masked_fsc(h1, h2, mask, ps)
        k = r["randomised_from"]
        f = r["freq"]
        assert 3 <= k <= 8 and r["unmasked"][k] < 0.8 <= r["unmasked"][k - 1]
        beyond = np.arange(len(f)) >= k + 2
        assert r["masked"][beyond].mean() > 0.1                  # inflated by the mask
        assert abs(r["corrected"][beyond].mean()) < 0.03
        assert abs(r["unmasked"][beyond].mean()) < 0.03
        assert np.array_equal(r["corrected"][:k], r["masked"][:k])
        assert abs(1 / resolution_at(f, r["corrected"], 0.143)
                   - 1 / resolution_at(f, r["unmasked"], 0.143)) <= 1 / (N * ps)
        assert 1 / resolution_at(f, r["masked"], 0.143) > 2 / 16.0   # much finer than true
    # the randomised map: same amplitude per shell, same phases below the shell
    rnd = randomise_phases(h1, 5)
    A, B = np.fft.fftn(h1), np.fft.fftn(rnd)
    k3 = np.fft.fftfreq(N) * N
    shell = np.rint(np.sqrt(k3[:, None, None] ** 2 + k3[None, :, None] ** 2
                            + k3[None, None, :] ** 2))
    assert np.allclose(np.abs(A), np.abs(B), rtol=1e-6, atol=1e-9 * np.abs(A).max())
    assert np.allclose(A[shell < 5], B[shell < 5], atol=1e-9 * np.abs(A).max())
    assert abs(fsc(h1, rnd)[1][8:].mean()) < 0.05
    assert not np.array_equal(randomise_phases(h1, 5, seed=1), rnd)

"""Map series along a principal axis or a drawn path (deephemnma series)."""
import os
import re

import numpy as np
import pytest

from deephemnma.core import series as S
from deephemnma.errors import InputError
from deephemnma.io.metadata import read_metadata, write_xmd
from deephemnma.io.stacks import read_volume

PS = 2.6


@pytest.fixture(scope="module")
def land(tmp_path_factory):
    """600 AK particles (32 px, 2.6 Å/px, known poses, amplitudes uniform on
    modes 7-9) and their landscape (2 components) with the reference and
    modes."""
    from deephemnma.data import data_file
    from deephemnma.stages import landscape, simulate
    d = tmp_path_factory.mktemp("series")
    simulate.run(simulate.Config(structure=data_file("AK.pdb"), out=str(d / "sim"), n=600,
                                 box=32, pixel_size=PS, snr=1.0, snr_at_render=False,
                                 render_factor=2, law="uniform", seed=5), progress=False)
    landscape.run(landscape.Config(particles=str(d / "sim" / "particles.xmd"),
                                   out=str(d / "land"), components=2,
                                   structure=str(d / "sim" / "reference.pdb"),
                                   modes=str(d / "sim")))
    return d


def _cli(capsys, args):
    from deephemnma.cli import main
    capsys.readouterr()
    rc = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return rc, out, err


def _base(land, out, *extra):
    return ["series", "--landscape", land / "land", "--pixel-size", PS, "--out", out, *extra]


def test_path_geometry():
    pts = S.parse_path("0,0; 10,0; 10,10")
    assert pts.shape == (3, 2) and S.path_length(pts) == 20
    s, d = S.path_positions(np.array([[5, 1], [12, 5], [-3, 0], [10, 14]]), pts)
    assert np.allclose(s, [5, 15, 0, 20]) and np.allclose(d, [1, 2, 3, 4])
    assert np.array_equal(S.parse_path("0 0\n# a comment\n10,0\n10 10\n"), pts)
    assert np.allclose(S.parse_path(S.format_path(pts)), pts)
    for bad, msg in (("1,2", "at least 2 points"), ("1,2;1,2", "no length"),
                     ("1,2;a,b", "not a point"), ("1,2,3;4,5", "not a point")):
        with pytest.raises(InputError, match=msg):
            S.parse_path(bad)
    w = S.windows(np.arange(10.0), [0.0, 4.6, 9.0], 3)
    assert [list(x) for x in w] == [[0, 1, 2], [4, 5, 6], [7, 8, 9]]
    c = S.axis_centres(np.arange(100.0), 4, 20)
    assert np.allclose(c, [10, 36.33333, 62.66667, 89], atol=1e-4)


def test_series_along_pc1(land, tmp_path, capsys):
    out = tmp_path / "s"
    rc, text, err = _cli(capsys, _base(land, out, "--axis", 1, "--frames", 4, "--window", 150,
                                       "--structure", land / "sim" / "reference.pdb",
                                       "--modes", land / "sim"))
    assert rc == 0, err
    from deephemnma.stages.series import Outputs
    o = Outputs(str(out))
    assert o.frames() == [1, 2, 3, 4]
    rows = o.read_table()
    assert [r["frame"] for r in rows] == [1, 2, 3, 4]
    assert all(r["particles"] == 150 for r in rows)
    pc1 = [r["PC1"] for r in rows]
    assert all(a < b for a, b in zip(pc1, pc1[1:])), pc1          # ordered along PC1
    assert all(a < b for a, b in zip([r["position"] for r in rows],
                                     [r["position"] for r in rows][1:]))
    landscape = read_metadata(land / "land" / "landscape.xmd")
    pc1_of = dict(zip(landscape["itemId"].tolist(), landscape["PC1"].tolist()))
    for k, r in enumerate(rows, start=1):
        part = read_metadata(o.frame_particles(k))
        assert len(part) == 150
        assert np.mean([pc1_of[i] for i in part["itemId"]]) == pytest.approx(r["PC1"], abs=1e-3)
        vol, ps = read_volume(o.frame_map(k))
        assert vol.shape == (32, 32, 32) and np.isfinite(vol).all() and vol.std() > 0
        assert ps == pytest.approx(PS, rel=1e-3)
        rec = o.frame_reconstruction(k)
        for p in (rec.half(1), rec.half(2), rec.filtered, rec.fsc_halves_json):
            assert os.path.exists(p), p
        assert 2 * PS <= r["res_0.143_masked"] < 40
    # each window: the particles nearest to its position along PC1; the end ones disjoint
    ids = landscape["itemId"]
    for k, r in enumerate(rows, start=1):
        inside = np.isin(ids, read_metadata(o.frame_particles(k))["itemId"])
        dist = np.abs(landscape["PC1"] - r["position"])
        assert dist[inside].max() <= dist[~inside].min() + 1e-3
    first = set(read_metadata(o.frame_particles(1))["itemId"].tolist())
    assert not first & set(read_metadata(o.frame_particles(4))["itemId"].tolist())
    cxc = open(o.chimerax).read()
    opened = re.search(r"^open (.*) vseries true$", cxc, re.M).group(1).split()
    assert opened == [f"frame_{k:03d}.mrc" for k in range(1, 5)]
    assert "vseries play #1" in cxc
    pdb = open(o.centroids()).read()
    assert pdb.count("MODEL ") == 4 and os.path.exists(o.centroids(".cxc"))
    assert "4 maps along PC1" in text and "series.cxc" in text
    assert not os.path.exists(o.path_file)
    # a second run with fewer frames leaves no frame of the first
    rc, _, err = _cli(capsys, _base(land, out, "--axis", 1, "--frames", 2, "--window", 200,
                                    "--no-half-maps"))
    assert rc == 0, err
    assert o.frames() == [1, 2] and not os.path.exists(o.frame_particles(3))
    assert not os.path.exists(o.centroids()) and not os.path.exists(o.frame_reconstruction(1).half(1))
    assert [r["res_0.143"] for r in o.read_table()] == [None, None]


def test_series_along_a_path(land, tmp_path, capsys):
    landscape = read_metadata(land / "land" / "landscape.xmd")
    x = np.percentile(landscape["PC1"], [10, 90])
    text = f"{x[0]:.3f},0;{x[1]:.3f},0"
    out = tmp_path / "p"
    rc, _, err = _cli(capsys, _base(land, out, f"--path={text}", "--frames", 3, "--window", 0.25,
                                    "--band", 1e6, "--no-half-maps"))
    assert rc == 0, err
    from deephemnma.stages.series import Outputs
    o = Outputs(str(out))
    rows = o.read_table()
    assert [r["particles"] for r in rows] == [150] * 3
    assert rows[0]["position"] == 0 and rows[-1]["position"] == pytest.approx(x[1] - x[0], abs=1e-2)
    assert rows[0]["PC1"] < rows[1]["PC1"] < rows[2]["PC1"]
    assert np.allclose(S.parse_path(open(o.path_file).read()), S.parse_path(text), atol=1e-3)
    # the same path from a file (the drawn path.txt), in reverse: the frames in reverse
    path_file = tmp_path / "path.txt"
    path_file.write_text(f"{x[1]:.3f} 0\n{x[0]:.3f} 0\n")
    rc, _, err = _cli(capsys, _base(land, tmp_path / "r", "--path", path_file, "--frames", 3,
                                    "--window", 0.25, "--no-half-maps"))
    assert rc == 0, err
    back = Outputs(str(tmp_path / "r")).read_table()
    assert [r["PC1"] for r in back] == pytest.approx([r["PC1"] for r in rows][::-1], abs=1e-3)
    # a narrow band keeps the particles near the path (PC2 near 0)
    band = 0.2 * np.ptp(landscape["PC2"])
    rc, text_out, err = _cli(capsys, _base(land, tmp_path / "b", f"--path={text}", "--frames", 2,
                                           "--window", 0.5, "--band", band, "--no-half-maps",
                                           "--min-images", 10))
    assert rc == 0, err
    x0, x1 = S.parse_path(text)[:, 0]        # a straight path on PC2 = 0 from x0 to x1
    beyond = np.maximum(0, np.maximum(x0 - landscape["PC1"], landscape["PC1"] - x1))
    near = int((np.hypot(beyond, landscape["PC2"]) <= band).sum())
    assert 0 < near < 600
    assert f"{near} of 600 particles within" in text_out
    for k in (1, 2):
        part = read_metadata(Outputs(str(tmp_path / "b")).frame_particles(k))
        assert len(part) == round(0.5 * near)


def test_series_from_particles_and_pca(land, tmp_path, capsys):
    """--particles with amplitudes placed by the landscape's pca.npz: the
    windows of --landscape."""
    args = ["--axis", 2, "--frames", 2, "--window", 120, "--no-half-maps"]
    rc, _, err = _cli(capsys, _base(land, tmp_path / "a", *args))
    assert rc == 0, err
    rc, _, err = _cli(capsys, ["series", "--particles", land / "sim" / "particles.xmd",
                               "--pca", land / "land" / "pca.npz", "--pixel-size", PS,
                               "--out", tmp_path / "b", *args])
    assert rc == 0, err
    for k in (1, 2):
        a = read_metadata(tmp_path / "a" / f"frame_{k:03d}.xmd")["itemId"]
        b = read_metadata(tmp_path / "b" / f"frame_{k:03d}.xmd")["itemId"]
        assert sorted(a.tolist()) == sorted(b.tolist())


@pytest.mark.parametrize("extra, match", [
    (["--axis", 1, "--window", 0], r"--window must be a number of particles"),
    (["--axis", 1, "--window", 150.5], r"--window must be a number of particles"),
    (["--axis", 1, "--window", 20], r"--window 20: fewer particles than --min-images 50"),
    (["--axis", 1, "--window", 601], r"--window 601: 601 particles per window, but 600"),
    (["--axis", 1, "--window", 0.05], r"--window 0.05: 30 particles per window, fewer than"),
    (["--axis", 1, "--frames", 1], r"--frames must be a whole number from 2 to 999"),
    (["--axis", 0], r"--axis must be a whole number >= 1"),
    (["--axis", 3], r"has no PC3 column"),
    (["--axis", 1, "--band", 5], r"--band goes with --path"),
    (["--path", "0,0;10,0", "--band", 0], r"--band must be positive"),
    (["--path", "0,0;1e9,0", "--band", 1e-9], r"no particle within this distance"),
    (["--path", "5,5"], r"--path: give at least 2 points"),
    (["--path", "5,5;5,5"], r"--path: the points are all the same"),
    (["--path", "no_such_path.txt"], r"--path: file not found: no_such_path.txt"),
    (["--axis", 1, "--structure", "PCA"], r"--structure and --modes go together"),
    (["--axis", 1, "--mask-threshold", 2], r"--mask-threshold must be in \(0, 1\)"),
    (["--axis", 1, "--pca", "PCA"], r"--pca goes with --particles"),
])
def test_series_refuses_bad_options(land, tmp_path, capsys, monkeypatch, extra, match):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "PCA").write_text("x")
    out = tmp_path / "o"
    rc, text, err = _cli(capsys, _base(land, out, *extra))
    lines = [x for x in err.splitlines() if x.strip()]
    assert rc == 2, (extra, text, err)
    assert len(lines) == 1 and "Traceback" not in err, err
    assert re.search(match, lines[0]), (match, lines[0])
    assert not out.exists()


def test_series_refuses_bad_files(land, tmp_path, capsys):
    rc, _, err = _cli(capsys, ["series", "--landscape", tmp_path, "--axis", 1, "--pixel-size",
                               PS, "--out", tmp_path / "o"])
    assert rc == 2 and "no landscape.xmd in it" in err
    # particles without PC columns or amplitudes
    t = read_metadata(land / "sim" / "particles.xmd")
    del t["nmaDisplacements"]
    write_xmd(tmp_path / "bare.xmd", t)
    rc, _, err = _cli(capsys, ["series", "--particles", tmp_path / "bare.xmd", "--axis", 1,
                               "--pixel-size", PS, "--out", tmp_path / "o"])
    assert rc == 2 and "no PC1 column and no normal-mode amplitudes" in err
    # a wrong pixel size is refused before anything is written
    rc, _, err = _cli(capsys, ["series", "--landscape", land / "land", "--pixel-size", 5,
                               "--out", tmp_path / "o", "--axis", 1, "--window", 100])
    assert rc == 2 and "header pixel size" in err and not (tmp_path / "o").exists()


# --------------------------------------------------------------------------
# the Scipion protocol and its viewer
def test_series_protocol_and_viewer(land, tmp_path, monkeypatch):
    """A landscape run's particles -> the series protocol's form (messages in
    the form's words), its steps (a SetOfVolumes, one Volume per frame with
    its half maps), its summary, and its one viewer (slices along the path,
    resolution per frame, ChimeraX plays series.cxc or the figure says it is
    not installed)."""
    pytest.importorskip("pwem")
    import shutil
    import uuid
    import pyworkflow
    import pyworkflow.object as pwobj
    from pwem import objects as emobj
    from pyworkflow.project import Manager
    from pyworkflow.viewer import DESKTOP_TKINTER
    from deephemnma import protocols as P
    from deephemnma.viewers import DeepHEMNMAMapViewer
    from deephemnma.viewers.viewer_map import SeriesShower
    project = Manager().createProject(f"test_series_{uuid.uuid4().hex[:8]}")
    monkeypatch.chdir(project.path)
    land_run = project.newProtocol(P.DeepHEMNMAProtLandscape, grouping=0, reconstruct=False)
    project._setupProtocol(land_run)
    parts = emobj.SetOfParticles(filename=str(tmp_path / "parts.sqlite"))
    parts.setSamplingRate(PS)
    p = emobj.Particle(location=(1, str(land / "sim" / "particles.mrcs")))
    parts.append(p)
    parts.write()
    land_run.inputParticles.set(parts)
    folder = land_run.landscapeOutputs().folder
    shutil.copytree(land / "land", folder)
    write_xmd(os.path.join(folder, "landscape.xmd"),        # images found from the copy
              read_metadata(land / "land" / "landscape.xmd"), absolute=True)
    land_run.setStatus(pwobj.STATUS_FINISHED if hasattr(pwobj, "STATUS_FINISHED") else "finished")
    project._storeProtocol(land_run)

    ser = project.newProtocol(P.DeepHEMNMAProtSeries, frames=3, window=150.0, useGpu=False)
    ser.inputLandscape.set(land_run)
    assert ser._validate() == []
    cfg = ser._config()
    assert cfg.axis == 1 and cfg.path is None and cfg.window == 150 and cfg.pixel_size == PS
    assert cfg.landscape == land_run.landscapeOutputs().folder and cfg.structure is None
    for changes, words in (({"window": 0.0}, "*Window* must be"),
                           ({"frames": 1}, "*Frames* must be"),
                           ({"pathKind": 1, "pathPoints": ""}, "*Path*: give points"),
                           ({"pathKind": 1, "pathPoints": "1,2"}, "*Path*: give at least 2"),
                           ({"axis": 3}, "*Axis* 3: the landscape run has 2 dimensions")):
        bad = project.newProtocol(P.DeepHEMNMAProtSeries, **{"frames": 3, "window": 150.0,
                                                             **changes})
        bad.inputLandscape.set(land_run)
        errors = bad._validate()
        assert len(errors) == 1 and words in errors[0], (changes, errors)
        assert "--" not in errors[0]
    along = project.newProtocol(P.DeepHEMNMAProtSeries, pathKind=1, pathPoints="-50,0;50,0",
                                band=20.0)
    along.inputLandscape.set(land_run)
    assert along._config().path == "-50,0;50,0" and along._config().band == 20.0
    assert along._config().axis is None

    project._setupProtocol(ser)
    ser.seriesStep()
    ser.createOutputStep()
    vols = ser.outputVolumes
    assert vols.getSize() == 3 and vols.getSamplingRate() == PS
    files = ser.seriesOutputs()
    items = [(v.getFileName(), v.getObjLabel(), v.getHalfMaps()) for v in vols]
    assert [os.path.basename(f) for f, _, _ in items] == [f"frame_{k:03d}.mrc" for k in (1, 2, 3)]
    assert all(lab.startswith(f"frame {k:03d} at ") and "150 particles" in lab
               for k, (_, lab, _) in enumerate(items, start=1))
    assert all(h and len(h.split(",")) == 2 for _, _, h in items), items
    summary = ser._summary()
    assert "3 maps along PC1" in summary[0] and len(summary) == 4
    # the viewer: the only one of the protocol
    domain = pyworkflow.Config.getDomain()
    assert domain.findViewers(ser, DESKTOP_TKINTER)[0] is DeepHEMNMAMapViewer
    shown = DeepHEMNMAMapViewer(project=project)._visualize(ser)
    assert len(shown) == 1 and isinstance(shown[0], SeriesShower)
    assert shown[0].path == os.path.abspath(files.chimerax)
    assert len(shown[0].fig.axes) == 3 + 2 + 1          # 3 slices, resolution + twin, button
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr("deephemnma.viewers.common.CHIMERAX_GLOBS", ())
    assert shown[0].openChimerax() is None
    assert "ChimeraX is not installed" in shown[0].status.get_text()
    empty = project.newProtocol(P.DeepHEMNMAProtSeries)
    assert "No map series yet" in DeepHEMNMAMapViewer(project=project)._visualize(empty)[0] \
        .getMessage()

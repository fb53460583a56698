"""Viewers, help texts, logo and citations.

* each protocol has exactly one viewer ("Analyze Results" opens only the
  first), whose form offers what there is to see: accuracy only where the
  particles keep a ground truth; maps (reconstruct, Volume, SetOfVolumes)
  have a viewer of their own (slices, FSC, ChimeraX or a message naming the
  map); every window has a meaningful title;
* the viewers draw their figures headless (MPLBACKEND=Agg) from stage
  outputs and from protocol outputs: NMA (eigenvalues, collectivity, one
  ChimeraX animation per mode), amplitudes and landscape of particles
  without ground truth (HEMNMA, predict), accuracy, landscape;
* the viewers and protocols import, and the NMA viewer draws, under
  ``python -O`` (Scipion's GUI), where ProDy's import fails;
* amplitudes are labelled by their HEMNMA numbers (mode 7, 8, 11...), never
  by their position (mode 1, 2, 3);
* the landscape's lasso only marks particles; a confirmed name registers one
  ProtUserSubSet run per selection, a cancelled one nothing;
* every form parameter has a help text, the logo exists and is packaged,
  every cited key is in the bibtex and the methods text links them.
"""
import json
import os
import re
import uuid

import numpy as np
import pytest

from conftest import ROOT, shared_file

pytest.importorskip("pwem")

import matplotlib.pyplot as plt  # noqa: E402
import pyworkflow.object as pwobj  # noqa: E402
from pwem import objects as emobj  # noqa: E402

from deephemnma import protocols as P  # noqa: E402
from deephemnma.viewers.common import amplitude_numbers, mode_label  # noqa: E402


class NoProject:
    """What a form viewer needs of a project (pyworkflow's viewers refuse
    project=None): a temporary folder."""

    def __init__(self, folder="."):
        self.folder = str(folder)

    def getTmpPath(self, *paths):
        return os.path.join(self.folder, *paths)


NO_PROJECT = NoProject()


def _form(viewer_class, protocol, project=NO_PROJECT):
    """The viewer of ``protocol`` with its form defined (as "Analyze
    Results" does): (viewer, names of its form lines, visualize dict)."""
    v = viewer_class(project=project, protocol=protocol)
    v.setProtocol(protocol)
    names = [n for n, _ in v._definition.iterAllParams() if n not in ("runName", "runMode")]
    return v, names, v._getVisualizeDict()


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def _legend(ax):
    return [t.get_text() for t in ax.get_legend().get_texts()]


def _titles(fig):
    return [a.get_title() for a in fig.axes]


# --------------------------------------------------------------------------
# NMA: eigenvalues, collectivity, animations
@pytest.fixture(scope="module")
def ak_modes(tmp_path_factory):
    """The nma stage's outputs for AK (10 modes)."""
    from deephemnma.stages import nma
    out = str(tmp_path_factory.mktemp("viewers") / "nma")
    nma.run(nma.Config(structure=str(shared_file("continuousflex", "AK.pdb")), out=out,
                       n_modes=10), progress=False)
    return nma.Outputs(out)


def test_nma_figure_by_mode_number(ak_modes):
    from deephemnma.viewers.plots import nma_figure, save
    fig = nma_figure(ak_modes.modes_xmd)
    for ax in fig.axes:
        assert ax.get_xlabel() == "mode (HEMNMA number)"
        assert [int(t) for t in ax.get_xticks()] == list(range(1, 11))
        assert len(ax.patches) == 10                      # one bar per mode
    # collectivity bars are the modes' collectivities, in mode order
    from deephemnma.core.nma import read_continuousflex
    modes = read_continuousflex(ak_modes.modes_xmd)
    heights = [p.get_height() for p in fig.axes[1].patches]
    assert np.allclose(heights, modes.collectivity)
    png = save(fig, os.path.join(ak_modes.folder, "modes.png"))
    assert os.path.getsize(png) > 5000


def test_mode_animations_for_chimerax(ak_modes, tmp_path):
    from deephemnma.core.structure import read_structure
    from deephemnma.viewers.plots import write_mode_animations
    paths = write_mode_animations(ak_modes.modes_xmd, ak_modes.reference, str(tmp_path),
                                  frames=12, max_shift=6.0)
    assert [os.path.basename(p) for p in paths] == [f"mode_{n}.pdb" for n in (7, 8, 9, 10)]
    ref = read_structure(ak_modes.reference, "all").coords
    text = open(paths[0]).read()
    assert text.count("\nMODEL") == 12 and text.count("ENDMDL") == 12
    # the frames go from -A to +A along the mode: the atom moving most moves
    # max_shift Å at each end, the middle of the path is the reference
    models = []
    for block in text.split("ENDMDL")[:-1]:
        models.append([[float(x[30:38]), float(x[38:46]), float(x[46:54])]
                       for x in block.splitlines() if x.startswith("ATOM")])
    models = np.array(models)
    assert models.shape == (12, len(ref), 3)
    shift = np.linalg.norm(models[-1] - ref, axis=1)
    assert abs(shift.max() - 6.0) < 0.01
    assert np.allclose((models[0] + models[-1]) / 2, ref, atol=2e-3)
    cxc = open(paths[0][:-4] + ".cxc").read()
    assert cxc.startswith("open mode_7.pdb coordsets true") and "coordset #1 1,12" in cxc


def _nma_protocol(ak_modes, folder):
    """An NMA protocol whose run folder holds ``ak_modes`` and whose
    outputModes point to them."""
    import shutil
    from deephemnma.protocols.convert import modes_to_set
    from deephemnma.stages.nma import Outputs
    prot = P.DeepHEMNMAProtNMA()
    prot.setWorkingDir(str(folder))
    shutil.copytree(ak_modes.folder, prot._getPath())
    os.makedirs(prot._getExtraPath())
    out = Outputs(prot._getPath())
    prot.outputModes = modes_to_set(prot, out.modes_xmd,
                                    emobj.AtomStruct(filename=out.reference))
    return prot


def test_nma_viewer_from_protocol_outputs(ak_modes, tmp_path, monkeypatch):
    from deephemnma.viewers import DeepHEMNMANmaViewer
    from deephemnma.viewers.common import window_title
    prot = _nma_protocol(ak_modes, tmp_path / "run")
    v, names, shows = _form(DeepHEMNMANmaViewer, prot)
    assert names == ["showModes", "animateMode"] and sorted(shows) == sorted(names)
    assert v.animateMode.get() == 7                        # the first flexible mode
    shown = shows["showModes"]("showModes")                # its eye button
    assert len(shown) == 1 and window_title(shown[0].fig) == \
        f"DeepHEMNMA normal modes: {prot.getRunName()}"
    assert os.path.getsize(prot._getExtraPath("modes.png")) > 5000
    assert sorted(os.listdir(v.animationsFolder())) == sorted(
        f"mode_{n}{e}" for n in (7, 8, 9, 10) for e in (".pdb", ".cxc", ".vmd"))
    assert any("animations" in t.get_text() for t in shown[0].fig.texts)
    # an animation: ChimeraX started on mode_N.cxc, or a message naming it
    monkeypatch.setenv("PATH", str(tmp_path))               # no ChimeraX
    v.animateMode.set(9)
    msg = shows["animateMode"]("animateMode")
    assert len(msg) == 1 and "not installed" in msg[0].getMessage()
    assert os.path.join(v.animationsFolder(), "mode_9.cxc") in msg[0].getMessage()
    v.animateMode.set(3)                                    # rigid: refused
    assert "not one of the flexible modes" in shows["animateMode"]("animateMode")[0].getMessage()


def _fake_chimerax(folder):
    """A 'chimerax' on the PATH that writes its arguments and folder to
    ``folder/called``."""
    exe = os.path.join(str(folder), "chimerax")
    with open(exe, "w") as f:
        f.write(f'#!/bin/sh\necho "$PWD $@" > {folder}/called\n')
    os.chmod(exe, 0o755)
    return os.path.join(str(folder), "called")


def test_chimerax_found_and_started(tmp_path, monkeypatch):
    import time
    from deephemnma.viewers.common import find_chimerax, open_in_chimerax
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr("deephemnma.viewers.common.CHIMERAX_GLOBS", ())
    assert find_chimerax() is None and open_in_chimerax(str(tmp_path / "x.mrc")) is None
    called = _fake_chimerax(tmp_path)
    assert find_chimerax() == str(tmp_path / "chimerax")
    (tmp_path / "sub").mkdir()
    open_in_chimerax(str(tmp_path / "sub" / "map.mrc")).wait(10)
    for _ in range(50):
        if os.path.exists(called):
            break
        time.sleep(0.1)
    assert open(called).read().split() == [str(tmp_path / "sub"), str(tmp_path / "sub" / "map.mrc")]


# --------------------------------------------------------------------------
# amplitudes of particles without ground truth
def test_amplitude_figure_labels_modes_by_number(tmp_path):
    from deephemnma.viewers.plots import amplitude_figure, save
    rng = np.random.default_rng(0)
    q = rng.normal(size=(300, 3)) * [100, 50, 20]
    q[5, 1] = np.nan                                   # left out alone
    fig = amplitude_figure(q, [7, 8, 11], cost=rng.uniform(0.1, 0.9, 300), title="test")
    hist, pair, pca, cost = fig.axes[:4]
    assert _legend(hist) == ["mode 7", "mode 8", "mode 11"]
    assert (pair.get_xlabel(), pair.get_ylabel()) == ("mode 7 amplitude", "mode 8 amplitude")
    assert pca.get_xlabel().startswith("PC1") and "7, 8, 11" in pca.get_title()
    assert cost.get_title() == "alignment cost"
    assert sum(p.get_height() for p in cost.patches) == 299     # the finite rows
    assert os.path.getsize(save(fig, str(tmp_path / "a.png"))) > 5000
    with pytest.raises(ValueError, match="3 amplitudes per particle, 2 mode numbers"):
        amplitude_figure(q, [7, 8])


def _particles(path, q, cost=None, first_id=1):
    """A SetOfParticles (sqlite at ``path``) carrying amplitudes ``q``, ids
    from ``first_id``."""
    parts = emobj.SetOfParticles(filename=path)
    parts.setSamplingRate(2.0)
    for k, row in enumerate(q):
        p = emobj.Particle(location=(k + 1, "stack.mrcs"))
        p.setObjId(k + first_id)
        p._xmipp_nmaDisplacements = pwobj.CsvList(pType=float)
        p._xmipp_nmaDisplacements.set([float(x) for x in row])
        if cost is not None:
            p._xmipp_cost = pwobj.Float(float(cost[k]))
        parts.append(p)
    parts.write()
    return parts


def test_amplitudes_viewer_hemnma_and_predict_numbers(tmp_path):
    from deephemnma.objects import DeepHEMNMAModel
    from deephemnma.viewers import DeepHEMNMAParticlesViewer
    from deephemnma.viewers.viewer_particles import amplitude_values, amplitudes_figure
    rng = np.random.default_rng(1)
    q = rng.normal(size=(50, 3)) * 80
    ali = P.DeepHEMNMAProtAlign(modeList="7,8,11")
    ali.setWorkingDir(str(tmp_path / "ali"))
    os.makedirs(ali._getExtraPath())
    ali.outputParticles = _particles(str(tmp_path / "a.sqlite"), q, rng.uniform(0, 1, 50))
    values, cost, numbers = amplitude_values(ali, ali.outputParticles)
    assert np.allclose(values, q) and cost is not None and numbers == [7, 8, 11]
    fig = amplitudes_figure(ali, ali.outputParticles)
    assert _legend(fig.axes[0]) == ["mode 7", "mode 8", "mode 11"]
    assert os.path.getsize(ali._getExtraPath("amplitudes.png")) > 5000
    # the form: amplitudes; no ground truth on these particles, and it says so
    v, names, shows = _form(DeepHEMNMAParticlesViewer, ali)
    assert names == ["showAmplitudes", "noAccuracy"] and list(shows) == ["showAmplitudes"]
    assert "no ground truth" in v._definition.getParam("noAccuracy").label.get()
    shown = shows["showAmplitudes"]("showAmplitudes")
    assert len(shown) == 1 and _legend(shown[0].fig.axes[0])[-1] == "mode 11"

    model = DeepHEMNMAModel(filename="model.pt")
    model._modeNumbers.set([7, 9])
    pred = P.DeepHEMNMAProtPredict()
    pred.inputModel.set(model)
    pred.setWorkingDir(str(tmp_path / "pred"))
    os.makedirs(pred._getExtraPath())
    pred.outputParticles = _particles(str(tmp_path / "p.sqlite"), q[:, :2])
    fig = amplitudes_figure(pred, pred.outputParticles)
    assert _legend(fig.axes[0]) == ["mode 7", "mode 9"]
    assert "alignment cost" not in _titles(fig)             # predictions carry no cost


def test_amplitude_numbers_follow_the_upstream_protocol():
    ali = P.DeepHEMNMAProtAlign(modeList="8-10")
    land = P.DeepHEMNMAProtLandscape()
    land.inputParticles.set(ali)
    land.inputParticles.setExtended("outputParticles")
    assert amplitude_numbers(land, 3) == [8, 9, 10]
    assert amplitude_numbers(P.DeepHEMNMAProtLandscape(), 3) is None
    assert mode_label(7) == "mode 7"


def test_accuracy_viewer_titles_modes_by_number(tmp_path):
    """Synthetic particles (ground truth kept) aligned with modes 7, 8, 11:
    the accuracy panels are titled by those numbers."""
    from deephemnma.protocols.convert import GT_ATTRS, matrix_from_geometry
    from deephemnma.viewers import DeepHEMNMAParticlesViewer
    from deephemnma.viewers.common import window_title
    rng = np.random.default_rng(3)
    n = 40
    q = rng.normal(size=(n, 3)) * 50
    angles = np.column_stack([rng.uniform(-180, 180, n), rng.uniform(10, 170, n),
                              rng.uniform(-180, 180, n)])
    shifts = rng.uniform(-2, 2, (n, 2))
    parts = emobj.SetOfParticles(filename=str(tmp_path / "acc.sqlite"))
    parts.setSamplingRate(2.0)
    parts.setAlignmentProj()
    for k in range(n):
        p = emobj.Particle(location=(k + 1, "stack.mrcs"))
        p.setObjId(k + 1)
        p.setTransform(emobj.Transform(matrix_from_geometry(angles[k], shifts[k])))
        p._xmipp_nmaDisplacements = pwobj.CsvList(pType=float)
        p._xmipp_nmaDisplacements.set([float(x) + 5.0 for x in q[k]])   # MAE 5
        for name, val in zip(GT_ATTRS, (angles[k], shifts[k], q[k])):
            setattr(p, name, pwobj.CsvList(pType=float))
            getattr(p, name).set([float(x) for x in val])
        parts.append(p)
    parts.write()
    ali = P.DeepHEMNMAProtAlign(modeList="7,8,11")
    ali.setWorkingDir(str(tmp_path / "ali"))
    os.makedirs(ali._getExtraPath())
    ali.outputParticles = parts
    v, names, shows = _form(DeepHEMNMAParticlesViewer, ali)
    assert names == ["showAmplitudes", "showAccuracy"] and sorted(shows) == sorted(names)
    res, _, _, png, fig = v.accuracy()
    assert res["n"] == n and os.path.getsize(png) > 5000
    assert _titles(fig)[:3] == ["mode 7: MAE 5.0", "mode 8: MAE 5.0", "mode 11: MAE 5.0"]
    shown = shows["showAccuracy"]("showAccuracy")
    assert window_title(shown[0].fig) == f"DeepHEMNMA accuracy: {ali.getRunName()}"
    # the synthesized particles themselves: their amplitudes are the truth
    syn = P.DeepHEMNMAProtSynthesize()
    syn.setWorkingDir(str(tmp_path / "syn"))
    syn.outputParticles = parts
    _, names, shows = _form(DeepHEMNMAParticlesViewer, syn)
    assert names == ["showAmplitudes", "aboutTruth"] and list(shows) == ["showAmplitudes"]


# --------------------------------------------------------------------------
# landscape: labels, lasso, confirmed subsets (a real project)
@pytest.fixture(scope="module")
def landscape_project(tmp_path_factory):
    """A project holding a HEMNMA run (modes 7, 8, 11; outputs made here) and
    a landscape run on its particles (landscape stage run here)."""
    from pyworkflow.project import Manager
    from deephemnma.io.metadata import read_metadata
    from deephemnma.protocols.convert import fill_particles
    from deephemnma.stages import landscape
    project = Manager().createProject(f"test_viewers_{uuid.uuid4().hex[:8]}")
    cwd = os.getcwd()
    os.chdir(project.path)                 # run folders are relative to the project
    rng = np.random.default_rng(2)
    q = rng.normal(size=(40, 3)) * [90, 40, 10]
    ali = project.newProtocol(P.DeepHEMNMAProtAlign, modeList="7,8,11")
    project._setupProtocol(ali)            # stored, with its run folder
    os.makedirs(ali._getPath())
    ali._defineOutputs(outputParticles=_particles(ali._getPath("particles.sqlite"), q))
    ali.setStatus(pwobj.STATUS_FINISHED if hasattr(pwobj, "STATUS_FINISHED") else "finished")
    project._storeProtocol(ali)
    land = project.newProtocol(P.DeepHEMNMAProtLandscape, inputParticles=ali.outputParticles,
                               grouping=0, reconstruct=False)
    project._setupProtocol(land)
    os.makedirs(land._getExtraPath(), exist_ok=True)
    from deephemnma.io.metadata import write_xmd
    from deephemnma.protocols.convert import particles_to_table
    write_xmd(land._getExtraPath("input.xmd"), particles_to_table(ali.outputParticles))
    landscape.run(landscape.Config(particles=land._getExtraPath("input.xmd"),
                                   out=land.landscapeOutputs().folder), progress=False)
    out = land._createSetOfParticles()
    fill_particles(out, ali.outputParticles,
                   read_metadata(land.landscapeOutputs().landscape), with_alignment=False)
    land._defineOutputs(outputParticles=out)
    land.setStatus(pwobj.STATUS_FINISHED if hasattr(pwobj, "STATUS_FINISHED") else "finished")
    project._storeProtocol(land)
    yield project, project.getProtocol(land.getObjId())
    os.chdir(cwd)


@pytest.fixture(scope="module")
def two_set_landscape(landscape_project):
    """In the same project, a landscape of the HEMNMA run's particles and a
    second set drawn apart (25 particles, ids 101...), in 2 k-means groups,
    group 1 with a map and its FSC."""
    from deephemnma.io.metadata import write_xmd
    from deephemnma.io.stacks import write_volume
    from deephemnma.protocols.convert import particles_to_table
    from deephemnma.stages import landscape
    project, _ = landscape_project
    ali = _align_run(project)
    land = project.newProtocol(P.DeepHEMNMAProtLandscape, apartLabel="HEMNMA-labelled",
                               grouping=3, kmeans=2, reconstruct=False)
    land.inputParticles.set(ali)
    land.inputParticles.setExtended("outputParticles")
    project._setupProtocol(land)
    os.makedirs(land._getExtraPath(), exist_ok=True)
    rng = np.random.default_rng(5)
    second = _particles(land._getExtraPath("second.sqlite"),
                        rng.normal(size=(25, 3)) * [90, 40, 10], first_id=101)
    write_xmd(land._getExtraPath("input.xmd"), particles_to_table(ali.outputParticles))
    write_xmd(land._getExtraPath(land.APART_FILE), particles_to_table(second))
    out = landscape.run(landscape.Config(
        particles=land._getExtraPath("input.xmd"), also=land._getExtraPath(land.APART_FILE),
        also_label="HEMNMA-labelled", kmeans=2, min_group=2,
        out=land.landscapeOutputs().folder), progress=False)
    files = land.landscapeOutputs()
    x = np.linspace(-1, 1, 16)
    vol = np.exp(-(x[:, None, None] ** 2 + 4 * x[None, :, None] ** 2 + x[None, None, :] ** 2))
    write_volume(files.group_map(1), vol.astype(np.float32), 2.0)
    with open(files.fsc_json(1), "w") as f:
        json.dump({"res_0.5": 9.0, "res_0.143": 6.0, "freq": [0.0, 0.1, 0.2],
                   "fsc": [1.0, 0.6, 0.1]}, f)
    project._storeProtocol(land)
    return project, land, out


def _align_run(project):
    return [p for p in project.getRuns() if isinstance(p, P.DeepHEMNMAProtAlign)][0]


def _subsets(project):
    from pwem.protocols import ProtUserSubSet
    return [p for p in project.getRuns(refresh=True) if isinstance(p, ProtUserSubSet)]


def test_landscape_viewer_labels_and_confirmed_subsets(landscape_project, tmp_path):
    from deephemnma.viewers import DeepHEMNMALandscapeViewer
    project, land = landscape_project
    v = DeepHEMNMALandscapeViewer(project=project, protocol=land)
    fig = v.figure()
    assert _legend(fig.axes[1]) == ["mode 7", "mode 8", "mode 11"]   # from the HEMNMA run
    t, c = v._coords()
    asked = []
    v._askName = lambda n: asked.append(n) or None                    # the user cancels
    assert v.confirmSelection() is None and asked == []               # nothing selected
    right = c[:, 0] > np.median(c[:, 0])
    v.select(right)                                                   # a lasso stroke
    assert _subsets(project) == []                                    # not registered
    assert "20 particles selected" in fig.axes[0].get_title()
    assert v.confirmSelection() is None and asked == [20]             # cancelled
    assert _subsets(project) == []
    v._askName = lambda n: f"right half ({n})"                        # confirmed
    run = v.confirmSelection(wait=True)
    assert run is not None and v._pending is None
    v.select(~right)
    v.confirmSelection(name="left half", wait=True)
    runs = {p.getObjLabel(): p for p in _subsets(project)}
    assert sorted(runs) == ["left half", "right half (20)"]
    for label, mask in (("right half (20)", right), ("left half", ~right)):
        sub = runs[label].outputParticles
        assert {p.getObjId() for p in sub} == {int(i) for i in t["itemId"][mask]}


def test_landscape_viewer_draws_a_path(landscape_project):
    """"Draw a path": clicks on the landscape are the path's points (right
    click removes the last, clicks elsewhere count for nothing), the lasso
    rests meanwhile; "Save path" writes path.txt, which the series stage
    reads back as the same points; fewer than 2 points are refused."""
    from types import SimpleNamespace
    from deephemnma.stages.series import read_path
    from deephemnma.viewers import DeepHEMNMALandscapeViewer
    project, land = landscape_project
    v = DeepHEMNMALandscapeViewer(project=project, protocol=land)
    fig = v.figure()
    ax = fig.axes[0]
    if os.path.exists(v.pathFile()):
        os.remove(v.pathFile())

    def click(x, y, button=1, where=ax):
        v._onClick(SimpleNamespace(inaxes=where, button=button, xdata=x, ydata=y))
    click(1, 1)                                        # not drawing: ignored
    assert v._pathPoints == [] and v._lasso.active
    assert v.togglePath() is None and not v._lasso.active
    click(-50, 0)
    assert v.togglePath() is None and "at least 2 points" in ax.get_title()
    assert not os.path.exists(v.pathFile()) and v._drawing
    click(0, 20)
    click(99, 99, button=3)                            # removes (0, 20)
    click(0, 25)
    click(5, 5, where=fig.axes[1])                     # the histograms: ignored
    click(40, 0)
    assert np.allclose(v._pathLine.get_xydata(), [[-50, 0], [0, 25], [40, 0]])
    saved = v.togglePath()
    assert saved == v.pathFile() and v._lasso.active and not v._drawing
    assert np.allclose(read_path(saved), [[-50, 0], [0, 25], [40, 0]])
    assert "path of 3 points saved" in ax.get_title()
    os.remove(saved)


def test_landscape_viewer_form_sets_groups_titles(two_set_landscape, monkeypatch, tmp_path):
    """The landscape window: a legend entry per set, a colour bar, each
    group's number and size, a title; the form offers the group maps (slices
    and FSC) and the animations (none here: no reference given)."""
    from deephemnma.viewers import DeepHEMNMALandscapeViewer
    from deephemnma.viewers.common import window_title
    project, land, out = two_set_landscape
    v, names, shows = _form(DeepHEMNMALandscapeViewer, land, project)
    assert names == ["showLandscape", "showGroupMap", "noAxis"]
    assert v.formTitle() == f"DeepHEMNMA {v._label}: {land.getRunName()}"   # the form's window
    assert sorted(shows) == ["showGroupMap", "showLandscape"]
    shown = shows["showLandscape"]("showLandscape")
    fig = shown[0].fig
    assert window_title(fig) == f"DeepHEMNMA landscape: {land.getRunName()}"
    density = fig.axes[0]
    ali_name = _align_run(project).getRunName()
    assert _legend(density) == [f"{ali_name} (40): density", "HEMNMA-labelled (25)"]
    assert any(a.get_ylabel().endswith("images per hexagon (log)") for a in fig.axes)
    sizes = sorted(int(t.get_text().split("(")[1].rstrip(")")) for t in density.texts)
    assert sizes == sorted(out.group_sizes.values()) and sum(sizes) == 65
    assert f"{land.getRunName()}: landscape of 65 particles" in fig._suptitle.get_text()
    assert "2 groups" in fig._suptitle.get_text()
    # group 1's map: slices in three directions and the FSC
    maps = shows["showGroupMap"]("showGroupMap")
    assert len(maps) == 1 and window_title(maps[0].fig) == \
        f"DeepHEMNMA map of group 1: {land.getRunName()}"
    assert [a.get_title().split(" (")[0] for a in maps[0].fig.axes[:4]] == \
        ["central slice XY", "central slice XZ", "central slice YZ", "FSC"]
    assert _legend(maps[0].fig.axes[3]) == ["0.5: 9.00 Å", "0.143: 6.00 Å"]
    v.showGroupMap.set(2)                                   # no map
    assert "has no map" in shows["showGroupMap"]("showGroupMap")[0].getMessage()


def test_map_viewer_volumes_fsc_and_chimerax(two_set_landscape, tmp_path, monkeypatch):
    """Maps have a viewer of their own: the reconstruct protocol's map and any
    Volume / SetOfVolumes; the FSC where a protocol wrote one beside the map;
    ChimeraX started by the button, or the figure says it is not installed,
    with the map's path."""
    import pyworkflow
    from pyworkflow.viewer import DESKTOP_TKINTER
    from deephemnma.viewers import DeepHEMNMAMapViewer
    from deephemnma.viewers.common import window_title
    from deephemnma.viewers.viewer_map import fsc_beside
    project, land, _ = two_set_landscape
    files = land.landscapeOutputs()
    vol = emobj.Volume(location=files.group_map(1))
    assert DeepHEMNMAMapViewer in pyworkflow.Config.getDomain().findViewers(vol, DESKTOP_TKINTER)
    assert fsc_beside(files.group_map(1)) == files.fsc_json(1)
    v = DeepHEMNMAMapViewer(project=project)
    shown = v._visualize(vol)
    assert len(shown) == 1 and len(shown[0].fig.axes) == 5        # 3 slices, FSC, button
    assert window_title(shown[0].fig) == "DeepHEMNMA map: group_01.mrc"
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr("deephemnma.viewers.common.CHIMERAX_GLOBS", ())
    assert shown[0].openChimerax() is None
    text = shown[0].status.get_text()
    assert "ChimeraX is not installed" in text and os.path.abspath(files.group_map(1)) in text
    _fake_chimerax(tmp_path)
    assert shown[0].openChimerax().wait(10) == 0
    # a SetOfVolumes: one window per map, no FSC without one beside it
    other = str(tmp_path / "other.mrc")
    import shutil
    shutil.copy(files.group_map(1), other)
    vols = emobj.SetOfVolumes(filename=str(tmp_path / "vols.sqlite"))
    for path in (files.group_map(1), other):
        vols.append(emobj.Volume(location=path))
    shown = v._visualize(vols)
    assert [len(s.fig.axes) for s in shown] == [5, 4], v.maps(vols)
    # the reconstruct protocol: its map and its extra/fsc.json
    rec = P.DeepHEMNMAProtReconstruct()
    rec.setWorkingDir(str(tmp_path / "rec"))
    os.makedirs(rec._getExtraPath())
    shutil.copy(files.group_map(1), rec._getExtraPath("map.mrc"))
    shutil.copy(files.fsc_json(1), rec._getExtraPath("fsc.json"))
    assert "No map yet" in v._visualize(rec)[0].getMessage()
    rec.outputVolume = emobj.Volume(location=rec._getExtraPath("map.mrc"))
    shown = v._visualize(rec)
    assert len(shown[0].fig.axes) == 5 and shown[0].path == rec._getExtraPath("map.mrc")
    # a map that cannot be read: a message, and no half-built figure left
    bad = str(tmp_path / "bad.mrc")
    open(bad, "w").write("not a map")
    before = plt.get_fignums()
    msg = v._visualize(emobj.Volume(location=bad))
    assert len(msg) == 1 and "cannot read" in msg[0].getMessage()
    assert plt.get_fignums() == before


def test_map_viewer_half_map_fsc(two_set_landscape):
    """Where the reconstruct stage wrote the half-map FSC beside a map, the
    map viewer adds its panel (unmasked, masked corrected and uncorrected,
    phase-randomised curves, resolutions at 0.143) after the centroid FSC,
    which stays as it was."""
    from deephemnma.stages import reconstruct
    from deephemnma.viewers import DeepHEMNMAMapViewer
    from deephemnma.viewers.viewer_map import halves_beside
    project, land, _ = two_set_landscape
    files = land.landscapeOutputs()
    rec = files.group_reconstruction(1)
    assert halves_beside(files.group_map(1)) is None
    from deephemnma.io.stacks import read_volume
    vol = read_volume(files.group_map(1))[0]
    rng = np.random.default_rng(0)
    maps = [vol] + [vol + 0.05 * rng.normal(size=vol.shape) for _ in range(2)]
    r, _ = reconstruct._half_map_results(reconstruct.Config(pixel_size=2.0), maps,
                                         np.array([0, 1]))
    with open(rec.fsc_halves_json, "w") as f:
        json.dump(r, f)
    try:
        assert halves_beside(files.group_map(1)) == rec.fsc_halves_json
        shown = DeepHEMNMAMapViewer(project=project)._visualize(
            emobj.Volume(location=files.group_map(1)))
        axes = shown[0].fig.axes
        assert len(axes) == 6                                   # 3 slices, 2 FSC, button
        assert [a.get_title() for a in axes[3:5]] == ["FSC", "half-map FSC"]
        assert _legend(axes[3]) == ["0.5: 9.00 Å", "0.143: 6.00 Å"]
        assert _legend(axes[4]) == [
            f"unmasked: {r['res_0.143']:.2f} Å",
            f"masked, corrected: {r['res_0.143_masked']:.2f} Å",
            f"masked, uncorrected: {r['res_0.143_masked_uncorrected']:.2f} Å",
            f"phase-randomised beyond {r['phase_randomised_from']:.2f} Å"]
        # a JSON without the correction's curves: unmasked and masked
        old = {k: v for k, v in r.items() if k in ("freq", "fsc", "fsc_masked", "res_0.143",
                                                   "res_0.143_masked")}
        with open(rec.fsc_halves_json, "w") as f:
            json.dump(old, f)
        shown = DeepHEMNMAMapViewer(project=project)._visualize(
            emobj.Volume(location=files.group_map(1)))
        assert _legend(shown[0].fig.axes[4]) == [f"unmasked: {r['res_0.143']:.2f} Å",
                                                 f"masked: {r['res_0.143_masked']:.2f} Å"]
    finally:
        os.remove(rec.fsc_halves_json)


def test_one_viewer_per_protocol():
    """"Analyze Results" opens a protocol's first viewer: each protocol has
    exactly one, which the domain finds first."""
    import pyworkflow
    from pyworkflow.viewer import DESKTOP_TKINTER
    import deephemnma.viewers as V
    viewers = [getattr(V, n) for n in V.__all__]
    domain = pyworkflow.Config.getDomain()
    for cls in _registered():
        mine = [v for v in viewers if cls in v._targets]
        assert len(mine) == 1, (cls.__name__, mine)
        assert domain.findViewers(cls(), DESKTOP_TKINTER)[0] is mine[0], cls.__name__


def test_guarded_errors_close_half_built_figures():
    from deephemnma.viewers.common import guarded

    class V:
        def errorMessage(self, msg, title=""):
            return ("error", msg)

    def broken(name):
        plt.figure()
        raise ValueError("could not convert string to float: 'A'")
    before = plt.get_fignums()
    assert guarded(V(), "Eigenvalues", broken)("x") == [
        ("error", "Eigenvalues: ValueError: could not convert string to float: 'A'")]
    assert plt.get_fignums() == before


# --------------------------------------------------------------------------
# python -O: Scipion's GUI
#: imports every viewer module and the protocols, under python -O
IMPORT_ALL = """
import importlib, pkgutil, sys
import deephemnma.viewers as V, deephemnma.protocols as P
assert not __debug__
for m in pkgutil.iter_modules(V.__path__):
    importlib.import_module("deephemnma.viewers." + m.name)
for m in pkgutil.iter_modules(P.__path__):
    importlib.import_module("deephemnma.protocols." + m.name)
assert "prody" not in sys.modules, "a viewer imported ProDy"
print("imported", len(list(pkgutil.iter_modules(V.__path__))), "viewer modules")
"""

#: draws the NMA viewer's figure and animations under python -O
NMA_UNDER_O = """
import os, shutil, sys
import matplotlib
matplotlib.use("Agg")
import pwem.objects as emobj
from deephemnma import protocols as P
from deephemnma.protocols.convert import modes_to_set
from deephemnma.stages.nma import Outputs
from deephemnma.viewers import DeepHEMNMANmaViewer
assert not __debug__
src, run = sys.argv[1:3]
prot = P.DeepHEMNMAProtNMA()
prot.setWorkingDir(run)
shutil.copytree(src, prot._getPath())
os.makedirs(prot._getExtraPath())
out = Outputs(prot._getPath())
prot.outputModes = modes_to_set(prot, out.modes_xmd, emobj.AtomStruct(filename=out.reference))
class Project:
    def getTmpPath(self, *p):
        return run
v = DeepHEMNMANmaViewer(project=Project(), protocol=prot)
v.setProtocol(prot)
shown = v._getVisualizeDict()["showModes"]("showModes")
assert type(shown[0]).__name__ == "Shower", shown[0].getMessage()
assert len(shown[0].fig.axes) == 2
print(sorted(os.listdir(v.animationsFolder())))
"""


def _run_optimized(code, *args):
    import subprocess
    import sys
    env = dict(os.environ, MPLBACKEND="Agg", PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-O", "-c", code, *args], capture_output=True,
                          text=True, env=env, cwd=str(ROOT), timeout=300)


def test_viewers_and_protocols_import_under_python_O():
    r = _run_optimized(IMPORT_ALL)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "viewer modules" in r.stdout


def test_nma_viewer_draws_under_python_O(ak_modes, tmp_path):
    r = _run_optimized(NMA_UNDER_O, ak_modes.folder, str(tmp_path / "run"))
    assert r.returncode == 0, r.stderr[-3000:]
    assert "'mode_7.cxc', 'mode_7.pdb'" in r.stdout


def test_read_pdb_without_prody_matches_read_structure(ak_modes, tmp_path):
    """read_pdb (no ProDy) gives what read_structure gives for the PDBs
    write_pdb writes: atoms and pseudoatoms."""
    import dataclasses
    from deephemnma.core.structure import read_pdb, read_structure, write_pdb
    ref = read_structure(ak_modes.reference, "all")
    pseudo = dataclasses.replace(ref.subset(np.arange(len(ref)) % 7 == 0), sigma=2.5)
    pseudo.weights = np.linspace(0.5, 3.0, len(pseudo))
    path = str(tmp_path / "pseudo.pdb")
    write_pdb(path, pseudo, np.stack([pseudo.coords, pseudo.coords + 1]))   # two models
    for f in (ak_modes.reference, path):
        a, b = read_pdb(f), read_structure(f, "all")
        assert a.sigma == b.sigma and len(a) == len(b)
        assert np.allclose(a.coords, b.coords) and np.allclose(a.weights, b.weights)
        for k in ("names", "resnames", "resnums", "chains", "elements"):
            assert list(getattr(a, k)) == list(getattr(b, k)), (f, k)
    assert read_pdb(path).sigma == 2.5
    from deephemnma.errors import InputError
    (tmp_path / "empty.pdb").write_text("REMARK nothing\nEND\n")
    with pytest.raises(InputError, match="no atoms"):
        read_pdb(str(tmp_path / "empty.pdb"))


# --------------------------------------------------------------------------
# help texts, logo, citations
#: parameters pyworkflow adds to every form (their help is pyworkflow's)
STANDARD = {"runName", "runMode", "comment", "hostName", "numberOfThreads", "numberOfMpi",
            "useQueue", "queueParams", "_useQueue", "_queueParams"}


def _registered():
    import pyworkflow
    # Scipion's own domain (pwem.Domain): pyworkflow.plugin.Domain.getProtocols()
    # would rebind pwem.Domain for the rest of the process
    prots = pyworkflow.Config.getDomain().getProtocols()   # sets each class's plugin
    return [prots[name] for name in P.__all__]


def test_every_form_parameter_has_help():
    missing = []
    for cls in _registered():
        for name, param in cls().getDefinition().iterAllParams():
            if name not in STANDARD and not (param.help.get() or "").strip():
                missing.append(f"{cls.__name__}.{name}")
    assert not missing, f"no help text: {missing}"


def test_logo_exists_and_is_packaged():
    import deephemnma
    for cls in _registered():
        path = cls.getPluginLogoPath()
        assert path and os.path.basename(path) == deephemnma._logo
        with open(path, "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    setup = (ROOT / "setup.py").read_text()
    assert re.search(r"package_data=\{\"deephemnma\": \[[^]]*\"deephemnma_logo\.png\"", setup), \
        "setup.py's package_data does not list deephemnma_logo.png"


def test_citations_exist_and_methods_link_them():
    import deephemnma
    import pyworkflow
    bibtex = pyworkflow.Config.getDomain().getPlugin("deephemnma")._bibtex
    assert set(deephemnma._references) <= set(bibtex)
    for key, entry in bibtex.items():
        assert entry["doi"].startswith("https://doi.org/"), key   # a link in the GUI
    for cls in _registered():
        prot = cls()
        cites = prot._citations()
        assert cites and set(cites) <= set(bibtex), (cls.__name__, cites)
        methods = " ".join(prot._methods())
        keys = re.findall(r"\[([A-Za-z]+\d{4}[a-z]?)\]", methods)
        assert keys, f"{cls.__name__}: the methods cite nothing"
        assert set(keys) <= set(bibtex) and set(keys) <= set(cites) | set(
            deephemnma._references), (cls.__name__, keys)
        parsed = " ".join(prot.getParsedMethods())
        for k in keys:                       # pyworkflow turned each [Key] into a link
            assert f"[[{bibtex[k]['doi']}][{k}]]" in parsed, (cls.__name__, k, parsed)
        assert not re.search(r"(?<![\[\]])\[[A-Za-z]+\d{4}", parsed), parsed

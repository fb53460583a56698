"""Viewers, help texts, logo and citations.

* the viewers draw their figures headless (MPLBACKEND=Agg) from stage
  outputs and from protocol outputs: NMA (eigenvalues, collectivity, one
  ChimeraX animation per mode), amplitudes and landscape of particles
  without ground truth (HEMNMA, predict), accuracy, landscape;
* amplitudes are labelled by their HEMNMA numbers (mode 7, 8, 11...), never
  by their position (mode 1, 2, 3);
* the landscape's lasso only marks particles; a confirmed name registers one
  ProtUserSubSet run per selection, a cancelled one nothing;
* every form parameter has a help text, the logo exists and is packaged,
  every cited key is in the bibtex and the methods text links them.
"""
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


#: pyworkflow's viewers refuse project=None; these viewers need none
NO_PROJECT = object()


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


def test_nma_viewer_from_protocol_outputs(ak_modes, tmp_path):
    import shutil
    from deephemnma.protocols.convert import modes_to_set
    from deephemnma.viewers import DeepHEMNMANmaViewer
    prot = P.DeepHEMNMAProtNMA()
    prot.setWorkingDir(str(tmp_path / "run"))
    shutil.copytree(ak_modes.folder, prot._getPath())
    os.makedirs(prot._getExtraPath())
    from deephemnma.stages.nma import Outputs
    out = Outputs(prot._getPath())
    prot.outputModes = modes_to_set(prot, out.modes_xmd,
                                    emobj.AtomStruct(filename=out.reference))
    v = DeepHEMNMANmaViewer(project=NO_PROJECT, protocol=prot)
    fig = v.figure()
    assert os.path.getsize(prot._getExtraPath("modes.png")) > 5000
    assert sorted(os.listdir(v.animationsFolder())) == sorted(
        f"mode_{n}{e}" for n in (7, 8, 9, 10) for e in (".pdb", ".cxc", ".vmd"))
    assert any("animations" in t.get_text() for t in fig.texts)
    shown = v._visualize(prot.outputModes)             # what Scipion's menu shows
    assert len(shown) == 1 and hasattr(shown[0], "show") and hasattr(shown[0], "fig")


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


def _particles(path, q, cost=None):
    """A SetOfParticles (sqlite at ``path``) carrying amplitudes ``q``."""
    parts = emobj.SetOfParticles(filename=path)
    parts.setSamplingRate(2.0)
    for k, row in enumerate(q):
        p = emobj.Particle(location=(k + 1, "stack.mrcs"))
        p.setObjId(k + 1)
        p._xmipp_nmaDisplacements = pwobj.CsvList(pType=float)
        p._xmipp_nmaDisplacements.set([float(x) for x in row])
        if cost is not None:
            p._xmipp_cost = pwobj.Float(float(cost[k]))
        parts.append(p)
    parts.write()
    return parts


def test_amplitudes_viewer_hemnma_and_predict_numbers(tmp_path):
    from deephemnma.objects import DeepHEMNMAModel
    from deephemnma.viewers import DeepHEMNMAAmplitudesViewer
    rng = np.random.default_rng(1)
    q = rng.normal(size=(50, 3)) * 80
    ali = P.DeepHEMNMAProtAlign(modeList="7,8,11")
    ali.setWorkingDir(str(tmp_path / "ali"))
    os.makedirs(ali._getExtraPath())
    ali.outputParticles = _particles(str(tmp_path / "a.sqlite"), q, rng.uniform(0, 1, 50))
    v = DeepHEMNMAAmplitudesViewer(project=NO_PROJECT, protocol=ali)
    values, cost, numbers = v.values()
    assert np.allclose(values, q) and cost is not None and numbers == [7, 8, 11]
    fig = v.figure()
    assert _legend(fig.axes[0]) == ["mode 7", "mode 8", "mode 11"]
    assert os.path.getsize(ali._getExtraPath("amplitudes.png")) > 5000
    shown = v._visualize(ali.outputParticles)
    assert len(shown) == 1 and _legend(shown[0].fig.axes[0])[-1] == "mode 11"

    model = DeepHEMNMAModel(filename="model.pt")
    model._modeNumbers.set([7, 9])
    pred = P.DeepHEMNMAProtPredict()
    pred.inputModel.set(model)
    pred.setWorkingDir(str(tmp_path / "pred"))
    os.makedirs(pred._getExtraPath())
    pred.outputParticles = _particles(str(tmp_path / "p.sqlite"), q[:, :2])
    fig = DeepHEMNMAAmplitudesViewer(project=NO_PROJECT, protocol=pred).figure()
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
    from deephemnma.viewers import DeepHEMNMAAccuracyViewer
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
    v = DeepHEMNMAAccuracyViewer(project=NO_PROJECT, protocol=ali)
    res, _, _, png = v.accuracy()
    assert res["n"] == n and os.path.getsize(png) > 5000
    assert _titles(v._fig)[:3] == ["mode 7: MAE 5.0", "mode 8: MAE 5.0", "mode 11: MAE 5.0"]


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

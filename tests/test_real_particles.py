"""The 12 real cryo-EM particles shipped in tests/data/particles (cryoDRGN's
test files; sources in tests/data/SOURCES.md) through import, predict and
landscape, on the command line and in a Scipion project:

* relion31.star + relion31.mrcs: 5 particles, RELION 3.1 (optics group,
  2.806 Å/px, origins in Å), 256 px; the stack's header carries no pixel size;
* empiar_10076_7.star + .mrc: 7 ribosome particles, older STAR without optics
  group (pixel size from magnification and detector pixel: 1.31 Å/px), 320 px;
  the stack's header carries no pixel size either.

The STAR values the tests compare with are read from the files by a parser of
this module, independent of deephemnma.io.metadata. The models are networks of
random weights on 32 px images (as in tests/test_predict.py): the tests are
about what the real files carry through the stages, not about accuracy. The
two sets image fields of different sizes (718 Å and 419 Å), so each has its
model: the same network saved at the pixel size that makes 32 px cover its
field (8 and 10 times the particles' pixel size, the --rescale factors).
"""
import os
import re

import numpy as np
import pytest
import torch

from deephemnma.cli import main as cli
from deephemnma.core.ctf import CTFParams
from deephemnma.core.image import downscale
from deephemnma.core.inference import Predictor
from deephemnma.core.models import load_model, save_model
from deephemnma.core.network import DeepHEMNMANet
from deephemnma.core.training import phase_flip_images
from deephemnma.io.metadata import parse_image_ref, read_metadata
from deephemnma.io.stacks import load_images, open_stack

from conftest import shared_file

BOX = 32                     # px of the models
RELION = "relion31.star"
EMPIAR = "empiar_10076_7.star"
# what the files hold: particles, box, pixel size (Å/px), --rescale factor
SETS = {RELION: (5, 256, 2.806, 8), EMPIAR: (7, 320, 5 * 1e4 / 38168, 10)}


def _star(path):
    """{block: [ {label: text} per row ]} of a STAR file (plain tokens)."""
    blocks, name, labels = {}, None, []
    with open(path) as f:
        for line in f:
            s = line.strip()
            if not s or s.startswith("#"):
                continue
            if s.startswith("data_"):
                name, labels = s[5:], []
                blocks[name] = []
            elif s.startswith("loop_"):
                continue
            elif s.startswith("_"):
                labels.append(s.split()[0][1:])
            else:
                values = s.split()
                assert len(values) == len(labels), s
                blocks[name].append(dict(zip(labels, values)))
    return blocks


def _col(rows, label):
    return np.array([float(r[label]) for r in rows])


def _model(path, field_pixel_size):
    """A joint network of random weights (seed 0) for 32 px images of
    ``field_pixel_size`` Å/px, trained (as `deephemnma train` writes) on
    phase-flipped images, as a model file."""
    torch.manual_seed(0)
    net = DeepHEMNMANet({"amplitudes": 3, "orientation": 4, "shifts": 2}, dropout=0.0)
    meta = {"architecture": "joint", "image_size": BOX, "input_size": BOX,
            "pixel_size": field_pixel_size, "mode_numbers": [7, 8, 9],
            "amplitude_mean": [0.0, 1.0, -1.0], "amplitude_std": [1.0, 2.0, 0.5],
            "shift_mean": [0.0, 0.0], "shift_std": [1.5, 1.5], "phase_flip": True}
    save_model(path, {"joint": net}, meta)
    return str(path)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    d = tmp_path_factory.mktemp("models")
    return {name: _model(d / f"{name[:5]}.pt", ps * scale)
            for name, (_, _, ps, scale) in SETS.items()}


# --------------------------------------------------------------------------
# reading the STAR files
def test_relion31_star_values():
    """Optics group merged into each row (the image pixel size, not the
    micrograph's original one), origins in Å divided by it, CTF and angles
    as in the file, images in the shipped stack."""
    path = shared_file("particles", RELION)
    star = _star(path)
    optics, rows = star["optics"][0], star["particles"]
    t = read_metadata(path)
    assert len(t) == len(rows) == 5
    ps = float(optics["rlnImagePixelSize"])
    assert ps == 2.806 and float(optics["rlnMicrographOriginalPixelSize"]) == 1.403
    assert np.array_equal(t["samplingRate"], np.full(5, ps))
    assert np.array_equal(t["opticsGroup"], np.ones(5))
    for ours, theirs in (("ctfVoltage", "rlnVoltage"), ("ctfSphericalAberration",
                                                        "rlnSphericalAberration"),
                         ("ctfQ0", "rlnAmplitudeContrast")):
        assert np.array_equal(t[ours], np.full(5, float(optics[theirs]))), ours
    assert (t["ctfVoltage"][0], t["ctfSphericalAberration"][0], t["ctfQ0"][0]) == \
        (300.0, 0.01, 0.1)
    for ours, theirs in (("ctfDefocusU", "rlnDefocusU"), ("ctfDefocusV", "rlnDefocusV"),
                         ("ctfDefocusAngle", "rlnDefocusAngle"),
                         ("ctfPhaseShift", "rlnPhaseShift"), ("angleRot", "rlnAngleRot"),
                         ("angleTilt", "rlnAngleTilt"), ("anglePsi", "rlnAnglePsi")):
        assert np.array_equal(t[ours], _col(rows, theirs)), ours
    assert t["ctfDefocusU"][0] == 13108.082418 and t["ctfDefocusAngle"][0] == -160.39
    # origins: Å in the file, pixels here (same sign)
    assert "rlnOriginXAngst" not in t and "rlnOriginX" not in t
    assert np.allclose(t["shiftX"], _col(rows, "rlnOriginXAngst") / ps, rtol=1e-12)
    assert np.allclose(t["shiftY"], _col(rows, "rlnOriginYAngst") / ps, rtol=1e-12)
    assert t["shiftY"][1] == pytest.approx(0.403454 / 2.806)
    assert all(parse_image_ref(r) == (k + 1, "relion31.mrcs") for k, r in enumerate(t["image"]))
    imgs = load_images(t)
    assert imgs.shape == (5, 256, 256) and np.isfinite(imgs).all()
    assert (imgs.std(axis=(1, 2)) > 0.5).all()
    assert open_stack(t.image_path("relion31.mrcs")).pixel_size in (None, 0.0, 1.0)


def test_older_star_values():
    """No optics block: the pixel size is detector pixel (µm) / magnification;
    the optics values are per row; no origins or angles in this file."""
    path = shared_file("particles", EMPIAR)
    rows = _star(path)[""]
    t = read_metadata(path)
    assert len(t) == len(rows) == 7
    ps = 5 * 1e4 / 38168
    assert np.allclose(t["samplingRate"], ps, rtol=1e-12) and abs(ps - 1.31) < 1e-3
    for ours, theirs in (("ctfDefocusU", "rlnDefocusU"), ("ctfDefocusV", "rlnDefocusV"),
                         ("ctfDefocusAngle", "rlnDefocusAngle"), ("ctfVoltage", "rlnVoltage"),
                         ("ctfSphericalAberration", "rlnSphericalAberration"),
                         ("ctfQ0", "rlnAmplitudeContrast")):
        assert np.array_equal(t[ours], _col(rows, theirs)), ours
    # the file writes '300': a CTF value is a float whatever its spelling (an
    # integer column would truncate values written into it)
    for c in ("ctfVoltage", "ctfSphericalAberration", "ctfQ0", "ctfDefocusU", "samplingRate"):
        assert t[c].dtype == np.float64, c
    assert not any(c in t for c in ("shiftX", "angleRot", "opticsGroup"))
    assert np.array_equal(t.shifts(), np.zeros((7, 2)))
    imgs = load_images(t)
    assert imgs.shape == (7, 320, 320) and np.isfinite(imgs).all()


# --------------------------------------------------------------------------
# the command line: predict --rescale, then landscape with both sets
def _reference(model, t, box, ps, scale):
    """The network's predictions, computed here from the steps: phase flip
    with each particle's CTF at the STAR's pixel size, Fourier crop to 32 px,
    predict at the model's own size; shifts in the 32 px images' pixels."""
    nets, meta = load_model(model)
    imgs = phase_flip_images(load_images(t), CTFParams.from_table(t), ps)
    small = downscale(torch.from_numpy(imgs), BOX).numpy()
    pred = Predictor(nets, meta)
    pred.check(BOX, ps * scale)
    assert pred.scale == 1
    return pred.predict(small)


@pytest.fixture(scope="module")
def predicted(models, tmp_path_factory):
    out = tmp_path_factory.mktemp("cli")
    paths = {}
    for name in SETS:
        p = out / name[:5] / "predicted.xmd"
        assert cli(["predict", "--model", models[name], "--rescale", "--device", "cpu",
                    "--particles", str(shared_file("particles", name)), "--out", str(p)]) == 0
        paths[name] = p
    return out, paths


@pytest.mark.parametrize("name", list(SETS))
def test_predict_rescaled_keeps_the_particles_values(name, models, predicted):
    n, box, ps, scale = SETS[name]
    t_in = read_metadata(shared_file("particles", name))
    t = read_metadata(predicted[1][name])
    assert len(t) == n and list(t["itemId"]) == list(range(1, n + 1))
    assert t["nmaDisplacements"].shape == (n, 3)
    assert np.isfinite(t["nmaDisplacements"]).all() and np.isfinite(t.angles()).all()
    assert np.isfinite(t.shifts()).all()
    ref = _reference(models[name], t_in, box, ps, scale)
    assert np.allclose(t["nmaDisplacements"], ref["amplitudes"], rtol=1e-4, atol=1e-4)
    assert np.allclose(t.angles(), ref["angles"], atol=1e-3)
    # shifts in the particles' pixels: the 32 px images' shifts times the factor
    assert np.allclose(t.shifts(), scale * ref["shifts"], rtol=1e-4, atol=1e-4)
    assert np.abs(ref["shifts"]).max() > 1e-2
    # each particle keeps its CTF, its optics group's pixel size and its image
    for c in ("ctfDefocusU", "ctfDefocusV", "ctfDefocusAngle", "ctfVoltage",
              "ctfSphericalAberration", "ctfQ0", "samplingRate"):
        assert np.allclose(t[c], t_in[c], rtol=1e-7, atol=0), c
    assert np.allclose(t["samplingRate"], ps)
    assert np.array_equal(load_images(t), load_images(t_in))
    if name == RELION:
        assert np.array_equal(t["opticsGroup"], t_in["opticsGroup"])


def test_landscape_of_both_sets(predicted):
    out, paths = predicted
    land = out / "landscape"
    assert cli(["landscape", "--particles", str(paths[RELION]), "--also", str(paths[EMPIAR]),
                "--also-label", "EMPIAR-10076", "--out", str(land)]) == 0
    t = read_metadata(land / "landscape.xmd")
    assert len(t) == 12
    pcs = np.column_stack([t["PC1"], t["PC2"]])
    assert np.isfinite(pcs).all() and np.ptp(pcs[:, 0]) > 0
    # the first set's rows, then the second's; both files are predicted.xmd:
    # the column 'source' names each by its path
    assert list(t["source"]) == [str(paths[RELION])] * 5 + [str(paths[EMPIAR])] * 7
    assert [parse_image_ref(r) for r in t["image"]] == \
        [(k, str(shared_file("particles", "relion31.mrcs"))) for k in range(1, 6)] + \
        [(k, str(shared_file("particles", "empiar_10076_7.mrc"))) for k in range(1, 8)]
    assert np.allclose(t["samplingRate"][:5], 2.806)
    assert np.allclose(t["samplingRate"][5:], SETS[EMPIAR][2])
    # PC1: the projection on the leading singular vector of the 12 centred
    # amplitude vectors (up to sign)
    q = np.concatenate([read_metadata(paths[k])["nmaDisplacements"] for k in (RELION, EMPIAR)])
    assert np.array_equal(t["nmaDisplacements"], q)
    qc = q - q.mean(0)
    v1 = np.linalg.svd(qc, full_matrices=False)[2][0]
    assert np.allclose(np.abs(t["PC1"]), np.abs(qc @ v1), rtol=1e-4, atol=1e-6)
    for f in ("pca.npz", "density.png"):
        assert (land / f).stat().st_size > 0, f
    assert not (land / "rejected.xmd").exists()


def test_star_pixel_size_checks(models, tmp_path, capsys):
    """The STAR's pixel size is the particles': a --pixel-size that differs
    (the micrograph's original pixel size of the optics block) is refused, as
    is a file whose optics groups have different pixel sizes."""
    star = shared_file("particles", RELION)
    out = tmp_path / "p.xmd"
    args = ["predict", "--model", models[RELION], "--rescale", "--device", "cpu",
            "--out", str(out), "--particles"]
    assert cli(args + [str(star), "--pixel-size", "1.403"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "pixel size 2.806 Å" in err[0] and "--pixel-size 1.403" in err[0]
    # a second optics group at 1.403 Å/px for the last particle
    text = star.read_text()
    optics = next(ln for ln in text.splitlines() if ln.strip().startswith("1 opticsGroup1"))
    two = text.replace(optics, optics + "\n" + optics.replace("1 opticsGroup1", "2 opticsGroup2")
                       .replace("2.806000", "1.403000", 1))
    last = two.splitlines()[-1]
    two = two.replace(last, re.sub(r"(relion31\.mrcs +)1 ", r"\g<1>2 ", last))
    (tmp_path / "relion31.mrcs").symlink_to(star.parent / "relion31.mrcs")
    (tmp_path / "two.star").write_text(two)
    t = read_metadata(tmp_path / "two.star")
    assert list(t["opticsGroup"]) == [1, 1, 1, 1, 2]
    assert list(t["samplingRate"]) == [2.806] * 4 + [1.403]
    assert cli(args + [str(tmp_path / "two.star")]) == 2
    err = capsys.readouterr().err
    assert "range from 1.403 to 2.806 Å" in err and not out.exists()


# --------------------------------------------------------------------------
# Scipion: import, predict, landscape in a project
try:
    from deephemnma.tests import assert_outputs_declared, scipion_domain
    from pyworkflow.tests import BaseTest, setupTestProject
except ImportError:                       # no Scipion (e.g. a GPU machine)
    import unittest
    BaseTest, setupTestProject = unittest.TestCase, None


def _sqlite_from_star(path, name, first_id):
    """The particles of the STAR file ``name`` as a Scipion SetOfParticles
    sqlite (ids from ``first_id``): acquisition and pixel size of the optics,
    each particle's CTF, its angles and shifts when the file has them. pwem
    imports RELION files only with the RELION plugin; this is what that
    import gives, for ProtImportParticles' 'from Scipion sqlite'."""
    import pwem.objects as emobj
    from deephemnma.protocols.convert import matrix_from_geometry
    t = read_metadata(shared_file("particles", name))
    parts = emobj.SetOfParticles(filename=str(path))
    parts.setSamplingRate(float(t["samplingRate"][0]))
    acq = emobj.Acquisition(voltage=float(t["ctfVoltage"][0]),
                            sphericalAberration=float(t["ctfSphericalAberration"][0]),
                            amplitudeContrast=float(t["ctfQ0"][0]), magnification=50000)
    parts.setAcquisition(acq)
    parts.setHasCTF(True)
    aligned = "angleRot" in t
    if aligned:
        parts.setAlignmentProj()
    for k in range(len(t)):
        i, f = parse_image_ref(t["image"][k])
        p = emobj.Particle(location=(i, os.path.abspath(t.image_path(f))))
        p.setObjId(first_id + k)
        p.setAcquisition(acq)
        p.setCTF(emobj.CTFModel(defocusU=float(t["ctfDefocusU"][k]),
                                defocusV=float(t["ctfDefocusV"][k]),
                                defocusAngle=float(t["ctfDefocusAngle"][k])))
        if aligned:
            p.setTransform(emobj.Transform(matrix_from_geometry(t.angles()[k], t.shifts()[k])))
        parts.append(p)
    parts.write()
    parts.close()
    return t


@pytest.mark.skipif(setupTestProject is None, reason="Scipion (pyworkflow, pwem) not installed")
class TestScipionProject(BaseTest):
    """ProtImportParticles (from the stacks; from the STAR files through a
    Scipion sqlite), then predict and landscape protocols."""

    @classmethod
    def setUpClass(cls):
        scipion_domain()
        setupTestProject(cls)

    def _holder_with_models(self):
        """A finished protocol whose outputs are the two models."""
        from pwem.protocols import EMProtocol
        from pyworkflow.protocol.constants import STATUS_FINISHED
        from deephemnma.objects import DeepHEMNMAModel
        holder = self.newProtocol(EMProtocol)
        holder.setObjLabel("models")
        self.proj._storeProtocol(holder)
        holder.setWorkingDir(self.proj.getPath("Runs", self.proj.getProtWorkingDir(holder)))
        holder.makePathsAndClean()
        outputs = {}
        for name, (_, _, ps, scale) in SETS.items():
            m = DeepHEMNMAModel(filename=_model(holder._getExtraPath(f"{name[:5]}.pt"),
                                                ps * scale))
            m.loadMeta()
            outputs[f"model{name[:5]}"] = m
        holder._defineOutputs(**outputs)
        holder.setStatus(STATUS_FINISHED)
        self.proj._storeProtocol(holder)
        return holder

    def test_import_predict_landscape(self):
        from pwem.protocols import ProtImportParticles
        from deephemnma import protocols as P
        folder = str(shared_file("particles", RELION).parent)
        holder = self._holder_with_models()

        # from the stacks: pixel size and optics given in the form, no CTF.
        # pwem reads an .mrc file as one image (a volume): the 7 particles of
        # empiar_10076_7.mrc are imported from a link named .mrcs
        imp = self.newProtocol(ProtImportParticles, filesPath=folder,
                               filesPattern="empiar_10076_7.mrc", samplingRate=1.31)
        self.launchProtocol(imp)
        self.assertEqual(imp.outputParticles.getSize(), 1)
        links = self.proj.getTmpPath("stacks")
        os.makedirs(links)
        os.symlink(shared_file("particles", "empiar_10076_7.mrc"),
                   os.path.join(links, "empiar_10076_7.mrcs"))
        stacks = {}
        for name, where, pattern in ((RELION, folder, "relion31.mrcs"),
                                     (EMPIAR, links, "empiar_10076_7.mrcs")):
            n, box, ps, _ = SETS[name]
            t = read_metadata(shared_file("particles", name))
            imp = self.newProtocol(ProtImportParticles, filesPath=where, filesPattern=pattern,
                                   samplingRate=ps, voltage=float(t["ctfVoltage"][0]),
                                   sphericalAberration=float(t["ctfSphericalAberration"][0]),
                                   amplitudeContrast=float(t["ctfQ0"][0]))
            self.launchProtocol(imp)
            parts = imp.outputParticles
            self.assertEqual((parts.getSize(), parts.getXDim()), (n, box), name)
            self.assertAlmostEqual(parts.getSamplingRate(), ps, places=6)
            self.assertFalse(parts.hasCTF())
            stacks[name] = parts

        # the STAR files: pwem needs the RELION plugin for them
        imp = self.newProtocol(ProtImportParticles,
                               importFrom=ProtImportParticles.IMPORT_FROM_RELION,
                               starFile=str(shared_file("particles", RELION)))
        from pwem import Domain
        if Domain.importFromPlugin("relion.convert", "RelionImport") is None:
            with self.assertRaises(Exception):
                imp.getImportClass()
        # so, from a Scipion sqlite of the STAR's values (ids 1-5 and 6-12)
        star, tables = {}, {}
        first = 1
        for name in (RELION, EMPIAR):
            n, box, ps, _ = SETS[name]
            sqlite = os.path.join(self.proj.getTmpPath(), f"{name[:5]}.sqlite")
            t = tables[name] = _sqlite_from_star(sqlite, name, first)
            imp = self.newProtocol(ProtImportParticles,
                                   importFrom=ProtImportParticles.IMPORT_FROM_SCIPION,
                                   sqliteFile=sqlite, samplingRate=ps,
                                   voltage=float(t["ctfVoltage"][0]),
                                   sphericalAberration=float(t["ctfSphericalAberration"][0]),
                                   amplitudeContrast=float(t["ctfQ0"][0]))
            self.launchProtocol(imp)
            parts = imp.outputParticles
            self.assertEqual(parts.getSize(), n)
            self.assertTrue(parts.hasCTF())
            self.assertEqual([p.getObjId() for p in parts], list(range(first, first + n)))
            star[name] = parts
            first += n

        # predict: each set with its model; the STAR's CTF phase-flips the images
        predicted = {}
        for name in (RELION, EMPIAR):
            n, box, ps, scale = SETS[name]
            model = getattr(holder, f"model{name[:5]}")
            pr = self.newProtocol(P.DeepHEMNMAProtPredict, inputModel=model,
                                  inputParticles=star[name], useGpu=False)
            self.launchProtocol(pr)
            assert_outputs_declared(self, pr)
            out = pr.outputParticles
            self.assertEqual(out.getSize(), n)
            self.assertAlmostEqual(out.getSamplingRate(), ps, places=6)
            self.assertEqual(out.getXDim(), box)
            self.assertTrue(out.hasCTF() and out.hasAlignmentProj())
            t = tables[name]
            rows = [p.clone() for p in out.iterItems(orderBy="id")]    # (one object reused)
            ctf = np.array([[p.getCTF().getDefocusU(), p.getCTF().getDefocusV(),
                             p.getCTF().getDefocusAngle()] for p in rows])
            self.assertTrue(np.allclose(ctf, np.column_stack(
                [t["ctfDefocusU"], t["ctfDefocusV"], t["ctfDefocusAngle"]]), atol=1e-6))
            acq = out.getAcquisition()
            self.assertEqual((acq.getVoltage(), acq.getSphericalAberration(),
                              acq.getAmplitudeContrast()),
                             (t["ctfVoltage"][0], t["ctfSphericalAberration"][0], t["ctfQ0"][0]))
            q = np.array([[float(v) for v in p._xmipp_nmaDisplacements] for p in rows])
            # the command line's predictions (flip at the STAR's pixel size, crop)
            ref = _reference(model.getFileName(), t, box, ps, scale)
            self.assertTrue(np.allclose(q, ref["amplitudes"], rtol=1e-4, atol=1e-4))
            predicted[name] = out
            if name == RELION:
                # the same images without CTF (imported from the stack): not
                # flipped; the 32 px model keeps frequencies up to 1/45 Å, below
                # the first zero of these CTFs (about 1/16 Å): the same predictions
                pr2 = self.newProtocol(P.DeepHEMNMAProtPredict, inputModel=model,
                                       inputParticles=stacks[name], useGpu=False)
                self.launchProtocol(pr2)
                q2 = np.array([[float(v) for v in p._xmipp_nmaDisplacements]
                               for p in pr2.outputParticles.iterItems(orderBy="id")])
                self.assertEqual(q2.shape, (n, 3))
                self.assertTrue(np.allclose(q2, q, rtol=1e-4, atol=1e-4))

        # the landscape of both sets: refused in one project (one output set
        # has one pixel size); the command line places them together
        land = self.newProtocol(P.DeepHEMNMAProtLandscape, inputParticles=predicted[RELION],
                                inputParticlesApart=predicted[EMPIAR], grouping=0,
                                reconstruct=False, useGpu=False)
        self.assertIn("the two particle sets have different pixel sizes (2.806 and 1.31 Å)",
                      land.validate())
        # each set's own landscape
        for name in (RELION, EMPIAR):
            n, box, ps, _ = SETS[name]
            land = self.newProtocol(P.DeepHEMNMAProtLandscape, inputParticles=predicted[name],
                                    components=2, grouping=0, reconstruct=False, useGpu=False)
            self.launchProtocol(land)
            assert_outputs_declared(self, land)
            out = land.outputParticles
            self.assertEqual(out.getSize(), n)
            self.assertAlmostEqual(out.getSamplingRate(), ps, places=6)
            self.assertTrue(out.hasCTF())
            ids = [p.getObjId() for p in predicted[name].iterItems(orderBy="id")]
            self.assertEqual([p.getObjId() for p in out.iterItems(orderBy="id")], ids)
            pcs = read_metadata(land._getExtraPath("landscape", "landscape.xmd"))
            self.assertEqual(sorted(pcs["itemId"]), ids)
            self.assertTrue(np.isfinite(pcs["PC1"]).all() and np.isfinite(pcs["PC2"]).all())
            self.assertTrue(os.path.getsize(land._getExtraPath("landscape", "density.png")) > 0)

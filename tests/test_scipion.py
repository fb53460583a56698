"""The Scipion plugin in real (headless) pyworkflow projects."""
import os

import numpy as np
import pytest

from conftest import shared_file

pwem = pytest.importorskip("pwem")

from pyworkflow.tests import BaseTest, setupTestProject  # noqa: E402

from deephemnma import protocols as P  # noqa: E402

_STANDARD = {"runName", "runMode", "hostName", "numberOfThreads", "numberOfMpi"}
OURS = ["DeepHEMNMAProtNMA", "DeepHEMNMAProtSynthesize", "DeepHEMNMAProtAlign",
        "DeepHEMNMAProtTrain", "DeepHEMNMAProtPredict", "DeepHEMNMAProtLandscape"]


def test_every_protocol_registered_and_forms_valid():
    from pyworkflow.plugin import Domain
    prots = Domain.getProtocols()
    for name in OURS:
        assert name in prots, f"{name} not registered (import error in the plugin?)"
        cls = prots[name]
        prot = cls()
        form = prot.getDefinition()
        assert form is not None and len(list(form.iterAllParams())) > 3
        for pname, param in form.iterAllParams():
            if pname in ("useGpu", "gpuList"):       # hidden standard GPU params
                continue
            assert param.label.get(), f"{name}.{pname} has no label"
        assert cls._possibleOutputs, f"{name} declares no outputs"
    assert "DeepHEMNMAModel" in Domain.getObjects()
    assert {"DeepHEMNMALandscapeViewer", "DeepHEMNMATrainViewer"} <= set(Domain.getViewers())
    from pyworkflow.plugin import Domain as D
    plugin = D.getPlugin("deephemnma")
    assert "Hamitouche2022" in plugin._bibtex


def test_alignment_matrix_round_trip():
    from deephemnma.protocols.convert import geometry_from_matrix, matrix_from_geometry
    rng = np.random.default_rng(0)
    for _ in range(50):
        a = np.array([rng.uniform(-180, 180), rng.uniform(1, 179), rng.uniform(-180, 180)])
        s = rng.uniform(-5, 5, 2)
        a2, s2 = geometry_from_matrix(matrix_from_geometry(a, s))
        from deephemnma.core.rotations import angular_distance, euler_to_matrix
        assert angular_distance(euler_to_matrix(a), euler_to_matrix(a2)) < 1e-4
        assert np.allclose(s, s2)


class TestDeepHEMNMAWorkflow(BaseTest):
    """Whole chain on tiny data: NMA -> synthesize -> split -> HEMNMA -> train
    -> predict -> landscape (groups + reconstructions)."""

    @classmethod
    def setUpClass(cls):
        setupTestProject(cls)

    def test_chain(self):
        from pwem.protocols import ProtImportPdb, ProtSplitSet
        ak = str(shared_file("continuousflex", "AK.pdb"))
        imp = self.newProtocol(ProtImportPdb, inputPdbData=1, pdbFile=ak)
        self.launchProtocol(imp)
        nma = self.newProtocol(P.DeepHEMNMAProtNMA, inputStructure=imp.outputPdb,
                               numberOfModes=12)
        self.launchProtocol(nma)
        self.assertEqual(nma.outputModes.getSize(), 12)
        first = nma.outputModes.getFirstItem().getModeFile()
        self.assertTrue(first.endswith("vec.1") and os.path.exists(first))

        syn = self.newProtocol(P.DeepHEMNMAProtSynthesize, inputModes=nma.outputModes,
                               inputReference=nma.outputReference, numberOfImages=120, box=48,
                               samplingRate=1.8, snr=0.0, seed=1)
        self.launchProtocol(syn)
        parts = syn.outputParticles
        self.assertEqual(parts.getSize(), 120)
        p = parts.getFirstItem()
        self.assertEqual(len(p._xmipp_nmaDisplacements), 3)
        self.assertTrue(parts.hasAlignmentProj() and parts.hasCTF())

        split = self.newProtocol(ProtSplitSet, inputSet=parts, numberOfSets=2, randomize=True)
        self.launchProtocol(split)

        ali = self.newProtocol(P.DeepHEMNMAProtAlign, inputParticles=split.outputParticles01,
                               inputModes=nma.outputModes, inputReference=nma.outputReference,
                               angularStep=15.0, coarseIters=30, fineIters=20, useGpu=False)
        self.launchProtocol(ali)
        out = ali.outputParticles
        self.assertEqual(out.getSize(), 60)
        # HEMNMA amplitudes correlate with the ground truth kept on the particles
        est = np.array([[float(v) for v in x._xmipp_nmaDisplacements] for x in out])
        gt = np.array([[float(v) for v in x._deephemnma_gtAmplitudes] for x in out])
        cost = np.array([float(x._xmipp_cost) for x in out])
        self.assertTrue(np.isfinite(cost).all() and (cost >= 0).all() and (cost <= 2).all())
        # better than predicting the mean amplitudes, for every mode
        mae = np.abs(est - gt).mean(0)
        base = np.abs(gt - gt.mean(0)).mean(0)
        self.assertTrue((mae < 0.6 * base).all(), f"HEMNMA MAE {mae} vs mean {base}")

        tr = self.newProtocol(P.DeepHEMNMAProtTrain, inputParticles=out,
                              inputModes=nma.outputModes, epochs=2, batchSize=16, useGpu=False)
        self.launchProtocol(tr)
        model = tr.outputModel
        self.assertEqual(model.getImageSize(), 48)
        self.assertEqual(model.getModeNumbers(), [7, 8, 9])
        self.assertTrue(os.path.exists(tr._getExtraPath("model", "curves.csv")))

        pr = self.newProtocol(P.DeepHEMNMAProtPredict, inputModel=model,
                              inputParticles=split.outputParticles02, mergeParticles=out,
                              useGpu=False)
        self.launchProtocol(pr)
        self.assertEqual(pr.outputParticles.getSize(), 120)
        q = np.array([[float(v) for v in x._xmipp_nmaDisplacements] for x in pr.outputParticles])
        self.assertTrue(np.isfinite(q).all())
        self.assertLess(np.abs(q).max(), 1000)

        land = self.newProtocol(P.DeepHEMNMAProtLandscape, inputParticles=pr.outputParticles,
                                inputModes=nma.outputModes, inputReference=nma.outputReference,
                                grouping=1, minGroupSize=20, reconstruct=True, useGpu=False)
        self.launchProtocol(land)
        groups = [getattr(land, a) for a in dir(land) if a.startswith("outputGroup")]
        self.assertGreaterEqual(len(groups), 2)
        self.assertTrue(all(g.getSize() >= 20 for g in groups))
        self.assertTrue(hasattr(land, "outputVolume01"))
        self.assertTrue(os.path.exists(land._getExtraPath("landscape", "density.png")))
        self.assertTrue(os.path.exists(land._getExtraPath("landscape", "axis_1.pdb")))

    def test_validation_messages(self):
        from pwem.protocols import ProtImportPdb
        ak = str(shared_file("continuousflex", "AK.pdb"))
        imp = self.newProtocol(ProtImportPdb, inputPdbData=1, pdbFile=ak)
        self.launchProtocol(imp)
        nma = self.newProtocol(P.DeepHEMNMAProtNMA, inputStructure=imp.outputPdb,
                               numberOfModes=5)
        errors = nma.validate()
        self.assertTrue(any("at least 7 modes" in e for e in errors))


def test_reads_continuousflex_particles(tmp_path):
    """ContinuousFlex-format particle metadata (its HEMNMA output) carries what
    training needs: amplitudes, angles and shifts in Xmipp names."""
    from deephemnma.io.metadata import read_metadata
    t = read_metadata(shared_file("continuousflex", "images_WS_atoms.xmd"))
    t.require(["nmaDisplacements", "angleRot", "shiftX", "cost"])
    from deephemnma.protocols.convert import geometry_from_matrix, matrix_from_geometry
    a, s = geometry_from_matrix(matrix_from_geometry(t.angles()[0], t.shifts()[0]))
    from deephemnma.core.rotations import angular_distance, euler_to_matrix
    assert angular_distance(euler_to_matrix(a), euler_to_matrix(t.angles()[0])) < 1e-4

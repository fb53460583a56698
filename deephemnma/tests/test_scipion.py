"""The Scipion plugin in real (headless) pyworkflow projects: registration,
the whole chain driven through the Python API, ContinuousFlex-format inputs.

    scipion3 tests deephemnma.tests.test_scipion
    python -m pytest -q deephemnma/tests/test_scipion.py
"""
from . import assert_outputs_declared, scipion_domain, shared_file  # first: sets up Scipion's environment

import os  # noqa: E402

import numpy as np  # noqa: E402
from pyworkflow.tests import BaseTest, setupTestProject  # noqa: E402

from deephemnma import protocols as P  # noqa: E402

OURS = P.__all__


class TestPlugin(BaseTest):
    """Registration, forms and conversions (no project)."""

    @classmethod
    def setUpClass(cls):
        scipion_domain()

    def test_every_protocol_registered_and_forms_valid(self):
        Domain = scipion_domain()     # as Scipion does (not pyworkflow.plugin.Domain)
        prots = Domain.getProtocols()
        for name in OURS:
            self.assertIn(name, prots, f"{name} not registered (import error in the plugin?)")
            cls = prots[name]
            form = cls().getDefinition()
            self.assertTrue(form is not None and len(list(form.iterAllParams())) > 3)
            for pname, param in form.iterAllParams():
                if pname in ("useGpu", "gpuList"):       # hidden standard GPU params
                    continue
                self.assertTrue(param.label.get(), f"{name}.{pname} has no label")
            self.assertTrue(cls._possibleOutputs, f"{name} declares no outputs")
        self.assertIn("DeepHEMNMAModel", Domain.getObjects())
        self.assertLessEqual({"DeepHEMNMALandscapeViewer", "DeepHEMNMATrainViewer"},
                             set(Domain.getViewers()))
        self.assertIn("Hamitouche2022", Domain.getPluginModule("deephemnma")._bibtex)

    def test_alignment_matrix_round_trip(self):
        from deephemnma.core.rotations import angular_distance, euler_to_matrix
        from deephemnma.protocols.convert import geometry_from_matrix, matrix_from_geometry
        rng = np.random.default_rng(0)
        for _ in range(50):
            a = np.array([rng.uniform(-180, 180), rng.uniform(1, 179), rng.uniform(-180, 180)])
            s = rng.uniform(-5, 5, 2)
            a2, s2 = geometry_from_matrix(matrix_from_geometry(a, s))
            self.assertLess(angular_distance(euler_to_matrix(a), euler_to_matrix(a2)), 1e-4)
            self.assertTrue(np.allclose(s, s2))

    def test_reads_continuousflex_particles(self):
        """ContinuousFlex-format particle metadata (its HEMNMA output) carries
        what training needs: amplitudes, angles and shifts in Xmipp names."""
        from deephemnma.core.rotations import angular_distance, euler_to_matrix
        from deephemnma.io.metadata import read_metadata
        from deephemnma.protocols.convert import geometry_from_matrix, matrix_from_geometry
        t = read_metadata(shared_file("continuousflex", "images_WS_atoms.xmd"))
        t.require(["nmaDisplacements", "angleRot", "shiftX", "cost"])
        a, s = geometry_from_matrix(matrix_from_geometry(t.angles()[0], t.shifts()[0]))
        self.assertLess(angular_distance(euler_to_matrix(a), euler_to_matrix(t.angles()[0])),
                        1e-4)


class TestDeepHEMNMAWorkflow(BaseTest):
    """Whole chain on tiny data: NMA -> synthesize -> split -> HEMNMA -> train
    -> predict -> landscape (groups + reconstructions)."""

    @classmethod
    def setUpClass(cls):
        scipion_domain()
        setupTestProject(cls)

    def test_chain(self):
        from pwem.protocols import ProtImportPdb, ProtSplitSet
        ak = str(shared_file("continuousflex", "AK.pdb"))
        imp = self.newProtocol(ProtImportPdb, inputPdbData=1, pdbFile=ak)
        self.launchProtocol(imp)
        nma = self.newProtocol(P.DeepHEMNMAProtNMA, inputStructure=imp.outputPdb,
                               numberOfModes=12)
        self.launchProtocol(nma)
        assert_outputs_declared(self, nma)
        self.assertEqual(nma.outputModes.getSize(), 12)
        first = nma.outputModes.getFirstItem().getModeFile()
        self.assertTrue(first.endswith("vec.1") and os.path.exists(first))

        syn = self.newProtocol(P.DeepHEMNMAProtSynthesize, inputModes=nma.outputModes,
                               inputReference=nma.outputReference, numberOfImages=120, box=48,
                               samplingRate=1.8, snr=0.0, seed=1)
        self.launchProtocol(syn)
        assert_outputs_declared(self, syn)
        parts = syn.outputParticles
        self.assertEqual(parts.getSize(), 120)
        p = parts.getFirstItem()
        self.assertEqual(len(p._xmipp_nmaDisplacements), 3)
        self.assertTrue(parts.hasAlignmentProj() and parts.hasCTF())

        # not randomized: ProtSplitSet shuffles without a seed, which made the
        # landscape's groups differ from run to run (images are random already)
        split = self.newProtocol(ProtSplitSet, inputSet=parts, numberOfSets=2, randomize=False)
        self.launchProtocol(split)

        # the synthesized particles carry their true poses: HEMNMA's global search
        from deephemnma.protocols.protocol_align import FROM_POSES_NO
        ali = self.newProtocol(P.DeepHEMNMAProtAlign, inputParticles=split.outputParticles01,
                               inputModes=nma.outputModes, inputReference=nma.outputReference,
                               angularStep=15.0, coarseIters=30, fineIters=20, useGpu=False,
                               fromPoses=FROM_POSES_NO)
        self.assertFalse(ali._config().from_poses)
        self.launchProtocol(ali)
        self.assertEqual(assert_outputs_declared(self, ali),
                         ["outputParticles", "outputParticlesKept"])
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
        # the accuracy viewer reports the same errors (computed here independently)
        from deephemnma.viewers import DeepHEMNMAParticlesViewer
        acc = DeepHEMNMAParticlesViewer(project=self.proj, protocol=ali).accuracy()
        res, _, _, png, _ = acc
        self.assertEqual(res["n"], 60)
        self.assertAlmostEqual(res["amplitude_mae_mean"]["mean"], mae.mean(), places=3)
        self.assertTrue(os.path.getsize(png) > 10000)

        # the form shows the train stage's own messages (one per impossible value)
        for bad, word in (({"inputSize": 47}, "47"), ({"dropout": 1.0}, "dropout")):
            errors = self.newProtocol(P.DeepHEMNMAProtTrain, inputParticles=out,
                                      **bad).validate()
            self.assertTrue(any(word in e for e in errors), errors)
        tr = self.newProtocol(P.DeepHEMNMAProtTrain, inputParticles=out,
                              inputModes=nma.outputModes, epochs=2, batchSize=16, inputSize=32,
                              coordChannels=True, dropout=0.0, useGpu=False)
        self.launchProtocol(tr)
        assert_outputs_declared(self, tr)
        model = tr.outputModel
        self.assertEqual(model.getImageSize(), 48)
        from deephemnma.core.models import load_model
        meta = load_model(model.getFileName())[1]
        self.assertEqual((meta["input_size"], meta["train_config"]["coord_channels"],
                          meta["train_config"]["dropout"]), (32, True, 0.0))
        self.assertEqual(model.getModeNumbers(), [7, 8, 9])
        self.assertTrue(os.path.exists(tr._getExtraPath("model", "curves.csv")))

        pr = self.newProtocol(P.DeepHEMNMAProtPredict, inputModel=model,
                              inputParticles=split.outputParticles02, mergeParticles=out,
                              useGpu=False)
        self.launchProtocol(pr)
        assert_outputs_declared(self, pr)
        self.assertEqual(pr.outputParticles.getSize(), 120)
        q = np.array([[float(v) for v in x._xmipp_nmaDisplacements] for x in pr.outputParticles])
        self.assertTrue(np.isfinite(q).all())
        self.assertLess(np.abs(q).max(), 1000)

        # the pose-aware network: the images read at their poses (here the
        # particles' own, as the consensus ones), the reference projected there
        ptr = self.newProtocol(P.DeepHEMNMAProtTrain, inputParticles=out,
                               inputModes=nma.outputModes, inputReference=nma.outputReference,
                               consensusParticles=split.outputParticles01, poseInput=True,
                               trunk=P.DeepHEMNMAProtTrain.TRUNKS.index("resnet18"), epochs=1,
                               batchSize=16, inputSize=32, dropout=0.0, useGpu=False)
        self.launchProtocol(ptr)
        pmeta = load_model(ptr.outputModel.getFileName())[1]
        self.assertTrue(pmeta["pose_input"])
        self.assertEqual(pmeta["train_config"]["trunk"], "resnet18")
        ppr = self.newProtocol(P.DeepHEMNMAProtPredict, inputModel=ptr.outputModel,
                               inputParticles=split.outputParticles02, useGpu=False)
        self.launchProtocol(ppr)
        self.assertEqual(ppr.outputParticles.getSize(), 60)
        pq = np.array([[float(v) for v in x._xmipp_nmaDisplacements]
                       for x in ppr.outputParticles])
        self.assertTrue(np.isfinite(pq).all())

        land = self.newProtocol(P.DeepHEMNMAProtLandscape, inputParticles=pr.outputParticles,
                                inputModes=nma.outputModes, inputReference=nma.outputReference,
                                grouping=1, minGroupSize=10, reconstruct=True, useGpu=False)
        self.launchProtocol(land)
        assert_outputs_declared(self, land)
        # a 2-epoch network predicts nearly the mean: half the points form one clump,
        # so the equal-width split can only promise small groups on the other side
        groups = [getattr(land, a) for a in dir(land) if a.startswith("outputGroup")]
        self.assertGreaterEqual(len(groups), 2)
        self.assertTrue(all(g.getSize() >= 10 for g in groups))
        self.assertTrue(hasattr(land, "outputVolume01"))
        # each group map is compared with the map of its centroid model
        fscs = [x for x in land.summary() if "centroid model" in x]
        self.assertEqual(len(fscs), len(groups))
        # and has gold-standard half maps, whose resolution the summary gives
        halves = [x for x in land.summary() if "half maps FSC 0.143" in x]
        self.assertEqual(len(halves), len(groups))
        self.assertTrue(land.outputVolume01.hasHalfMaps())
        self.assertTrue(all(os.path.exists(h) for h in land.outputVolume01.getHalfMaps(True)))
        self.assertTrue(os.path.exists(land._getExtraPath("landscape", "density.png")))
        self.assertTrue(os.path.exists(land._getExtraPath("landscape", "axis_1.pdb")))
        # interactive selection: a mask on the landscape becomes a subset run
        # (ProtUserSubSet; the dialog and the lasso: tests/test_viewers.py)
        from deephemnma.viewers import DeepHEMNMALandscapeViewer
        v = DeepHEMNMALandscapeViewer(project=self.proj, protocol=land)
        t, c = v._coords()
        mask = c[:, 0] > np.median(c[:, 0])
        sub = v.createSubset(mask, "right half", wait=True).outputParticles
        ids = {p.getObjId() for p in sub}
        self.assertEqual(ids, {int(i) for i in t["itemId"][mask]})
        # which any reconstruct protocol takes
        rec = self.newProtocol(P.DeepHEMNMAProtReconstruct, inputParticles=sub, minImages=10,
                               useGpu=False)
        self.launchProtocol(rec)
        assert_outputs_declared(self, rec)
        self.assertEqual(rec.outputVolume.getDim(), (48, 48, 48))
        self.assertTrue(rec.outputVolume.hasHalfMaps())
        self.assertTrue(any(x.startswith("Half maps (") for x in rec.summary()))

    def test_validation_messages(self):
        from pwem.protocols import ProtImportPdb
        ak = str(shared_file("continuousflex", "AK.pdb"))
        imp = self.newProtocol(ProtImportPdb, inputPdbData=1, pdbFile=ak)
        self.launchProtocol(imp)
        nma = self.newProtocol(P.DeepHEMNMAProtNMA, inputStructure=imp.outputPdb,
                               numberOfModes=5)
        errors = nma.validate()
        self.assertTrue(any("at least 7 modes" in e for e in errors))


class TestContinuousFlexInputs(BaseTest):
    """Objects as ContinuousFlex writes them: a SetOfNormalModes pointing to
    modes/vec.N text files (arbitrary scale, one 'x y z' line per atom) and
    particles carrying its HEMNMA output (_xmipp_nmaDisplacements, _xmipp_cost,
    projection alignment), here Xmipp's real answer for smallstack_img.stk,
    imported from a Scipion sqlite. Our training and landscape accept them."""

    @classmethod
    def setUpClass(cls):
        scipion_domain()
        setupTestProject(cls)

    def test_train_and_landscape_on_continuousflex_objects(self):
        import pwem.objects as emobj
        import pyworkflow.object as pwobj
        from pwem.protocols import EMProtocol, ProtImportParticles, ProtImportPdb
        from deephemnma.core.nma import compute_modes
        from deephemnma.core.structure import read_structure
        from deephemnma.io.metadata import read_metadata
        from deephemnma.protocols.convert import matrix_from_geometry
        from deephemnma.viewers import DeepHEMNMAParticlesViewer
        ak = str(shared_file("continuousflex", "AK.pdb"))
        stk = str(shared_file("continuousflex", "smallstack_img.stk"))
        xmd = read_metadata(shared_file("continuousflex", "images_PM_atoms_smallstack.xmd"))
        imp = self.newProtocol(ProtImportPdb, inputPdbData=1, pdbFile=ak)
        self.launchProtocol(imp)

        # ContinuousFlex's NMA output: modes/vec.N + a SetOfNormalModes with its pdb
        holder = self.newProtocol(EMProtocol)
        holder.setObjLabel("ContinuousFlex NMA (as written by FlexProtNMA)")
        self.proj._storeProtocol(holder)
        # its own run folder (a rerun in the same Scipion user data starts afresh)
        holder.setWorkingDir(self.proj.getPath("Runs", self.proj.getProtWorkingDir(holder)))
        holder.makePathsAndClean()
        folder = holder._getExtraPath("modes")
        os.makedirs(folder)
        nm = compute_modes(read_structure(ak), n_modes=8, cutoff=8.0)
        modes = emobj.SetOfNormalModes(filename=holder._getPath("modes.sqlite"))
        for k, num in enumerate(nm.numbers):
            fn = os.path.join(folder, f"vec.{num}")
            np.savetxt(fn, 3.7 * nm.vectors[k], fmt="%12.6f")
            modes.append(emobj.NormalMode(modeFile=fn, collectivity=0.5))
        modes.setPdb(imp.outputPdb)
        holder._defineOutputs(outputModes=modes)
        holder.setStatus(pwobj.STATUS_FINISHED if hasattr(pwobj, "STATUS_FINISHED")
                         else "finished")
        self.proj._storeProtocol(holder)

        # ContinuousFlex's HEMNMA output particles (128 px at 1 Å/px; Xmipp's
        # shifts were in the 64 px images it aligned)
        sqlite = os.path.join(self.proj.getTmpPath(), "cflex_particles.sqlite")
        parts = emobj.SetOfParticles(filename=sqlite)
        parts.setSamplingRate(1.0)
        parts.setAlignmentProj()
        acq = emobj.Acquisition(voltage=200, sphericalAberration=2.0, amplitudeContrast=0.1,
                                magnification=60000)
        parts.setAcquisition(acq)
        for k in range(len(xmd)):
            p = emobj.Particle(location=(int(xmd["itemId"][k]), stk))
            p.setAcquisition(acq)
            p.setTransform(emobj.Transform(matrix_from_geometry(
                xmd.angles()[k], 2 * xmd.shifts()[k])))
            p._xmipp_nmaDisplacements = pwobj.CsvList(pType=float)
            p._xmipp_nmaDisplacements.set(list(xmd["nmaDisplacements"][k]))
            p._xmipp_cost = pwobj.Float(float(xmd["cost"][k]))
            parts.append(p)
        parts.write()
        parts.close()
        ip = self.newProtocol(ProtImportParticles, importFrom=ProtImportParticles.IMPORT_FROM_SCIPION,
                              sqliteFile=sqlite, samplingRate=1.0, magnification=60000)
        self.launchProtocol(ip)
        cparts = ip.outputParticles
        self.assertEqual(cparts.getSize(), 10)

        # modes 7-8 only, as Xmipp used
        sub = emobj.SetOfNormalModes(filename=holder._getPath("modes78.sqlite"))
        for m in holder.outputModes:
            if m.getModeFile().endswith(("vec.7", "vec.8")):
                sub.append(m.clone())
        sub.setPdb(imp.outputPdb)
        holder._defineOutputs(outputModes78=sub)
        self.proj._storeProtocol(holder)

        tr = self.newProtocol(P.DeepHEMNMAProtTrain, inputParticles=cparts,
                              inputModes=holder.outputModes78, epochs=2, batchSize=4,
                              useGpu=False)
        self.assertFalse(cparts.hasCTF())
        self.launchProtocol(tr)
        model = tr.outputModel
        self.assertEqual(model.getModeNumbers(), [7, 8])
        # particles without CTF: trained on the images as they are, as the log says
        with open(tr.getLogPaths()[0]) as f:
            self.assertIn("The particles have no CTF: training applies no CTF correction",
                          f.read())
        self.assertEqual(model.getImageSize(), 128)
        # the stored label statistics are those of Xmipp's amplitudes
        from deephemnma.core.models import load_model
        _, meta = load_model(model.getFileName(), "cpu")
        split = np.load(tr._getExtraPath("model", "split.npz"))
        q = xmd["nmaDisplacements"][split["train"]]    # objIds follow the xmd's rows
        self.assertTrue(np.allclose(meta["amplitude_mean"], q.mean(0), atol=1e-3))

        land = self.newProtocol(P.DeepHEMNMAProtLandscape, inputParticles=cparts,
                                inputModes=holder.outputModes78, inputReference=imp.outputPdb,
                                grouping=2, expression="PC1 * PC1 < 150 * 150", reconstruct=False,
                                useGpu=False)
        self.launchProtocol(land)
        pcs = read_metadata(land._getExtraPath("landscape", "landscape.xmd"))
        self.assertEqual(len(pcs), 10)
        # PC1 = projection on the leading singular vector of the centred
        # amplitudes (numpy SVD here), up to sign
        q = xmd["nmaDisplacements"]
        qc = q - q.mean(0)
        v1 = np.linalg.svd(qc, full_matrices=False)[2][0]
        pc1 = pcs["PC1"][np.argsort(pcs["itemId"])]
        self.assertTrue(np.allclose(np.abs(pc1), np.abs(qc @ v1), rtol=1e-4, atol=1e-3))
        # the group |PC1| < 150 leaves out Xmipp's failed image 4 (amplitude 446,
        # 4th row, hence objId 4) only
        group = read_metadata(land._getExtraPath("landscape", "group_01.xmd"))
        self.assertEqual(sorted(int(i) for i in group["itemId"]), [1, 2, 3, 5, 6, 7, 8, 9, 10])
        # no ground truth on real particles: the accuracy viewer says so
        prd = self.newProtocol(P.DeepHEMNMAProtPredict, inputModel=model, inputParticles=cparts,
                               useGpu=False)
        self.launchProtocol(prd)
        self.assertEqual(prd.outputParticles.getSize(), 10)
        with open(prd.getLogPaths()[0]) as f:
            self.assertIn("The particles have no CTF: prediction applies no CTF correction",
                          f.read())
        self.assertIsNone(DeepHEMNMAParticlesViewer(project=self.proj, protocol=prd).accuracy())


class TestRefineProtocol(BaseTest):
    """Local HEMNMA refinement from particles that carry poses and amplitudes
    (here the synthesized ones: the ground truth as the start)."""

    @classmethod
    def setUpClass(cls):
        scipion_domain()
        setupTestProject(cls)

    def test_refine_from_particles_poses(self):
        from pwem.protocols import ProtImportPdb
        self.assertIn("DeepHEMNMAProtRefine", scipion_domain().getProtocols())
        imp = self.newProtocol(ProtImportPdb, inputPdbData=1,
                               pdbFile=str(shared_file("continuousflex", "AK.pdb")))
        self.launchProtocol(imp)
        nma = self.newProtocol(P.DeepHEMNMAProtNMA, inputStructure=imp.outputPdb,
                               numberOfModes=10)
        self.launchProtocol(nma)
        syn = self.newProtocol(P.DeepHEMNMAProtSynthesize, inputModes=nma.outputModes,
                               inputReference=nma.outputReference, numberOfImages=8, box=48,
                               samplingRate=1.8, snr=0.0, seed=2)
        self.launchProtocol(syn)
        kw = dict(inputParticles=syn.outputParticles, inputModes=nma.outputModes,
                  inputReference=nma.outputReference, fineIters=10, useGpu=False)
        errors = self.newProtocol(P.DeepHEMNMAProtRefine, modeList="7-8", **kw).validate()
        self.assertTrue(any("3 amplitudes" in e for e in errors), errors)
        errors = self.newProtocol(P.DeepHEMNMAProtRefine, fineIters=0,
                                  **{k: v for k, v in kw.items() if k != "fineIters"}).validate()
        self.assertTrue(any("*Fine-level iterations*" in e for e in errors), errors)
        self.assertFalse(any("--" in e for e in errors), errors)
        errors = self.newProtocol(P.DeepHEMNMAProtRefine, bFactor="sharp", **kw).validate()
        self.assertTrue(any("*B-factor (Å²)*" in e for e in errors), errors)
        self.assertFalse(any("--" in e for e in errors), errors)
        self.assertEqual(self.newProtocol(P.DeepHEMNMAProtAlign, bFactor="auto", atomModel=1,
                                          **kw)._config().b_factor, "auto")
        ref = self.newProtocol(P.DeepHEMNMAProtRefine, **kw)
        self.launchProtocol(ref)
        self.assertEqual(assert_outputs_declared(self, ref),
                         ["outputParticles", "outputParticlesKept"])
        out = ref.outputParticles
        self.assertEqual(out.getSize(), 8)
        est = np.array([[float(v) for v in x._xmipp_nmaDisplacements] for x in out])
        gt = np.array([[float(v) for v in x._deephemnma_gtAmplitudes] for x in out])
        self.assertFalse(np.array_equal(est, gt))               # refined, not copied
        self.assertLess(np.abs(est - gt).max(), 25)              # started at the truth

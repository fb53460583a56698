"""GUI chaining before anything has run: in a project whose protocols are only
saved, every input of every protocol is offered the upstream outputs it needs,
by the function Scipion's form uses to list the candidates of a pointer
(``pyworkflow.gui.form.SubclassesTreeProvider.getObjects`` ->
``Project.getProtocolCompatibleOutputs``, which reads each protocol's
``getPossibleOutputs()`` while it has no output).

    scipion3 tests deephemnma.tests.test_chaining
    python -m pytest -q deephemnma/tests/test_chaining.py
"""
from . import scipion_domain  # first: sets up Scipion's environment

from pyworkflow.protocol import STATUS_SAVED  # noqa: E402
from pyworkflow.tests import BaseTest, setupTestProject  # noqa: E402

from deephemnma import protocols as P  # noqa: E402


def candidates(prot, param_name):
    """{(protocol id, output name)} the form offers for a pointer parameter,
    from the GUI's own lookup (no display needed)."""
    import importlib
    importlib.import_module("pyworkflow.gui.project")   # the GUI's import order:
    from pyworkflow.gui.form import SubclassesTreeProvider  # form alone is circular
    param = prot.getDefinition().getParam(param_name)
    found = set()
    for p in SubclassesTreeProvider(prot, param).getObjects():
        found.add((p.getObjValue().getObjId(), p.getExtended() or None))
    return found


def link(prot, param_name, upstream, output):
    """Point ``prot.param_name`` at ``upstream.output`` (which may not exist yet)."""
    ptr = getattr(prot, param_name)
    ptr.set(upstream)
    ptr.setExtended(output)


class TestPossibleOutputs(BaseTest):
    """Declarations: class-valued, and the landscape's groups follow its form."""

    @classmethod
    def setUpClass(cls):
        scipion_domain()

    def test_every_protocol_declares_classes(self):
        from pyworkflow.object import Object
        for cls in (P.DeepHEMNMAProtNMA, P.DeepHEMNMAProtSynthesize, P.DeepHEMNMAProtAlign,
                    P.DeepHEMNMAProtTrain, P.DeepHEMNMAProtPredict, P.DeepHEMNMAProtLandscape,
                    P.DeepHEMNMAProtReconstruct):
            self.assertTrue(cls._possibleOutputs, cls.__name__)
            for name, value in cls._possibleOutputs.items():
                self.assertTrue(isinstance(value, type) and issubclass(value, Object),
                                f"{cls.__name__}.{name}: {value!r} is not a pyworkflow class")

    def test_landscape_groups_follow_the_form(self):
        land = P.DeepHEMNMAProtLandscape()
        land.grouping.set(3)        # k-means
        land.kmeans.set(3)
        land.reconstruct.set(True)
        self.assertEqual(list(land.getPossibleOutputs()),
                         ["outputParticles", "outputGroup01", "outputGroup02", "outputGroup03",
                          "outputVolume01", "outputVolume02", "outputVolume03"])
        land.reconstruct.set(False)
        land.grouping.set(2)        # expression: one group
        self.assertEqual(list(land.getPossibleOutputs()), ["outputParticles", "outputGroup01"])
        land.grouping.set(0)        # no groups
        self.assertEqual(list(land.getPossibleOutputs()), ["outputParticles"])
        land.grouping.set(1)        # split, input size unknown: the split's cap of 20
        self.assertEqual(len(list(land.getPossibleOutputs())), 21)
        # what pyworkflow yields for the GUI: (name, class) pairs
        pairs = dict(land.iterOutputAttributes(includePossible=True))
        self.assertIs(pairs["outputGroup20"], P.DeepHEMNMAProtLandscape._possibleOutputs[
            "outputGroup20"])


class TestChainingBeforeRunning(BaseTest):
    """The whole chain saved, nothing launched."""

    @classmethod
    def setUpClass(cls):
        scipion_domain()
        setupTestProject(cls)
        from pwem.protocols import ProtImportPdb
        proj = cls.proj
        new = proj.newProtocol

        def save(prot):
            proj.saveProtocol(prot)
            return prot

        cls.imp = save(new(ProtImportPdb, inputPdbData=1, pdbFile="AK.pdb"))
        cls.nma = new(P.DeepHEMNMAProtNMA)
        link(cls.nma, "inputStructure", cls.imp, "outputPdb")
        save(cls.nma)
        cls.syn = new(P.DeepHEMNMAProtSynthesize)
        link(cls.syn, "inputModes", cls.nma, "outputModes")
        link(cls.syn, "inputReference", cls.nma, "outputReference")
        save(cls.syn)
        cls.ali = new(P.DeepHEMNMAProtAlign)
        link(cls.ali, "inputParticles", cls.syn, "outputParticles")
        link(cls.ali, "inputModes", cls.nma, "outputModes")
        link(cls.ali, "inputReference", cls.nma, "outputReference")
        save(cls.ali)
        cls.tr0 = save(new(P.DeepHEMNMAProtTrain))      # another model, unconnected
        cls.tr = new(P.DeepHEMNMAProtTrain)
        link(cls.tr, "inputParticles", cls.ali, "outputParticlesKept")
        link(cls.tr, "inputModes", cls.nma, "outputModes")
        save(cls.tr)
        cls.pr = new(P.DeepHEMNMAProtPredict)
        link(cls.pr, "inputModel", cls.tr, "outputModel")
        link(cls.pr, "inputParticles", cls.syn, "outputParticles")
        link(cls.pr, "mergeParticles", cls.ali, "outputParticles")
        save(cls.pr)
        cls.land = new(P.DeepHEMNMAProtLandscape, grouping=3, kmeans=2, reconstruct=True)
        link(cls.land, "inputParticles", cls.pr, "outputParticles")
        link(cls.land, "inputModes", cls.nma, "outputModes")
        link(cls.land, "inputReference", cls.nma, "outputReference")
        save(cls.land)
        cls.rec = new(P.DeepHEMNMAProtReconstruct)
        link(cls.rec, "inputParticles", cls.land, "outputGroup01")
        save(cls.rec)
        proj.getRuns(refresh=True)
        for p in (cls.imp, cls.nma, cls.syn, cls.ali, cls.tr, cls.pr, cls.land, cls.rec):
            assert p.getStatus() == STATUS_SAVED, (p, p.getStatus())   # nothing ran

    def offered(self, prot, param, *expected):
        found = candidates(prot, param)
        want = {(p.getObjId(), name) for p, name in expected}
        self.assertLessEqual(want, found, f"{prot.getClassName()}.{param}: missing "
                                          f"{sorted(want - found)}; offered {sorted(found)}")
        return found

    def test_each_input_is_offered_its_upstream_outputs(self):
        nma, syn, ali, tr, pr, land = self.nma, self.syn, self.ali, self.tr, self.pr, self.land
        self.offered(nma, "inputStructure", (self.imp, "outputPdb"))
        self.offered(syn, "inputModes", (nma, "outputModes"))
        self.offered(syn, "inputReference", (nma, "outputReference"), (self.imp, "outputPdb"))
        self.offered(ali, "inputParticles", (syn, "outputParticles"))
        self.offered(ali, "inputModes", (nma, "outputModes"))
        self.offered(ali, "inputReference", (nma, "outputReference"))
        self.offered(tr, "inputParticles", (ali, "outputParticles"),
                     (ali, "outputParticlesKept"), (syn, "outputParticles"))
        self.offered(tr, "inputModes", (nma, "outputModes"))
        self.offered(tr, "initModel", (self.tr0, "outputModel"))
        self.offered(pr, "inputModel", (tr, "outputModel"), (self.tr0, "outputModel"))
        self.offered(pr, "inputParticles", (syn, "outputParticles"), (ali, "outputParticles"))
        self.offered(pr, "mergeParticles", (ali, "outputParticles"),
                     (ali, "outputParticlesKept"))
        self.offered(land, "inputParticles", (pr, "outputParticles"),
                     (ali, "outputParticles"))
        self.offered(land, "inputModes", (nma, "outputModes"))
        self.offered(land, "inputReference", (nma, "outputReference"))
        rec = self.rec
        groups = self.offered(rec, "inputParticles", (land, "outputGroup01"),
                              (land, "outputGroup02"), (land, "outputParticles"),
                              (pr, "outputParticles"))
        # k-means with 2 clusters: two groups, no third
        self.assertNotIn((land.getObjId(), "outputGroup03"), groups)
        self.offered(rec, "originalParticles", (syn, "outputParticles"))
        self.offered(rec, "referenceVolume", (land, "outputVolume01"), (land, "outputVolume02"))
        self.offered(rec, "referenceStructure", (nma, "outputReference"),
                     (self.imp, "outputPdb"))

    def test_only_matching_classes_and_no_descendants(self):
        # a model is not offered as particles, particles not as a model
        found = candidates(self.pr, "inputModel")
        self.assertNotIn((self.syn.getObjId(), "outputParticles"), found)
        self.assertNotIn((self.nma.getObjId(), "outputModes"), found)
        found = candidates(self.ali, "inputParticles")
        self.assertNotIn((self.tr.getObjId(), "outputModel"), found)
        # the form never offers an output of the protocol's own descendants
        self.assertNotIn((self.pr.getObjId(), "outputParticles"), found)
        self.assertNotIn((self.land.getObjId(), "outputGroup01"), found)

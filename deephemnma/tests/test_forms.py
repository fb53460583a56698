"""The protocols as a Scipion user meets them: the menu, the forms' messages
(form fields, never command-line options; every problem at once), particles
without CTF, and run files that survive a moved project.

    scipion3 tests deephemnma.tests.test_forms
    python -m pytest -q deephemnma/tests/test_forms.py
"""
from . import ROOT, scipion_domain  # first: sets up Scipion's environment

import json  # noqa: E402
import os  # noqa: E402
import pathlib  # noqa: E402
import re  # noqa: E402
import shutil  # noqa: E402
import tempfile  # noqa: E402
from configparser import ConfigParser  # noqa: E402

import numpy as np  # noqa: E402
import pyworkflow.protocol.params as params  # noqa: E402
from pyworkflow.tests import BaseTest, setupTestProject  # noqa: E402

import deephemnma  # noqa: E402
from deephemnma import protocols as P  # noqa: E402

#: a command-line option ("--epochs", "-n/--number")
OPTION = re.compile(r"(?<![\w-])(-[a-z]/)?--[a-z]")


def _menu_protocols(path):
    """The protocol classes a protocols.conf lists, read as pyworkflow reads it
    (ConfigParser, section PROTOCOLS, JSON trees)."""
    cp = ConfigParser()
    cp.optionxform = str
    cp.read(path)
    names = []

    def walk(node):
        if node.get("tag") == "protocol":
            names.append(node["value"])
        for child in node.get("children", []):
            walk(child)
    for menu in cp.options("PROTOCOLS"):
        for node in json.loads(cp.get("PROTOCOLS", menu)):
            walk(node)
    return names


class TestMenu(BaseTest):
    """protocols.conf: the file pyworkflow reads lists every protocol."""

    @classmethod
    def setUpClass(cls):
        scipion_domain()

    def test_every_protocol_in_the_menu(self):
        # pyworkflow reads <plugin package folder>/protocols.conf
        # (ProtocolTreeConfig.load: plugin.__path__[0] + PLUGIN_CONFIG_PROTOCOLS)
        from pyworkflow.gui.project.viewprotocols_extra import ProtocolTreeConfig
        conf = os.path.join(deephemnma.__path__[0], ProtocolTreeConfig.PLUGIN_CONFIG_PROTOCOLS)
        listed = _menu_protocols(conf)
        ours = {name for name, cls in scipion_domain().getProtocols().items()
                if cls.__module__.startswith("deephemnma.")}
        self.assertEqual(ours, set(P.__all__))
        self.assertEqual(sorted(listed), sorted(ours), "protocols.conf and the plugin differ")
        # one menu file: none beside the package that could drift from it
        self.assertFalse(os.path.exists(ROOT / "protocols.conf"))


class TestConstants(BaseTest):
    """Named constants in the forms, one list of groupings."""

    def test_landscape_groupings_are_the_stage_ones(self):
        from deephemnma.protocols import protocol_landscape as L
        from deephemnma.stages.landscape import GROUPINGS
        self.assertIsNone(L.FORM_GROUPINGS[0])
        self.assertLessEqual(set(L.FORM_GROUPINGS[1:]), set(GROUPINGS))
        self.assertEqual([L.FORM_GROUPINGS[i] for i in (L.SPLIT, L.EXPRESSION, L.KMEANS)],
                         ["split", "select", "kmeans"])
        self.assertEqual(L.FORM_GROUPINGS[L.BY_CLASS], "by_class")
        prot = P.DeepHEMNMAProtLandscape()
        form = prot.getDefinition()
        self.assertEqual(form.getParam("splitAxis").condition.get(), f"grouping == {L.SPLIT}")
        self.assertEqual(form.getParam("kmeans").condition.get(), f"grouping == {L.KMEANS}")

    def test_form_conditions_use_named_constants(self):
        """No form condition compares with a bare number (``"grouping == 1"``)."""
        folder = os.path.dirname(P.__file__)
        for name in sorted(os.listdir(folder)):
            if name.endswith(".py"):
                with open(os.path.join(folder, name)) as f:
                    src = f.read()
                self.assertIsNone(re.search(r"condition=[\"'][^\"']*[=!<>]=? *\d", src),
                                  name)
                self.assertIsNone(re.search(r"condition=[\"'][^\"']*[\"'] *%", src), name)


def _numeric_params(prot):
    for name, param in prot.getDefinition().iterParams():
        if isinstance(param, (params.IntParam, params.FloatParam)) and \
                not isinstance(param, params.EnumParam) and \
                name not in ("numberOfThreads", "numberOfMpi"):
            yield name, param


def _particles(folder, n=30, box=32, with_ctf=False):
    """A SetOfParticles (sqlite + stack in ``folder``) with a projection
    alignment and three NMA amplitudes per particle."""
    import pwem.objects as emobj
    import pyworkflow.object as pwobj
    from deephemnma.io.stacks import write_stack
    from deephemnma.protocols.convert import set_particle_values
    rng = np.random.default_rng(0)
    stack = os.path.join(folder, "stack.mrcs")
    write_stack(stack, rng.normal(size=(n, box, box)).astype(np.float32), 2.0)
    parts = emobj.SetOfParticles(filename=os.path.join(folder, "parts.sqlite"))
    parts.setSamplingRate(2.0)
    parts.setAlignmentProj()
    parts.setHasCTF(with_ctf)
    for k in range(n):
        p = emobj.Particle(location=(k + 1, stack))
        p.setObjId(k + 1)
        set_particle_values(p, rng.uniform(0, 90, 3), [0.0, 0.0], rng.normal(size=3) * 50)
        p._xmipp_cost = pwobj.Float(1.0)
        parts.append(p)
    parts.write()
    return parts


class TestFormMessages(BaseTest):
    """For every protocol's form, every message that bad values produce names
    form fields, never command-line options; the train form reports every
    problem at once."""

    @classmethod
    def setUpClass(cls):
        scipion_domain()
        cls.folder = tempfile.mkdtemp(prefix="deephemnma_forms_")
        cls.parts = _particles(cls.folder)

    @classmethod
    def tearDownClass(cls):
        cls.parts.close()
        shutil.rmtree(cls.folder, ignore_errors=True)

    def _protocol(self, cls, **values):
        prot = cls(**values)
        if hasattr(prot, "inputParticles"):
            prot.inputParticles.set(self.parts)
        return prot

    def _messages(self, prot):
        """What the form shows: the parameters' own validators, as pyworkflow
        words them, then the protocol's _validate."""
        errors = []
        for name, param in prot.getDefinition().iterParams():
            attr = getattr(prot, name)
            if not attr.isPointer() and prot.evalParamCondition(name):
                errors += [f"*{param.label.get()}* {e}" for e in param.validate(attr.get())]
        return errors + prot._validate()

    def test_no_command_line_option_in_any_form_message(self):
        bad_values = (0, -1, -0.5, 0.5, 1.5, 3, 47, 1e9)
        checked = 0
        for name in P.__all__:
            cls = getattr(P, name)
            base = self._messages(self._protocol(cls))
            for pname, param in _numeric_params(cls()):
                label = param.label.get()
                for value in bad_values:
                    if isinstance(param, params.IntParam) and value != int(value):
                        continue
                    prot = self._protocol(cls, **{pname: value})
                    messages = self._messages(prot)
                    for m in messages:
                        self.assertIsNone(OPTION.search(m), f"{name}.{pname}={value}: {m!r}")
                    new = [m for m in messages if m not in base]
                    # a message caused by this value names this field (or the
                    # field to change, as "fewer than the batch size: lower *Batch size*")
                    for m in new:
                        words = label.split(" (")[0].lower()
                        self.assertTrue(re.search(r"\*[^*]+\*", m) or words in m.lower(),
                                        f"{name}.{pname}={value}: {m!r} names no field")
                    checked += len(new)
        self.assertGreater(checked, 20)

    def test_half_map_fields(self):
        """The half-map fields of the reconstruct and landscape forms: each bad
        value is one message naming its field; unused with the half maps off."""
        for cls in (P.DeepHEMNMAProtReconstruct, P.DeepHEMNMAProtLandscape):
            prot = self._protocol(cls, maskThreshold=1.5, maskDilate=-1, softEdge=-2)
            messages = self._messages(prot)
            for label, text in (("Mask threshold", "must be in (0, 1)"),
                                ("Mask dilation (px)", "must be >= 0"),
                                ("Mask soft edge (px)", "must be >= 0")):
                self.assertEqual(sum(f"*{label}* {text}" in m for m in messages), 1,
                                 (cls.__name__, label, messages))
            prot = self._protocol(cls, halfMaps=False, maskThreshold=1.5, maskDilate=-1,
                                  softEdge=-2)
            self.assertFalse(any("*Mask" in m for m in self._messages(prot)), cls.__name__)
            def config(p):
                return p._config() if cls is P.DeepHEMNMAProtReconstruct \
                    else p._reconstructConfig()
            self.assertFalse(config(prot).half_maps)
            self.assertTrue(config(self._protocol(cls)).half_maps)       # on by default

    def test_downscale_field(self):
        """The align and refine forms' downscaling: a bad box is one message
        naming the field (odd, too small, larger than the particles); 0 and
        a box of the particles' size or smaller are accepted."""
        box = self.parts.getXDim()
        for cls in (P.DeepHEMNMAProtAlign, P.DeepHEMNMAProtRefine):
            for value, text in ((box - 1, "an even box"), (8, "at least 16"),
                                (box + 2, f"larger than the images ({box} px)")):
                messages = self._messages(self._protocol(cls, downscale=value))
                self.assertEqual(sum(f"*Downscale images to (px)* {value}: " in m and text in m
                                     for m in messages), 1, (cls.__name__, value, messages))
            for value in (0, box, 16):
                messages = self._messages(self._protocol(cls, downscale=value))
                self.assertFalse(any("Downscale" in m for m in messages), messages)
            self.assertEqual(self._protocol(cls, downscale=16)._config().downscale, 16)

    def test_train_form_reports_every_problem(self):
        prot = self._protocol(P.DeepHEMNMAProtTrain, epochs=0, batchSize=0, dropout=1.0,
                              valFraction=1.5, inputSize=47)
        messages = self._messages(prot)
        for label in ("Epochs", "Batch size", "MLP dropout", "Validation fraction",
                      "Network input size (px)"):
            self.assertTrue(any(f"*{label}*" in m for m in messages), (label, messages))
        # one message per problem: the validators' ones are not repeated by the stage's
        self.assertEqual(sum("*Epochs*" in m for m in messages), 1, messages)
        # the stage's own checks (no form validators) also report all their problems
        prot = self._protocol(P.DeepHEMNMAProtTrain, dropout=1.0, inputSize=47,
                              augmentCopies=-1)
        stage_messages = prot._configErrors(prot._config)
        self.assertEqual(len(stage_messages), 3, stage_messages)

    def test_train_form_pose_aware_network(self):
        """The pose-aware network's fields: missing reference and modes,
        options it cannot use, consensus particles without alignment; each
        message names form fields."""
        import pwem.objects as emobj
        prot = self._protocol(P.DeepHEMNMAProtTrain, poseInput=True, augment=True)
        messages = self._messages(prot)
        self.assertTrue(any("*Normal modes*" in m and "*Reference*" in m for m in messages),
                        messages)
        self.assertTrue(any("*In-plane rotation augmentation*" in m for m in messages),
                        messages)
        for m in messages:
            self.assertIsNone(OPTION.search(m), m)
        bare = emobj.SetOfParticles(filename=os.path.join(self.folder, "bare.sqlite"))
        bare.setSamplingRate(2.0)
        bare.append(emobj.Particle(location=(1, os.path.join(self.folder, "stack.mrcs"))))
        bare.write()
        prot = self._protocol(P.DeepHEMNMAProtTrain, poseInput=True)
        prot.consensusParticles.set(bare)
        self.assertTrue(any("*Particles with the consensus poses*" in m and "alignment" in m
                            for m in self._messages(prot)))
        # off: none of these
        prot = self._protocol(P.DeepHEMNMAProtTrain, poseInput=False)
        self.assertFalse(any("consensus" in m for m in self._messages(prot)))
        self.assertFalse(prot._config().pose_input)

    def test_command_line_stops_at_the_first_problem(self):
        from deephemnma.errors import InputError
        from deephemnma.stages import train
        from deephemnma.stages.base import collect_problems
        cfg = train.Config(epochs=0, batch_size=0)
        with self.assertRaises(InputError) as e:
            cfg.validate_options()
        self.assertIn("--epochs", str(e.exception))
        with collect_problems() as problems:
            cfg.validate_options()
        self.assertEqual([p.split()[0] for p in problems], ["--epochs", "--batch-size"])
        with self.assertRaises(InputError):       # the block ended: raising again
            cfg.validate_options()

    def test_run_errors_name_form_fields(self):
        from deephemnma.protocols.base import DeepHEMNMAError, run_stage
        from deephemnma.stages import predict
        prot = self._protocol(P.DeepHEMNMAProtPredict)
        prot.setWorkingDir(os.path.join(self.folder, "run"))
        cfg = prot._config("cpu").replace(model=os.path.join(self.folder, "missing.pt"))
        with self.assertRaises(DeepHEMNMAError) as e:
            prot._runHere(predict, cfg)
        self.assertIn("*Trained model*: file not found", str(e.exception))
        self.assertNotIn("--", str(e.exception))
        # the same run without the protocol's words: the stage's (command line) message
        with self.assertRaises(DeepHEMNMAError) as e:
            run_stage(predict, cfg)
        self.assertIn("--model", str(e.exception))


class TestWithoutCTF(BaseTest):
    """Particles imported without CTF (a stack simulated without CTF from the
    shipped AK.pdb, imported as plain image files) are aligned without CTF
    correction, as the log says; the run's metadata reference the images
    relative to itself, so a copied project still finds them."""

    @classmethod
    def setUpClass(cls):
        scipion_domain()
        setupTestProject(cls)

    def test_align_particles_without_ctf_and_move_the_project(self):
        from pwem.protocols import ProtImportParticles, ProtImportPdb
        from deephemnma.io.metadata import parse_image_ref, read_metadata
        from deephemnma.io.stacks import load_images
        from deephemnma.data import data_file
        from deephemnma.stages import simulate
        ak = data_file("AK.pdb")
        out = tempfile.mkdtemp(prefix="deephemnma_noctf_")
        self.addCleanup(shutil.rmtree, out, ignore_errors=True)
        sim = simulate.run(simulate.Config(
            structure=ak, out=out, n=10, box=32,
            pixel_size=2.6, ctf=False, snr=1.0, seed=3), progress=False)
        stk = pathlib.Path(sim.stack)
        imp = self.newProtocol(ProtImportParticles,
                               importFrom=ProtImportParticles.IMPORT_FROM_FILES,
                               filesPath=str(stk.parent), filesPattern=stk.name,
                               samplingRate=2.6, voltage=200, magnification=60000)
        self.launchProtocol(imp)
        parts = imp.outputParticles
        self.assertFalse(parts.hasCTF())
        self.assertEqual(parts.getSize(), 10)
        pdb = self.newProtocol(ProtImportPdb, inputPdbData=1, pdbFile=ak)
        self.launchProtocol(pdb)
        nma = self.newProtocol(P.DeepHEMNMAProtNMA, inputStructure=pdb.outputPdb,
                               numberOfModes=8, useGpu=False)
        self.launchProtocol(nma)
        ali = self.newProtocol(P.DeepHEMNMAProtAlign, inputParticles=parts,
                               inputModes=nma.outputModes, inputReference=nma.outputReference,
                               modeList="7-8", angularStep=30.0, maxShift=2.0, candidates=1,
                               coarseIters=5, fineIters=3, outlierThreshold=0.0, useGpu=False)
        self.assertFalse(ali._config().use_ctf)
        self.assertEqual(ali._config().threads, ali.numberOfThreads.get())
        self.launchProtocol(ali)
        out = ali.outputParticles
        self.assertEqual(out.getSize(), 10)
        q = np.array([[float(v) for v in p._xmipp_nmaDisplacements] for p in out])
        self.assertTrue(q.shape == (10, 2) and np.isfinite(q).all())
        with open(ali.getLogPaths()[0]) as f:
            log = f.read()
        self.assertIn("The particles have no CTF: HEMNMA alignment applies no CTF correction",
                      log)
        # the stage's run record names this protocol run as its command
        import json
        with open(ali._getExtraPath("aligned.run.json")) as f:
            record = json.load(f)
        self.assertEqual(record["status"], "finished")
        self.assertIn(f"DeepHEMNMAProtAlign run {ali.getObjId()}", record["command"])

        # the run's files reference the images relative to themselves
        project = os.path.abspath(self.proj.getPath())
        files = [os.path.join(project, os.path.relpath(os.path.abspath(f), project))
                 for f in (ali._getExtraPath("input.xmd"), ali._getExtraPath("aligned.xmd"))]
        for path in files:
            for ref in read_metadata(path)["image"]:
                self.assertFalse(os.path.isabs(parse_image_ref(ref)[1]), ref)
        before = load_images(read_metadata(files[0]))
        # a copy of the project elsewhere (the original moved away) finds them
        moved = tempfile.mkdtemp(prefix="deephemnma_moved_")
        try:
            copy = os.path.join(moved, "project")
            shutil.copytree(project, copy, symlinks=True)
            os.rename(project, project + ".away")
            try:
                for path in files:
                    t = read_metadata(os.path.join(copy, os.path.relpath(path, project)))
                    for ref in t["image"]:
                        where = os.path.abspath(t.image_path(parse_image_ref(ref)[1]))
                        self.assertTrue(where.startswith(copy + os.sep), where)
                    self.assertTrue(np.array_equal(load_images(t), before))
            finally:
                os.rename(project + ".away", project)
        finally:
            shutil.rmtree(moved, ignore_errors=True)

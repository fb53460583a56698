"""The plugin's workflow templates (deephemnma/templates/*.json.template), as
a user meets them: found by Scipion through the plugin's getTemplates(), every
field filled from the command line by its alias, loaded into a project, and
the synthetic workflow run from a terminal on tiny data:

    scipion3 template deephemnma-synthetic_workflow --nogui --noschedule \\
        structure=AK.pdb images=120 ... project_name=NAME
    scipion3 python -m pyworkflow.project.scripts.schedule NAME

(``python -m scipion`` stands for ``scipion3`` here), and the real-data
workflow the same way on a stand-in for real particles
(benchmarks/realistic_standin.py), scheduled by ``scipion3 python -m
deephemnma.scipion_schedule NAME``. The scheduled runs take
minutes, mostly pyworkflow's scheduler waiting (each protocol polls its inputs
every 15-120 s): they run only with DEEPHEMNMA_SLOW_TESTS=1 (CI sets it).

    scipion3 tests deephemnma.tests.test_templates
    python -m pytest -q deephemnma/tests/test_templates.py
"""
from . import ak_pdb, assert_outputs_declared, scipion_domain  # first: sets up Scipion's environment

import json  # noqa: E402
import os  # noqa: E402
import re  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
import unittest  # noqa: E402

import numpy as np  # noqa: E402

from pyworkflow.tests import BaseTest, setupTestProject  # noqa: E402

from .test_chaining import candidates  # noqa: E402

SLOW = os.environ.get("DEEPHEMNMA_SLOW_TESTS", "") not in ("", "0")
SYNTHETIC, REAL = "synthetic_workflow", "real_data_workflow"
#: tiny values for every field of the synthetic template but the structure
TINY = {"images": 120, "box": 32, "pixel_size": 2.6, "snr": 0, "angular_step": 15,
        "epochs": 2, "group_size": 20}
#: the real-data template's fields but the files (values for loading only)
REAL_VALUES = {"pixel_size": 1.0, "voltage": 300, "cs": 2.7, "amp_contrast": 0.1,
               "modes": "7-9", "angular_step": 12, "max_shift": 10, "align_box": 128,
               "pose_network": "true",
               "epochs": 30, "net_size": 128, "group_size": 900}
#: the stand-in for real particles of the scheduled real-data run (reduced
#: size: the paper's 166 Å field of view at 128 px instead of 256 px)
REAL_STANDIN = {"n": 300, "box": 128, "pixel_size": 1.3, "seed": 5}
#: the real-data template's fields for that run (HEMNMA and the network on 64 px images)
REAL_FIELDS = {"angular_step": 20, "max_shift": 4, "align_box": 64, "epochs": 3,
               "net_size": 64, "group_size": 40}
#: keys of a workflow entry that are not form parameters
NOT_PARAMS = {"filesPath", "filesPattern"}


def _realistic_standin():
    """benchmarks/realistic_standin.py as a module (None outside a checkout)."""
    import importlib.util
    path = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(
        os.path.abspath(__file__)))), "benchmarks", "realistic_standin.py")
    if not os.path.exists(path):
        return None
    spec = importlib.util.spec_from_file_location("realistic_standin", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _launches(prot):
    """How many times the scheduler started the run ``prot`` (its schedule log)."""
    path = os.path.join(prot.getProject().path, prot.getScheduleLog())
    if not os.path.exists(path):
        return 0
    with open(path) as fh:
        return fh.read().count("Launching the protocol")


def plugin_templates():
    """{name: pyworkflow LocalTemplate} as Scipion finds them for this plugin
    (``scipion3 template`` asks each plugin of Scipion's domain, pwem.Domain:
    pyworkflow.plugin.Domain itself would re-register the plugins under the
    base class, whose protocols then take any attribute for an output)."""
    plugin = scipion_domain().getPluginModule("deephemnma")._pluginInstance
    return {t.name: t for t in plugin.getTemplates()}


def fill(template, values):
    """What ``scipion3 template NAME alias=value ...`` does before creating the
    project: environment variables, then each alias (validated by its type).
    Returns the workflow as a list of protocol dicts."""
    template.replaceEnvVariables()
    template.parseContent()
    for alias, value in values.items():
        if template.setParamValue(alias, str(value)) != 1:
            raise AssertionError(f"alias {alias} not in template {template.name}")
    template._replaceFields()
    return json.loads("".join(template.getContent()))


def pointers(entry):
    """{param: (upstream id, output name)} of a workflow entry's links."""
    out = {}
    for k, v in entry.items():
        if isinstance(v, str) and re.fullmatch(r"\d+\.\w+", v):
            pid, name = v.split(".")
            out[k] = (pid, name)
    return out


def scipion(log, *args, timeout=300):
    """``python -m scipion ARGS`` (``scipion3 ARGS``) in this environment, its
    output to the file ``log`` (not a pipe: the schedule script leaves one
    scheduler process per protocol behind, holding its outputs open). The
    template command runs ``python -m scipion python create.py``, hence this
    Python first on the PATH. Returns (exit status, the log's text)."""
    env = dict(os.environ)
    env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", "")
    with open(log, "w") as fh:
        rc = subprocess.run([sys.executable, "-m", "scipion", *args], env=env,
                            stdin=subprocess.DEVNULL, stdout=fh, stderr=subprocess.STDOUT,
                            timeout=timeout).returncode
    with open(log) as fh:
        return rc, fh.read()


class TestTemplates(BaseTest):
    """Both templates: found, described, every field aliased, links valid,
    loadable into a project where the GUI offers each link's output."""

    @classmethod
    def setUpClass(cls):
        scipion_domain()
        setupTestProject(cls)

    def values(self, name):
        """Every field; the files need only exist (nothing runs)."""
        any_file = os.path.abspath(__file__)
        if name == SYNTHETIC:
            return dict(TINY, structure=any_file)
        return dict(REAL_VALUES, structure=any_file, particles=any_file)

    def test_found_described_and_aliased(self):
        Domain = scipion_domain()
        templates = plugin_templates()
        self.assertEqual(set(templates), {SYNTHETIC, REAL})
        protocols = Domain.getProtocols()
        for name, t in templates.items():
            self.assertTrue(t.getObjId() == f"deephemnma-{name}")
            self.assertIn("scipion3 template deephemnma-" + name, t.description)
            workflow = fill(t, self.values(name))
            params = t.getParams().values()
            aliases = [p.getAlias() for p in params]
            self.assertTrue(all(aliases), f"{name}: a field has no alias")
            self.assertEqual(len(aliases), len(set(aliases)))
            self.assertEqual(set(aliases), set(self.values(name)),
                             f"{name}: the fields are {aliases}")
            for alias in aliases:     # the README's command names every field
                self.assertIn(f" {alias}=", t.description, f"{name}: {alias}")
            ids = {e["object.id"]: e for e in workflow}
            for e in workflow:
                cls = protocols.get(e["object.className"])
                self.assertIsNotNone(cls, e["object.className"])
                form = cls().getDefinition()
                for key in e:
                    if not key.startswith("object.") and key not in NOT_PARAMS:
                        self.assertIsNotNone(form.getParam(key),
                                             f"{name}: {cls.__name__} has no parameter {key}")
                for key, (pid, out) in pointers(e).items():
                    self.assertIn(pid, ids, f"{name}: {key} -> {pid}")
                    up = protocols[ids[pid]["object.className"]]
                    declared = up._possibleOutputs
                    if declared is None:      # pwem's split: outputParticles01, 02...
                        continue
                    declared = dict(declared) if isinstance(declared, dict) else {
                        o.name: o.value for o in declared}
                    self.assertIn(out, declared, f"{name}: {up.__name__} has no {out}")
                    wanted = form.getParam(key).pointerClass.get().replace(" ", "").split(",")
                    self.assertTrue(any(Domain.findClass(c) in declared[out].__mro__
                                        for c in wanted),
                                    f"{name}: {key} wants {wanted}, {out} is {declared[out]}")

    def test_synthetic_alignment_searches_globally(self):
        """The synthesized particles carry their true poses: the synthetic
        workflow's HEMNMA searches globally (the paper's), never from them."""
        from deephemnma.protocols.protocol_align import FROM_POSES_NO
        scipion_domain()
        workflow = fill(plugin_templates()[SYNTHETIC], self.values(SYNTHETIC))
        aligns = [e for e in workflow if e["object.className"] == "DeepHEMNMAProtAlign"]
        self.assertEqual([e.get("fromPoses") for e in aligns], [FROM_POSES_NO])

    def test_load_into_a_project(self):
        """The workflows as the template command loads them: every protocol
        saved with its links; each link to one of our protocols' (not yet
        existing) outputs is among the candidates the GUI's form offers."""
        project = self.proj
        for name, t in plugin_templates().items():
            workflow = fill(t, self.values(name))
            loaded = project.loadProtocols(jsonStr=json.dumps(workflow))
            self.assertEqual(len(loaded), len(workflow))
            project.getRuns(refresh=True)
            for e in workflow:
                prot = loaded[e["object.id"]]
                self.assertEqual(prot.getClassName(), e["object.className"])
                # (labels and comments: pyworkflow 3.11's Step.__init__ drops them)
                for key, (pid, out) in pointers(e).items():
                    ptr = getattr(prot, key)
                    self.assertIs(ptr.getObjValue(), loaded[pid])
                    self.assertEqual(ptr.getExtended(), out)
                    if type(loaded[pid])._possibleOutputs is not None:
                        self.assertIn((loaded[pid].getObjId(), out), candidates(prot, key),
                                      f"{name}: the form of {prot.getClassName()} does not "
                                      f"offer {out} for {key}")

    def run_from_a_terminal(self, template, values, schedule="pyworkflow.project.scripts.schedule",
                            deadline_s=1800):
        """The README's two commands: ``scipion3 template deephemnma-TEMPLATE
        --nogui --noschedule alias=value ... project_name=NAME`` creates the
        project, ``scipion3 python -m SCHEDULE NAME`` schedules it; waits
        until every run finished (fails on the first failed run). Returns the
        project's runs."""
        from pyworkflow.project import Manager
        from pyworkflow.protocol import STATUS_FAILED, STATUS_FINISHED
        # loading the project moves into its folder: back to this class's
        # project after the test (its runs' paths are relative to it)
        self.addCleanup(os.chdir, os.getcwd())
        name = f"DeepHEMNMATemplate_{os.getpid()}_{int(time.time())}"
        args = [f"{k}={v}" for k, v in values.items()]
        log = os.path.join(self.proj.getTmpPath(), name + ".log")
        rc, out = scipion(log, "template", "deephemnma-" + template, "--nogui",
                          "--noschedule", *args, f"project_name={name}")
        self.assertEqual(rc, 0, out)
        self.assertTrue(Manager().hasProject(name), out)
        rc, out = scipion(log, "python", "-m", schedule, name)
        self.assertEqual(rc, 0, out)

        project = Manager().loadProject(name)
        deadline = time.time() + deadline_s
        runs = project.getRuns(refresh=True)
        try:
            while time.time() < deadline:
                runs = project.getRuns(refresh=True)
                status = [p.getStatus() for p in runs]
                if STATUS_FAILED in status or all(s == STATUS_FINISHED for s in status):
                    break
                time.sleep(5)
        finally:
            for p in runs:        # leave no scheduler waiting behind
                if not (p.isFinished() or p.isFailed()):
                    project.stopProtocol(p)
        logs = {p.getObjLabel(): p.getStatus() for p in runs}
        for p in runs:
            if p.isFailed():
                self.fail(f"{p.getObjLabel()} failed: {p.getErrorMessage()}\n{logs}")
        self.assertTrue(all(p.isFinished() for p in runs), f"not finished in time: {logs}")
        return runs

    @unittest.skipUnless(SLOW, "minutes of scheduler waits: set DEEPHEMNMA_SLOW_TESTS=1")
    def test_synthetic_workflow_from_a_terminal(self):
        """The README's two commands on tiny data: the template command creates
        the project, pyworkflow's schedule script runs it to the end."""
        runs = self.run_from_a_terminal(SYNTHETIC, dict(TINY, structure=ak_pdb()))
        by = {p.getClassName(): p for p in runs}
        for p in runs:
            if p.getClassName().startswith("DeepHEMNMA"):
                assert_outputs_declared(self, p)
        self.assertEqual(by["DeepHEMNMAProtSynthesize"].outputParticles.getSize(), 120)
        pr = by["DeepHEMNMAProtPredict"]
        # the second half predicted + the first half's HEMNMA results
        self.assertEqual(pr.outputParticles.getSize(), 120)
        land = by["DeepHEMNMAProtLandscape"]
        self.assertTrue(land.outputGroup01.getSize() >= TINY["group_size"])
        vol = by["DeepHEMNMAProtReconstruct"].outputVolume
        self.assertEqual(vol.getDim(), (32, 32, 32))
        self.assertAlmostEqual(vol.getSamplingRate(), 2.6, places=5)

    @unittest.skipUnless(SLOW, "about 2 minutes: set DEEPHEMNMA_SLOW_TESTS=1")
    def test_real_data_workflow_on_scipion_particles(self):
        """The real-data template on Scipion particles with CTF from another
        run (a .sqlite, as a user imports them): loaded by the template's
        aliases, each protocol launched in the workflow's order."""
        from pwem.protocols import ProtImportPdb
        from deephemnma import protocols as P
        imp = self.newProtocol(ProtImportPdb, inputPdbData=1, pdbFile=ak_pdb())
        self.launchProtocol(imp)
        nma = self.newProtocol(P.DeepHEMNMAProtNMA, inputStructure=imp.outputPdb,
                               numberOfModes=10)
        self.launchProtocol(nma)
        syn = self.newProtocol(P.DeepHEMNMAProtSynthesize, inputModes=nma.outputModes,
                               inputReference=nma.outputReference, numberOfImages=80, box=32,
                               samplingRate=2.6, snr=0.0, seed=3)
        self.launchProtocol(syn)
        sqlite = os.path.abspath(syn.outputParticles.getFileName())

        values = dict(REAL_VALUES, particles=sqlite, structure=ak_pdb(), pixel_size=2.6,
                      angular_step=20, max_shift=3, align_box=0, epochs=2, net_size=0,
                      group_size=20)
        workflow = fill(plugin_templates()[REAL], values)
        loaded = self.proj.loadProtocols(jsonStr=json.dumps(workflow))
        for e in workflow:
            self.launchProtocol(loaded[e["object.id"]])
        by = {p.getClassName(): p for p in loaded.values()}
        for p in loaded.values():
            if p.getClassName().startswith("DeepHEMNMA"):
                assert_outputs_declared(self, p)
        parts = by["ProtImportParticles"].outputParticles
        self.assertEqual(parts.getSize(), 80)
        self.assertTrue(parts.hasCTF())
        self.assertEqual(by["DeepHEMNMAProtPredict"].outputParticles.getSize(), 80)
        self.assertEqual(by["DeepHEMNMAProtTrain"].outputModel.getModeNumbers(), [7, 8, 9])
        vol = by["DeepHEMNMAProtReconstruct"].outputVolume
        self.assertEqual(vol.getDim(), (32, 32, 32))      # the particles' own size
        self.assertAlmostEqual(vol.getSamplingRate(), 2.6, places=5)

    @unittest.skipUnless(SLOW, "about 6 minutes: set DEEPHEMNMA_SLOW_TESTS=1")
    def test_real_data_workflow_from_a_terminal(self):
        """The real-data template's two commands on particles that look real
        (benchmarks/realistic_standin.py: AK, each particle its own
        astigmatic CTF, B-factor 80 Å², SNR 0.07, ice gradient; a consensus
        refinement's poses, 3 deg and 0.5 Å off, as their alignment), at a
        reduced size (REAL_STANDIN: the paper's 166 Å field at 128 px):
        HEMNMA starts from the poses and finds the true orientations, the
        network works on downscaled images and predict rescales the
        particles to its box, and each landscape group is reconstructed at
        the particles' own box with gold-standard half maps."""
        import math
        from deephemnma.core.metrics import angular_errors
        from deephemnma.protocols.convert import geometry_from_matrix
        from deephemnma.stages import reconstruct
        standin = _realistic_standin()
        if standin is None:
            self.skipTest("benchmarks/realistic_standin.py is not in this checkout")
        n, box, ps = REAL_STANDIN["n"], REAL_STANDIN["box"], REAL_STANDIN["pixel_size"]
        folder = os.path.join(self.proj.getTmpPath(), "standin")
        data = standin.make_standin(folder, **REAL_STANDIN)
        values = dict(REAL_VALUES, particles=data["sqlite"], structure=ak_pdb(),
                      pixel_size=ps, **REAL_FIELDS)
        t0 = time.time()
        # (pyworkflow's schedule script would start the runs below both
        # imports twice: deephemnma.scipion_schedule, as the template says)
        runs = self.run_from_a_terminal(REAL, values, schedule="deephemnma.scipion_schedule")
        self.assertEqual(sum(_launches(p) for p in runs), len(runs))
        print(f"\nreal-data template, {n} particles, {box} px at {ps} Å/px: "
              f"{time.time() - t0:.0f} s from the template command to the last run")
        for p in runs:
            print(f"  {p.getObjLabel():40s} {p.getElapsedTime()}")
        by = {p.getClassName(): p for p in runs}
        for p in runs:
            if p.getClassName().startswith("DeepHEMNMA"):
                assert_outputs_declared(self, p)
        parts = by["ProtImportParticles"].outputParticles
        self.assertEqual(parts.getSize(), n)
        self.assertTrue(parts.hasCTF() and parts.hasAlignmentProj())

        align = by["DeepHEMNMAProtAlign"]
        with open(os.path.join(align.getProject().path, align.getStdoutLog())) as fh:
            self.assertIn("Starting from the particles' poses", fh.read())
        truth = data["truth"]
        est = {p.getObjId(): geometry_from_matrix(p.getTransform().getMatrix())[0]
               for p in align.outputParticles}
        ids = sorted(est)
        err = angular_errors(np.array([est[i] for i in ids]), truth.angles()[np.array(ids) - 1])
        start = angular_errors(data["poses"].angles()[np.array(ids) - 1],
                               truth.angles()[np.array(ids) - 1])
        print(f"  HEMNMA angular error vs truth: median {np.median(err):.2f} deg "
              f"(poses given: {np.median(start):.2f} deg)")
        # HEMNMA from the consensus poses, with its pose prior, improves on them (median
        # ~0.9x on random halves; the images alone, without the prior, 1.06-1.34x) and
        # loses no particle (without the prior ~5 % end beyond 10 deg)
        self.assertLess(np.median(err), 1.05 * np.median(start))
        self.assertLess(np.mean(err > 10), 0.02, np.sort(err)[-10:])
        # the template's network: the pose-aware one, and its log says so
        from deephemnma.core.models import load_model
        train = by["DeepHEMNMAProtTrain"]
        _, meta = load_model(train.outputModel.getFileName())
        self.assertTrue(meta.get("pose_input"), meta)
        with open(os.path.join(train.getProject().path, train.getStdoutLog())) as fh:
            self.assertIn("The pose-aware network", fh.read())

        self.assertEqual(by["DeepHEMNMAProtPredict"].outputParticles.getSize(), n)
        land = by["DeepHEMNMAProtLandscape"]
        groups = sorted(k for k, _ in land.iterOutputAttributes() if k.startswith("outputGroup"))
        self.assertGreaterEqual(len(groups), 2, groups)
        sizes = [getattr(land, g).getSize() for g in groups]
        self.assertLessEqual(sum(sizes), n)
        self.assertTrue(all(s >= REAL_FIELDS["group_size"] for s in sizes), sizes)
        maps = [getattr(land, "outputVolume" + g[-2:]) for g in groups]
        maps.append(by["DeepHEMNMAProtReconstruct"].outputVolume)
        for g, vol in zip(groups + ["reconstruct group 1"], maps):
            self.assertEqual(vol.getDim(), (box, box, box), g)
            self.assertAlmostEqual(vol.getSamplingRate(), ps, places=5)
            halves = vol.getHalfMaps().split(",")
            self.assertEqual(len(halves), 2, g)
            self.assertTrue(all(os.path.exists(h) for h in halves), halves)
            with open(reconstruct.Outputs(vol.getFileName()).fsc_halves_json) as fh:
                res = json.load(fh)["res_0.143_masked"]
            print(f"  {g}: {len(vol.getHalfMaps().split(','))} half maps, "
                  f"FSC 0.143 {res:.2f} Å")
            self.assertTrue(math.isfinite(res) and res >= 2 * ps, (g, res))

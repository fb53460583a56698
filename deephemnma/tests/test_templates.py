"""The plugin's workflow templates (deephemnma/templates/*.json.template), as
a user meets them: found by Scipion through the plugin's getTemplates(), every
field filled from the command line by its alias, loaded into a project, and
the synthetic workflow run from a terminal on tiny data:

    scipion3 template deephemnma-synthetic_workflow --nogui --noschedule \\
        structure=AK.pdb images=120 ... project_name=NAME
    scipion3 python -m pyworkflow.project.scripts.schedule NAME

(``python -m scipion`` stands for ``scipion3`` here). The scheduled run takes
minutes, mostly pyworkflow's scheduler waiting (each protocol polls its inputs
every 15-120 s): it runs only with DEEPHEMNMA_SLOW_TESTS=1 (CI sets it).

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

from pyworkflow.tests import BaseTest, setupTestProject  # noqa: E402

from .test_chaining import candidates  # noqa: E402

SLOW = os.environ.get("DEEPHEMNMA_SLOW_TESTS", "") not in ("", "0")
SYNTHETIC, REAL = "synthetic_workflow", "real_data_workflow"
#: tiny values for every field of the synthetic template but the structure
TINY = {"images": 120, "box": 32, "pixel_size": 2.6, "snr": 0, "angular_step": 15,
        "epochs": 2, "group_size": 20}
#: the real-data template's fields but the files (values for loading only)
REAL_VALUES = {"pixel_size": 1.0, "voltage": 300, "cs": 2.7, "amp_contrast": 0.1,
               "modes": "7-9", "angular_step": 12, "max_shift": 10, "epochs": 30,
               "net_size": 128, "group_size": 900}
#: keys of a workflow entry that are not form parameters
NOT_PARAMS = {"filesPath", "filesPattern"}


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

    @unittest.skipUnless(SLOW, "minutes of scheduler waits: set DEEPHEMNMA_SLOW_TESTS=1")
    def test_synthetic_workflow_from_a_terminal(self):
        """The README's two commands on tiny data: the template command creates
        the project, pyworkflow's schedule script runs it to the end."""
        from pyworkflow.project import Manager
        from pyworkflow.protocol import STATUS_FAILED, STATUS_FINISHED
        name = f"DeepHEMNMATemplate_{os.getpid()}_{int(time.time())}"
        args = [f"{k}={v}" for k, v in dict(TINY, structure=ak_pdb()).items()]
        log = os.path.join(self.proj.getTmpPath(), name + ".log")
        rc, out = scipion(log, "template", "deephemnma-" + SYNTHETIC, "--nogui",
                          "--noschedule", *args, f"project_name={name}")
        self.assertEqual(rc, 0, out)
        self.assertTrue(Manager().hasProject(name), out)
        rc, out = scipion(log, "python", "-m", "pyworkflow.project.scripts.schedule", name)
        self.assertEqual(rc, 0, out)

        project = Manager().loadProject(name)
        deadline = time.time() + 1800
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
                      angular_step=20, max_shift=3, epochs=2, net_size=0, group_size=20)
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

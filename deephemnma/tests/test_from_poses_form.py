"""The HEMNMA alignment form's "Start from the particles' poses": on by default
when the input particles carry a projection alignment, its fields' messages
in the form's words; the refine form accepts particles without amplitudes.

    python -m pytest -q deephemnma/tests/test_from_poses_form.py
"""
from . import scipion_domain  # first: sets up Scipion's environment

import os  # noqa: E402
import shutil  # noqa: E402
import tempfile  # noqa: E402

import numpy as np  # noqa: E402
from pyworkflow.tests import BaseTest  # noqa: E402

from deephemnma import protocols as P  # noqa: E402
from deephemnma.protocols import protocol_align as PA  # noqa: E402


def _particles(folder, name, alignment, amplitudes, n=6, box=32):
    """A SetOfParticles (sqlite + stack in ``folder``), with or without a
    projection alignment and NMA amplitudes."""
    import pwem.objects as emobj
    from deephemnma.io.stacks import write_stack
    from deephemnma.protocols.convert import set_particle_values
    rng = np.random.default_rng(0)
    stack = os.path.join(folder, name + ".mrcs")
    write_stack(stack, rng.normal(size=(n, box, box)).astype(np.float32), 2.0)
    parts = emobj.SetOfParticles(filename=os.path.join(folder, name + ".sqlite"))
    parts.setSamplingRate(2.0)
    if alignment:
        parts.setAlignmentProj()
    for k in range(n):
        p = emobj.Particle(location=(k + 1, stack))
        p.setObjId(k + 1)
        if alignment:
            set_particle_values(p, rng.uniform(0, 90, 3), [0.0, 0.0],
                                rng.normal(size=3) * 50 if amplitudes else None)
        parts.append(p)
    parts.write()
    return parts


class TestFromPosesForm(BaseTest):
    @classmethod
    def setUpClass(cls):
        scipion_domain()
        cls.folder = tempfile.mkdtemp(prefix="deephemnma_poses_")
        cls.aligned = _particles(cls.folder, "aligned", True, False)
        cls.bare = _particles(cls.folder, "bare", False, False)

    @classmethod
    def tearDownClass(cls):
        cls.aligned.close()
        cls.bare.close()
        shutil.rmtree(cls.folder, ignore_errors=True)

    def _align(self, parts, **values):
        prot = P.DeepHEMNMAProtAlign(**values)
        prot.inputParticles.set(parts)
        return prot

    def test_default_follows_the_particles_alignment(self):
        self.assertEqual(self._align(self.aligned).fromPoses.get(), PA.FROM_POSES_AUTO)
        self.assertTrue(self._align(self.aligned)._config().from_poses)
        self.assertFalse(self._align(self.bare)._config().from_poses)
        self.assertFalse(self._align(self.aligned, fromPoses=PA.FROM_POSES_NO)
                         ._config().from_poses)
        self.assertTrue(self._align(self.aligned, fromPoses=PA.FROM_POSES_YES)
                        ._config().from_poses)
        cfg = self._align(self.aligned, cone=7.0, shiftWindow=1.5, localCandidates=3)._config()
        self.assertEqual((cfg.cone, cfg.shift_window, cfg.local_candidates), (7.0, 1.5, 3))

    def test_messages_name_the_form_fields(self):
        def errors(prot):
            return [e for e in prot._validate() if "normal modes" not in e]
        self.assertEqual(errors(self._align(self.aligned)), [])
        self.assertEqual(errors(self._align(self.bare)), [])
        e = errors(self._align(self.bare, fromPoses=PA.FROM_POSES_YES))
        self.assertTrue(any("*Start from the particles' poses*" in m for m in e), e)
        for values, label in (({"cone": 0.0}, "*Cone (deg)*"),
                              ({"shiftWindow": -1.0}, "*Shift window (Å)*"),
                              ({"localCandidates": 0}, "*Local candidates refined*")):
            e = errors(self._align(self.aligned, **values))
            self.assertTrue(e and all(label in m and "--" not in m for m in e), (values, e))
            # not starting from the poses: these fields are not used, not checked
            self.assertEqual(errors(self._align(self.bare, **values)), [], values)

    def test_refine_accepts_particles_without_amplitudes(self):
        prot = P.DeepHEMNMAProtRefine()
        prot.inputParticles.set(self.aligned)
        self.assertEqual([e for e in prot._validate() if "normal modes" not in e], [])
        prot = P.DeepHEMNMAProtRefine()
        prot.inputParticles.set(self.bare)
        self.assertTrue(any("projection alignment" in m for m in prot._validate()))

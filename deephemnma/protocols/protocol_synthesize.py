"""Synthetic particles with ground truth (the paper's data synthesis)."""
import os

import numpy as np
import pyworkflow.protocol.params as params

from .base import DeepHEMNMABase, run_command
from .convert import GT_ATTRS


class DeepHEMNMAProtSynthesize(DeepHEMNMABase):
    """Synthesize particle images of a reference deformed along normal modes
    (helix, uniform or clustered amplitudes), uniformly oriented, shifted, with
    CTF and noise. The ground truth is stored twice on each particle: as its
    alignment and _xmipp_nmaDisplacements (usable as labels) and as
    _deephemnma_gt* attributes (kept through later protocols for evaluation)."""
    _label = "synthesize particles"
    _possibleOutputs = {"outputParticles": "SetOfParticles"}

    def _defineParams(self, form):
        form.addSection("Input")
        form.addParam("inputModes", params.PointerParam, pointerClass="SetOfNormalModes",
                      label="Normal modes", important=True)
        form.addParam("inputReference", params.PointerParam, pointerClass="AtomStruct",
                      label="Reference (as used for the modes)",
                      help="The reference.pdb output of the normal mode protocol.")
        form.addParam("modeList", params.StringParam, default="7-9", label="Modes")
        form.addParam("law", params.EnumParam, choices=["helix", "uniform", "clusters"],
                      default=0, label="Amplitude law",
                      help="helix: the paper's q7=-200r, q8=200 sin(pi r), q9=200 cos(pi r).")
        form.addParam("numberOfImages", params.IntParam, default=1000, label="Images")
        form.addParam("box", params.IntParam, default=64, label="Box (px)")
        form.addParam("samplingRate", params.FloatParam, default=1.3, label="Pixel size (Å)")
        form.addParam("snr", params.FloatParam, default=0.1, label="SNR",
                      help="Signal variance / noise variance; 0 for no noise.")
        form.addParam("snrAtRender", params.BooleanParam, default=True,
                      label="SNR before downscaling (the paper's)?",
                      help="Yes: as in the paper, the images are rendered at 0.325 Å/px, the "
                           "noise is added there at this SNR, and the images are then "
                           "downscaled to the pixel size asked for (which averages the noise: "
                           "SNR 0.1 becomes ~0.4 at 0.65 Å/px, ~1.6 at 1.3 Å/px). No: the "
                           "output images themselves have this SNR (rendered at 2x).")
        form.addParam("defocus", params.FloatParam, default=5000.0, label="Defocus (Å)",
                      help="Underfocus; 0 for no CTF.")
        form.addParam("seed", params.IntParam, default=0, label="Random seed",
                      expertLevel=params.LEVEL_ADVANCED)
        self._addComputeParams(form, threads=2)

    def _insertAllSteps(self):
        self._insertFunctionStep(self.simulateStep)
        self._insertFunctionStep(self.createOutputStep)

    def simulateStep(self):
        modes_dir = self._modesFolder(self.inputModes.get(),
                                      self.inputReference.get().getFileName())
        argv = ["simulate", "--structure", self.inputReference.get().getFileName(),
                "--modes", modes_dir, "--mode-list", self.modeList.get(),
                "--out", self._extra("data"), "-n", self.numberOfImages.get(),
                "--box", self.box.get(), "--pixel-size", self.samplingRate.get(),
                "--law", ["helix", "uniform", "clusters"][self.law.get()],
                "--seed", self.seed.get(), "--device", self._device()]
        if self.snr.get() <= 0:
            argv.append("--no-noise")
        else:
            argv += ["--snr", self.snr.get()]
            if self.snrAtRender.get():
                argv += ["--snr-at-render", "--render-factor", self._renderFactor()]
        if self.defocus.get() <= 0:
            argv.append("--no-ctf")
        else:
            argv += ["--defocus", self.defocus.get()]
        run_command(argv)

    def _renderFactor(self):
        from ..core.simulate import render_factor_for
        return render_factor_for(self.samplingRate.get())

    def createOutputStep(self):
        import pwem.objects as emobj
        import pyworkflow.object as pwobj
        from ..io.metadata import read_metadata
        from .convert import set_particle_values
        t = read_metadata(self._extra("data", "particles.xmd"))
        stack = self._extra("data", "particles.mrcs")
        out = self._createSetOfParticles()
        out.setSamplingRate(self.samplingRate.get())
        acq = emobj.Acquisition(voltage=200.0, sphericalAberration=2.0, amplitudeContrast=0.1,
                                magnification=50000)
        out.setAcquisition(acq)
        has_ctf = "ctfDefocusU" in t
        out.setHasCTF(has_ctf)
        out.setAlignmentProj()
        ang, sh, q = t.angles(), t.shifts(), t["nmaDisplacements"]
        for k in range(len(t)):
            p = emobj.Particle(location=(k + 1, stack))
            p.setObjId(int(t["itemId"][k]))
            p.setAcquisition(acq)
            if has_ctf:
                ctf = emobj.CTFModel(defocusU=float(t["ctfDefocusU"][k]),
                                     defocusV=float(t["ctfDefocusV"][k]),
                                     defocusAngle=float(t["ctfDefocusAngle"][k]))
                ctf.standardize()
                p.setCTF(ctf)
            set_particle_values(p, ang[k], sh[k], q[k])
            for name, val in zip(GT_ATTRS, (ang[k], sh[k], q[k])):
                setattr(p, name, pwobj.CsvList(pType=float))
                getattr(p, name).set([float(x) for x in val])
            out.append(p)
        self._defineOutputs(outputParticles=out)
        self._defineSourceRelation(self.inputModes, out)

    def _validate(self):
        errors = []
        if self.box.get() < 16 or self.box.get() % 2:
            errors.append("the box must be even and at least 16 px")
        if self.numberOfImages.get() < 1:
            errors.append("ask for at least one image")
        from ..core.nma import parse_mode_list
        from ..errors import InputError
        try:
            parse_mode_list(self.modeList.get())
        except InputError as e:
            errors.append(str(e))
        return errors

    def _summary(self):
        if not hasattr(self, "outputParticles"):
            return ["Not run yet."]
        return [f"{self.outputParticles.getSize()} synthetic particles, {self.box.get()} px at "
                f"{self.samplingRate.get()} Å/px, SNR {self.snr.get()}" +
                (f" at {self.samplingRate.get() / self._renderFactor():.3g} Å/px before "
                 "downscaling (the paper's)." if self.snrAtRender.get() and self.snr.get() > 0
                 else " in the output images.")]

    def _methods(self):
        return ["Synthetic particles were generated following [Hamitouche2022]."]

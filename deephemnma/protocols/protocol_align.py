"""HEMNMA alignment (Stage 1) embedded in PyTorch."""
import os

import pyworkflow.protocol.params as params

from ..core.config import AlignOptions
from .base import DeepHEMNMABase, run_command
from .convert import fill_particles, particles_to_table


class DeepHEMNMAProtAlign(DeepHEMNMABase):
    """Elastic and rigid-body alignment of particle images with normal modes:
    for each image, the mode amplitudes, Euler angles and shifts, and a cost.
    The output particles carry _xmipp_nmaDisplacements, _xmipp_cost and the
    projection alignment as ContinuousFlex's HEMNMA writes them."""
    _label = "HEMNMA alignment"
    _possibleOutputs = {"outputParticles": "SetOfParticles"}

    def _defineParams(self, form):
        form.addSection("Input")
        form.addParam("inputParticles", params.PointerParam, pointerClass="SetOfParticles",
                      label="Particles", important=True,
                      help="Typically a random subset (the training set of DeepHEMNMA).")
        form.addParam("inputModes", params.PointerParam, pointerClass="SetOfNormalModes",
                      label="Normal modes")
        form.addParam("inputReference", params.PointerParam, pointerClass="AtomStruct",
                      label="Reference", help="The structure the modes were computed on.")
        form.addParam("modeList", params.StringParam, default="7-9", label="Modes",
                      help="HEMNMA numbers, e.g. 7-9 or 7,8,11.")
        form.addParam("imagesFlipped", params.BooleanParam, default=False,
                      label="Images already phase-flipped?")
        d = AlignOptions()
        form.addSection("Search")
        form.addParam("angularStep", params.FloatParam, default=d.angular_step,
                      label="Global angular step (deg)")
        form.addParam("maxShift", params.FloatParam, default=d.max_shift, label="Max shift (Å)")
        form.addParam("candidates", params.IntParam, default=d.n_candidates,
                      label="Candidates refined",
                      expertLevel=params.LEVEL_ADVANCED)
        form.addParam("coarseIters", params.IntParam, default=d.coarse_iters,
                      expertLevel=params.LEVEL_ADVANCED, label="Coarse-level iterations")
        form.addParam("fineIters", params.IntParam, default=d.fine_iters,
                      expertLevel=params.LEVEL_ADVANCED, label="Fine-level iterations")
        form.addParam("outlierThreshold", params.FloatParam, default=3.2,
                      label="Mahalanobis threshold",
                      help="Images whose amplitudes are farther are left out of the "
                           "outputParticlesKept set (the paper: 3.2; 0 to disable).")
        self._addComputeParams(form, threads=2)

    def _insertAllSteps(self):
        self._insertFunctionStep(self.alignStep)
        self._insertFunctionStep(self.createOutputStep)

    def alignStep(self):
        from ..io.metadata import write_xmd
        parts = self.inputParticles.get()
        write_xmd(self._extra("input.xmd"), particles_to_table(parts))
        modes_dir = self._modesFolder(self.inputModes.get(),
                                      self.inputReference.get().getFileName())
        argv = ["align", "--particles", self._extra("input.xmd"), "--modes", modes_dir,
                "--structure", self.inputReference.get().getFileName(),
                "--mode-list", self.modeList.get(), "--pixel-size", parts.getSamplingRate(),
                "--out", self._extra("aligned.xmd"), "--angular-step", self.angularStep.get(),
                "--max-shift", self.maxShift.get(), "--candidates", self.candidates.get(),
                "--coarse-iters", self.coarseIters.get(), "--fine-iters", self.fineIters.get(),
                "--device", self._device(), "--outlier-threshold", self.outlierThreshold.get()]
        if self.imagesFlipped.get():
            argv.append("--images-flipped")
        run_command(argv)

    def createOutputStep(self):
        from ..io.metadata import read_metadata
        inp = self.inputParticles.get()
        out = self._createSetOfParticles()
        fill_particles(out, inp, read_metadata(self._extra("aligned.xmd")))
        outputs = {"outputParticles": out}
        kept = self._extra("aligned_kept.xmd")
        if os.path.exists(kept):
            k = self._createSetOfParticles(suffix="kept")
            fill_particles(k, inp, read_metadata(kept))
            outputs["outputParticlesKept"] = k
        self._defineOutputs(**outputs)
        for o in outputs.values():
            self._defineSourceRelation(self.inputParticles, o)

    def _validate(self):
        errors = []
        parts = self.inputParticles.get()
        if parts is not None and parts.getSize() == 0:
            errors.append("the input particle set is empty")
        from ..core.nma import parse_mode_list
        from ..errors import InputError
        try:
            wanted = parse_mode_list(self.modeList.get())
        except InputError as e:
            return errors + [str(e)]
        modes = self.inputModes.get()
        if modes is not None:
            have = {os.path.basename(m.getModeFile()).split(".")[-1] for m in modes}
            missing = [w for w in wanted if str(w) not in have]
            if missing:
                errors.append(f"modes {missing} are not in the normal modes set")
        return errors

    def _summary(self):
        if not hasattr(self, "outputParticles"):
            return ["Not run yet."]
        s = [f"{self.outputParticles.getSize()} particles aligned with modes "
             f"{self.modeList.get()}."]
        if hasattr(self, "outputParticlesKept"):
            s.append(f"{self.outputParticlesKept.getSize()} kept after the Mahalanobis filter.")
        return s

    def _methods(self):
        return ["Particles were aligned with the reference and its normal modes by HEMNMA "
                "[Jin2014, Harastani2020], embedded in PyTorch."]

"""Local HEMNMA refinement started from the particles' current poses and
amplitudes (e.g. the network's predictions): HEMNMA without its global search."""
import pyworkflow.protocol.params as params

from ..stages import refine as stage
from .protocol_align import DeepHEMNMAProtAlign


class DeepHEMNMAProtRefine(DeepHEMNMAProtAlign):
    """Refines each particle's normal-mode amplitudes, Euler angles and shifts
    by HEMNMA's continuous local optimisation, started from the values the
    particles carry (the predict protocol's output, or an alignment's),
    without HEMNMA's global search. Outputs as the HEMNMA alignment protocol:
    particles with _xmipp_nmaDisplacements, _xmipp_cost and the projection
    alignment, and those kept by the Mahalanobis filter."""
    _label = "refine (local HEMNMA)"
    _formFields = {**{k: v for k, v in DeepHEMNMAProtAlign._formFields.items()
                      if k not in ("n_candidates", "coarse_iters", "fine_iters", "from_poses",
                                   "cone", "shift_window", "local_candidates")},
                   "refine_coarse_iters": "coarseIters", "refine_fine_iters": "fineIters"}
    _flagNames = {"use_ctf": "--no-ctf"}

    def _defineParams(self, form):
        d = stage.Config()
        self._addInputParams(
            form, d, "Particles with a projection alignment and normal-mode amplitudes "
            "(_xmipp_nmaDisplacements), e.g. the output of the predict or the HEMNMA alignment "
            "protocol: the starting values. Particles with an alignment but no amplitudes "
            "start from zero amplitudes (the HEMNMA alignment protocol started from their "
            "poses also searches the amplitudes).",
            "Normal modes of the reference; the modes of the mode list are used, one per "
            "amplitude of the particles.", "HEMNMA numbers of the particles' amplitudes, e.g. 7-9.")
        form.addSection("Refinement")
        form.addParam("coarseIters", params.IntParam, default=d.refine_coarse_iters,
                      label="Coarse-level iterations",
                      help="Optimisation steps (Adam) at the coarse (downscaled) level first; "
                           "0: none (about 15 % faster, but fails more often from starting "
                           "angular errors beyond ~5 deg).")
        form.addParam("fineIters", params.IntParam, default=d.refine_fine_iters,
                      validators=[params.Positive], label="Fine-level iterations",
                      help="Optimisation steps at the finer levels, up to the full size.")
        self._addOutlierAndComputeParams(form, d)

    def _insertAllSteps(self):
        self._insertFunctionStep(self.refineStep)
        self._insertFunctionStep(self.createOutputStep)

    def _config(self, particles_file=None, modes_folder=None, device="auto"):
        """The refine stage's config from the form (files given when running)."""
        return stage.Config(**self._sharedConfig(particles_file, modes_folder, device),
                            refine_coarse_iters=self.coarseIters.get(),
                            refine_fine_iters=self.fineIters.get())

    def _stageOutputs(self):
        return stage.Outputs(self._extra("refined.xmd"))

    def _validate(self):
        errors = DeepHEMNMAProtAlign._validate(self)
        parts = self.inputParticles.get()
        if parts is None or parts.getSize() == 0:
            return errors
        first = parts.getFirstItem()
        if hasattr(first, "_xmipp_nmaDisplacements") and not errors:
            from ..core.nma import parse_mode_list
            k, m = len(first._xmipp_nmaDisplacements), len(parse_mode_list(self.modeList.get()))
            if k != m:
                errors.append(f"the particles have {k} amplitudes but the mode list "
                              f"{self.modeList.get()} names {m} modes")
        return errors

    def _poseErrors(self, parts):
        """The refinement starts from the particles' alignment."""
        if not parts.hasAlignmentProj():
            return ["the particles have no projection alignment (angles and shifts)"]
        return []

    def refineStep(self):
        parts = self.inputParticles.get()
        if not hasattr(parts.getFirstItem(), "_xmipp_nmaDisplacements"):
            self.info("The particles carry no normal-mode amplitudes: they start at zero.")
        self._runOnInput(stage, "the refinement")

    def _summary(self):
        if not hasattr(self, "outputParticles"):
            return ["Not run yet."]
        s = [f"{self.outputParticles.getSize()} particles refined (local HEMNMA) with modes "
             f"{self.modeList.get()}."]
        if hasattr(self, "outputParticlesKept"):
            s.append(f"{self.outputParticlesKept.getSize()} kept after the Mahalanobis filter.")
        return s

    def _methods(self):
        return ["The particles' amplitudes, angles and shifts were refined from their "
                "starting values by HEMNMA's local continuous optimisation ([Jin2014]), "
                "embedded in PyTorch, without its global search."]

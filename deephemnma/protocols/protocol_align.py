"""HEMNMA alignment (Stage 1) embedded in PyTorch."""
import os

import pyworkflow.protocol.params as params
from pwem.objects import SetOfParticles

from ..stages import align as stage
from .base import DeepHEMNMABase
from .convert import fill_particles

#: the form's "Start from the particles' poses" choices
FROM_POSES_AUTO, FROM_POSES_YES, FROM_POSES_NO = range(3)
FROM_POSES_CHOICES = ["when they carry an alignment", "yes", "no (global search)"]


class DeepHEMNMAProtAlign(DeepHEMNMABase):
    """Elastic and rigid-body alignment of particle images with normal modes:
    for each image, the mode amplitudes, Euler angles and shifts, and a cost.
    The output particles carry _xmipp_nmaDisplacements, _xmipp_cost and the
    projection alignment as ContinuousFlex's HEMNMA writes them."""
    _label = "HEMNMA alignment"
    _possibleOutputs = {"outputParticles": SetOfParticles, "outputParticlesKept": SetOfParticles}
    _formFields = {
        "particles": "inputParticles", "modes": "inputModes", "structure": "inputReference",
        "mode_list": "modeList", "images_flipped": "imagesFlipped",
        "use_ctf": "the particles' CTF", "pixel_size": "the particles' pixel size",
        "outlier_threshold": "outlierThreshold", "out": "the output",
        "angular_step": "angularStep", "max_shift": "maxShift", "n_candidates": "candidates",
        "coarse_iters": "coarseIters", "fine_iters": "fineIters", "threads": "numberOfThreads",
        "atom_model": "atomModel", "b_factor": "bFactor", "from_poses": "fromPoses",
        "cone": "cone", "shift_window": "shiftWindow", "local_candidates": "localCandidates",
        "local_coarse_iters": "localCoarseIters", "local_fine_iters": "localFineIters",
        "search_pairs": "searchPairs", "amplitude_candidates": "amplitudeCandidates",
        "fine_candidates": "fineCandidates", "downscale": "downscale",
        "pose_sigma": "poseSigma"}
    _flagNames = {"n_candidates": "--candidates", "use_ctf": "--no-ctf"}

    # --------------------------- DEFINE param functions ----------------------
    def _defineParams(self, form):
        d = stage.Config()
        self._addInputParams(
            form, d, "Typically a random subset (the training set of DeepHEMNMA).",
            "Normal modes of the reference (ours or ContinuousFlex's); the modes of the mode "
            "list are used.", "HEMNMA numbers, e.g. 7-9 or 7,8,11.")
        form.addSection("Search")
        form.addParam("fromPoses", params.EnumParam, choices=FROM_POSES_CHOICES,
                      default=FROM_POSES_AUTO, display=params.EnumParam.DISPLAY_HLIST,
                      label="Start from the particles' poses",
                      help="Particles imported with a consensus refinement's alignment "
                           "(RELION, cryoSPARC, Xmipp) carry poses a few degrees off: the "
                           "orientations are then searched within the cone below around each "
                           "particle's, the shifts within the shift window around its own, "
                           "the amplitudes as in the global search, with the pose prior below "
                           "(measured from starting errors of 2-5 deg: 3.5-4.2x faster than "
                           "the global search, amplitudes as accurate). "
                           "Default: when the particles carry a projection alignment; no: "
                           "the global search.")
        form.addParam("cone", params.FloatParam, default=d.cone,
                      condition=f"fromPoses != {FROM_POSES_NO}", label="Cone (deg)",
                      help="Orientations are searched within this angle of each particle's "
                           "(more than 0, at most 180).")
        form.addParam("shiftWindow", params.FloatParam, default=d.shift_window,
                      condition=f"fromPoses != {FROM_POSES_NO}", label="Shift window (Å)",
                      help="Shifts are searched within this distance (per axis) of each "
                           "particle's.")
        form.addParam("poseSigma", params.FloatParam, default=d.pose_sigma,
                      condition=f"fromPoses != {FROM_POSES_NO}",
                      validators=[params.GE(0, "Pose prior must be 0 or more")],
                      label="Pose prior (deg)",
                      help="Each orientation is kept near the particle's own by a Gaussian "
                           "prior whose RMS angle is this, weighed against the image (a noisy "
                           "image leans on its pose, a clear one on itself): the expected "
                           "error of the poses, e.g. the consensus refinement's angular "
                           "accuracy. 0: no prior "
                           "(the images alone decide within the cone; at low SNR a few "
                           "percent of the particles then drift far from poses that were "
                           "right).")
        form.addParam("localCandidates", params.IntParam, default=d.local_candidates,
                      condition=f"fromPoses != {FROM_POSES_NO}",
                      expertLevel=params.LEVEL_ADVANCED, label="Local candidates refined",
                      help="Best amplitudes of the local search (each at its best orientation "
                           "and shift) refined continuously at the coarse level; the best one "
                           "is then refined at full size.")
        form.addParam("localCoarseIters", params.IntParam, default=d.local_coarse_iters,
                      condition=f"fromPoses != {FROM_POSES_NO}", validators=[params.Positive],
                      expertLevel=params.LEVEL_ADVANCED, label="Local coarse iterations",
                      help="Levenberg-Marquardt iterations of the local candidates at the "
                           "coarse level (the first two thirds on low-passed images).")
        form.addParam("localFineIters", params.IntParam, default=d.local_fine_iters,
                      condition=f"fromPoses != {FROM_POSES_NO}", validators=[params.Positive],
                      expertLevel=params.LEVEL_ADVANCED, label="Local fine iterations",
                      help="Levenberg-Marquardt iterations of the best local candidate at each "
                           "finer level (full size last).")
        form.addParam("angularStep", params.FloatParam, default=d.angular_step,
                      validators=[params.Positive], label="Global angular step (deg)",
                      help="Orientation sampling of the global search (degrees, at most 90): "
                           "smaller is more thorough and slower.")
        form.addParam("maxShift", params.FloatParam, default=d.max_shift, label="Max shift (Å)",
                      help="Half-range of the global shift search (Å).")
        form.addParam("candidates", params.IntParam, default=d.n_candidates,
                      validators=[params.Positive], label="Candidates refined",
                      expertLevel=params.LEVEL_ADVANCED,
                      help="Number of best poses of the global search (with distinct "
                           "orientations) refined continuously at the coarse level; the best "
                           "one is then refined at full size.")
        form.addParam("searchPairs", params.IntParam, default=d.search_pairs,
                      label="Two-mode references", expertLevel=params.LEVEL_ADVANCED,
                      help="The global search also compares the images with the reference "
                           "deformed along two modes at once (at most this many of these "
                           "references; 0: none). With amplitude candidates 3 and fine "
                           "candidates 2, set to 12: at SNR 0.1 (64 px, modes 7-9) fewer "
                           "misses (benchmarks/bench_lowsnr.py).")
        form.addParam("amplitudeCandidates", params.IntParam, default=d.amplitude_candidates,
                      validators=[params.Positive], label="Amplitude candidates",
                      expertLevel=params.LEVEL_ADVANCED,
                      help="The best candidate's projection direction is refined from this "
                           "many of its best amplitudes (1: only its own).")
        form.addParam("fineCandidates", params.IntParam, default=d.fine_candidates,
                      validators=[params.Positive], label="Fine candidates",
                      expertLevel=params.LEVEL_ADVANCED,
                      help="Best candidates of the coarse level refined at full size.")
        form.addParam("coarseIters", params.IntParam, default=d.coarse_iters,
                      validators=[params.Positive],
                      expertLevel=params.LEVEL_ADVANCED, label="Coarse-level iterations",
                      help="Optimisation steps (Adam) of amplitudes, angles and shifts at the "
                           "coarse (downscaled) level, per candidate.")
        form.addParam("fineIters", params.IntParam, default=d.fine_iters,
                      validators=[params.Positive],
                      expertLevel=params.LEVEL_ADVANCED, label="Fine-level iterations",
                      help="Optimisation steps at the finer levels, up to the full image "
                           "size.")
        self._addOutlierAndComputeParams(form, d)

    @staticmethod
    def _addInputParams(form, d, particles_help, modes_help, mode_list_help):
        """The Input section align and refine share (defaults from the stage
        config ``d``)."""
        form.addSection("Input")
        form.addParam("inputParticles", params.PointerParam, pointerClass="SetOfParticles",
                      label="Particles", important=True, help=particles_help)
        form.addParam("inputModes", params.PointerParam, pointerClass="SetOfNormalModes",
                      label="Normal modes", help=modes_help)
        form.addParam("inputReference", params.PointerParam, pointerClass="AtomStruct",
                      label="Reference", help="The structure the modes were computed on.")
        form.addParam("modeList", params.StringParam, default=d.mode_list, label="Modes",
                      help=mode_list_help)
        form.addParam("imagesFlipped", params.BooleanParam, default=d.images_flipped,
                      label="Images already phase-flipped?",
                      help="Yes: the images are already CTF phase-flipped (only |CTF| is "
                           "applied to the reference projections). No: they are phase-flipped "
                           "here. Used only when the particles have a CTF: particles without "
                           "one are aligned without CTF correction (the log says which).")
        from ..core.scattering import ATOM_MODELS
        form.addParam("atomModel", params.EnumParam, choices=list(ATOM_MODELS),
                      default=ATOM_MODELS.index(d.atom_model), label="Atom model",
                      expertLevel=params.LEVEL_ADVANCED,
                      help="Atoms as projected: gaussian (equal Gaussians of 1 Å, weight Z), "
                           "scattering (one Gaussian per element fitted to its electron "
                           "scattering factor), scattering5 (its five Gaussians; slower).")
        form.addParam("bFactor", params.StringParam, default=str(d.b_factor),
                      label="B-factor (Å²)", expertLevel=params.LEVEL_ADVANCED,
                      help="Widens every atom by exp(-B s²): a number >= 0, or auto (estimated "
                           "from the particles).")
        form.addParam("downscale", params.IntParam, default=d.downscale,
                      label="Downscale images to (px)",
                      help="Align the images Fourier-downscaled to this box (even, at least "
                           f"{stage.MIN_DOWNSCALE} px, not larger than the images; 0: full "
                           "size), e.g. 64-128 px for 256 px particles: much faster. The "
                           "output shifts are in the original images' pixels.")

    def _addOutlierAndComputeParams(self, form, d):
        form.addParam("outlierThreshold", params.FloatParam, default=d.outlier_threshold,
                      label="Mahalanobis threshold",
                      help="Images whose amplitudes are farther are left out of the "
                           "outputParticlesKept set (the paper: 3.2; 0 to disable).")
        self._addComputeParams(form, threads=2)

    # --------------------------- INSERT steps functions ----------------------
    def _insertAllSteps(self):
        self._insertFunctionStep(self.alignStep)
        self._insertFunctionStep(self.createOutputStep)

    def _config(self, particles_file=None, modes_folder=None, device="auto"):
        """The align stage's config from the form (files given when running)."""
        return stage.Config(
            **self._sharedConfig(particles_file, modes_folder, device),
            angular_step=self.angularStep.get(), max_shift=self.maxShift.get(),
            n_candidates=self.candidates.get(), coarse_iters=self.coarseIters.get(),
            fine_iters=self.fineIters.get(), from_poses=self._fromPoses(),
            cone=self.cone.get(), shift_window=self.shiftWindow.get(),
            local_candidates=self.localCandidates.get(),
            local_coarse_iters=self.localCoarseIters.get(),
            local_fine_iters=self.localFineIters.get(), pose_sigma=self.poseSigma.get(),
            search_pairs=self.searchPairs.get(),
            amplitude_candidates=self.amplitudeCandidates.get(),
            fine_candidates=self.fineCandidates.get())

    def _fromPoses(self):
        """Whether the alignment starts from the particles' poses: the form's
        choice; by default, when the input particles carry a projection
        alignment."""
        choice = self.fromPoses.get()
        if choice == FROM_POSES_AUTO:
            parts = self.inputParticles.get()
            return bool(parts is not None and parts.hasAlignmentProj())
        return choice == FROM_POSES_YES

    def _sharedConfig(self, particles_file, modes_folder, device):
        """The config fields align and refine share, from the form."""
        parts = self.inputParticles.get()
        ref = self.inputReference.get()
        return dict(
            particles=particles_file, modes=modes_folder,
            structure=ref.getFileName() if ref is not None else None,
            mode_list=self.modeList.get(),
            pixel_size=parts.getSamplingRate() if parts is not None else None,
            out=self._stageOutputs().particles, images_flipped=self.imagesFlipped.get(),
            # the CTF is used when the particles have one
            use_ctf=bool(parts is not None and parts.hasCTF()),
            outlier_threshold=self.outlierThreshold.get(), device=device,
            downscale=self.downscale.get(),
            # CPU worker threads: the form's Threads
            threads=max(1, int(self.numberOfThreads.get() or 1)),
            atom_model=self.getEnumText("atomModel"),
            b_factor=stage.parse_b_factor(self.bFactor.get()))

    def _stageOutputs(self):
        return stage.Outputs(self._extra("aligned.xmd"))

    # --------------------------- STEPS functions -----------------------------
    def alignStep(self):
        if self._fromPoses():
            self.info(f"Starting from the particles' poses: orientations searched within "
                      f"{self.cone.get():g} deg of each particle's, shifts within "
                      f"{self.shiftWindow.get():g} Å of its own, amplitudes as in the global "
                      f"search; " + (f"a Gaussian prior of {self.poseSigma.get():g} deg keeps "
                                     f"each orientation near the particle's." if
                                     self.poseSigma.get() else "no prior on the orientations."))
        else:
            self.info("Global orientation and shift search (the particles' poses, if any, "
                      "are not used).")
        self._runOnInput(stage, "HEMNMA alignment")

    def _runOnInput(self, stage_module, what):
        """Write the input particles and modes where the stage reads them and
        run it (several GPUs: one process per GPU under torchrun,
        DeepHEMNMABase._runStage); the log says whether the CTF is used."""
        parts = self.inputParticles.get()
        self._logCtf(parts, what, bool(self.imagesFlipped.get()))
        self._writeParticles(parts, "input.xmd")
        modes_dir = self._modesFolder(self.inputModes.get(),
                                      self.inputReference.get().getFileName())
        self._runStage(stage_module, self._config(self._extra("input.xmd"), modes_dir,
                                                  self._device()))

    def createOutputStep(self):
        from ..io.metadata import read_metadata
        inp = self.inputParticles.get()
        out = self._createSetOfParticles()
        files = self._stageOutputs()
        fill_particles(out, inp, read_metadata(files.particles))
        outputs = {"outputParticles": out}
        kept = files.kept
        if os.path.exists(kept):
            k = self._createSetOfParticles(suffix="kept")
            fill_particles(k, inp, read_metadata(kept))
            outputs["outputParticlesKept"] = k
        self._defineOutputs(**outputs)
        for o in outputs.values():
            self._defineSourceRelation(self.inputParticles, o)

    # --------------------------- INFO functions ------------------------------
    def _validate(self):
        errors = []
        parts = self.inputParticles.get()
        if parts is None:           # pyworkflow says so
            return errors
        if parts.getSize() == 0:
            errors.append("the input particle set is empty")
        errors += self._poseErrors(parts)
        errors += self._configErrors(self._config)
        if not errors and parts.getXDim():
            from ..errors import InputError
            try:                     # the images' box is known from the set
                stage.check_downscale(self.downscale.get(), parts.getXDim())
            except InputError as e:
                errors.append(self._formMessage(str(e)))
        if errors:
            return errors
        from ..core.nma import mode_number, parse_mode_list
        wanted = parse_mode_list(self.modeList.get())
        modes = self.inputModes.get()
        if modes is not None:
            have = {mode_number(m.getModeFile()) for m in modes}
            missing = [w for w in wanted if w not in have]
            if missing:
                errors.append(f"modes {missing} are not in the normal modes set")
        return errors

    def _poseErrors(self, parts):
        """Errors for particles without the poses the form asks to start from."""
        if self.fromPoses.get() == FROM_POSES_YES and not parts.hasAlignmentProj():
            return ["the particles have no projection alignment: set *Start from the "
                    "particles' poses* to no or to when they carry an alignment"]
        return []

    def _summary(self):
        if not hasattr(self, "outputParticles"):
            return ["Not run yet."]
        how = "from their poses (local search)" if self._fromPoses() else "(global search)"
        s = [f"{self.outputParticles.getSize()} particles aligned {how} with modes "
             f"{self.modeList.get()}."]
        if hasattr(self, "outputParticlesKept"):
            s.append(f"{self.outputParticlesKept.getSize()} kept after the Mahalanobis filter.")
        return s

    def _methods(self):
        return ["Particles were aligned with the reference and its normal modes by HEMNMA "
                "([Jin2014]; [Harastani2020]), embedded in PyTorch."]

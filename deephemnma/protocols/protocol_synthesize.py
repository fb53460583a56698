"""Synthetic particles with ground truth (the paper's data synthesis)."""
import pyworkflow.protocol.params as params
from pwem.objects import SetOfParticles

from ..stages import simulate as stage
from .base import DeepHEMNMABase
from .convert import GT_ATTRS


class DeepHEMNMAProtSynthesize(DeepHEMNMABase):
    """Synthesize particle images of a reference deformed along normal modes
    (helix, uniform or clustered amplitudes), uniformly oriented, shifted, with
    CTF and noise. The ground truth is stored twice on each particle: as its
    alignment and _xmipp_nmaDisplacements (usable as labels) and as
    _deephemnma_gt* attributes (kept through later protocols for evaluation).
    With a consensus pose error, the alignment holds poses that far off the
    truth instead (as a consensus refinement would give them); the
    _deephemnma_gt* attributes keep the truth."""
    _label = "synthesize particles"
    _possibleOutputs = {"outputParticles": SetOfParticles}
    _formFields = {
        "structure": "inputReference", "modes": "inputModes", "mode_list": "modeList",
        "out": "the output folder", "n": "numberOfImages", "box": "box",
        "pixel_size": "samplingRate", "law": "law", "snr": "snr", "snr_at_render": "snrAtRender",
        "defocus": "defocus", "seed": "seed", "consensus_angle": "consensusAngle",
        "consensus_shift": "consensusShift"}
    _flagNames = {"n": "--number"}
    _formPhrases = {"--consensus-error angle": "consensusAngle",
                    "--consensus-error shift": "consensusShift"}

    # --------------------------- DEFINE param functions ----------------------
    def _defineParams(self, form):
        d = stage.Config()
        form.addSection("Input")
        form.addParam("inputModes", params.PointerParam, pointerClass="SetOfNormalModes",
                      label="Normal modes", important=True,
                      help="The normal modes of the reference (the normal mode analysis "
                           "protocol's outputModes); the images are deformed along the modes "
                           "of the mode list.")
        form.addParam("inputReference", params.PointerParam, pointerClass="AtomStruct",
                      label="Reference (as used for the modes)",
                      help="The reference.pdb output of the normal mode protocol.")
        form.addParam("modeList", params.StringParam, default=d.mode_list, label="Modes",
                      help="HEMNMA numbers of the modes the images are deformed along, e.g. "
                           "7-9 or 7,8,11 (the helix law needs exactly 3 modes).")
        form.addParam("law", params.EnumParam, choices=list(stage.LAWS),
                      default=stage.LAWS.index(d.law), label="Amplitude law",
                      help="helix: the paper's q7=-200r, q8=200 sin(pi r), q9=200 cos(pi r).")
        form.addParam("numberOfImages", params.IntParam, default=d.n, label="Images",
                      validators=[params.Positive],
                      help="Number of particle images to synthesize.")
        # the form's sampling and noise defaults are the paper's downscaled 64 px
        # protocol (the command's are its 128 px one)
        form.addParam("box", params.IntParam, default=64, label="Box (px)",
                      help="Size of the output images in pixels (even, at least 16).")
        form.addParam("samplingRate", params.FloatParam, default=1.3, label="Pixel size (Å)",
                      validators=[params.Positive],
                      help="Pixel size of the output images (Å/px). The defaults (64 px at "
                           "1.3 Å/px) are the paper's downscaled images.")
        form.addParam("snr", params.FloatParam, default=d.snr, label="SNR",
                      help="Signal variance / noise variance; 0 for no noise.")
        form.addParam("snrAtRender", params.BooleanParam, default=d.snr_at_render,
                      label="SNR before downscaling (the paper's)?",
                      help="Yes: as in the paper, the images are rendered at 0.325 Å/px, the "
                           "noise is added there at this SNR, and the images are then "
                           "downscaled to the pixel size asked for (which averages the noise: "
                           "SNR 0.1 becomes ~0.4 at 0.65 Å/px, ~1.6 at 1.3 Å/px). No: the "
                           "output images themselves have this SNR (rendered at 2x).")
        form.addParam("defocus", params.FloatParam, default=d.defocus, label="Defocus (Å)",
                      help="Underfocus; 0 for no CTF.")
        form.addParam("seed", params.IntParam, default=d.seed, label="Random seed",
                      expertLevel=params.LEVEL_ADVANCED,
                      help="Seed of the random draws (amplitudes, orientations, shifts, "
                           "noise): the same seed and options give the same images.")
        form.addParam("consensusAngle", params.FloatParam, default=d.consensus_angle,
                      label="Consensus pose error: rotation (deg)",
                      help="0: the particles' alignment is their true pose. More than 0 "
                           "(at most 180): the alignment holds the poses turned about random "
                           "axes by this RMS angle, as a consensus refinement gives them (e.g. "
                           "3), to align them from their poses; the truth stays in the "
                           "_deephemnma_gt* attributes.")
        form.addParam("consensusShift", params.FloatParam, default=d.consensus_shift,
                      label="Consensus pose error: shift (Å)",
                      help="RMS offset of the alignment's shifts from the true ones (e.g. "
                           "0.5), with the rotation above; 0 and a rotation of 0: true "
                           "poses.")
        self._addComputeParams(form, threads=2)

    # --------------------------- INSERT steps functions ----------------------
    def _insertAllSteps(self):
        self._insertFunctionStep(self.simulateStep)
        self._insertFunctionStep(self.createOutputStep)

    def _config(self, modes_dir=None, device="cpu"):
        """The simulate stage's config from the form (modes_dir: the modes
        written for the stage; None while validating)."""
        ref = self.inputReference.get()
        snr = self.snr.get()
        defocus = self.defocus.get()
        return stage.Config(
            structure=ref.getFileName() if ref is not None else None, modes=modes_dir,
            mode_list=self.modeList.get(), out=self._extra("data"),
            n=self.numberOfImages.get(), box=self.box.get(),
            pixel_size=self.samplingRate.get(), law=stage.LAWS[self.law.get()],
            noise=snr != 0, snr=snr if snr != 0 else stage.Config.snr,
            snr_at_render=self.snrAtRender.get(), ctf=defocus != 0,
            defocus=defocus if defocus != 0 else stage.Config.defocus,
            seed=self.seed.get(), consensus_angle=self.consensusAngle.get(),
            consensus_shift=self.consensusShift.get(), device=device)

    def simulateStep(self):
        modes_dir = self._modesFolder(self.inputModes.get(),
                                      self.inputReference.get().getFileName())
        self._runHere(stage, self._config(modes_dir, self._device()))

    def createOutputStep(self):
        import pwem.objects as emobj
        import pyworkflow.object as pwobj
        from ..io.metadata import read_metadata
        from .convert import set_particle_values
        cfg, data = self._config(), stage.Outputs(self._extra("data"))
        t = read_metadata(data.particles)
        out = self._createSetOfParticles()
        out.setSamplingRate(cfg.pixel_size)
        acq = emobj.Acquisition(voltage=cfg.voltage, sphericalAberration=cfg.cs,
                                amplitudeContrast=cfg.q0, magnification=50000)
        out.setAcquisition(acq)
        has_ctf = "ctfDefocusU" in t
        out.setHasCTF(has_ctf)
        # not flipped: align, train and predict flip them from their CTF (the paper's chain)
        out.setIsPhaseFlipped(bool(cfg.phase_flip and has_ctf))
        out.setAlignmentProj()
        ang, sh, q = t.angles(), t.shifts(), t["nmaDisplacements"]
        pose, amplitudes = (ang, sh), q
        if cfg.consensus():          # a consensus refinement's poses, no amplitudes
            c = read_metadata(data.consensus)
            pose, amplitudes = (c.angles(), c.shifts()), [None] * len(t)
        for k in range(len(t)):
            p = emobj.Particle(location=(k + 1, data.stack))
            p.setObjId(int(t["itemId"][k]))
            p.setAcquisition(acq)
            if has_ctf:
                ctf = emobj.CTFModel(defocusU=float(t["ctfDefocusU"][k]),
                                     defocusV=float(t["ctfDefocusV"][k]),
                                     defocusAngle=float(t["ctfDefocusAngle"][k]))
                ctf.standardize()
                p.setCTF(ctf)
            set_particle_values(p, pose[0][k], pose[1][k], amplitudes[k])
            for name, val in zip(GT_ATTRS, (ang[k], sh[k], q[k])):
                setattr(p, name, pwobj.CsvList(pType=float))
                getattr(p, name).set([float(x) for x in val])
            out.append(p)
        self._defineOutputs(outputParticles=out)
        self._defineSourceRelation(self.inputModes, out)

    # --------------------------- INFO functions ------------------------------
    def _validate(self):
        from ..core.nma import mode_number, parse_mode_list
        errors = self._configErrors(self._config)
        if errors:
            return errors
        cfg = self._config()
        modes = self.inputModes.get()
        if modes is not None:
            have = {mode_number(m.getModeFile()) for m in modes}
            missing = [n for n in parse_mode_list(cfg.mode_list) if n not in have]
            if missing:
                return [f"modes {missing} are not in the normal modes set"]
        return []

    def _summary(self):
        if not hasattr(self, "outputParticles"):
            return ["Not run yet."]
        cfg = self._config()
        head = (f"{self.outputParticles.getSize()} synthetic particles, {cfg.box} px at "
                f"{cfg.pixel_size} Å/px")
        if not cfg.noise:
            lines = [head + ", no noise."]
        else:
            where = (f" at {cfg.pixel_size / cfg.rendering():.3g} Å/px before downscaling "
                     "(the paper's)." if cfg.snr_at_render else " in the output images.")
            lines = [head + f", SNR {cfg.snr}" + where]
        if cfg.consensus():
            lines.append(f"Alignment: consensus poses, {cfg.consensus_angle:g}° RMS rotation "
                         f"and {cfg.consensus_shift:g} Å RMS shift off the truth.")
        return lines

    def _methods(self):
        return ["Synthetic particles were generated following [Hamitouche2022]."]

    def _citations(self):
        return ["Hamitouche2022"]

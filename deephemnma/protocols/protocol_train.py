"""Train DeepHEMNMA's network (Stage 2)."""
import pyworkflow.protocol.params as params

from ..core.config import SCHEDULES
from ..objects import DeepHEMNMAModel
from ..stages import train as stage
from .base import DeepHEMNMABase


class DeepHEMNMAProtTrain(DeepHEMNMABase):
    """Train the ResNet-34 + MLP network on particles carrying normal-mode
    amplitudes and a projection alignment (from HEMNMA alignment, ours or
    ContinuousFlex's). Output: a trained model object and training curves.
    Continuing the protocol resumes the training after its last epoch."""
    _label = "train network"
    _possibleOutputs = {"outputModel": DeepHEMNMAModel}
    ARCHITECTURES = ["joint", "separate"]
    _formFields = {
        "particles": "inputParticles", "out": "the output folder",
        "pixel_size": "the particles' pixel size", "mode_list": "inputModes",
        "architecture": "architecture", "epochs": "epochs", "batch_size": "batchSize",
        "lr": "learningRate", "val_fraction": "valFraction",
        "test_fraction": "the test fraction (none here)", "augment": "augment",
        "schedule": "schedule", "augment_copies": "augmentCopies",
        "images_flipped": "the particles' phase-flipped flag", "mahalanobis": "mahalanobis",
        "init_model": "initModel", "input_size": "inputSize", "dropout": "dropout",
        "coord_channels": "coordChannels", "patience": "patience", "pose_input": "poseInput",
        "structure": "inputReference", "modes": "inputModes",
        "consensus": "consensusParticles", "trunk": "trunk",
        "selection": "the reference's heavy atoms"}
    TRUNKS = ["resnet34", "resnet18"]

    # --------------------------- DEFINE param functions ----------------------
    def _defineParams(self, form):
        d = stage.Config()
        form.addSection("Input")
        form.addParam("inputParticles", params.PointerParam, pointerClass="SetOfParticles",
                      label="Particles with NMA labels", important=True,
                      help="Particles carrying normal-mode amplitudes "
                           "(_xmipp_nmaDisplacements) and a projection alignment: the labels, "
                           "e.g. the output of HEMNMA alignment (ours or ContinuousFlex's). "
                           "With a CTF, the network sees their images phase-flipped (unless "
                           "the set says they are already); without one, as they are.")
        form.addParam("inputModes", params.PointerParam, pointerClass="SetOfNormalModes",
                      label="Normal modes", allowsNull=True,
                      help="Gives the mode numbers stored in the model (default 7, 8, ...).")
        form.addParam("initModel", params.PointerParam, pointerClass="DeepHEMNMAModel",
                      allowsNull=True, label="Fine-tune from", expertLevel=params.LEVEL_ADVANCED,
                      help="Optional: a trained DeepHEMNMA model to start from (same image "
                           "size, pixel size, modes and architecture).")

        form.addSection("Network")
        form.addParam("poseInput", params.BooleanParam, default=d.pose_input,
                      label="Read the images at their consensus poses?",
                      help="The pose-aware network: each image is read at its consensus pose "
                           "(moved by its shifts, turned by minus its psi) beside the "
                           "reference's projection there and its derivatives along the "
                           "modes, with the view direction; it learns the amplitudes and a "
                           "correction of the consensus pose. Prediction then needs "
                           "particles with an alignment (their consensus poses).")
        form.addParam("inputReference", params.PointerParam, pointerClass="AtomStruct",
                      condition="poseInput", allowsNull=True, label="Reference",
                      help="The structure the normal modes were computed on.")
        form.addParam("consensusParticles", params.PointerParam,
                      pointerClass="SetOfParticles", condition="poseInput", allowsNull=True,
                      label="Particles with the consensus poses",
                      help="The same particles with their consensus alignment (e.g. the "
                           "input of HEMNMA alignment), matched by id; empty: the labelled "
                           "particles' own poses.")
        form.addParam("trunk", params.EnumParam, choices=self.TRUNKS,
                      default=self.TRUNKS.index(d.trunk), label="Trunk",
                      expertLevel=params.LEVEL_ADVANCED,
                      help="resnet34: the paper's; resnet18: half the layers, faster.")
        form.addParam("architecture", params.EnumParam, choices=self.ARCHITECTURES,
                      default=self.ARCHITECTURES.index(d.architecture), label="Architecture",
                      help="joint: one network with three heads; separate: the paper's three "
                           "networks (amplitudes, orientation, shifts).")
        form.addParam("inputSize", params.IntParam, default=0, label="Network input size (px)",
                      expertLevel=params.LEVEL_ADVANCED,
                      help="0: the particles' box. Smaller: Fourier-downscale the images first "
                           "(faster; the 40-epoch CPU benchmark used 32 px for 64 px images).")
        form.addParam("dropout", params.FloatParam, default=d.dropout, label="MLP dropout",
                      expertLevel=params.LEVEL_ADVANCED, help="The paper used 0.5.")
        form.addParam("coordChannels", params.BooleanParam, default=d.coord_channels,
                      label="Coordinate channels", expertLevel=params.LEVEL_ADVANCED,
                      help="Add x/y coordinate channels to the image (helps reading shifts).")

        form.addSection("Training schedule")
        form.addParam("epochs", params.IntParam, default=d.epochs, label="Epochs",
                      validators=[params.Positive],
                      help="Passes over the training images; the learning-rate schedule (one "
                           "cycle) spans them.")
        form.addParam("batchSize", params.IntParam, default=d.batch_size, label="Batch size",
                      validators=[params.Positive], help="Images per training step.")
        form.addParam("learningRate", params.FloatParam, default=d.lr, label="Learning rate",
                      validators=[params.Positive], expertLevel=params.LEVEL_ADVANCED,
                      help="Peak learning rate of the one-cycle schedule (AdamW).")
        form.addParam("schedule", params.EnumParam, choices=list(SCHEDULES),
                      default=SCHEDULES.index(d.schedule), label="Optimiser schedule",
                      expertLevel=params.LEVEL_ADVANCED,
                      help="onecycle: AdamW with a one-cycle learning rate over the epochs. "
                           "paper: Adam with an L2 term (weight decay 1e-5) and the learning "
                           "rate divided by 10 every 80 epochs; the paper's run also used "
                           "Epochs 400, Batch size 2, Learning rate 1e-5 (set them above).")
        form.addParam("patience", params.IntParam, default=d.patience,
                      validators=[params.Positive],
                      label="Early-stopping patience (epochs)", expertLevel=params.LEVEL_ADVANCED,
                      help="Training stops after this many epochs without a lower validation "
                           "loss.")

        form.addSection("Validation and augmentation")
        form.addParam("valFraction", params.FloatParam, default=d.val_fraction,
                      validators=[params.Positive], label="Validation fraction",
                      help="Fraction of the images held out for validation: the model kept is "
                           "the one of the epoch with the lowest validation loss.")
        form.addParam("mahalanobis", params.FloatParam, default=0.0,
                      label="Mahalanobis filter", help="0: off; the paper used 3.2.")
        form.addParam("augment", params.BooleanParam, default=d.augment,
                      label="In-plane rotation augmentation",
                      help="Label-consistent: psi and shifts are rotated with the image.")
        form.addParam("augmentCopies", params.IntParam, default=d.augment_copies,
                      label="Augmented copies per image", expertLevel=params.LEVEL_ADVANCED,
                      help="Label-consistent copies of each training image, rotated in-plane "
                           "at random and shifted by up to 7 px (the paper's augmentation: 1).")
        self._addComputeParams(form, threads=2)

    # --------------------------- INSERT steps functions ----------------------
    def _insertAllSteps(self):
        self._insertFunctionStep(self.trainStep)
        self._insertFunctionStep(self.createOutputStep)

    def _modeNumbers(self):
        """HEMNMA numbers of the particles' amplitudes: the first flexible modes
        of the normal modes set (None without one: the stage's 7, 8, ...)."""
        from ..core.nma import flexible_numbers, mode_number
        modes, parts = self.inputModes.get(), self.inputParticles.get()
        if modes is None or parts is None or not parts.getSize():
            return None
        first = parts.getFirstItem()
        if not hasattr(first, "_xmipp_nmaDisplacements"):
            return None
        nums = [mode_number(m.getModeFile()) for m in modes.iterItems()]
        return flexible_numbers([n for n in nums if n is not None],
                                len(first._xmipp_nmaDisplacements), "the normal modes set")

    def trainOutputs(self):
        """The output folder's files (:class:`deephemnma.stages.train.Outputs`)."""
        return stage.Outputs(self._extra("model"))

    def _config(self, particles_file=None, device="auto", mode_list=None, modes_folder=None,
                consensus_file=None):
        """The train stage's Config from the form (particles_file: the input
        set written by trainStep; modes_folder, consensus_file: the pose-aware
        network's modes and consensus poses written by trainStep)."""
        parts, init = self.inputParticles.get(), self.initModel.get()
        pose, ref = bool(self.poseInput.get()), self.inputReference.get()
        return stage.Config(
            particles=particles_file, out=self.trainOutputs().folder,
            pixel_size=parts.getSamplingRate() if parts is not None else None,
            mode_list=mode_list, architecture=self.ARCHITECTURES[self.architecture.get()],
            epochs=self.epochs.get(), batch_size=self.batchSize.get(),
            lr=self.learningRate.get(), val_fraction=self.valFraction.get(),
            test_fraction=0.0, augment=bool(self.augment.get()),
            schedule=SCHEDULES[self.schedule.get()], augment_copies=self.augmentCopies.get(),
            # the network sees phase-flipped images: flipped from the CTF unless already
            images_flipped=bool(parts is not None and parts.isPhaseFlipped()),
            mahalanobis=self.mahalanobis.get() if self.mahalanobis.get() > 0 else None,
            init_model=init.getFileName() if init is not None else None,
            input_size=self.inputSize.get() or None, dropout=self.dropout.get(),
            coord_channels=bool(self.coordChannels.get()), patience=self.patience.get(),
            pose_input=bool(self.poseInput.get()), trunk=self.TRUNKS[self.trunk.get()],
            structure=ref.getFileName() if pose and ref is not None else None,
            modes=modes_folder, consensus=consensus_file, device=device)

    # --------------------------- STEPS functions -----------------------------
    def trainStep(self):
        parts = self.inputParticles.get()
        self._logCtf(parts, "training", parts.isPhaseFlipped())
        self._writeParticles(parts, "train.xmd", need_alignment=True)
        modes_folder = consensus = None
        if self.poseInput.get():
            self.info("The pose-aware network: each image read at its consensus pose (from "
                      + ("*Particles with the consensus poses*" if self.consensusParticles.get()
                         is not None else "the training particles' own alignment")
                      + ") beside the reference's projection there.")
            modes_folder = self._modesFolder(self.inputModes.get(),
                                             self.inputReference.get().getFileName())
            if self.consensusParticles.get() is not None:
                consensus = self._writeParticles(self.consensusParticles.get(),
                                                 "consensus.xmd", need_alignment=True)
        else:
            self.info("The paper's network: orientations and amplitudes from the images "
                      "alone (the particles' poses, if any, are not used).")
        # several GPUs: one process per GPU under torchrun (DeepHEMNMABase._runStage)
        self._runStage(stage, self._config(self._extra("train.xmd"), self._device(),
                                           self._modeNumbers(), modes_folder, consensus))

    def createOutputStep(self):
        from ..objects import DeepHEMNMAModel
        m = DeepHEMNMAModel(filename=self.trainOutputs().model)
        m.loadMeta()
        self._defineOutputs(outputModel=m)
        self._defineSourceRelation(self.inputParticles, m)

    # --------------------------- INFO functions ------------------------------
    def _validate(self):
        from ..errors import InputError
        parts, init = self.inputParticles.get(), self.initModel.get()
        errors = self._validateParticlesNma(parts, self.inputModes.get())
        errors += self._poseErrors()
        errors += self._configErrors(self._config)
        if errors or parts is None:
            return errors
        cfg = self._config()
        try:
            modes = self._modeNumbers()
            cfg.check_box(parts.getXDim())
            cfg.check_count(parts.getSize())
            if init is not None:
                stage.check_init_meta(
                    {"image_size": init.getImageSize(), "pixel_size": init.getSamplingRate(),
                     "mode_numbers": init.getModeNumbers() or None,
                     "architecture": init.getArchitecture()},
                    parts.getXDim(), pixel_size=parts.getSamplingRate(), mode_numbers=modes,
                    architecture=cfg.architecture, name="the model to fine-tune")
        except InputError as e:
            errors.append(self._formMessage(str(e)))
        return errors

    def _poseErrors(self):
        """Errors of the pose-aware network's fields (the stage's own checks
        need the files trainStep writes)."""
        if not self.poseInput.get():
            return []
        errors = []
        if self.inputModes.get() is None or self.inputReference.get() is None:
            errors.append("*Read the images at their consensus poses?* needs *Normal modes* "
                          "and *Reference*: the network projects the reference at the poses")
        cons = self.consensusParticles.get()
        if cons is not None and not cons.hasAlignmentProj():
            errors.append("*Particles with the consensus poses* have no projection "
                          "alignment: give particles carrying their consensus poses")
        return errors

    def _summary(self):
        if not hasattr(self, "outputModel"):
            return ["Not trained yet."]
        return [str(self.outputModel), f"Training curves: {self.trainOutputs().curves_png}"]

    def _methods(self):
        return ["A ResNet-34 [He2016] + MLP network was trained to predict normal-mode "
                "amplitudes, orientations (unit quaternions) and shifts [Hamitouche2022]."]

    def _citations(self):
        return ["Hamitouche2022", "He2016"]

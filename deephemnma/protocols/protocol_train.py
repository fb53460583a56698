"""Train DeepHEMNMA's network (Stage 2)."""
import os

import pyworkflow.protocol.params as params

from ..core.config import TrainConfig
from .base import DeepHEMNMABase, run_command
from .convert import particles_to_table


class DeepHEMNMAProtTrain(DeepHEMNMABase):
    """Train the ResNet-34 + MLP network on particles carrying normal-mode
    amplitudes and a projection alignment (from HEMNMA alignment, ours or
    ContinuousFlex's). Output: a trained model object and training curves."""
    _label = "train network"
    _possibleOutputs = {"outputModel": "DeepHEMNMAModel"}
    ARCHITECTURES = ["joint", "separate"]

    def _defineParams(self, form):
        d = TrainConfig()
        form.addSection("Input")
        form.addParam("inputParticles", params.PointerParam, pointerClass="SetOfParticles",
                      label="Particles with NMA labels", important=True)
        form.addParam("inputModes", params.PointerParam, pointerClass="SetOfNormalModes",
                      label="Normal modes", allowsNull=True,
                      help="Gives the mode numbers stored in the model (default 7, 8, ...).")
        form.addParam("architecture", params.EnumParam, choices=self.ARCHITECTURES,
                      default=self.ARCHITECTURES.index(d.architecture), label="Architecture",
                      help="joint: one network with three heads; separate: the paper's three "
                           "networks (amplitudes, orientation, shifts).")
        form.addParam("epochs", params.IntParam, default=d.epochs, label="Epochs")
        form.addParam("batchSize", params.IntParam, default=d.batch_size, label="Batch size")
        form.addParam("learningRate", params.FloatParam, default=d.lr, label="Learning rate",
                      expertLevel=params.LEVEL_ADVANCED)
        form.addParam("valFraction", params.FloatParam, default=d.val_fraction,
                      label="Validation fraction")
        form.addParam("augment", params.BooleanParam, default=False,
                      label="In-plane rotation augmentation",
                      help="Label-consistent: psi and shifts are rotated with the image.")
        form.addParam("mahalanobis", params.FloatParam, default=0.0,
                      label="Mahalanobis filter", help="0: off; the paper used 3.2.")
        form.addParam("initModel", params.PointerParam, pointerClass="DeepHEMNMAModel",
                      allowsNull=True, label="Fine-tune from", expertLevel=params.LEVEL_ADVANCED)
        form.addParam("inputSize", params.IntParam, default=0, label="Network input size (px)",
                      expertLevel=params.LEVEL_ADVANCED,
                      help="0: the particles' box. Smaller: Fourier-downscale the images first "
                           "(faster; the 40-epoch CPU benchmark used 32 px for 64 px images).")
        form.addParam("dropout", params.FloatParam, default=d.dropout, label="MLP dropout",
                      expertLevel=params.LEVEL_ADVANCED, help="The paper used 0.5.")
        form.addParam("coordChannels", params.BooleanParam, default=d.coord_channels,
                      label="Coordinate channels", expertLevel=params.LEVEL_ADVANCED,
                      help="Add x/y coordinate channels to the image (helps reading shifts).")
        form.addParam("patience", params.IntParam, default=d.patience,
                      label="Early-stopping patience (epochs)", expertLevel=params.LEVEL_ADVANCED)
        self._addComputeParams(form, threads=2)

    def _insertAllSteps(self):
        self._insertFunctionStep(self.trainStep)
        self._insertFunctionStep(self.createOutputStep)

    def _modeNumbers(self):
        from .base import _is_rigid
        modes = self.inputModes.get()
        k = len(self.inputParticles.get().getFirstItem()._xmipp_nmaDisplacements)
        if modes is None:
            return list(range(7, 7 + k))
        nums = [int(os.path.basename(m.getModeFile()).split(".")[-1]) for m in modes
                if not _is_rigid(m)]
        return nums[:k]

    def trainStep(self):
        from ..io.metadata import write_xmd
        parts = self.inputParticles.get()
        write_xmd(self._extra("train.xmd"), particles_to_table(parts, need_alignment=True))
        argv = ["train", "--particles", self._extra("train.xmd"), "--out", self._extra("model"),
                "--pixel-size", parts.getSamplingRate(),
                "--mode-list", ",".join(str(m) for m in self._modeNumbers()),
                "--architecture", self.ARCHITECTURES[self.architecture.get()],
                "--epochs", self.epochs.get(), "--batch-size", self.batchSize.get(),
                "--lr", self.learningRate.get(), "--val-fraction", self.valFraction.get(),
                "--test-fraction", 0.0, "--dropout", self.dropout.get(),
                "--patience", self.patience.get(), "--device", self._device()]
        if self.inputSize.get() > 0:
            argv += ["--input-size", self.inputSize.get()]
        if self.coordChannels.get():
            argv.append("--coord-channels")
        if os.path.exists(self._extra("model", "last.pt")):
            argv.append("--resume")
        if self.augment.get():
            argv.append("--augment")
        if self.mahalanobis.get() > 0:
            argv += ["--mahalanobis", self.mahalanobis.get()]
        if self.initModel.get() is not None:
            argv += ["--init-model", self.initModel.get().getFileName()]
        run_command(argv)

    def createOutputStep(self):
        from ..objects import DeepHEMNMAModel
        m = DeepHEMNMAModel(filename=self._extra("model", "model.pt"))
        m.loadMeta()
        self._defineOutputs(outputModel=m)
        self._defineSourceRelation(self.inputParticles, m)

    def _validate(self):
        errors = self._validateParticlesNma(self.inputParticles.get(), self.inputModes.get())
        parts = self.inputParticles.get()
        if parts is not None and parts.getSize() and parts.getSize() * 0.8 < self.batchSize.get():
            errors.append(f"{parts.getSize()} particles: too few for batch size "
                          f"{self.batchSize.get()}")
        size = self.inputSize.get()
        if size and parts is not None and parts.getSize() and (size > parts.getXDim() or size % 2):
            errors.append(f"network input size {size} must be even and <= the particles' "
                          f"box ({parts.getXDim()} px)")
        if not 0 <= self.dropout.get() < 1:
            errors.append(f"dropout must be in [0, 1), got {self.dropout.get()}")
        init = self.initModel.get()
        if init is not None and parts is not None and init.getImageSize():
            box = parts.getXDim()
            if box and box != init.getImageSize():
                errors.append(f"the model to fine-tune was trained on {init.getImageSize()} px "
                              f"images, these particles are {box} px")
        return errors

    def _summary(self):
        if not hasattr(self, "outputModel"):
            return ["Not trained yet."]
        return [str(self.outputModel), "Training curves: extra/model/curves.png"]

    def _methods(self):
        return ["A ResNet-34 [He2016] + MLP network was trained to predict normal-mode "
                "amplitudes, orientations (unit quaternions) and shifts [Hamitouche2022]."]

    def _citations(self):
        return ["Hamitouche2022", "He2016"]

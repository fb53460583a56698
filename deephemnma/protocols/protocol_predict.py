"""Predict parameters of new particles with a trained network (Stage 2, set 2)."""
import os

import pyworkflow.protocol.params as params
from pwem.objects import SetOfParticles

from .base import DeepHEMNMABase
from .convert import fill_particles


class DeepHEMNMAProtPredict(DeepHEMNMABase):
    """Infer normal-mode amplitudes, orientations and shifts of particles with a
    trained DeepHEMNMA model. Optionally merges the training particles (with
    their HEMNMA values) into the output, the paper's combined space."""
    _label = "predict"
    _possibleOutputs = {"outputParticles": SetOfParticles}
    _formFields = {"model": "inputModel", "particles": "inputParticles", "out": "the output",
                   "pixel_size": "the particles' pixel size", "rescale": "rescale",
                   "batch_size": "batchSize", "images_flipped": "the particles' phase-flipped flag"}

    # --------------------------- DEFINE param functions ----------------------
    def _defineParams(self, form):
        form.addSection("Input")
        form.addParam("inputModel", params.PointerParam, pointerClass="DeepHEMNMAModel",
                      label="Trained model", important=True,
                      help="A model from the train network protocol.")
        form.addParam("inputParticles", params.PointerParam, pointerClass="SetOfParticles",
                      label="Particles", important=True,
                      help="Particles to infer amplitudes, angles and shifts for (the same "
                           "physical pixel size as the training images; larger boxes are "
                           "downscaled, see below). With a CTF, their images are phase-flipped "
                           "as in training (unless the set says they are already); without "
                           "one, used as they are.")
        form.addParam("mergeParticles", params.PointerParam, pointerClass="SetOfParticles",
                      allowsNull=True, label="Merge with (optional)",
                      help="e.g. the HEMNMA-aligned training particles.")
        form.addParam("rescale", params.BooleanParam, default=True,
                      label="Downscale larger particles to the model's box",
                      help="Particles of the same physical size as the training images but "
                           "with more pixels are Fourier-cropped to the model's box; the "
                           "predicted shifts are returned in the particles' pixels.")
        form.addParam("batchSize", params.IntParam, default=256, label="Batch size",
                      validators=[params.Positive], expertLevel=params.LEVEL_ADVANCED,
                      help="Images per forward pass of the network (memory only: the results "
                           "do not depend on it).")
        self._addComputeParams(form, threads=2)

    # --------------------------- INSERT steps functions ----------------------
    def _insertAllSteps(self):
        self._insertFunctionStep(self.predictStep)
        self._insertFunctionStep(self.createOutputStep)

    def _config(self, device="auto"):
        """The predict stage's Config from the form (input.xmd: the input set,
        written by predictStep)."""
        from ..stages import predict
        m, parts = self.inputModel.get(), self.inputParticles.get()
        return predict.Config(
            model=m.getFileName() if m is not None else None,
            particles=self._extra("input.xmd"), out=self._extra("predicted.xmd"),
            pixel_size=parts.getSamplingRate() if parts is not None else None,
            rescale=bool(self.rescale.get()), batch_size=self.batchSize.get(),
            images_flipped=bool(parts is not None and parts.isPhaseFlipped()), device=device)

    # --------------------------- STEPS functions -----------------------------
    def predictStep(self):
        from ..stages import predict
        parts = self.inputParticles.get()
        self._logCtf(parts, "prediction", parts.isPhaseFlipped())
        self._writeParticles(parts, "input.xmd")
        self._runHere(predict, self._config(self._device()))

    def createOutputStep(self):
        from ..io.metadata import read_metadata
        out = self._createSetOfParticles()
        fill_particles(out, self.inputParticles.get(), read_metadata(self._extra("predicted.xmd")))
        merge = self.mergeParticles.get()
        if merge is not None:
            offset = max(p.getObjId() for p in out.iterItems()) if out.getSize() else 0
            for p in merge.iterItems(orderBy="id"):
                q = p.clone()
                q.setObjId(p.getObjId() + offset)
                out.append(q)
        self._defineOutputs(outputParticles=out)
        self._defineSourceRelation(self.inputParticles, out)

    # --------------------------- INFO functions ------------------------------
    def _validate(self):
        from ..errors import InputError
        errors = self._configErrors(self._config)
        m, parts = self.inputModel.get(), self.inputParticles.get()
        if parts is not None and parts.getSize() == 0:
            errors.append("the input particle set is empty")
        if m is not None and parts is not None and parts.getSize():
            from ..core.inference import input_scale
            try:
                input_scale(parts.getXDim(), parts.getSamplingRate(), m.getImageSize(),
                            m.getSamplingRate(), self.rescale.get())
            except InputError as e:
                errors.append(self._formMessage(str(e)))
            if not parts.hasAlignmentProj() and _reads_poses(m):
                errors.append("the model is a pose-aware network (trained with *Read the "
                              "images at their consensus poses?*): the input particles need "
                              "a projection alignment, their consensus poses")
        merge = self.mergeParticles.get()
        if merge is not None and merge.getSize():
            errors += [e for e in self._validateParticlesNma(merge) if "alignment" not in e]
        return errors


    def _summary(self):
        if not hasattr(self, "outputParticles"):
            return ["Not run yet."]
        lines = [f"{self.outputParticles.getSize()} particles with predicted parameters."]
        from ..io.metadata import count_rows
        from ..stages import predict
        rejected = predict.Outputs(self._extra("predicted.xmd")).rejected
        if os.path.exists(rejected):
            lines.append(f"{count_rows(rejected)} particle(s) left out (unusable values, images "
                         f"or predictions), listed in {rejected}.")
        return lines

    def _methods(self):
        return ["Parameters were predicted with the trained DeepHEMNMA network "
                "[Hamitouche2022]."]

    def _citations(self):
        return ["Hamitouche2022", "He2016"]


def _reads_poses(model):
    """The model object's file is a pose-aware network (False when unreadable:
    the stage then says what is wrong with the file)."""
    from ..core.models import load_model
    from ..errors import InputError
    try:
        return bool(load_model(model.getFileName())[1].get("pose_input", False))
    except (InputError, OSError):
        return False

"""Predict parameters of new particles with a trained network (Stage 2, set 2)."""
import os

import pyworkflow.protocol.params as params
from pwem.objects import SetOfParticles

from .base import DeepHEMNMABase, config_errors, run_stage
from .convert import fill_particles, particles_to_table


class DeepHEMNMAProtPredict(DeepHEMNMABase):
    """Infer normal-mode amplitudes, orientations and shifts of particles with a
    trained DeepHEMNMA model. Optionally merges the training particles (with
    their HEMNMA values) into the output, the paper's combined space."""
    _label = "predict"
    _possibleOutputs = {"outputParticles": SetOfParticles}

    def _defineParams(self, form):
        form.addSection("Input")
        form.addParam("inputModel", params.PointerParam, pointerClass="DeepHEMNMAModel",
                      label="Trained model", important=True,
                      help="A model from the train network protocol.")
        form.addParam("inputParticles", params.PointerParam, pointerClass="SetOfParticles",
                      label="Particles", important=True,
                      help="Particles to infer amplitudes, angles and shifts for (the same "
                           "physical pixel size as the training images; larger boxes are "
                           "downscaled, see below).")
        form.addParam("mergeParticles", params.PointerParam, pointerClass="SetOfParticles",
                      allowsNull=True, label="Merge with (optional)",
                      help="e.g. the HEMNMA-aligned training particles.")
        form.addParam("rescale", params.BooleanParam, default=True,
                      label="Downscale larger particles to the model's box",
                      help="Particles of the same physical size as the training images but "
                           "with more pixels are Fourier-cropped to the model's box; the "
                           "predicted shifts are returned in the particles' pixels.")
        form.addParam("batchSize", params.IntParam, default=256, label="Batch size",
                      expertLevel=params.LEVEL_ADVANCED,
                      help="Images per forward pass of the network (memory only: the results "
                           "do not depend on it).")
        self._addComputeParams(form, threads=2)

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

    def predictStep(self):
        from ..io.metadata import write_xmd
        from ..stages import predict
        write_xmd(self._extra("input.xmd"), particles_to_table(self.inputParticles.get()))
        run_stage(predict, self._config(self._device()))

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

    def _validate(self):
        from ..errors import InputError
        errors = config_errors(self._config)
        m, parts = self.inputModel.get(), self.inputParticles.get()
        if parts is not None and parts.getSize() == 0:
            errors.append("the input particle set is empty")
        if m is not None and parts is not None and parts.getSize():
            from ..core.inference import input_scale
            try:
                input_scale(parts.getXDim(), parts.getSamplingRate(), m.getImageSize(),
                            m.getSamplingRate(), self.rescale.get())
            except InputError as e:
                errors.append(str(e))
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

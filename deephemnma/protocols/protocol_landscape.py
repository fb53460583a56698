"""Conformational landscape (Stage 3): PCA, groups, animations, reconstructions."""
import os

import pyworkflow.protocol.params as params

from ..stages import fsc, landscape, model_map, reconstruct
from .base import DeepHEMNMABase, config_errors, run_stage
from .convert import fill_particles, particles_to_table

GROUPINGS = ["none", "split along axis", "expression", "k-means"]
SPLIT, EXPRESSION, KMEANS = 1, 2, 3
MIN_GROUP_IMAGES = 10       # smallest group reconstructed


class DeepHEMNMAProtLandscape(DeepHEMNMABase):
    """PCA of normal-mode amplitudes, a density plot of the landscape, groups
    of images (expression on the axes, quasi-uniform splits along an axis,
    k-means), one particle subset per group, animations of the reference
    along each axis, and optionally a 3D reconstruction per group from the
    particles' angles and shifts, with its FSC against the map of the group's
    centroid model."""
    _label = "conformational landscape"
    _possibleOutputs = {"outputParticles": "SetOfParticles"}

    def _defineParams(self, form):
        d = landscape.Config()
        form.addSection("Input")
        form.addParam("inputParticles", params.PointerParam, pointerClass="SetOfParticles",
                      label="Particles with amplitudes", important=True)
        form.addParam("inputModes", params.PointerParam, pointerClass="SetOfNormalModes",
                      allowsNull=True, label="Normal modes (for animations)",
                      help="With the reference: animations along each axis and the "
                           "centroid model of each group.")
        form.addParam("inputReference", params.PointerParam, pointerClass="AtomStruct",
                      allowsNull=True, label="Reference (for animations)")
        form.addParam("components", params.IntParam, default=d.components, label="Dimensions")
        form.addParam("grouping", params.EnumParam, choices=GROUPINGS, default=SPLIT,
                      label="Groups")
        form.addParam("splitAxis", params.IntParam, default=1, condition="grouping == 1",
                      label="Axis")
        form.addParam("minGroupSize", params.IntParam, default=900, condition="grouping == 1",
                      label="Minimum group size", help="The paper used 900 (Fig. 9).")
        form.addParam("expression", params.StringParam, default="PC1 > 0",
                      condition="grouping == 2", label="Expression",
                      help="e.g. 'PC1 > 100 and PC2 < 0'")
        form.addParam("kmeans", params.IntParam, default=4, condition="grouping == 3",
                      label="Clusters")
        form.addParam("reconstruct", params.BooleanParam, default=True,
                      label="Reconstruct each group?")
        form.addParam("imagesFlipped", params.BooleanParam, default=False,
                      condition="reconstruct", label="Images phase-flipped?")
        self._addComputeParams(form, threads=2)

    # ---- configs and outputs ---------------------------------------------
    def landscapeOutputs(self):
        """The landscape folder's files (:class:`deephemnma.stages.landscape.Outputs`)."""
        return landscape.Outputs(self._extra("landscape"))

    def _withReference(self):
        return self.inputModes.get() is not None and self.inputReference.get() is not None

    def _landscapeConfig(self, particles_file=None, modes_folder=None):
        """The landscape stage's config from the form (files given when running)."""
        g = self.grouping.get()
        ref = self.inputReference.get()
        return landscape.Config(
            particles=particles_file, out=self.landscapeOutputs().folder,
            components=self.components.get(),
            split=(self.splitAxis.get(), self.minGroupSize.get(), 0.02) if g == SPLIT else None,
            select=self.expression.get() if g == EXPRESSION else None,
            kmeans=self.kmeans.get() if g == KMEANS else None,
            min_group=2,    # the split has its own minimum; other groups: any size
            structure=ref.getFileName() if modes_folder and ref is not None else None,
            modes=modes_folder)

    def _reconstructConfig(self, group=1, device="auto"):
        """The reconstruct stage's config for one group."""
        parts = self.inputParticles.get()
        out = self.landscapeOutputs()
        return reconstruct.Config(
            particles=out.group(group), out=out.group_map(group),
            pixel_size=parts.getSamplingRate() if parts is not None else None,
            flipped=self.imagesFlipped.get(), min_images=MIN_GROUP_IMAGES, device=device)

    def _reconstructs(self):
        return bool(self.reconstruct.get()) and self.grouping.get() != 0

    # ---- steps --------------------------------------------------------------
    def _insertAllSteps(self):
        self._insertFunctionStep(self.landscapeStep)
        if self._reconstructs():
            self._insertFunctionStep(self.reconstructStep)
        self._insertFunctionStep(self.createOutputStep)

    def landscapeStep(self):
        from ..io.metadata import write_xmd
        write_xmd(self._extra("input.xmd"), particles_to_table(self.inputParticles.get()))
        modes_dir = None
        if self._withReference():
            modes_dir = self._modesFolder(self.inputModes.get(),
                                          self.inputReference.get().getFileName())
        run_stage(landscape, self._landscapeConfig(self._extra("input.xmd"), modes_dir))

    def reconstructStep(self):
        out = self.landscapeOutputs()
        ps = self.inputParticles.get().getSamplingRate()
        device = self._device()
        for k in out.groups():
            rec = run_stage(reconstruct, self._reconstructConfig(k, device))
            if os.path.exists(out.centroid(k)):
                # the map of the group's centroid model, and the FSC between the two
                run_stage(model_map, model_map.Config(
                    structure=out.centroid(k), out=out.centroid_map(k), box=rec.box,
                    pixel_size=ps, selection="all"))
                run_stage(fsc, fsc.Config(map1=out.group_map(k), map2=out.centroid_map(k),
                                          pixel_size=ps, png=out.fsc_png(k),
                                          json=out.fsc_json(k)))

    def createOutputStep(self):
        import pwem.objects as emobj
        from ..io.metadata import read_metadata
        inp = self.inputParticles.get()
        files = self.landscapeOutputs()
        out = self._createSetOfParticles()
        fill_particles(out, inp, read_metadata(files.landscape), with_alignment=False)
        outputs = {"outputParticles": out}
        for k in files.groups():
            sub = self._createSetOfParticles(suffix=f"group_{k:02d}")
            fill_particles(sub, inp, read_metadata(files.group(k)), with_alignment=False)
            outputs[f"outputGroup{k:02d}"] = sub
            if os.path.exists(files.group_map(k)):
                v = emobj.Volume(location=files.group_map(k))
                v.setSamplingRate(inp.getSamplingRate())
                outputs[f"outputVolume{k:02d}"] = v
        self._defineOutputs(**outputs)
        for o in outputs.values():
            self._defineSourceRelation(self.inputParticles, o)

    # ---- info ---------------------------------------------------------------
    def _validate(self):
        parts = self.inputParticles.get()
        if parts is None or parts.getSize() == 0:
            return ["the input particle set is empty"]
        errors = []
        first = parts.getFirstItem()
        if not hasattr(first, "_xmipp_nmaDisplacements"):
            errors.append("the particles carry no normal-mode amplitudes")
        elif self.components.get() > len(first._xmipp_nmaDisplacements):
            errors.append(f"{self.components.get()} dimensions: the particles have "
                          f"{len(first._xmipp_nmaDisplacements)} amplitudes")
        if (self.inputModes.get() is None) != (self.inputReference.get() is None):
            errors.append("the normal modes and the reference go together (give both for "
                          "animations, or neither)")
        errors += config_errors(self._landscapeConfig)
        if self._reconstructs():
            if not parts.hasAlignmentProj():
                errors.append("reconstruction needs particles with angles and shifts")
            errors += config_errors(self._reconstructConfig)
        if self.grouping.get() == SPLIT and parts.getSize() < self.minGroupSize.get():
            errors.append(f"{parts.getSize()} particles: fewer than one group of "
                          f"{self.minGroupSize.get()}")
        return errors

    def _summary(self):
        if not hasattr(self, "outputParticles"):
            return ["Not run yet."]
        import json
        files = self.landscapeOutputs()
        groups = files.groups()
        lines = [f"Landscape of {self.outputParticles.getSize()} particles; {len(groups)} "
                 f"group(s). Density plot: {files.density}"]
        for k in groups:
            if os.path.exists(files.fsc_json(k)):
                with open(files.fsc_json(k)) as fh:
                    r = json.load(fh)
                lines.append(f"group {k:02d}: FSC with its centroid model's map "
                             f"{r['res_0.5']:.2f} Å (0.5), {r['res_0.143']:.2f} Å (0.143)")
        return lines

    def _methods(self):
        return ["Normal-mode amplitudes were projected by PCA and groups of images were "
                "reconstructed [Jin2014, Hamitouche2022]."]


"""Conformational landscape (Stage 3): PCA, groups, animations, reconstructions."""
import glob
import os

import pyworkflow.protocol.params as params

from .base import DeepHEMNMABase, run_command
from .convert import fill_particles, particles_to_table


class DeepHEMNMAProtLandscape(DeepHEMNMABase):
    """PCA of normal-mode amplitudes, a density plot of the landscape, groups
    of images (expression on the axes, rectangle, quasi-uniform splits along an
    axis, k-means), one particle subset per group, animations of the reference
    along each axis, and optionally a 3D reconstruction per group from the
    particles' angles and shifts, with its FSC against the map of the group's
    centroid model."""
    _label = "conformational landscape"
    _possibleOutputs = {"outputParticles": "SetOfParticles"}

    def _defineParams(self, form):
        form.addSection("Input")
        form.addParam("inputParticles", params.PointerParam, pointerClass="SetOfParticles",
                      label="Particles with amplitudes", important=True)
        form.addParam("inputModes", params.PointerParam, pointerClass="SetOfNormalModes",
                      allowsNull=True, label="Normal modes (for animations)")
        form.addParam("inputReference", params.PointerParam, pointerClass="AtomStruct",
                      allowsNull=True, label="Reference (for animations)")
        form.addParam("components", params.IntParam, default=2, label="Dimensions")
        form.addParam("grouping", params.EnumParam,
                      choices=["none", "split along axis", "expression", "k-means"], default=1,
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

    def _insertAllSteps(self):
        self._insertFunctionStep(self.landscapeStep)
        if self.reconstruct.get() and self.grouping.get() != 0:
            self._insertFunctionStep(self.reconstructStep)
        self._insertFunctionStep(self.createOutputStep)

    def landscapeStep(self):
        from ..io.metadata import write_xmd
        write_xmd(self._extra("input.xmd"), particles_to_table(self.inputParticles.get()))
        argv = ["landscape", "--particles", self._extra("input.xmd"), "--out",
                self._extra("landscape"), "--components", self.components.get(),
                "--min-group", 2]
        g = self.grouping.get()
        if g == 1:
            argv += ["--split", f"{self.splitAxis.get()}:{self.minGroupSize.get()}"]
        elif g == 2:
            argv += ["--select", self.expression.get()]
        elif g == 3:
            argv += ["--kmeans", self.kmeans.get()]
        if self.inputModes.get() is not None and self.inputReference.get() is not None:
            modes_dir = self._modesFolder(self.inputModes.get(),
                                      self.inputReference.get().getFileName())
            argv += ["--structure", self.inputReference.get().getFileName(), "--modes", modes_dir]
        run_command(argv)

    def reconstructStep(self):
        ps = self.inputParticles.get().getSamplingRate()
        for g in sorted(glob.glob(self._extra("landscape", "group_*.xmd"))):
            vol = g.replace(".xmd", ".mrc")
            argv = ["reconstruct", "--particles", g, "--out", vol, "--pixel-size", ps,
                    "--min-images", 10, "--device", self._device()]
            if self.imagesFlipped.get():
                argv.append("--flipped")
            run_command(argv)
            # the map of the group's centroid model, and the FSC between the two
            centroid = g.replace("group_", "centroid_").replace(".xmd", ".pdb")
            if os.path.exists(centroid):
                from ..io.stacks import read_volume
                box = read_volume(vol)[0].shape[0]
                cmap = centroid.replace(".pdb", ".mrc")
                run_command(["model-map", "--structure", centroid, "--out", cmap,
                             "--box", box, "--pixel-size", ps, "--selection", "all"])
                run_command(["fsc", vol, cmap, "--png", g.replace("group_", "fsc_")[:-4] + ".png",
                             "--json", g.replace("group_", "fsc_")[:-4] + ".json"])

    def createOutputStep(self):
        import pwem.objects as emobj
        from ..io.metadata import read_metadata
        inp = self.inputParticles.get()
        out = self._createSetOfParticles()
        fill_particles(out, inp, read_metadata(self._extra("landscape", "landscape.xmd")),
                       with_alignment=False)
        outputs = {"outputParticles": out}
        for g in sorted(glob.glob(self._extra("landscape", "group_*.xmd"))):
            name = os.path.basename(g)[:-4]
            k = int(name.split("_")[1])
            sub = self._createSetOfParticles(suffix=name)
            fill_particles(sub, inp, read_metadata(g), with_alignment=False)
            outputs[f"outputGroup{k:02d}"] = sub
            if os.path.exists(g.replace(".xmd", ".mrc")):
                v = emobj.Volume(location=g.replace(".xmd", ".mrc"))
                v.setSamplingRate(inp.getSamplingRate())
                outputs[f"outputVolume{k:02d}"] = v
        self._defineOutputs(**outputs)
        for o in outputs.values():
            self._defineSourceRelation(self.inputParticles, o)

    def _validate(self):
        errors = []
        parts = self.inputParticles.get()
        if parts is None or parts.getSize() == 0:
            return ["the input particle set is empty"]
        if not hasattr(parts.getFirstItem(), "_xmipp_nmaDisplacements"):
            errors.append("the particles carry no normal-mode amplitudes")
        if self.reconstruct.get() and self.grouping.get() != 0 and not parts.hasAlignmentProj():
            errors.append("reconstruction needs particles with angles and shifts")
        if self.grouping.get() == 1 and parts.getSize() < self.minGroupSize.get():
            errors.append(f"{parts.getSize()} particles: fewer than one group of "
                          f"{self.minGroupSize.get()}")
        if self.grouping.get() == 2:
            import numpy as np
            from ..core.landscape import select_expression
            from ..errors import InputError
            try:
                select_expression(np.zeros((1, self.components.get())), self.expression.get())
            except InputError as e:
                errors.append(str(e))
        return errors

    def _summary(self):
        if not hasattr(self, "outputParticles"):
            return ["Not run yet."]
        import json
        groups = [a for a in dir(self) if a.startswith("outputGroup")]
        lines = [f"Landscape of {self.outputParticles.getSize()} particles; {len(groups)} "
                 "group(s). Density plot: extra/landscape/density.png"]
        for f in sorted(glob.glob(self._extra("landscape", "fsc_*.json"))):
            with open(f) as fh:
                r = json.load(fh)
            lines.append(f"group {os.path.basename(f)[4:-5]}: FSC with its centroid model's map "
                         f"{r['res_0.5']:.2f} Å (0.5), {r['res_0.143']:.2f} Å (0.143)")
        return lines

    def _methods(self):
        return ["Normal-mode amplitudes were projected by PCA and groups of images were "
                "reconstructed [Jin2014, Hamitouche2022]."]

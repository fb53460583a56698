"""Conformational landscape (Stage 3): PCA, groups, animations, reconstructions."""
import os

import numpy as np
import pyworkflow.protocol.params as params
from pwem.objects import SetOfParticles, Volume

from ..stages import fsc, landscape, model_map, reconstruct
from .base import DeepHEMNMABase, DeepHEMNMAError
from .protocol_reconstruct import (HALF_MAP_FIELDS, add_half_map_params, half_map_options,
                                   set_half_maps)
from .convert import fill_particles

#: the form's grouping choices, in the order of their stored index: none, then
#: the grouping options of the stage (deephemnma.stages.landscape.GROUPINGS)
#: that the form offers (rectangles and polygons are drawn in the viewer)
FORM_GROUPINGS = (None, "split", "select", "kmeans", "by_class")
GROUPING_LABELS = {None: "none", "split": "split along axis", "select": "expression",
                   "kmeans": "k-means", "by_class": "classes (one group per class)"}
SPLIT = FORM_GROUPINGS.index("split")
EXPRESSION = FORM_GROUPINGS.index("select")
KMEANS = FORM_GROUPINGS.index("kmeans")
BY_CLASS = FORM_GROUPINGS.index("by_class")
#: the column of the particles' classes in the files the stage reads
CLASS_COLUMN = "ref"
MIN_GROUP_IMAGES = 10       # smallest group reconstructed
SPLIT_MAX_GROUPS = 20       # split_axis's max_groups (the stage uses its default)


class DeepHEMNMAProtLandscape(DeepHEMNMABase):
    """PCA of normal-mode amplitudes, a density plot of the landscape, groups
    of images (expression on the axes, quasi-uniform splits along an axis,
    k-means), one particle subset per group, animations of the reference
    along each axis, and optionally a 3D reconstruction per group from the
    particles' angles and shifts, with its gold-standard half maps and their
    FSC, and its FSC against the map of the group's centroid model."""
    _label = "conformational landscape"
    # every output it can define: group k's particles outputGroupKK and map
    # outputVolumeKK (two digits); getPossibleOutputs() narrows the groups to
    # those the form's grouping can produce, for the GUI to offer before a run
    _possibleOutputs = {"outputParticles": SetOfParticles,
                        **{f"outputGroup{k:02d}": SetOfParticles for k in range(1, 100)},
                        **{f"outputVolume{k:02d}": Volume for k in range(1, 100)}}
    _formFields = {
        "particles": "inputParticles", "out": "the output folder", "components": "components",
        "select": "expression", "kmeans": "kmeans", "also": "inputParticlesApart",
        "also_label": "apartLabel", "structure": "inputReference", "modes": "inputModes",
        "min_group": "the smallest group", "pixel_size": "the particles' pixel size",
        "flipped": "imagesFlipped",
        "min_images": f"the smallest group reconstructed ({MIN_GROUP_IMAGES} images)",
        "class_column": "the particles' classes (from *Classes* or *Class attribute*)",
        "by_class": "grouping", **HALF_MAP_FIELDS}
    _formPhrases = {"--split axis": "splitAxis", "--split minimum group size": "minGroupSize",
                    "--split trim": "the trim of the split"}

    # --------------------------- DEFINE param functions ----------------------
    def _defineParams(self, form):
        d = landscape.Config()
        form.addSection("Input")
        form.addParam("inputParticles", params.PointerParam, pointerClass="SetOfParticles",
                      label="Particles with amplitudes", important=True,
                      help="Particles carrying normal-mode amplitudes (from HEMNMA alignment "
                           "or predict, e.g. predict's output merged with the HEMNMA "
                           "particles).")
        form.addParam("inputParticlesApart", params.PointerParam,
                      pointerClass="SetOfParticles", allowsNull=True,
                      label="Second set, shown apart (optional)",
                      help="e.g. the HEMNMA-labelled training particles next to the network's "
                           "predictions: placed in the same landscape (the paper's combined "
                           "space: one PCA, groups, reconstructions over both sets) and drawn "
                           "apart, as dots over the density. Same modes, pixel size and box "
                           "as the first set; the two sets must not share particle ids.")
        form.addParam("apartLabel", params.StringParam, default="HEMNMA-labelled",
                      label="Name of the second set", expertLevel=params.LEVEL_ADVANCED,
                      help="Its name in the density plot's legend.")
        form.addParam("inputModes", params.PointerParam, pointerClass="SetOfNormalModes",
                      allowsNull=True, label="Normal modes (for animations)",
                      help="With the reference: animations along each axis and the "
                           "centroid model of each group.")
        form.addParam("inputReference", params.PointerParam, pointerClass="AtomStruct",
                      allowsNull=True, label="Reference (for animations)",
                      help="The reference the modes move (the normal mode analysis protocol's "
                           "outputReference); with the normal modes, for animations along "
                           "each axis and the centroid model of each group.")
        form.addParam("inputClasses", params.PointerParam,
                      pointerClass="SetOfClasses2D,SetOfClasses3D", allowsNull=True,
                      label="Classes (optional)",
                      help="Discrete classes of the same particles (e.g. a RELION, cryoSPARC "
                           "or Xmipp 2D/3D classification), matched by particle id: each "
                           "class is drawn in its own colour in the landscape, the log and "
                           "classes.tsv count the particles per class and group, and the "
                           "grouping 'classes' makes one group per class. Particles in no "
                           "class are counted as 'unclassified'.")
        form.addParam("classAttribute", params.StringParam, default="",
                      label="Class attribute (optional)", expertLevel=params.LEVEL_ADVANCED,
                      help="Instead of Classes: the particles' attribute holding their class "
                           "(e.g. _rlnClassNumber, _xmipp_ref, _classId), for particles that "
                           "carry one; at most 50 distinct values.")
        form.addParam("components", params.IntParam, default=d.components, label="Dimensions",
                      validators=[params.Positive],
                      help="Number of principal axes of the PCA of the amplitudes (at most "
                           "the number of modes).")
        form.addParam("grouping", params.EnumParam,
                      choices=[GROUPING_LABELS[g] for g in FORM_GROUPINGS], default=SPLIT,
                      label="Groups",
                      help="How particle groups are made in the landscape: none; split along "
                           "an axis (quasi-uniform intervals holding at least the minimum "
                           "size, the paper's Fig. 9); an expression on PC1, PC2...; k-means "
                           "clusters; one group per class (with Classes or a Class attribute). "
                           "Each group becomes a particle subset.")
        form.addParam("splitAxis", params.IntParam, default=1, condition=f"grouping == {SPLIT}",
                      validators=[params.Positive], label="Axis",
                      help="Principal axis split into groups (1: PC1).")
        form.addParam("minGroupSize", params.IntParam, default=900,
                      condition=f"grouping == {SPLIT}", validators=[params.Positive],
                      label="Minimum group size", help="The paper used 900 (Fig. 9).")
        form.addParam("expression", params.StringParam, default="PC1 > 0",
                      condition=f"grouping == {EXPRESSION}", label="Expression",
                      help="e.g. 'PC1 > 100 and PC2 < 0'")
        form.addParam("kmeans", params.IntParam, default=4, condition=f"grouping == {KMEANS}",
                      validators=[params.Positive], label="Clusters",
                      help="Number of k-means clusters in the landscape.")
        form.addParam("reconstruct", params.BooleanParam, default=True,
                      label="Reconstruct each group?",
                      help="Reconstruct a 3D map from each group's particles (their angles "
                           "and shifts), with its half maps and their FSC (below) and its FSC "
                           "against the map of the group's centroid model.")
        form.addParam("imagesFlipped", params.BooleanParam, default=False,
                      condition="reconstruct", label="Images phase-flipped?",
                      help="Whether the particle images are already CTF phase-flipped (for "
                           "the reconstructions' CTF correction; particles without a CTF are "
                           "reconstructed without one).")
        add_half_map_params(form, reconstruct.Config(), condition="reconstruct")
        self._addComputeParams(form, threads=2)

    # --------------------------- configs and outputs -------------------------
    def landscapeOutputs(self):
        """The landscape folder's files (:class:`deephemnma.stages.landscape.Outputs`)."""
        return landscape.Outputs(self._extra("landscape"))

    def _withReference(self):
        return self.inputModes.get() is not None and self.inputReference.get() is not None

    def hasClasses(self):
        """Whether the form gives the particles' classes (Classes or a Class
        attribute): the landscape files then carry them in
        :data:`CLASS_COLUMN`."""
        return self.inputClasses.get() is not None or bool(
            (self.classAttribute.get() or "").strip())

    def _writeWithClasses(self, parts, name):
        """Write ``parts`` as ``extra/<name>`` (:meth:`_writeParticles`) with
        each particle's class in :data:`CLASS_COLUMN` when the form gives
        classes. Returns the file's path."""
        from ..io.metadata import write_xmd
        from .convert import class_labels, particles_to_table
        if not self.hasClasses():
            return self._writeParticles(parts, name)
        t = particles_to_table(parts, False, self._projectFolder())
        t[CLASS_COLUMN] = class_labels(t["itemId"], parts, self.inputClasses.get(),
                                       (self.classAttribute.get() or "").strip())
        path = self._extra(name)
        write_xmd(path, t)
        return path

    def _landscapeConfig(self, particles_file=None, modes_folder=None, also_file=None):
        """The landscape stage's config from the form (files given when running;
        ``also_file``: the second set's, shown apart)."""
        g = self.grouping.get()
        ref = self.inputReference.get()
        return landscape.Config(
            class_column=CLASS_COLUMN if self.hasClasses() else None,
            by_class=True if g == BY_CLASS and self.hasClasses() else None,
            particles=particles_file, out=self.landscapeOutputs().folder,
            components=self.components.get(),
            split=(self.splitAxis.get(), self.minGroupSize.get(), 0.02) if g == SPLIT else None,
            select=self.expression.get() if g == EXPRESSION else None,
            kmeans=self.kmeans.get() if g == KMEANS else None,
            min_group=2,    # the split has its own minimum; other groups: any size
            structure=ref.getFileName() if modes_folder and ref is not None else None,
            modes=modes_folder, also=also_file, also_label=self.apartLabel.get() or landscape.Config.also_label)

    def _reconstructConfig(self, group=1, device="auto"):
        """The reconstruct stage's config for one group."""
        parts = self.inputParticles.get()
        out = self.landscapeOutputs()
        return reconstruct.Config(
            particles=out.group(group), out=out.group_map(group),
            pixel_size=parts.getSamplingRate() if parts is not None else None,
            flipped=self.imagesFlipped.get(), min_images=MIN_GROUP_IMAGES, device=device,
            **half_map_options(self))

    def _reconstructs(self):
        return bool(self.reconstruct.get()) and FORM_GROUPINGS[self.grouping.get()] is not None

    def maxGroups(self):
        """The most groups the form's grouping can produce: none 0, expression
        1, k-means k, split along an axis min(20, n // minimum size) (20: the
        split's cap, deephemnma.core.landscape.split_axis; n: the input size,
        unknown until the upstream protocol has run), never more than 99."""
        g = self.grouping.get()
        if g == EXPRESSION:
            return 1
        if g == KMEANS:
            return max(0, min(99, self.kmeans.get() or 0))
        if g == BY_CLASS:
            classes = self.inputClasses.get()
            n = classes.getSize() + 1 if classes is not None else landscape.MAX_CLASSES
            return min(99, n)       # Classes: its classes and the unclassified particles
        if g == SPLIT:
            parts = self.inputParticles.get()
            n = parts.getSize() if parts is not None else 0
            apart = self.inputParticlesApart.get()
            n += apart.getSize() if n and apart is not None else 0
            size = self.minGroupSize.get() or 1
            return min(SPLIT_MAX_GROUPS, n // size) if n else SPLIT_MAX_GROUPS
        return 0

    def getPossibleOutputs(self):
        """Names of the outputs this form can produce (pyworkflow lists them as
        candidates while the protocol has no output): the particles, then
        outputGroupKK (and outputVolumeKK when reconstructing) for each group
        k <= maxGroups()."""
        n = self.maxGroups()
        names = ["outputParticles"] + [f"outputGroup{k:02d}" for k in range(1, n + 1)]
        if self._reconstructs():
            names += [f"outputVolume{k:02d}" for k in range(1, n + 1)]
        return names

    # --------------------------- INSERT steps functions ----------------------
    def _insertAllSteps(self):
        self._insertFunctionStep(self.landscapeStep)
        if self._reconstructs():
            self._insertFunctionStep(self.reconstructStep)
        self._insertFunctionStep(self.createOutputStep)

    APART_FILE = "input_apart.xmd"    # the second set's rows (its 'source' in the landscape)

    # --------------------------- STEPS functions -----------------------------
    def landscapeStep(self):
        self._writeWithClasses(self.inputParticles.get(), "input.xmd")
        also = None
        apart = self.inputParticlesApart.get()
        if apart is not None:
            ids1 = set(int(i) for i in self.inputParticles.get().getIdSet())
            shared = ids1.intersection(int(i) for i in apart.getIdSet())
            if shared:
                raise DeepHEMNMAError(
                    f"the two particle sets share {len(shared)} particle id(s) (e.g. "
                    f"{min(shared)}): give disjoint sets (e.g. the two parts of a split)")
            also = self._writeWithClasses(apart, self.APART_FILE)
        modes_dir = None
        if self._withReference():
            modes_dir = self._modesFolder(self.inputModes.get(),
                                          self.inputReference.get().getFileName())
        self._runHere(landscape, self._landscapeConfig(self._extra("input.xmd"), modes_dir, also))

    def reconstructStep(self):
        out = self.landscapeOutputs()
        parts = self.inputParticles.get()
        self._logCtf(parts, "the reconstruction", bool(self.imagesFlipped.get()))
        ps = parts.getSamplingRate()
        device = self._device()
        for k in out.groups():
            rec = self._runHere(reconstruct, self._reconstructConfig(k, device))
            if os.path.exists(out.centroid(k)):
                # the map of the group's centroid model, and the FSC between the two
                self._runHere(model_map, model_map.Config(
                    structure=out.centroid(k), out=out.centroid_map(k), box=rec.box,
                    pixel_size=ps, selection="all"))
                self._runHere(fsc, fsc.Config(map1=out.group_map(k), map2=out.centroid_map(k),
                                          pixel_size=ps, png=out.fsc_png(k),
                                          json=out.fsc_json(k)))

    def createOutputStep(self):
        import pwem.objects as emobj
        from ..io.metadata import read_metadata
        inp = self.inputParticles.get()
        files = self.landscapeOutputs()

        def fill(out_set, table):
            # each row from the set it came from (column 'source': its file's name)
            apart = self.inputParticlesApart.get()
            if apart is None or "source" not in table:
                fill_particles(out_set, inp, table, with_alignment=False)
                return
            second = np.asarray(table["source"]) == self.APART_FILE
            fill_particles(out_set, inp, table.subset(np.flatnonzero(~second)),
                           with_alignment=False)
            fill_particles(out_set, apart, table.subset(np.flatnonzero(second)),
                           with_alignment=False)

        out = self._createSetOfParticles()
        fill(out, read_metadata(files.landscape))
        outputs = {"outputParticles": out}
        for k in files.groups():
            sub = self._createSetOfParticles(suffix=f"group_{k:02d}")
            fill(sub, read_metadata(files.group(k)))
            outputs[f"outputGroup{k:02d}"] = sub
            if os.path.exists(files.group_map(k)):
                v = emobj.Volume(location=files.group_map(k))
                v.setSamplingRate(inp.getSamplingRate())
                set_half_maps(v, files.group_reconstruction(k))
                outputs[f"outputVolume{k:02d}"] = v
        self._defineOutputs(**outputs)
        for o in outputs.values():
            self._defineSourceRelation(self.inputParticles, o)
            if self.inputParticlesApart.get() is not None:
                self._defineSourceRelation(self.inputParticlesApart, o)

    # --------------------------- INFO functions ------------------------------
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
        apart = self.inputParticlesApart.get()
        if apart is not None:
            if apart.getSize() == 0:
                errors.append("the second particle set is empty")
            elif not hasattr(apart.getFirstItem(), "_xmipp_nmaDisplacements"):
                errors.append("the second particle set carries no normal-mode amplitudes")
            elif len(apart.getFirstItem()._xmipp_nmaDisplacements) != \
                    len(getattr(first, "_xmipp_nmaDisplacements", [])):
                errors.append("the two particle sets have different numbers of amplitudes")
            if abs(apart.getSamplingRate() - parts.getSamplingRate()) > \
                    0.01 * parts.getSamplingRate():
                errors.append(f"the two particle sets have different pixel sizes "
                              f"({parts.getSamplingRate():g} and {apart.getSamplingRate():g} Å)")
            if self._reconstructs() and not apart.hasAlignmentProj():
                errors.append("reconstruction needs the second set's angles and shifts too")
        errors += self._classErrors(first)
        if (self.inputModes.get() is None) != (self.inputReference.get() is None):
            errors.append("the normal modes and the reference go together (give both for "
                          "animations, or neither)")
        errors += self._configErrors(self._landscapeConfig)
        if self._reconstructs():
            if not parts.hasAlignmentProj():
                errors.append("reconstruction needs particles with angles and shifts")
            errors += self._configErrors(self._reconstructConfig)
        n = parts.getSize() + (apart.getSize() if apart is not None else 0)
        if self.grouping.get() == SPLIT and n < self.minGroupSize.get():
            errors.append(f"*Minimum group size* {self.minGroupSize.get()}: more than the "
                          f"{n} particles")
        return errors

    def _classErrors(self, first):
        """The form's problems with the classes (``first``: a particle)."""
        from .convert import particle_attribute
        attribute = (self.classAttribute.get() or "").strip()
        if self.inputClasses.get() is not None and attribute:
            return ["give *Classes (optional)* or *Class attribute (optional)*, not both"]
        if attribute and particle_attribute(first, attribute) is None:
            return [f"*Class attribute (optional)* {attribute}: the particles have no such "
                    "attribute (e.g. _rlnClassNumber, _xmipp_ref, _classId)"]
        if self.grouping.get() == BY_CLASS and not self.hasClasses():
            return ["*Groups* 'classes' needs the particles' classes: give *Classes "
                    "(optional)* or *Class attribute (optional)*"]
        return []

    def classTable(self):
        """Rows of the landscape's classes.tsv (header first), or [] without classes."""
        path = self.landscapeOutputs().class_table
        if not os.path.exists(path):
            return []
        with open(path) as fh:
            return [line.rstrip("\n").split("\t") for line in fh if line.strip()]

    def _summary(self):
        if not hasattr(self, "outputParticles"):
            return ["Not run yet."]
        import json
        files = self.landscapeOutputs()
        groups = files.groups()
        lines = [f"Landscape of {self.outputParticles.getSize()} particles; {len(groups)} "
                 f"group(s). Density plot: {files.density}"]
        for k in groups:
            rec = files.group_reconstruction(k)
            if os.path.exists(rec.fsc_halves_json):
                with open(rec.fsc_halves_json) as fh:
                    r = json.load(fh)
                lines.append(f"group {k:02d}: half maps FSC 0.143 {r['res_0.143_masked']:.2f} Å "
                             f"masked, {r['res_0.143']:.2f} Å unmasked (gold standard)")
            if os.path.exists(files.fsc_json(k)):
                with open(files.fsc_json(k)) as fh:
                    r = json.load(fh)
                lines.append(f"group {k:02d}: FSC with its centroid model's map "
                             f"{r['res_0.5']:.2f} Å (0.5), {r['res_0.143']:.2f} Å (0.143)")
        rows = self.classTable()
        if rows:
            from ..core.landscape import format_table
            lines.append(f"Particles per class and group ({files.class_table}):")
            lines += format_table(rows)
        return lines

    def _methods(self):
        return ["Normal-mode amplitudes were projected by PCA and groups of images were "
                "reconstructed ([Jin2014]; [Hamitouche2022])."]

    def _citations(self):
        return ["Hamitouche2022", "Jin2014"]


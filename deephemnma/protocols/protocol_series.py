"""A series of maps along a principal axis or a path of a landscape run (Stage 3)."""
import os

import pyworkflow.protocol.params as params
from pwem.objects import SetOfVolumes, Volume

from ..stages import reconstruct, series
from .base import DeepHEMNMABase
from .protocol_reconstruct import (HALF_MAP_FIELDS, add_half_map_params, half_map_options,
                                   set_half_maps)

#: the form's choices of path, in the order of their stored index
PATH_KINDS = ("axis", "path")
PATH_LABELS = {"axis": "principal axis", "path": "path of points"}
AXIS = PATH_KINDS.index("axis")
PATH = PATH_KINDS.index("path")


class DeepHEMNMAProtSeries(DeepHEMNMABase):
    """Maps along a principal axis or a path of points in the landscape, one
    per sliding window of particles (the particles nearest to each of evenly
    spaced positions along it), each with its gold-standard half maps; the
    series plays in ChimeraX (series.cxc), beside the centroid model of each
    window when the landscape has a reference and its modes."""
    _label = "map series along a path"
    _possibleOutputs = {"outputVolumes": SetOfVolumes}
    _formFields = {
        "landscape": "inputLandscape", "out": "the output folder", "axis": "axis",
        "path": "pathPoints", "frames": "frames", "window": "window", "band": "band",
        "pixel_size": "the particles' pixel size", "flipped": "imagesFlipped",
        "min_images": "minImages", "structure": "the landscape's reference",
        "modes": "the landscape's normal modes", **HALF_MAP_FIELDS}

    # --------------------------- DEFINE param functions ----------------------
    def _defineParams(self, form):
        d = series.Config()
        form.addSection("Input")
        form.addParam("inputLandscape", params.PointerParam,
                      pointerClass="DeepHEMNMAProtLandscape", label="Landscape run",
                      important=True,
                      help="A conformational landscape run: its particles with their PC "
                           "coordinates, angles and shifts, and its reference and modes (for "
                           "the centroid models).")
        form.addParam("pathKind", params.EnumParam,
                      choices=[PATH_LABELS[k] for k in PATH_KINDS], default=AXIS,
                      label="Along",
                      help="A principal axis, or a path of points in the PC1-PC2 plane.")
        form.addParam("axis", params.IntParam, default=1, condition=f"pathKind == {AXIS}",
                      label="Axis", help="The principal axis (1: PC1).")
        form.addParam("pathPoints", params.StringParam, default="",
                      condition=f"pathKind == {PATH}", label="Path",
                      help="Points on PC1, PC2 as x1,y1;x2,y2;... (e.g. -40,0;0,20;40,0), or "
                           "the file of a path drawn in the landscape viewer (path.txt: one "
                           "point per line). The frames go from the first point to the last.")
        form.addParam("band", params.FloatParam, default=0.0,
                      condition=f"pathKind == {PATH}", label="Band around the path",
                      help="Particles farther than this from the path (in PC units) are left "
                           "out; 0: every particle takes part.")
        form.addParam("frames", params.IntParam, default=d.frames, label="Frames",
                      help="Maps in the series, at evenly spaced positions along the axis "
                           "(from the particle of rank window/2 to that of rank n - "
                           "window/2) or the path (from its first point to its last).")
        form.addParam("window", params.FloatParam, default=d.window, label="Window",
                      help="Particles per window: the particles nearest to each frame's "
                           "position along the path. A number of particles, or below 1 a "
                           "fraction of them (of those within the band of a path). Windows "
                           "may overlap.")
        form.addParam("minImages", params.IntParam, default=d.min_images,
                      label="Minimum particles per window",
                      help="Smaller windows are refused (a map of too few particles is noise).")
        form.addParam("imagesFlipped", params.BooleanParam, default=d.flipped,
                      label="Images phase-flipped?",
                      help="Whether the particle images are already CTF phase-flipped (for "
                           "the CTF correction of the maps; particles without a CTF are "
                           "reconstructed without one).")
        form.addParam("centroidModels", params.BooleanParam, default=True,
                      label="Centroid models?",
                      help="The reference deformed by the mean amplitudes of each window "
                           "(centroids.pdb, one model per frame, with centroids.cxc), when "
                           "the landscape run has a reference and its normal modes.")
        form.addSection("Validation")
        add_half_map_params(form, reconstruct.Config())
        self._addComputeParams(form, threads=2)

    # --------------------------- configs and outputs -------------------------
    def seriesOutputs(self):
        """The series folder's files (:class:`deephemnma.stages.series.Outputs`)."""
        return series.Outputs(self._extra("series"))

    def _reference(self):
        """(structure, modes folder) of the landscape run for the centroid
        models, or (None, None)."""
        land = self.inputLandscape.get()
        if not self.centroidModels.get() or land is None or not land._withReference():
            return None, None
        return land.inputReference.get().getFileName(), land._extra("input_modes")

    def _config(self, device="auto"):
        land = self.inputLandscape.get()
        parts = land.inputParticles.get() if land is not None else None
        structure, modes = self._reference()
        along_path = self.pathKind.get() == PATH
        band = self.band.get()
        return series.Config(
            landscape=land.landscapeOutputs().folder if land is not None else None,
            out=self.seriesOutputs().folder,
            axis=None if along_path else self.axis.get(),
            path=(self.pathPoints.get() or "").strip() if along_path else None,
            frames=self.frames.get(), window=_window(self.window.get()),
            band=band if along_path and band else None,
            pixel_size=parts.getSamplingRate() if parts is not None else None,
            flipped=self.imagesFlipped.get(), min_images=self.minImages.get(),
            structure=structure, modes=modes, device=device, **half_map_options(self))

    # --------------------------- INSERT steps functions ----------------------
    def _insertAllSteps(self):
        self._insertFunctionStep(self.seriesStep)
        self._insertFunctionStep(self.createOutputStep)

    # --------------------------- STEPS functions -----------------------------
    def seriesStep(self):
        land = self.inputLandscape.get()
        self._logCtf(land.inputParticles.get(), "the reconstructions",
                     bool(self.imagesFlipped.get()))
        self._runHere(series, self._config(self._device()))

    def createOutputStep(self):
        files = self.seriesOutputs()
        ps = self.inputLandscape.get().inputParticles.get().getSamplingRate()
        vols = self._createSetOfVolumes()
        vols.setSamplingRate(ps)
        rows = {int(r["frame"]): r for r in files.read_table()}
        for k in files.frames():
            v = Volume(location=files.frame_map(k))
            v.setSamplingRate(ps)
            set_half_maps(v, files.frame_reconstruction(k))
            r = rows.get(k)
            if r is not None:
                v.setObjLabel(f"frame {k:03d} at {r['position']:.4g} "
                              f"({int(r['particles'])} particles)")
            vols.append(v)
        self._defineOutputs(outputVolumes=vols)
        parts = getattr(self.inputLandscape.get(), "outputParticles", None)
        if parts is not None:
            self._defineSourceRelation(parts, vols)

    # --------------------------- INFO functions ------------------------------
    def _validate(self):
        land = self.inputLandscape.get()
        if land is None:
            return ["choose the landscape run"]
        errors = []
        if self.pathKind.get() == PATH and not (self.pathPoints.get() or "").strip():
            errors.append("*Path*: give points x1,y1;x2,y2;... or a path file")
        if self.pathKind.get() == AXIS and (self.axis.get() or 0) > land.components.get():
            errors.append(f"*Axis* {self.axis.get()}: the landscape run has "
                          f"{land.components.get()} dimensions")
        if not errors:
            errors += self._configErrors(self._config)
        return errors

    def _summary(self):
        if not hasattr(self, "outputVolumes"):
            return ["Not run yet."]
        files = self.seriesOutputs()
        rows = files.read_table() if os.path.exists(files.table) else []
        lines = [f"{self.outputVolumes.getSize()} maps along "
                 f"{'the path' if self.pathKind.get() == PATH else f'PC{self.axis.get()}'}; "
                 f"table {files.table}; ChimeraX: {files.chimerax}"]
        for r in rows:
            res = r.get("res_0.143_masked")
            lines.append(f"frame {int(r['frame']):03d} at {r['position']:.4g}: "
                         f"{int(r['particles'])} particles"
                         + (f", half maps FSC 0.143 {res:.2f} Å masked" if res else ""))
        if os.path.exists(files.centroids()):
            lines.append(f"Centroid models: {files.centroids()} (ChimeraX: "
                         f"{files.centroids('.cxc')})")
        return lines

    def _methods(self):
        return ["Maps were reconstructed from sliding windows of particles along a path in "
                "the landscape of normal-mode amplitudes ([Hamitouche2022])."]

    def _citations(self):
        return ["Hamitouche2022"]


def _window(value):
    """The form's window: a whole number of particles as an int."""
    if value is not None and value >= 1 and float(value) == int(value):
        return int(value)
    return value

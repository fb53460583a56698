"""3D reconstruction of any aligned particle subset (Stage 3), without Xmipp."""
import os

import pyworkflow.protocol.params as params
from pwem.objects import Volume

from ..stages import fsc, model_map, reconstruct
from .base import DeepHEMNMABase

#: the half-map options' config fields -> their form parameters (add_half_map_params)
HALF_MAP_FIELDS = {"half_maps": "halfMaps", "mask_threshold": "maskThreshold",
                   "mask_dilate": "maskDilate", "soft_edge": "softEdge"}


class DeepHEMNMAProtReconstruct(DeepHEMNMABase):
    """Fourier reconstruction of a set of particles from their angles and
    shifts (a landscape group, a lasso subset, any ProtUserSubSet...), with
    Wiener CTF correction. Optionally from the original-size particles (the
    paper: poses estimated at 128 px, maps at 256 px): their images are used
    with the subset's angles and the shifts scaled by the ratio of the pixel
    sizes. Gold-standard half maps (random halves fixed by particle id), their
    FSC unmasked and within a soft mask made from the map (corrected for the
    mask by phase randomisation), and the map filtered at its resolution; optionally the FSC against a map or an atomic
    model's map."""
    _label = "reconstruct"
    _possibleOutputs = {"outputVolume": Volume}
    REF_NONE, REF_VOLUME, REF_STRUCTURE = 0, 1, 2
    _formFields = {
        "particles": "inputParticles", "images": "originalParticles", "out": "the output map",
        "pixel_size": "the particles' pixel size",
        "shift_scale": "the ratio of the two sets' pixel sizes", "flipped": "imagesFlipped",
        "min_images": "minImages", "pad": "pad", "reference": "the FSC reference",
        # the FSC and the atomic model's map
        "map1": "the reconstruction", "map2": "the FSC reference", "box": "the box",
        "structure": "referenceStructure", **HALF_MAP_FIELDS}

    # --------------------------- DEFINE param functions ----------------------
    def _defineParams(self, form):
        d = reconstruct.Config()
        form.addSection("Input")
        form.addParam("inputParticles", params.PointerParam, pointerClass="SetOfParticles",
                      label="Particles with alignment", important=True,
                      help="Any particle set with a projection alignment: a landscape group, "
                           "a subset drawn in the landscape viewer, a ProtUserSubSet...")
        form.addParam("useOriginal", params.BooleanParam, default=False,
                      label="Use original-size particles?",
                      help="Reconstruct from another set holding the same particles (same "
                           "ids) at another sampling, e.g. before downscaling; the shifts are "
                           "scaled by the ratio of the pixel sizes.")
        form.addParam("originalParticles", params.PointerParam,
                      pointerClass="SetOfParticles", condition="useOriginal",
                      label="Original-size particles",
                      help="Matched to the aligned particles by their ids.")
        form.addParam("imagesFlipped", params.BooleanParam, default=d.flipped,
                      label="Images phase-flipped?",
                      help="Whether the images used are already CTF phase-flipped (used "
                           "only with a CTF: particles without one are reconstructed without "
                           "CTF correction; the log says which).")
        form.addParam("minImages", params.IntParam, default=d.min_images,
                      validators=[params.Positive], label="Minimum number of images",
                      help="Smaller sets are refused (a map from too few images is noise).")
        form.addParam("pad", params.FloatParam, default=d.pad, label="Fourier padding",
                      expertLevel=params.LEVEL_ADVANCED,
                      help="Oversampling of the Fourier volume (1: none; 2: slightly better "
                           "near Nyquist, 8x the memory and much slower on a CPU).")
        form.addSection("Validation")
        add_half_map_params(form, d)
        form.addParam("referenceType", params.EnumParam,
                      choices=["none", "volume", "atomic model"], default=self.REF_NONE,
                      label="FSC against",
                      help="Compute the FSC of the reconstruction against a map, or against "
                           "the map simulated from an atomic model (e.g. a group's centroid "
                           "model), centred on its atoms' centroid as every deephemnma map.")
        form.addParam("referenceVolume", params.PointerParam, pointerClass="Volume",
                      condition=f"referenceType == {self.REF_VOLUME}", allowsNull=True,
                      label="Reference map",
                      help="Same box and voxel size as the reconstruction.")
        form.addParam("referenceStructure", params.PointerParam, pointerClass="AtomStruct",
                      condition=f"referenceType == {self.REF_STRUCTURE}", allowsNull=True,
                      label="Reference atomic model",
                      help="Its map is simulated at the reconstruction's box and voxel size.")
        self._addComputeParams(form, threads=2)

    # --------------------------- UTILS functions -----------------------------
    def _pixelSize(self):
        src = self.originalParticles.get() if self.useOriginal.get() else None
        parts = src or self.inputParticles.get()
        return parts.getSamplingRate() if parts is not None else None

    def _shiftScale(self):
        if not self.useOriginal.get() or self.originalParticles.get() is None:
            return 1.0
        return (self.inputParticles.get().getSamplingRate()
                / self.originalParticles.get().getSamplingRate())

    def _config(self, device="auto"):
        return reconstruct.Config(
            particles=self._extra("particles.xmd"),
            images=self._extra("original.xmd") if self.useOriginal.get() else None,
            out=self._extra("map.mrc"), pixel_size=self._pixelSize(),
            shift_scale=self._shiftScale(), flipped=self.imagesFlipped.get(),
            min_images=self.minImages.get(), pad=self.pad.get(),
            reference=self._extra("reference.mrc") if self.referenceType.get() else None,
            device=device, **half_map_options(self))

    def _insertAllSteps(self):
        self._insertFunctionStep(self.reconstructStep)
        self._insertFunctionStep(self.createOutputStep)

    def reconstructStep(self):
        from ..io.stacks import read_volume, write_volume
        parts = self.inputParticles.get()
        # the CTF comes with the aligned particles' rows (also with original-size images)
        self._logCtf(parts, "the reconstruction", bool(self.imagesFlipped.get()))
        self._writeParticles(parts, "particles.xmd", need_alignment=True)
        if self.useOriginal.get():
            self._writeParticles(self.originalParticles.get(), "original.xmd")
        cfg = self._config(self._device())
        box = self._box()
        if self.referenceType.get() == self.REF_VOLUME:
            # the reference as the stage reads it (.mrc), whatever its format
            vol, _ = read_volume(self.referenceVolume.get().getFileName())
            write_volume(cfg.reference, vol, cfg.pixel_size)
        elif self.referenceType.get() == self.REF_STRUCTURE:
            self._runHere(model_map, model_map.Config(
                structure=self.referenceStructure.get().getFileName(), out=cfg.reference,
                box=box, pixel_size=cfg.pixel_size, selection="all"))
        out = self._runHere(reconstruct, cfg)
        if cfg.reference:
            self._runHere(fsc, fsc.Config(map1=out.map, map2=cfg.reference,
                                      pixel_size=cfg.pixel_size, png=self._extra("fsc.png"),
                                      json=self._extra("fsc.json")))

    def _box(self):
        parts = (self.originalParticles.get() if self.useOriginal.get()
                 else self.inputParticles.get())
        return parts.getXDim()

    def createOutputStep(self):
        v = Volume(location=self._extra("map.mrc"))
        v.setSamplingRate(self._pixelSize())
        set_half_maps(v, reconstruct.Outputs(v.getFileName()))
        self._defineOutputs(outputVolume=v)
        self._defineSourceRelation(self.inputParticles, v)

    # --------------------------- INFO functions ------------------------------
    def _validate(self):
        parts = self.inputParticles.get()
        if parts is None:
            return ["no input particles"]
        errors = []
        if parts.getSize() == 0:
            errors.append("the input particle set is empty")
        elif not parts.hasAlignmentProj():
            errors.append("the particles have no projection alignment (angles and shifts)")
        if self.useOriginal.get() and self.originalParticles.get() is None:
            errors.append("choose the original-size particles")
        ref_missing = {self.REF_VOLUME: self.referenceVolume.get(),
                       self.REF_STRUCTURE: self.referenceStructure.get()}
        if self.referenceType.get() in ref_missing and \
                ref_missing[self.referenceType.get()] is None:
            errors.append("choose the reference for the FSC")
        if not errors:
            errors += self._configErrors(self._config)
        if not errors and parts.getSize() < self.minImages.get():
            errors.append(f"*Minimum number of images* {self.minImages.get()}: more than the "
                          f"{parts.getSize()} particles")
        return errors

    def _summary(self):
        if not hasattr(self, "outputVolume"):
            return ["Not run yet."]
        lines = [f"Map of {self.inputParticles.get().getSize()} particles: "
                 f"{self.outputVolume.getFileName()}"]
        lines += half_map_summary(reconstruct.Outputs(self._extra("map.mrc")))
        f = self._extra("fsc.json")
        if os.path.exists(f):
            import json
            with open(f) as fh:
                r = json.load(fh)
            lines.append(f"FSC against the reference: {r['res_0.5']:.2f} Å (0.5), "
                         f"{r['res_0.143']:.2f} Å (0.143); curve: extra/fsc.png")
        return lines

    def _methods(self):
        return ["The particles were reconstructed by direct Fourier inversion with Wiener "
                "CTF correction, from their angles and shifts [Hamitouche2022]."]

    def _citations(self):
        return ["Hamitouche2022"]


# the half-map fields and outputs, shared with the landscape's group maps
def add_half_map_params(form, d, condition=None):
    """The half-map fields of the form (``d``: the reconstruct stage's default
    Config; ``condition``: the form condition under which they show)."""
    form.addParam("halfMaps", params.BooleanParam, default=d.half_maps,
                  condition=condition, label="Half maps and their FSC?",
                  help="Split the particles in two random halves fixed by particle id "
                       "(the same halves in every run), reconstruct each half, and compute "
                       "the FSC between them (gold standard): the resolution at FSC 0.143, "
                       "unmasked and within a soft mask made from the map (corrected for "
                       "the mask by phase randomisation beyond the resolution where the "
                       "unmasked FSC drops below 0.8, or 15 Å if finer); the map is also written low-pass "
                       "filtered at that resolution (masked, corrected). Needs no "
                       "reference.")
    cond = "halfMaps" if condition is None else f"({condition}) and halfMaps"
    form.addParam("maskThreshold", params.FloatParam, default=d.mask_threshold,
                  condition=cond, expertLevel=params.LEVEL_ADVANCED, label="Mask threshold",
                  help="The soft mask of the masked FSC: the map low-passed at 15 Å (4 px "
                       "with pixels larger than 3.75 Å) is thresholded at this fraction of "
                       "its maximum (between 0 and 1).")
    form.addParam("maskDilate", params.FloatParam, default=d.mask_dilate, condition=cond,
                  expertLevel=params.LEVEL_ADVANCED, label="Mask dilation (px)",
                  help="The thresholded region is grown by this many pixels.")
    form.addParam("softEdge", params.FloatParam, default=d.soft_edge, condition=cond,
                  expertLevel=params.LEVEL_ADVANCED, label="Mask soft edge (px)",
                  help="Width in pixels of the mask's raised-cosine edge beyond the dilated "
                       "region.")


def half_map_options(prot):
    """The reconstruct stage's half-map options from the form of ``prot``."""
    return dict(half_maps=bool(prot.halfMaps.get()), mask_threshold=prot.maskThreshold.get(),
                mask_dilate=prot.maskDilate.get(), soft_edge=prot.softEdge.get())


def set_half_maps(volume, rec):
    """Attach the half maps of ``rec`` (the reconstruct stage's Outputs of
    the volume's map) to ``volume`` when both exist."""
    halves = [rec.half(1), rec.half(2)]
    if all(os.path.exists(h) for h in halves):
        volume.setHalfMaps(halves)


def half_map_summary(rec):
    """Summary line of the half-map FSC of ``rec`` (reconstruct.Outputs), if any."""
    if not os.path.exists(rec.fsc_halves_json):
        return []
    import json
    with open(rec.fsc_halves_json) as fh:
        r = json.load(fh)
    return [f"Half maps ({r['n_half1']} + {r['n_half2']} particles): FSC 0.143 at "
            f"{r['res_0.143_masked']:.2f} Å masked, {r['res_0.143']:.2f} Å unmasked; "
            f"filtered map {os.path.basename(rec.filtered)}, curve "
            f"{os.path.basename(rec.fsc_halves_png)}"]

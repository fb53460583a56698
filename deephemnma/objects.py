"""Scipion object for a trained DeepHEMNMA model."""
import pwem.objects as emobj
import pyworkflow.object as pwobj


class DeepHEMNMAModel(emobj.EMObject):
    """A trained DeepHEMNMA network: points to the model file (see
    deephemnma.core.models) and exposes its metadata."""

    def __init__(self, filename=None, **kwargs):
        emobj.EMObject.__init__(self, **kwargs)
        self._filename = pwobj.String(filename)
        self._imageSize = pwobj.Integer()
        self._samplingRate = pwobj.Float()
        self._modeNumbers = pwobj.CsvList(pType=int)
        self._architecture = pwobj.String()
        self._bestValLoss = pwobj.Float()

    def getFileName(self):
        return self._filename.get()

    def setFileName(self, f):
        self._filename.set(f)

    def getImageSize(self):
        return self._imageSize.get()

    def getSamplingRate(self):
        return self._samplingRate.get()

    def getModeNumbers(self):
        return list(self._modeNumbers)

    def getArchitecture(self):
        return self._architecture.get()

    def loadMeta(self):
        """Fill the attributes from the model file's own metadata."""
        from .core.models import load_model
        _, meta = load_model(self.getFileName())
        self._imageSize.set(meta["image_size"])
        self._samplingRate.set(meta.get("pixel_size") or 0.0)
        self._modeNumbers.set(meta["mode_numbers"])
        self._architecture.set(meta["architecture"])
        self._bestValLoss.set(meta.get("best_val_loss"))
        return meta

    def __str__(self):
        return (f"DeepHEMNMAModel ({self.getArchitecture()}, {self.getImageSize()} px, "
                f"modes {self.getModeNumbers()})")

"""Scipion protocols of DeepHEMNMA: thin adapters over deephemnma.core."""
import os as _os
import sys as _sys

from .. import passive_openmp as _passive_openmp

if _os.path.basename(_sys.argv[0] if _sys.argv else "").startswith("pw_protocol_"):
    _passive_openmp()       # a protocol's run process (not the GUI), before torch loads
from .protocol_align import DeepHEMNMAProtAlign
from .protocol_landscape import DeepHEMNMAProtLandscape
from .protocol_nma import DeepHEMNMAProtNMA
from .protocol_predict import DeepHEMNMAProtPredict
from .protocol_reconstruct import DeepHEMNMAProtReconstruct
from .protocol_refine import DeepHEMNMAProtRefine
from .protocol_series import DeepHEMNMAProtSeries
from .protocol_synthesize import DeepHEMNMAProtSynthesize
from .protocol_train import DeepHEMNMAProtTrain

__all__ = ["DeepHEMNMAProtNMA", "DeepHEMNMAProtSynthesize", "DeepHEMNMAProtAlign",
           "DeepHEMNMAProtTrain", "DeepHEMNMAProtPredict", "DeepHEMNMAProtRefine",
           "DeepHEMNMAProtLandscape", "DeepHEMNMAProtReconstruct", "DeepHEMNMAProtSeries"]

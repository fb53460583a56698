"""Scipion protocols of DeepHEMNMA: thin adapters over deephemnma.core."""
from .protocol_align import DeepHEMNMAProtAlign
from .protocol_landscape import DeepHEMNMAProtLandscape
from .protocol_nma import DeepHEMNMAProtNMA
from .protocol_predict import DeepHEMNMAProtPredict
from .protocol_reconstruct import DeepHEMNMAProtReconstruct
from .protocol_synthesize import DeepHEMNMAProtSynthesize
from .protocol_train import DeepHEMNMAProtTrain

__all__ = ["DeepHEMNMAProtNMA", "DeepHEMNMAProtSynthesize", "DeepHEMNMAProtAlign",
           "DeepHEMNMAProtTrain", "DeepHEMNMAProtPredict", "DeepHEMNMAProtLandscape", "DeepHEMNMAProtReconstruct"]

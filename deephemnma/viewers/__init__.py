"""Viewers (matplotlib) for DeepHEMNMA's outputs."""
from .viewer_accuracy import DeepHEMNMAAccuracyViewer
from .viewer_landscape import DeepHEMNMALandscapeViewer
from .viewer_train import DeepHEMNMATrainViewer

__all__ = ["DeepHEMNMAAccuracyViewer", "DeepHEMNMALandscapeViewer", "DeepHEMNMATrainViewer"]

"""Viewers (matplotlib) for DeepHEMNMA's outputs."""
from .viewer_landscape import DeepHEMNMALandscapeViewer
from .viewer_train import DeepHEMNMATrainViewer

__all__ = ["DeepHEMNMALandscapeViewer", "DeepHEMNMATrainViewer"]

"""Viewers (matplotlib) for DeepHEMNMA's outputs. pyworkflow discovers the
Viewer classes imported here (the plugin's ``viewers`` submodule)."""
from .viewer_accuracy import DeepHEMNMAAccuracyViewer
from .viewer_amplitudes import DeepHEMNMAAmplitudesViewer
from .viewer_landscape import DeepHEMNMALandscapeViewer
from .viewer_nma import DeepHEMNMANmaViewer
from .viewer_train import DeepHEMNMATrainViewer

__all__ = ["DeepHEMNMAAccuracyViewer", "DeepHEMNMAAmplitudesViewer", "DeepHEMNMALandscapeViewer",
           "DeepHEMNMANmaViewer", "DeepHEMNMATrainViewer"]

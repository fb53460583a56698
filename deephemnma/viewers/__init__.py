"""Viewers (matplotlib) for DeepHEMNMA's outputs. pyworkflow discovers the
Viewer classes imported here (the plugin's ``viewers`` submodule).

"Analyze Results" opens a protocol's first viewer, so each protocol has
exactly one, whose form offers everything there is to see of its results:

* normal modes: :class:`DeepHEMNMANmaViewer`;
* synthesize, align, refine, predict: :class:`DeepHEMNMAParticlesViewer`;
* train: :class:`DeepHEMNMATrainViewer`;
* landscape: :class:`DeepHEMNMALandscapeViewer`;
* reconstruct, map series, and any Volume or SetOfVolumes: :class:`DeepHEMNMAMapViewer`.

None of them imports ProDy (the GUI runs Python with ``-O``, under which
ProDy's import fails)."""
from .viewer_landscape import DeepHEMNMALandscapeViewer
from .viewer_map import DeepHEMNMAMapViewer
from .viewer_nma import DeepHEMNMANmaViewer
from .viewer_particles import DeepHEMNMAParticlesViewer
from .viewer_train import DeepHEMNMATrainViewer

__all__ = ["DeepHEMNMALandscapeViewer", "DeepHEMNMAMapViewer", "DeepHEMNMANmaViewer",
           "DeepHEMNMAParticlesViewer", "DeepHEMNMATrainViewer"]

"""Training curves and model summary."""
import os

from pyworkflow.viewer import DESKTOP_TKINTER, WEB_DJANGO, Viewer

from ..protocols.protocol_train import DeepHEMNMAProtTrain
from .common import Shower


class DeepHEMNMATrainViewer(Viewer):
    """Shows the training and validation loss per epoch (the train stage's
    curves.csv, drawn as in its curves.png)."""
    _label = "training curves"
    _targets = [DeepHEMNMAProtTrain]
    _environments = [DESKTOP_TKINTER, WEB_DJANGO]

    def _visualize(self, obj, **kwargs):
        import matplotlib.pyplot as plt
        from ..stages.train import plot_curves, read_curves
        files = self.protocol.trainOutputs()
        if not os.path.exists(files.curves_csv):
            return [self.errorMessage("No training curves yet.")]
        fig, ax = plt.subplots(figsize=(6, 4.5))
        plot_curves(read_curves(files.curves_csv), ax)
        fig.tight_layout()
        fig.canvas.manager.set_window_title("DeepHEMNMA training")
        return [Shower(fig)]

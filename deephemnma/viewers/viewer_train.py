"""Training curves and model summary."""
import os

from pyworkflow.viewer import DESKTOP_TKINTER, WEB_DJANGO, Viewer

from ..protocols.protocol_train import DeepHEMNMAProtTrain
from .common import Shower


class DeepHEMNMATrainViewer(Viewer):
    """Shows the training and validation loss curves (extra/model/curves.png)."""
    _label = "training curves"
    _targets = [DeepHEMNMAProtTrain]
    _environments = [DESKTOP_TKINTER, WEB_DJANGO]

    def _visualize(self, obj, **kwargs):
        import matplotlib.image as mpimg
        import matplotlib.pyplot as plt
        png = self.protocol._getExtraPath("model", "curves.png")
        if not os.path.exists(png):
            return [self.errorMessage("No training curves yet.")]
        fig, ax = plt.subplots(figsize=(6, 4.5))
        ax.imshow(mpimg.imread(png))
        ax.axis("off")
        fig.canvas.manager.set_window_title("DeepHEMNMA training")
        return [Shower(fig)]


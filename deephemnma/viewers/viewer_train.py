"""Training curves and model summary."""
import os

from pyworkflow.protocol.params import LabelParam

from ..protocols.protocol_train import DeepHEMNMAProtTrain
from .common import FormViewer, Shower, run_title


class DeepHEMNMATrainViewer(FormViewer):
    """The training and validation loss per epoch (the train stage's
    curves.csv, drawn as in its curves.png) and the model's description."""
    _label = "training (curves, model)"
    _targets = [DeepHEMNMAProtTrain]

    def _defineParams(self, form):
        form.addSection(label="Visualization")
        form.addParam("showCurves", LabelParam, label="Training curves",
                      help="Training and validation loss per epoch (L1 on standardised "
                           "targets); the best epoch's model is the output.")
        form.addParam("showModel", LabelParam, label="Model",
                      help="What the model predicts (modes), its input size and its files.")

    def _handlers(self):
        return {"showCurves": self._showCurves, "showModel": self._showModel}

    def figure(self):
        import matplotlib.pyplot as plt
        from ..stages.train import plot_curves, read_curves
        fig, ax = plt.subplots(figsize=(6, 4.5))
        history = read_curves(self.protocol.trainOutputs().curves_csv)
        plot_curves(history, ax)
        ax.set_title(f"{self.protocol.getRunName()}: {len(history)} epochs")
        fig.tight_layout()
        return fig

    def _showCurves(self, param=None):
        if not os.path.exists(self.protocol.trainOutputs().curves_csv):
            return [self.errorMessage("No training curves yet.")]
        return [Shower(self.figure(), run_title(self.protocol, "training curves"))]

    def _showModel(self, param=None):
        model = getattr(self.protocol, "outputModel", None)
        if model is None:
            return [self.errorMessage("No model yet.")]
        files = self.protocol.trainOutputs()
        a = os.path.abspath
        return [self.infoMessage(f"{model}\n\nmodel: {a(files.model)}\ncurves: "
                                 f"{a(files.curves_csv)}\nconfiguration: {a(files.config)}",
                                 title=run_title(self.protocol, "model"))]

"""Normal-mode amplitudes of particles, with or without ground truth (real
data): per-mode histograms, two modes against each other, the PCA landscape
and the alignment cost, for HEMNMA alignment, prediction and synthesis."""
from pyworkflow.viewer import DESKTOP_TKINTER, WEB_DJANGO, Viewer

from ..protocols.protocol_align import DeepHEMNMAProtAlign
from ..protocols.protocol_predict import DeepHEMNMAProtPredict
from ..protocols.protocol_synthesize import DeepHEMNMAProtSynthesize
from .common import Shower, numbers_or_default


class DeepHEMNMAAmplitudesViewer(Viewer):
    """The amplitudes of the protocol's output particles (``outputParticles``),
    modes labelled by their HEMNMA numbers; the figure is also saved as
    ``extra/amplitudes.png``."""
    _label = "amplitudes and landscape"
    _targets = [DeepHEMNMAProtAlign, DeepHEMNMAProtPredict, DeepHEMNMAProtSynthesize]
    _environments = [DESKTOP_TKINTER, WEB_DJANGO]

    def values(self):
        """(amplitudes (n, k), cost (n,) or None, mode numbers) of the output."""
        import numpy as np
        from ..protocols.convert import COST_ATTR, NMA_ATTR
        q, cost = [], []
        for p in self.protocol.outputParticles.iterItems(orderBy="id"):
            if hasattr(p, NMA_ATTR):
                q.append([float(x) for x in getattr(p, NMA_ATTR)])
                c = getattr(p, COST_ATTR, None)
                cost.append(float(c) if c is not None and c.get() is not None else np.nan)
        q = np.array(q, dtype=np.float64).reshape(len(q), -1)
        cost = np.array(cost)
        cost = cost if len(cost) and np.isfinite(cost).any() else None
        return q, cost, numbers_or_default(self.protocol, q.shape[1])

    def figure(self):
        from .plots import amplitude_figure, save
        q, cost, numbers = self.values()
        fig = amplitude_figure(q, numbers, cost,
                               title=f"{self.protocol.getRunName()}: {len(q)} particles")
        save(fig, self.protocol._getExtraPath("amplitudes.png"))
        return fig

    def _visualize(self, obj, **kwargs):
        parts = getattr(self.protocol, "outputParticles", None)
        if parts is None or not parts.getSize():
            return [self.errorMessage("No output particles yet.")]
        if not hasattr(parts.getFirstItem(), "_xmipp_nmaDisplacements"):
            return [self.errorMessage("The output particles carry no normal-mode amplitudes.")]
        return [Shower(self.figure())]

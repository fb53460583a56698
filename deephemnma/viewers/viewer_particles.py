"""Particles with normal-mode amplitudes, the output of synthesis, HEMNMA
alignment, refinement and prediction: one viewer whose form offers the
amplitudes and their landscape (with or without ground truth: real data)
and, where the particles keep a ground truth (synthesized ones), the
accuracy against it (estimated vs true amplitudes per mode, angular and
shift errors, and the table of :func:`deephemnma.core.metrics.evaluate`, the
paper's Table 1 quantities). Modes are labelled by their HEMNMA numbers."""
import numpy as np
from pyworkflow.protocol.params import LabelParam

from ..protocols.protocol_align import DeepHEMNMAProtAlign
from ..protocols.protocol_predict import DeepHEMNMAProtPredict
from ..protocols.protocol_refine import DeepHEMNMAProtRefine
from ..protocols.protocol_synthesize import DeepHEMNMAProtSynthesize
from .common import AccuracyFiles, FormViewer, Shower, mode_label, numbers_or_default, run_title


def has_truth(parts):
    """Whether the particles keep a ground truth (synthesized particles)."""
    from ..protocols.convert import GT_ATTRS
    first = parts.getFirstItem() if parts is not None and parts.getSize() else None
    return first is not None and all(hasattr(first, a) for a in GT_ATTRS)


def amplitude_values(protocol, parts):
    """(amplitudes (n, k), cost (n,) or None, HEMNMA mode numbers) of ``parts``."""
    from ..protocols.convert import COST_ATTR, NMA_ATTR
    q, cost = [], []
    for p in parts.iterItems(orderBy="id"):
        if hasattr(p, NMA_ATTR):
            q.append([float(x) for x in getattr(p, NMA_ATTR)])
            c = getattr(p, COST_ATTR, None)
            cost.append(float(c) if c is not None and c.get() is not None else np.nan)
    q = np.array(q, dtype=np.float64).reshape(len(q), -1)
    cost = np.array(cost)
    cost = cost if len(cost) and np.isfinite(cost).any() else None
    return q, cost, numbers_or_default(protocol, q.shape[1])


def amplitudes_figure(protocol, parts):
    """The amplitudes figure of ``parts`` (:func:`deephemnma.viewers.plots.
    amplitude_figure`), also saved as the protocol's ``extra/amplitudes.png``."""
    from .plots import amplitude_figure, save
    q, cost, numbers = amplitude_values(protocol, parts)
    fig = amplitude_figure(q, numbers, cost,
                           title=f"{protocol.getRunName()}: {len(q)} particles")
    save(fig, protocol._getExtraPath("amplitudes.png"))
    return fig


def accuracy(protocol, parts):
    """-> (metrics dict, estimated Table, true Table, png path, figure), or
    None when ``parts`` carry no ground truth. As in the evaluate stage,
    rows with a non-finite value in either table are left out. Writes the
    :class:`AccuracyFiles` of the protocol's extra folder."""
    import matplotlib.pyplot as plt
    from ..core.metrics import (angular_errors, evaluate, format_table, match_rows,
                                save_json, shift_errors)
    from ..protocols.convert import particles_to_table, truth_table
    from ..stages.base import finite_rows
    from ..stages.evaluate import COMPARED
    from ..utils import atomic_path
    truth = truth_table(parts)
    if truth is None:
        return None
    est = particles_to_table(parts)
    est, truth = est.subset(finite_rows(est, COMPARED)), truth.subset(
        finite_rows(truth, COMPARED))
    ps = parts.getSamplingRate()
    res = evaluate(est, truth, ps)
    ie, it = match_rows(est, truth)
    e, t = est.subset(ie), truth.subset(it)
    qe, qt = e["nmaDisplacements"], t["nmaDisplacements"]
    m = qe.shape[1]
    numbers = numbers_or_default(protocol, m)     # HEMNMA numbers: mode 7, 8, ...
    fig, axes = plt.subplots(1, m + 2, figsize=(3.2 * (m + 2), 3.6))
    for k in range(m):
        ax = axes[k]
        ax.scatter(qt[:, k], qe[:, k], s=3, alpha=0.4)
        lim = [min(qt[:, k].min(), qe[:, k].min()), max(qt[:, k].max(), qe[:, k].max())]
        ax.plot(lim, lim, "k--", lw=0.8)
        ax.set_xlabel(f"true amplitude, {mode_label(numbers[k])}")
        ax.set_ylabel("estimated")
        ax.set_title(f"{mode_label(numbers[k])}: MAE {np.abs(qe[:, k] - qt[:, k]).mean():.1f}")
    a = angular_errors(e.angles(), t.angles())
    axes[m].hist(a, bins=50)
    axes[m].set_xlabel("angular error (deg)")
    axes[m].set_title(f"angles: median {np.median(a):.2f} deg")
    s = shift_errors(e.shifts(), t.shifts(), ps)
    axes[m + 1].hist(s, bins=40, label=["x", "y"])
    axes[m + 1].set_xlabel("shift error (Å)")
    axes[m + 1].legend()
    fig.suptitle(f"{protocol.getRunName()}: accuracy of {len(qe)} particles against the "
                 "ground truth")
    fig.tight_layout()
    files = AccuracyFiles(protocol._getExtraPath())
    with atomic_path(files.png) as tmp:
        fig.savefig(tmp, dpi=90, format="png")
    with atomic_path(files.json) as tmp:
        save_json(res, tmp)
    with atomic_path(files.table) as tmp, open(tmp, "w") as f:
        f.write(format_table(res, "vs ground truth") + "\n")
    return res, e, t, files.png, fig


class DeepHEMNMAParticlesViewer(FormViewer):
    """The output particles of synthesis, HEMNMA alignment, refinement and
    prediction: their amplitudes and landscape; the accuracy against the
    ground truth where the particles keep one."""
    _label = "particles (amplitudes, landscape, accuracy)"
    _targets = [DeepHEMNMAProtSynthesize, DeepHEMNMAProtAlign, DeepHEMNMAProtRefine,
                DeepHEMNMAProtPredict]

    def particles(self):
        """The protocol's output particles (None before it has run)."""
        return getattr(self.protocol, "outputParticles", None)

    def _defineParams(self, form):
        form.addSection(label="Visualization")
        form.addParam("showAmplitudes", LabelParam,
                      label="Amplitudes and landscape",
                      help="Histogram of each mode's amplitude, the first two modes against "
                           "each other, the landscape (PCA of the amplitudes) and the "
                           "alignment cost; modes labelled by their HEMNMA numbers. Saved as "
                           "extra/amplitudes.png.")
        if isinstance(self.protocol, DeepHEMNMAProtSynthesize):
            form.addParam("aboutTruth", LabelParam,
                          label="These amplitudes, angles and shifts are the ground truth",
                          help="They are kept on the particles: the alignment, refinement "
                               "and prediction viewers compare their results with them.")
        elif has_truth(self.particles()):
            form.addParam("showAccuracy", LabelParam,
                          label="Accuracy against the ground truth",
                          help="Estimated vs true amplitude per mode, angular and shift "
                               "errors; the table (the paper's Table 1 quantities) is saved "
                               "as extra/accuracy.md and .json, the figure as "
                               "extra/accuracy.png.")
        else:
            form.addParam("noAccuracy", LabelParam,
                          label="Accuracy: these particles have no ground truth",
                          help="Only synthesized particles keep one; on real data look at "
                               "the amplitudes and the landscape.")

    def _handlers(self):
        return {"showAmplitudes": self._showAmplitudes, "showAccuracy": self._showAccuracy}

    def _showAmplitudes(self, param=None):
        parts = self.particles()
        if parts is None or not parts.getSize():
            return [self.errorMessage("No output particles yet.")]
        if not hasattr(parts.getFirstItem(), "_xmipp_nmaDisplacements"):
            return [self.errorMessage("The output particles carry no normal-mode amplitudes.")]
        return [Shower(amplitudes_figure(self.protocol, parts),
                       run_title(self.protocol, "amplitudes"))]

    def accuracy(self):
        """:func:`accuracy` of the output particles."""
        return accuracy(self.protocol, self.particles())

    def _showAccuracy(self, param=None):
        out = self.accuracy()
        if out is None:
            return [self.errorMessage("These particles have no ground truth (only "
                                      "synthesized particles keep one).")]
        return [Shower(out[-1], run_title(self.protocol, "accuracy"))]

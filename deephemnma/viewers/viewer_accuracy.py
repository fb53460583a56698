"""Accuracy against the ground truth kept on synthetic particles: estimated vs
true amplitudes per mode, angular and shift error histograms, and the table of
:func:`deephemnma.core.metrics.evaluate` (the paper's Table 1 quantities). As in
the evaluate stage, rows with a non-finite value in either table are left out."""
import numpy as np
from pyworkflow.viewer import DESKTOP_TKINTER, WEB_DJANGO, Viewer

from ..protocols.protocol_align import DeepHEMNMAProtAlign
from ..protocols.protocol_predict import DeepHEMNMAProtPredict
from .common import AccuracyFiles, Shower, mode_label, numbers_or_default


class DeepHEMNMAAccuracyViewer(Viewer):
    _label = "accuracy against ground truth"
    _targets = [DeepHEMNMAProtAlign, DeepHEMNMAProtPredict]
    _environments = [DESKTOP_TKINTER, WEB_DJANGO]

    def files(self):
        """The files this viewer writes (:class:`AccuracyFiles`)."""
        return AccuracyFiles(self.protocol._getExtraPath())

    def accuracy(self):
        """-> (metrics dict, estimated Table, true Table, png path), or None when
        the particles carry no ground truth. Writes the :meth:`files`."""
        from ..core.metrics import (angular_errors, evaluate, format_table, match_rows,
                                    save_json, shift_errors)
        from ..protocols.convert import particles_to_table, truth_table
        from ..stages.base import finite_rows
        from ..stages.evaluate import COMPARED
        from ..utils import atomic_path
        parts = self.protocol.outputParticles
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
        import matplotlib.pyplot as plt
        qe, qt = e["nmaDisplacements"], t["nmaDisplacements"]
        m = qe.shape[1]
        numbers = numbers_or_default(self.protocol, m)     # HEMNMA numbers: mode 7, 8, ...
        fig, axes = plt.subplots(1, m + 2, figsize=(3.2 * (m + 2), 3.4))
        for k in range(m):
            ax = axes[k]
            ax.scatter(qt[:, k], qe[:, k], s=3, alpha=0.4)
            lim = [min(qt[:, k].min(), qe[:, k].min()), max(qt[:, k].max(), qe[:, k].max())]
            ax.plot(lim, lim, "k--", lw=0.8)
            ax.set_xlabel(f"true amplitude, {mode_label(numbers[k])}")
            ax.set_ylabel("estimated")
            ax.set_title(f"{mode_label(numbers[k])}: MAE "
                         f"{np.abs(qe[:, k] - qt[:, k]).mean():.1f}")
        a = angular_errors(e.angles(), t.angles())
        axes[m].hist(a, bins=50)
        axes[m].set_xlabel("angular error (deg)")
        axes[m].set_title(f"angles: median {np.median(a):.2f} deg")
        s = shift_errors(e.shifts(), t.shifts(), ps)
        axes[m + 1].hist(s, bins=40, label=["x", "y"])
        axes[m + 1].set_xlabel("shift error (Å)")
        axes[m + 1].legend()
        fig.tight_layout()
        files = self.files()
        with atomic_path(files.png) as tmp:
            fig.savefig(tmp, dpi=90, format="png")
        with atomic_path(files.json) as tmp:
            save_json(res, tmp)
        with atomic_path(files.table) as tmp, open(tmp, "w") as f:
            f.write(format_table(res, "vs ground truth") + "\n")
        self._fig = fig
        return res, e, t, files.png

    def _visualize(self, obj, **kwargs):
        out = self.accuracy()
        if out is None:
            return [self.errorMessage("These particles carry no ground truth (only "
                                      "synthesized particles do): see the 'amplitudes and "
                                      "landscape' viewer.")]
        return [Shower(self._fig)]

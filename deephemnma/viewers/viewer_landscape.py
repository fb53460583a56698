"""Landscape viewer: density scatter of the PCA space with interactive
selection (lasso) that creates a particle subset as a new output, per-mode
amplitude histograms. The files are those of the protocol's landscape
:class:`deephemnma.stages.landscape.Outputs`."""
import numpy as np
from pyworkflow.viewer import DESKTOP_TKINTER, WEB_DJANGO, Viewer

from ..protocols.protocol_landscape import DeepHEMNMAProtLandscape
from .common import Shower


class DeepHEMNMALandscapeViewer(Viewer):
    _label = "conformational landscape"
    _targets = [DeepHEMNMAProtLandscape]
    _environments = [DESKTOP_TKINTER, WEB_DJANGO]

    def _coords(self):
        """(the landscape Table, its coordinates (n, k) on PC1..PCk)."""
        from ..io.metadata import read_metadata
        t = read_metadata(self.protocol.landscapeOutputs().landscape)
        pcs = sorted((c for c in t.columns if c.startswith("PC") and c[2:].isdigit()),
                     key=lambda c: int(c[2:]))
        return t, np.column_stack([t[c] for c in pcs])

    def _visualize(self, obj, **kwargs):
        import matplotlib.pyplot as plt
        from matplotlib.widgets import LassoSelector
        t, c = self._coords()
        fig, axes = plt.subplots(1, 2, figsize=(11, 4.5))
        ax = axes[0]
        y = c[:, 1] if c.shape[1] > 1 else np.zeros(len(c))
        ax.hexbin(c[:, 0], y, gridsize=120, bins="log", mincnt=1, cmap="viridis")
        ax.set_xlabel("PC1")
        ax.set_ylabel("PC2")
        ax.set_title("drag a lasso to create a subset")
        q = t["nmaDisplacements"]
        for k in range(q.shape[1]):
            axes[1].hist(q[:, k], bins=60, histtype="step", label=f"mode {k + 1}")
        axes[1].set_title("amplitude histograms")
        axes[1].legend()
        self._sel = None

        def on_select(verts):
            from matplotlib.path import Path
            self.createSubset(Path(verts).contains_points(np.column_stack([c[:, 0], y])))
        self._lasso = LassoSelector(ax, on_select)
        return [Shower(fig)]

    def createSubset(self, mask):
        """Register the selected particles as a new output of the protocol
        (the ProtUserSubSet way: a new SetOfParticles in the project)."""
        from ..protocols.convert import fill_particles
        t, _ = self._coords()
        prot = self.protocol
        n = len([a for a in dir(prot) if a.startswith("outputSelection")]) + 1
        sub = prot._createSetOfParticles(suffix=f"selection{n}")
        fill_particles(sub, prot.inputParticles.get(), t.subset(mask), with_alignment=False)
        prot._defineOutputs(**{f"outputSelection{n}": sub})
        prot._store()
        return sub


"""Landscape viewer: density of the particles on PC1, PC2 with a lasso to
select particles, and the amplitude histograms (modes labelled by their
HEMNMA numbers). The files are those of the protocol's landscape
:class:`deephemnma.stages.landscape.Outputs`.

Selecting is not registering: a lasso stroke only marks particles (red);
the "Create subset" button asks for the subset's name, and only a confirmed
name registers the marked particles, as Scipion's own subset viewers do: one
new ``ProtUserSubSet`` run per confirmed selection, whose ``outputParticles``
feed any protocol (e.g. reconstruct)."""
import os
import time

import numpy as np
from pyworkflow.viewer import DESKTOP_TKINTER, WEB_DJANGO, Viewer

from ..protocols.protocol_landscape import DeepHEMNMAProtLandscape
from .common import Shower, mode_label, numbers_or_default


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

    def modeNumbers(self, k):
        """HEMNMA numbers of the ``k`` amplitudes of the landscape's particles."""
        return numbers_or_default(self.protocol, k)

    # ---- the figure --------------------------------------------------------
    def figure(self):
        """The figure: density on PC1, PC2 (with the lasso), amplitude
        histograms, and the "Create subset" button."""
        import matplotlib.pyplot as plt
        from matplotlib.widgets import Button, LassoSelector
        t, c = self._coords()
        self._table, self._xy = t, np.column_stack(
            [c[:, 0], c[:, 1] if c.shape[1] > 1 else np.zeros(len(c))])
        fig, axes = plt.subplots(1, 2, figsize=(11, 4.8))
        self._fig = fig
        fig.subplots_adjust(bottom=0.2, wspace=0.3)
        ax = axes[0]
        ax.hexbin(self._xy[:, 0], self._xy[:, 1], gridsize=120, bins="log", mincnt=1,
                  cmap="viridis")
        if "source" in t:      # the protocol's second set, drawn apart
            from ..core.landscape import draw_apart
            draw_apart(ax, self._xy[:, 0], self._xy[:, 1],
                       np.asarray(t["source"]) == DeepHEMNMAProtLandscape.APART_FILE,
                       self.protocol.apartLabel.get())
        ax.set_xlabel("PC1")
        ax.set_ylabel("PC2" if c.shape[1] > 1 else "")
        self._ax = ax
        self._marked = ax.scatter([], [], s=3, c="red")
        self._pending = None
        self._showSelection()
        q = np.asarray(t["nmaDisplacements"], float).reshape(len(t), -1)
        for k, n in enumerate(self.modeNumbers(q.shape[1])):
            axes[1].hist(q[:, k], bins=60, histtype="step", label=mode_label(n))
        axes[1].set_xlabel("amplitude")
        axes[1].set_title("amplitude histograms")
        axes[1].legend(fontsize=8)
        self._lasso = LassoSelector(ax, self._onLasso)
        self._button = Button(fig.add_axes([0.05, 0.03, 0.16, 0.07]), "Create subset")
        self._button.on_clicked(lambda event: self.confirmSelection())
        return fig

    def _onLasso(self, verts):
        from matplotlib.path import Path
        self.select(Path(verts).contains_points(self._xy))

    def select(self, mask):
        """Mark the particles of ``mask`` (a lasso stroke): nothing is
        registered until :meth:`confirmSelection`."""
        mask = np.asarray(mask, bool)
        self._pending = mask if mask.any() else None
        self._showSelection()

    def _showSelection(self):
        n = 0 if self._pending is None else int(self._pending.sum())
        self._marked.set_offsets(self._xy[self._pending] if n else np.empty((0, 2)))
        self._ax.set_title(f"{n} particles selected: 'Create subset' registers them" if n
                           else "draw a lasso around particles to select them")
        if getattr(self, "_fig", None) is not None:
            self._fig.canvas.draw_idle()

    def confirmSelection(self, name=None, wait=False):
        """Ask for the name of a subset of the selected particles (``name``
        given: no dialog) and register it (:meth:`createSubset`; ``wait``:
        until its run has finished); a cancelled dialog registers nothing.
        Returns the new run or None."""
        if self._pending is None:
            return None
        n = int(self._pending.sum())
        name = self._askName(n) if name is None else name
        if not name:
            return None
        prot = self.createSubset(self._pending, name, wait=wait)
        self._pending = None
        self._showSelection()
        return prot

    def _askName(self, n):
        """The subset's name from a dialog over the figure (None: cancelled,
        or no interactive window to ask in: then nothing is registered)."""
        canvas = getattr(getattr(self, "_fig", None), "canvas", None)
        widget = getattr(canvas, "get_tk_widget", lambda: None)()
        if widget is None:
            print("deephemnma: no window to confirm the subset in; nothing registered",
                  flush=True)
            return None
        default = f"landscape selection ({n} particles)"
        message = f"Register the {n} selected particles as a new subset? Its name:"
        try:
            from pyworkflow.gui.dialog import askString
            return askString("Create subset", message, widget, entryWidth=40,
                             defaultValue=default)
        except Exception:     # pyworkflow's dialogs need its GUI set up
            from tkinter import simpledialog
            return simpledialog.askstring("Create subset", message, initialvalue=default,
                                          parent=widget)

    def _visualize(self, obj, **kwargs):
        if not os.path.exists(self.protocol.landscapeOutputs().landscape):
            return [self.errorMessage("No landscape yet.")]
        return [Shower(self.figure())]

    # ---- registering -------------------------------------------------------
    def createSubset(self, mask, label=None, wait=False):
        """Register the particles of ``mask`` (rows of landscape.xmd) as a new
        subset of the protocol's ``outputParticles``: a ProtUserSubSet run
        (the way Scipion's subset viewers do) reading the selected ids from
        ``extra/selection_<time>.txt``, launched in the project (``wait``:
        until it has finished). Returns the run."""
        from pwem.protocols import ProtUserSubSet
        t, _ = self._coords()
        mask = np.asarray(mask, bool)
        if len(mask) != len(t) or not mask.any():
            raise ValueError(f"a selection of {len(t)} rows with at least one selected")
        ids = [int(i) for i in np.asarray(t["itemId"])[mask]]
        path = self.protocol._getExtraPath(
            f"selection_{time.strftime('%Y%m%d%H%M%S')}_{int(time.time() * 1e6) % 10**6}.txt")
        with open(path, "w") as fh:
            fh.write(" ".join(map(str, ids)) + "\n")
        project = self.getProject() or self.protocol.getProject()
        prot = project.newProtocol(ProtUserSubSet, outputClassName="SetOfParticles",
                                   sqliteFile=os.path.abspath(path) + ",")
        prot.inputObject.set(self.protocol)
        prot.inputObject.setExtended("outputParticles")
        prot.setObjLabel(label or f"landscape selection ({len(ids)} particles)")
        project.launchProtocol(prot, wait=wait)
        return prot

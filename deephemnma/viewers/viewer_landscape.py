"""Landscape viewer: a form offering the landscape (density of the
particles on PC1, PC2, one legend entry per set, colour bar, the groups,
a lasso to select particles, the amplitude histograms with modes labelled
by their HEMNMA numbers; with the particles' classes, each class in its own
colour and the table of particles per class and group), the groups' maps (slices, FSC, ChimeraX) and the
animations along the principal axes (ChimeraX). The files are those of the
protocol's landscape :class:`deephemnma.stages.landscape.Outputs`.

"Draw a path" records clicks on the landscape as the points of a path (right
click removes the last) and "Save path" writes them to the run's
extra/path.txt, the file the map series protocol takes as its path.

Selecting is not registering: a lasso stroke only marks particles (red);
the "Create subset" button asks for the subset's name, and only a confirmed
name registers the marked particles, as Scipion's own subset viewers do: one
new ``ProtUserSubSet`` run per confirmed selection, whose ``outputParticles``
feed any protocol (e.g. reconstruct)."""
import os
import time

import numpy as np
from pyworkflow.protocol.params import BooleanParam, IntParam, LabelParam

from ..protocols.protocol_landscape import CLASS_COLUMN, DeepHEMNMAProtLandscape
from .common import FormViewer, Shower, _producer, mode_label, numbers_or_default, run_title


class DeepHEMNMALandscapeViewer(FormViewer):
    _label = "conformational landscape (density, groups, maps, animations)"
    _targets = [DeepHEMNMAProtLandscape]

    def _defineParams(self, form):
        out = self.protocol.landscapeOutputs()
        form.addSection(label="Visualization")
        form.addParam("showLandscape", LabelParam,
                      label="Landscape (density, groups, lasso selection)",
                      help="The particles' density on PC1, PC2 (one legend entry per set: "
                           "the second set is drawn apart, as dots), the groups (number and "
                           "size at their centre) and the amplitude histograms. Draw a lasso "
                           "around particles, then 'Create subset' registers them as a new "
                           "subset (a run of the project) that any protocol takes.")
        if os.path.exists(out.class_table):
            form.addParam("colourByClass", BooleanParam, default=True,
                          label="Colour the landscape by class",
                          help="Each class of the particles (the run's Classes or Class "
                               "attribute) in its own colour over a grey density, with a "
                               "legend of the classes and their sizes; No: the density "
                               "alone.")
            form.addParam("showClassTable", LabelParam,
                          label="Particles per class and group",
                          help="The number of particles of each class in each group "
                               "(classes.tsv of the run's landscape folder).")
        groups = [k for k in out.groups() if os.path.exists(out.group_map(k))]
        if groups:
            form.addParam("showGroupMap", IntParam, default=groups[0],
                          label="Map of group",
                          help="Central slices of the group's reconstruction, its FSC with "
                               "the map of the group's centroid model, and a button that "
                               "opens it in ChimeraX. Groups with a map: "
                               + ", ".join(map(str, groups)) + ".")
        else:
            form.addParam("noGroupMap", LabelParam, label="Group maps: none",
                          help="The run made no groups, or did not reconstruct them "
                               "('Reconstruct each group?').")
        axes = out.axes()
        if axes:
            form.addParam("showAxis", IntParam, default=axes[0],
                          label="Animate along principal axis",
                          help="Opens in ChimeraX the reference moved along this axis (1: "
                               "PC1); without ChimeraX, tells where the files are (axis_N.pdb, "
                               ".cxc for ChimeraX, .vmd for VMD). Axes: "
                               + ", ".join(map(str, axes)) + ".")
        else:
            form.addParam("noAxis", LabelParam, label="Animations along the axes: none",
                          help="The run was given no normal modes and reference.")

    def _handlers(self):
        return {"showLandscape": self._showLandscape, "showGroupMap": self._showGroupMap,
                "showAxis": self._showAxis, "showClassTable": self._showClassTable}

    def _showClassTable(self, param=None):
        from .plots import class_table_figure
        rows = self.protocol.classTable()
        if not rows:
            return [self.errorMessage("The run was given no classes.")]
        title = run_title(self.protocol, "particles per class and group")
        return [Shower(class_table_figure(rows, title.replace("DeepHEMNMA ", "")), title)]

    def _showLandscape(self, param=None):
        if not os.path.exists(self.protocol.landscapeOutputs().landscape):
            return [self.errorMessage("No landscape yet.")]
        return [Shower(self.figure(), run_title(self.protocol, "landscape"))]

    def _showGroupMap(self, param=None):
        from .viewer_map import MapShower
        out = self.protocol.landscapeOutputs()
        k = self.showGroupMap.get()
        if not os.path.exists(out.group_map(k)):
            return [self.errorMessage(f"Group {k} has no map.")]
        fsc = out.fsc_json(k) if os.path.exists(out.fsc_json(k)) else None
        return [MapShower(out.group_map(k), f"{self.protocol.getRunName()}, group {k}", fsc,
                          run_title(self.protocol, f"map of group {k}"))]

    def _showAxis(self, param=None):
        return self.chimerax(self.protocol.landscapeOutputs().axis(self.showAxis.get(), ".cxc"))

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

    def groupLabels(self, table):
        """Each row's group (0-based; -1: none) from the group files."""
        from ..io.metadata import read_metadata
        out = self.protocol.landscapeOutputs()
        keys = ["itemId"] + (["source"] if "source" in table else [])
        row = {tuple(r): i for i, r in enumerate(zip(*(np.asarray(table[c]) for c in keys)))}
        labels = np.full(len(table), -1)
        for k in out.groups():
            g = read_metadata(out.group(k))
            for r in zip(*(np.asarray(g[c]) for c in keys)):
                if tuple(r) in row:
                    labels[row[tuple(r)]] = k - 1
        return labels

    def setNames(self):
        """(name of the first set, name of the second set) in the legend."""
        up = _producer(self.protocol.inputParticles, self.getProject())
        first = up.getRunName() if up is not None else "particles"
        return first, self.protocol.apartLabel.get() or "second set"

    # ---- the figure --------------------------------------------------------
    def classes(self, table):
        """(codes (n,), names) of the rows' classes, or None when the
        landscape carries none or the form says not to colour by class."""
        from ..core.landscape import class_codes, class_name
        colour = getattr(self, "colourByClass", None)
        if CLASS_COLUMN not in table or (colour is not None and not colour.get()):
            return None
        codes, keys = class_codes(table[CLASS_COLUMN])
        return codes, [class_name(k) for k in keys]

    def figure(self):
        """The figure: density on PC1, PC2 (with the lasso, the groups, a
        legend entry per set and, with classes, each class in its colour),
        amplitude histograms, and the "Create subset" button."""
        import matplotlib.pyplot as plt
        from matplotlib.widgets import Button, LassoSelector
        from ..core.landscape import draw_apart, draw_classes, draw_groups, load_pca
        t, c = self._coords()
        self._table, self._xy = t, np.column_stack(
            [c[:, 0], c[:, 1] if c.shape[1] > 1 else np.zeros(len(c))])
        x, y = self._xy[:, 0], self._xy[:, 1]
        fig, axes = plt.subplots(1, 2, figsize=(12.5, 5.4), width_ratios=[1.25, 1])
        self._fig = fig
        fig.subplots_adjust(bottom=0.2, wspace=0.3)
        ax = axes[0]
        apart = np.asarray(t["source"]) == DeepHEMNMAProtLandscape.APART_FILE \
            if "source" in t else np.zeros(len(t), bool)
        first, second = self.setNames()
        classes = self.classes(t)
        hb = ax.hexbin(x[~apart], y[~apart], gridsize=120, bins="log", mincnt=1,
                       cmap="viridis" if classes is None else "Greys",
                       label=f"{first} ({int((~apart).sum())}): density")
        from matplotlib.ticker import FormatStrFormatter
        bar = fig.colorbar(hb, ax=ax, label=f"{first}: images per hexagon (log)")
        bar.ax.yaxis.set_major_formatter(FormatStrFormatter("%g"))   # 1, 2, 10, not 10^0
        bar.ax.yaxis.set_minor_formatter(FormatStrFormatter("%g"))
        if classes is not None:
            draw_classes(ax, x, y, *classes)        # each class in its colour
        draw_apart(ax, x, y, apart, second)         # the second set, as dots
        ax.legend(loc="upper right", fontsize=8, markerscale=4)
        self._groups = self.groupLabels(t)
        draw_groups(ax, x, y, self._groups if (self._groups >= 0).any() else None)
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
        axes[1].set_ylabel("images")
        axes[1].set_title("amplitude histograms")
        axes[1].legend(fontsize=8)
        pca = self.protocol.landscapeOutputs().pca
        explained = ""
        if os.path.exists(pca):
            r = load_pca(pca)["explained_variance_ratio"]
            explained = " (" + ", ".join(f"PC{i + 1} {100 * v:.0f} %" for i, v in
                                         enumerate(r[:2])) + " of the variance)"
        ngroups = len(np.unique(self._groups[self._groups >= 0]))
        fig.suptitle(f"{self.protocol.getRunName()}: landscape of {len(t)} particles"
                     f"{explained}" + (f", {ngroups} group{'s' if ngroups > 1 else ''} "
                                       "(red: number and size)" if ngroups else ""))
        self._lasso = LassoSelector(ax, self._onLasso)
        self._button = Button(fig.add_axes([0.05, 0.03, 0.16, 0.07]), "Create subset")
        self._button.on_clicked(lambda event: self.confirmSelection())
        self._drawing, self._pathPoints = False, []
        self._pathLine, = ax.plot([], [], "o-", color="darkorange", lw=1.5, ms=4, zorder=5)
        self._pathButton = Button(fig.add_axes([0.23, 0.03, 0.16, 0.07]), "Draw a path")
        self._pathButton.on_clicked(lambda event: self.togglePath())
        fig.canvas.mpl_connect("button_press_event", self._onClick)
        return fig

    # ---- a path for the map series -----------------------------------------
    def pathFile(self):
        """Where the drawn path is saved: the landscape run's extra/path.txt
        (the series protocol's *Path* field takes this file)."""
        return self.protocol._getExtraPath("path.txt")

    def togglePath(self):
        """"Draw a path": clicks on the landscape add points (right click: the
        last one removed), the lasso rests; "Save path" writes them
        (:meth:`savePath`) and gives the lasso back. Returns the saved file
        or None."""
        if not self._drawing:
            self._drawing, self._pathPoints = True, []
            self._lasso.set_active(False)
            self._pathButton.label.set_text("Save path")
            self._ax.set_title("click the points of the path in order (right click: remove "
                               "the last); 'Save path' writes it")
            self._drawPath()
            return None
        saved = self.savePath()
        if saved is not None:
            self._drawing = False
            self._lasso.set_active(True)
            self._pathButton.label.set_text("Draw a path")
        return saved

    def _onClick(self, event):
        if not self._drawing or event.inaxes is not self._ax or event.xdata is None:
            return
        if event.button == 1:
            self._pathPoints.append((float(event.xdata), float(event.ydata)))
        elif event.button == 3 and self._pathPoints:
            self._pathPoints.pop()
        self._drawPath()

    def _drawPath(self):
        p = np.asarray(self._pathPoints, float).reshape(-1, 2)
        self._pathLine.set_data(p[:, 0], p[:, 1])
        if self._fig is not None:
            self._fig.canvas.draw_idle()

    def savePath(self):
        """Write the clicked points to :meth:`pathFile` (one "x y" line per
        point on PC1, PC2); fewer than 2 distinct points: the title says so
        and nothing is written. Returns the file or None."""
        from ..core.series import format_path, parse_path
        from ..errors import InputError
        from ..utils import atomic_path
        text = format_path(np.asarray(self._pathPoints, float).reshape(-1, 2))
        try:
            parse_path(text, "the path")
        except InputError as e:
            self._ax.set_title(f"{e}: click more points", color="darkred")
            self._fig.canvas.draw_idle()
            return None
        path = self.pathFile()
        with atomic_path(path) as tmp, open(tmp, "w") as fh:
            fh.write(text)
        self._ax.set_title(f"path of {len(self._pathPoints)} points saved: {path} (for 'map "
                           "series along a path')", color="black", fontsize=8)
        self._fig.canvas.draw_idle()
        return path

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

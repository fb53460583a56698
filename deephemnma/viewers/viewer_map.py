"""Maps: the reconstruct protocol's map and any Volume or SetOfVolumes (the
landscape's group maps...): central slices in the three directions, the FSC
curve where a protocol wrote one beside the map (against a reference or the
group's centroid model), the FSC between the map's half maps where the
reconstruct stage wrote it (OUT_fsc_halves.json), and a button that opens
the map in ChimeraX (or says that ChimeraX is not installed, with the
map's path). A map series (the series protocol): the central slice of each
frame, the half-map resolution and the particles per frame along the path,
and a button that plays the series in ChimeraX (series.cxc). Needs no
Xmipp."""
import os
import re

from pwem.objects import SetOfVolumes, Volume
from pyworkflow.viewer import DESKTOP_TKINTER, WEB_DJANGO, Viewer

from ..protocols.protocol_reconstruct import DeepHEMNMAProtReconstruct
from ..protocols.protocol_series import DeepHEMNMAProtSeries
from .common import Shower, guarded, not_installed_text, open_in_chimerax

#: the FSC file the reconstruct protocol writes beside its map (extra/)
RECONSTRUCT_MAP, RECONSTRUCT_FSC = "map.mrc", "fsc.json"


def fsc_beside(path):
    """The FSC JSON a DeepHEMNMA protocol wrote for the map at ``path``
    (reconstruct: extra/fsc.json beside extra/map.mrc; landscape: the
    group's fsc_KK.json beside group_KK.mrc), or None."""
    from ..stages.landscape import Outputs
    folder, name = os.path.split(path)
    if name == RECONSTRUCT_MAP:
        found = os.path.join(folder, RECONSTRUCT_FSC)
    else:
        m = re.fullmatch(r"group_(\d+)\.mrc", name)
        found = Outputs(folder).fsc_json(int(m.group(1))) if m else None
    return found if found and os.path.exists(found) else None


def halves_beside(path):
    """The half-map FSC JSON the reconstruct stage wrote for the map at
    ``path`` (OUT_fsc_halves.json beside OUT.mrc), or None."""
    from ..stages.reconstruct import Outputs
    found = Outputs(path).fsc_halves_json
    return found if os.path.exists(found) else None


class MapShower(Shower):
    """The map figure in its window, with an "Open in ChimeraX" button; the
    half-map FSC is drawn when one was written beside the map."""

    def __init__(self, path, title, fsc_json=None, window_title=None):
        from matplotlib.widgets import Button
        from .plots import map_figure
        self.path = os.path.abspath(path)
        fig = map_figure(self.path, fsc_json, title, halves_beside(self.path))
        super().__init__(fig, window_title or f"DeepHEMNMA map: {title}")
        self.status = fig.text(0.2, 0.015, self.path, fontsize=7, va="bottom", wrap=True)
        self.button = Button(fig.add_axes([0.01, 0.01, 0.15, 0.055]), "Open in ChimeraX")
        self.button.on_clicked(lambda event: self.openChimerax())

    def openChimerax(self):
        """Start ChimeraX on the map; without it, the figure says so.
        Returns the process or None."""
        proc = open_in_chimerax(self.path)
        self.status.set_text(f"ChimeraX opened {self.path}" if proc is not None
                             else not_installed_text(self.path).replace("\n", " "))
        self.status.set_color("black" if proc is not None else "darkred")
        self.fig.canvas.draw_idle()
        return proc


def series_figure(files, title="", max_frames=10):
    """The central XY slice of each frame of the series folder ``files``
    (:class:`deephemnma.stages.series.Outputs`; at most ``max_frames``,
    evenly chosen), and the half-map resolution and particles per frame
    against the frame's position along the path. Returns the figure."""
    import matplotlib.pyplot as plt
    import numpy as np
    from ..io.stacks import read_volume
    rows = files.read_table()
    shown = sorted(set(np.linspace(0, len(rows) - 1, min(max_frames, len(rows)))
                       .round().astype(int).tolist()))
    fig = plt.figure(figsize=(max(8, 1.6 * len(shown)), 5.6))
    grid = fig.add_gridspec(2, len(shown), height_ratios=(1, 1.3))
    for j, i in enumerate(shown):
        vol, _ = read_volume(files.frame_map(int(rows[i]["frame"])))
        ax = fig.add_subplot(grid[0, j])
        ax.imshow(vol[vol.shape[0] // 2], cmap="gray", origin="lower", interpolation="nearest")
        ax.set_title(f"frame {int(rows[i]['frame'])}\n{rows[i]['position']:.3g}", fontsize=8)
        ax.set_xticks([])
        ax.set_yticks([])
    ax = fig.add_subplot(grid[1, :])
    x = [r["position"] for r in rows]
    res = [r.get("res_0.143_masked") for r in rows]
    if any(v is not None for v in res):
        ax.plot(x, [np.nan if v is None else v for v in res], "o-", label="half maps, masked")
        ax.set_ylabel("FSC 0.143 resolution (Å)")
        ax.legend(loc="upper left", fontsize=8)
    else:
        ax.text(0.5, 0.5, "no half maps", ha="center", va="center", transform=ax.transAxes)
    ax.set_xlabel("position along the path")
    twin = ax.twinx()
    twin.bar(x, [r["particles"] for r in rows], width=0.5 * (np.ptp(x) / max(1, len(x) - 1)),
             alpha=0.2, color="grey")
    twin.set_ylabel("particles")
    ax.set_zorder(twin.get_zorder() + 1)       # the resolution over the bars
    ax.patch.set_visible(False)
    fig.suptitle(title or f"{len(rows)} maps", fontsize=10)
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    return fig


class SeriesShower(Shower):
    """The series figure in its window, with a "Play in ChimeraX" button
    that opens series.cxc."""

    def __init__(self, files, title):
        from matplotlib.widgets import Button
        self.files = files
        self.path = os.path.abspath(files.chimerax)
        fig = series_figure(files, title)
        super().__init__(fig, f"DeepHEMNMA map series: {title}")
        self.status = fig.text(0.2, 0.015, self.path, fontsize=7, va="bottom", wrap=True)
        self.button = Button(fig.add_axes([0.01, 0.01, 0.15, 0.05]), "Play in ChimeraX")
        self.button.on_clicked(lambda event: self.openChimerax())

    def openChimerax(self):
        """Start ChimeraX on series.cxc; without it, the figure says so.
        Returns the process or None."""
        proc = open_in_chimerax(self.path)
        self.status.set_text(f"ChimeraX plays {self.path}" if proc is not None
                             else not_installed_text(self.path).replace("\n", " "))
        self.status.set_color("black" if proc is not None else "darkred")
        self.fig.canvas.draw_idle()
        return proc


class DeepHEMNMAMapViewer(Viewer):
    """Slices, FSC and ChimeraX for maps: the reconstruct protocol's output,
    a Volume, or the volumes of a SetOfVolumes (at most :attr:`MAX_MAPS`
    windows); the series protocol's series in one window."""
    _label = _name = "DeepHEMNMA map (slices, FSC, ChimeraX)"   # _name: in menus
    _targets = [DeepHEMNMAProtReconstruct, DeepHEMNMAProtSeries, Volume, SetOfVolumes]
    _environments = [DESKTOP_TKINTER, WEB_DJANGO]
    MAX_MAPS = 8

    def maps(self, obj):
        """(path, title, FSC JSON or None) of each map of ``obj``."""
        if isinstance(obj, DeepHEMNMAProtReconstruct):
            vol = getattr(obj, "outputVolume", None)
            if vol is None:
                return []
            fsc = obj._getExtraPath(RECONSTRUCT_FSC)
            return [(vol.getFileName(), obj.getRunName(), fsc if os.path.exists(fsc) else None)]
        run = getattr(self, "protocol", None)
        run = run.getRunName() + ", " if hasattr(run, "getRunName") else ""
        out = []
        # a set's iterator hands the same item object each time: read it at once
        for v in [obj] if isinstance(obj, Volume) else obj.iterItems(orderBy="id"):
            path = v.getFileName()
            out.append((path, v.getObjLabel() or run + os.path.basename(path),
                        fsc_beside(path)))
            if len(out) == self.MAX_MAPS:
                break
        return out

    def _visualize(self, obj, **kwargs):
        return guarded(self, "map viewer", self._views)(obj)

    def _views(self, obj):
        if isinstance(obj, DeepHEMNMAProtSeries):
            files = obj.seriesOutputs()
            if not getattr(obj, "outputVolumes", None) or not os.path.exists(files.table):
                return [self.errorMessage("No map series yet.")]
            return [SeriesShower(files, obj.getRunName())]
        maps = self.maps(obj)
        if not maps:
            return [self.errorMessage("No map yet.")]
        views = [MapShower(path, title, fsc) for path, title, fsc in maps]
        n = obj.getSize() if isinstance(obj, SetOfVolumes) else len(maps)
        if n > len(maps):
            views.append(self.infoMessage(f"Showing the first {len(maps)} of {n} maps."))
        return views

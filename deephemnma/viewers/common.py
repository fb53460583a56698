"""What the viewers share."""
import dataclasses
import os

from pyworkflow.viewer import DESKTOP_TKINTER, WEB_DJANGO, ProtocolViewer


class Shower:
    """A matplotlib figure as a Scipion view (``show()``), in a window
    titled ``title``. Only this figure is shown (``plt.show()`` would also
    show any other figure pyplot holds)."""

    def __init__(self, fig, title):
        self.fig = fig
        self.title = title
        set_window_title(fig, title)

    def show(self):
        import warnings
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")      # non-interactive backend: nothing to show
            self.fig.show()


def set_window_title(fig, title):
    """Title the window of a pyplot figure (a no-op without one)."""
    fig._deephemnma_title = title
    manager = getattr(fig.canvas, "manager", None)
    if manager is not None:
        manager.set_window_title(title)


def window_title(fig):
    """The title given by :func:`set_window_title` (None without a window).
    Read from the Tk window where there is one."""
    manager = getattr(fig.canvas, "manager", None)
    window = getattr(manager, "window", None)
    if window is not None and hasattr(window, "wm_title"):
        return window.wm_title()
    return getattr(fig, "_deephemnma_title", None)


def run_title(protocol, what):
    """'DeepHEMNMA <what>: <run name>', the title of a viewer's window."""
    name = protocol.getRunName() if hasattr(protocol, "getRunName") else ""
    return f"DeepHEMNMA {what}" + (f": {name}" if name else "")


def guarded(viewer, label, handler):
    """``handler`` (paramName -> list of views) made safe for the GUI: an
    error closes the figures it had opened (half-built, they would pop up in
    the next viewer) and becomes a message window naming ``label``; the
    traceback goes to the log."""
    def run(*args, **kwargs):
        import logging
        import matplotlib.pyplot as plt
        before = set(plt.get_fignums())
        try:
            return handler(*args, **kwargs)
        except Exception as e:
            for num in set(plt.get_fignums()) - before:
                plt.close(num)
            logging.getLogger(__name__).exception("deephemnma viewer: %s failed", label)
            return [viewer.errorMessage(f"{label}: {type(e).__name__}: {e}",
                                        title="DeepHEMNMA viewer")]
    return run


@dataclasses.dataclass
class AccuracyFiles:
    """The files the accuracy viewer writes in a protocol's extra folder."""
    folder: str

    @property
    def png(self):
        """Estimated vs true amplitudes per mode, angular and shift errors."""
        return os.path.join(self.folder, "accuracy.png")

    @property
    def json(self):
        """The results of :func:`deephemnma.core.metrics.evaluate`."""
        return os.path.join(self.folder, "accuracy.json")

    @property
    def table(self):
        """The same results as a Markdown table."""
        return os.path.join(self.folder, "accuracy.md")


# --------------------------------------------------------------------------
# mode numbers: every viewer labels amplitudes by their HEMNMA numbers
def mode_label(number):
    """'mode 7': the label of HEMNMA mode ``number`` in every plot."""
    return f"mode {int(number)}"


def default_numbers(k):
    """HEMNMA's convention when nothing says otherwise: the first ``k``
    flexible modes, 7, 8, ..."""
    from ..core.nma import N_RIGID
    return list(range(N_RIGID + 1, N_RIGID + 1 + int(k)))


def _producer(pointer, project=None):
    """The protocol whose output ``pointer`` points to (None if unknown)."""
    from pyworkflow.protocol import Protocol
    if pointer is None or not hasattr(pointer, "getObjValue"):
        return None
    value = pointer.getObjValue()
    if isinstance(value, Protocol):
        return value
    obj = pointer.get()
    if obj is None or project is None:
        return None
    parent = obj.getObjParentId() if hasattr(obj, "getObjParentId") else None
    try:
        prot = project.getProtocol(int(parent)) if parent else None
    except Exception:      # not stored in this project
        return None
    return prot if isinstance(prot, Protocol) else None


def amplitude_numbers(protocol, k, project=None, _depth=0):
    """HEMNMA numbers of the ``k`` amplitudes (``_xmipp_nmaDisplacements``)
    that ``protocol``'s output particles carry: the mode list of a HEMNMA
    alignment or synthesis, the model's modes for a prediction, else those of
    the protocol that produced its input particles (followed upstream, e.g.
    through a subset or a split), else the first flexible modes of its
    normal modes set; None when nothing tells."""
    from ..core.nma import flexible_numbers, mode_number, parse_mode_list
    project = project or (protocol.getProject() if hasattr(protocol, "getProject") else None)
    nums = None
    try:
        if hasattr(protocol, "modeList") and hasattr(protocol, "inputModes"):
            nums = parse_mode_list(protocol.modeList.get())      # align, synthesize
        elif hasattr(protocol, "inputModel") and protocol.inputModel.get() is not None:
            nums = protocol.inputModel.get().getModeNumbers()     # predict
    except Exception:
        nums = None
    if nums and len(nums) == k:
        return [int(n) for n in nums]
    if _depth < 8:
        for attr in ("inputParticles", "inputSet", "inputObject"):
            up = _producer(getattr(protocol, attr, None), project)
            if up is not None and up is not protocol:
                found = amplitude_numbers(up, k, project, _depth + 1)
                if found:
                    return found
    modes = getattr(protocol, "inputModes", None)
    modes = modes.get() if modes is not None and hasattr(modes, "get") else None
    if modes is not None:
        try:
            return flexible_numbers([mode_number(m.getModeFile()) for m in modes.iterItems()
                                     if mode_number(m.getModeFile()) is not None], k)
        except Exception:
            return None
    return None


def numbers_or_default(protocol, k):
    """:func:`amplitude_numbers`, or 7, 8, ... when nothing tells."""
    return amplitude_numbers(protocol, k) or default_numbers(k)


# --------------------------------------------------------------------------
# ChimeraX
#: the names ChimeraX's installers give its command
CHIMERAX_NAMES = ("chimerax", "ChimeraX", "chimerax-daily", "ucsf-chimerax")
#: where its installers put it when it is not on the PATH
CHIMERAX_GLOBS = ("/usr/bin/chimerax*", "/opt/UCSF/ChimeraX*/bin/ChimeraX",
                  "/usr/lib/ucsf-chimerax*/bin/ChimeraX", "/usr/local/bin/chimerax*",
                  os.path.expanduser("~/chimerax*/bin/ChimeraX"),
                  "/Applications/ChimeraX*.app/Contents/MacOS/ChimeraX")


def find_chimerax():
    """ChimeraX's executable (the PATH first, then its usual install
    folders), or None when it is not installed."""
    import glob
    import shutil
    for name in CHIMERAX_NAMES:
        found = shutil.which(name)
        if found:
            return found
    for pattern in CHIMERAX_GLOBS:
        for found in sorted(glob.glob(pattern), reverse=True):
            if os.path.isfile(found) and os.access(found, os.X_OK):
                return found
    return None


def not_installed_text(path):
    """What to tell when ChimeraX is not installed, naming ``path``."""
    return ("ChimeraX is not installed (no " + " or ".join(CHIMERAX_NAMES[:2]) +
            f" on the PATH). Open it in ChimeraX yourself:\n{path}")


def open_in_chimerax(path):
    """Start ChimeraX on ``path`` (a map, a PDB or a .cxc script, run from
    its folder); returns the process, or None when ChimeraX is not
    installed."""
    import subprocess
    exe = find_chimerax()
    if exe is None:
        return None
    path = os.path.abspath(path)
    return subprocess.Popen([exe, path], cwd=os.path.dirname(path), start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


# --------------------------------------------------------------------------
# one viewer per protocol: a form of what to show


class FormViewer(ProtocolViewer):
    """A protocol's viewer: "Analyze Results" opens its form, one line per
    thing to show, each shown by its eye button. Subclasses define
    ``_defineParams(form)`` (LabelParam/IntParam lines) and
    ``_handlers()`` -> {param name: function(param name) -> views}; a
    line without a handler is a note. Every handler is :func:`guarded`."""
    _environments = [DESKTOP_TKINTER, WEB_DJANGO]

    def _handlers(self):
        return {}

    def visualize(self, obj, **kwargs):
        """Opens the form (pyworkflow's ProtocolViewer.visualize, which
        titles its window by the class name: retitled by what it shows)."""
        root = getattr(kwargs.get("windows"), "root", None)    # the project window
        if root is not None:
            root.after(50, self._retitleForm, root)   # once the form's window exists
        super().visualize(obj, **kwargs)

    def _retitleForm(self, root, tries=100):
        window = getattr(self, "formWindow", None)
        if window is None:
            if tries:
                root.after(50, self._retitleForm, root, tries - 1)
        elif window.root.winfo_exists():
            window.root.title(self.formTitle())

    def formTitle(self):
        """The form window's title: 'DeepHEMNMA <what it shows>: <run name>'."""
        return run_title(self.protocol, self._label)

    def _getVisualizeDict(self):
        out = {}
        for name, fn in self._handlers().items():
            param = self._definition.getParam(name) if self._definition else None
            if param is not None:        # a line this protocol's form has
                out[name] = guarded(self, param.label.get(), fn)
        return out

    def chimerax(self, path):
        """Views for "open ``path`` in ChimeraX": none once it is started, a
        message naming the file when it is not installed."""
        path = os.path.abspath(path)
        if not os.path.exists(path):
            return [self.errorMessage(f"File not found: {path}", title="DeepHEMNMA viewer")]
        if open_in_chimerax(path) is None:
            return [self.infoMessage(not_installed_text(path), title="ChimeraX")]
        return []

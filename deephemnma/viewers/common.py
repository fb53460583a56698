"""What the viewers share."""
import dataclasses
import os


class Shower:
    """A matplotlib figure as a Scipion viewer result (``show()``)."""

    def __init__(self, fig):
        self.fig = fig

    def show(self):
        import matplotlib.pyplot as plt
        plt.show()


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

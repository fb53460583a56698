"""Normal modes: eigenvalue and collectivity of each mode (HEMNMA numbers),
and one animation per flexible mode to open in ChimeraX (or VMD).

Nothing here imports ProDy: Scipion's GUI runs Python with ``-O``, under
which ProDy's import fails (Biopython 1.81); the reference is read by
:func:`deephemnma.core.structure.read_pdb`."""
import os

from pyworkflow.protocol.params import IntParam, LabelParam

from ..protocols.protocol_nma import DeepHEMNMAProtNMA
from .common import FormViewer, Shower, run_title


class DeepHEMNMANmaViewer(FormViewer):
    """Plots the eigenvalues and collectivities of the normal modes and
    writes, once, ``extra/animations/mode_N.pdb`` (a multi-model PDB: the
    reference moved along mode N) with ``mode_N.cxc``: in ChimeraX,
    ``open .../mode_N.cxc`` plays it."""
    _label = "normal modes (eigenvalues, collectivity, animations)"
    _targets = [DeepHEMNMAProtNMA]

    #: largest atom displacement in the animations (Å)
    MAX_SHIFT = 8.0
    FRAMES = 20

    def _defineParams(self, form):
        form.addSection(label="Visualization")
        form.addParam("showModes", LabelParam, label="Eigenvalues and collectivity",
                      help="Eigenvalue and collectivity of each mode against its HEMNMA "
                           "number (grey: the rigid-body modes 1-6); saved as "
                           "extra/modes.png.")
        flexible = self.flexibleNumbers()
        form.addParam("animateMode", IntParam, default=flexible[0] if flexible else 7,
                      label="Animate mode (HEMNMA number)",
                      help="Opens the animation of this mode in ChimeraX (the reference "
                           "moved back and forth along it, the atom moving most by "
                           f"{self.MAX_SHIFT:g} Å); without ChimeraX, tells where the "
                           "files are (mode_N.pdb, mode_N.cxc for ChimeraX, mode_N.vmd for "
                           "VMD). Flexible modes: "
                           + (", ".join(map(str, flexible)) if flexible else "none yet") + ".")

    def _handlers(self):
        return {"showModes": self._showModes, "animateMode": self._animateMode}

    def _stageOutputs(self):
        from ..stages.nma import Outputs
        return Outputs(self.protocol._getPath())

    def animationsFolder(self):
        return self.protocol._getExtraPath("animations")

    def flexibleNumbers(self):
        """HEMNMA numbers of the output's flexible modes ([] before a run)."""
        from ..core.nma import is_rigid, mode_number
        modes = getattr(self.protocol, "outputModes", None)
        if modes is None:
            return []
        numbers = [mode_number(m.getModeFile()) for m in modes.iterItems(orderBy="id")]
        return [n for n in numbers if n is not None and not is_rigid(n)]

    def animations(self):
        """The animation PDBs of the flexible modes (written when missing)."""
        from .plots import write_mode_animations
        out = self._stageOutputs()
        folder = self.animationsFolder()
        numbers = self.flexibleNumbers()
        paths = [os.path.join(folder, f"mode_{n}.pdb") for n in numbers]
        if not all(os.path.exists(p) for p in paths):
            paths = write_mode_animations(out.modes_xmd, out.reference, folder, numbers,
                                          frames=self.FRAMES, max_shift=self.MAX_SHIFT)
        return paths

    def figure(self):
        """The eigenvalue/collectivity figure (also saved as extra/modes.png)."""
        from .plots import nma_figure, save
        fig = nma_figure(self._stageOutputs().modes_xmd)
        paths = self.animations()
        if paths:
            fig.text(0.01, 0.005, f"animations (open mode_N.cxc in ChimeraX): "
                     f"{os.path.abspath(os.path.dirname(paths[0]))}", fontsize=7, va="bottom")
        fig.suptitle(f"{self.protocol.getRunName()}: {len(self.flexibleNumbers())} flexible "
                     "modes", fontsize=10)
        fig.tight_layout(rect=(0, 0.03, 1, 1))
        save(fig, self.protocol._getExtraPath("modes.png"))
        return fig

    def _showModes(self, param=None):
        if not hasattr(self.protocol, "outputModes"):
            return [self.errorMessage("No normal modes yet.")]
        return [Shower(self.figure(), run_title(self.protocol, "normal modes"))]

    def _animateMode(self, param=None):
        if not hasattr(self.protocol, "outputModes"):
            return [self.errorMessage("No normal modes yet.")]
        n = self.animateMode.get()
        if n not in self.flexibleNumbers():
            return [self.errorMessage(f"Mode {n} is not one of the flexible modes "
                                      f"{self.flexibleNumbers()}.")]
        self.animations()
        return self.chimerax(os.path.join(self.animationsFolder(), f"mode_{n}.cxc"))

    def _visualize(self, obj, **kwargs):
        return self._showModes()

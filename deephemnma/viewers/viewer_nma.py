"""Normal modes: eigenvalue and collectivity of each mode (HEMNMA numbers),
and one animation per flexible mode to open in ChimeraX (or VMD)."""
import os

from pyworkflow.viewer import DESKTOP_TKINTER, WEB_DJANGO, Viewer

from ..protocols.protocol_nma import DeepHEMNMAProtNMA
from .common import Shower


class DeepHEMNMANmaViewer(Viewer):
    """Plots the eigenvalues and collectivities of the normal modes and
    writes, once, ``extra/animations/mode_N.pdb`` (a multi-model PDB: the
    reference moved along mode N) with ``mode_N.cxc``: in ChimeraX,
    ``open .../mode_N.cxc`` plays it."""
    _label = "normal modes (eigenvalues, collectivity, animations)"
    _targets = [DeepHEMNMAProtNMA]
    _environments = [DESKTOP_TKINTER, WEB_DJANGO]

    #: largest atom displacement in the animations (Å)
    MAX_SHIFT = 8.0
    FRAMES = 20

    def _stageOutputs(self):
        from ..stages.nma import Outputs
        return Outputs(self.protocol._getPath())

    def animationsFolder(self):
        return self.protocol._getExtraPath("animations")

    def animations(self):
        """The animation PDBs of the flexible modes (written when missing)."""
        from ..core.nma import is_rigid, mode_number
        from .plots import write_mode_animations
        out = self._stageOutputs()
        folder = self.animationsFolder()
        modes = self.protocol.outputModes
        numbers = [mode_number(m.getModeFile()) for m in modes.iterItems(orderBy="id")]
        numbers = [n for n in numbers if n is not None and not is_rigid(n)]
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
                     f"{os.path.dirname(paths[0])}", fontsize=7, va="bottom")
        save(fig, self.protocol._getExtraPath("modes.png"))
        return fig

    def _visualize(self, obj, **kwargs):
        if not hasattr(self.protocol, "outputModes"):
            return [self.errorMessage("No normal modes yet.")]
        return [Shower(self.figure())]

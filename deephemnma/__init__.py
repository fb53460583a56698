"""DeepHEMNMA: normal-mode analysis + deep learning for continuous conformational
heterogeneity in cryo-EM (Hamitouche & Jonic, Front. Mol. Biosci. 2022).

The numerics live in :mod:`deephemnma.core` (no Scipion imports) and the file
formats in :mod:`deephemnma.io`. This top-level module is also the Scipion plugin
(entry point ``pyworkflow.plugin: deephemnma = deephemnma``); the Scipion part is
only defined when Scipion (pwem) is importable, so the command-line tool and the
core work without it.
"""
from .version import __version__  # noqa: F401

_logo = "deephemnma_logo.png"
_references = ["Hamitouche2022", "Jin2014", "Harastani2020", "He2016"]

try:  # Scipion is optional for the core and the CLI
    import pwem as _pwem
except ImportError:  # pragma: no cover - exercised only without Scipion
    _pwem = None

if _pwem is not None:
    class Plugin(_pwem.Plugin):
        """Scipion plugin object. Everything runs embedded (PyTorch, ProDy,
        scikit-learn) in the Python that runs Scipion: no binaries to install."""
        _homeVar = "DEEPHEMNMA_HOME"
        _pathVars = []
        _supportedVersions = [__version__]
        _url = "https://github.com/scipion-em/scipion-em-deephemnma"

        @classmethod
        def _defineVariables(cls):
            pass

        @classmethod
        def defineBinaries(cls, env):
            pass  # nothing to build: the numerics are Python packages

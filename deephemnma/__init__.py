"""DeepHEMNMA: normal-mode analysis + deep learning for continuous conformational
heterogeneity in cryo-EM (Hamitouche & Jonic, Front. Mol. Biosci. 2022).

The numerics live in :mod:`deephemnma.core` (no Scipion imports) and the file
formats in :mod:`deephemnma.io`. This top-level module is also the Scipion plugin
(entry point ``pyworkflow.plugin: deephemnma = deephemnma``). ``Plugin`` is
created on first access, so the command-line tool and the core import neither
pyworkflow nor pwem (and a script can configure Scipion's environment first).
"""
import os as _os

from .version import __version__  # noqa: F401


def passive_openmp():
    """Make OpenMP threads sleep while they wait (``OMP_WAIT_POLICY=PASSIVE``)
    unless the user set a policy. Torch's threads otherwise spin at every
    barrier: on 2 cores shared with other work, training ran 5-14 images/s
    instead of 91-102 (measured, ResNet-34 at 32 px, batch 32).
    OpenMP reads the variable when torch is first imported, so this is called
    before that by the command line, the stage runner and the protocols' run
    processes; the Scipion GUI's own environment is left alone."""
    _os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


_logo = "deephemnma_logo.png"
_references = ["Hamitouche2022", "Jin2014", "Harastani2020", "He2016"]
_plugin_class = None


def _make_plugin():
    import pwem

    class Plugin(pwem.Plugin):
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

    return Plugin


def __getattr__(name):
    global _plugin_class
    if name == "Plugin":
        if _plugin_class is None:
            _plugin_class = _make_plugin()
        return _plugin_class
    raise AttributeError(f"module 'deephemnma' has no attribute '{name}'")

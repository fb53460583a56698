"""Shared pieces of the DeepHEMNMA protocols (form helpers, device choice)."""
import os

import pyworkflow.protocol.params as params
from pwem.protocols import EMProtocol


class DeepHEMNMABase(EMProtocol):
    """Common GPU/threads parameters; the numerics are in deephemnma.core."""
    _label = None

    @classmethod
    def _addComputeParams(cls, form, threads=2):
        form.addHidden(params.USE_GPU, params.BooleanParam, default=True,
                       label="Use GPU", help="Use a CUDA GPU when one is available.")
        form.addHidden(params.GPU_LIST, params.StringParam, default="0", label="GPU id",
                       help="CUDA device index to use (one per process).")
        form.addParallelSection(threads=threads, mpi=0)

    def _device(self):
        import torch
        if self.useGpu.get() and torch.cuda.is_available():
            return f"cuda:{str(self.gpuList.get()).split()[0]}"
        torch.set_num_threads(max(1, self.numberOfThreads.get()))
        return "cpu"

    def _extra(self, *p):
        return self._getExtraPath(*p)

    def _modesFolder(self, modes_set, structure_file=None):
        """Writes the modes of a SetOfNormalModes (ours, ContinuousFlex's, or a
        subset of either: only its items) in ContinuousFlex's layout
        (modes.xmd + modes/vec.N) under extra/input_modes, and returns that
        folder for the deephemnma commands."""
        from ..core.nma import write_continuousflex
        from .convert import modes_from_set
        folder = self._extra("input_modes")
        if not os.path.exists(os.path.join(folder, "modes.xmd")):
            coords = _mode_atoms(modes_set, structure_file)
            write_continuousflex(modes_from_set(modes_set, coords), folder)
        return folder

    def _citations(self):
        return ["Hamitouche2022", "Jin2014", "Harastani2020"]

    def _validateParticlesNma(self, parts, modes=None):
        """Errors for particle sets lacking alignment or NMA amplitudes."""
        errors = []
        if parts is None:
            return ["no input particles"]
        if parts.getSize() == 0:
            errors.append("the input particle set is empty")
            return errors
        first = parts.getFirstItem()
        if not hasattr(first, "_xmipp_nmaDisplacements"):
            errors.append("the particles carry no normal-mode amplitudes "
                          "(_xmipp_nmaDisplacements): run HEMNMA alignment first")
        if not parts.hasAlignmentProj():
            errors.append("the particles have no projection alignment (angles and shifts)")
        if modes is not None and hasattr(first, "_xmipp_nmaDisplacements"):
            k = len(first._xmipp_nmaDisplacements)
            flex = [m for m in modes.iterItems() if not _is_rigid(m)]
            if k > len(flex):
                errors.append(f"the particles have {k} amplitudes but the normal modes set "
                              f"has only {len(flex)} flexible modes")
        return errors


def _mode_atoms(modes_set, structure_file=None):
    """Coordinates of the atoms the modes move: ours keep them beside the
    modes (reference_coords.txt); otherwise the atoms of the reference
    structure in the first selection whose atom count matches."""
    import numpy as np
    from ..core.structure import read_structure
    first = modes_set.getFirstItem().getModeFile()
    n = len(np.loadtxt(first).reshape(-1, 3))
    ours = os.path.join(os.path.dirname(os.path.dirname(first)), "reference_coords.txt")
    if os.path.exists(ours):
        c = np.loadtxt(ours).reshape(-1, 3)
        if len(c) == n:
            return c
    pdb = structure_file or modes_set.getPdb().getFileName()
    counts = []
    for sel in ("heavy", "all", "ca", "ca+p"):
        c = read_structure(pdb, sel).coords
        if len(c) == n:
            return c
        counts.append(f"{sel}: {len(c)}")
    raise ValueError(f"the normal modes move {n} atoms but no selection of {pdb} has that "
                     f"many ({', '.join(counts)})")


def _is_rigid(mode):
    base = os.path.basename(mode.getModeFile())
    tail = base.split(".")[-1]
    return tail.isdigit() and int(tail) <= 6


def run_command(argv):
    """Run ``deephemnma <argv>`` in-process (same code as the CLI); bad input
    becomes a protocol error with the command's own message."""
    from ..cli import build_parser
    from ..errors import InputError
    args = build_parser().parse_args([str(a) for a in argv])
    try:
        return args._main(args)
    except (InputError, FileNotFoundError) as e:
        raise Exception(f"deephemnma {args.command}: {e}") from None

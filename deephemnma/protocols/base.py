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

    @staticmethod
    def _modesFolder(modes_set):
        """Folder holding modes.xmd and modes/vec.N of a SetOfNormalModes."""
        return os.path.dirname(os.path.dirname(modes_set.getFirstItem().getModeFile()))

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

"""Normal mode analysis of an atomic structure (or of pseudoatoms)."""
import os

import pyworkflow.protocol.params as params

from ..stages import nma as stage
from .base import DeepHEMNMABase, config_errors, run_stage
from .convert import modes_to_set

SELECTIONS = ["heavy", "ca", "ca+p", "all"]


class DeepHEMNMAProtNMA(DeepHEMNMABase):
    """Elastic-network normal modes (RTB or ANM) of an atomic structure, or of
    Gaussian pseudoatoms. Output: SetOfNormalModes in ContinuousFlex's layout
    (modes/vec.N), usable by ContinuousFlex's tools, and the centred reference
    the modes move. Same rules as `deephemnma nma` (deephemnma.stages.nma)."""
    _label = "normal mode analysis"
    _possibleOutputs = {"outputModes": "SetOfNormalModes"}

    def _defineParams(self, form):
        d = stage.Config()
        form.addSection("Input")
        form.addParam("inputStructure", params.PointerParam, pointerClass="AtomStruct",
                      label="Atomic structure", important=True,
                      help="Reference structure (PDB/mmCIF, or a pseudoatom PDB) whose normal "
                           "modes are computed.")
        form.addParam("selection", params.EnumParam, choices=SELECTIONS,
                      default=SELECTIONS.index(d.selection), label="Atoms",
                      help="heavy: all non-hydrogen atoms (the paper's AK); ca+p: CA and P "
                           "atoms for large complexes (the paper's ribosome). Pseudoatoms "
                           "are all used.")
        form.addParam("numberOfModes", params.IntParam, default=d.n_modes,
                      label="Number of modes",
                      help="Including the 6 rigid-body modes (HEMNMA numbering: the first "
                           "flexible mode is 7).")
        form.addParam("method", params.EnumParam, choices=list(stage.METHODS),
                      default=stage.METHODS.index(d.method), label="Method",
                      help="auto: RTB for atomic structures, ANM for pseudoatoms. RTB: "
                           "blocks of residues (fast, large structures); ANM: every atom.")
        form.addParam("blockSize", params.IntParam, default=d.block_size,
                      condition="method != 2", label="Residues per RTB block",
                      expertLevel=params.LEVEL_ADVANCED)
        form.addParam("cutoff", params.FloatParam, default=d.cutoff, label="Cutoff (Å)",
                      help="Interaction radius of the elastic network.")
        self._addComputeParams(form, threads=2)

    def _insertAllSteps(self):
        self._insertFunctionStep(self.computeStep)
        self._insertFunctionStep(self.createOutputStep)

    def _config(self):
        s = self.inputStructure.get()
        return stage.Config(structure=s.getFileName() if s is not None else None,
                            out=self._extra(), n_modes=self.numberOfModes.get(),
                            method=stage.METHODS[self.method.get()],
                            cutoff=self.cutoff.get(), selection=SELECTIONS[self.selection.get()],
                            block_size=self.blockSize.get())

    def computeStep(self):
        run_stage(stage, self._config())

    def createOutputStep(self):
        import pwem.objects as emobj
        out = stage.Outputs(self._extra())
        pdb = emobj.AtomStruct(filename=out.reference)
        nm = modes_to_set(self, out.modes_xmd, self.inputStructure.get())
        self._defineOutputs(outputModes=nm, outputReference=pdb)
        self._defineSourceRelation(self.inputStructure, nm)

    def _validate(self):
        errors = config_errors(self._config)
        s = self.inputStructure.get()
        if s is not None and not os.path.isfile(s.getFileName()):
            errors.append(f"structure file not found: {s.getFileName()}")
        return errors

    def _methodText(self):
        m = stage.METHODS[self.method.get()]
        return "auto: RTB for atoms, ANM for pseudoatoms" if m == "auto" else m.upper()

    def _summary(self):
        if not hasattr(self, "outputModes"):
            return ["Normal modes not computed yet."]
        return [f"{self.outputModes.getSize()} normal modes ({self._methodText()}, "
                f"cutoff {self.cutoff.get()} Å)."]

    def _methods(self):
        return [f"Normal modes of the reference were computed with an elastic network "
                f"({self._methodText()}, cutoff {self.cutoff.get()} Å) [Harastani2020]."]

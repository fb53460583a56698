"""Normal mode analysis of an atomic structure (or a volume as pseudoatoms)."""
import os

import pyworkflow.protocol.params as params

from .base import DeepHEMNMABase
from .convert import modes_to_set


class DeepHEMNMAProtNMA(DeepHEMNMABase):
    """Elastic-network normal modes (ANM or RTB) of an atomic structure, or of
    a density map converted to Gaussian pseudoatoms. Output: SetOfNormalModes in
    ContinuousFlex's layout (modes/vec.N), usable by ContinuousFlex's tools."""
    _label = "normal mode analysis"
    _possibleOutputs = {"outputModes": "SetOfNormalModes"}

    def _defineParams(self, form):
        form.addSection("Input")
        form.addParam("inputStructure", params.PointerParam, pointerClass="AtomStruct",
                      label="Atomic structure", important=True,
                      help="Reference structure (PDB/mmCIF) whose normal modes are computed.")
        form.addParam("selection", params.EnumParam, choices=["heavy", "ca", "ca+p", "all"],
                      default=0, label="Atoms",
                      help="heavy: all non-hydrogen atoms (the paper's AK); ca+p: CA and P "
                           "atoms for large complexes (the paper's ribosome).")
        form.addParam("numberOfModes", params.IntParam, default=20, label="Number of modes",
                      help="Including the 6 rigid-body modes (HEMNMA numbering: the first "
                           "flexible mode is 7).")
        form.addParam("method", params.EnumParam, choices=["rtb", "anm"], default=0,
                      label="Method", help="RTB: residue blocks (fast, large structures); "
                                            "ANM: every atom.")
        form.addParam("blockSize", params.IntParam, default=1, condition="method == 0",
                      label="Residues per RTB block", expertLevel=params.LEVEL_ADVANCED)
        form.addParam("cutoff", params.FloatParam, default=8.0, label="Cutoff (Å)",
                      help="Interaction radius of the elastic network.")
        self._addComputeParams(form, threads=2)

    def _insertAllSteps(self):
        self._insertFunctionStep(self.computeStep)
        self._insertFunctionStep(self.createOutputStep)

    def computeStep(self):
        from ..core.nma import compute_modes, write_continuousflex
        from ..core.structure import read_structure, write_pdb
        sel = ["heavy", "ca", "ca+p", "all"][self.selection.get()]
        s, _ = read_structure(self.inputStructure.get().getFileName(), sel).center()
        modes = compute_modes(s, self.numberOfModes.get(), cutoff=self.cutoff.get(),
                              method=["rtb", "anm"][self.method.get()],
                              block_size=self.blockSize.get())
        write_pdb(self._extra("reference.pdb"), s)
        write_continuousflex(modes, self._extra())

    def createOutputStep(self):
        import pwem.objects as emobj
        pdb = emobj.AtomStruct(filename=self._extra("reference.pdb"))
        nm = modes_to_set(self, self._extra("modes.xmd"), self.inputStructure.get())
        self._defineOutputs(outputModes=nm, outputReference=pdb)
        self._defineSourceRelation(self.inputStructure, nm)

    def _validate(self):
        errors = []
        if self.numberOfModes.get() < 7:
            errors.append("ask for at least 7 modes (modes 1-6 are rigid-body motions)")
        if self.cutoff.get() <= 0:
            errors.append("the cutoff must be positive")
        s = self.inputStructure.get()
        if s is not None and not os.path.exists(s.getFileName()):
            errors.append(f"structure file not found: {s.getFileName()}")
        return errors

    def _summary(self):
        if not hasattr(self, "outputModes"):
            return ["Normal modes not computed yet."]
        return [f"{self.outputModes.getSize()} normal modes ({['RTB', 'ANM'][self.method.get()]}, "
                f"cutoff {self.cutoff.get()} Å)."]

    def _methods(self):
        return [f"Normal modes of the reference were computed with an elastic network "
                f"({['RTB', 'ANM'][self.method.get()]}, cutoff {self.cutoff.get()} Å) "
                "[Harastani2020]."]

"""Normal mode analysis of an atomic structure, or of an EM map through
Gaussian pseudoatoms."""
import os

import pwem.objects as emobj
import pyworkflow.protocol.params as params

from ..stages import nma as stage
from ..stages import pseudoatoms as pseudo_stage
from .base import DeepHEMNMABase
from .convert import ContinuousFlexLayout, modes_to_set, write_continuousflex_layout

SELECTIONS = ["heavy", "ca", "ca+p", "all"]
CUTOFF_MODES = ["auto", "absolute", "relative"]
CUTOFF_AUTO, CUTOFF_ABS, CUTOFF_REL = range(3)


def _map_file(volume):
    """A Volume's file without Scipion's ``:mrc`` format suffix."""
    fn = volume.getFileName()
    return fn.rsplit(":", 1)[0] if ":" in os.path.basename(fn) else fn


class DeepHEMNMAProtNMA(DeepHEMNMABase):
    """Elastic-network normal modes (RTB or ANM) of an atomic structure, or of
    an EM map converted to Gaussian pseudoatoms (deephemnma.stages.pseudoatoms;
    the Gaussian width is chosen from the map's sharpness unless given), with
    the interaction cutoff as ContinuousFlex computes it for pseudoatoms (a
    percentile of the distances to the 3 nearest neighbours), raised when
    needed until every pseudoatom is held by the network.

    Output: a SetOfNormalModes in ContinuousFlex's NMA run layout (modes.xmd,
    modes/vec.N, atoms.pdb or pseudoatoms.pdb beside modes.sqlite,
    extra/maxAtomShifts.xmd, extra/distanceProfiles/vecN.xmd), so that
    ContinuousFlex's HEMNMA, its viewers and ours read it, and the centred
    reference the modes move. Same rules as `deephemnma nma` and
    `deephemnma pseudoatoms`."""
    _label = "normal mode analysis"
    _possibleOutputs = {"outputModes": emobj.SetOfNormalModes,
                        "outputReference": emobj.AtomStruct,
                        "outputPseudoatoms": emobj.AtomStruct,
                        "outputPseudoatomsMap": emobj.Volume}
    _formFields = {
        # the nma stage
        "structure": "inputStructure", "out": "the output folder", "n_modes": "numberOfModes",
        "method": "method", "cutoff": "cutoff", "selection": "selection",
        "block_size": "blockSize", "percentile": "cutoffPercentage",
        # the pseudoatoms stage (an EM map)
        "map": "inputStructure", "voxel_size": "the map's voxel size", "sigma": "pseudoSigma",
        "target_error": "targetError", "threshold": "threshold", "max_atoms": "maxAtoms"}
    _flagNames = {"n_modes": "--modes"}

    def getPossibleOutputs(self):
        """Names of the outputs this input can produce: the pseudoatoms (in
        Xmipp's format) for pseudoatoms, their map for an EM map."""
        names = ["outputModes", "outputReference"]
        s = self.inputStructure.get()
        if self._isMap() or (s is not None and s.getPseudoAtoms()):
            names.append("outputPseudoatoms")
        if self._isMap():
            names.append("outputPseudoatomsMap")
        return names

    # --------------------------- DEFINE param functions ----------------------
    def _defineParams(self, form):
        d = stage.Config()
        p = pseudo_stage.Config()
        form.addSection("Input")
        # AtomStruct last: pyworkflow (3.11) offers a not-yet-produced output
        # (Project.getProtocolCompatibleOutputs) only when its class matches the
        # LAST class of pointerClass; produced outputs match either class
        form.addParam("inputStructure", params.PointerParam, pointerClass="Volume, AtomStruct",
                      label="Atomic structure or EM map", important=True,
                      help="Reference whose normal modes are computed: an atomic structure "
                           "(PDB/mmCIF, or a pseudoatom PDB), or an EM map, which is first "
                           "converted to Gaussian pseudoatoms (see the EM map section).")
        form.addParam("selection", params.EnumParam, choices=SELECTIONS,
                      default=SELECTIONS.index(d.selection), label="Atoms",
                      help="heavy: all non-hydrogen atoms (the paper's AK); ca+p: CA and P "
                           "atoms for large complexes (the paper's ribosome). Pseudoatoms "
                           "are all used.")
        form.addParam("numberOfModes", params.IntParam, default=d.n_modes,
                      validators=[params.Positive], label="Number of modes",
                      help="Including the 6 rigid-body modes (HEMNMA numbering: the first "
                           "flexible mode is 7).")
        form.addParam("method", params.EnumParam, choices=list(stage.METHODS),
                      default=stage.METHODS.index(d.method), label="Method",
                      help="auto: RTB for atomic structures, ANM for pseudoatoms. RTB: "
                           "blocks of residues (fast, large structures); ANM: every atom.")
        form.addParam("blockSize", params.IntParam, default=d.block_size,
                      condition=f"method != {stage.METHODS.index('anm')}",
                      validators=[params.Positive], label="Residues per RTB block",
                      expertLevel=params.LEVEL_ADVANCED,
                      help="RTB: number of consecutive residues moving as one rigid block.")
        form.addParam("cutoffMode", params.EnumParam, choices=CUTOFF_MODES,
                      default=CUTOFF_AUTO, label="Cutoff mode",
                      help="Interaction radius of the elastic network. absolute: the "
                           "distance below. relative: the percentile below of the distances "
                           "between each (pseudo)atom and its 3 nearest neighbours "
                           "(ContinuousFlex's relative mode). auto: absolute for an atomic "
                           "structure, relative for an EM map or a pseudoatom PDB.")
        form.addParam("cutoff", params.FloatParam, default=d.cutoff, label="Cutoff (Å)",
                      condition=f"cutoffMode != {CUTOFF_REL}", validators=[params.Positive],
                      help="Interaction radius of the elastic network (absolute mode).")
        form.addParam("cutoffPercentage", params.FloatParam, default=95.0,
                      condition=f"cutoffMode != {CUTOFF_ABS}",
                      label="Cutoff percentile (%)",
                      help="Relative mode: the interaction radius is this percentile of the "
                           "distances between each (pseudo)atom and its 3 nearest neighbours "
                           "(ContinuousFlex's default: 95).")
        form.addSection("EM map")
        form.addParam("pseudoSigma", params.FloatParam, default=None, allowsNull=True,
                      label="Gaussian width (Å)",
                      help="Only for an EM map: standard deviation of the pseudoatoms' "
                           "Gaussians. Empty: automatic, from the width of the map's "
                           "sharpest peaks (narrower Gaussians are tried while the error "
                           "stalls above the target).")
        form.addParam("targetError", params.FloatParam, default=p.target_error,
                      validators=[params.Positive], label="Target error (%)",
                      help="Only for an EM map: pseudoatoms are added until the relative "
                           "error between the map and their map is below this.")
        form.addParam("threshold", params.FloatParam, default=None, allowsNull=True,
                      label="Density threshold",
                      help="Only for an EM map: density below this value is ignored "
                           "(empty: the whole map is fitted).")
        form.addParam("maxAtoms", params.IntParam, default=p.max_atoms,
                      validators=[params.Positive],
                      expertLevel=params.LEVEL_ADVANCED, label="Maximum pseudoatoms",
                      help="Only for an EM map: the conversion fails (with a message) when "
                           "the target error needs more pseudoatoms than this.")
        self._addComputeParams(form, threads=2)

    # --------------------------- INSERT steps functions ----------------------
    def _isMap(self):
        return isinstance(self.inputStructure.get(), emobj.Volume)

    def _insertAllSteps(self):
        if self._isMap():
            self._insertFunctionStep(self.pseudoatomsStep)
        self._insertFunctionStep(self.computeStep)
        self._insertFunctionStep(self.createOutputStep)

    def _pseudoConfig(self, device="cpu"):
        v = self.inputStructure.get()
        return pseudo_stage.Config(
            map=_map_file(v) if v is not None else None, out=self._extra("pseudoatoms"),
            voxel_size=(v.getSamplingRate() or None) if v is not None else None,
            sigma=self.pseudoSigma.get(), target_error=self.targetError.get(),
            threshold=self.threshold.get(), max_atoms=self.maxAtoms.get(), device=device)

    def _structureFile(self):
        if self._isMap():
            return pseudo_stage.Outputs(self._extra("pseudoatoms")).pdb
        s = self.inputStructure.get()
        return s.getFileName() if s is not None else None

    def _relative(self, structure=None):
        """True when the cutoff is a neighbour-distance percentile."""
        mode = self.cutoffMode.get()
        if mode != CUTOFF_AUTO:
            return mode == CUTOFF_REL
        if self._isMap():
            return True
        if structure is not None:
            return structure.is_pseudoatomic
        s = self.inputStructure.get()          # before running: Scipion's flag
        return bool(s is not None and s.getPseudoAtoms())

    def _config(self, cutoff=None):
        return stage.Config(structure=self._structureFile(), out=self._getPath(),
                            n_modes=self.numberOfModes.get(),
                            method=stage.METHODS[self.method.get()],
                            cutoff=self.cutoff.get() if cutoff is None else cutoff,
                            selection=SELECTIONS[self.selection.get()],
                            block_size=self.blockSize.get())

    def pseudoatomsStep(self):
        self._runHere(pseudo_stage, self._pseudoConfig(self._device()))

    def computeStep(self):
        from ..core.pseudoatoms import network_cutoff
        from ..core.structure import read_structure
        cfg = self._config()
        s = read_structure(cfg.structure, cfg.selection)
        if self._relative(s):
            rc, first = network_cutoff(s.coords, self.cutoffPercentage.get())
            print(f"cutoff: percentile {self.cutoffPercentage.get():g} of the distances to "
                  f"the 3 nearest neighbours = {first:.3f} Å"
                  + (f", raised to {rc:.3f} Å to connect every atom to the network"
                     if rc > first else ""), flush=True)
            cfg = cfg.replace(cutoff=rc)
        out = self._runHere(stage, cfg)
        floppy = int((out.eigenvalues[6:] <= 1e-8 * max(out.eigenvalues.max(), 1e-30)).sum())
        if floppy:
            self.warning(f"{floppy} flexible mode(s) have zero energy: the elastic network "
                         "falls apart at this cutoff; use a larger one")

    def createOutputStep(self):
        from ..core.structure import read_structure
        out = stage.Outputs(self._getPath())
        # pseudoatoms (from the map, or given as a pseudoatom PDB) also go to
        # pseudoatoms.pdb in Xmipp's format, centred like reference.pdb
        s = read_structure(out.reference)
        pseudo = (s.coords, s.weights, s.sigma) if s.is_pseudoatomic else None
        lay = write_continuousflex_layout(self._getPath(), out.reference, pseudo)
        ref = emobj.AtomStruct(filename=out.reference, pseudoatoms=pseudo is not None)
        self._defineOutputs(outputReference=ref)
        # ContinuousFlex opens the modes' PDB (pseudoatoms) or atoms.pdb beside
        # modes.sqlite (atoms); both hold the atoms of outputReference
        pdb = emobj.AtomStruct(filename=lay.pseudoatoms_pdb, pseudoatoms=True) \
            if pseudo is not None else self.outputReference
        if pseudo is not None:
            self._defineOutputs(outputPseudoatoms=pdb)
        if self._isMap():
            vol = emobj.Volume(location=pseudo_stage.Outputs(self._extra("pseudoatoms")).approx)
            vol.setSamplingRate(self.inputStructure.get().getSamplingRate())
            self._defineOutputs(outputPseudoatomsMap=vol)
            self._defineSourceRelation(self.inputStructure, vol)
        nm = modes_to_set(self, out.modes_xmd, pdb)
        self._defineOutputs(outputModes=nm)
        self._defineSourceRelation(self.inputStructure, nm)
        self._defineSourceRelation(self.inputStructure, self.outputReference)

    # --------------------------- INFO functions ------------------------------
    def _validate(self):
        errors = self._configErrors(self._config)
        s = self.inputStructure.get()
        if s is None:
            return errors + ["no input structure or map"]
        if self._isMap():
            errors += self._configErrors(self._pseudoConfig)
            if not os.path.isfile(_map_file(s)):
                errors.append(f"map file not found: {_map_file(s)}")
        elif not os.path.isfile(s.getFileName()):
            errors.append(f"structure file not found: {s.getFileName()}")
        if self.cutoffMode.get() != CUTOFF_ABS and not 0 < self.cutoffPercentage.get() <= 100:
            errors.append(f"the cutoff percentile must be in (0, 100], got "
                          f"{self.cutoffPercentage.get()}")
        return errors

    def _methodText(self):
        m = stage.METHODS[self.method.get()]
        return "auto: RTB for atoms, ANM for pseudoatoms" if m == "auto" else m.upper()

    def _cutoffText(self):
        if self._relative():
            return (f"cutoff: percentile {self.cutoffPercentage.get():g} of the distances to "
                    "the 3 nearest neighbours, raised if needed to connect every atom")
        return f"cutoff {self.cutoff.get()} Å"

    def _summary(self):
        if not hasattr(self, "outputModes"):
            return ["Normal modes not computed yet."]
        lines = [f"{self.outputModes.getSize()} normal modes ({self._methodText()}, "
                 f"{self._cutoffText()})."]
        if self._isMap():
            # our own pseudoatom PDB, read without ProDy (the GUI runs python -O)
            from ..core.structure import read_pdb
            s = read_pdb(self.outputReference.getFileName())
            lines.insert(0, f"EM map converted to {len(s)} Gaussian pseudoatoms "
                            f"(sigma {s.sigma:.3g} Å).")
        lines.append("ContinuousFlex layout: " + ContinuousFlexLayout(self._getPath()).run)
        return lines

    def _methods(self):
        pre = ("The EM map was converted to Gaussian pseudoatoms and n" if self._isMap()
               else "N")
        return [f"{pre}ormal modes of the reference were computed with an elastic network "
                f"({self._methodText()}, {self._cutoffText()}) [Harastani2020]."]

    def _citations(self):
        return ["Harastani2020", "Hamitouche2022"]

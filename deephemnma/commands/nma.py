"""Normal modes of an atomic structure or pseudoatoms (ContinuousFlex layout).

Writes OUT/modes.xmd, OUT/modes/vec.N (unit-norm 3N vectors, HEMNMA numbering:
1-6 rigid, 7 first flexible) and OUT/reference.pdb (the atoms the modes move,
centred on their centroid). Method auto: RTB for atomic structures, ANM for
pseudoatoms.

Examples:
  deephemnma nma --structure AK.pdb --out nma/ --modes 20
  deephemnma nma --structure ribosome.cif --selection ca+p --block-size 10 --out nma_rib/
  deephemnma nma --structure pseudo.pdb --percentile 5 --out nma_pseudo/
"""
from . import run_and_summarize
from ..stages import nma as stage


def add_args(p):
    d = stage.Config()
    p.add_argument("--structure", required=True, help="PDB/mmCIF (or pseudoatom PDB)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--modes", type=int, default=d.n_modes,
                   help="number of modes incl. the 6 rigid ones")
    p.add_argument("--method", choices=stage.METHODS, default=d.method,
                   help="auto: RTB for atoms, ANM for pseudoatoms")
    p.add_argument("--cutoff", type=float, default=d.cutoff, help="interaction radius (Å)")
    p.add_argument("--percentile", type=float, default=d.percentile,
                   help="cutoff as a percentile of interatomic distances (pseudoatoms)")
    p.add_argument("--selection", default=d.selection,
                   help="heavy | all | ca | ca+p | ProDy selection")
    p.add_argument("--block-size", type=int, default=d.block_size,
                   help="RTB: residues per rigid block (10-20 for large complexes)")


def config(args):
    return stage.Config(structure=args.structure, out=args.out, n_modes=args.modes,
                        method=args.method, cutoff=args.cutoff, percentile=args.percentile,
                        selection=args.selection, block_size=args.block_size)


def main(args):
    return run_and_summarize(stage, config(args))

"""Normal modes of an atomic structure or pseudoatoms (ContinuousFlex layout).

Writes OUT/modes.xmd, OUT/modes/vec.N (unit-norm 3N vectors, HEMNMA numbering:
1-6 rigid, 7 first flexible) and OUT/reference.pdb (the atoms the modes move).
"""
import os
import time

from ..errors import InputError


def add_args(p):
    p.add_argument("--structure", required=True, help="PDB/mmCIF (or pseudoatom PDB)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--modes", type=int, default=20, help="number of modes incl. the 6 rigid ones")
    p.add_argument("--method", choices=["rtb", "anm"], default="rtb")
    p.add_argument("--cutoff", type=float, default=8.0, help="interaction radius (Å)")
    p.add_argument("--percentile", type=float, default=None,
                   help="cutoff as a percentile of interatomic distances (pseudoatoms)")
    p.add_argument("--selection", default="heavy", help="heavy | all | ca | ca+p | ProDy selection")
    p.add_argument("--block-size", type=int, default=1,
                   help="RTB: residues per rigid block (10-20 for large complexes)")


def main(args):
    from ..core.nma import compute_modes, write_continuousflex
    from ..core.structure import read_structure, write_pdb
    if os.path.exists(os.path.join(args.out, "modes.xmd")):
        raise InputError(f"{args.out} already holds modes.xmd; choose another --out")
    s = read_structure(args.structure, args.selection)
    if s.is_pseudoatomic and args.method == "rtb":
        args.method = "anm"  # pseudoatoms have no residues to make blocks of
    t0 = time.perf_counter()
    modes = compute_modes(s, n_modes=args.modes, cutoff=args.cutoff, percentile=args.percentile,
                          method=args.method, block_size=args.block_size)
    dt = time.perf_counter() - t0
    os.makedirs(args.out, exist_ok=True)
    write_pdb(os.path.join(args.out, "reference.pdb"), s)
    path = write_continuousflex(modes, args.out)
    print(f"{len(modes)} modes of {len(s)} atoms ({args.method}) in {dt:.1f} s -> {path}")
    print(" mode  eigenvalue  collectivity")
    for n, e, c in zip(modes.numbers, modes.eigenvalues, modes.collectivity):
        print(f" {n:4d}  {e:10.4g}  {c:8.3f}")

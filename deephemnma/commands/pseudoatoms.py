"""Convert an EM map into Gaussian pseudoatoms (for normal modes and HEMNMA).

Writes OUT.pdb (pseudoatoms; weights relative to the largest, in the occupancy
column; sigma in a REMARK, recognised by every deephemnma command) and
OUT_approx.mrc (the map the pseudoatoms reproduce). For NMA of pseudoatoms use
a percentile cutoff: `deephemnma nma --structure OUT.pdb --method anm --percentile 5`.
"""
import os
import time

import numpy as np

from ..errors import InputError


def add_args(p):
    p.add_argument("--map", required=True, help="MRC map")
    p.add_argument("--out", required=True, help="output prefix (OUT.pdb, OUT_approx.mrc)")
    p.add_argument("--voxel-size", type=float, default=None, help="Å (default: header)")
    p.add_argument("--sigma", type=float, default=None, help="Gaussian std, Å (1.5 voxels)")
    p.add_argument("--sigma-voxels", type=float, default=None, help="Gaussian std in voxels")
    p.add_argument("--target-error", type=float, default=5.0, help="relative error, %%")
    p.add_argument("--threshold", type=float, default=None, help="ignore density below")
    p.add_argument("--mask", default=None, help="MRC mask (> 0.5 inside)")
    p.add_argument("--max-atoms", type=int, default=20000)
    p.add_argument("--device", default="cpu")


def main(args):
    from ..core.pseudoatoms import volume_to_pseudoatoms
    from ..core.structure import Structure, write_pdb
    from ..io.stacks import read_volume, write_volume
    vol, vs = read_volume(args.map)
    vs = args.voxel_size or vs
    if not vs:
        raise InputError(f"{args.map}: no voxel size in the header; give --voxel-size")
    mask = None
    if args.mask:
        m, _ = read_volume(args.mask)
        mask = m > 0.5
    sigma = args.sigma if args.sigma else (args.sigma_voxels * vs if args.sigma_voxels else None)
    t0 = time.perf_counter()
    c, w, approx, err = volume_to_pseudoatoms(
        vol, vs, sigma, args.target_error / 100.0, args.threshold, mask, args.max_atoms,
        device=args.device,
        progress=lambda n, e: print(f"  {n} pseudoatoms: error {100 * e:.2f} %", flush=True))
    n = len(c)
    s = Structure(coords=c, weights=w / w.max(), names=np.array(["CA"] * n, dtype=object),
                  resnames=np.array(["PSE"] * n, dtype=object), resnums=np.arange(1, n + 1),
                  chains=np.array(["A"] * n, dtype=object), elements=np.array(["C"] * n,
                                                                              dtype=object),
                  source=args.map, sigma=sigma or 1.5 * vs)
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    write_pdb(args.out + ".pdb", s)
    write_volume(args.out + "_approx.mrc", approx, vs)
    print(f"{n} pseudoatoms reproduce {args.map} with {100 * err:.2f} % relative error in "
          f"{time.perf_counter() - t0:.1f} s -> {args.out}.pdb")

"""Convert an EM map into Gaussian pseudoatoms (for normal modes and HEMNMA).

Writes OUT.pdb (pseudoatoms; weights relative to the largest, in the occupancy
column; sigma in a REMARK, recognised by every deephemnma command) and
OUT_approx.mrc (the map the pseudoatoms reproduce). Nothing is written when the
target error cannot be reached. Without --sigma/--sigma-voxels the Gaussian
width is chosen from the map's own sharpness (narrower ones are tried while the
error stalls above the target). For NMA of pseudoatoms use a percentile cutoff.

Examples:
  deephemnma pseudoatoms --map emd_1234.mrc --out pseudo/emd_1234
  deephemnma pseudoatoms --map emd_1234.mrc --out pseudo/emd_1234 --sigma-voxels 1.5 \
      --target-error 5
  deephemnma nma --structure pseudo/emd_1234.pdb --percentile 5 --out nma_pseudo/
"""
from . import run_and_summarize
from ..stages import pseudoatoms as stage


def add_args(p):
    d = stage.Config()
    p.add_argument("--map", required=True, help="MRC map")
    p.add_argument("--out", required=True, help="output prefix (OUT.pdb, OUT_approx.mrc)")
    p.add_argument("--voxel-size", type=float, default=d.voxel_size, help="Å (default: header)")
    p.add_argument("--sigma", type=float, default=d.sigma,
                   help="Gaussian std, Å (default: automatic, from the map's sharpest peaks)")
    p.add_argument("--sigma-voxels", type=float, default=d.sigma_voxels,
                   help="Gaussian std in voxels")
    p.add_argument("--target-error", type=float, default=d.target_error,
                   help="relative error, %%")
    p.add_argument("--threshold", type=float, default=d.threshold, help="ignore density below")
    p.add_argument("--mask", default=d.mask, help="MRC mask (> 0.5 inside)")
    p.add_argument("--max-atoms", type=int, default=d.max_atoms)
    p.add_argument("--device", default=d.device)


def config(args):
    return stage.Config(map=args.map, out=args.out, voxel_size=args.voxel_size,
                        sigma=args.sigma, sigma_voxels=args.sigma_voxels,
                        target_error=args.target_error, threshold=args.threshold,
                        mask=args.mask, max_atoms=args.max_atoms, device=args.device)


def main(args):
    return run_and_summarize(stage, config(args))

"""Density map simulated from an atomic or pseudoatomic model (e.g. a group's centroid model).

The model is centred on the centroid of its atoms, which is where every
deephemnma projection puts the reference (normal modes do not move the
centroid), so the map is aligned with the group reconstructions and can be
compared with them by `deephemnma fsc` (the paper's Fig. 7 / Supp. Fig. 3).
Atoms are voxel-integrated Gaussians (sigma: the pseudoatoms' own, else
--sigma).

Example:
  deephemnma model-map --structure land/centroid_01.pdb --box 64 --pixel-size 1.3 \\
      --out land/centroid_01.mrc
  deephemnma fsc land/group_01.mrc land/centroid_01.mrc --png land/fsc_01.png
"""
from . import run_and_summarize
from ..stages import model_map as stage


def add_args(p):
    d = stage.Config()
    p.add_argument("--structure", required=True, help="PDB/mmCIF model (centroid_NN.pdb)")
    p.add_argument("--out", required=True, help="output map (.mrc)")
    p.add_argument("--box", type=int, required=True, help="map size (voxels)")
    p.add_argument("--pixel-size", type=float, required=True, help="voxel size (Å)")
    p.add_argument("--selection", default=d.selection)
    p.add_argument("--sigma", type=float, default=d.sigma, help="atom Gaussian std (Å)")


def config(args):
    return stage.Config(structure=args.structure, out=args.out, box=args.box,
                        pixel_size=args.pixel_size, selection=args.selection, sigma=args.sigma)


def main(args):
    return run_and_summarize(stage, config(args))

"""Density map simulated from an atomic or pseudoatomic model (e.g. a group's centroid model).

The model is centred on the centroid of its atoms, which is where every
deephemnma projection puts the reference (normal modes do not move the
centroid), so the map is aligned with the group reconstructions and can be
compared with them by `deephemnma fsc` (the paper's Fig. 7 / Supp. Fig. 3).
Atoms are voxel-integrated Gaussians (sigma: the pseudoatoms' own, else
--sigma).
"""
import numpy as np

from ..errors import InputError


def add_args(p):
    p.add_argument("--structure", required=True, help="PDB/mmCIF model (centroid_NN.pdb)")
    p.add_argument("--out", required=True, help="output map (.mrc)")
    p.add_argument("--box", type=int, required=True, help="map size (voxels)")
    p.add_argument("--pixel-size", type=float, required=True, help="voxel size (Å)")
    p.add_argument("--selection", default="heavy")
    p.add_argument("--sigma", type=float, default=1.0, help="atom Gaussian std (Å)")


def main(args):
    from ..core.projector import atoms_to_volume
    from ..core.structure import read_structure
    from ..io.stacks import write_volume
    if args.box < 8 or args.pixel_size <= 0:
        raise InputError("--box must be >= 8 and --pixel-size positive")
    s, _ = read_structure(args.structure, args.selection).center()
    extent = np.abs(s.coords).max()
    if extent > args.box * args.pixel_size / 2:
        raise InputError(f"the model extends {extent:.0f} Å from its centre, beyond the "
                         f"half box ({args.box * args.pixel_size / 2:.0f} Å)")
    sigma = s.sigma if s.is_pseudoatomic else args.sigma
    vol = atoms_to_volume(s.coords, s.weights, args.box, args.pixel_size, sigma).numpy()
    write_volume(args.out, vol.astype(np.float32), args.pixel_size)
    print(f"{len(s.coords)} atoms -> {args.out} ({args.box}^3, {args.pixel_size} Å/voxel)")

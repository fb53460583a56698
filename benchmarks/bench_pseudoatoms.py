"""Pseudoatom conversion benchmark: time and number of pseudoatoms for
a map simulated from AK.pdb at 1 Å voxels and for a 128^3 map, plus the mode
overlap with the atomic model. Prints a markdown table.

    python benchmarks/bench_pseudoatoms.py [--device cuda]
"""
import argparse
import os
import time

import torch
from deephemnma.data import data_file  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--sigma-3j9g", type=float, nargs="+", default=[0.4, 0.5, 1.0],
                    help="pseudoatom sigma(s) for the 3j9g map, in voxels")
    args = ap.parse_args()
    from deephemnma.core.projector import atoms_to_volume
    from deephemnma.core.pseudoatoms import volume_to_pseudoatoms
    from deephemnma.core.structure import read_structure
    s, _ = read_structure(data_file("AK.pdb")).center()
    print("| map | box | voxel Å | sigma Å | pseudoatoms | error % | time s |")
    print("|---|---|---|---|---|---|---|")
    for box, vs, blur, sigma in ((80, 1.0, 2.0, 2.0), (128, 0.65, 1.5, 1.5)):
        vol = atoms_to_volume(torch.tensor(s.coords), torch.tensor(s.weights), box, vs,
                              blur).numpy()
        t0 = time.perf_counter()
        try:
            c, w, _, err = volume_to_pseudoatoms(vol, vs, sigma=sigma, device=args.device)
            print(f"| AK (atoms blurred {blur} Å) | {box} | {vs} | {sigma} | {len(c)} | "
                  f"{100 * err:.2f} | {time.perf_counter() - t0:.0f} |", flush=True)
        except Exception as e:
            print(f"| AK | {box} | {vs} | {sigma} | failed: {e} | | "
                  f"{time.perf_counter() - t0:.0f} |", flush=True)
    # a real map: cryojax's potential of 3j9g at 4.4 Å voxels (it is a sampled
    # atomic potential with much of its power at the voxel scale, so the
    # pseudoatoms must be small: 0.4 voxel reaches 5 %, 0.5 stalls above)
    from deephemnma.io.stacks import read_volume
    path = os.path.join(HERE, "..", "tests", "data", "oracles", "3j9g_potential_ps4_4.mrc")
    if os.path.exists(path):
        vol, vs = read_volume(path)
        for sv in args.sigma_3j9g:
            t0 = time.perf_counter()
            try:
                c, w, _, err = volume_to_pseudoatoms(vol, vs, sigma=sv * vs, device=args.device,
                                                 max_atoms=30000)
                print(f"| 3j9g potential (cryojax) | {vol.shape[0]} | {vs:.1f} | {sv * vs:.2f} | "
                      f"{len(c)} | {100 * err:.2f} | {time.perf_counter() - t0:.0f} |",
                      flush=True)
            except Exception as e:
                print(f"| 3j9g | {vol.shape[0]} | {vs:.1f} | {sv * vs:.2f} | failed: {e} | | "
                      f"{time.perf_counter() - t0:.0f} |", flush=True)

    # modes 7-9 of the pseudoatomic model vs the atomic model's (AK at 2 Å
    # voxels, pseudoatoms of 2.5 Å, HEMNMA's percentile-5 cutoff; CA, 12 Å)
    from deephemnma.core.nma import compute_modes, mode_overlap
    vol = atoms_to_volume(torch.tensor(s.coords), torch.tensor(s.weights), 40, 2.0, 2.0).numpy()
    c, w, _, err = volume_to_pseudoatoms(vol, 2.0, sigma=2.5, device=args.device)
    ca = read_structure(data_file("AK.pdb"), "ca").center()[0]
    ov = mode_overlap(ca.coords, compute_modes(ca, 9, cutoff=12.0, method="anm").vectors[6:9],
                      c, compute_modes(c, 9, percentile=5.0, method="anm").vectors[6:9])
    print(f"\nmode overlap |cos| (rows: atomic CA modes 7-9; columns: modes 7-9 of {len(c)} "
          f"pseudoatoms, {100 * err:.1f} % error, of AK at 2 Å voxels):\n")
    print("| | pseudo 7 | pseudo 8 | pseudo 9 |\n|---|---|---|---|")
    for i in range(3):
        print(f"| atomic {7 + i} | " + " | ".join(f"{x:.2f}" for x in ov[i]) + " |")


if __name__ == "__main__":
    main()

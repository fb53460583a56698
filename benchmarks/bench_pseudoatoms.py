"""Pseudoatom conversion benchmark (issue 7): time and number of pseudoatoms for
a map simulated from AK.pdb at 1 Å voxels and for a 128^3 map, plus the mode
overlap with the atomic model. Prints a markdown table.

    python benchmarks/bench_pseudoatoms.py [--device cuda]
"""
import argparse
import os
import time

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--sigma-3j9g", type=float, nargs="+", default=[0.5, 1.0],
                    help="pseudoatom sigma(s) for the 3j9g map, in voxels")
    ap.add_argument("--shared", default=os.path.join(HERE, "..", "..", "shared", "data"))
    args = ap.parse_args()
    from deephemnma.core.projector import atoms_to_volume
    from deephemnma.core.pseudoatoms import volume_to_pseudoatoms
    from deephemnma.core.structure import read_structure
    s, _ = read_structure(os.path.join(args.shared, "continuousflex", "AK.pdb")).center()
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
    # a real map: cryojax's potential of 3j9g at 4.4 Å voxels (much of its power
    # is near Nyquist, so the pseudoatoms must be small: sigma 0.5 voxel)
    from deephemnma.io.stacks import read_volume
    path = os.path.join(args.shared, "oracles", "3j9g_potential_ps4_4.mrc")
    if os.path.exists(path):
        vol, vs = read_volume(path)
        for sv in args.sigma_3j9g:
            t0 = time.perf_counter()
            try:
                c, w, _, err = volume_to_pseudoatoms(vol, vs, sigma=sv * vs, device=args.device)
                print(f"| 3j9g potential (cryojax) | {vol.shape[0]} | {vs:.1f} | {sv * vs:.2f} | "
                      f"{len(c)} | {100 * err:.2f} | {time.perf_counter() - t0:.0f} |",
                      flush=True)
            except Exception as e:
                print(f"| 3j9g | {vol.shape[0]} | {vs:.1f} | {sv * vs:.2f} | failed: {e} | | "
                      f"{time.perf_counter() - t0:.0f} |", flush=True)


if __name__ == "__main__":
    main()

"""Landscape and reconstruction benchmarks. Prints tables:

1. speed: PCA + density plot of 1,000,000 points; reconstruction of 10,000
   images of 128 px (pad 1 and 2);
2. synthetic AK: group reconstructions (>= 899 images, the paper's smallest
   group) from estimated poses vs from ground-truth poses, FSC against the map
   of the group's ground-truth centroid model. Estimated poses are ground truth
   plus the errors our network/HEMNMA make (angular noise of ``--angle-error``
   deg and shift noise of ``--shift-error`` Å, default: the paper's Table 1
   inferred errors 2.5 deg / 0.2 Å).

    python benchmarks/bench_landscape.py [--box 64] [--group 899]
"""
import argparse
import os
import time

import numpy as np
import torch
from deephemnma.data import data_file  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--box", type=int, default=64)
    ap.add_argument("--group", type=int, default=899)
    ap.add_argument("--angle-error", type=float, default=2.5)
    ap.add_argument("--shift-error", type=float, default=0.2)
    ap.add_argument("--n-recon", type=int, default=10000)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    from deephemnma.core import landscape as L
    from deephemnma.core import rotations as R
    from deephemnma.core.projector import Projector, atoms_to_volume
    from deephemnma.core.reconstruct import fsc_resolution, reconstruct

    print("## Speed (2 CPU cores unless --device)\n")
    print("| task | size | time s | target |")
    print("|---|---|---|---|")
    x = np.random.default_rng(0).normal(size=(1_000_000, 3)) * [100, 50, 10]
    t0 = time.perf_counter()
    p = L.fit_pca(x, 2)
    c = L.transform(p, x)
    L.density_plot(c, "/tmp/deephemnma_bench_density.png")
    print(f"| PCA + density plot | 1,000,000 points | {time.perf_counter() - t0:.1f} | < 30 |")
    rng = np.random.default_rng(1)
    imgs = rng.normal(size=(args.n_recon, 128, 128)).astype(np.float32)
    ang = R.random_euler(args.n_recon, rng)
    for pad in (1, 2):
        t0 = time.perf_counter()
        reconstruct(imgs, ang, None, None, 1.0, pad=pad, device=args.device)
        print(f"| reconstruction (pad {pad}) | {args.n_recon} images of 128 px | "
              f"{time.perf_counter() - t0:.1f} | < 60 |")

    # group reconstructions -------------------------------------------------
    from deephemnma.stages.reference import load_reference
    from deephemnma.core.simulate import helix_amplitudes
    s, modes = load_reference(data_file("AK.pdb"))
    box = args.box
    ps = 0.65 * 128 / box
    print(f"\n## Group reconstructions: synthetic AK, {box} px at {ps:.2f} Å/px, noiseless, "
          f"{args.group} images per group, FSC vs the group's centroid map\n")
    print("| group (r range) | poses | FSC 0.5 Å | FSC 0.143 Å |")
    print("|---|---|---|---|")
    P = Projector(s.coords, s.weights, modes.vectors, box, ps)
    for g, (lo, hi) in enumerate([(0.0, 0.1), (0.45, 0.55), (0.9, 1.0)]):
        r = rng.uniform(lo, hi, args.group)
        q = helix_amplitudes(r)
        a = R.random_euler(args.group, rng)
        sh = rng.uniform(-1.25, 1.25, (args.group, 2))
        im = []
        for i in range(0, args.group, 256):
            im.append(P(torch.tensor(q[i:i + 256]), torch.tensor(R.euler_to_matrix(a[i:i + 256])),
                        torch.tensor(sh[i:i + 256])).numpy())
        im = np.concatenate(im)
        centroid = modes.deform(q.mean(0)[None])[0]
        ref = atoms_to_volume(torch.tensor(centroid), torch.tensor(s.weights), box, ps).numpy()
        # estimated poses: small random rotations of the given size + shift noise
        axis = rng.normal(size=(args.group, 3))
        axis /= np.linalg.norm(axis, axis=1, keepdims=True)
        w = axis * np.radians(rng.normal(0, args.angle_error, (args.group, 1)))
        from scipy.spatial.transform import Rotation
        dR = Rotation.from_rotvec(w).as_matrix()
        a_est = R.matrix_to_euler(dR @ R.euler_to_matrix(a))
        sh_est = sh + rng.normal(0, args.shift_error / ps, sh.shape)
        ang_err = np.mean(R.angular_distance(R.euler_to_matrix(a_est), R.euler_to_matrix(a)))
        for label, aa, ss in (("ground truth", a, sh),
                              (f"estimated ({ang_err:.1f} deg, {args.shift_error} Å)", a_est,
                               sh_est)):
            vol = reconstruct(im, aa, ss, None, ps, device=args.device)
            res = fsc_resolution(vol, ref, ps)
            print(f"| {g + 1} ({lo}-{hi}) | {label} | {res['res_0.5']:.2f} | "
                  f"{res['res_0.143']:.2f} |")
    print(f"\nNyquist: {2 * ps:.2f} Å. Paper (noisy 256 px images at 0.325 Å/px, Nyquist "
          "0.65 Å, subgroups of 899 images): FSC 0.5 3.7-4.4 Å (inferred poses), 3.6-3.7 Å "
          "(ground truth), 3.7-4.4 Å (HEMNMA); FSC 0.143 3.1-3.3, 3.0-3.1, 3.0-3.3 Å")


if __name__ == "__main__":
    main()

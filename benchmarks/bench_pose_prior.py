"""align --from-poses with and without its pose prior (``--pose-sigma``) on
particles that look real: the stand-in of benchmarks/realistic_standin.py (AK,
each particle its own astigmatic CTF, B-factor 80 Å², SNR 0.07, ice gradient,
consensus poses 3 deg and 0.5 Å off).

Each ``--sigmas`` value is one run of the align stage from the consensus
poses (0: no prior), Fourier-downscaled to ``--align-box`` px as the
real-data template does; ``--from-truth`` adds a run without the prior
started from the true poses (if it drifts as far, the images themselves
prefer the wrong poses). Prints one table: median angular error against the
truth, its ratio to the given poses' (also its range over 20 random halves,
as the template aligns one half), the particles beyond 10 deg, the median
deformation RMSD (Å, the RMS over atoms of the estimated minus the true
displacement by the modes) and the time.

    cd benchmarks && python bench_pose_prior.py [-n 300] [--box 128] [--pixel-size 1.3] \\
        [--align-box 64] [--sigmas 0,2,3,5] [--from-truth]

Other work may share the cores: the times are for scale only.
"""
import argparse
import os
import tempfile

import numpy as np

from bench_refine import stage_run
from realistic_standin import make_standin


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-n", type=int, default=300)
    ap.add_argument("--box", type=int, default=128)
    ap.add_argument("--pixel-size", type=float, default=1.3)
    ap.add_argument("--align-box", type=int, default=64)
    ap.add_argument("--sigmas", default="0,2,3,5", help="--pose-sigma values (deg), 0: none")
    ap.add_argument("--from-truth", action="store_true",
                    help="also a run without the prior from the true poses")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=5)
    ap.add_argument("--work", default=None, help="folder for the data (default: temporary)")
    a = ap.parse_args(argv)
    from deephemnma.core.metrics import angular_errors
    from deephemnma.data import data_file
    from deephemnma.stages import align, nma
    from deephemnma.stages.reference import load_reference
    work = a.work or tempfile.mkdtemp(prefix="bench_pose_prior_")
    data = make_standin(os.path.join(work, "standin"), a.n, a.box, a.pixel_size, a.seed,
                        sqlite=False)
    modes_dir = os.path.join(work, "nma")
    nma.run(nma.Config(structure=data_file("AK.pdb"), out=modes_dir, n_modes=20))
    _, ref = load_reference(data_file("AK.pdb"), "heavy", None, "7-9")
    _, ours = load_reference(os.path.join(modes_dir, "reference.pdb"), "heavy", modes_dir, "7-9")
    truth, given = data["truth"], data["poses"]
    start = angular_errors(given.angles(), truth.angles())
    runs = [(f"prior {float(s):g} deg" if float(s) else "no prior", "poses.xmd",
             float(s)) for s in a.sigmas.split(",")]
    if a.from_truth:
        runs.append(("no prior, started from the true poses", "truth.xmd", 0.0))
    print(f"{a.n} particles of the stand-in, {a.box} px at {a.pixel_size} Å/px, aligned at "
          f"{a.align_box} px; poses given: median {np.median(start):.2f} deg off the truth\n")
    print("| start | angle median deg | / given | / given, halves | beyond 10 deg | "
          "deformation RMSD med Å | s |")
    print("|---|---|---|---|---|---|---|")
    halves = [np.random.default_rng(k).permutation(a.n)[:a.n // 2] for k in range(20)]
    for label, src, sigma in runs:
        out = os.path.join(work, f"{src[:-4]}_{sigma:g}.xmd")
        est, dt = stage_run(align, out, os.path.join(work, "standin", src), modes_dir,
                            a.pixel_size, a.threads, outlier_threshold=0, from_poses=True,
                            pose_sigma=sigma, downscale=a.align_box, max_shift=4.0)
        err = angular_errors(est.angles(), truth.angles())
        ratio = [np.median(err[h]) / np.median(start[h]) for h in halves]
        d = (np.tensordot(est["nmaDisplacements"], ours.vectors, 1)
             - np.tensordot(truth["nmaDisplacements"], ref.vectors, 1))
        rmsd = np.median(np.sqrt((d ** 2).sum(-1).mean(-1)))
        print(f"| {label} | {np.median(err):.2f} | {np.median(err) / np.median(start):.2f} | "
              f"{min(ratio):.2f}-{max(ratio):.2f} | {100 * np.mean(err > 10):.1f} % | "
              f"{rmsd:.2f} | {dt:.0f} |", flush=True)


if __name__ == "__main__":
    main()

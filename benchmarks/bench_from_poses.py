"""Alignment from the particles' poses (align --from-poses) vs full HEMNMA
(align's global search) and vs refine from zero amplitudes, on the same
images.

``-n`` images (AK, modes 7-9 on the paper's helix, uniform orientations,
CTF, SNR 0.1 at ~0.325 Å/px then downscaled to ``--box`` px, not
phase-flipped: the stages flip them), as benchmarks/bench_align.py and
bench_refine.py build them. The particles' poses are the truth perturbed as a
consensus refinement of a flexible molecule would leave them: every
orientation rotated by exactly ``--errors`` degrees (2, 5, 10) about a random
axis, every shift moved by ``--shift-error`` Å (0.5) in a random direction,
no amplitudes. Three methods, each the stage as a user runs it (in this
process: reading the images, the work, writing the outputs):

- align (global search; it does not read the poses),
- align --from-poses (local search within the cone, full amplitude search,
  Levenberg-Marquardt refinement),
- refine (local continuous refinement from the poses, amplitudes from zero).

``--rounds`` rounds, the methods alternating (the order reversed every other
round); images/s from the best wall time of each. Prints one table: start
error, method, images/s, median angular error, misses (angle > 5 deg, as
bench_align.py counts them), amplitude MAE (mean over modes 7-9, core.metrics),
its ratio to align's, and the speed ratio to align.

    OMP_NUM_THREADS=1 python benchmarks/bench_from_poses.py [-n 200] [--rounds 2]

Other work may share the cores: only ratios within one run are meaningful.
"""
import argparse
import os
import tempfile

import numpy as np

import paper
from bench_refine import stage_run


def perturb(truth, deg, shift_A, pixel_size, seed):
    """A copy of ``truth`` with every orientation rotated by ``deg`` degrees
    about a random axis, every shift moved by ``shift_A`` Å in a random
    direction, and no amplitudes (the poses of a consensus refinement)."""
    from scipy.spatial.transform import Rotation
    from deephemnma.core import rotations as R
    rng = np.random.default_rng(seed)
    n = len(truth)
    axis = rng.normal(size=(n, 3))
    axis /= np.linalg.norm(axis, axis=1, keepdims=True)
    dR = Rotation.from_rotvec(axis * np.radians(deg)).as_matrix()
    ang = R.matrix_to_euler(dR @ R.euler_to_matrix(truth.angles()))
    phi = rng.uniform(0, 2 * np.pi, n)
    sh = truth.shifts() + shift_A / pixel_size * np.column_stack([np.cos(phi), np.sin(phi)])
    t = truth.copy()
    del t["nmaDisplacements"]
    t["angleRot"], t["angleTilt"], t["anglePsi"] = ang.T
    t["shiftX"], t["shiftY"] = sh.T
    return t


def scores(est, truth, pixel_size, ref):
    """(median angular error deg, misses > 5 deg, amplitude MAE)."""
    from deephemnma.core.metrics import angular_errors
    ang = angular_errors(est.angles(), truth.angles())
    mae = paper.compare(est, truth, pixel_size, ref)["amplitude_mae_mean"]["mean"]
    return float(np.median(ang)), int((ang > 5).sum()), float(mae)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("-n", type=int, default=200)
    ap.add_argument("--box", type=int, default=64)
    ap.add_argument("--errors", default="2,5,10", help="starting angular errors (deg)")
    ap.add_argument("--shift-error", type=float, default=0.5, help="starting shift error (Å)")
    ap.add_argument("--rounds", type=int, default=2, help="timed runs of each method")
    ap.add_argument("--threads", type=int, default=2, help="the stages' worker threads")
    ap.add_argument("--cone", type=float, default=None, help="align --from-poses --cone")
    ap.add_argument("--local-candidates", type=int, default=None)
    ap.add_argument("--pose-sigma", default="0",
                    help="align --from-poses --pose-sigma, one row per value (comma list)")
    ap.add_argument("--work", default=None, help="folder for the data (default: temporary)")
    ap.add_argument("--seed", type=int, default=100)
    args = ap.parse_args()
    from deephemnma.io.metadata import write_xmd
    from deephemnma.stages import align, refine
    work = args.work or tempfile.mkdtemp(prefix="bench_from_poses_")
    ref = paper.reference()
    ps = paper.pixel_size_for(args.box)
    data = os.path.join(work, "data")
    truth = paper.simulate_set(data, args.n, args.box, args.seed, ref)
    particles = os.path.join(data, "particles.xmd")
    errors = [float(e) for e in args.errors.split(",")]
    starts = {}
    for k, deg in enumerate(errors):
        starts[deg] = os.path.join(data, f"start{deg:g}.xmd")
        write_xmd(starts[deg], perturb(truth, deg, args.shift_error, ps, seed=1 + k))
    local = {"from_poses": True}
    if args.cone is not None:
        local["cone"] = args.cone
    if args.local_candidates is not None:
        local["local_candidates"] = args.local_candidates
    sigmas = [float(v) for v in args.pose_sigma.split(",")]
    local_names = [f"align --from-poses --pose-sigma {v:g}" if v else "align --from-poses"
                   for v in sigmas]
    runs = [("align", None, align, {})]
    for deg in errors:
        runs += [(n, deg, align, dict(local, pose_sigma=v)) for n, v in zip(local_names, sigmas)]
        runs += [("refine from zero amplitudes", deg, refine, {})]
    times, est = {}, {}
    for r in range(args.rounds):
        for name, deg, module, options in (runs if r % 2 == 0 else runs[::-1]):
            src = particles if deg is None else starts[deg]
            out = os.path.join(work, f"{name.split()[0]}{deg}_{r}.xmd".replace(" ", ""))
            if name.startswith("align --"):
                out = os.path.join(work, f"local{deg}_{options['pose_sigma']:g}_{r}.xmd")
            t, dt = stage_run(module, out, src, data, ps, args.threads,
                              outlier_threshold=0, **options)
            times.setdefault((name, deg), []).append(dt)
            est[(name, deg)] = t
    d = align.Config()
    print(f"{args.n} images, {args.box} px, {ps:.2f} Å/px, {paper.noise_text('paper', args.box)}, "
          f"CTF; starting poses: the truth rotated by the start error about random axes, "
          f"shifts moved by {args.shift_error:g} Å, no amplitudes; --from-poses with cone "
          f"{local.get('cone', d.cone):g} deg, shift window {d.shift_window:g} Å, "
          f"{local.get('local_candidates', d.local_candidates)} local candidates, "
          f"{d.local_coarse_iters} + {d.local_fine_iters} Levenberg-Marquardt iterations; "
          f"{args.threads} worker threads, best of {args.rounds} alternating runs\n")
    print("| start error | method | images/s | angle median deg | misses > 5 deg | "
          "amplitude MAE | MAE / align's | speed / align's |")
    print("|---|---|---|---|---|---|---|---|")
    a_best = min(times[("align", None)])
    a_med, a_miss, a_mae = scores(est[("align", None)], truth, ps, ref)
    for deg in errors:
        print(f"| {deg:g} deg | align (global search) | {args.n / a_best:.2f} | {a_med:.2f} | "
              f"{a_miss} ({100 * a_miss / args.n:.1f} %) | {a_mae:.2f} | 1.00 | 1.0x |")
        for name in local_names + ["refine from zero amplitudes"]:
            best = min(times[(name, deg)])
            med, miss, mae = scores(est[(name, deg)], truth, ps, ref)
            print(f"| {deg:g} deg | {name} | {args.n / best:.2f} | {med:.2f} | "
                  f"{miss} ({100 * miss / args.n:.1f} %) | {mae:.2f} | {mae / a_mae:.2f} | "
                  f"{a_best / best:.1f}x |")
    print("\nalign (global search) does not read the poses: one run per round, the same row "
          "for every start error")


if __name__ == "__main__":
    main()

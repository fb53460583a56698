"""Local HEMNMA refinement (the refine stage) vs full HEMNMA (the
align stage) on the paper's synthetic chain.

``-n`` images (AK, modes 7-9 on the paper's helix, uniform orientations,
CTF, SNR 0.1 at ~0.325 Å/px then downscaled to ``--box`` px, not
phase-flipped: the stages flip them) are aligned by full HEMNMA (global
search + refinement) and refined by the refine stage from the ground truth
perturbed to the paper's network accuracy (Table 1, inferred vs ground
truth, mean ± std): orientations rotated about random axes by angles whose
angular error (core.metrics, the mean angle between rotated axes) is 2.5 ±
3.3 deg, shifts moved by 0.2 ± 0.1 Å per axis, amplitudes by 5.4 ± 6.5,
8.2 ± 9.2, 8.9 ± 10.5 per mode (error magnitudes log-normal with these
means and stds, random signs). Prints:

1. accuracy (core.metrics.evaluate: per mode, angles, shifts, RMSDs) of the
   start, the refinement, full HEMNMA, and the paper's rows;
2. speed as a user waits for it (the stage in this process: reading the
   images, the work, writing the outputs), align and refine alternating,
   ``--rounds`` each: best and median wall seconds, images/s, ratio;
3. larger starting errors (angles x 2, 4, 8 with the same shift and
   amplitude errors), refined at full size only, with the default steps at
   the coarse level first (10) and with ``--coarse-iters`` (20): where
   refinement stops recovering.

    OMP_NUM_THREADS=2 python benchmarks/bench_refine.py [-n 200] [--box 64] [--rounds 2]

Other work may share the cores: only ratios within one run are meaningful.
"""
import argparse
import os
import tempfile
import time

import numpy as np

import paper

# Table 1, inferred vs ground truth: (mean, std) of the absolute errors
NETWORK = {"angles_deg": (2.5, 3.3), "shift_A": (0.2, 0.1),
           "modes": ((5.4, 6.5), (8.2, 9.2), (8.9, 10.5))}


def _lognormal(rng, mean, std, size):
    """Positive values with this mean and std."""
    s2 = np.log(1 + (std / mean) ** 2)
    return rng.lognormal(np.log(mean) - s2 / 2, np.sqrt(s2), size)


def perturb(truth, pixel_size, seed=0, angle_scale=1.0):
    """A copy of ``truth`` with angles, shifts and amplitudes moved by the
    paper's network errors (``angle_scale`` x the angular one)."""
    from scipy.spatial.transform import Rotation
    from deephemnma.core import rotations as R
    from deephemnma.core.metrics import angular_errors
    rng = np.random.default_rng(seed)
    n = len(truth)
    A0 = R.euler_to_matrix(truth.angles())
    axis = rng.normal(size=(n, 3))
    axis /= np.linalg.norm(axis, axis=1, keepdims=True)
    mean, std = NETWORK["angles_deg"]
    rad = np.radians(_lognormal(rng, mean * angle_scale, std * angle_scale, n))
    for _ in range(3):     # the metric is ~0.6-0.8 x the rotation angle: calibrate its mean
        ang = R.matrix_to_euler(Rotation.from_rotvec(axis * rad[:, None]).as_matrix() @ A0)
        rad *= mean * angle_scale / angular_errors(ang, truth.angles()).mean()
    ang = R.matrix_to_euler(Rotation.from_rotvec(axis * rad[:, None]).as_matrix() @ A0)
    sign = lambda shape: rng.choice([-1.0, 1.0], shape)          # noqa: E731
    sh = truth.shifts() + sign((n, 2)) * _lognormal(rng, *NETWORK["shift_A"], (n, 2)) / pixel_size
    q = truth["nmaDisplacements"] + sign((n, 3)) * np.stack(
        [_lognormal(rng, m, s, n) for m, s in NETWORK["modes"]], 1)
    t = truth.copy()
    t["angleRot"], t["angleTilt"], t["anglePsi"] = ang.T
    t["shiftX"], t["shiftY"] = sh.T
    t["nmaDisplacements"] = q
    return t


def stage_run(module, out, particles, data, pixel_size, threads, outlier_threshold=3.2,
              **options):
    """One run of the align or refine stage as a user runs it -> (Table, s)."""
    from deephemnma.io.metadata import read_metadata
    cfg = module.Config(particles=particles, modes=data,
                        structure=os.path.join(data, "reference.pdb"), out=out,
                        pixel_size=pixel_size, device="cpu", threads=threads,
                        outlier_threshold=outlier_threshold, **options)
    t0 = time.perf_counter()
    res = module.run(cfg, progress=False)
    dt = time.perf_counter() - t0
    return read_metadata(res.particles), dt


def misses(est, truth, deg=5.0):
    from deephemnma.core.metrics import angular_errors
    return int((angular_errors(est.angles(), truth.angles()) > deg).sum())


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("-n", type=int, default=200)
    ap.add_argument("--box", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=2, help="timed runs of each stage")
    ap.add_argument("--threads", type=int, default=2, help="the stages' worker threads")
    ap.add_argument("--coarse-iters", type=int, default=20,
                    help="table 3: steps at the coarse level of the third refine setting")
    ap.add_argument("--work", default=None, help="folder for the data (default: temporary)")
    ap.add_argument("--seed", type=int, default=100)
    args = ap.parse_args()
    from deephemnma.io.metadata import write_xmd
    from deephemnma.stages import align, refine
    work = args.work or tempfile.mkdtemp(prefix="bench_refine_")
    ref = paper.reference()
    ps = paper.pixel_size_for(args.box)
    data = os.path.join(work, "data")
    truth = paper.simulate_set(data, args.n, args.box, args.seed, ref)
    start = perturb(truth, ps, seed=1)
    start_file = os.path.join(data, "start.xmd")
    write_xmd(start_file, start)
    particles = os.path.join(data, "particles.xmd")

    # 1-2: accuracy and speed, align and refine alternating
    times = {"align": [], "refine": []}
    est = {}
    for r in range(args.rounds):
        for name in (("align", "refine") if r % 2 == 0 else ("refine", "align")):
            if name == "align":
                t, dt = stage_run(align, os.path.join(work, f"align{r}.xmd"), particles, data,
                                  ps, args.threads)
            else:
                t, dt = stage_run(refine, os.path.join(work, f"refine{r}.xmd"), start_file,
                                  data, ps, args.threads)
            times[name].append(dt)
            est[name] = t
    cols = {"start (paper's network errors)": paper.compare(start, truth, ps, ref),
            "refine from the start": paper.compare(est["refine"], truth, ps, ref),
            "full HEMNMA (align)": paper.compare(est["align"], truth, ps, ref)}
    cols.update(paper.paper_columns(
        {k: v for k, v in paper.TABLE1.items() if k != "inferred vs HEMNMA"}, "paper"))
    print(f"## 1. Accuracy vs ground truth: {args.n} images, {args.box} px, {ps:.2f} Å/px, "
          f"{paper.noise_text('paper', args.box)}, CTF\n")
    print(paper.table(cols))
    print(f"\nangle misses (> 5 deg): start {misses(start, truth)}, refine "
          f"{misses(est['refine'], truth)}, align {misses(est['align'], truth)} of {args.n}; "
          f"the paper's columns are at 128 px (Table 1, 2,000 images)\n")
    print(f"## 2. Speed as a user waits (the stage in-process: read, work, write), "
          f"{args.threads} worker threads, {args.rounds} rounds alternating\n")
    print("| stage | best wall s | median wall s | images/s (best) | speed-up vs align |")
    print("|---|---|---|---|---|")
    best = {k: min(v) for k, v in times.items()}
    for name in ("align", "refine"):
        print(f"| {name} | {best[name]:.1f} | {np.median(times[name]):.1f} | "
              f"{args.n / best[name]:.2f} | **{best['align'] / best[name]:.1f}x** |")
    ra, rr = cols["full HEMNMA (align)"], cols["refine from the start"]
    print(f"\nwin criterion (from the paper-level start, HEMNMA's accuracy at >= 3x "
          f"its speed): angles {rr['angles_deg']['mean']:.2f} vs {ra['angles_deg']['mean']:.2f}"
          f" deg, amplitude MAE {rr['amplitude_mae_mean']['mean']:.2f} vs "
          f"{ra['amplitude_mae_mean']['mean']:.2f}, shifts x {rr['shift_x_A']['mean']:.3f} vs "
          f"{ra['shift_x_A']['mean']:.3f} Å; speed {best['align'] / best['refine']:.1f}x\n")

    # 3: larger starting errors
    print("## 3. Larger starting angular errors (shift and amplitude errors as above), "
          "one run each\n")
    print("| start angles deg | start amplitude MAE | coarse iters | angles deg | misses > 5 deg "
          "| amplitude MAE | shift x Å | images/s |")
    print("|---|---|---|---|---|---|---|---|")
    d = refine.Config()
    settings = [(c, d.refine_fine_iters) for c in
                dict.fromkeys((0, d.refine_coarse_iters, args.coarse_iters))]
    for scale in (1, 2, 4, 8):
        st = perturb(truth, ps, seed=1 + scale, angle_scale=scale)
        f = os.path.join(data, f"start{scale}.xmd")
        write_xmd(f, st)
        e0 = paper.compare(st, truth, ps, ref)
        for c, fi in settings:
            t, dt = stage_run(refine, os.path.join(work, f"r{scale}_{c}.xmd"), f, data, ps,
                              args.threads, refine_coarse_iters=c, refine_fine_iters=fi)
            e = paper.compare(t, truth, ps, ref)
            print(f"| {e0['angles_deg']['mean']:.1f} | {e0['amplitude_mae_mean']['mean']:.1f} | "
                  f"{c} | {e['angles_deg']['mean']:.2f} ± {e['angles_deg']['std']:.2f} | "
                  f"{misses(t, truth)} | {e['amplitude_mae_mean']['mean']:.2f} | "
                  f"{e['shift_x_A']['mean']:.3f} | {args.n / dt:.1f} |")
    print(f"\nfull HEMNMA for reference: angles {ra['angles_deg']['mean']:.2f} deg, "
          f"{misses(est['align'], truth)} misses, amplitude MAE "
          f"{ra['amplitude_mae_mean']['mean']:.2f}, {args.n / best['align']:.2f} images/s")


if __name__ == "__main__":
    main()

"""HEMNMA alignment benchmark. Prints three tables:

1. accuracy on the paper's synthetic protocol (AK, modes 7-9, helix, SNR 0.1
   at 256 px then downscaled, CTF 5000 Å, phase flip) at ``--box`` px vs the
   paper's HEMNMA (Table 1, 128 px), with the share of misses (angle > 5 deg);
   ``--previous`` also aligns the same images with the previous implementation
   (benchmarks/_align_previous.py) and prints both;
2. agreement with real Xmipp HEMNMA on ContinuousFlex's smallstack_img.stk
   (modes 7-8; Xmipp worked at 64 px, 2 Å/px);
3. speed of ``deephemnma align`` as a user runs it (a fresh process: imports,
   reading the stack, the reference bank, the alignment, writing the .xmd) on
   ``--speed-n`` simulated images at 64 and 128 px, the current and the
   previous implementation alternating, ``--rounds`` times each: best and
   median wall time, CPU user/system time, and the ratio current / previous.

    python benchmarks/bench_align.py [-n 200] [--box 64] [--previous] [--device cuda]
    python benchmarks/bench_align.py --only-speed --speed-n 40 --rounds 3 --speed-boxes 64

Both implementations see the same machine in the same run: on a shared
machine only the ratio is meaningful.
"""
import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time

import numpy as np

from synthetic import noise_label, pixel_size_for, synthetic
from deephemnma.data import data_file  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
PREVIOUS = "--as-previous"


def run(aligner, imgs, ctf, batch=32):
    out = {k: [] for k in ("angles", "shifts", "amplitudes", "cost")}
    for i in range(0, len(imgs), batch):
        r = aligner.align(imgs[i:i + batch], None if ctf is None else ctf.subset(
            np.arange(i, min(len(imgs), i + batch))))
        for k in out:
            out[k].append(r[k])
    return {k: np.concatenate(v) for k, v in out.items()}


def previous_module():
    import importlib.util
    spec = importlib.util.spec_from_file_location("_align_previous",
                                                  os.path.join(HERE, "_align_previous.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def as_previous(argv):
    """``deephemnma ARGS`` with the previous Aligner (and its defaults)."""
    import deephemnma.core.align as core_align
    from deephemnma.cli import main
    core_align.Aligner = previous_module().previous_aligner
    return main(argv)


def accuracy(args, s, modes, extra):
    from deephemnma.core.align import AlignOptions, Aligner
    from deephemnma.core.ctf import CTFParams
    from deephemnma.core.metrics import angular_errors, evaluate, format_table
    from deephemnma.io.metadata import Table
    box = args.box
    imgs, truth, ps = synthetic(s, modes, args.n, box, seed=100, noise=args.noise)
    impls = [("ours", lambda: Aligner(s.coords, s.weights, modes.vectors, box, ps,
                                      AlignOptions(images_flipped=True, device=args.device,
                                                   **extra)))]
    if args.previous:
        prev = previous_module()
        impls.append(("previous", lambda: prev.Aligner(
            s.coords, s.weights, modes.vectors, box, ps,
            prev.PreviousOptions(images_flipped=True, device=args.device))))
    results, notes = [], []
    for name, make in impls:
        t0 = time.perf_counter()
        r = run(make(), imgs, CTFParams.from_table(truth))     # bank built inside the clock
        dt = time.perf_counter() - t0
        est = Table({"itemId": truth["itemId"], "angleRot": r["angles"][:, 0],
                     "angleTilt": r["angles"][:, 1], "anglePsi": r["angles"][:, 2],
                     "shiftX": r["shifts"][:, 0], "shiftY": r["shifts"][:, 1],
                     "nmaDisplacements": r["amplitudes"]})
        results.append((f"{name} ({box} px)",
                        evaluate(est, truth, ps, s.coords, modes.vectors, list(modes.numbers))))
        ang = angular_errors(est.angles(), truth.angles())
        notes.append(f"{name}: {args.n / dt:.2f} images/s on {args.device} (bank included; one "
                     f"run, not alternated: table 3 compares speeds); angular error median "
                     f"{np.median(ang):.2f} deg; misses (> 5 deg) {(ang > 5).sum()} of {args.n} "
                     f"= {100 * (ang > 5).mean():.1f} %")
    print(f"## 1. HEMNMA vs ground truth: {args.n} images, {box} px, {ps:.2f} Å/px, "
          f"{noise_label(args.noise, box)}, CTF, phase flip\n")
    table = format_table(results[0][1], results[0][0]).splitlines()
    if len(results) > 1:                      # one column per implementation
        other = format_table(results[1][1], results[1][0]).splitlines()
        table = [a + b.split("|", 2)[2] for a, b in zip(table, other)]
    print("\n".join(table) + "\n")
    print("\n".join(notes))
    print("paper (HEMNMA vs ground truth, Table 1, 128 px, mean ± std): amplitude MAE 6.6 "
          "(modes 7/8/9: 5.7 ± 8.4, 6.2 ± 7.2, 7.8 ± 7.2), angles 1.0 ± 0.9 deg, "
          "shifts 0.2 ± 0.2 Å\n")


def xmipp_agreement(args, extra):
    import torch
    from deephemnma.core.align import AlignOptions, Aligner
    from deephemnma.core.image import downscale
    from deephemnma.core.metrics import angular_errors
    from deephemnma.core.nma import compute_modes
    from deephemnma.core.structure import read_structure
    from deephemnma.io.metadata import read_metadata
    from deephemnma.io.stacks import open_stack
    ak = data_file("AK.pdb")
    stk = os.path.join(args.shared, "continuousflex", "smallstack_img.stk")
    gold = read_metadata(os.path.join(args.shared, "continuousflex",
                                      "images_PM_atoms_smallstack.xmd"))
    s2, _ = read_structure(ak).center()
    m78 = compute_modes(s2, 20, cutoff=8.0, method="rtb", block_size=1).select([7, 8])
    raw = open_stack(stk)[:]
    small = downscale(torch.tensor(raw), 64).numpy()
    al2 = Aligner(s2.coords, s2.weights, m78.vectors, 64, 2.0,
                  AlignOptions(device=args.device, angular_step=10.0, **extra))
    order = [int(str(x).split("@")[0]) - 1 for x in gold["image"]]
    r2 = run(al2, small[order], None)
    ad = angular_errors(r2["angles"], gold.angles())
    sd = np.linalg.norm(r2["shifts"] - gold.shifts(), axis=1)
    print("## 2. Agreement with Xmipp HEMNMA (smallstack_img.stk, modes 7-8, 64 px, 2 Å/px)\n")
    print("| image | Xmipp cost | angular distance deg | shift difference px | our amplitudes | "
          "Xmipp amplitudes |")
    print("|---|---|---|---|---|---|")
    for k in range(len(gold)):
        print(f"| {order[k] + 1} | {gold['cost'][k]:.4f} | {ad[k]:.1f} | {sd[k]:.2f} | "
              f"{np.round(r2['amplitudes'][k], 1).tolist()} | "
              f"{np.round(gold['nmaDisplacements'][k], 1).tolist()} |")
    good = gold["cost"] < 0.01
    cors = [np.corrcoef(r2["amplitudes"][good, j], gold["nmaDisplacements"][good, j])[0, 1]
            for j in range(2)]
    print(f"\nexcluding Xmipp's failed image(s): median angular distance {np.median(ad[good]):.1f}"
          f" deg, median shift difference {np.median(sd[good]):.2f} px; amplitude correlation "
          f"(Pearson, per mode; ElNemo and ProDy modes differ in sign and scale, so the sign "
          f"and magnitude of r are compared, not raw values): mode 7 {cors[0]:.2f}, "
          f"mode 8 {cors[1]:.2f}\n")


def _timed(cmd, env):
    """Wall, user and system seconds of a child process."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    r = subprocess.run(cmd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if r.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{r.stderr[-3000:]}")
    return wall, after.ru_utime - before.ru_utime, after.ru_stime - before.ru_stime


def speed(args, s, modes):
    from deephemnma.core.metrics import angular_errors
    from deephemnma.core.simulate import render_factor_for, simulate_to_folder
    from deephemnma.io.metadata import read_metadata
    print(f"## 3. Speed of `deephemnma align` (a fresh process, defaults, CTF from the "
          f"metadata, 3 modes, {args.device}), current vs previous implementation, "
          f"alternating, {args.rounds} rounds\n")
    print("| box | images | implementation | best wall s | median wall s | user s | sys s | "
          "images/s | amplitude MAE | angles deg | misses > 5 deg | current / previous |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    env = dict(os.environ, DEEPHEMNMA_QUIET="1",
               PYTHONPATH=os.pathsep.join([os.path.join(HERE, ".."), HERE,
                                           os.environ.get("PYTHONPATH", "")]))
    with tempfile.TemporaryDirectory() as tmp:
        for box in args.speed_boxes:
            n = args.speed_n if box <= 64 else max(1, args.speed_n * 2 // 5)
            ps = pixel_size_for(box)
            d = os.path.join(tmp, f"d{box}")
            truth = simulate_to_folder(d, s, modes, n, box=box, pixel_size=ps, quiet=True,
                                       snr=0.1, render_factor=render_factor_for(ps),
                                       snr_at_render=True, seed=7)
            common = ["align", "--particles", os.path.join(d, "particles.xmd"), "--modes", d,
                      "--structure", os.path.join(d, "reference.pdb"), "--pixel-size", str(ps),
                      "--device", args.device]
            impls = {"current": [sys.executable, "-m", "deephemnma"],
                     "previous": [sys.executable, os.path.abspath(__file__), PREVIOUS]}
            times = {k: [] for k in impls}
            for r in range(args.rounds):
                for name in (("current", "previous") if r % 2 == 0 else ("previous", "current")):
                    out = os.path.join(tmp, f"{name}{box}.xmd")
                    times[name].append(_timed(impls[name] + common + ["--out", out], env))
            rows = {}
            for name in impls:
                est = read_metadata(os.path.join(tmp, f"{name}{box}.xmd"))
                ang = angular_errors(est.angles(), truth.angles())
                amp = np.abs(est["nmaDisplacements"] - truth["nmaDisplacements"]).mean()
                walls = np.array([t[0] for t in times[name]])
                best = int(walls.argmin())
                rows[name] = (walls.min(), np.median(walls), times[name][best][1],
                              times[name][best][2], n / walls.min(), amp, ang.mean(),
                              int((ang > 5).sum()))
            for name in impls:
                w, med, u, sy, ips, amp, ang, miss = rows[name]
                ratio = (f"**{w / rows['previous'][0]:.2f}** (median "
                         f"{med / rows['previous'][1]:.2f})" if name == "current" else "")
                print(f"| {box} | {n} | {name} | {w:.1f} | {med:.1f} | {u:.1f} | {sy:.1f} | "
                      f"{ips:.2f} | {amp:.2f} | {ang:.2f} | {miss} | {ratio} |")
    print("\nthe paper's HEMNMA: 1 image per 4 CPU-minutes at 128 px (0.004 images/s per core)")


def main():
    if len(sys.argv) > 1 and sys.argv[1] == PREVIOUS:
        sys.exit(as_previous(sys.argv[2:]))
    ap = argparse.ArgumentParser()
    ap.add_argument("-n", type=int, default=200)
    ap.add_argument("--box", type=int, default=64,
                    help="accuracy table at this size (128: the paper's 0.65 Å/px)")
    ap.add_argument("--noise", choices=["paper", "output"], default="paper",
                    help="paper: SNR 0.1 at 256 px then downscaled; output: SNR 0.1 at --box")
    ap.add_argument("--previous", action="store_true",
                    help="table 1 also for the previous implementation")
    ap.add_argument("--only-accuracy", action="store_true", help="table 1 only")
    ap.add_argument("--only-speed", action="store_true", help="table 3 only")
    ap.add_argument("--speed-n", type=int, default=40,
                    help="images of the speed table at 64 px (2/5 of them at 128 px)")
    ap.add_argument("--speed-boxes", type=int, nargs="+", default=[64, 128])
    ap.add_argument("--rounds", type=int, default=3, help="speed runs per implementation")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--candidate-separation", type=float, default=None,
                    help="AlignOptions.candidate_separation (0: candidates may be near-duplicates)")
    # files not shipped with the package (ContinuousFlex's test set, 6ZU5)
    ap.add_argument("--shared", default=os.environ.get("DEEPHEMNMA_EXTRA_TEST_DATA", os.path.join(
        HERE, "..", "..", "shared", "data")))
    args = ap.parse_args()
    from deephemnma.stages.reference import load_reference
    s, modes = load_reference(data_file("AK.pdb"))
    extra = ({} if args.candidate_separation is None
             else {"candidate_separation": args.candidate_separation})
    if not args.only_speed:
        accuracy(args, s, modes, extra)
    if not (args.only_accuracy or args.only_speed):
        xmipp_agreement(args, extra)
    if not args.only_accuracy:
        speed(args, s, modes)


if __name__ == "__main__":
    main()

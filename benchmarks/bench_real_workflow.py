"""The real-data workflow template end to end on a stand-in for real
particles (benchmarks/realistic_standin.py: AK, each particle its own
astigmatic CTF, B-factor 80 Å², SNR 0.07, ice gradient, consensus poses 3 deg
and 0.5 Å off), as a user runs it from a terminal:

    scipion3 template deephemnma-real_data_workflow --nogui --noschedule ... project_name=NAME
    scipion3 python -m deephemnma.scipion_schedule NAME

Prints each run's time (the scheduler's waits between runs are not in
them), HEMNMA's errors on the training half and the network's on the
predicted half against the truth (median angular error, median shift error,
deformation RMSD: the RMS over atoms of the difference between the estimated
and true displacements by the modes, free of the modes' sign and scale; the
landscape's PC1 |r| and the cross-validated R² of the true amplitudes on the
estimated ones) and
the half-map resolution (FSC 0.143, masked) of each landscape group's map.

    python benchmarks/bench_real_workflow.py [-n 3000] [--box 256] [--pixel-size 0.65] \\
        [--align-box 128] [--epochs 30] [--net-size 128] [--group-size 900] [--paper-network]

HEMNMA aligns the images Fourier-downscaled to ``--align-box`` px (the
template's HEMNMA image size; 0: their own size), the network works at
``--net-size`` px, the group maps at the particles' own size. ``-n 300 --box
128 --pixel-size 1.3 --align-box 64 --epochs 3 --net-size 64 --group-size
40`` is the size of the slow test (minutes).
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

from realistic_standin import make_standin


def scipion(log, *args):
    """``python -m scipion ARGS`` (``scipion3``), output to ``log``."""
    env = dict(os.environ)
    env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", "")
    with open(log, "a") as fh:
        return subprocess.run([sys.executable, "-m", "scipion", *args], env=env,
                              stdin=subprocess.DEVNULL, stdout=fh,
                              stderr=subprocess.STDOUT).returncode


def wait(project, deadline_s):
    """The project's runs once all finished or one failed (or the deadline)."""
    from pyworkflow.protocol import STATUS_FAILED, STATUS_FINISHED
    end = time.time() + deadline_s
    while True:
        runs = project.getRuns(refresh=True)
        status = [p.getStatus() for p in runs]
        if STATUS_FAILED in status or all(s == STATUS_FINISHED for s in status) \
                or time.time() > end:
            break
        time.sleep(10)
    for p in runs:
        if not (p.isFinished() or p.isFailed()):
            project.stopProtocol(p)
    return runs


def errors(est, truth, ref_vectors, mode_vectors, pixel_size):
    """(median angular error deg, median shift error Å, median deformation
    RMSD Å, PC1 |r|, cross-validated R² of the true amplitudes on the
    estimated ones) of the Table ``est`` against ``truth``."""
    from deephemnma.core.metrics import angular_errors, match_rows
    from deephemnma.io.metadata import parse_image_ref
    est = est.copy()        # the rows by their image (a merged set renumbers its ids)
    est["itemId"] = np.array([parse_image_ref(r)[0] for r in est["image"]])
    ie, it = match_rows(est, truth)
    e, t = est.subset(ie), truth.subset(it)
    ang = np.median(angular_errors(e.angles(), t.angles()))
    sh = np.median(np.linalg.norm(e.shifts() - t.shifts(), axis=1)) * pixel_size
    rmsd = r = r2 = float("nan")
    if "nmaDisplacements" in e and mode_vectors.shape[1:] == ref_vectors.shape[1:]:
        d = (np.tensordot(e["nmaDisplacements"], mode_vectors, 1)
             - np.tensordot(t["nmaDisplacements"], ref_vectors, 1))
        rmsd = np.median(np.sqrt((d ** 2).sum(-1).mean(-1)))
        from deephemnma.core.metrics import cv_r2, pc1_correlation
        r = pc1_correlation(e["nmaDisplacements"], t["nmaDisplacements"])
        r2 = cv_r2(e["nmaDisplacements"], t["nmaDisplacements"])
    return ang, sh, rmsd, r, r2


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-n", type=int, default=3000)
    ap.add_argument("--box", type=int, default=256)
    ap.add_argument("--pixel-size", type=float, default=0.65)
    ap.add_argument("--align-box", type=int, default=128,
                    help="HEMNMA image size (px; 0: the particles' box)")
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--paper-network", action="store_true",
                    help="the template's pose_network=false: the paper's network on the "
                         "images alone (default: the pose-aware network)")
    ap.add_argument("--net-size", type=int, default=128)
    ap.add_argument("--group-size", type=int, default=900)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=None, help="work folder (default: a temporary one)")
    a = ap.parse_args(argv)
    out = os.path.abspath(a.out or tempfile.mkdtemp(prefix="bench_real_workflow_"))
    from deephemnma.scipion_env import setup
    setup(os.path.join(out, "scipion"))
    from deephemnma.data import data_file

    t0 = time.time()
    data = make_standin(os.path.join(out, "standin"), a.n, a.box, a.pixel_size, a.seed)
    print(f"stand-in: {a.n} particles, {a.box} px at {a.pixel_size} Å/px "
          f"({time.time() - t0:.0f} s); HEMNMA at {a.align_box or a.box} px, network at "
          f"{a.net_size or a.box} px ({'the paper' if a.paper_network else 'pose-aware'})")
    name = f"bench_real_workflow_{os.getpid()}"
    values = dict(particles=data["sqlite"], pixel_size=a.pixel_size, voltage=300, cs=2.7,
                  amp_contrast=0.1, structure=data_file("AK.pdb"), modes="7-9",
                  angular_step=12, max_shift=4, align_box=a.align_box,
                  pose_network=str(not a.paper_network).lower(), epochs=a.epochs,
                  net_size=a.net_size,
                  group_size=a.group_size, project_name=name)
    log = os.path.join(out, name + ".log")
    t0 = time.time()
    rc = scipion(log, "template", "deephemnma-real_data_workflow", "--nogui", "--noschedule",
                 *[f"{k}={v}" for k, v in values.items()])
    if rc == 0:
        rc = scipion(log, "python", "-m", "deephemnma.scipion_schedule", name)
    if rc != 0:
        sys.exit(f"the template commands failed: see {log}")
    from pyworkflow.project import Manager
    runs = wait(Manager().loadProject(name), 24 * 3600)
    print(f"workflow: {time.time() - t0:.0f} s from the template command to the last run "
          f"(project {name}, 2 worker threads per run)")
    for p in runs:
        print(f"  {p.getObjLabel():45s} {p.getStatusMessage():10s} {p.getElapsedTime()} "
              f"({_seconds(p):.0f} s)")
    failed = [p for p in runs if not p.isFinished()]
    if failed:
        sys.exit(f"{failed[0].getObjLabel()}: {failed[0].getErrorMessage()}")
    report(runs, data, a.pixel_size)


def _seconds(p):
    """A run's elapsed time in seconds."""
    e = p.getElapsedTime()
    return e.total_seconds() if hasattr(e, "total_seconds") else float("nan")


def report(runs, data, pixel_size):
    """The errors against the truth and the groups' resolutions."""
    from deephemnma.data import data_file
    from deephemnma.stages import reconstruct
    from deephemnma.stages.reference import load_reference
    by = {p.getClassName(): p for p in runs}
    _, modes = load_reference(data_file("AK.pdb"), "heavy", None, "7-9")
    vecs = np.array([np.loadtxt(m.getModeFile()) for m in by["DeepHEMNMAProtNMA"].outputModes
                     if m.getModeFile().rsplit(".", 1)[-1] in ("7", "8", "9")])
    truth = data["truth"]
    poses = data["poses"]
    from deephemnma.core.metrics import angular_errors
    print(f"poses given: median {np.median(angular_errors(poses.angles(), truth.angles())):.2f}"
          " deg off")
    align = by["DeepHEMNMAProtAlign"]
    pred = by["DeepHEMNMAProtPredict"]
    from deephemnma.protocols.convert import particles_to_table
    hemnma = particles_to_table(align.outputParticles)
    merged = particles_to_table(pred.outputParticles)
    predicted = merged.subset(np.flatnonzero(~np.isin(merged["image"], hemnma["image"])))
    rows = [("HEMNMA (training half)", hemnma), ("network (the other half)", predicted),
            ("landscape (all)", merged)]
    print(f"{'':28s} {'n':>5s} {'angle med deg':>14s} {'shift med Å':>12s} "
          f"{'deformation RMSD med Å':>23s} {'PC1 |r|':>8s} {'CV R²':>6s}")
    for label, parts in rows:
        ang, sh, rmsd, r, r2 = errors(parts, truth, modes.vectors, vecs, pixel_size)
        print(f"{label:28s} {len(parts):5d} {ang:14.2f} {sh:12.2f} {rmsd:23.2f} {r:8.3f} "
              f"{r2:6.3f}")
    land = by["DeepHEMNMAProtLandscape"]
    for key in sorted(k for k, _ in land.iterOutputAttributes() if k.startswith("outputVolume")):
        vol = getattr(land, key)
        with open(reconstruct.Outputs(vol.getFileName()).fsc_halves_json) as fh:
            r = json.load(fh)
        group = getattr(land, "outputGroup" + key[-2:])
        print(f"group {key[-2:]}: {group.getSize()} particles, map {vol.getDim()[0]} px, "
              f"half maps FSC 0.143 {r['res_0.143_masked']:.2f} Å masked (corrected; "
              f"{r.get('res_0.143_masked_uncorrected', float('nan')):.2f} Å uncorrected), "
              f"{r['res_0.143']:.2f} Å unmasked")


if __name__ == "__main__":
    main()

"""``make demo``: the DeepHEMNMA workflow headless in a real Scipion project.

Synthetic adenylate kinase (AK.pdb, modes 7-9, the paper's helix), sized for
2 CPU cores (about 12 minutes): normal modes -> synthesize 3000 particles
(their alignment: consensus poses, the true ones turned by 3° RMS about random
axes and shifted by 0.5 Å RMS, as a consensus refinement gives them; the truth
is kept apart) -> random split -> HEMNMA alignment of the training subset
(1500) twice: the paper's global search, and a local search from the
consensus poses -> train the
network on HEMNMA labels (the CPU recipe: images seen at 32 px, no dropout,
coordinate channels, in-plane augmentation) -> predict the rest; the
consensus path continues too: the pose-aware network (train --pose-input,
ResNet-18 trunk) on the labels of HEMNMA from the consensus poses predicts the
rest from their consensus poses -> landscape (of the paper's path):
the paper's combined space (network-predicted + HEMNMA-labelled particles, the
latter drawn apart), groups along PC1, animations, group reconstructions with
their FSC. While a stage runs, its progress lines are echoed here (read from
the protocol's logs). Prints the errors against the ground truth (network vs
predict-the-mean), the two alignment paths side by side (time, errors, PC1 |r|
and cross-validated R² of the true amplitudes), the two network paths side by
side (training time, PC1 |r| and R² of the predicted particles and of the
landscape's particles), how well each set's PC1 follows the truth,
each group's FSC, the time of each stage, then how to open the project in
Scipion's GUI.

    python -m deephemnma.demo [--images 3000] [--train-subset 1500] [--epochs 30]
                              [--pose-epochs 15] [--consensus-error 3,0.5] [--out demo_output]
"""
import argparse
import os
import re
import shlex
import sys
import threading
import time


def _find_ak(path):
    """The demo's structure: ``path`` (--structure) when given, else the
    package's AK.pdb (deephemnma/data: PDB 4AKE chain A, 1656 heavy atoms)."""
    if not path:
        from deephemnma.data import data_file
        return data_file("AK.pdb")
    if not os.path.isfile(path):
        print(f"demo: --structure {path}: no such file", file=sys.stderr)
        sys.exit(2)
    return os.path.abspath(path)


def gui_command(name, env=None, python=None):
    """The shell line, printed at the end of the demo, that opens Scipion
    project ``name`` in the GUI: the Scipion home and user data folder the
    project lives under (from ``env``, default os.environ, as
    deephemnma.scipion_env.setup set them), and this Python (``python``,
    default sys.executable: the venv's, which has Scipion) both to run the
    GUI (with -O, as Scipion's launcher does) and, as SCIPION_PYTHON, to run
    the protocols launched from it. Quoted for a POSIX shell::

        SCIPION_HOME=/abs/demo_output/scipion SCIPION_USER_DATA=/abs/demo_output/scipion/data SCIPION_PYTHON=/abs/.venv/bin/python /abs/.venv/bin/python -O -m scipion project deephemnma_demo
    """
    env = os.environ if env is None else env
    q = shlex.quote
    py = q(python or sys.executable)
    return (f"SCIPION_HOME={q(env['SCIPION_HOME'])} "
            f"SCIPION_USER_DATA={q(env['SCIPION_USER_DATA'])} "
            f"SCIPION_PYTHON={py} {py} -O -m scipion project {q(name)}")


# a progress token "N/TOTAL" standing alone (not part of a path or a date)
_COUNT = re.compile(r"(?<![\w/.:-])\d+/\d+(?![\w/.:-])")
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def progress_fragment(text):
    """The last progress fragment of a protocol log's text, spaces collapsed
    (e.g. ``'align 240/500 10.4 img/s ETA 00:00:24'``), or None. The stages
    write their progress lines with carriage returns (deephemnma.utils.Progress)
    to the run's stderr log; a fragment is a piece between ``\\r``/``\\n``
    holding a count ``N/TOTAL``."""
    for frag in reversed(re.split(r"[\r\n]+", _ANSI.sub("", text))):
        if _COUNT.search(frag):
            return " ".join(frag.split())
    return None


class LogEcho(threading.Thread):
    """Echo a running protocol's progress to the demo's output: every
    ``interval`` seconds (when the progress changed) one line
    ``[demo] LABEL: FRAGMENT, ELAPSED s``. ``paths()`` gives the log files
    (called until it returns paths: the protocol's working folder is set when
    it is launched); the files are read from where the last read stopped."""

    def __init__(self, label, paths, interval=10.0, poll=0.5, stream=None):
        super().__init__(daemon=True)
        self.label, self.paths, self.interval, self.poll = label, paths, interval, poll
        self.stream = stream or sys.stdout
        self.lines = 0                      # progress lines written
        self._done = threading.Event()
        self._t0 = time.perf_counter()

    def run(self):
        offsets, latest, shown, last = {}, None, None, -self.interval
        while not self._done.wait(self.poll):
            try:
                files = [os.path.abspath(f) for f in self.paths() or [] if f]
            except Exception:           # working folder not set yet
                files = []
            for f in files:
                try:
                    with open(f, "rb") as fh:
                        fh.seek(offsets.get(f, 0))
                        data = fh.read()
                except OSError:
                    continue
                offsets[f] = offsets.get(f, 0) + len(data)
                frag = progress_fragment(data.decode("utf-8", "replace"))
                latest = frag or latest
            now = time.perf_counter()
            if latest and latest != shown and now - last >= self.interval:
                self.stream.write(f"[demo] {self.label}: {latest}, {now - self._t0:.0f} s\n")
                self.stream.flush()
                shown, last = latest, now
                self.lines += 1

    def stop(self):
        self._done.set()
        self.join()


def _child_cpu():
    """User + system CPU seconds of the finished child processes (the
    protocols' runs), all threads."""
    import resource
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def _table(parts, gt=True):
    """Table of a Scipion particle set with estimated and ground-truth values."""
    import numpy as np
    from deephemnma.io.metadata import Table
    from deephemnma.protocols.convert import particles_to_table
    t = particles_to_table(parts)
    if not gt:
        return t
    truth = {"itemId": t["itemId"]}
    a, s, q = [], [], []
    for p in parts.iterItems(orderBy="id"):
        a.append([float(v) for v in p._deephemnma_gtAngles])
        s.append([float(v) for v in p._deephemnma_gtShifts])
        q.append([float(v) for v in p._deephemnma_gtAmplitudes])
    a, s = np.array(a), np.array(s)
    truth.update(angleRot=a[:, 0], angleTilt=a[:, 1], anglePsi=a[:, 2], shiftX=s[:, 0],
                 shiftY=s[:, 1], nmaDisplacements=np.array(q))
    return t, Table(truth)


def compare_paths(paths, pixel_size, mode_numbers=(7, 8, 9)):
    """Lines comparing HEMNMA alignment paths on the same particles.
    ``paths``: {label: (seconds, estimated Table, truth Table)}. One row per
    path: wall time, amplitude / angle / shift errors against the ground
    truth, |r| between the PC1 of its amplitudes (its landscape's first axis)
    and the PC1 of the true amplitudes, and the cross-validated R² (5 folds)
    of a linear regression of the true amplitudes on its amplitudes."""
    from deephemnma.core.metrics import cv_r2, evaluate, match_rows, pc1_correlation
    lines = ["| alignment path | time s | amplitude MAE | angles ° | shifts Å | PC1 \\|r\\| "
             "| CV R² |", "|---|---|---|---|---|---|---|"]
    for label, (seconds, est, truth) in paths.items():
        r = evaluate(est, truth, pixel_size, mode_numbers=list(mode_numbers))
        ie, it = match_rows(est, truth)
        q = est.subset(ie)["nmaDisplacements"]
        q_true = truth.subset(it)["nmaDisplacements"]
        shift = (r["shift_x_A"]["mean"] + r["shift_y_A"]["mean"]) / 2
        lines.append(f"| {label} | {seconds:.0f} | {r['amplitude_mae_mean']['mean']:.1f} | "
                     f"{r['angles_deg']['mean']:.2f} | {shift:.2f} | "
                     f"{pc1_correlation(q, q_true):.3f} | {cv_r2(q, q_true):.3f} |")
    lines.append(f"(n={len(ie)} particles; errors: means against the ground truth, shifts "
                 "per axis; PC1 |r|: the PC1 of the path's amplitudes against the PC1 of "
                 "the true ones; CV R²: true amplitudes predicted linearly from the path's, "
                 "5-fold cross-validated)")
    return lines


def compare_networks(paths):
    """Lines comparing the network paths on the same particles. ``paths``:
    {label: (training seconds, predicted Table, its truth, labelled Table, its
    truth)}. One row per path: the network's training time, the PC1 |r| and
    cross-validated R² (core.metrics) of the predicted particles' amplitudes
    against the true ones, and of the landscape's particles (the predicted and
    the labelled ones together, as the landscape combines them)."""
    import numpy as np
    from deephemnma.core.metrics import cv_r2, match_rows, pc1_correlation

    def amplitudes(est, truth):
        ie, it = match_rows(est, truth)
        return est.subset(ie)["nmaDisplacements"], truth.subset(it)["nmaDisplacements"]
    lines = ["| network path | training s | predicted PC1 \\|r\\| | predicted CV R² "
             "| landscape PC1 \\|r\\| | landscape CV R² |", "|---|---|---|---|---|---|"]
    for label, (seconds, pred, pred_truth, lab, lab_truth) in paths.items():
        q, qt = amplitudes(pred, pred_truth)
        ql, qlt = amplitudes(lab, lab_truth)
        qa, qat = np.concatenate([q, ql]), np.concatenate([qt, qlt])
        lines.append(f"| {label} | {seconds:.0f} | {pc1_correlation(q, qt):.3f} | "
                     f"{cv_r2(q, qt):.3f} | {pc1_correlation(qa, qat):.3f} | "
                     f"{cv_r2(qa, qat):.3f} |")
    lines.append(f"(predicted: n={len(q)}; landscape: the predicted and the HEMNMA-labelled "
                 f"particles, n={len(qa)}; PC1 |r| and CV R² against the true amplitudes)")
    return lines


def network_verdict(net, mean, margin=0.9):
    """One line: does the network beat predict-the-mean (its mean error below
    ``margin`` x the baseline's) on amplitudes and on angles? ``net``/``mean``:
    :func:`deephemnma.core.metrics.evaluate` results."""
    cells = []
    for key, name, unit in (("amplitude_mae_mean", "amplitudes", ""), ("angles_deg", "angles",
                                                                        "°")):
        a, b = net[key]["mean"], mean[key]["mean"]
        cells.append(f"{name} {a:.1f}{unit} vs {b:.1f}{unit} "
                     + ("(better)" if a < margin * b else "(not better: predict-the-mean level)"))
    return "network vs predict-the-mean: " + ", ".join(cells)


def landscape_report(land, truths):
    """Lines on the landscape protocol's result: how well each set's PC1
    follows the ground truth (correlation of the particles' PC1 with their
    true amplitudes placed by the same PCA; ``truths``: {set name: truth
    Table}, the second one the protocol's set shown apart), then one row per
    group: size, particles of the second set, FSC 0.5 / 0.143 resolution (Å)
    of the group's map against the map of its centroid model."""
    import json
    import numpy as np
    from deephemnma.core.landscape import load_pca, transform
    from deephemnma.core.metrics import match_rows
    from deephemnma.io.metadata import read_metadata
    files = land.landscapeOutputs()
    t = read_metadata(files.landscape)
    pca = load_pca(files.pca)
    apart = np.asarray(t["source"]) == land.APART_FILE
    names = list(truths)
    lines = [f"landscape: the paper's combined space, {(~apart).sum()} {names[0]} + "
             f"{apart.sum()} {names[1]} particles (drawn apart, orange), PCA of both; "
             f"{files.density}"]
    for name, mask in ((names[0], ~apart), (names[1], apart)):
        sub = t.subset(np.flatnonzero(mask))
        ie, it = match_rows(sub, truths[name])
        pc_true = transform(pca, truths[name].subset(it)["nmaDisplacements"])[:, 0]
        r = np.corrcoef(sub.subset(ie)["PC1"], pc_true)[0, 1]
        lines.append(f"PC1 of the {name} particles vs their true amplitudes' PC1: r = {r:.2f}"
                     f" (n={len(ie)})")
    lines += ["", "| group (along PC1) | particles | of which " + names[1]
              + " | FSC 0.5 Å | FSC 0.143 Å |", "|---|---|---|---|---|"]
    for k in files.groups():
        g = read_metadata(files.group(k))
        n2 = int((np.asarray(g["source"]) == land.APART_FILE).sum())
        res = ("", "")
        if os.path.exists(files.fsc_json(k)):
            with open(files.fsc_json(k)) as fh:
                r = json.load(fh)
            res = (f"{r['res_0.5']:.1f}", f"{r['res_0.143']:.1f}")
        lines.append(f"| {k} | {len(g)} | {n2} | {res[0]} | {res[1]} |")
    lines.append("(FSC of each group's reconstruction, from its particles' angles and shifts, "
                 "against the map of the group's centroid model: the reference deformed by "
                 "the group's mean amplitudes)")
    return lines


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="demo_output")
    ap.add_argument("--structure", default=None,
                    help="PDB/mmCIF file (default: the package's AK.pdb, PDB 4AKE chain A)")
    ap.add_argument("--images", type=int, default=3000)
    ap.add_argument("--train-subset", type=int, default=1500,
                    help="images aligned by HEMNMA and used to train the network")
    ap.add_argument("--box", type=int, default=64)
    # the CPU training recipe (measured on ground-truth labels, CHANGES.md
    # 2026-11-25): images seen at 32 px, no dropout, coordinate channels
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--input-size", type=int, default=32,
                    help="px: the network sees the images Fourier-downscaled to this size")
    ap.add_argument("--pose-epochs", type=int, default=15,
                    help="epochs of the pose-aware network (benchmarks/bench_pose_net.py: 15 "
                         "reach what 30 do, in half the time)")
    ap.add_argument("--augment", type=int, default=1,
                    help="1: random in-plane rotation of every training batch")
    ap.add_argument("--consensus-error", default="3,0.5", metavar="DEG,Å",
                    help="the particles' alignment: their true poses turned by this RMS "
                         "angle about random axes and shifted by this RMS distance, as a "
                         "consensus refinement gives them; aligned from these poses beside "
                         "the paper's global search")
    ap.add_argument("--progress-interval", type=float, default=10.0,
                    help="seconds between the progress lines of a running stage")
    args = ap.parse_args(argv)
    from deephemnma.commands.simulate import consensus_error
    from deephemnma.errors import InputError
    try:
        consensus = consensus_error(args.consensus_error)
        if not consensus or consensus["consensus_angle"] <= 0 or min(consensus.values()) < 0:
            raise InputError(f"--consensus-error {args.consensus_error}: expected DEG,Å with "
                             "an angle > 0 and a shift >= 0, e.g. 3,0.5")
        for flag, value in (("--epochs", args.epochs), ("--pose-epochs", args.pose_epochs)):
            if value < 1:
                raise InputError(f"{flag} {value}: must be >= 1")
    except InputError as e:
        print(f"demo: {e}", file=sys.stderr)
        sys.exit(2)
    out = os.path.abspath(args.out)
    # OpenMP threads that sleep while waiting (see deephemnma.passive_openmp),
    # inherited by the protocols' processes; a value set by the user is kept
    from deephemnma import passive_openmp
    passive_openmp()
    ak = _find_ak(args.structure)
    from deephemnma.scipion_env import setup
    setup(os.path.join(out, "scipion"), force=True)

    from pwem.protocols import ProtImportPdb, ProtSplitSet
    from pyworkflow.project import Manager

    from deephemnma import protocols as P
    from deephemnma.protocols.protocol_align import FROM_POSES_NO, FROM_POSES_YES
    from deephemnma.core.metrics import evaluate, predict_the_mean

    name = "deephemnma_demo"
    manager = Manager()
    if manager.hasProject(name):
        manager.deleteProject(name)
    project = manager.createProject(name)
    os.chdir(project.path)
    times, cpu, results = {}, {}, {}

    def run(label, prot):
        t0, c0 = time.perf_counter(), _child_cpu()
        print(f"[demo] {label} ...", flush=True)
        # launchProtocol(wait=True) blocks in the main thread (the project's
        # database stays in the thread that opened it); a thread tails the logs
        echo = LogEcho(label, lambda: prot.getLogPaths()[:2] if prot.getWorkingDir() else [],
                       interval=args.progress_interval)
        echo.start()
        try:
            project.launchProtocol(prot, wait=True)
        finally:
            echo.stop()
        if prot.isFailed():
            sys.exit(f"demo: {label} failed: {prot.getErrorMessage()}\n"
                     f"log: {prot.getLogPaths()[0] if prot.getLogPaths() else ''}")
        times[label] = time.perf_counter() - t0
        cpu[label] = _child_cpu() - c0
        print(f"[demo] {label} done in {times[label]:.0f} s", flush=True)
        return prot

    ps = 1.3 * 64 / args.box
    imp = run("import structure", project.newProtocol(ProtImportPdb, inputPdbData=1, pdbFile=ak))
    nma = run("normal modes", project.newProtocol(P.DeepHEMNMAProtNMA, inputStructure=imp.outputPdb,
                                                 numberOfModes=20))
    syn = run("synthesize", project.newProtocol(
        P.DeepHEMNMAProtSynthesize, inputModes=nma.outputModes, inputReference=nma.outputReference,
        numberOfImages=args.images, box=args.box, samplingRate=ps, snr=0.1, defocus=5000.0,
        consensusAngle=consensus["consensus_angle"],
        consensusShift=consensus["consensus_shift"]))
    # image set 1 (HEMNMA + training) and image set 2 (prediction): a random
    # split in k parts, set 1 = one part of about --train-subset images
    k = max(2, int(round(args.images / args.train_subset)))
    split = run("split", project.newProtocol(ProtSplitSet, inputSet=syn.outputParticles,
                                            numberOfSets=k, randomize=True))
    train_in = split.outputParticles01
    rest = [getattr(split, f"outputParticles{i:02d}") for i in range(2, k + 1)]
    if len(rest) > 1:
        from pwem.protocols import ProtUnionSet
        uni = run("image set 2", project.newProtocol(ProtUnionSet, inputSets=rest))
        set2 = uni.outputSet
    else:
        set2 = rest[0]
    ali = run("HEMNMA alignment", project.newProtocol(
        P.DeepHEMNMAProtAlign, inputParticles=train_in, inputModes=nma.outputModes,
        inputReference=nma.outputReference, modeList="7-9", useGpu=False,
        # the paper's HEMNMA: a global search, the particles' consensus poses unused
        fromPoses=FROM_POSES_NO))
    est, truth = _table(ali.outputParticles)
    results["HEMNMA vs ground truth"] = evaluate(est, truth, ps, mode_numbers=[7, 8, 9])
    # the same particles aligned from their consensus poses (a local search in a cone);
    # the network and the landscape continue from the paper's path
    cons = run("HEMNMA from consensus poses", project.newProtocol(
        P.DeepHEMNMAProtAlign, inputParticles=train_in, inputModes=nma.outputModes,
        inputReference=nma.outputReference, modeList="7-9", useGpu=False,
        fromPoses=FROM_POSES_YES))
    cons_est, _ = _table(cons.outputParticles)
    results["HEMNMA from consensus poses vs ground truth"] = evaluate(cons_est, truth, ps,
                                                      mode_numbers=[7, 8, 9])
    start, _ = _table(train_in)
    start_err = evaluate(start, truth, ps)
    paths = {"paper: global search": (times["HEMNMA alignment"], est, truth),
             "from consensus poses": (times["HEMNMA from consensus poses"], cons_est, truth)}
    tr = run("train network", project.newProtocol(
        P.DeepHEMNMAProtTrain, inputParticles=ali.outputParticlesKept
        if hasattr(ali, "outputParticlesKept") else ali.outputParticles,
        inputModes=nma.outputModes, epochs=args.epochs, batchSize=32, learningRate=3e-4,
        inputSize=args.input_size, dropout=0.0, coordChannels=True, augment=bool(args.augment),
        useGpu=False))
    pr = run("predict", project.newProtocol(
        P.DeepHEMNMAProtPredict, inputModel=tr.outputModel, inputParticles=set2,
        useGpu=False))
    est, truth = _table(pr.outputParticles)
    results["inferred vs ground truth"] = evaluate(est, truth, ps, mode_numbers=[7, 8, 9])
    # the consensus path continued: the pose-aware network (it reads the images
    # at their consensus poses) trained on the labels of HEMNMA from those poses
    cons_labels = cons.outputParticlesKept if hasattr(cons, "outputParticlesKept") \
        else cons.outputParticles
    pose_tr = run("train pose-aware network", project.newProtocol(
        P.DeepHEMNMAProtTrain, inputParticles=cons_labels, inputModes=nma.outputModes,
        inputReference=nma.outputReference, consensusParticles=train_in, poseInput=True,
        trunk=P.DeepHEMNMAProtTrain.TRUNKS.index("resnet18"), epochs=args.pose_epochs,
        batchSize=32, learningRate=3e-4, inputSize=args.input_size, dropout=0.0,
        useGpu=False))
    pose_pr = run("predict (pose-aware)", project.newProtocol(
        P.DeepHEMNMAProtPredict, inputModel=pose_tr.outputModel, inputParticles=set2,
        useGpu=False))
    pose_est, _ = _table(pose_pr.outputParticles)
    results["pose-aware network vs ground truth"] = evaluate(pose_est, truth, ps,
                                                             mode_numbers=[7, 8, 9])
    hemnma_est, hemnma_truth = _table(ali.outputParticles)
    results["predict-the-mean"] = evaluate(predict_the_mean(hemnma_est, truth), truth, ps,
                                           mode_numbers=[7, 8, 9])
    # the paper's combined space: the network's particles and the HEMNMA-
    # labelled ones in one landscape, the HEMNMA ones drawn apart
    n_all = set2.getSize() + ali.outputParticles.getSize()
    land = run("landscape + reconstructions", project.newProtocol(
        P.DeepHEMNMAProtLandscape, inputParticles=pr.outputParticles,
        inputParticlesApart=ali.outputParticles, apartLabel="HEMNMA-labelled",
        inputModes=nma.outputModes, inputReference=nma.outputReference, grouping=1,
        minGroupSize=max(50, n_all // 8), reconstruct=True, useGpu=False))

    from deephemnma.core.metrics import format_table
    print("\n## DeepHEMNMA demo: synthetic AK, modes 7-9, "
          f"{args.box} px at {ps:.2f} Å/px, SNR 0.1 at 0.325 Å/px before downscaling "
          "(the paper's chain), CTF\n")
    keys = ["amplitude_mae_mean", "mode_7", "mode_8", "mode_9", "angles_deg", "shift_x_A",
            "shift_y_A"]
    table = {k: {kk: v for kk, v in r.items() if kk == "n" or kk in keys}
             for k, r in results.items()}
    print(format_table(table))
    net, mean = results["inferred vs ground truth"], results["predict-the-mean"]
    print("\n" + network_verdict(net, mean))
    print(f"\nHEMNMA, two paths on the same {start_err['n']} particles: the paper's global "
          "search, and a local search from consensus poses (drawn "
          f"{consensus['consensus_angle']:g}° RMS rotation and {consensus['consensus_shift']:g}"
          f" Å RMS shift off the truth; their errors as in the table: angles "
          f"{start_err['angles_deg']['mean']:.2f}°, shifts "
          f"{(start_err['shift_x_A']['mean'] + start_err['shift_y_A']['mean']) / 2:.2f} Å)\n")
    print("\n".join(compare_paths(paths, ps)))
    print("(the landscape continues from the paper's path)")
    cons_all, cons_truth = _table(cons.outputParticles)
    print("\nThe two paths continued: the paper's network on the global search's labels, the "
          "pose-aware network (images read at their consensus poses) on the labels of HEMNMA "
          "from those poses; both predict the other particles\n")
    print("\n".join(compare_networks({
        "paper: network on global-search labels": (
            times["train network"], est, truth, hemnma_est, hemnma_truth),
        "consensus: pose-aware network": (
            times["train pose-aware network"], pose_est, truth, cons_all, cons_truth)})))
    print("\n" + "\n".join(landscape_report(land, {"network-predicted": truth,
                                                    "HEMNMA-labelled": hemnma_truth})))
    print("\n| stage | time s | CPU s |\n|---|---|---|")
    for k, v in times.items():
        print(f"| {k} | {v:.0f} | {cpu[k]:.0f} |")
    print(f"| total | {sum(times.values()):.0f} | {sum(cpu.values()):.0f} |")
    print("(CPU s: user + system time of the stage's processes, all threads; on a machine "
          "shared with other work the wall time grows, the CPU time much less)")
    print(f"\nTo open the project in the Scipion GUI (needs a display), paste in a shell:\n"
          f"  {gui_command(name)}")


if __name__ == "__main__":
    main()

"""``make demo``: the DeepHEMNMA workflow headless in a real Scipion project.

Synthetic adenylate kinase (AK.pdb, modes 7-9, the paper's helix), sized for
2 CPU cores: normal modes -> synthesize particles -> random split ->
HEMNMA alignment of the training subset -> train the network on HEMNMA labels ->
predict the rest -> landscape (PCA, groups along PC1, animations, group
reconstructions). Prints the errors against the ground truth and the time of
each stage, then how to open the project in Scipion's GUI.

    python -m deephemnma.demo [--images 3000] [--train-subset 500] [--out demo_output]
"""
import argparse
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))


def _find_ak(path):
    cands = [path] if path else []
    cands += [os.path.join(HERE, "..", "..", "shared", "data", "continuousflex", "AK.pdb"),
              os.path.join(HERE, "data", "AK.pdb")]
    for c in cands:
        if c and os.path.exists(c):
            return os.path.abspath(c)
    sys.exit("demo: AK.pdb not found; give --structure PATH (e.g. ContinuousFlex's AK.pdb)")


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


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="demo_output")
    ap.add_argument("--structure", default=None)
    ap.add_argument("--images", type=int, default=3000)
    ap.add_argument("--train-subset", type=int, default=500,
                    help="images aligned by HEMNMA and used to train the network")
    ap.add_argument("--box", type=int, default=64)
    ap.add_argument("--epochs", type=int, default=15)
    args = ap.parse_args(argv)
    out = os.path.abspath(args.out)
    from deephemnma.scipion_env import setup
    user_data = setup(os.path.join(out, "scipion"), force=True)
    ak = _find_ak(args.structure)

    import numpy as np
    from pwem.protocols import ProtImportPdb, ProtSplitSet
    from pyworkflow.project import Manager

    from deephemnma import protocols as P
    from deephemnma.core.metrics import evaluate

    name = "deephemnma_demo"
    manager = Manager()
    if manager.hasProject(name):
        manager.deleteProject(name)
    project = manager.createProject(name)
    os.chdir(project.path)
    times, results = {}, {}

    def run(label, prot):
        t0 = time.perf_counter()
        print(f"[demo] {label} ...", flush=True)
        project.launchProtocol(prot, wait=True)
        if prot.isFailed():
            sys.exit(f"demo: {label} failed: {prot.getErrorMessage()}\n"
                     f"log: {prot.getLogPaths()[0] if prot.getLogPaths() else ''}")
        times[label] = time.perf_counter() - t0
        return prot

    ps = 1.3 * 64 / args.box
    imp = run("import structure", project.newProtocol(ProtImportPdb, inputPdbData=1, pdbFile=ak))
    nma = run("normal modes", project.newProtocol(P.DeepHEMNMAProtNMA, inputStructure=imp.outputPdb,
                                                 numberOfModes=20))
    syn = run("synthesize", project.newProtocol(
        P.DeepHEMNMAProtSynthesize, inputModes=nma.outputModes, inputReference=nma.outputReference,
        numberOfImages=args.images, box=args.box, samplingRate=ps, snr=0.1, defocus=5000.0))
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
        inputReference=nma.outputReference, modeList="7-9", useGpu=False))
    est, truth = _table(ali.outputParticles)
    results["HEMNMA vs ground truth"] = evaluate(est, truth, ps, mode_numbers=[7, 8, 9])
    tr = run("train network", project.newProtocol(
        P.DeepHEMNMAProtTrain, inputParticles=ali.outputParticlesKept
        if hasattr(ali, "outputParticlesKept") else ali.outputParticles,
        inputModes=nma.outputModes, epochs=args.epochs, batchSize=32, useGpu=False))
    pr = run("predict", project.newProtocol(
        P.DeepHEMNMAProtPredict, inputModel=tr.outputModel, inputParticles=set2,
        useGpu=False))
    est, truth = _table(pr.outputParticles)
    results["inferred vs ground truth"] = evaluate(est, truth, ps, mode_numbers=[7, 8, 9])
    base = est.copy()
    base["nmaDisplacements"] = np.tile(_table(ali.outputParticles)[0]["nmaDisplacements"]
                                       .mean(0), (len(base), 1))
    results["predict-the-mean amplitudes"] = {
        k: v for k, v in evaluate(base, truth, ps, mode_numbers=[7, 8, 9]).items()
        if k == "n" or "mode" in k
        or "amplitude" in k}
    land = run("landscape + reconstructions", project.newProtocol(
        P.DeepHEMNMAProtLandscape, inputParticles=pr.outputParticles, inputModes=nma.outputModes,
        inputReference=nma.outputReference, grouping=1,
        minGroupSize=max(50, set2.getSize() // 8), reconstruct=True,
        useGpu=False))
    groups = sorted(a for a in dir(land) if a.startswith("outputGroup"))

    from deephemnma.core.metrics import format_table
    print("\n## DeepHEMNMA demo: synthetic AK, modes 7-9, "
          f"{args.box} px at {ps:.2f} Å/px, SNR 0.1 at 0.325 Å/px before downscaling "
          "(the paper's chain), CTF\n")
    keys = ["amplitude_mae_mean", "mode_7", "mode_8", "mode_9", "angles_deg", "shift_x_A",
            "shift_y_A"]
    table = {k: {kk: v for kk, v in r.items() if kk == "n" or kk in keys}
             for k, r in results.items()}
    print(format_table(table))
    print("\n| stage | time s |\n|---|---|")
    for k, v in times.items():
        print(f"| {k} | {v:.0f} |")
    print(f"| total | {sum(times.values()):.0f} |")
    print(f"\nlandscape: {len(groups)} groups along PC1; density plot, animations and group maps"
          f" in {land._getExtraPath('landscape')}")
    print(f"\nTo open the project in the Scipion GUI:\n  SCIPION_USER_DATA={user_data} "
          f"python -m scipion project {name}\n(or `scipion3 project {name}` with the same "
          "SCIPION_USER_DATA)")


if __name__ == "__main__":
    main()

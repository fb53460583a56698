"""Peak memory of `deephemnma predict` vs the number of images (it
must not grow with N). A small model is trained for one epoch on simulated AK
images (32 px), stacks of N images (the simulated ones tiled, memory-mapped
.mrcs + .xmd) are written, and `deephemnma predict` runs on each in its own
process; its peak resident memory (VmHWM) and rate are printed.

    python benchmarks/bench_predict_memory.py [--sizes 10000 200000]
"""
import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np
from deephemnma.data import data_file  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
# VmHWM (the peak RSS of this process's own address space): ru_maxrss would also count the
# parent's memory at fork time, which Linux carries across exec.
CHILD = ("import sys; from deephemnma.cli import main; rc = main(sys.argv[1:]); "
         "hwm = [l for l in open('/proc/self/status') if l.startswith('VmHWM')][0]; "
         "print('MAXRSS_KB', hwm.split()[1]); sys.exit(rc)")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", type=int, nargs="+", default=[10000, 200000])
    ap.add_argument("--box", type=int, default=32)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    from deephemnma.cli import main as cli
    from deephemnma.io.metadata import Table, image_ref, read_metadata, write_xmd
    from deephemnma.io.stacks import StackWriter, load_images
    work = tempfile.mkdtemp(prefix="bench_predict_")
    sim = os.path.join(work, "sim")
    ps = 1.3 * 64 / args.box
    assert cli(["simulate", "--structure", data_file("AK.pdb"),
                "--out", sim, "-n", "512", "--box", str(args.box), "--pixel-size", str(ps),
                "--phase-flip"]) == 0
    assert cli(["train", "--particles", os.path.join(sim, "particles.xmd"), "--out",
                os.path.join(work, "model"), "--epochs", "1", "--batch-size", "64",
                "--images-flipped", "--device", args.device]) == 0
    t = read_metadata(os.path.join(sim, "particles.xmd"))
    base = load_images(t, sim)
    print(f"\n## Peak memory of `deephemnma predict` ({args.box} px, joint ResNet-34, "
          f"batch 256, chunks of 4096, {args.device})\n")
    print("| images | stack GB | peak RSS GB | images/s |")
    print("|---|---|---|---|")
    for n in args.sizes:
        folder = os.path.join(work, f"n{n}")
        w = StackWriter(os.path.join(folder, "particles.mrcs"), n, args.box, ps)
        for s in range(0, n, len(base)):
            w.write(s, base[:min(len(base), n - s)])
        w.close()
        write_xmd(os.path.join(folder, "particles.xmd"), Table({
            "image": np.array([image_ref(i, "particles.mrcs") for i in range(1, n + 1)],
                              dtype=object),
            "itemId": np.arange(1, n + 1)}))
        t0 = time.perf_counter()
        p = subprocess.run([sys.executable, "-c", CHILD, "predict", "--model",
                            os.path.join(work, "model", "model.pt"), "--particles",
                            os.path.join(folder, "particles.xmd"), "--out",
                            os.path.join(folder, "pred.xmd"), "--device", args.device],
                           capture_output=True, text=True)
        dt = time.perf_counter() - t0
        if p.returncode:
            sys.exit(p.stdout + p.stderr)
        kb = int(p.stdout.split("MAXRSS_KB")[1].split()[0])
        gb = n * args.box ** 2 * 4 / 1024 ** 3
        print(f"| {n} | {gb:.2f} | {kb / 1024 ** 2:.2f} | {n / dt:.0f} |", flush=True)
        shutil.rmtree(folder)
    shutil.rmtree(work)


if __name__ == "__main__":
    main()

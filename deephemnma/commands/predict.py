"""Predict amplitudes, Euler angles and shifts of particles with a trained model.

Streams the images (constant memory) and writes an .xmd in the conventions of
HEMNMA alignment. Chunks are kept in OUT.parts/ so an interrupted run resumes.
"""
import os
import time

import numpy as np


def add_args(p):
    p.add_argument("--model", required=True)
    p.add_argument("--particles", required=True)
    p.add_argument("--out", required=True, help="output .xmd")
    p.add_argument("--pixel-size", type=float, default=None)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--chunk", type=int, default=4096)
    p.add_argument("--device", default="auto")


def main(args):
    from ..core.inference import Predictor
    from ..io.metadata import read_metadata, write_xmd
    from ..io.models import load_model
    from ..io.stacks import load_images
    from ..utils import Progress, resolve_device
    device = resolve_device(args.device)
    nets, meta = load_model(args.model, device)
    pred = Predictor(nets, meta, device, args.batch_size)
    t = read_metadata(args.particles)
    root = os.path.dirname(os.path.abspath(args.particles))
    first = load_images(t, root, [0])
    pred.check(first.shape[-1], args.pixel_size)
    parts = args.out + ".parts"
    os.makedirs(parts, exist_ok=True)
    n = len(t)
    prog = Progress(n, "predict")
    t0 = time.perf_counter()
    for c in range(0, n, args.chunk):
        f = os.path.join(parts, f"{c:012d}.npz")
        idx = np.arange(c, min(n, c + args.chunk))
        if os.path.exists(f):
            prog.update(len(idx))
            continue
        r = pred.predict(load_images(t, root, idx))
        np.savez(f + ".tmp.npz", **r)
        os.replace(f + ".tmp.npz", f)
        prog.update(len(idx))
    res = {}
    for c in range(0, n, args.chunk):
        z = np.load(os.path.join(parts, f"{c:012d}.npz"))
        for k in z.files:
            res.setdefault(k, []).append(z[k])
    res = {k: np.concatenate(v) for k, v in res.items()}
    out = t.copy()
    if "angles" in res:
        out["angleRot"], out["angleTilt"], out["anglePsi"] = res["angles"].T
    if "shifts" in res:
        out["shiftX"], out["shiftY"] = res["shifts"].T
    if "amplitudes" in res:
        out["nmaDisplacements"] = res["amplitudes"]
    if "itemId" not in out:
        out["itemId"] = np.arange(1, n + 1)
    write_xmd(args.out, out)
    import shutil
    shutil.rmtree(parts)
    dt = time.perf_counter() - t0
    print(f"predicted {n} images in {dt:.1f} s ({n / max(dt, 1e-9):.0f} images/s) -> {args.out}")

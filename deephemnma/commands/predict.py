"""Predict amplitudes, Euler angles and shifts of particles with a trained model.

Streams the images (constant memory) and writes an .xmd in the conventions of
HEMNMA alignment. Chunks are kept in OUT.parts/ so an interrupted run resumes.
"""
import os
import shutil
import time

import numpy as np

from ..errors import InputError


def add_args(p):
    p.add_argument("--model", required=True)
    p.add_argument("--particles", required=True)
    p.add_argument("--out", required=True, help="output .xmd")
    p.add_argument("--pixel-size", type=float, default=None)
    p.add_argument("--rescale", action="store_true",
                   help="Fourier-crop images larger than the model's box to it (same physical "
                        "size, e.g. 128 px images for a 64 px model); shifts come back in "
                        "the images' pixels")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--chunk", type=int, default=4096)
    p.add_argument("--device", default="auto")


def main(args):
    from ..core.inference import Predictor
    from ..io.metadata import concatenate_xmd, count_rows, iter_metadata, write_xmd
    from ..io.models import load_model
    from ..io.stacks import load_images
    from ..utils import Progress, resolve_device
    device = resolve_device(args.device)
    nets, meta = load_model(args.model, device)
    pred = Predictor(nets, meta, device, args.batch_size)
    root = os.path.dirname(os.path.abspath(args.particles))
    first = next(iter_metadata(args.particles, 1), None)
    if first is None:
        raise InputError(f"{args.particles}: no particles")
    # refuse images the model cannot read before anything is written
    pred.check(load_images(first, root, [0]).shape[-1], args.pixel_size, args.rescale)
    n = count_rows(args.particles)
    parts = args.out + ".parts"
    stamp = os.path.join(parts, "run.txt")
    key = f"{os.path.abspath(args.particles)} {n} {args.chunk}\n"
    if os.path.exists(stamp) and open(stamp).read() != key:
        shutil.rmtree(parts)          # parts of another input or chunk size: start over
    os.makedirs(parts, exist_ok=True)
    with open(stamp, "w") as fh:
        fh.write(key)
    prog = Progress(n, "predict")
    t0 = time.perf_counter()
    files = []
    # the particle table streams by in chunks (constant memory); each chunk's
    # predictions are an .xmd under OUT.parts/, kept until the end so that the
    # same command, run again after an interruption, continues
    for k, t in enumerate(iter_metadata(args.particles, args.chunk)):
        f = os.path.join(parts, f"{k:09d}.xmd")
        files.append(f)
        if not os.path.exists(f):
            write_xmd(f, _with_predictions(t, pred.predict(load_images(t, root)),
                                           first_item=k * args.chunk + 1))
        prog.update(len(t))
    concatenate_xmd(files, args.out)
    shutil.rmtree(parts)
    dt = time.perf_counter() - t0
    print(f"predicted {n} images in {dt:.1f} s ({n / max(dt, 1e-9):.0f} images/s) -> {args.out}")


def _with_predictions(t, res, first_item):
    """The particle rows with the predicted angles, shifts and amplitudes."""
    out = t.copy()
    if "angles" in res:
        out["angleRot"], out["angleTilt"], out["anglePsi"] = res["angles"].T
    if "shifts" in res:
        out["shiftX"], out["shiftY"] = res["shifts"].T
    if "amplitudes" in res:
        out["nmaDisplacements"] = res["amplitudes"]
    if "itemId" not in out:
        out["itemId"] = np.arange(first_item, first_item + len(t))
    return out

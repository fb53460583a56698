"""Predict normal-mode amplitudes, Euler angles and shifts of particles with a
trained model (Stage 2, image set 2).

The particle table streams by in chunks (memory does not grow with the number
of particles) and the output is an .xmd with the input's columns plus the
predictions in the conventions of HEMNMA alignment (``nmaDisplacements``,
``angleRot``/``angleTilt``/``anglePsi`` in degrees, ``shiftX``/``shiftY`` in
pixels of the images), in input order.

Before anything is written, every stack is checked (square images, one box for
all, header and metadata pixel sizes vs ``--pixel-size``, image numbers within the stacks)
and the images are checked against the model (box, or the ``--rescale`` rule;
pixel size: see :func:`deephemnma.core.inference.input_scale`).

Phase flip, the rule of training (core.training.flip_ctf): a model that saw
phase-flipped images (meta ``phase_flip``, every model `deephemnma train`
writes) gets the images phase-flipped from their CTF columns, unless they are
marked as flipped already (``images_flipped``); models without the key get the
images as given.

Rows with a non-finite value in a column the prediction keeps (CTF...), an
unusable image (NaN/inf pixels, constant) or a non-finite prediction are left
out alone and listed in ``OUT.rejected.xmd``; the other rows' predictions are
those of a run without them (the chunks and batches are formed from usable
rows only).

Finished chunks are kept in ``OUT.parts/`` under a run stamp (digest of the
particle file, the stacks it references, the model file, pixel size, rescale,
chunk and batch size, device type): running the same command after an
interruption continues; a run with another input, model or options starts
afresh and says so.
"""
from __future__ import annotations
import dataclasses
import hashlib
import json
import os
import time

import numpy as np

from . import base
from .base import InputError, need
from ..utils import resolve_device

__all__ = ["Config", "Outputs", "run", "summary"]

SCAN_ROWS = 65536      # rows per table in the checking pass over the particle file


@dataclasses.dataclass
class Config(base.StageConfig):
    model: str = None                # model file (model.pt of `deephemnma train`)
    particles: str = None            # .xmd/.star referencing the images
    out: str = None                  # output .xmd
    pixel_size: float = None         # Å/px of the images (None: the metadata's or headers')
    rescale: bool = False            # Fourier-crop larger images of the same field to the model's box
    images_flipped: bool = False     # images already CTF phase-flipped (else flipped from
    #                                  their CTF columns when the model saw flipped images)
    batch_size: int = 256            # images per forward pass
    chunk: int = 4096                # rows per resumable part
    device: str = "auto"             # 'auto', 'cpu', 'cuda', 'cuda:1'...
    absolute_paths: bool = False     # absolute image references in the outputs

    def validate_options(self):
        """The checks that need no file (the Scipion form validates with these
        before the upstream files exist)."""
        if self.pixel_size is not None:
            base.positive("--pixel-size", self.pixel_size)
        base.at_least("--batch-size", self.batch_size, 1)
        base.at_least("--chunk", self.chunk, 1)
        need(int(self.batch_size) == self.batch_size and int(self.chunk) == self.chunk,
             f"--batch-size and --chunk must be whole numbers, got {self.batch_size}, "
             f"{self.chunk}")
        resolve_device(self.device)
        return self

    def validate(self):
        base.existing("--model", self.model)
        base.existing("--particles", self.particles)
        base.output_path("--out", self.out, [self.particles, self.model])
        parts = Outputs(self.out).parts
        need(not os.path.exists(parts) or os.path.isdir(parts),
             f"--out: {parts} exists and is not a folder of parts; remove it")
        return self.validate_options()


@dataclasses.dataclass
class Outputs:
    particles: str                   # the particles with their predictions (.xmd)
    n_predicted: int = 0
    n_rejected: int = 0
    rejected_reasons: str = ""       # e.g. "2 non-finite value, 1 unusable image ..."
    seconds: float = 0.0
    resumed_chunks: int = 0
    pixel_size: float = None         # Å/px of the images (given, the metadata's or the headers')
    model_pixel_size: float = None   # Å/px of the training images; None: unknown
    box: int = None                  # px of the images
    scale: float = 1.0               # image px per model px (> 1 with --rescale)
    model_flips: bool = False        # the model saw phase-flipped images
    n_flipped: int = 0               # images phase-flipped from their CTF columns

    @property
    def stem(self):
        return os.path.splitext(self.particles)[0]

    @property
    def rejected(self):
        """Rows left out (non-finite values, unusable images, non-finite
        predictions), with the reason."""
        return self.stem + ".rejected.xmd"

    @property
    def parts(self):
        """Finished chunks of an unfinished run (removed at the end)."""
        return self.particles + ".parts"

    run_record = base.record_property("particles")


def _scan(cfg):
    """One streaming pass over the particle table before any work: counts the
    rows and checks every stack (:class:`base.StackCheck`: square images, one
    box, header and metadata pixel sizes vs ``--pixel-size``) and every image number.

    Returns (rows, StackCheck, {stack path: (images, bytes, mtime ns)})."""
    from ..io.metadata import iter_metadata, parse_image_ref
    from ..io.stacks import open_stack
    stacks = base.StackCheck(cfg.pixel_size)
    files, n = {}, 0
    for t in iter_metadata(cfg.particles, SCAN_ROWS):
        t.require(["image"], "image", cfg.particles)
        numbers = {}                               # stack -> (lowest, highest) image number
        for ref in dict.fromkeys(t["image"]):
            try:
                i, p = parse_image_ref(ref)
            except ValueError:
                raise InputError(f"{cfg.particles}: bad image reference '{ref}' "
                                 "(expected N@stack)") from None
            full = t.image_path(p)
            lo, hi = numbers.get(full, (i, i))
            numbers[full] = (min(lo, i), max(hi, i))
        stacks.check(t)
        for full, (lo, hi) in numbers.items():
            if full not in files:
                st = os.stat(full)
                files[full] = (len(open_stack(full)), st.st_size, st.st_mtime_ns)
            size = files[full][0]
            need(lo >= 1 and hi <= size, f"{full}: image {lo if lo < 1 else hi} requested, "
                                         f"the stack has {size}")
        n += len(t)
    return n, stacks, files


def _numbered(tables):
    """Tables of a stream with their rows' positions in the input (base.ROW)."""
    start = 0
    for t in tables:
        yield base.numbered(t, start)
        start += len(t)


def _with_predictions(t, res):
    """The rows of ``t`` with the predicted angles, shifts and amplitudes
    (``itemId``: the row's position in the input + 1 when the input has none)."""
    from ..core.inference import COLUMNS
    out = t.copy()
    for key, columns in COLUMNS.items():
        if key in res:
            values = res[key]
            if len(columns) == 1:
                out[columns[0]] = values
            else:
                for j, c in enumerate(columns):
                    out[c] = values[:, j]
    if "itemId" not in out:
        out["itemId"] = np.asarray(t[base.ROW]) + 1
    return out


def _predict_chunk(store, k, t, imgs, pred, ref_dir, absolute, ctf=None):
    """Predict one chunk and save it as parts ``k.xmd`` (the rows with finite
    predictions, image references resolving from ``ref_dir``, the output's
    folder) and ``k.rejected.xmd`` (the input rows whose prediction is not
    finite; written first, so that a part never exists without it). ``ctf``:
    phase-flip the images with it first (the model's rule)."""
    from ..io.metadata import write_xmd
    if pred.reads_poses:
        from ..core.ctf import CTFParams
        res = pred.predict(imgs, ctf, (t.angles(), t.shifts()), CTFParams.from_table(t))
    else:
        res = pred.predict(imgs) if ctf is None else pred.predict(imgs, ctf)
    ok = np.ones(len(t), bool)
    for v in res.values():
        ok &= np.isfinite(np.asarray(v).reshape(len(t), -1)).all(1)
    bad_path = store.path(k, ".rejected.xmd")
    if not ok.all():
        write_xmd(bad_path, base.public(t.subset(~ok)))
    elif os.path.exists(bad_path):
        os.remove(bad_path)
    write_xmd(store.path(k, ".xmd"), base.public(_with_predictions(t, res).subset(ok)),
              ref_dir=ref_dir, absolute=absolute)
    return int(ok.sum())


def _stamp(cfg, files, out, device):
    """What the parts depend on (see :class:`base.ChunkStore`)."""
    h = hashlib.sha256(json.dumps(sorted(files.items())).encode()).hexdigest()[:16]
    return {"particles": base.file_digest(cfg.particles),
            "particles_folder": os.path.dirname(os.path.realpath(cfg.particles)),
            "stacks": h, "model": base.file_digest(cfg.model),
            "pixel_size": out.pixel_size, "rescale": bool(cfg.rescale), "scale": out.scale,
            "chunk": int(cfg.chunk), "batch_size": int(cfg.batch_size),
            "phase_flip": bool(out.model_flips and not cfg.images_flipped),
            "device": device.type, "absolute_paths": bool(cfg.absolute_paths),
            "out_folder": os.path.dirname(os.path.abspath(cfg.out))}


@base.recorded(lambda cfg: Outputs(cfg.out))
def run(cfg: Config, progress: bool = True) -> Outputs:
    """Predict ``cfg.particles`` with ``cfg.model``; returns :class:`Outputs`."""
    from ..core.inference import Predictor
    from ..core.models import load_model, model_pixel_size
    from ..io.metadata import concatenate_xmd, iter_metadata, read_metadata
    from ..io.stacks import load_images
    from ..utils import Progress
    cfg.validate()
    out = Outputs(cfg.out)
    device = resolve_device(cfg.device)
    nets, meta = load_model(cfg.model, device)
    pred = Predictor(nets, meta, device, int(cfg.batch_size))
    n, stacks, files = _scan(cfg)
    need(n > 0, f"{cfg.particles}: no particles")
    out.box, out.pixel_size = stacks.box, stacks.pixel_size
    out.model_pixel_size = model_pixel_size(meta)
    need(out.pixel_size is not None,
         f"{cfg.particles}: the images' pixel size is unknown (neither the particle file nor "
         "the stack headers carry one): give --pixel-size (Å/px)")
    need(out.model_pixel_size is not None or cfg.pixel_size is not None,
         f"{cfg.model}: the model stores no pixel size (trained without --pixel-size), so "
         "the images cannot be checked against it: give --pixel-size (Å/px of these images, "
         "which must be those of the training images)")
    pred.check(out.box, out.pixel_size, cfg.rescale)
    out.scale = pred.scale
    out.model_flips = pred.flips
    from ..core.training import flip_ctf
    flip = pred.flips and not cfg.images_flipped
    stamp = _stamp(cfg, files, out, device)
    # columns the predictions replace need not be finite in the input (the
    # pose-aware model reads the poses: they must be)
    replaced = [] if pred.reads_poses else pred.columns
    columns = [c for c in base.ROW_NUMBERS if c not in replaced]
    if pred.reads_poses:
        from ..core.pose_input import POSE_COLUMNS
        head = next(iter_metadata(cfg.particles, 1))
        missing = [c for c in POSE_COLUMNS if c not in head]
        need(not missing, f"{cfg.particles}: no {', '.join(missing)}: {cfg.model} is a "
                          "pose-aware model (train --pose-input), it reads the particles' "
                          "consensus poses")
    ref_dir = os.path.dirname(os.path.abspath(cfg.out))
    new_folder = ref_dir                   # the outermost folder this run creates, if any
    while not os.path.exists(os.path.dirname(new_folder)):
        new_folder = os.path.dirname(new_folder)
    particles_root = os.path.dirname(os.path.abspath(cfg.particles))
    t0 = time.perf_counter()
    with base.cleanup_on_error(out.particles, out.rejected, out.parts, new_folder):
        store = base.ChunkStore(out.parts, stamp, "predict")
        base.remove_stale_temporaries(out.particles, out.rejected)   # of a killed run
        rejected = base.Rejected()
        prog = Progress(n, "predict", quiet=None if progress else True)
        n_chunks = n_usable = 0
        chunks = base.accepted_chunks(_numbered(iter_metadata(cfg.particles, cfg.chunk)),
                                      int(cfg.chunk), load_images, rejected,
                                      lambda t: base.finite_rows(t, columns))
        for k, t, imgs in chunks:
            n_chunks, n_usable = k + 1, n_usable + len(t)
            ctf = flip_ctf(t) if flip else None
            out.n_flipped += 0 if ctf is None else len(t)
            if store.done(k, ".xmd"):
                out.resumed_chunks += 1
            else:
                _predict_chunk(store, k, t, imgs, pred, ref_dir, cfg.absolute_paths, ctf)
            prog.update(len(t))
        prog.update(len(rejected))
        prog.close()
        for k in range(n_chunks):          # rows whose prediction is not finite
            if os.path.exists(store.path(k, ".rejected.xmd")):
                t = read_metadata(store.path(k, ".rejected.xmd")).rebased(particles_root)
                n_usable -= len(t)
                rejected.add(t, np.ones(len(t), bool), "non-finite prediction")
        if not n_usable:
            raise InputError(f"{cfg.particles}: no usable particle ({rejected.summary()})")
        concatenate_xmd([store.path(k, ".xmd") for k in range(n_chunks)], out.particles)
        rejected.write(out.rejected)
    store.remove()
    out.n_predicted, out.n_rejected = n_usable, len(rejected)
    out.rejected_reasons = rejected.summary()
    out.seconds = time.perf_counter() - t0
    return out


def summary(out: Outputs, cfg: Config) -> list[str]:
    """Lines for the user after :func:`run`."""
    rate = out.n_predicted / max(out.seconds, 1e-9)
    lines = [f"predicted {out.n_predicted} images in {out.seconds:.1f} s ({rate:.0f} images/s)"
             f" -> {out.particles}"]
    if out.resumed_chunks:
        lines.append(f"continued an interrupted run: {out.resumed_chunks} chunk(s) were done")
    if out.scale != 1:
        lines.append(f"{out.box} px images Fourier-cropped to the model's "
                     f"{out.box / out.scale:.0f} px; shifts in the images' pixels")
    if out.n_flipped:
        lines.append(f"{out.n_flipped} images phase-flipped from their CTF columns, as in "
                     "training")
    elif out.model_flips and cfg.images_flipped:
        lines.append("images marked as phase-flipped already (--images-flipped): used as given")
    elif out.model_flips:
        lines.append("no CTF columns: the images were used as given (nothing to phase-flip)")
    else:
        lines.append("the model predates phase flipping in training: images used as given")
    if out.model_pixel_size is None:
        lines.append(f"the model stores no pixel size: the images' {out.pixel_size:g} Å/px "
                     "(--pixel-size) could not be checked against it")
    if out.n_rejected:
        lines.append(f"left out {out.n_rejected} unusable row(s) ({out.rejected_reasons}), "
                     f"listed in {out.rejected}")
    return lines

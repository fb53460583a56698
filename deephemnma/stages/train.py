"""Train DeepHEMNMA's network on particles with HEMNMA (or ground-truth) labels.

Input: an .xmd/.star whose rows carry angleRot angleTilt anglePsi
nmaDisplacements (shiftX shiftY optional: 0) and image references. Rows with a
non-finite value (labels, angles, shifts, CTF) or an unusable image (NaN/inf
pixel, constant) are left out alone, listed in OUT/rejected.xmd; the run is
then the run on the input without them. The pixel size (--pixel-size, else the
stacks' headers) is checked against every stack's header and stored in the
model; every stack's box is checked.

As in the paper, the network sees CTF phase-flipped images: rows with CTF
columns are phase-flipped from them before training unless the images are
marked as flipped already (``images_flipped``); the model records the rule
(meta ``phase_flip``) and `predict` applies it. Options select the paper's
optimiser and schedule (``schedule='paper'``: Adam with an L2 term,
learning rate divided by 10 every 80 epochs) and its augmentation (rotated and
shifted copies of the training images, ``augment_copies``); the Mahalanobis
filter uses the training rows' statistics (core.training.prepare_split).

The output folder (:class:`Outputs`) holds model.pt (the epoch of lowest
validation loss; self-describing, loads with torch.load(weights_only=True)),
last.pt (checkpoint after the last epoch done), curves.csv/png, split.npz
(rows of the input used for training / validation / test, 0-based),
rejected.xmd, config.json (the options, the values read from the data, and
the run stamp) and run.json (the run record: command, options, version, times,
status; see :func:`deephemnma.stages.base.run_record`).

Resuming: last.pt carries a run stamp (digests of the rows and images used and
of --init-model, the mode numbers, the pixel size and every option that changes
the result; not --device or --patience). Running the same command again
continues after the last epoch done; a finished run reports that it is done; a
run with another stamp (other data or options, including another --epochs: the
learning-rate schedule spans the epochs) starts afresh and says so in one line;
--restart always starts afresh. Each epoch draws its batches, augmentation and
dropout from generators seeded by (seed, epoch), so a resumed run equals the
uninterrupted one. A larger --patience continues an early-stopped run (the
uninterrupted run with that patience would have gone on the same way).

Checkpoints are written to a hidden temporary file renamed onto last.pt, so a
kill at any moment (also during a save) leaves the previous checkpoint whole;
temporary files of a killed run are removed when the next run starts. Under
torchrun each process takes a share of every batch (DistributedDataParallel)
and process 0 writes the files.
"""
from __future__ import annotations
import dataclasses
import json
import os
import sys
import time

import numpy as np

from ..core.config import TrainConfig
from . import base
from .base import InputError, need

__all__ = ["Config", "Outputs", "run", "summary", "check_init_meta", "plot_curves", "read_curves"]


@dataclasses.dataclass
class Config(base.StageConfig, TrainConfig):
    particles: str = None            # .xmd/.star with labels and image references
    out: str = None                  # output folder
    pixel_size: float = None         # Å/px of the images (None: the metadata's or headers')
    mode_list: str = None            # HEMNMA numbers of the amplitudes ("7-9" or a list);
    #                                  None: the first flexible modes (7, 8, ...)
    init_model: str = None           # fine-tune from this model file
    restart: bool = False            # start afresh even when OUT holds a resumable run
    absolute_paths: bool = False     # image references in rejected.xmd absolute
    # the pose-aware network (pose_input, core.pose_input): the reference its
    # channels are projected from, and the particles' consensus poses
    structure: str = None            # the reference the modes belong to
    modes: str = None                # modes folder / modes.xmd (ContinuousFlex)
    selection: str = "heavy"         # atoms of the structure
    consensus: str = None            # .xmd/.star with the consensus poses (rows matched by
    #                                  itemId, else image); None: the particles' own poses

    def validate(self):
        """Every check that needs no data read (files exist, options)."""
        base.existing("--particles", self.particles)
        if self.pose_input:
            need(self.structure not in (None, "") and self.modes not in (None, ""),
                 "--pose-input needs --structure and --modes (the reference the network "
                 "projects at the consensus poses)")
            base.existing("--structure", self.structure)
            base.existing("--modes", self.modes, "path")
            if self.consensus not in (None, ""):
                base.existing("--consensus", self.consensus)
        base.output_path("--out", self.out, [self.particles, self.init_model], folder=True)
        outputs = Outputs(self.out)
        if self.init_model not in (None, ""):
            base.existing("--init-model", self.init_model)
            need(not base.same_file(os.path.dirname(os.path.abspath(self.init_model)), self.out),
                 f"--init-model {self.init_model} is in the output folder {self.out}, which "
                 "this run rewrites: copy it elsewhere or choose another --out")
        for name, path in (("--particles", self.particles), ("--init-model", self.init_model)):
            if path not in (None, ""):
                for o in outputs.files:
                    need(not base.same_file(path, o), f"{name} {path} is also an output of this run: "
                                             "choose another --out")
        self.validate_options()
        from ..utils import resolve_device
        resolve_device(self.device)          # InputError for an unknown or absent device
        return self

    def validate_options(self, box=None):
        """The option checks (a Scipion form runs these before the upstream
        protocols have written their files); with ``box`` (px of the images)
        also :meth:`check_box`."""
        need(self.architecture in ("joint", "separate"),
             f"--architecture {self.architecture}: joint or separate")
        from ..core.network import TRUNKS
        need(self.trunk in TRUNKS, f"--trunk {self.trunk}: {' or '.join(TRUNKS)}")
        if self.pose_input:
            for flag, bad in (("--augment", self.augment), ("--augment-copies",
                                                            self.augment_copies),
                              ("--coord-channels", self.coord_channels)):
                need(not bad, f"--pose-input reads the images at their consensus poses: "
                              f"leave out {flag}")
            need(self.architecture == "joint", "--pose-input trains one network: "
                                               "--architecture joint")
        else:
            need(self.consensus in (None, ""), "--consensus: only with --pose-input")
        from ..core.config import SCHEDULES
        need(self.schedule in SCHEDULES,
             f"--schedule {self.schedule}: {' or '.join(SCHEDULES)}")
        base.at_least("--epochs", self.epochs, 1)
        base.at_least("--batch-size", self.batch_size, 1)
        for name in ("epochs", "batch_size", "lr_step", "augment_copies"):
            base.whole_number(f"--{name.replace('_', '-')}", getattr(self, name))
        base.positive("--lr", self.lr)
        base.at_least("--weight-decay", self.weight_decay, 0)
        base.at_least("--lr-step", self.lr_step, 1)
        base.positive("--lr-gamma", self.lr_gamma)
        need(self.lr_gamma <= 1, f"--lr-gamma {self.lr_gamma}: at most 1 (a factor applied "
                                 "every --lr-step epochs)")
        base.at_least("--augment-copies", self.augment_copies, 0)
        base.at_least("--augment-shift", self.augment_shift, 0)
        base.fraction("--val-fraction", self.val_fraction)
        need(self.val_fraction > 0, "--val-fraction must be > 0: the best model and early "
                                    "stopping need validation images")
        base.fraction("--test-fraction", self.test_fraction)
        need(self.val_fraction + self.test_fraction < 1,
             f"--val-fraction {self.val_fraction} + --test-fraction {self.test_fraction} "
             "leave no training images (their sum must be < 1)")
        base.at_least("--patience", self.patience, 1)
        base.fraction("--dropout", self.dropout)
        base.at_least("--seed", self.seed, 0)
        base.at_least("--max-resident-gb", self.max_resident_gb, 0)
        if self.input_size is not None:
            base.at_least("--input-size", self.input_size, 16)
            need(self.input_size % 2 == 0, f"--input-size {self.input_size}: must be even")
        if self.mahalanobis is not None:
            base.positive("--mahalanobis", self.mahalanobis)
        if self.pixel_size is not None:
            base.positive("--pixel-size", self.pixel_size)
        if self.mode_list not in (None, ""):
            from ..core.nma import parse_mode_list
            parse_mode_list(self.mode_list)
        if box is not None:
            self.check_box(box)
        return self

    def check_box(self, box):
        """The network input size fits images of ``box`` px."""
        need(self.input_size is None or self.input_size <= box,
             f"--input-size {self.input_size} is larger than the images ({box} px)")

    def check_count(self, n):
        """``n`` particles (none rejected, no Mahalanobis filter) leave a batch
        of training images and a validation image."""
        from ..core.training import check_split_sizes, split_indices
        need(n > 0, "no particles")
        tr, va, _ = split_indices(n, self.val_fraction, self.test_fraction, self.seed)
        check_split_sizes(len(tr), len(va), self.batch_size)

    def training_options(self):
        """The core TrainConfig of this config."""
        return TrainConfig(**{f.name: getattr(self, f.name)
                              for f in dataclasses.fields(TrainConfig)})


@dataclasses.dataclass
class Outputs:
    folder: str
    n_train: int = 0
    n_val: int = 0
    n_test: int = 0
    n_rejected: int = 0              # rows left out (non-finite values, unusable images)
    n_outliers: int = 0              # label outliers left out of training and validation
    n_flipped: int = 0               # images phase-flipped from their CTF columns
    pixel_size: float = None         # Å/px stored in the model
    start_epoch: int = 0             # epochs done before this run (resumed)
    epochs_done: int = 0
    best_epoch: int = 0
    best_val_loss: float = None
    stopped_early: bool = False
    already_done: bool = False       # a finished run found: nothing trained
    seconds: float = 0.0
    primary: bool = True             # False in the other processes under torchrun

    def _file(self, name):
        return os.path.join(self.folder, name)

    @property
    def model(self):
        """The best model (lowest validation loss)."""
        return self._file("model.pt")

    @property
    def last(self):
        """Checkpoint after the last epoch done (resume)."""
        return self._file("last.pt")

    @property
    def curves_csv(self):
        return self._file("curves.csv")

    @property
    def curves_png(self):
        return self._file("curves.png")

    @property
    def split(self):
        """train / val / test: 0-based rows of the input particles."""
        return self._file("split.npz")

    @property
    def rejected(self):
        return self._file("rejected.xmd")

    @property
    def config(self):
        return self._file("config.json")

    @property
    def files(self):
        return [self.model, self.last, self.curves_csv, self.curves_png, self.split,
                self.rejected, self.config]

    run_record = base.record_property("folder", folder=True)


# --------------------------------------------------------------------------
@dataclasses.dataclass
class _Data:
    """Everything a run reads, checked before anything is written."""
    table: object                    # usable rows (private column ROW: input row)
    images: np.ndarray
    rejected: base.Rejected
    pixel_size: float
    box: int
    mode_numbers: list
    split: tuple                     # (train, val, test) rows of ``table``
    n_outliers: int
    init_nets: dict = None
    n_flipped: int = 0               # rows phase-flipped from their CTF columns
    pose: object = None              # core.pose_input.PoseData (--pose-input)


def check_init_meta(meta, box, input_size=None, pixel_size=None, mode_numbers=None,
                    architecture=None, name="--init-model"):
    """A model (its meta dict; keys absent are not checked) can start a run on
    images of ``box`` px at ``pixel_size`` Å/px seen at ``input_size`` px, with
    amplitudes of ``mode_numbers`` and ``architecture``."""
    from ..core.models import model_pixel_size
    size = meta.get("image_size")
    need(not size or int(size) == int(box),
         f"{name} was trained on {size} px images, these are {box} px")
    ins = meta.get("input_size")
    need(not ins or input_size is None or int(ins) == int(input_size),
         f"{name} sees {ins} px images, this run {input_size} px: give --input-size {ins}")
    ps = model_pixel_size(meta)
    need(ps is None or pixel_size is None or abs(ps - pixel_size) <= 0.01 * ps,
         f"{name} was trained at {ps:g} Å/px, these images are {pixel_size:g} Å/px"
         if ps and pixel_size else "")
    mn = meta.get("mode_numbers")
    need(mn is None or mode_numbers is None or list(mn) == list(mode_numbers),
         f"{name} predicts the amplitudes of modes {list(mn or [])}, these labels are "
         f"modes {list(mode_numbers or [])}")
    arch = meta.get("architecture")
    need(not arch or architecture is None or arch == architecture,
         f"{name} is a '{arch}' model: give --architecture {arch}")


def _prepare(cfg):
    """Read and check the particles, images, labels and --init-model; split."""
    from ..core.nma import flexible_numbers, parse_mode_list
    from ..core.training import LABEL_COLUMNS, prepare_split
    from ..io.metadata import read_metadata
    from ..io.stacks import load_images
    table = read_metadata(cfg.particles)
    table.require(["image"], "image", cfg.particles)
    need(len(table) > 0, f"{cfg.particles}: no particles")
    table.require(list(LABEL_COLUMNS), "label", cfg.particles)
    stacks = base.StackCheck(cfg.pixel_size).check(table)
    need(stacks.pixel_size is not None, f"{cfg.particles}: neither the particle file nor the "
                                        "image stacks' headers carry a pixel size: give "
                                        "--pixel-size")
    cfg.check_box(stacks.box)
    rejected = base.Rejected()
    t, images = base.usable_rows(base.numbered(table), load_images, rejected)
    need(len(t) > 0, f"{cfg.particles}: no usable particle ({rejected.summary()})")
    from ..core.training import flip_ctf, phase_flip_images
    ctf = flip_ctf(t, cfg.images_flipped)
    if ctf is not None:                      # the network sees phase-flipped images
        images = phase_flip_images(images, ctf, float(stacks.pixel_size))
    M = t["nmaDisplacements"].reshape(len(t), -1).shape[1]
    if cfg.mode_list not in (None, ""):
        modes = parse_mode_list(cfg.mode_list)
        need(len(modes) == M, f"the particles have {M} amplitudes but --mode-list "
                              f"{cfg.mode_list} names {len(modes)} modes")
    else:
        modes = flexible_numbers(range(1, 7 + M), M)       # 7, 8, ...
    tr, va, te, n_out = prepare_split(t, cfg)
    init_nets = None
    if cfg.init_model not in (None, ""):
        from ..core.models import load_model
        init_nets, meta = load_model(cfg.init_model)
        check_init_meta(meta, stacks.box, cfg.input_size or stacks.box, stacks.pixel_size,
                        modes, cfg.architecture)
        coord = {bool(n.coord_channels) for n in init_nets.values()}
        need(coord == {bool(cfg.coord_channels)},
             f"--init-model {'has' if True in coord else 'has no'} coordinate channels: "
             f"{'add' if True in coord else 'leave out'} --coord-channels")
        shapes = {(n.in_channels, n.n_view, n.trunk_name) for n in init_nets.values()}
        need(len(shapes) == 1 and (next(iter(shapes))[1] > 0) == bool(cfg.pose_input),
             f"--init-model {'is' if not cfg.pose_input else 'is not'} a pose-aware model: "
             f"{'leave out' if not cfg.pose_input else 'add'} --pose-input")
        trunk = next(iter(shapes))[2]
        need(trunk == cfg.trunk, f"--init-model has a {trunk} trunk: give --trunk {trunk}")
    pose = _pose_data(cfg, t, modes, float(stacks.pixel_size)) if cfg.pose_input else None
    return _Data(t, images, rejected, float(stacks.pixel_size), int(stacks.box), modes,
                 (tr, va, te), n_out, init_nets, 0 if ctf is None else len(t), pose)


def consensus_poses(table, path):
    """(angles (n, 3), shifts (n, 2)) of ``table``'s rows from the particle
    file ``path`` (rows matched by itemId, else by image); InputError when a
    row has none."""
    from ..io.metadata import read_metadata
    c = read_metadata(path)
    c.require(["angleRot", "angleTilt", "anglePsi"], "consensus pose", path)
    for key in ("itemId", "image"):
        if key in table and key in c:
            pos = {v: i for i, v in enumerate(c[key].tolist())}
            missing = [v for v in table[key].tolist() if v not in pos]
            if missing:
                raise InputError(f"--consensus {path}: no row for {len(missing)} of the "
                                 f"particles (e.g. {key} {missing[0]}), matched by {key}")
            idx = np.array([pos[v] for v in table[key].tolist()])
            sub = c.subset(idx)
            return sub.angles(), sub.shifts()
    raise InputError(f"--consensus {path}: its rows cannot be matched to the particles "
                     "(neither itemId nor image in both)")


def _pose_data(cfg, t, mode_numbers, pixel_size):
    """The pose-aware network's PoseData of the usable rows ``t``."""
    from ..core.ctf import CTFParams
    from ..core.pose_input import PoseData, PoseReference
    from .reference import load_reference
    s, modes = load_reference(cfg.structure, cfg.selection, cfg.modes,
                              [int(m) for m in mode_numbers])
    ref = PoseReference(s.coords, s.weights, modes.vectors)
    if cfg.consensus not in (None, ""):
        angles, shifts = consensus_poses(t, cfg.consensus)
    else:
        angles, shifts = t.angles(), t.shifts()
    need(np.isfinite(angles).all() and np.isfinite(shifts).all(),
         f"--consensus {cfg.consensus}: non-finite poses")
    return PoseData(ref, angles, shifts, pixel_size, CTFParams.from_table(t))


def _stamp(cfg, data):
    """What the results depend on (not --device, --max-resident-gb, --patience)."""
    opts = {k: v for k, v in dataclasses.asdict(cfg.training_options()).items()
            if k not in ("device", "max_resident_gb", "patience")}
    opts["input_size"] = cfg.input_size or data.box
    return {"rows": base.table_digest(base.public(data.table)),
            "images": base.array_digest(data.images),
            "init_model": base.file_digest(cfg.init_model) if cfg.init_model else None,
            **({"pose_reference": [base.file_digest(cfg.structure), _modes_digest(cfg.modes),
                                   cfg.selection],
                "consensus": base.file_digest(cfg.consensus) if cfg.consensus else None}
               if cfg.pose_input else {}),
            "mode_numbers": [int(m) for m in data.mode_numbers],
            "pixel_size": data.pixel_size, "options": opts}


def _modes_digest(path):
    """Digest of a modes folder's files (or of a modes file)."""
    if os.path.isdir(path):
        import hashlib
        h = hashlib.sha256()
        for root, _, files in sorted(os.walk(path)):
            for f in sorted(files):
                h.update(f.encode() + base.file_digest(os.path.join(root, f)).encode())
        return h.hexdigest()[:16]
    return base.file_digest(path)


def _stamp_text(stamp):
    return json.dumps(stamp, sort_keys=True, default=str)


def _differences(old, new):
    """Names of what differs between two stamps (options by name)."""
    try:
        old = json.loads(old)
    except ValueError:
        return ["run"]
    new = json.loads(new)
    diff = [k for k in new if k != "options" and old.get(k) != new[k]]
    oo, no = old.get("options", {}), new["options"]
    diff += [f"--{k.replace('_', '-')} ({oo.get(k)} -> {no[k]})" for k in no
             if oo.get(k) != no[k]]
    return diff or ["run"]


def _write_curves(out, history):
    from ..utils import atomic_path
    keys = list(dict.fromkeys(k for r in history for k in r))
    with atomic_path(out.curves_csv) as tmp, open(tmp, "w") as f:
        f.write(",".join(keys) + "\n")
        for r in history:
            f.write(",".join(repr(r[k]) if k in r else "" for k in keys) + "\n")
    try:
        from matplotlib.figure import Figure      # no pyplot: no backend chosen here
        fig = Figure(figsize=(5, 3.5))
        plot_curves(history, fig.add_subplot())
        fig.tight_layout()
        with atomic_path(out.curves_png) as tmp:
            fig.savefig(tmp, format="png", dpi=100)
    except Exception:  # plotting is a convenience; never fail training for it
        pass


def plot_curves(history, ax):
    """Training and validation loss per epoch on matplotlib axes ``ax``."""
    ep = [r["epoch"] for r in history]
    ax.plot(ep, [r["train_loss"] for r in history], label="training")
    ax.plot(ep, [r["val_loss"] for r in history], label="validation")
    ax.set_xlabel("epoch")
    ax.set_ylabel("L1 loss (standardised)")
    ax.set_yscale("log")
    ax.legend()


def read_curves(path):
    """curves.csv -> list of {column: float} rows."""
    import csv
    with open(path, newline="") as f:
        return [{k: float(v) for k, v in r.items() if v != ""} for r in csv.DictReader(f)]


def _write_inputs(cfg, out, data, stamp):
    """config.json, split.npz and rejected.xmd (atomic)."""
    from ..io.metadata import Table, write_xmd
    from ..utils import atomic_path
    rows = data.table[base.ROW]
    with atomic_path(out.split) as tmp, open(tmp, "wb") as f:
        np.savez(f, **dict(zip(("train", "val", "test"), (rows[s] for s in data.split))))
    if len(data.rejected):
        write_xmd(out.rejected, base.public(Table.concatenate(data.rejected.tables)),
                  absolute=cfg.absolute_paths)
    elif os.path.exists(out.rejected):
        os.remove(out.rejected)
    info = {"config": cfg.to_dict(), "pixel_size": data.pixel_size, "image_size": data.box,
            "mode_numbers": [int(m) for m in data.mode_numbers],
            "rows": {"usable": len(data.table), "rejected": len(data.rejected),
                     "train": len(data.split[0]), "val": len(data.split[1]),
                     "test": len(data.split[2]), "outliers": data.n_outliers,
                     "phase_flipped": data.n_flipped},
            "stamp": stamp}
    with atomic_path(out.config) as tmp, open(tmp, "w") as f:
        json.dump(info, f, indent=1, sort_keys=True, default=str)


def _train(cfg, out, data, ck, state, stamp, progress, rank):
    """Epochs from ``state`` (and checkpoint ``ck``, when resuming) to the end;
    after each, process 0 writes the best model, the checkpoint and the curves."""
    from ..core.models import save_model
    from ..core.training import Trainer, fit, save_checkpoint
    tr, va, _ = data.split
    trainer = Trainer(data.images, data.table, tr, cfg.training_options(), data.init_nets,
                      data.pose)
    if ck is not None:
        trainer.load_state_dict(ck)
    meta = trainer.meta(data.mode_numbers, data.pixel_size, phase_flip=True)

    def on_epoch(state, improved):
        if rank != 0:
            return
        if improved:                 # the model first: last.pt then never runs ahead of it
            save_model(out.model, trainer.nets, dict(meta, best_epoch=state.best_epoch,
                                                     best_val_loss=state.best))
        save_checkpoint(out.last, trainer, state, stamp)
        _write_curves(out, state.history)

    return fit(trainer, tr, va, state, on_epoch, quiet=None if progress else True,
               log=base.say if progress else None)


@base.recorded(lambda cfg: Outputs(cfg.out))
def run(cfg: Config, progress: bool = True) -> Outputs:
    """Train on ``cfg.particles`` into ``cfg.out``; returns :class:`Outputs`."""
    from ..core.training import RunState, read_checkpoint
    cfg.validate()
    from ..utils import distributed
    rank, world, dist = distributed()      # under torchrun: nccl on CUDA, else gloo
    out = Outputs(cfg.out, primary=rank == 0)
    note = (lambda m: base.say(f"train: {m}", sys.stderr)) if rank == 0 else (lambda m: None)
    data = _prepare(cfg)
    out.n_rejected, out.n_outliers, out.pixel_size = (len(data.rejected), data.n_outliers,
                                                      data.pixel_size)
    out.n_flipped = data.n_flipped
    out.n_train, out.n_val, out.n_test = (len(s) for s in data.split)
    stamp = _stamp_text(_stamp(cfg, data))      # one string: compared as it is
    created = not os.path.isdir(cfg.out)
    t0 = time.perf_counter()
    with base.cleanup_on_error(cfg.out if created else None, *out.files):
        if rank == 0 and not created:
            base.remove_stale_temporaries(*out.files)
        ck = None
        if os.path.exists(out.last):
            if cfg.restart:
                note(f"--restart: starting afresh in {cfg.out}")
            else:
                ck = read_checkpoint(out.last)
                if ck is None:
                    note(f"{out.last} is not a whole checkpoint; starting afresh")
                elif ck["stamp"] != stamp:
                    diff = ", ".join(_differences(ck["stamp"], stamp))
                    note(f"{cfg.out} holds a run with other {diff}; starting afresh")
                    ck = None
        if dist is not None:
            dist.barrier()                   # every process has read the checkpoint
        if rank == 0:
            if ck is None:
                for f in out.files:
                    if os.path.exists(f):
                        os.remove(f)
            _write_inputs(cfg, out, data, json.loads(stamp))
        state = RunState.from_dict(ck["run"]) if ck is not None else RunState()
        out.start_epoch = state.epoch
        if state.finished(cfg):
            out.already_done = True
            if rank == 0 and not os.path.exists(out.curves_csv):
                _write_curves(out, state.history)
        else:
            if ck is not None:
                note(f"resuming after epoch {state.epoch} of {cfg.epochs}")
            state = _train(cfg, out, data, ck, state, stamp, progress, rank)
        if dist is not None:
            dist.barrier()
    out.epochs_done, out.best_epoch = state.epoch, state.best_epoch
    out.best_val_loss = state.best if state.best_epoch else None
    out.stopped_early = state.stopped_early(cfg)
    out.seconds = time.perf_counter() - t0
    return out


def summary(out: Outputs, cfg: Config) -> list[str]:
    """Lines for the user after :func:`run`."""
    split = f"{out.n_train} train / {out.n_val} val / {out.n_test} test images"
    if out.best_val_loss is None:
        best = (f"no finite validation loss in {out.epochs_done} epochs (training diverged? "
                "lower --lr): no model written")
    else:
        best = (f"best validation loss {out.best_val_loss:.4f} at epoch {out.best_epoch} of "
                f"{out.epochs_done} ({split}, {out.pixel_size:g} Å/px)")
    if out.already_done:
        lines = [f"already trained: {best} -> {out.model}; --restart trains again"]
    else:
        lines = [f"{best} in {out.seconds:.1f} s -> {out.model}"]
        if out.start_epoch:
            lines.append(f"resumed after epoch {out.start_epoch}")
    if out.stopped_early:
        lines.append(f"stopped early: no validation improvement for {cfg.patience} epochs")
    if out.n_rejected:
        lines.append(f"left out {out.n_rejected} unusable row(s), listed in {out.rejected}")
    if out.n_outliers:
        lines.append(f"Mahalanobis <= {cfg.mahalanobis} (training rows' statistics): "
                     f"{out.n_outliers} label outlier(s) left out of training and validation")
    if out.n_flipped:
        lines.append(f"the network saw the images phase-flipped from their CTF columns "
                     f"({out.n_flipped} images); predict does the same")
    elif cfg.images_flipped:
        lines.append("images marked as phase-flipped already (--images-flipped): used as "
                     "given; give --images-flipped to predict too")
    else:
        lines.append("no CTF columns: the images were used as given (nothing to phase-flip)")
    return lines

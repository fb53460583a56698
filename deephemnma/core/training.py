"""Training DeepHEMNMA's network (Stage 2): the numerics, in parts.

* labels (:class:`LabelCodec`): normal-mode amplitudes and shifts standardised
  (mean/std stored in the model), orientations as canonical unit quaternions
  (from Xmipp Euler angles);
* the network's images (:func:`flip_ctf`, :func:`phase_flip_images`): as in
  the paper, the network sees CTF phase-flipped images, in training and in
  prediction: images are flipped from their CTF columns unless they are marked
  as flipped already (the model records the rule: ``phase_flip`` in its meta);
* data preparation (:func:`prepare_split`): a particle-level split into
  training / validation / test rows (no leakage), the optional Mahalanobis
  filter of the labels (paper: 3.2; mean and covariance of the training rows
  only), and the size checks that need the data;
* one epoch and the evaluation (:class:`Trainer`): losses L1 (the paper's mean
  absolute error) on standardised amplitudes and shifts, the sign-invariant L1
  min(|q - p|, |q + p|) on orientations; ``schedule='onecycle'``: AdamW
  (decoupled weight decay 1e-5) with a one-cycle learning rate over
  ``epochs``; ``schedule='paper'``: the paper's Adam with an L2 term of
  ``weight_decay`` added to the gradients and the learning rate divided by 10
  every ``lr_step`` (80) epochs (config.PAPER_SCHEDULE); label-consistent
  augmentation, tested against the projector: random in-plane rotations of
  every batch (``augment``: a rotation of the image by alpha changes psi by
  alpha and rotates the shift vector) and the paper's rotated and shifted
  copies (``augment_copies``, Supp. D: each training image gets fixed copies
  rotated by U[0, 360) degrees and shifted by U[-s, s] px, s =
  ``augment_shift`` = 7; moving the content by d changes the shift label by -d);
* the run's progress (:class:`RunState`: history, best validation loss, early
  stopping) and checkpointing (:func:`save_checkpoint`, :func:`read_checkpoint`:
  the networks, optimisers, schedules and the RunState in one file);
* :func:`fit`: the epoch loop, calling back after every epoch (the caller, the
  train stage, decides which files to write).

Reproducibility: epoch ``e`` draws its batches, augmentations and dropout from
generators seeded by (seed, e) (and the process rank), and everything else that
carries over is in the checkpoint, so a run resumed after epoch k continues
exactly as the uninterrupted run does (same weights on the same device and
thread count). The schedule spans ``epochs``: runs with another number of
epochs are other runs.

CUDA: bf16 autocast, channels_last, images resident on the GPU when they fit.
Several processes (torchrun): DistributedDataParallel; each process takes an
interleaved share of every batch (the batches are the same in every process).
"""
from __future__ import annotations

import dataclasses
import math
import os
import time
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Union

import numpy as np
import torch

from ..errors import InputError
from ..utils import Progress, atomic_path, distributed, resolve_device
from . import rotations
from .config import SCHEDULES, TrainConfig
from .image import normalize, rotate_images
from .network import DeepHEMNMANet
from .pose_input import PoseData

if TYPE_CHECKING:
    from ..io.metadata import Table
    from ..io.stacks import Stack
    from .ctf import CTFParams

PathLike = Union[str, os.PathLike]     # a path as str or pathlib.Path

__all__ = ["TrainConfig", "LabelCodec", "split_indices", "prepare_split", "check_split_sizes",
           "mahalanobis_keep", "augment_batch", "transform_batch", "flip_ctf",
           "phase_flip_images", "heads_for", "Trainer", "RunState", "fit", "save_checkpoint",
           "read_checkpoint", "CHECKPOINT", "SCHEDULES", "PoseCodec", "pose_tensors",
           "pose_heads", "pose_view"]

CHECKPOINT = "deephemnma-checkpoint"
EVAL_BATCH = 256
LABEL_COLUMNS = ("angleRot", "angleTilt", "anglePsi", "nmaDisplacements")



# --------------------------------------------------------------------------
# labels
class LabelCodec:
    """Table columns <-> standardised network targets."""

    def __init__(self, amp_mean: np.ndarray, amp_std: np.ndarray, shift_mean: np.ndarray,
                 shift_std: np.ndarray) -> None:
        self.amp_mean = np.asarray(amp_mean, float)
        self.amp_std = np.asarray(amp_std, float)
        self.shift_mean = np.asarray(shift_mean, float)
        self.shift_std = np.asarray(shift_std, float)

    @classmethod
    def fit(cls, table: Table) -> LabelCodec:
        q = table["nmaDisplacements"]
        s = table.shifts()
        return cls(q.mean(0), q.std(0).clip(min=1e-6), s.mean(0), s.std(0).clip(min=1e-3))

    def to_meta(self) -> dict[str, list[float]]:
        return {"amplitude_mean": self.amp_mean.tolist(), "amplitude_std": self.amp_std.tolist(),
                "shift_mean": self.shift_mean.tolist(), "shift_std": self.shift_std.tolist()}

    @classmethod
    def from_meta(cls, m: dict) -> LabelCodec:
        return cls(m["amplitude_mean"], m["amplitude_std"], m["shift_mean"], m["shift_std"])

    def encode(self, table: Table) -> dict[str, np.ndarray]:
        return {"amplitudes": (table["nmaDisplacements"] - self.amp_mean) / self.amp_std,
                "orientation": rotations.euler_to_quaternion(table.angles()),
                "shifts": (table.shifts() - self.shift_mean) / self.shift_std}

    def decode(self, out: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        res = {}
        if "amplitudes" in out:
            res["amplitudes"] = out["amplitudes"] * self.amp_std + self.amp_mean
        if "orientation" in out:
            res["angles"] = rotations.quaternion_to_euler(out["orientation"])
        if "shifts" in out:
            res["shifts"] = out["shifts"] * self.shift_std + self.shift_mean
        return res


class PoseCodec(LabelCodec):
    """The pose-aware network's targets (core.pose_input): the amplitudes'
    difference from their estimate (core.pose_input.linear_estimate) in
    units of the amplitudes' std, and the correction from the consensus pose to the labelled
    one: rotation vector / ``rot_std`` (degrees) and standardised shift (px),
    in the frame the network sees."""

    def __init__(self, amp_mean, amp_std, shift_mean, shift_std, rot_std) -> None:
        super().__init__(amp_mean, amp_std, shift_mean, shift_std)
        self.rot_std = float(rot_std)

    @classmethod
    def fit(cls, table: Table, pose: PoseData) -> PoseCodec:
        q = table["nmaDisplacements"]
        rv, ds = pose.corrections(table)
        return cls(q.mean(0), q.std(0).clip(min=1e-6), ds.mean(0), ds.std(0).clip(min=1e-3),
                   max(float(np.sqrt((rv ** 2).mean())), 1e-3))

    def to_meta(self) -> dict:
        return dict(super().to_meta(), rotation_std=self.rot_std)

    @classmethod
    def from_meta(cls, m: dict) -> PoseCodec:
        return cls(m["amplitude_mean"], m["amplitude_std"], m["shift_mean"], m["shift_std"],
                   m["rotation_std"])

    def encode(self, table: Table, pose: PoseData,
               estimate: np.ndarray) -> dict[str, np.ndarray]:
        rv, ds = pose.corrections(table)
        return {"amplitudes": (table["nmaDisplacements"] - estimate) / self.amp_std,
                "rotation": rv / self.rot_std,
                "shifts": (ds - self.shift_mean) / self.shift_std}

    def decode(self, out: dict[str, np.ndarray], pose: PoseData | None = None,
               estimate: np.ndarray | None = None) -> dict[str, np.ndarray]:
        """Amplitudes (the ``estimate`` corrected), and with ``pose`` (the
        rows' consensus poses) the predicted angles and shifts: the consensus
        composed with the predicted correction."""
        from .pose_input import apply_corrections
        res = {"amplitudes": out["amplitudes"] * self.amp_std + estimate}
        if pose is not None:
            res["angles"], res["shifts"] = apply_corrections(
                pose.angles, pose.shifts, out["rotation"] * self.rot_std,
                out["shifts"] * self.shift_std + self.shift_mean)
        return res


def pose_heads(n_amplitudes: int) -> dict[str, dict[str, int]]:
    """The pose-aware network's heads: amplitudes, rotation correction
    (rotation vector), shift correction."""
    return {"joint": {"amplitudes": int(n_amplitudes), "rotation": 3, "shifts": 2}}


# the pose-aware network's pose corrections weigh this much in the loss (the
# amplitudes: 1), so that they do not decide the best epoch and early stopping
# (measured on HEMNMA-from-poses labels, bench_pose_net.py: the corrections
# stay at the level of predicting none)
POSE_LOSS_WEIGHT = 0.25


def pose_tensors(images: np.ndarray | Stack, pose: PoseData, size: int | None,
                 device: str | torch.device = "cpu",
                 batch: int = 128) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The pose-aware network's inputs of every image (phase-flipped already)
    -> (channels (n, 2 + M, s, s), views (n, 9), amplitude estimates (n, M))
    on ``device`` (core.pose_input.pose_inputs)."""
    from .pose_input import pose_inputs
    xs, vs, qs = [], [], []
    dev = torch.device(device) if not isinstance(device, torch.device) else device
    for s in range(0, len(images), batch):
        rows = np.arange(s, min(len(images), s + batch))
        x = torch.as_tensor(np.asarray(images[s:rows[-1] + 1]), dtype=torch.float32, device=dev)
        p = pose.subset(rows)
        a, b, q = pose_inputs(x, p.angles, p.shifts, p.reference, p.pixel_size, size, p.ctf)
        xs.append(a)
        vs.append(b)
        qs.append(q)
    return torch.cat(xs), torch.cat(vs), torch.cat(qs)


def pose_view(view: torch.Tensor, estimate: torch.Tensor, codec: LabelCodec) -> torch.Tensor:
    """The MLP's extra inputs: the view and the standardised amplitude estimate."""
    q = (estimate.double().cpu().numpy() - codec.amp_mean) / codec.amp_std
    return torch.cat([view, torch.as_tensor(q, dtype=view.dtype, device=view.device)], 1)


# --------------------------------------------------------------------------
# data preparation
def split_indices(n: int, val_fraction: float = 0.1, test_fraction: float = 0.1, seed: int = 0,
                  groups: np.ndarray | None = None
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Random particle-level split -> (train, val, test) index arrays. Rows with
    the same ``groups`` value (e.g. a particle id shared by copies of one
    particle) always land in the same subset."""
    rng = np.random.default_rng(seed)
    if groups is None:
        groups = np.arange(n)
    uniq, inv = np.unique(np.asarray(groups), return_inverse=True)
    perm = rng.permutation(len(uniq))
    n_test = int(round(test_fraction * len(uniq)))
    n_val = int(round(val_fraction * len(uniq)))
    gtest, gval = perm[:n_test], perm[n_test:n_test + n_val]
    where = np.zeros(len(uniq), np.int8)
    where[gval], where[gtest] = 1, 2
    w = where[inv]
    return np.nonzero(w == 0)[0], np.nonzero(w == 1)[0], np.nonzero(w == 2)[0]


def mahalanobis_keep(amplitudes: np.ndarray, fit_rows: np.ndarray,
                     threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """(keep mask (n,), distances (n,)): every row's Mahalanobis distance to
    the mean of the ``fit_rows`` under their covariance (pseudo-inverse when
    singular, as core.outliers), kept when <= ``threshold``. The statistics
    come from ``fit_rows`` alone (the training rows: nothing of the
    validation or test rows leaks into the filter)."""
    q = np.asarray(amplitudes, np.float64).reshape(len(amplitudes), -1)
    x = q[np.asarray(fit_rows)]
    if len(x) < 2:
        raise InputError(f"the Mahalanobis filter needs at least 2 training rows, got {len(x)}")
    icov = np.linalg.pinv(np.atleast_2d(np.cov(x, rowvar=False)))
    d = q - x.mean(0)
    dist = np.sqrt(np.einsum("ni,ij,nj->n", d, icov, d).clip(min=0))
    return dist <= threshold, dist


def prepare_split(table: Table,
                  cfg: TrainConfig) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """The rows of ``table`` (labels, all finite) that train, validate and test
    a run of ``cfg``: (train, val, test, n_outliers). Rows sharing an
    ``itemId`` stay together; with ``cfg.mahalanobis`` the label outliers
    (distance to the training rows' amplitude distribution > the threshold,
    :func:`mahalanobis_keep`) are left out of training and validation
    (n_outliers of them), not of the test rows. InputError when too few rows
    are left."""
    table.require(list(LABEL_COLUMNS), "label")
    n = len(table)
    groups = table["itemId"] if "itemId" in table else None
    tr, va, te = split_indices(n, cfg.val_fraction, cfg.test_fraction, cfg.seed, groups)
    keep = np.ones(n, bool)
    if cfg.mahalanobis:
        keep, _ = mahalanobis_keep(table["nmaDisplacements"], tr, cfg.mahalanobis)
    n_out = int((~keep[tr]).sum() + (~keep[va]).sum())
    tr, va = tr[keep[tr]], va[keep[va]]
    check_split_sizes(len(tr), len(va), cfg.batch_size)
    return tr, va, te, n_out


def check_split_sizes(n_train: int, n_val: int, batch_size: int) -> None:
    """InputError unless there is a batch of training images and a validation image."""
    if n_train < batch_size:
        raise InputError(f"{n_train} training images, fewer than the batch size "
                         f"{batch_size}: lower --batch-size or give more images")
    if n_val == 0:
        raise InputError("no validation images: raise --val-fraction or give more images")


def augment_batch(images: torch.Tensor, angles: np.ndarray, shifts: np.ndarray,
                  rng: np.random.Generator) -> tuple[torch.Tensor, np.ndarray, np.ndarray]:
    """Label-consistent in-plane rotation: images (B, N, N) torch, Euler angles
    (B, 3) and shifts (B, 2) numpy -> rotated images, psi + alpha, R(alpha) shift."""
    alpha = rng.uniform(0, 360, len(images))
    return transform_batch(images, angles, shifts, alpha)


def transform_batch(images: torch.Tensor, angles: np.ndarray, shifts: np.ndarray,
                    alpha: np.ndarray, moves: np.ndarray | None = None,
                    scale: float = 1.0) -> tuple[torch.Tensor, np.ndarray, np.ndarray]:
    """Label-consistent in-plane rotation then translation of images (B, N, N)
    torch with their Euler angles (B, 3) and shifts (B, 2) (px, Xmipp's sign:
    the particle sits at minus the shift) as numpy: the content is rotated by
    ``alpha`` (B,) degrees about pixel N//2 (psi + alpha, shift -> R(alpha)
    shift), then moved by ``moves`` (B, 2) px (Fourier shift: shift -> shift -
    move). ``scale``: pixels of these images per pixel of the labels (images
    downscaled for the network: the labels stay in the stored images' px)."""
    out = rotate_images(images, alpha)
    ang = np.array(angles, np.float64, copy=True)
    ang[:, 2] = ang[:, 2] + alpha
    R = rotations.inplane_rotation_matrix(np.asarray(alpha, np.float64))
    sh = np.einsum("bij,bj->bi", R, shifts)
    if moves is not None:
        from .projector import fourier_shift
        moves = np.asarray(moves, np.float64)
        out = fourier_shift(out, torch.as_tensor(moves * scale, dtype=out.dtype,
                                                 device=out.device))
        sh = sh - moves
    return out, ang, sh


def flip_ctf(table: Table, images_flipped: bool = False) -> CTFParams | None:
    """The CTF (core.ctf.CTFParams) to phase-flip the images of ``table`` with
    before the network sees them -- the paper's rule, the same in training and
    prediction: None when the images are marked as flipped already
    (``images_flipped``) or the table has no CTF columns (nothing to flip)."""
    if images_flipped:
        return None
    from .ctf import CTFParams
    return CTFParams.from_table(table)


def phase_flip_images(images: np.ndarray | Stack, ctf: CTFParams, pixel_size: float,
                      device: str | torch.device = "cpu", batch: int = 256) -> np.ndarray:
    """Phase-flipped float32 copy (numpy) of images (n, N, N) (array or Stack)
    with their CTF (n rows) at ``pixel_size`` Å/px. Each image is flipped with
    its own CTF (batched FFTs: the same as alone to float precision; the same
    rows give bit-identical results)."""
    from .ctf import phase_flip
    n = len(images)
    out = np.empty((n,) + tuple(images.shape[1:]), np.float32)
    dev = torch.device(device) if not isinstance(device, torch.device) else device
    for s in range(0, n, batch):
        e = min(n, s + batch)
        x = torch.as_tensor(np.asarray(images[s:e]), dtype=torch.float32, device=dev)
        out[s:e] = phase_flip(x, ctf.subset(np.arange(s, e)), pixel_size).cpu().numpy()
    return out


def heads_for(architecture: str, n_amplitudes: int) -> dict[str, dict[str, int]]:
    """{network name: {head: output size}} of an architecture."""
    M = int(n_amplitudes)
    if architecture == "joint":
        return {"joint": {"amplitudes": M, "orientation": 4, "shifts": 2}}
    if architecture == "separate":
        return {"amplitudes": {"amplitudes": M}, "orientation": {"orientation": 4},
                "shifts": {"shifts": 2}}
    raise InputError(f"unknown architecture '{architecture}' (joint or separate)")


def _loss(pred, target):
    parts = {}
    if "amplitudes" in pred:
        parts["amplitudes"] = (pred["amplitudes"] - target["amplitudes"]).abs().mean()
    if "orientation" in pred:
        p, t = pred["orientation"], target["orientation"]
        parts["orientation"] = torch.minimum((p - t).abs().sum(-1),
                                             (p + t).abs().sum(-1)).mean()
    if "shifts" in pred:
        parts["shifts"] = (pred["shifts"] - target["shifts"]).abs().mean()
    if "rotation" in pred:        # the pose-aware network: its pose corrections weigh less
        parts["rotation"] = (pred["rotation"] - target["rotation"]).abs().mean()
        parts["shifts"] = parts["shifts"] * POSE_LOSS_WEIGHT
        parts["rotation"] = parts["rotation"] * POSE_LOSS_WEIGHT
    return sum(parts.values()), parts


class _Images:
    """Images from an array or a Stack (memory-mapped), resident on the device
    when they take at most ``max_gb`` GB."""

    def __init__(self, images, device, max_gb):
        self.src = images
        self.device = device
        n, box = len(images), images.shape[-1]
        self.resident = None
        if n * box * box * 4 / 1e9 <= max_gb:
            self.resident = torch.as_tensor(np.asarray(images[:] if not isinstance(
                images, np.ndarray) else images), dtype=torch.float32).to(device)

    def get(self, idx):
        if self.resident is not None:
            return self.resident[torch.as_tensor(idx, device=self.device)]
        order = np.argsort(idx)
        arr = np.empty((len(idx),) + tuple(self.src.shape[1:]), np.float32)
        arr[order] = self.src[np.asarray(idx)[order]]
        return torch.as_tensor(arr).to(self.device)


def _as_args(x, cuda=False):
    """The network's arguments: (images,) or the pose-aware (channels, views);
    channels-last 4D images on CUDA."""
    x = x if isinstance(x, tuple) else (x,)
    if cuda:
        img = x[0] if x[0].dim() == 4 else x[0][:, None]
        x = (img.contiguous(memory_format=torch.channels_last),) + x[1:]
    return x


def _seed(*parts):
    """A 63-bit seed from integers (the same on every platform)."""
    state = np.random.SeedSequence([int(p) for p in parts]).generate_state(1, np.uint64)
    return int(state[0]) & ((1 << 63) - 1)


def _optimiser(params, cfg, steps_per_epoch):
    """(optimiser, per-step lr scheduler) of ``cfg.schedule``."""
    if cfg.schedule == "paper":
        # torch's Adam adds weight_decay * w to the gradients: the paper's L2 term
        opt = torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
        spe, step, gamma = int(steps_per_epoch), int(cfg.lr_step), float(cfg.lr_gamma)
        return opt, torch.optim.lr_scheduler.LambdaLR(
            opt, lambda k: gamma ** ((k // spe) // step))
    if cfg.schedule != "onecycle":
        raise InputError(f"unknown schedule '{cfg.schedule}' ({' or '.join(SCHEDULES)})")
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    return opt, torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=cfg.lr, epochs=cfg.epochs, steps_per_epoch=steps_per_epoch, pct_start=0.15)


# --------------------------------------------------------------------------
# one epoch, evaluation, checkpoint state
class Trainer:
    """The networks, optimisers and learning-rate schedules of one run.

    ``images`` (n, N, N) array or Stack and ``table`` (their n label rows:
    angleRot/Tilt/Psi, nmaDisplacements, optional shiftX/Y, all finite);
    ``train_rows``: the rows the label standardisation is fitted on and whose
    count sets the steps per epoch. ``init_nets``: {name: DeepHEMNMANet} whose
    weights start the run (fine-tuning; same networks and heads). ``pose``
    (core.pose_input.PoseData, one row per table row): the pose-aware
    network, reading the images at their consensus poses (``cfg.pose_input``)."""

    def __init__(self, images: np.ndarray | Stack, table: Table, train_rows: np.ndarray,
                 cfg: TrainConfig | None = None,
                 init_nets: dict[str, DeepHEMNMANet] | None = None,
                 pose: PoseData | None = None) -> None:
        self.cfg = cfg = cfg or TrainConfig()
        if len(images) != len(table):
            raise InputError(f"{len(images)} images but {len(table)} label rows")
        self.rank, self.world, _ = distributed(start=False)
        self.device = resolve_device(cfg.device)
        self.box = int(images.shape[-1])
        self.input_size = int(cfg.input_size or self.box)
        if cfg.pose_input and pose is None:
            raise InputError("the pose-aware network needs the particles' consensus poses")
        self.pose = pose if cfg.pose_input else None
        self.n_amplitudes = table["nmaDisplacements"].shape[1]
        if self.pose is not None:
            self.codec = PoseCodec.fit(table.subset(train_rows), pose.subset(train_rows))
            self.pose_x, view, q = pose_tensors(images, pose, self.input_size, self.device)
            labels = self.codec.encode(table, pose, q.double().cpu().numpy())
            self.pose_view = pose_view(view, q, self.codec)
            heads = pose_heads(self.n_amplitudes)
            net_kw = dict(in_channels=self.pose_x.shape[1], n_view=self.pose_view.shape[1])
            self.images = None
        else:
            self.codec = LabelCodec.fit(table.subset(train_rows))
            labels = self.codec.encode(table)
            self.images = _Images(images, self.device, cfg.max_resident_gb)
            heads = heads_for(cfg.architecture, self.n_amplitudes)
            net_kw = {}
        self.targets = {k: torch.as_tensor(v, dtype=torch.float32, device=self.device)
                        for k, v in labels.items()}
        self.angles, self.shifts = table.angles(), table.shifts()
        self.n_rows = len(table)
        # the paper's augmented copies: copy c of row r is training id c * n + r,
        # rotated by copy_alpha[c - 1, r] and moved by copy_moves[c - 1, r] px
        self.copies = int(cfg.augment_copies or 0)
        g = np.random.default_rng(_seed(cfg.seed, 3))
        self.copy_alpha = g.uniform(0, 360, (self.copies, self.n_rows))
        self.copy_moves = g.uniform(-cfg.augment_shift, cfg.augment_shift,
                                    (self.copies, self.n_rows, 2)) if self.copies else None
        torch.manual_seed(cfg.seed)
        self.nets = {k: DeepHEMNMANet(h, cfg.dropout, cfg.coord_channels, trunk=cfg.trunk,
                                      **net_kw).to(self.device)
                     for k, h in heads.items()}
        for k, net in (init_nets or {}).items():
            self.nets[k].load_state_dict(net.state_dict())
        if self.device.type == "cuda":
            self.nets = {k: v.to(memory_format=torch.channels_last) for k, v in self.nets.items()}
        self.steps_per_epoch = max(1, len(train_rows) * (1 + self.copies) // cfg.batch_size)
        self.opts, self.scheds = {}, {}
        for k, v in self.nets.items():
            self.opts[k], self.scheds[k] = _optimiser(v.parameters(), cfg, self.steps_per_epoch)
        self.ddp = dict(self.nets)
        if self.world > 1:
            from torch.nn.parallel import DistributedDataParallel as DDP
            self.ddp = {k: DDP(v) for k, v in self.nets.items()}
        self.bf16 = self.device.type == "cuda"

    # model file -----------------------------------------------------------
    def meta(self, mode_numbers: Iterable[int], pixel_size: float,
             phase_flip: bool = True) -> dict:
        """The model file's metadata (see core.models): sizes in px, pixel size
        in Å/px of the images (``box`` px), the label standardisation, and
        ``phase_flip``: the images were given to the network by the rule of
        :func:`flip_ctf` (prediction applies it too)."""
        return {"architecture": self.cfg.architecture, "image_size": self.box,
                "input_size": self.input_size, "pixel_size": float(pixel_size),
                "mode_numbers": [int(m) for m in mode_numbers],
                "normalization": "per-image mean/std",
                # the network's images are CTF phase-flipped (flip_ctf's rule):
                # predict flips from the CTF columns unless the images are flipped
                "phase_flip": bool(phase_flip),
                "train_config": {f.name: getattr(self.cfg, f.name)
                                 for f in dataclasses.fields(TrainConfig)},
                # the pose-aware network: its reference travels with it (predict
                # projects it at the particles' consensus poses)
                "pose_input": self.pose is not None,
                **({"pose_reference": self.pose.reference.to_payload()}
                   if self.pose is not None else {}),
                **self.codec.to_meta()}

    # batches --------------------------------------------------------------
    def _inputs(self, rows):
        if self.pose is not None:             # (channels, views): computed once
            idx = torch.as_tensor(rows, device=self.device)
            return self.pose_x[idx], self.pose_view[idx]
        return normalize(self.images.get(rows), self.input_size)

    def _targets(self, rows):
        idx = torch.as_tensor(rows, device=self.device)
        return {k: v[idx] for k, v in self.targets.items()}

    def batch(self, ids: np.ndarray, rng: np.random.Generator | None = None
              ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Network inputs (B, n, n) and targets of training ``ids`` (a row r of
        the table, or c * n_rows + r for its augmented copy c >= 1), with the
        random in-plane rotations of ``rng`` (``augment``) on top."""
        ids = np.asarray(ids)
        rows, copy = ids % self.n_rows, ids // self.n_rows
        x, t = self._inputs(rows), self._targets(rows)
        if (not copy.any() and rng is None) or self.pose is not None:
            return x, t
        ang, sh = self.angles[rows].copy(), self.shifts[rows].copy()
        if copy.any():
            sel = np.nonzero(copy)[0]
            c, r = copy[sel] - 1, rows[sel]
            moved, ang[sel], sh[sel] = transform_batch(
                x[torch.as_tensor(sel, device=x.device)], ang[sel], sh[sel],
                self.copy_alpha[c, r], self.copy_moves[c, r], x.shape[-1] / self.box)
            x = x.index_copy(0, torch.as_tensor(sel, device=x.device), moved)
        if rng is not None:
            x, ang, sh = augment_batch(x, ang, sh, rng)
        c = self.codec
        t["orientation"] = torch.as_tensor(rotations.euler_to_quaternion(ang),
                                           dtype=torch.float32, device=self.device)
        t["shifts"] = torch.as_tensor((sh - c.shift_mean) / c.shift_std, dtype=torch.float32,
                                      device=self.device)
        return x, t

    def train_epoch(self, epoch: int, rows: np.ndarray, progress: Progress | None = None) -> float:
        """One pass over the training ``rows`` and their augmented copies
        (0-based ``epoch``): shuffled batches of ``batch_size`` (the last
        incomplete one dropped), each process taking its share; -> mean
        training loss of this process."""
        cfg = self.cfg
        rows = np.asarray(rows)
        ids = np.concatenate([rows + c * self.n_rows for c in range(self.copies + 1)])
        order = np.random.default_rng(_seed(cfg.seed, epoch)).permutation(ids)
        aug = np.random.default_rng(_seed(cfg.seed, epoch, self.rank, 1)) if cfg.augment \
            else None
        torch.manual_seed(_seed(cfg.seed, epoch, self.rank, 2))      # dropout
        for v in self.nets.values():
            v.train()
        total, seen = 0.0, 0
        for s in range(self.steps_per_epoch):
            b = np.sort(order[s * cfg.batch_size:(s + 1) * cfg.batch_size])[self.rank::self.world]
            x, t = self.batch(b, aug)
            for k, loss in self.step(x, t, self.ddp).items():
                self.scheds[k].step()
                total += float(loss) * len(b)
            seen += len(b)
            if progress is not None:
                progress.update(len(b) * self.world, extra=f"loss {total / seen:.4f}")
        return total / max(seen, 1)

    def step(self, x: torch.Tensor, t: dict[str, torch.Tensor],
             nets: dict[str, torch.nn.Module] | None = None) -> dict[str, torch.Tensor]:
        """One optimiser step of each network (``nets``: name -> module, default
        the networks) on images x (B, y, x) with targets t -> {name: loss}."""
        x = _as_args(x, self.device.type == "cuda")
        losses = {}
        for k, net in (nets or self.nets).items():
            self.opts[k].zero_grad(set_to_none=True)
            with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16):
                out = net(*x)
            loss, _ = _loss({h: y.float() for h, y in out.items()}, t)
            loss.backward()
            self.opts[k].step()
            losses[k] = loss.detach()
        return losses

    @torch.no_grad()
    def evaluate(self, rows: np.ndarray) -> tuple[float, dict[str, float]]:
        """Mean loss over ``rows`` (networks in eval mode) -> (loss, {head: loss})."""
        for v in self.nets.values():
            v.eval()
        total, parts_sum = 0.0, {}
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16):
            for i in range(0, len(rows), EVAL_BATCH):
                b = rows[i:i + EVAL_BATCH]
                t = self._targets(b)
                x = _as_args(self._inputs(b))
                for v in self.nets.values():
                    loss, parts = _loss({h: y.float() for h, y in v(*x).items()}, t)
                    total += float(loss) * len(b)
                    for h, p in parts.items():
                        parts_sum[h] = parts_sum.get(h, 0.0) + float(p) * len(b)
        n = max(len(rows), 1)
        heads = sorted(parts_sum)
        values = [total / n] + [parts_sum[h] / n for h in heads]
        if self.world > 1:       # every process decides on process 0's numbers (early stop)
            import torch.distributed as dist
            t = torch.tensor(values, dtype=torch.float64, device=self.device)
            dist.broadcast(t, 0)
            values = t.tolist()
        return values[0], dict(zip(heads, values[1:]))

    @property
    def lr(self) -> float:
        return self.scheds[next(iter(self.scheds))].get_last_lr()[0]

    def state_dict(self) -> dict:
        """Networks, optimisers and schedules (tensors and plain values)."""
        return {"nets": {k: v.state_dict() for k, v in self.nets.items()},
                "opts": {k: o.state_dict() for k, o in self.opts.items()},
                "scheds": {k: s.state_dict() for k, s in self.scheds.items()}}

    def load_state_dict(self, state: dict) -> None:
        for k in self.nets:
            self.nets[k].load_state_dict(state["nets"][k])
            self.opts[k].load_state_dict(state["opts"][k])
            self.scheds[k].load_state_dict(state["scheds"][k])


# --------------------------------------------------------------------------
# the run
@dataclasses.dataclass
class RunState:
    """Where a run is: epochs done, best validation loss and its epoch, epochs
    without improvement, and one history row per epoch (epoch, train_loss,
    val_loss, val_<head>, lr, time_s)."""
    epoch: int = 0
    best: float = math.inf
    best_epoch: int = 0
    bad_epochs: int = 0
    history: list[dict] = dataclasses.field(default_factory=list)

    def finished(self, cfg: TrainConfig) -> bool:
        return self.epoch >= cfg.epochs or self.stopped_early(cfg)

    def stopped_early(self, cfg: TrainConfig) -> bool:
        return self.epoch < cfg.epochs and self.bad_epochs >= cfg.patience

    def record(self, row: dict) -> bool:
        """Add an epoch's row; -> True when its validation loss is the best."""
        self.history.append(row)
        self.epoch = int(row["epoch"])
        if row["val_loss"] < self.best:
            self.best, self.best_epoch, self.bad_epochs = float(row["val_loss"]), self.epoch, 0
            return True
        self.bad_epochs += 1
        return False

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> RunState:
        return cls(**{f.name: d[f.name] for f in dataclasses.fields(cls)})


def later_epochs_seconds(elapsed: float, left: float, epochs_after: int,
                         durations: Sequence[float] = ()) -> float:
    """Seconds the ``epochs_after`` epochs after the current one will take:
    each as long as the mean of ``durations`` (wall seconds of the epochs
    done, validation and checkpoint included), else as the current epoch's
    training (``elapsed`` + ``left`` seconds). Early stopping can end the run
    sooner."""
    per_epoch = sum(durations) / len(durations) if len(durations) else elapsed + left
    return epochs_after * per_epoch


def fit(trainer: Trainer, train_rows: np.ndarray, val_rows: np.ndarray,
        state: RunState | None = None, on_epoch: Callable[[RunState, bool], None] | None = None,
        quiet: bool | None = None, log: Callable[[str], None] | None = None) -> RunState:
    """Train from ``state`` (a fresh RunState by default; one read from a
    checkpoint to resume) until ``cfg.epochs`` or early stopping. After every
    epoch ``on_epoch(state, improved)`` (e.g. write the best model and a
    checkpoint) then ``log(line)``. The progress line of each epoch shows its
    ETA and the whole run's (``run ETA``: :func:`later_epochs_seconds`).
    Returns the RunState."""
    cfg = trainer.cfg
    state = state or RunState()
    t0 = time.perf_counter() - (state.history[-1]["time_s"] if state.history else 0.0)
    show = trainer.rank == 0
    durations = []                   # wall seconds of the epochs done in this call
    while not state.finished(cfg):
        e = state.epoch
        started = time.perf_counter()

        def after(elapsed, left, epochs_after=cfg.epochs - e - 1):
            return later_epochs_seconds(elapsed, left, epochs_after, durations)
        prog = Progress(trainer.steps_per_epoch * cfg.batch_size, f"epoch {e + 1}/{cfg.epochs}",
                        quiet=quiet if show else True, after=after)
        train_loss = trainer.train_epoch(e, train_rows, prog)
        prog.close()
        val, parts = trainer.evaluate(val_rows)
        improved = state.record({"epoch": e + 1, "train_loss": train_loss, "val_loss": val,
                                 **{f"val_{h}": p for h, p in parts.items()},
                                 "lr": trainer.lr, "time_s": time.perf_counter() - t0})
        if on_epoch is not None:
            on_epoch(state, improved)
        if log is not None and show:
            log(f"epoch {e + 1}: train {train_loss:.4f} val {val:.4f}{' *' if improved else ''}")
        durations.append(time.perf_counter() - started)
    if log is not None and show and state.stopped_early(cfg):
        log(f"early stop: no validation improvement for {cfg.patience} epochs")
    return state


def save_checkpoint(path: PathLike, trainer: Trainer, state: RunState, stamp: str = "") -> None:
    """Write the run's checkpoint atomically (a kill leaves the previous one
    whole): networks, optimisers, schedules, the RunState and ``stamp`` (a
    string naming the run's inputs and options)."""
    with atomic_path(path) as tmp:
        torch.save({"format": CHECKPOINT, "stamp": str(stamp), "run": state.to_dict(),
                    **trainer.state_dict()}, tmp)


def read_checkpoint(path: PathLike) -> dict | None:
    """A checkpoint written by :func:`save_checkpoint` (loaded on the CPU, no
    code executed), or None when the file is not a whole one."""
    try:    # memory-mapped: the stamp and run state are read without the tensors
        ck = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception:  # truncated, not a torch file, unsafe content
        return None
    if not isinstance(ck, dict) or ck.get("format") != CHECKPOINT:
        return None
    return ck

"""Training DeepHEMNMA's network (Stage 2).

* labels: normal-mode amplitudes and shifts standardised (mean/std stored in the
  model), orientations as canonical unit quaternions (from Xmipp Euler angles);
* losses: L1 (the paper's mean absolute error) on standardised amplitudes and
  shifts; for orientations the sign-invariant L1, min(|q - p|, |q + p|);
* optimiser AdamW (weight decay 1e-5), one-cycle learning-rate schedule,
  early stopping on the validation loss, best checkpoint kept, ``resume``;
* split by particle into train / validation / test (no leakage; saved);
* optional Mahalanobis filter of the labels (paper: 3.2);
* optional label-consistent augmentation: an in-plane rotation of the image by
  alpha changes psi by alpha and rotates the shift vector (tested against the
  projector);
* CUDA: bf16 autocast, channels_last, images resident on the GPU when they fit.
* several processes (torchrun): DistributedDataParallel; each process takes an
  interleaved share of every batch.
"""
import csv
import dataclasses
import math
import os
import time

import numpy as np
import torch

from ..errors import InputError
from ..utils import Progress, atomic_path, resolve_device
from . import rotations
from .config import TrainConfig
from .image import downscale, rotate_images
from .network import DeepHEMNMANet

__all__ = ["TrainConfig", "LabelCodec", "split_indices", "augment_batch", "train",
           "normalize_images"]


def normalize_images(x, size=None):
    """Optional antialiased downscaling to ``size`` px, then per-image zero
    mean and unit std (B, N, N) torch."""
    if size and size < x.shape[-1]:
        x = downscale(x, size)
    mu = x.mean((-2, -1), keepdim=True)
    sd = x.std((-2, -1), keepdim=True).clamp_min(1e-6)
    return (x - mu) / sd


class LabelCodec:
    """Table columns <-> standardised network targets."""

    def __init__(self, amp_mean, amp_std, shift_mean, shift_std):
        self.amp_mean = np.asarray(amp_mean, float)
        self.amp_std = np.asarray(amp_std, float)
        self.shift_mean = np.asarray(shift_mean, float)
        self.shift_std = np.asarray(shift_std, float)

    @classmethod
    def fit(cls, table):
        q = table["nmaDisplacements"]
        s = table.shifts()
        return cls(q.mean(0), q.std(0).clip(min=1e-6), s.mean(0), s.std(0).clip(min=1e-3))

    def to_meta(self):
        return {"amplitude_mean": self.amp_mean.tolist(), "amplitude_std": self.amp_std.tolist(),
                "shift_mean": self.shift_mean.tolist(), "shift_std": self.shift_std.tolist()}

    @classmethod
    def from_meta(cls, m):
        return cls(m["amplitude_mean"], m["amplitude_std"], m["shift_mean"], m["shift_std"])

    def encode(self, table):
        return {"amplitudes": (table["nmaDisplacements"] - self.amp_mean) / self.amp_std,
                "orientation": rotations.euler_to_quaternion(table.angles()),
                "shifts": (table.shifts() - self.shift_mean) / self.shift_std}

    def decode(self, out):
        res = {}
        if "amplitudes" in out:
            res["amplitudes"] = out["amplitudes"] * self.amp_std + self.amp_mean
        if "orientation" in out:
            res["angles"] = rotations.quaternion_to_euler(out["orientation"])
        if "shifts" in out:
            res["shifts"] = out["shifts"] * self.shift_std + self.shift_mean
        return res


def split_indices(n, val_fraction=0.1, test_fraction=0.1, seed=0, groups=None):
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


def augment_batch(images, angles, shifts, rng):
    """Label-consistent in-plane rotation: images (B, N, N) torch, Euler angles
    (B, 3) and shifts (B, 2) numpy -> rotated images, psi + alpha, R(alpha) shift."""
    alpha = rng.uniform(0, 360, len(images))
    out = rotate_images(images, alpha)
    ang = angles.copy()
    ang[:, 2] = ang[:, 2] + alpha
    R = rotations.inplane_rotation_matrix(alpha)
    sh = np.einsum("bij,bj->bi", R, shifts)
    return out, ang, sh


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
    return sum(parts.values()), parts


class _Data:
    """Images from a stack/array (memory-mapped), resident when they fit."""

    def __init__(self, images, device, max_gb):
        self.src = images
        self.device = device
        n = len(images)
        box = images.shape[-1]
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


def _heads_for(arch, M):
    if arch == "joint":
        return {"joint": {"amplitudes": M, "orientation": 4, "shifts": 2}}
    if arch == "separate":
        return {"amplitudes": {"amplitudes": M}, "orientation": {"orientation": 4},
                "shifts": {"shifts": 2}}
    raise InputError(f"unknown architecture '{arch}' (joint or separate)")


def _dist():
    import torch.distributed as dist
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def train(images, table, out_dir, config=None, mode_numbers=None, pixel_size=None,
          resume=False, init_model=None, quiet=None, log=print):
    """Train on ``images`` (array or Stack, (n, N, N)) with labels ``table``
    (angleRot/Tilt/Psi, shiftX/Y, nmaDisplacements). Writes out_dir/model.pt
    (best), last.pt (checkpoint for --resume), curves.csv/png, split.npz.
    Returns a summary dict."""
    cfg = config or TrainConfig()
    table.require(["angleRot", "angleTilt", "anglePsi", "nmaDisplacements"], "label", "labels")
    n = len(table)
    if len(images) != n:
        raise InputError(f"{len(images)} images but {n} label rows")
    for c in ("nmaDisplacements", "angleRot", "angleTilt", "anglePsi"):
        if not np.isfinite(np.asarray(table[c], float)).all():
            raise InputError(f"labels: column '{c}' has NaN or infinite values")
    M = table["nmaDisplacements"].shape[1]
    if mode_numbers is not None and len(mode_numbers) != M:
        raise InputError(f"labels have {M} amplitudes but {len(mode_numbers)} modes were given")
    rank, world = _dist()
    device = resolve_device(cfg.device)
    torch.manual_seed(cfg.seed)
    os.makedirs(out_dir, exist_ok=True)
    keep = np.ones(n, bool)
    if cfg.mahalanobis:
        from .outliers import mahalanobis_filter
        keep, _ = mahalanobis_filter(table["nmaDisplacements"], cfg.mahalanobis)
        log(f"Mahalanobis <= {cfg.mahalanobis}: {keep.sum()} of {n} images kept")
    groups = table["itemId"] if "itemId" in table else None
    tr, va, te = split_indices(n, cfg.val_fraction, cfg.test_fraction, cfg.seed, groups)
    tr, va = tr[keep[tr]], va[keep[va]]
    if len(tr) < cfg.batch_size:
        raise InputError(f"{len(tr)} training images, fewer than the batch size "
                         f"{cfg.batch_size}: lower --batch-size or give more images")
    if len(va) == 0:
        raise InputError("no validation images: raise --val-fraction or give more images")
    np.savez(os.path.join(out_dir, "split.npz"), train=tr, val=va, test=te)
    codec = LabelCodec.fit(table.subset(tr))
    targets_np = codec.encode(table)
    targets = {k: torch.as_tensor(v, dtype=torch.float32, device=device)
               for k, v in targets_np.items()}
    data = _Data(images, device, cfg.max_resident_gb)
    box = images.shape[-1]
    if not 0 <= cfg.dropout < 1:
        raise InputError(f"dropout must be in [0, 1), got {cfg.dropout}")
    if cfg.input_size and (cfg.input_size > box or cfg.input_size % 2):
        raise InputError(f"input size {cfg.input_size} must be even and <= the image size {box}")
    insize = cfg.input_size or box
    meta = {"architecture": cfg.architecture, "image_size": int(box), "input_size": int(insize),
            "pixel_size": float(pixel_size) if pixel_size else 0.0,
            "mode_numbers": [int(m) for m in (mode_numbers if mode_numbers is not None
                                              else range(7, 7 + M))],
            "normalization": "per-image mean/std", "train_config": dataclasses.asdict(cfg),
            **codec.to_meta()}
    spec = _heads_for(cfg.architecture, M)
    nets = {k: DeepHEMNMANet(h, cfg.dropout, cfg.coord_channels).to(device)
            for k, h in spec.items()}
    if init_model is not None:
        from ..io.models import load_model
        src, _ = load_model(init_model)
        for k in nets:
            if k in src:
                if src[k].coord_channels != nets[k].coord_channels:    # follow the model
                    nets[k] = DeepHEMNMANet(spec[k], cfg.dropout,
                                            src[k].coord_channels).to(device)
                nets[k].load_state_dict(src[k].state_dict())
        log(f"fine-tuning from {init_model}")
    if device.type == "cuda":
        nets = {k: v.to(memory_format=torch.channels_last) for k, v in nets.items()}
    steps_per_epoch = max(1, len(tr) // cfg.batch_size)
    opts = {k: torch.optim.AdamW(v.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
            for k, v in nets.items()}
    scheds = {k: torch.optim.lr_scheduler.OneCycleLR(o, max_lr=cfg.lr, epochs=cfg.epochs,
                                                     steps_per_epoch=steps_per_epoch,
                                                     pct_start=0.15)
              for k, o in opts.items()}
    ddp = {k: v for k, v in nets.items()}
    if world > 1:
        from torch.nn.parallel import DistributedDataParallel as DDP
        ddp = {k: DDP(v) for k, v in nets.items()}
    start_epoch, best, bad_epochs, history = 0, math.inf, 0, []
    last = os.path.join(out_dir, "last.pt")
    if resume:
        if not os.path.exists(last):
            raise InputError(f"--resume: no checkpoint {last}")
        ck = torch.load(last, map_location=device, weights_only=True)
        for k in nets:
            nets[k].load_state_dict(ck["nets"][k])
            opts[k].load_state_dict(ck["opts"][k])
            scheds[k].load_state_dict(ck["scheds"][k])
        start_epoch, best, bad_epochs = ck["epoch"], ck["best"], ck["bad_epochs"]
        history = [dict(zip(ck["history_keys"], row)) for row in ck["history"].tolist()]
        log(f"resuming after epoch {start_epoch}")
    rng = np.random.default_rng(cfg.seed + 1000 * start_epoch + rank)
    use_bf16 = device.type == "cuda"
    angles_all, shifts_all = table.angles(), table.shifts()

    def batch_targets(idx, aug_rng=None, imgs=None):
        if aug_rng is None:
            return imgs, {k: v[torch.as_tensor(idx, device=device)] for k, v in targets.items()}
        imgs, ang, sh = augment_batch(imgs, angles_all[idx], shifts_all[idx], aug_rng)
        t = {"amplitudes": targets["amplitudes"][torch.as_tensor(idx, device=device)],
             "orientation": torch.as_tensor(rotations.euler_to_quaternion(ang),
                                            dtype=torch.float32, device=device),
             "shifts": torch.as_tensor((sh - codec.shift_mean) / codec.shift_std,
                                       dtype=torch.float32, device=device)}
        return imgs, t

    def run_eval(idx):
        for v in nets.values():
            v.eval()
        tot, parts_sum, cnt = 0.0, {}, 0
        with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16,
                                             enabled=use_bf16):
            for i in range(0, len(idx), 256):
                b = idx[i:i + 256]
                x = normalize_images(data.get(b), insize)
                _, t = batch_targets(b, None, x)
                for k, v in nets.items():
                    l, parts = _loss({h: y.float() for h, y in v(x).items()}, t)
                    tot += float(l) * len(b)
                    for h, pv in parts.items():
                        parts_sum[h] = parts_sum.get(h, 0.0) + float(pv) * len(b)
                cnt += len(b)
        return tot / cnt, {h: s / cnt for h, s in parts_sum.items()}

    t_start = time.perf_counter()
    for epoch in range(start_epoch, cfg.epochs):
        for v in nets.values():
            v.train()
        perm = rng.permutation(tr)
        prog = Progress(steps_per_epoch * cfg.batch_size, f"epoch {epoch + 1}/{cfg.epochs}",
                        quiet=quiet if rank == 0 else True)
        run_loss, seen = 0.0, 0
        for s in range(steps_per_epoch):
            b = np.sort(perm[s * cfg.batch_size:(s + 1) * cfg.batch_size])
            b = b[rank::world]
            x = normalize_images(data.get(b), insize)
            x, t = batch_targets(b, rng if cfg.augment else None, x)
            if device.type == "cuda":
                x = x[:, None].contiguous(memory_format=torch.channels_last)
            for k, v in ddp.items():
                opts[k].zero_grad(set_to_none=True)
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_bf16):
                    out = v(x)
                l, _ = _loss({h: y.float() for h, y in out.items()}, t)
                l.backward()
                opts[k].step()
                scheds[k].step()
                run_loss += float(l.detach()) * len(b)
            seen += len(b)
            prog.update(len(b) * world, extra=f"loss {run_loss / seen:.4f}")
        val, parts = run_eval(va)
        row = {"epoch": epoch + 1, "train_loss": run_loss / max(seen, 1), "val_loss": val,
               **{f"val_{h}": p for h, p in parts.items()},
               "lr": scheds[next(iter(scheds))].get_last_lr()[0],
               "time_s": time.perf_counter() - t_start}
        history.append(row)
        improved = val < best
        if improved:
            best, bad_epochs = val, 0
            if rank == 0:
                from ..io.models import save_model
                save_model(os.path.join(out_dir, "model.pt"), nets, dict(meta, best_epoch=epoch + 1,
                                                                         best_val_loss=val))
        else:
            bad_epochs += 1
        if rank == 0:
            keys = list(history[-1].keys())
            with atomic_path(last) as tmp:
                torch.save({"nets": {k: v.state_dict() for k, v in nets.items()},
                            "opts": {k: o.state_dict() for k, o in opts.items()},
                            "scheds": {k: s.state_dict() for k, s in scheds.items()},
                            "epoch": epoch + 1, "best": best, "bad_epochs": bad_epochs,
                            "history_keys": keys,
                            "history": torch.tensor([[r.get(k, float("nan")) for k in keys]
                                                     for r in history], dtype=torch.float64)},
                           tmp)
            _write_curves(out_dir, history)
            log(f"epoch {epoch + 1}: train {row['train_loss']:.4f} val {val:.4f}"
                f"{' *' if improved else ''}")
        if bad_epochs >= cfg.patience:
            log(f"early stop: no validation improvement for {cfg.patience} epochs")
            break
    return {"best_val_loss": best, "epochs_run": len(history), "train": len(tr), "val": len(va),
            "test": len(te), "history": history}


def _write_curves(out_dir, history):
    keys = list(history[-1].keys())
    with atomic_path(os.path.join(out_dir, "curves.csv")) as tmp, open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, keys)
        w.writeheader()
        for r in history:
            w.writerow({k: r.get(k, "") for k in keys})
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        ep = [r["epoch"] for r in history]
        fig, ax = plt.subplots(figsize=(5, 3.5))
        ax.plot(ep, [r["train_loss"] for r in history], label="training")
        ax.plot(ep, [r["val_loss"] for r in history], label="validation")
        ax.set_xlabel("epoch")
        ax.set_ylabel("L1 loss (standardised)")
        ax.set_yscale("log")
        ax.legend()
        fig.tight_layout()
        with atomic_path(os.path.join(out_dir, "curves.png")) as tmp:
            fig.savefig(tmp, format="png", dpi=100)
        plt.close(fig)
    except Exception:  # plotting is a convenience; never fail training for it
        pass

"""Inference (Stage 2, image set 2): stream images through a trained model.

Constant memory: images are read chunk by chunk from a memory-mapped stack,
predicted in batches, and converted back to Xmipp conventions (Euler angles
from the unit quaternions, shifts and amplitudes de-standardised).

Phase flip: a model whose meta says ``phase_flip`` saw CTF phase-flipped images
in training (core.training.flip_ctf's rule); :meth:`Predictor.predict` given
the images' CTF flips them the same way (on the predictor's device), so the
network sees in prediction what it saw in training. Models without the key
(older files) saw the images as given: nothing is flipped for them."""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch

from ..errors import InputError
from .ctf import phase_flip
from .image import downscale, normalize
from .models import model_pixel_size
from .training import LabelCodec, PoseCodec

if TYPE_CHECKING:
    from ..io.stacks import Stack
    from .ctf import CTFParams
    from .network import DeepHEMNMANet

__all__ = ["Predictor", "input_scale", "COLUMNS"]

# metadata columns (Xmipp names) that each predicted quantity fills
COLUMNS = {"amplitudes": ("nmaDisplacements",), "angles": ("angleRot", "angleTilt", "anglePsi"),
           "shifts": ("shiftX", "shiftY")}
_FROM_HEAD = {"amplitudes": "amplitudes", "orientation": "angles", "shifts": "shifts",
              "rotation": "angles"}


def input_scale(box: int, pixel_size: float | None, model_box: int,
                model_pixel_size: float | None = None, rescale: bool = False) -> float:
    """Input pixels per model pixel for images of ``box`` px at ``pixel_size``
    Å/px given to a model of ``model_box`` px at ``model_pixel_size``: 1, or with
    ``rescale`` box / model_box for larger images of the same field (they are
    Fourier-cropped to the model's box and the predicted shifts scaled back).
    ``model_pixel_size`` None or 0: unknown, not compared. Raises InputError
    for images the model cannot read."""
    scale = 1.0
    if box != model_box:
        if not rescale:
            raise InputError(f"the model was trained on {model_box} px images, these are "
                             f"{box} px (rescaling Fourier-crops larger images of the same "
                             f"field to {model_box} px)")
        if box < model_box:
            raise InputError(f"these images are {box} px, smaller than the model's "
                             f"{model_box} px: rescaling only downscales")
        scale = box / model_box
    ps = model_pixel_size or 0
    if pixel_size and ps and abs(pixel_size * scale - ps) > 0.01 * ps:
        seen = (f" ({pixel_size * scale:.4g} Å/px once cropped to {model_box} px)"
                if scale != 1 else "")
        raise InputError(f"the model was trained at {ps} Å/px, these images are "
                         f"{pixel_size} Å/px{seen}")
    return scale


class Predictor:
    def __init__(self, nets: dict[str, DeepHEMNMANet], meta: dict,
                 device: str | torch.device = "cpu", batch_size: int = 256) -> None:
        self.nets = {k: v.to(device).eval() for k, v in nets.items()}
        if torch.device(device).type == "cuda":          # as in training (core.training)
            self.nets = {k: v.to(memory_format=torch.channels_last)
                         for k, v in self.nets.items()}
        self.meta = meta
        self.pose_reference = None
        if self.reads_poses:
            from .pose_input import PoseReference
            self.pose_reference = PoseReference.from_payload(meta["pose_reference"])
            self.codec = PoseCodec.from_meta(meta)
        else:
            self.codec = LabelCodec.from_meta(meta)
        self.device = torch.device(device)
        self.batch_size = batch_size
        self.box = int(meta["image_size"])
        self.scale = 1.0                 # input px per model px (see check)
        self.pixel_size = model_pixel_size(meta)     # Å/px of the images given (see check)

    @property
    def flips(self) -> bool:
        """The model saw phase-flipped images: give :meth:`predict` the CTF of
        images that are not flipped yet."""
        return bool(self.meta.get("phase_flip", False))

    @property
    def reads_poses(self) -> bool:
        """The pose-aware model (train --pose-input): :meth:`predict` needs the
        images' consensus poses."""
        return bool(self.meta.get("pose_input", False))

    def check(self, box: int, pixel_size: float | None = None, rescale: bool = False) -> None:
        """Refuse images the model cannot read (see :func:`input_scale`)."""
        self.scale = input_scale(box, pixel_size, self.box, model_pixel_size(self.meta), rescale)
        if pixel_size:
            self.pixel_size = float(pixel_size)

    @property
    def columns(self) -> list[str]:
        """The metadata columns the predictions fill (see COLUMNS)."""
        heads = [h for net in self.nets.values() for h in net.heads_spec]
        return list(dict.fromkeys(c for h in heads if h in _FROM_HEAD
                                  for c in COLUMNS[_FROM_HEAD[h]]))

    @torch.no_grad()
    def predict(self, images: np.ndarray | torch.Tensor | Stack,
                ctf: CTFParams | None = None, poses: tuple | None = None,
                pose_ctf: CTFParams | None = None) -> dict[str, np.ndarray]:
        """images (B, N, N) numpy/torch -> dict angles (B, 3), shifts (B, 2) in
        pixels of these images, amplitudes (B, M) numpy. ``ctf``: the images'
        CTF (core.ctf.CTFParams, B rows) when they are not phase-flipped yet:
        flipped first if the model saw flipped images (:attr:`flips`), at the
        images' pixel size (:meth:`check`, else the model's). A pose-aware
        model (:attr:`reads_poses`) needs ``poses``: the images' consensus
        (angles (B, 3), shifts (B, 2) px), and ``pose_ctf``: their CTF (also
        when they are flipped already; None: images without CTF)."""
        from .pose_input import PoseData
        if self.reads_poses and poses is None:
            raise InputError("the model reads the particles' consensus poses (trained with "
                             "--pose-input): give the images' poses")
        out = {}
        use_bf16 = self.device.type == "cuda"
        flip = ctf is not None and self.flips
        if flip and not self.pixel_size:
            raise InputError("phase flipping needs the images' pixel size")
        for i in range(0, len(images), self.batch_size):
            x = torch.as_tensor(np.asarray(images[i:i + self.batch_size]), dtype=torch.float32,
                                device=self.device)
            if flip:
                x = phase_flip(x, ctf.subset(np.arange(i, i + len(x))), self.pixel_size)
            if self.scale != 1:
                x = downscale(x, self.box)
            pose = None
            if self.reads_poses:
                from .pose_input import pose_inputs
                rows = np.arange(i, i + len(x))
                pose = PoseData(self.pose_reference, np.asarray(poses[0], float)[rows],
                                np.asarray(poses[1], float)[rows] / self.scale,
                                self.pixel_size * self.scale if self.pixel_size else 1.0,
                                None if pose_ctf is None else pose_ctf.subset(rows))
                from .training import pose_view
                xp, view, q = pose_inputs(x, pose.angles, pose.shifts, pose.reference,
                                          pose.pixel_size, self.meta.get("input_size"), pose.ctf)
                args = (xp, pose_view(view, q, self.codec))
            else:
                args = (normalize(x, self.meta.get("input_size")),)
            raw = {}
            with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=use_bf16):
                for net in self.nets.values():
                    for h, y in net(*args).items():
                        raw[h] = y.float().cpu().numpy().astype(np.float64)
            if "orientation" in raw:
                raw["orientation"] /= np.linalg.norm(raw["orientation"], axis=1, keepdims=True)
            decoded = (self.codec.decode(raw, pose, q.double().cpu().numpy())
                       if pose is not None else self.codec.decode(raw))
            for k, v in decoded.items():
                out.setdefault(k, []).append(v * self.scale if k == "shifts" else v)
        return {k: np.concatenate(v) for k, v in out.items()}

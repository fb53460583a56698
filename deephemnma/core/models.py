"""Self-describing model files.

A model file is a plain ``torch.save`` of a dict holding only tensors, strings,
numbers and lists, so it loads with ``torch.load(weights_only=True)``: opening a
model received from someone else never executes code. Layout::

    {"format": "deephemnma-model", "format_version": 1,
     "meta": {architecture, heads, image_size (px), input_size (px),
              pixel_size (Å/px; 0 in files of models trained without one),
              mode_numbers, amplitude_mean/std, shift_mean/std, normalization,
              version, ...},
     "nets": {name: {"heads": {head: size}, "state_dict": {...}}}}

``nets`` has one entry ('joint') for the joint network or three
('amplitudes', 'orientation', 'shifts') for the paper's separate networks.
"""
from __future__ import annotations

import math
import os
from typing import TYPE_CHECKING, Union

import torch

from ..errors import InputError
from ..utils import atomic_path
from ..version import __version__

if TYPE_CHECKING:
    from .network import DeepHEMNMANet

PathLike = Union[str, os.PathLike]     # a path as str or pathlib.Path

__all__ = ["save_model", "load_model", "model_pixel_size", "FORMAT"]

FORMAT = "deephemnma-model"

# what a model's meta must hold for the predictor to read its outputs
_NEEDED = ("image_size", "amplitude_mean", "amplitude_std", "shift_mean", "shift_std")


def save_model(path: PathLike, nets: dict[str, DeepHEMNMANet], meta: dict) -> None:
    """nets: {name: DeepHEMNMANet}; meta: plain dict (see the module doc)."""
    payload = {"format": FORMAT, "format_version": 1,
               "meta": dict(meta, version=__version__),
               "nets": {k: {**n.spec(),
                            "state_dict": {p: t.detach().cpu() for p, t in
                                           n.state_dict().items()}}
                        for k, n in nets.items()}}
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


def model_pixel_size(meta: dict) -> float | None:
    """The pixel size (Å/px) of a model's training images, None when the file
    stores none (models trained without a pixel size store 0)."""
    try:
        ps = float(meta.get("pixel_size") or 0)
    except (TypeError, ValueError):
        return None
    return ps if math.isfinite(ps) and ps > 0 else None


def load_model(path: PathLike,
               device: str | torch.device = "cpu") -> tuple[dict[str, DeepHEMNMANet], dict]:
    """-> (nets {name: DeepHEMNMANet in eval mode}, meta). A file that is not a
    whole deephemnma model (empty, truncated, another torch file, weights that
    do not fit the networks, non-finite weights) raises one-line InputError."""
    from .network import DeepHEMNMANet
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"model file not found: {path}")
    if os.path.isdir(path):
        raise InputError(f"{path}: a folder, not a model file")
    if os.path.getsize(path) == 0:
        raise InputError(f"{path}: empty file, not a deephemnma model")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # pickle errors, not a torch file, truncated, unsafe content
        raise InputError(f"{path}: not a deephemnma model file ({type(e).__name__}: "
                         f"{(str(e).splitlines() or [''])[0][:120]})") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise InputError(f"{path}: not a deephemnma model file (no '{FORMAT}' marker)")
    meta, specs = payload.get("meta"), payload.get("nets")
    if not isinstance(meta, dict) or not isinstance(specs, dict) or not specs:
        raise InputError(f"{path}: damaged deephemnma model file (no metadata or networks)")
    missing = [k for k in _NEEDED if k not in meta]
    if missing:
        raise InputError(f"{path}: damaged deephemnma model file (metadata lacks "
                         f"{', '.join(missing)})")
    nets = {}
    for name, spec in specs.items():
        try:
            net = DeepHEMNMANet(spec["heads"], coord_channels=bool(spec.get("coord_channels",
                                                                            False)),
                                in_channels=int(spec.get("in_channels", 1)),
                                n_view=int(spec.get("n_view", 0)),
                                trunk=str(spec.get("trunk", "resnet34")))
            net.load_state_dict(spec["state_dict"])
        except (KeyError, TypeError, ValueError, RuntimeError) as e:
            raise InputError(f"{path}: damaged deephemnma model file (network '{name}': "
                             f"{(str(e).splitlines() or [''])[0][:120]})") from None
        if not all(torch.isfinite(t).all() for t in net.state_dict().values()
                   if t.is_floating_point()):
            raise InputError(f"{path}: network '{name}' holds non-finite weights (NaN/inf): "
                             "its training diverged; use another model")
        nets[name] = net.to(device).eval()
    return nets, meta

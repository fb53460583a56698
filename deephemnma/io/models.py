"""Self-describing model files.

A model file is a plain ``torch.save`` of a dict holding only tensors, strings,
numbers and lists, so it loads with ``torch.load(weights_only=True)``: opening a
model received from someone else never executes code. Layout::

    {"format": "deephemnma-model", "format_version": 1,
     "meta": {architecture, heads, image_size, pixel_size, mode_numbers,
              amplitude_mean/std, shift_mean/std, normalization, version, ...},
     "nets": {name: {"heads": {head: size}, "state_dict": {...}}}}

``nets`` has one entry ('joint') for the joint network or three
('amplitudes', 'orientation', 'shifts') for the paper's separate networks.
"""
import os

import torch

from ..errors import InputError
from ..utils import atomic_path
from ..version import __version__

__all__ = ["save_model", "load_model", "FORMAT"]

FORMAT = "deephemnma-model"


def save_model(path, nets, meta):
    """nets: {name: DeepHEMNMANet}; meta: plain dict."""
    payload = {"format": FORMAT, "format_version": 1,
               "meta": dict(meta, version=__version__),
               "nets": {k: {"heads": dict(n.heads_spec),
                            "coord_channels": bool(getattr(n, "coord_channels", False)),
                            "state_dict": {p: t.detach().cpu() for p, t in
                                           n.state_dict().items()}}
                        for k, n in nets.items()}}
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


def load_model(path, device="cpu"):
    """-> (nets {name: DeepHEMNMANet in eval mode}, meta)."""
    from ..core.network import DeepHEMNMANet
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"model file not found: {path}")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # pickle errors, not a torch file, unsafe content
        raise InputError(f"{path}: not a deephemnma model file ({type(e).__name__}: "
                         f"{str(e).splitlines()[0][:120]})") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise InputError(f"{path}: not a deephemnma model file (no '{FORMAT}' marker)")
    nets = {}
    for name, spec in payload["nets"].items():
        net = DeepHEMNMANet(spec["heads"], coord_channels=bool(spec.get("coord_channels",
                                                                        False)))
        net.load_state_dict(spec["state_dict"])
        nets[name] = net.to(device).eval()
    return nets, payload["meta"]

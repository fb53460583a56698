"""DeepHEMNMA's network: ResNet-34 feature extractor + the paper's MLP.

``ResNet34`` is written in plain torch with torchvision's parameter names
(``conv1, bn1, layer1.0.conv1 ... layer4.2.bn2, fc``) so torchvision weights
load into it (:func:`load_torchvision_weights`; a 3-channel stem is summed to
1 channel). The paper's MLP has layers of 1000, 512 and 128 nodes with ReLU and
dropout 0.5, then a linear output: here the trunk's ``fc`` (512 -> 1000) is the
first of them.

Heads: ``amplitudes`` (M values), ``orientation`` (4 -> a unit quaternion),
``shifts`` (2). ``DeepHEMNMANet(heads)`` with one head is one of the paper's
three separate networks; with several heads it is the joint network (shared
trunk and MLP, one linear output per head).

``coord_channels=True`` feeds two coordinate channels (x and y in [-1, 1]) beside
the image (CoordConv, Liu et al. 2018): a ResNet with global pooling is nearly
translation-invariant, and the coordinates let it read where the particle is,
which is what the shifts are (measured: noiseless AK, 32 px input, 35 epochs,
shift L1 in std units 0.37 / 0.87 for x / y without, 0.39 / 0.37 with). The stem
then has 3 input channels, the shape of torchvision's RGB stem.
"""
from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

__all__ = ["TRUNKS", "BasicBlock", "ResNet34", "DeepHEMNMANet", "load_torchvision_weights"]


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int = 1,
                 downsample: nn.Module | None = None) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


TRUNKS = {"resnet34": (3, 4, 6, 3), "resnet18": (2, 2, 2, 2)}


class ResNet34(nn.Module):
    """torchvision-compatible ResNet-34 with ``in_channels`` input channels
    (``blocks`` (2, 2, 2, 2): the ResNet-18 of the same names)."""

    def __init__(self, in_channels: int = 1, num_features: int = 1000,
                 blocks: tuple = TRUNKS["resnet34"]) -> None:
        super().__init__()
        self.inplanes = 64
        self.conv1 = nn.Conv2d(in_channels, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        self.layer1 = self._make_layer(64, blocks[0])
        self.layer2 = self._make_layer(128, blocks[1], 2)
        self.layer3 = self._make_layer(256, blocks[2], 2)
        self.layer4 = self._make_layer(512, blocks[3], 2)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(512, num_features)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def _make_layer(self, planes, blocks, stride=1):
        down = None
        if stride != 1 or self.inplanes != planes:
            down = nn.Sequential(nn.Conv2d(self.inplanes, planes, 1, stride, bias=False),
                                 nn.BatchNorm2d(planes))
        layers = [BasicBlock(self.inplanes, planes, stride, down)]
        self.inplanes = planes
        layers += [BasicBlock(planes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def load_torchvision_weights(model: ResNet34, state_dict: Mapping[str, torch.Tensor]) -> ResNet34:
    """Load a torchvision resnet34 state dict into :class:`ResNet34` (the RGB
    stem is summed over colours for 1-channel images)."""
    sd = dict(state_dict)
    w = sd["conv1.weight"]
    if w.shape[1] != model.conv1.weight.shape[1]:
        sd["conv1.weight"] = w.sum(1, keepdim=True)
    model.load_state_dict(sd)
    return model


class DeepHEMNMANet(nn.Module):
    """ResNet-34 + MLP(1000, 512, 128) + linear heads.

    ``heads``: ordered dict name -> output size, e.g. {'amplitudes': 3,
    'orientation': 4, 'shifts': 2}. ``forward`` returns a dict; the
    orientation output is normalised to a unit quaternion.

    The pose-aware form (core.pose_input) reads ``in_channels`` image channels
    and ``n_view`` numbers given beside the trunk's features to the MLP's
    first linear layer: ``forward(x, view)``. ``trunk``: a key of TRUNKS."""

    def __init__(self, heads: Mapping[str, int], dropout: float = 0.5,
                 coord_channels: bool = False, in_channels: int = 1, n_view: int = 0,
                 trunk: str = "resnet34") -> None:
        super().__init__()
        self.heads_spec = dict(heads)
        self.coord_channels = bool(coord_channels)
        self.in_channels, self.n_view, self.trunk_name = int(in_channels), int(n_view), trunk
        self.trunk = ResNet34(self.in_channels + (2 if coord_channels else 0), 1000,
                              TRUNKS[trunk])
        self.mlp = nn.Sequential(nn.ReLU(), nn.Dropout(dropout), nn.Linear(1000 + self.n_view,
                                                                           512), nn.ReLU(),
                                 nn.Dropout(dropout), nn.Linear(512, 128), nn.ReLU(),
                                 nn.Dropout(dropout))
        self.heads = nn.ModuleDict({k: nn.Linear(128, n) for k, n in self.heads_spec.items()})

    def spec(self) -> dict:
        """The constructor's arguments a model file stores (core.models)."""
        return {"heads": dict(self.heads_spec), "coord_channels": self.coord_channels,
                "in_channels": self.in_channels, "n_view": self.n_view,
                "trunk": self.trunk_name}

    def forward(self, x: torch.Tensor,
                view: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        if x.dim() == 3:
            x = x[:, None]
        if self.coord_channels:
            g = torch.linspace(-1, 1, x.shape[-1], device=x.device, dtype=x.dtype)
            gy, gx = torch.meshgrid(g, g, indexing="ij")
            xy = torch.stack([gx, gy])[None].expand(x.shape[0], -1, -1, -1)
            x = torch.cat([x, xy.to(memory_format=torch.contiguous_format)], 1)
            if x.device.type == "cuda":
                x = x.contiguous(memory_format=torch.channels_last)
        f = self.trunk(x)
        if self.n_view:
            if view is None:
                raise ValueError("this network reads the particles' views: forward(x, view)")
            f = torch.cat([self.mlp[:2](f), view.to(f.dtype)], 1)
            f = self.mlp[2:](f)
        else:
            f = self.mlp(f)
        out = {}
        for k, head in self.heads.items():
            y = head(f)
            if k == "orientation":
                y = y / y.norm(dim=-1, keepdim=True).clamp_min(1e-8)
            out[k] = y
        return out

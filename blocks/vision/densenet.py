"""DenseNet-BC (torchvision-compatible): the `densenet` backbone and its parts `dense_block`
and `transition`.

Module names mirror `torchvision.models.DenseNet` (features.conv0/norm0/relu0/pool0,
features.denseblockN.denselayerM.norm1/conv1/norm2/conv2, features.transitionN, features.norm5,
classifier), so a torchvision state dict loads with identical keys.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import ClassVar, Literal, Optional

import torch
import torch.nn.functional as F
from torch import nn

from composer.block import Block, In
from composer.dims import DimLike, conv_out
from composer.params import PosInt, Prob
from composer.registry import register
from composer.types import PortType, expect_float, expect_rank, expect_static

from .layers import backbone_outputs, stages
from .resnet import check_size, feature_map, image_channels

# depth -> (growth rate, layers per dense block, stem channels), as torchvision's densenet121 ...
DENSENET_CONFIGS: dict[int, tuple[int, tuple[int, int, int, int], int]] = {
    121: (32, (6, 12, 24, 16), 64),
    161: (48, (6, 12, 36, 24), 96),
    169: (32, (6, 12, 32, 32), 64),
    201: (32, (6, 12, 48, 32), 64),
}
STAGE_STRIDES = (4, 8, 16, 32)  # of c2..c5 relative to the input


def init_like_torchvision_densenet(module: nn.Module) -> None:
    """torchvision's DenseNet init: Kaiming-normal convs, BatchNorm 1/0, zero Linear bias."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.constant_(m.weight, 1)
            nn.init.constant_(m.bias, 0)
        elif isinstance(m, nn.Linear):
            nn.init.constant_(m.bias, 0)


# ---- modules ------------------------------------------------------------------------------


class DenseLayer(nn.Module):
    """BN-ReLU-1x1 conv (to bn_size*growth) then BN-ReLU-3x3 conv (to growth) on the concatenation."""

    def __init__(self, cin: int, growth_rate: int, bn_size: int, drop_rate: float):
        super().__init__()
        self.norm1 = nn.BatchNorm2d(cin)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv1 = nn.Conv2d(cin, bn_size * growth_rate, 1, 1, bias=False)
        self.norm2 = nn.BatchNorm2d(bn_size * growth_rate)
        self.relu2 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(bn_size * growth_rate, growth_rate, 3, 1, 1, bias=False)
        self.drop_rate = float(drop_rate)

    def forward(self, inputs: list[torch.Tensor]) -> torch.Tensor:
        x = self.conv1(self.relu1(self.norm1(torch.cat(inputs, 1))))  # (B, bn_size*growth, H, W)
        x = self.conv2(self.relu2(self.norm2(x)))                     # (B, growth, H, W)
        if self.drop_rate > 0:
            x = F.dropout(x, p=self.drop_rate, training=self.training)
        return x


class DenseBlock(nn.ModuleDict):
    """`num_layers` dense layers, each fed the concatenation of all earlier outputs."""

    def __init__(self, num_layers: int, cin: int, bn_size: int, growth_rate: int, drop_rate: float):
        super().__init__()
        for i in range(num_layers):
            self.add_module(f"denselayer{i + 1}", DenseLayer(cin + i * growth_rate, growth_rate, bn_size, drop_rate))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = [x]
        for layer in self.values():
            features.append(layer(features))
        return torch.cat(features, 1)  # (B, C_in + num_layers*growth, H, W)


class Transition(nn.Sequential):
    """BN, ReLU, 1x1 conv and 2x2/2 average pool between dense blocks."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.norm = nn.BatchNorm2d(cin)
        self.relu = nn.ReLU(inplace=True)
        self.conv = nn.Conv2d(cin, cout, 1, 1, bias=False)
        self.pool = nn.AvgPool2d(2, 2)


class DenseNet(nn.Module):
    """torchvision's DenseNet with outputs (pooled, {c2..c5}[, logits]); no classifier without classes."""

    def __init__(self, depth: int, in_channels: int = 3, num_classes: Optional[int] = None,
                 bn_size: int = 4, drop_rate: float = 0.0):
        super().__init__()
        growth, config, c = DENSENET_CONFIGS[depth]
        self.features = nn.Sequential(OrderedDict([
            ("conv0", nn.Conv2d(in_channels, c, 7, 2, 3, bias=False)),
            ("norm0", nn.BatchNorm2d(c)),
            ("relu0", nn.ReLU(inplace=True)),
            ("pool0", nn.MaxPool2d(3, 2, 1)),
        ]))
        for i, n in enumerate(config):
            self.features.add_module(f"denseblock{i + 1}", DenseBlock(n, c, bn_size, growth, drop_rate))
            c += n * growth
            if i != len(config) - 1:
                self.features.add_module(f"transition{i + 1}", Transition(c, c // 2))
                c //= 2
        self.features.add_module("norm5", nn.BatchNorm2d(c))
        self.classifier = nn.Linear(c, num_classes) if num_classes is not None else None
        init_like_torchvision_densenet(self)

    def forward(self, x: torch.Tensor):
        f = self.features
        x = f.pool0(f.relu0(f.norm0(f.conv0(x))))                  # (B, C0, H/4, W/4)
        c2 = f.denseblock1(x)
        c3 = f.denseblock2(f.transition1(c2))
        c4 = f.denseblock3(f.transition2(c3))
        c5 = F.relu(f.norm5(f.denseblock4(f.transition3(c4))))   # (B, C5, H/32, W/32)
        pooled = torch.flatten(F.adaptive_avg_pool2d(c5, (1, 1)), 1)  # (B, C5)
        features = {"c2": c2, "c3": c3, "c4": c4, "c5": c5}
        if self.classifier is None:
            return pooled, features
        return pooled, features, self.classifier(pooled)


# ---- blocks -------------------------------------------------------------------------------


def _half(d: DimLike) -> DimLike:
    return conv_out(d, 2, 2)


@register
class DenseNetBackbone(Block):
    """DenseNet-121/161/169/201 (torchvision layout and weights): pooled vector, c2..c5, logits.

    c2..c4 are the dense block outputs (before each transition); c5 is the final map after
    norm5 and ReLU, the one that is pooled.
    """
    name: ClassVar[str] = "densenet"
    family: ClassVar[str] = "vision"
    inputs: ClassVar = {"x": In("image", "feature_map", doc="[B, 3, H, W]")}
    outputs: ClassVar = ("pooled", "features", "logits")
    example: ClassVar = {"params": {"depth": 121, "num_classes": 10},
                         "inputs": {"x": PortType("image", (2, 3, 32, 32))}}
    depth: Literal[121, 161, 169, 201] = 121
    num_classes: Optional[PosInt] = None  # None: no classifier, outputs are pooled and features only
    bn_size: PosInt = 4
    drop_rate: Prob = 0.0                 # dropout after each dense layer (training only)

    def infer(self, x: PortType) -> dict[str, PortType]:
        image_channels(x)
        growth, config, c = DENSENET_CONFIGS[self.depth]
        h = conv_out(conv_out(x.shape[2], 7, 2, 3), 3, 2, 1)
        w = conv_out(conv_out(x.shape[3], 7, 2, 3), 3, 2, 1)
        maps = {}
        for i, n in enumerate(config):
            if i:
                c, h, w = c // 2, _half(h), _half(w)
            c += n * growth
            maps[f"c{i + 2}"] = feature_map(x, c, h, w)
        check_size(h, w, "densenet's four stages")
        return backbone_outputs(x, stages(maps, STAGE_STRIDES), c, self.num_classes)

    def build(self, x: PortType) -> nn.Module:
        return DenseNet(self.depth, x.shape[1], self.num_classes, self.bn_size, self.drop_rate)


def _channels(block: Block, x: PortType) -> int:
    expect_rank(x, 4, "x", " [B, C, H, W]")
    expect_float(x, "x")
    return expect_static(x.shape[1], "x", f"the channel count of a {block.name} input")


@register
class DenseBlockPart(Block):
    """DenseNet dense block: `num_layers` layers that each add `growth_rate` channels."""
    name: ClassVar[str] = "dense_block"
    example: ClassVar = {"params": {"num_layers": 3, "growth_rate": 8},
                         "inputs": {"x": PortType("feature_map", (2, 8, 16, 16))}}
    family: ClassVar[str] = "vision"
    inputs: ClassVar = {"x": In("feature_map", doc="[B, C_in, H, W]")}
    num_layers: PosInt
    growth_rate: PosInt = 32
    bn_size: PosInt = 4
    drop_rate: Prob = 0.0

    def infer(self, x: PortType) -> PortType:
        c = _channels(self, x)
        kind = "feature_map" if x.kind == "image" else x.kind
        return x.with_(kind=kind, shape=(x.shape[0], c + self.num_layers * self.growth_rate, *x.shape[2:]))

    def build(self, x: PortType) -> nn.Module:
        m = DenseBlock(self.num_layers, _channels(self, x), self.bn_size, self.growth_rate, self.drop_rate)
        init_like_torchvision_densenet(m)
        return m


@register
class TransitionPart(Block):
    """DenseNet transition: BN, ReLU, 1x1 conv (half the channels by default), 2x2/2 average pool."""
    name: ClassVar[str] = "transition"
    family: ClassVar[str] = "vision"
    inputs: ClassVar = {"x": In("feature_map", doc="[B, C_in, H, W]")}
    out_channels: Optional[PosInt] = None  # default: C_in // 2 (DenseNet-BC compression 0.5)

    def _out(self, x: PortType) -> tuple[int, int]:
        c = _channels(self, x)
        return c, self.out_channels if self.out_channels is not None else max(c // 2, 1)

    def infer(self, x: PortType) -> PortType:
        _, cout = self._out(x)
        h, w = _half(x.shape[2]), _half(x.shape[3])
        check_size(h, w, "a transition's 2x2 pooling")
        kind = "feature_map" if x.kind == "image" else x.kind
        return x.with_(kind=kind, shape=(x.shape[0], cout, h, w))

    def build(self, x: PortType) -> nn.Module:
        m = Transition(*self._out(x))
        init_like_torchvision_densenet(m)
        return m

"""ResNet (torchvision-compatible): the `resnet` backbone and its parts `resnet_stem`,
`basic_block` and `bottleneck`.

Module attribute names mirror `torchvision.models.ResNet` (conv1, bn1, layer1..layer4 of
blocks with conv1/bn1/conv2/bn2/(conv3/bn3)/downsample, fc), so a torchvision state dict
loads with identical keys. `image_channels`, `check_size` and `feature_map` are shared by
the other backbones of this family (densenet, inception).
"""

from __future__ import annotations

from typing import ClassVar, Literal, Optional

import torch
from torch import nn

from composer.block import Block, In
from composer.dims import DimLike, conv_out
from composer.params import PosInt
from composer.registry import register
from composer.types import InferError, PortType, expect_float, expect_rank, expect_static

from .layers import backbone_outputs, stages

# depth -> (block type, blocks per stage), as torchvision's resnet18 ... resnet152
RESNET_LAYERS: dict[int, tuple[str, tuple[int, int, int, int]]] = {
    18: ("basic", (2, 2, 2, 2)),
    34: ("basic", (3, 4, 6, 3)),
    50: ("bottleneck", (3, 4, 6, 3)),
    101: ("bottleneck", (3, 4, 23, 3)),
    152: ("bottleneck", (3, 8, 36, 3)),
}
STAGE_PLANES = (64, 128, 256, 512)
STAGE_STRIDES = (4, 8, 16, 32)  # of c2..c5 relative to the input


# ---- shared helpers of the vision backbones ----------------------------------------------


def image_channels(x: PortType) -> int:
    """Check a [B, C, H, W] float input and return its (fixed) channel count."""
    expect_rank(x, 4, "x", " [B, C, H, W]")
    expect_float(x, "x")
    return expect_static(x.shape[1], "x", "the channel count of a backbone input")


def check_size(h: DimLike, w: DimLike, what: str, param: str | None = None) -> None:
    """Reject a known spatial size below 1x1 (the input is too small for `what`)."""
    for d in (h, w):
        if isinstance(d, int) and d < 1:
            raise InferError(f"the input is too small for {what}", port=None if param else "x", param=param,
                             expected="an output of at least 1x1", found=f"{h}x{w}",
                             hint="use a larger input size")


def feature_map(x: PortType, channels: int, h: DimLike, w: DimLike) -> PortType:
    """A [B, channels, h, w] feature map with the batch dim and dtype of `x`."""
    return PortType("feature_map", (x.shape[0], channels, h, w), x.dtype)


def init_like_torchvision_resnet(module: nn.Module, zero_init_residual: bool = False) -> None:
    """torchvision's ResNet init: Kaiming-normal (fan_out) convs, BatchNorm weight 1 and bias 0;
    with `zero_init_residual` the last BatchNorm of each residual branch starts at 0, so every
    block starts as the identity (torchvision's option of the same name)."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.constant_(m.weight, 1)
            nn.init.constant_(m.bias, 0)
    if zero_init_residual:
        for m in module.modules():
            if isinstance(m, Bottleneck):
                nn.init.constant_(m.bn3.weight, 0)
            elif isinstance(m, BasicBlock):
                nn.init.constant_(m.bn2.weight, 0)


# ---- modules ------------------------------------------------------------------------------


def conv3x3(cin: int, cout: int, stride: int = 1, groups: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, stride, 1, groups=groups, bias=False)


def conv1x1(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 1, stride, bias=False)


def _shortcut(cin: int, cout: int, stride: int) -> nn.Sequential:
    """The projection shortcut: 1x1 conv (strided) and BatchNorm (keys downsample.0, .1)."""
    return nn.Sequential(conv1x1(cin, cout, stride), nn.BatchNorm2d(cout))


class BasicBlock(nn.Module):
    """Two 3x3 convs and a residual (ResNet-18/34). (B, C_in, H, W) -> (B, planes, H/s, W/s)."""

    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: bool = False):
        super().__init__()
        self.conv1 = conv3x3(inplanes, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = _shortcut(inplanes, planes, stride) if downsample else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out += identity  # in place, as torchvision: no extra activation-sized buffer
        return self.relu(out)


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3 (strided, grouped), 1x1 expand, and a residual (ResNet-50+, ResNeXt)."""

    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: bool = False,
                 groups: int = 1, base_width: int = 64):
        super().__init__()
        width = int(planes * (base_width / 64.0)) * groups
        self.conv1 = conv1x1(inplanes, width)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = conv3x3(width, width, stride, groups)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = conv1x1(width, planes * self.expansion)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = _shortcut(inplanes, planes * self.expansion, stride) if downsample else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        out += identity  # in place, as torchvision: no extra activation-sized buffer
        return self.relu(out)


class ResNetStem(nn.Module):
    """7x7/2 conv, BatchNorm, ReLU, 3x3/2 max pool: (B, C, H, W) -> (B, 64, H/4, W/4)."""

    def __init__(self, in_channels: int = 3, out_channels: int = 64):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.maxpool(self.relu(self.bn1(self.conv1(x))))


class ResNet(nn.Module):
    """torchvision's ResNet with outputs (pooled, {c2..c5}[, logits]); no fc without classes."""

    def __init__(self, depth: int, in_channels: int = 3, num_classes: Optional[int] = None,
                 groups: int = 1, width_per_group: int = 64, zero_init_residual: bool = False):
        super().__init__()
        kind, layers = RESNET_LAYERS[depth]
        self.conv1 = nn.Conv2d(in_channels, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        inplanes = 64
        stages = []
        for i, (planes, n) in enumerate(zip(STAGE_PLANES, layers)):
            stride = 1 if i == 0 else 2
            blocks: list[nn.Module] = []
            for j in range(n):
                s = stride if j == 0 else 1
                out = planes * (1 if kind == "basic" else Bottleneck.expansion)
                down = s != 1 or inplanes != out  # a projection shortcut (first block of a stage)
                if kind == "basic":
                    blocks.append(BasicBlock(inplanes, planes, s, down))
                else:
                    blocks.append(Bottleneck(inplanes, planes, s, down, groups, width_per_group))
                inplanes = out
            stages.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(inplanes, num_classes) if num_classes is not None else None
        init_like_torchvision_resnet(self, zero_init_residual)

    def forward(self, x: torch.Tensor):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))  # (B, 64, H/4, W/4)
        c2 = self.layer1(x)
        c3 = self.layer2(c2)
        c4 = self.layer3(c3)
        c5 = self.layer4(c4)                                   # (B, C5, H/32, W/32)
        pooled = torch.flatten(self.avgpool(c5), 1)            # (B, C5)
        features = {"c2": c2, "c3": c3, "c4": c4, "c5": c5}
        if self.fc is None:
            return pooled, features
        return pooled, features, self.fc(pooled)


# ---- blocks -------------------------------------------------------------------------------


def _stem_size(h: DimLike) -> DimLike:
    return conv_out(conv_out(h, 7, 2, 3), 3, 2, 1)


@register
class ResNetBackbone(Block):
    """ResNet-18/34/50/101/152 (torchvision layout and weights): pooled vector, c2..c5, logits."""
    name: ClassVar[str] = "resnet"
    family: ClassVar[str] = "vision"
    inputs: ClassVar = {"x": In("image", "feature_map", doc="[B, 3, H, W]")}
    outputs: ClassVar = ("pooled", "features", "logits")
    example: ClassVar = {"params": {"depth": 18, "num_classes": 10},
                         "inputs": {"x": PortType("image", (2, 3, 32, 32))}}
    depth: Literal[18, 34, 50, 101, 152] = 50
    num_classes: Optional[PosInt] = None  # None: no fc, outputs are pooled and features only
    groups: PosInt = 1                    # ResNeXt cardinality (bottleneck depths only)
    width_per_group: PosInt = 64          # 128 for Wide ResNet, 4 with groups 32 for ResNeXt-50 32x4d
    zero_init_residual: bool = False      # start each block as the identity (bounded activations at init)

    def _check(self) -> None:
        if RESNET_LAYERS[self.depth][0] == "basic" and (self.groups != 1 or self.width_per_group != 64):
            param = "groups" if self.groups != 1 else "width_per_group"
            raise InferError(f"resnet depth {self.depth} uses basic blocks, which support only groups=1 and "
                             "width_per_group=64", param=param, expected="groups 1, width_per_group 64",
                             found=f"groups {self.groups}, width_per_group {self.width_per_group}",
                             hint="grouped or wide ResNets need depth 50, 101 or 152")

    def infer(self, x: PortType) -> dict[str, PortType]:
        self._check()
        image_channels(x)
        kind, _ = RESNET_LAYERS[self.depth]
        expansion = 1 if kind == "basic" else Bottleneck.expansion
        h, w = _stem_size(x.shape[2]), _stem_size(x.shape[3])
        check_size(h, w, "the resnet stem")
        maps = {}
        for i, planes in enumerate(STAGE_PLANES):
            if i:
                h, w = conv_out(h, 3, 2, 1), conv_out(w, 3, 2, 1)
            maps[f"c{i + 2}"] = feature_map(x, planes * expansion, h, w)
        return backbone_outputs(x, stages(maps, STAGE_STRIDES), STAGE_PLANES[-1] * expansion, self.num_classes)

    def build(self, x: PortType) -> nn.Module:
        self._check()
        return ResNet(self.depth, x.shape[1], self.num_classes, self.groups, self.width_per_group,
                      self.zero_init_residual)


@register
class ResNetStemBlock(Block):
    """ResNet stem: 7x7/2 conv, BatchNorm, ReLU and 3x3/2 max pool ([B, C, H, W] to [B, 64, H/4, W/4])."""
    name: ClassVar[str] = "resnet_stem"
    family: ClassVar[str] = "vision"
    inputs: ClassVar = {"x": In("image", "feature_map", doc="[B, C, H, W]")}
    out_channels: PosInt = 64

    def infer(self, x: PortType) -> PortType:
        image_channels(x)
        h, w = _stem_size(x.shape[2]), _stem_size(x.shape[3])
        check_size(h, w, "the resnet stem")
        return feature_map(x, self.out_channels, h, w)

    def build(self, x: PortType) -> nn.Module:
        m = ResNetStem(x.shape[1], self.out_channels)
        init_like_torchvision_resnet(m)
        return m


class _Residual(Block):
    family: ClassVar[str] = "vision"
    inputs: ClassVar = {"x": In("feature_map", doc="[B, C_in, H, W]")}
    planes: PosInt                 # output channels are planes * expansion
    stride: PosInt = 1             # on the 3x3 conv and the shortcut
    downsample: Optional[bool] = None  # projection shortcut; None: when stride or channels change

    expansion: ClassVar[int] = 1

    def _shape(self, x: PortType) -> tuple[int, bool, DimLike, DimLike]:
        expect_rank(x, 4, "x", " [B, C, H, W]")
        expect_float(x, "x")
        cin = expect_static(x.shape[1], "x", f"the channel count of a {self.name} input")
        out = self.planes * self.expansion
        needed = self.stride != 1 or cin != out
        if self.downsample is False and needed:
            raise InferError(f"without a downsample shortcut the residual cannot be added: the input is "
                             f"{cin} channels at stride 1, the output {out} channels at stride {self.stride}",
                             param="downsample", expected="true (or leave it unset)", found="false",
                             hint="a projection shortcut is needed when the stride or the channel count changes")
        h, w = conv_out(x.shape[2], 3, self.stride, 1), conv_out(x.shape[3], 3, self.stride, 1)
        return cin, needed if self.downsample is None else self.downsample, h, w

    def infer(self, x: PortType) -> PortType:
        _, _, h, w = self._shape(x)
        kind = "feature_map" if x.kind == "image" else x.kind
        return x.with_(kind=kind, shape=(x.shape[0], self.planes * self.expansion, h, w))


@register
class BasicBlockPart(_Residual):
    """ResNet basic block: two 3x3 convs with BatchNorm, ReLU and a residual (ResNet-18/34)."""
    name: ClassVar[str] = "basic_block"
    example: ClassVar = {"params": {"planes": 16, "stride": 2},
                         "inputs": {"x": PortType("feature_map", (2, 8, 16, 16))}}

    def build(self, x: PortType) -> nn.Module:
        cin, down, _, _ = self._shape(x)
        m = BasicBlock(cin, self.planes, self.stride, down)
        init_like_torchvision_resnet(m)
        return m


@register
class BottleneckPart(_Residual):
    """ResNet bottleneck: 1x1 reduce, 3x3 (strided, grouped), 1x1 expand (x4), and a residual."""
    name: ClassVar[str] = "bottleneck"
    example: ClassVar = {"params": {"planes": 4, "stride": 2, "groups": 2},
                         "inputs": {"x": PortType("feature_map", (2, 8, 16, 16))}}
    groups: PosInt = 1        # ResNeXt cardinality
    base_width: PosInt = 64   # inner width is int(planes * base_width / 64) * groups

    expansion: ClassVar[int] = Bottleneck.expansion

    def build(self, x: PortType) -> nn.Module:
        cin, down, _, _ = self._shape(x)
        m = Bottleneck(cin, self.planes, self.stride, down, self.groups, self.base_width)
        init_like_torchvision_resnet(m)
        return m

"""YOLOv8 backbone and neck parts: `c2f` (CSP bottleneck with two convolutions), `sppf`
(spatial pyramid pooling, fast) and `upsample` (nearest-neighbour, for the PAN neck).

Modules mirror Ultralytics' `C2f` (`cv1`, `cv2`, `m` of bottlenecks with `cv1`, `cv2`) and
`SPPF` (`cv1`, `cv2`, `m`), registering their parameters in the same order, so an Ultralytics
YOLOv8 state dict loads by order. Each Ultralytics `Conv` (conv, BN, SiLU) is our
`ConvBNAct` (torchvision's layout, keys `0`, `1`): same tensors, same order, other names.
BatchNorm uses Ultralytics' eps 1e-3 and momentum 0.03.
"""

from __future__ import annotations

from typing import ClassVar, Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn
from typing_extensions import Annotated

from blocks.vision.layers import ConvBNAct, in_channels, map_type
from composer.block import Block, In
from composer.params import Activation, Eps, PosInt, Prob
from composer.registry import register
from composer.types import InferError, PortType, expect_float, expect_rank

BN_EPS = 1e-3        # Ultralytics' initialize_weights sets these on every BatchNorm2d
BN_MOMENTUM = 0.03
Expansion = Annotated[float, Field(gt=0.0, le=1.0)]


def conv(cin: int, cout: int, kernel: int = 1, stride: int = 1, activation: Activation = "silu",
         eps: float = BN_EPS, momentum: float = BN_MOMENTUM) -> ConvBNAct:
    """Ultralytics' `Conv`: conv (no bias, 'same' padding), BatchNorm, SiLU."""
    return ConvBNAct(cin, cout, kernel, stride, activation=activation, eps=eps, momentum=momentum)


def conv_params(cin: int, cout: int, kernel: int = 1) -> int:
    return cout * cin * kernel * kernel + 2 * cout


# ---- modules ------------------------------------------------------------------------------


class C2fBottleneck(nn.Module):
    """Two 3x3 convs and, with `shortcut` (and equal channels), a residual: Ultralytics' Bottleneck(e=1)."""

    def __init__(self, channels: int, shortcut: bool, activation: Activation, eps: float, momentum: float):
        super().__init__()
        self.cv1 = conv(channels, channels, 3, activation=activation, eps=eps, momentum=momentum)
        self.cv2 = conv(channels, channels, 3, activation=activation, eps=eps, momentum=momentum)
        self.add = shortcut

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.cv2(self.cv1(x))
        return x + y if self.add else y


class C2f(nn.Module):
    """CSP bottleneck with 2 convolutions: split cv1's output in two halves, run n bottlenecks on
    the second, concatenate every intermediate and fuse with cv2 (Ultralytics' C2f)."""

    def __init__(self, cin: int, cout: int, n: int = 1, shortcut: bool = False, expansion: float = 0.5,
                 activation: Activation = "silu", eps: float = BN_EPS, momentum: float = BN_MOMENTUM):
        super().__init__()
        self.c = int(cout * expansion)
        self.cv1 = conv(cin, 2 * self.c, 1, activation=activation, eps=eps, momentum=momentum)
        self.cv2 = conv((2 + n) * self.c, cout, 1, activation=activation, eps=eps, momentum=momentum)
        self.m = nn.ModuleList(C2fBottleneck(self.c, shortcut, activation, eps, momentum) for _ in range(n))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = list(self.cv1(x).chunk(2, 1))                        # 2 x (B, c, H, W)
        for m in self.m:
            y.append(m(y[-1]))
        return self.cv2(torch.cat(y, 1))                         # (B, (2 + n) c, H, W) -> (B, C_out, H, W)


class SPPF(nn.Module):
    """cv1, three chained k x k stride-1 max pools, concatenation of all four, cv2 (Ultralytics' SPPF;
    equal to SPP with kernels 5, 9, 13 for k = 5)."""

    def __init__(self, cin: int, cout: int, kernel: int = 5, activation: Activation = "silu",
                 eps: float = BN_EPS, momentum: float = BN_MOMENTUM):
        super().__init__()
        hidden = cin // 2
        self.cv1 = conv(cin, hidden, 1, activation=activation, eps=eps, momentum=momentum)
        self.cv2 = conv(hidden * 4, cout, 1, activation=activation, eps=eps, momentum=momentum)
        self.m = nn.MaxPool2d(kernel_size=kernel, stride=1, padding=kernel // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = [self.cv1(x)]
        for _ in range(3):
            y.append(self.m(y[-1]))
        return self.cv2(torch.cat(y, 1))


class Upsample(nn.Module):
    """Upsample by an integer factor to exactly (factor * H, factor * W).

    The output size is given as a size, not a scale factor: with a scale factor the exporter
    computes floor(H * 2.0) in floating point; with a size it stays integer arithmetic on H."""

    def __init__(self, factor: int, mode: str):
        super().__init__()
        self.factor, self.mode = factor, mode

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        size = (h * self.factor, w * self.factor)
        if self.mode == "nearest":
            return F.interpolate(x, size=size, mode="nearest")
        return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


# ---- blocks -------------------------------------------------------------------------------


class _YoloConvBlock(Block):
    family: ClassVar[str] = "detection"
    inputs: ClassVar = {"x": In("feature_map", doc="[B, C_in, H, W]")}
    out_channels: PosInt
    activation: Activation = "silu"
    eps: Eps = BN_EPS
    momentum: Prob = BN_MOMENTUM

    def infer(self, x: PortType) -> PortType:
        self._channels(x)
        return map_type(x, self.out_channels, x.shape[2], x.shape[3])

    def _channels(self, x: PortType) -> int:
        return in_channels(x, f"a {self.name}")


@register
class C2fBlock(_YoloConvBlock):
    """YOLOv8 C2f: CSP bottleneck with two convolutions and `bottlenecks` residual 3x3 pairs (Ultralytics layout).

    [B, C_in, H, W] to [B, out_channels, H, W]. The hidden width is int(out_channels *
    expansion); `shortcut` adds the residual inside each bottleneck (the backbone uses it,
    the neck does not).
    """
    name: ClassVar[str] = "c2f"
    example: ClassVar = {"params": {"out_channels": 16, "bottlenecks": 2, "shortcut": True},
                         "inputs": {"x": PortType("feature_map", (2, 8, 16, 16))}}
    bottlenecks: PosInt = 1      # Ultralytics' n (after depth scaling)
    shortcut: bool = False
    expansion: Expansion = 0.5

    def _hidden(self) -> int:
        c = int(self.out_channels * self.expansion)
        if c < 1:
            raise InferError("the hidden width int(out_channels * expansion) is 0", param="expansion",
                             expected="out_channels * expansion >= 1", found=f"{self.out_channels} * {self.expansion}")
        return c

    def infer(self, x: PortType) -> PortType:
        self._hidden()
        return super().infer(x)

    def param_count(self, x: PortType) -> int:
        cin, c, n = self._channels(x), self._hidden(), self.bottlenecks
        return (conv_params(cin, 2 * c) + conv_params((2 + n) * c, self.out_channels)
                + n * 2 * conv_params(c, c, 3))

    def build(self, x: PortType) -> nn.Module:
        self._hidden()
        return C2f(self._channels(x), self.out_channels, self.bottlenecks, self.shortcut, self.expansion,
                   self.activation, self.eps, self.momentum)


@register
class SPPFBlock(_YoloConvBlock):
    """YOLOv8 SPPF: 1x1 conv to half the channels, three chained max pools, concat, 1x1 conv (Ultralytics layout)."""
    name: ClassVar[str] = "sppf"
    example: ClassVar = {"params": {"out_channels": 8},
                         "inputs": {"x": PortType("feature_map", (2, 16, 8, 8))}}
    kernel: PosInt = 5          # odd: the pools keep H and W

    def _channels(self, x: PortType) -> int:
        c = super()._channels(x)
        if self.kernel % 2 == 0:
            raise InferError("the max pool kernel of sppf must be odd (it keeps H and W)", param="kernel",
                             expected="an odd size such as 5", found=str(self.kernel))
        if c < 2:
            raise InferError("sppf halves the input channels, so it needs at least 2", port="x", code="E302",
                             expected="[B, C >= 2, H, W]", found=str(x))
        return c

    def param_count(self, x: PortType) -> int:
        c = self._channels(x)
        return conv_params(c, c // 2) + conv_params(c // 2 * 4, self.out_channels)

    def build(self, x: PortType) -> nn.Module:
        return SPPF(self._channels(x), self.out_channels, self.kernel, self.activation, self.eps, self.momentum)


@register
class UpsampleBlock(Block):
    """Upsample a feature map by an integer factor (nearest neighbour by default): [B, C, H, W] to [B, C, fH, fW]."""
    name: ClassVar[str] = "upsample"
    family: ClassVar[str] = "detection"
    inputs: ClassVar = {"x": In("feature_map", doc="[B, C, H, W]")}
    factor: Annotated[int, Field(ge=2)] = 2
    mode: Literal["nearest", "bilinear"] = "nearest"

    def infer(self, x: PortType) -> PortType:
        expect_rank(x, 4, "x", " [B, C, H, W]")
        expect_float(x, "x")
        return map_type(x, x.shape[1], x.shape[2] * self.factor, x.shape[3] * self.factor)

    def param_count(self, x: PortType) -> int:
        return 0

    def build(self, x: PortType) -> nn.Module:
        return Upsample(self.factor, self.mode)

"""2-D convolution."""

from __future__ import annotations

from typing import ClassVar, Literal, Union

from torch import nn

from composer.block import Block, In
from composer.dims import conv_out
from composer.params import Pad2, PosInt, Size2, pair
from composer.registry import register
from composer.types import InferError, PortType, expect_float, expect_rank, expect_static


@register
class Conv2d(Block):
    """2-D convolution over [B, C, H, W]; input channels are inferred."""
    name: ClassVar[str] = "conv2d"
    family: ClassVar[str] = "core"
    inputs: ClassVar = {"x": In("feature_map", doc="[B, C_in, H, W]")}
    out_channels: PosInt
    kernel: Size2 = 3
    stride: Size2 = 1
    padding: Union[Pad2, Literal["same"]] = 0
    dilation: Size2 = 1
    groups: PosInt = 1
    bias: bool = True

    def _in_channels(self, x: PortType) -> int:
        expect_rank(x, 4, "x")
        expect_float(x, "x")
        c = expect_static(x.shape[1], "x", "the channel count of a conv2d input")
        if c % self.groups or self.out_channels % self.groups:
            raise InferError(f"groups={self.groups} must divide both input channels ({c}) and out_channels "
                             f"({self.out_channels})", param="groups", expected=f"a divisor of {c} and {self.out_channels}",
                             found=str(self.groups))
        return c

    def infer(self, x: PortType) -> PortType:
        self._in_channels(x)
        k, s, d = pair(self.kernel), pair(self.stride), pair(self.dilation)
        if self.padding == "same":
            if s != (1, 1):
                raise InferError("padding 'same' needs stride 1", param="padding", expected="stride 1",
                                 found=f"stride {self.stride}")
            h, w = x.shape[2], x.shape[3]
        else:
            p = pair(self.padding)
            h = conv_out(x.shape[2], k[0], s[0], p[0], d[0])
            w = conv_out(x.shape[3], k[1], s[1], p[1], d[1])
        for dim in (h, w):
            if isinstance(dim, int) and dim < 1:
                raise InferError("the kernel is larger than the (padded) input", param="kernel",
                                 expected="an output of at least 1x1", found=f"{h}x{w}")
        kind = "feature_map" if x.kind == "image" else x.kind
        return x.with_(kind=kind, shape=(x.shape[0], self.out_channels, h, w))

    def param_count(self, x: PortType) -> int:
        k = pair(self.kernel)
        c = self._in_channels(x)
        return self.out_channels * (c // self.groups) * k[0] * k[1] + (self.out_channels if self.bias else 0)

    def build(self, x: PortType) -> nn.Module:
        padding = self.padding if self.padding == "same" else pair(self.padding)
        return nn.Conv2d(x.shape[1], self.out_channels, pair(self.kernel), pair(self.stride), padding,
                         pair(self.dilation), self.groups, self.bias)

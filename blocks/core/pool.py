"""Pooling: maxpool, avgpool (windows) and global_avg_pool ([B, C, H, W] to [B, C])."""

from __future__ import annotations

from typing import ClassVar, Optional

import torch
from torch import nn

from composer.block import Block, In
from composer.dims import conv_out
from composer.params import Pad2, Size2, pair
from composer.registry import register
from composer.types import InferError, PortType, expect_float, expect_rank


class _Pool2d(Block):
    family: ClassVar[str] = "core"
    inputs: ClassVar = {"x": In("feature_map", doc="[B, C, H, W]")}
    kernel: Size2 = 2
    stride: Optional[Size2] = None  # defaults to the kernel size
    padding: Pad2 = 0
    ceil_mode: bool = False

    def _geometry(self):
        k = pair(self.kernel)
        s = pair(self.stride) if self.stride is not None else k
        p = pair(self.padding)
        if p[0] > k[0] // 2 or p[1] > k[1] // 2:
            raise InferError("pooling padding must be at most half the kernel", param="padding",
                             expected=f"at most {k[0] // 2}", found=str(self.padding))
        return k, s, p

    def infer(self, x: PortType) -> PortType:
        expect_rank(x, 4, "x")
        expect_float(x, "x")
        k, s, p = self._geometry()
        h = conv_out(x.shape[2], k[0], s[0], p[0], ceil_mode=self.ceil_mode)
        w = conv_out(x.shape[3], k[1], s[1], p[1], ceil_mode=self.ceil_mode)
        if (isinstance(h, int) and h < 1) or (isinstance(w, int) and w < 1):
            raise InferError("the pooling window is larger than the input", param="kernel",
                             expected="an output of at least 1x1", found=f"{h}x{w}")
        kind = "feature_map" if x.kind == "image" else x.kind
        return x.with_(kind=kind, shape=(x.shape[0], x.shape[1], h, w))

    def param_count(self, **inputs) -> int:
        return 0


@register
class MaxPool(_Pool2d):
    """2-D max pooling."""
    name: ClassVar[str] = "maxpool"

    def build(self, x: PortType) -> nn.Module:
        k, s, p = self._geometry()
        return nn.MaxPool2d(k, s, p, ceil_mode=self.ceil_mode)


@register
class AvgPool(_Pool2d):
    """2-D average pooling."""
    name: ClassVar[str] = "avgpool"
    count_include_pad: bool = True

    def build(self, x: PortType) -> nn.Module:
        k, s, p = self._geometry()
        return nn.AvgPool2d(k, s, p, ceil_mode=self.ceil_mode, count_include_pad=self.count_include_pad)


class GlobalAvgPool2d(nn.Module):
    """Mean over H and W: (B, C, H, W) -> (B, C)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=(2, 3))


@register
class GlobalAvgPool(Block):
    """Average over all spatial positions: [B, C, H, W] to a [B, C] vector."""
    name: ClassVar[str] = "global_avg_pool"
    family: ClassVar[str] = "core"
    inputs: ClassVar = {"x": In("feature_map", doc="[B, C, H, W]")}

    def infer(self, x: PortType) -> PortType:
        expect_rank(x, 4, "x")
        expect_float(x, "x")
        return PortType("vector", (x.shape[0], x.shape[1]), x.dtype)

    def param_count(self, **inputs) -> int:
        return 0

    def build(self, x: PortType) -> nn.Module:
        return GlobalAvgPool2d()

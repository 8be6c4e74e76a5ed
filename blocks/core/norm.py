"""Normalisation: batchnorm (over channels, axis 1) and layernorm (over the last axis)."""

from __future__ import annotations

from typing import ClassVar

from torch import nn

from composer.block import Block, In
from composer.params import Eps, Prob
from composer.registry import register
from composer.types import PortType, expect_float, expect_rank, expect_static


@register
class BatchNorm(Block):
    """Batch normalisation over axis 1: [B, C], [B, C, L] or [B, C, H, W]."""
    name: ClassVar[str] = "batchnorm"
    family: ClassVar[str] = "core"
    inputs: ClassVar = {"x": In("tensor", doc="[B, C, ...]")}
    eps: Eps = 1e-5
    momentum: Prob = 0.1
    affine: bool = True

    def _channels(self, x: PortType) -> int:
        expect_rank(x, (2, 3, 4, 5), "x")
        expect_float(x, "x")
        return expect_static(x.shape[1], "x", "the channel count (axis 1) of a batchnorm input")

    def infer(self, x: PortType) -> PortType:
        self._channels(x)
        return x

    def param_count(self, x: PortType) -> int:
        return 2 * self._channels(x) if self.affine else 0

    def build(self, x: PortType) -> nn.Module:
        cls = {2: nn.BatchNorm1d, 3: nn.BatchNorm1d, 4: nn.BatchNorm2d, 5: nn.BatchNorm3d}[x.rank]
        return cls(x.shape[1], eps=self.eps, momentum=self.momentum, affine=self.affine)


@register
class LayerNorm(Block):
    """Layer normalisation over the last axis."""
    name: ClassVar[str] = "layernorm"
    family: ClassVar[str] = "core"
    inputs: ClassVar = {"x": In("tensor", doc="[..., C]")}
    eps: Eps = 1e-5
    affine: bool = True

    def _features(self, x: PortType) -> int:
        expect_rank(x, (2, 3, 4, 5), "x")
        expect_float(x, "x")
        return expect_static(x.shape[-1], "x", "the last dim of a layernorm input")

    def infer(self, x: PortType) -> PortType:
        self._features(x)
        return x

    def param_count(self, x: PortType) -> int:
        return 2 * self._features(x) if self.affine else 0

    def build(self, x: PortType) -> nn.Module:
        return nn.LayerNorm(x.shape[-1], eps=self.eps, elementwise_affine=self.affine)

"""Shape blocks: flatten and identity."""

from __future__ import annotations

from typing import ClassVar

from torch import nn

from composer.block import Block, In
from composer.dims import prod
from composer.params import PosInt
from composer.registry import register
from composer.types import InferError, PortType


@register
class Flatten(Block):
    """Flatten every axis from `start_dim` on into one: [B, C, H, W] to [B, C*H*W]."""
    name: ClassVar[str] = "flatten"
    family: ClassVar[str] = "core"
    inputs: ClassVar = {"x": In("tensor")}
    start_dim: PosInt = 1

    def infer(self, x: PortType) -> PortType:
        if x.shape is None or len(x.shape) <= self.start_dim:
            raise InferError(f"flatten from axis {self.start_dim} needs a tensor of rank > {self.start_dim}",
                             port="x", code="E302", expected=f"rank > {self.start_dim}", found=str(x))
        shape = x.shape[: self.start_dim] + (prod(x.shape[self.start_dim:]),)
        return x.with_(kind="vector" if len(shape) == 2 else x.kind, shape=shape)

    def param_count(self, **inputs) -> int:
        return 0

    def build(self, x: PortType) -> nn.Module:
        return nn.Flatten(self.start_dim)


@register
class Identity(Block):
    """Pass the input through unchanged (a named tap point in a graph)."""
    name: ClassVar[str] = "identity"
    family: ClassVar[str] = "core"
    inputs: ClassVar = {"x": In("tensor")}

    def infer(self, x: PortType) -> PortType:
        return x

    def param_count(self, **inputs) -> int:
        return 0

    def build(self, x: PortType) -> nn.Module:
        return nn.Identity()

"""Shape blocks: flatten, identity and transpose (which also converts a time-major sequence
[B, T, C] to the channels-first signal [B, C, T] of 1-D convs and pools, and back)."""

from __future__ import annotations

from typing import Annotated, ClassVar

import torch
from pydantic import Field
from torch import nn

from composer.block import Block, In
from composer.dims import prod
from composer.params import PosInt
from composer.registry import register
from composer.types import InferError, PortType, is_a


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


class SwapAxes(nn.Module):
    """Swap two axes."""

    def __init__(self, a: int, b: int):
        super().__init__()
        self.a, self.b = a, b

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.transpose(self.a, self.b)

    def extra_repr(self) -> str:
        return f"dims=({self.a}, {self.b})"


@register
class Transpose(Block):
    """Swap two axes; on [B, T, C] <-> [B, C, T] it turns a sequence into a signal (for conv1d) and back.

    With `dims: [1, 2]` (the default) on a rank-3 input, a `sequence` (or `series`) [B, T, F] becomes a
    channels-first `signal` [B, F, T] and a `signal` [B, C, T] becomes a `sequence` [B, T, C]. Any other
    swap keeps the kind and permutes the shape, except that moving the channel axis of a feature map
    (or image) leaves a plain `tensor`.
    """
    name: ClassVar[str] = "transpose"
    family: ClassVar[str] = "core"
    inputs: ClassVar = {"x": In("tensor", doc="[B, T, C] or [B, C, T] (any rank)")}
    example: ClassVar = {"params": {}, "inputs": {"x": PortType("series", (2, 5, 8))}}
    dims: Annotated[list[int], Field(min_length=2, max_length=2)] = [1, 2]

    def _axes(self, x: PortType) -> tuple[int, int]:
        rank = x.rank or 0
        if rank < 2:
            raise InferError("transpose needs a tensor of rank 2 or more", port="x", code="E302",
                             expected="rank >= 2", found=str(x))
        for d in self.dims:
            if not -rank <= d < rank:
                raise InferError(f"axis {d} is out of range for a rank-{rank} input", param="dims",
                                 expected=f"axes in [{-rank}, {rank - 1}]", found=str(self.dims))
        a, b = sorted(d % rank for d in self.dims)
        if a == b:
            raise InferError("transpose needs two different axes", param="dims", expected="two different axes",
                             found=str(self.dims))
        return a, b

    def infer(self, x: PortType) -> PortType:
        a, b = self._axes(x)
        shape = list(x.shape)
        shape[a], shape[b] = shape[b], shape[a]
        kind = x.kind
        if x.rank == 3 and (a, b) == (1, 2) and (is_a(kind, "sequence") or kind == "signal"):
            kind = "signal" if is_a(kind, "sequence") else "sequence"
        elif is_a(kind, "feature_map") and 1 in (a, b):
            kind = "tensor"
        return x.with_(kind=kind, shape=shape)

    def param_count(self, **inputs) -> int:
        return 0

    def build(self, x: PortType) -> nn.Module:
        return SwapAxes(*self._axes(x))

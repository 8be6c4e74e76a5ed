"""Joins: add (element-wise sum, shapes must match) and concat (along one axis)."""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import nn

from composer.block import Block, In
from composer.registry import register
from composer.types import InferError, PortType, unify_dtypes, unify_shapes


def _named(xs: list[PortType]) -> list[tuple[str, PortType]]:
    return [(f"xs[{i}]", t) for i, t in enumerate(xs)]


class Sum(nn.Module):
    """Element-wise sum of a list of tensors."""

    def forward(self, xs: list[torch.Tensor]) -> torch.Tensor:
        out = xs[0]
        for x in xs[1:]:
            out = out + x
        return out


class Concat(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.dim = dim

    def forward(self, xs: list[torch.Tensor]) -> torch.Tensor:
        return torch.cat(xs, dim=self.dim)


@register
class Add(Block):
    """Element-wise sum of two or more inputs of identical shape and dtype (residuals)."""
    name: ClassVar[str] = "add"
    family: ClassVar[str] = "core"
    inputs: ClassVar = {"xs": In("tensor", variadic=True, doc="two or more tensors of one shape")}

    def infer(self, xs: list[PortType]) -> PortType:
        if len(xs) < 2:
            raise InferError("add needs at least two inputs", port="xs", expected="2 or more", found=str(len(xs)))
        named = _named(xs)
        unify_shapes(named)
        unify_dtypes(named)
        return xs[0]

    def param_count(self, **inputs) -> int:
        return 0

    def build(self, xs: list[PortType]) -> nn.Module:
        return Sum()


@register
class ConcatBlock(Block):
    """Concatenate two or more inputs along `dim` (channels by default)."""
    name: ClassVar[str] = "concat"
    family: ClassVar[str] = "core"
    inputs: ClassVar = {"xs": In("tensor", variadic=True, doc="tensors equal except along `dim`")}
    dim: int = 1

    def infer(self, xs: list[PortType]) -> PortType:
        if len(xs) < 2:
            raise InferError("concat needs at least two inputs", port="xs", expected="2 or more", found=str(len(xs)))
        rank = xs[0].rank or 0
        if not -rank <= self.dim < rank:
            raise InferError(f"concat axis {self.dim} is out of range for rank-{rank} inputs", param="dim",
                             expected=f"an axis in [{-rank}, {rank - 1}]", found=str(self.dim))
        named = _named(xs)
        shape = list(unify_shapes(named, skip_axis=self.dim))
        dtype = unify_dtypes(named)
        total = xs[0].shape[self.dim]
        for t in xs[1:]:
            total = total + t.shape[self.dim]
        shape[self.dim] = total
        return xs[0].with_(shape=tuple(shape), dtype=dtype)

    def param_count(self, **inputs) -> int:
        return 0

    def build(self, xs: list[PortType]) -> nn.Module:
        return Concat(self.dim)

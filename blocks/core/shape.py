"""Shape blocks: flatten, reshape, identity and transpose (which also converts a time-major sequence
[B, T, C] to the channels-first signal [B, C, T] of 1-D convs and pools, and back)."""

from __future__ import annotations

from typing import Annotated, ClassVar, Optional

import torch
from pydantic import Field
from torch import nn

from composer.block import Block, In
from composer.dims import DimLike, floordiv, format_dim, prod, shape_str
from composer.errors import did_you_mean
from composer.params import PosInt
from composer.registry import register
from composer.types import KINDS, InferError, PortType, is_a


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


class Reshape(nn.Module):
    """Reshape every sample to `shape`, keeping the batch axis."""

    def __init__(self, shape: tuple[int, ...]):
        super().__init__()
        self.shape = tuple(shape)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.reshape(x.shape[0], *self.shape)                 # (B, *shape)

    def extra_repr(self) -> str:
        return f"shape=(B, {', '.join(str(d) for d in self.shape)})"


_DEFAULT_KINDS = {2: "vector", 4: "feature_map"}


@register
class ReshapeBlock(Block):
    """Reshape each sample (the batch axis kept): [B, 4096] to [B, 256, 4, 4] with `shape: [256, 4, 4]`.

    `shape` lists the non-batch dims; one of them may be -1, inferred from the rest (a symbolic size
    too, when the others divide it). The sizes must hold as many elements as the input's: checked
    before anything is built. The output kind is `kind` when given (`latent`, `feature_map`, ...),
    else `feature_map` for rank 4, `vector` for rank 2 and `tensor` otherwise.
    """
    name: ClassVar[str] = "reshape"
    family: ClassVar[str] = "core"
    inputs: ClassVar = {"x": In("tensor", doc="[B, ...]")}
    example: ClassVar = {"params": {"shape": [2, -1, 4]}, "inputs": {"x": PortType("vector", (2, 32))}}
    shape: Annotated[list[int], Field(min_length=1)]
    kind: Optional[str] = None

    def _shape(self, x: PortType) -> tuple[DimLike, ...]:
        if x.shape is None or len(x.shape) < 1:
            raise InferError("reshape needs a tensor with a batch axis", port="x", code="E302",
                             expected="rank >= 1", found=str(x))
        if any(d == 0 or d < -1 for d in self.shape) or self.shape.count(-1) > 1:
            raise InferError("reshape sizes must be positive, with at most one -1", param="shape",
                             expected="positive sizes and at most one -1", found=str(self.shape))
        total = prod(x.shape[1:])                                  # elements per sample
        known = prod(d for d in self.shape if d != -1)
        if -1 in self.shape:
            rest = floordiv(total, known)
            if rest * known != total or (isinstance(rest, int) and rest < 1):
                raise InferError(f"the other sizes ({known} elements) do not divide the input's {format_dim(total)}",
                                 param="shape", expected=f"sizes whose product divides {format_dim(total)}",
                                 found=str(self.shape))
            return tuple(rest if d == -1 else d for d in self.shape)
        if known != total:
            why = "" if isinstance(total, int) else " at every size (use -1 for the size-dependent dim)"
            raise InferError(f"reshape to {shape_str(self.shape)} needs {known} elements per sample, "
                             f"the input {shape_str(x.shape)} has {format_dim(total)}{why}", param="shape",
                             expected=f"sizes with product {format_dim(total)}", found=str(self.shape))
        return tuple(self.shape)

    def infer(self, x: PortType) -> PortType:
        shape = (x.shape[0] if x.shape else None, *self._shape(x))
        kind = self.kind or _DEFAULT_KINDS.get(len(shape), "tensor")
        if kind not in KINDS or not is_a(kind, "tensor"):
            tensor_kinds = [k for k in KINDS if is_a(k, "tensor")]
            raise InferError(f"`{kind}` is not a tensor kind", param="kind", expected=", ".join(tensor_kinds),
                             found=kind, hint=did_you_mean(kind, tensor_kinds))
        return x.with_(kind=kind, shape=shape)

    def param_count(self, **inputs) -> int:
        return 0

    def build(self, x: PortType) -> nn.Module:
        self._shape(x)
        return Reshape(tuple(self.shape))                          # -1 stays: the size may be symbolic


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

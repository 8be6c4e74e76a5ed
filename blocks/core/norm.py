"""Normalisation: batchnorm and group_norm (over channels, axis 1), layernorm and rms_norm (over the last
axis), and the spectral normalisation of a layer's weight shared by conv2d, conv_transpose2d and dense."""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import nn

from composer.block import Block, In
from composer.params import Eps, PosInt, Prob
from composer.registry import register
from composer.types import InferError, PortType, expect_float, expect_rank, expect_static


def with_spectral_norm(module: nn.Module, on: bool = True) -> nn.Module:
    """`module` with its `weight` spectrally normalised (divided by its largest singular value,
    estimated by one power iteration per training-mode forward), or unchanged when `on` is false.

    Uses torch's parametrization (`torch.nn.utils.parametrizations.spectral_norm`; for a transposed
    conv it takes dim 1, the output channels). The state-dict keys change: `weight` becomes
    `parametrizations.weight.original` (the unnormalised weight) beside the buffers
    `parametrizations.weight.0._u` and `._v` (the power-iteration vectors). In eval mode the stored
    vectors are used as they are, so eval outputs, and the ONNX export, are deterministic.
    """
    if not on:
        return module
    return nn.utils.parametrizations.spectral_norm(module)


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
class GroupNorm(Block):
    """Group normalisation over [B, C, ...]: the channels in `groups` groups, each normalised over its
    channels and every spatial position (per sample, the same in training and eval). Channels are inferred."""
    name: ClassVar[str] = "group_norm"
    family: ClassVar[str] = "core"
    inputs: ClassVar = {"x": In("tensor", doc="[B, C, ...]")}
    example: ClassVar = {"params": {"groups": 4}, "inputs": {"x": PortType("feature_map", (2, 8, 6, 6))}}
    groups: PosInt
    eps: Eps = 1e-5
    affine: bool = True

    def _channels(self, x: PortType) -> int:
        expect_rank(x, (2, 3, 4, 5), "x", " [B, C, ...]")
        expect_float(x, "x")
        c = expect_static(x.shape[1], "x", "the channel count (axis 1) of a group_norm input")
        if c % self.groups:
            raise InferError(f"groups={self.groups} must divide the input's {c} channels", param="groups",
                             expected=f"a divisor of {c}", found=str(self.groups))
        return c

    def infer(self, x: PortType) -> PortType:
        self._channels(x)
        return x

    def param_count(self, x: PortType) -> int:
        return 2 * self._channels(x) if self.affine else 0

    def build(self, x: PortType) -> nn.Module:
        return nn.GroupNorm(self.groups, self._channels(x), eps=self.eps, affine=self.affine)


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


class RMSNorm(nn.Module):
    """Root-mean-square normalisation over the last axis: x / sqrt(mean(x²) + eps) · weight.

    T5LayerNorm's semantics (Hugging Face T5, also T5 v1.1, mT5, Flan-T5): no mean subtraction and
    no bias; the mean square is computed in float32 whatever the input dtype, and the result is
    cast to the weight's dtype when that is float16 or bfloat16, before the weight is applied.
    Written here because `nn.RMSNorm`, equal to it in float32, rounds differently in float16 and
    bfloat16 (by up to 3e-2 in bfloat16 on unit-scale inputs), so half-precision T5 would not match."""

    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        variance = x.to(torch.float32).pow(2).mean(-1, keepdim=True)           # (..., 1)
        x = x * torch.rsqrt(variance + self.eps)
        if self.weight.dtype in (torch.float16, torch.bfloat16):
            x = x.to(self.weight.dtype)
        return self.weight * x

    def extra_repr(self) -> str:
        return f"{self.weight.shape[0]}, eps={self.eps}"


@register
class RMSNormBlock(Block):
    """RMS normalisation over the last axis (T5LayerNorm: no mean subtraction, no bias, float32 statistics)."""
    name: ClassVar[str] = "rms_norm"
    family: ClassVar[str] = "core"
    inputs: ClassVar = {"x": In("tensor", doc="[..., C]")}
    example: ClassVar = {"params": {"eps": 1e-6}, "inputs": {"x": PortType("sequence", (2, 5, 8))}}
    eps: Eps = 1e-6

    def _features(self, x: PortType) -> int:
        expect_rank(x, (2, 3, 4, 5), "x")
        expect_float(x, "x")
        return expect_static(x.shape[-1], "x", "the last dim of an rms_norm input")

    def infer(self, x: PortType) -> PortType:
        self._features(x)
        return x

    def param_count(self, x: PortType) -> int:
        return self._features(x)

    def build(self, x: PortType) -> nn.Module:
        return RMSNorm(self._features(x), eps=self.eps)

"""Pooling: maxpool, avgpool (windows) and global_avg_pool ([B, C, H, W] to [B, C]); their 1-D
versions on a signal [B, C, T], with masked global pools (padded steps never count)."""

from __future__ import annotations

from typing import ClassVar, Optional

import torch
import torch.nn.functional as F
from torch import nn

from composer.block import Block, In
from composer.dims import conv_out, is_static
from composer.params import NonNegInt, Pad2, PosInt, Size2, pair
from composer.registry import register
from composer.types import InferError, PortType, expect_float, expect_rank, unify_shapes


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


# ---- 1-D: windows and global pools over a signal [B, C, T] ---------------------------------------


class _Pool1d(Block):
    family: ClassVar[str] = "core"
    inputs: ClassVar = {"x": In("signal", doc="[B, C, T], channels first")}
    kernel: PosInt = 2
    stride: Optional[PosInt] = None  # defaults to the kernel size
    padding: NonNegInt = 0
    ceil_mode: bool = False

    def _geometry(self) -> tuple[int, int, int]:
        k = self.kernel
        s = self.stride if self.stride is not None else k
        if self.padding > k // 2:
            raise InferError("pooling padding must be at most half the kernel", param="padding",
                             expected=f"at most {k // 2}", found=str(self.padding))
        return k, s, self.padding

    def infer(self, x: PortType) -> PortType:
        expect_rank(x, 3, "x", " [B, C, T]")
        expect_float(x, "x")
        k, s, p = self._geometry()
        n = x.shape[2]
        if self.ceil_mode and not is_static(n) and s > k - p:
            # torch drops a last window that starts in the right padding: whether it does depends on T mod s
            raise InferError("with ceil_mode, this window's output length depends on the length T modulo the "
                             "stride, which a symbolic shape cannot say", param="ceil_mode",
                             expected=f"stride <= kernel - padding ({k - p}), or a fixed T", found=f"stride {s}",
                             hint="set ceil_mode: false, or pad less")
        t = conv_out(n, k, s, p, ceil_mode=self.ceil_mode)
        if isinstance(t, int) and t < 1:
            raise InferError("the pooling window is longer than the input", param="kernel",
                             expected="an output of at least 1 step", found=str(t))
        return x.with_(shape=(x.shape[0], x.shape[1], t))

    def param_count(self, **inputs) -> int:
        return 0


class MaxPool1dAs2d(nn.MaxPool1d):
    """nn.MaxPool1d computed as a 2-D pool over (B, C, 1, T): the same values and attributes.

    Why not nn.MaxPool1d itself: under torch.export (torch 2.14) F.max_pool1d specializes the length
    to the traced one, so an exported model would accept that length only; max_pool2d keeps it dynamic.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.max_pool2d(x.unsqueeze(2), (1, self.kernel_size), (1, self.stride), (0, self.padding),  # (B, C, 1, T')
                         (1, self.dilation), ceil_mode=self.ceil_mode)
        return y.squeeze(2)                                                                       # (B, C, T')


@register
class MaxPool1d(_Pool1d):
    """1-D max pooling over a signal [B, C, T]."""
    name: ClassVar[str] = "maxpool1d"

    def build(self, x: PortType) -> nn.Module:
        k, s, p = self._geometry()
        return MaxPool1dAs2d(k, s, p, ceil_mode=self.ceil_mode)


@register
class AvgPool1d(_Pool1d):
    """1-D average pooling over a signal [B, C, T]."""
    name: ClassVar[str] = "avgpool1d"
    count_include_pad: bool = True

    def build(self, x: PortType) -> nn.Module:
        k, s, p = self._geometry()
        return nn.AvgPool1d(k, s, p, ceil_mode=self.ceil_mode, count_include_pad=self.count_include_pad)


def masked_mean(x: torch.Tensor, keep: Optional[torch.Tensor], dim: int) -> torch.Tensor:
    """Mean of x over `dim` counting only where `keep` (a boolean broadcastable to x, size 1 on the
    other axes) is true; where nothing is kept, 0. No mask: the plain mean."""
    if keep is None:
        return x.mean(dim=dim)
    w = keep.to(x.dtype)
    return (x * w).sum(dim=dim) / w.sum(dim=dim).clamp_min(1.0)


def masked_max(x: torch.Tensor, keep: Optional[torch.Tensor], dim: int) -> torch.Tensor:
    """Max of x over `dim` among the kept positions (as `masked_mean`); where nothing is kept, 0."""
    if keep is None:
        return x.amax(dim=dim)
    low = torch.finfo(x.dtype).min
    return x.masked_fill(~keep, low).amax(dim=dim) * keep.any(dim=dim).to(x.dtype)


class GlobalPool1d(nn.Module):
    """(x (B, C, T)[, mask (B, T)]) -> (B, C), mean or max over T. Padded steps never count; an
    all-padded row pools to 0."""

    def __init__(self, mode: str):
        super().__init__()
        self.mode = mode

    def forward(self, x: torch.Tensor, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        keep = None if mask is None else (mask != 0).unsqueeze(1)           # (B, 1, T)
        return (masked_mean if self.mode == "mean" else masked_max)(x, keep, dim=2)


class _GlobalPool1dBlock(Block):
    family: ClassVar[str] = "core"
    inputs: ClassVar = {"x": In("signal", doc="[B, C, T], channels first"),
                        "mask": In("mask", doc="[B, T] 1 for real steps", optional=True)}
    mode: ClassVar[str] = "mean"

    def infer(self, x: PortType, mask: Optional[PortType] = None) -> PortType:
        expect_rank(x, 3, "x", " [B, C, T]")
        expect_float(x, "x")
        if mask is not None:
            expect_rank(mask, 2, "mask", " [B, T]")
            unify_shapes([("x", x.with_(shape=(x.shape[0], x.shape[2]))), ("mask", mask)])
        return PortType("vector", (x.shape[0], x.shape[1]), x.dtype)

    def param_count(self, **inputs) -> int:
        return 0

    def build(self, x: PortType, mask: Optional[PortType] = None) -> nn.Module:
        return GlobalPool1d(self.mode)


_EXAMPLE_1D = {"params": {}, "inputs": {"x": PortType("signal", (2, 8, 5)), "mask": PortType("mask", (2, 5), "int64")}}


@register
class GlobalAvgPool1d(_GlobalPool1dBlock):
    """Average over time: a signal [B, C, T] to a [B, C] vector; an optional mask [B, T] leaves out padding."""
    name: ClassVar[str] = "global_avg_pool1d"
    example: ClassVar = _EXAMPLE_1D


@register
class GlobalMaxPool1d(_GlobalPool1dBlock):
    """Maximum over time: a signal [B, C, T] to a [B, C] vector; an optional mask [B, T] leaves out padding."""
    name: ClassVar[str] = "global_max_pool1d"
    example: ClassVar = _EXAMPLE_1D
    mode: ClassVar[str] = "max"

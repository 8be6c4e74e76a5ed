"""Sequence pooling ([B, T, D] to [B, D]: cls, masked mean, masked max, attention) and l2_normalize."""

from __future__ import annotations

from typing import ClassVar, Literal, Optional

import torch
import torch.nn.functional as F
from torch import nn

from composer.block import Block, In
from composer.params import Eps
from composer.registry import register
from composer.types import InferError, PortType, expect_float, expect_rank, expect_static, unify_shapes

from ..core.pool import masked_max, masked_mean
from ..sequence.attention import masked_softmax
from .common import init_like_bert


class SequencePool(nn.Module):
    """(x (B, T, D)[, mask (B, T)]) -> (B, D). Padded steps never count; an all-padded row pools to 0."""

    def __init__(self, mode: str, dim: int):
        super().__init__()
        self.mode = mode
        self.score = nn.Linear(dim, 1) if mode == "attention" else None

    def forward(self, x: torch.Tensor, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        if self.mode == "cls":
            return x[:, 0]
        keep = None if mask is None else (mask != 0).unsqueeze(-1)              # (B, T, 1)
        if self.mode == "mean":
            return masked_mean(x, keep, dim=1)
        if self.mode == "max":
            return masked_max(x, keep, dim=1)
        w = masked_softmax(self.score(x), keep, dim=1)                          # (B, T, 1); an all-padded row: 0
        return (w * x).sum(dim=1)


@register
class Pooling(Block):
    """Pool a sequence to a vector: first token (cls), masked mean or max, or learned attention weights."""
    name: ClassVar[str] = "pooling"
    family: ClassVar[str] = "text"
    inputs: ClassVar = {"x": In("sequence", doc="[B, T, D]"),
                        "mask": In("mask", doc="[B, T] 1 for real steps (cls ignores it)", optional=True)}
    example: ClassVar = {"params": {"mode": "attention"},
                         "inputs": {"x": PortType("sequence", (2, 5, 8)), "mask": PortType("mask", (2, 5), "int64")}}
    mode: Literal["cls", "mean", "max", "attention"] = "mean"

    def _dim(self, x: PortType, mask: Optional[PortType]) -> int:
        expect_rank(x, 3, "x", " [B, T, D]")
        expect_float(x, "x")
        if mask is not None:
            expect_rank(mask, 2, "mask", " [B, T]")
            unify_shapes([("x", x.with_(shape=x.shape[:2])), ("mask", mask)])
        d = x.shape[2]
        return expect_static(d, "x", "the feature size of attention pooling") if self.mode == "attention" else d

    def infer(self, x: PortType, mask: Optional[PortType] = None) -> PortType:
        d = self._dim(x, mask)
        return PortType("vector", (x.shape[0], d), x.dtype)

    def param_count(self, x: PortType, mask: Optional[PortType] = None) -> int:
        d = self._dim(x, mask)
        return d + 1 if self.mode == "attention" else 0

    def build(self, x: PortType, mask: Optional[PortType] = None) -> nn.Module:
        d = self._dim(x, mask)
        return init_like_bert(SequencePool(self.mode, d if self.mode == "attention" else 0))


class L2Normalize(nn.Module):
    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.dim, self.eps = dim, eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(x, p=2.0, dim=self.dim, eps=self.eps)


@register
class L2NormalizeBlock(Block):
    """Scale each vector to unit L2 norm along one axis (sentence embeddings, cosine similarity)."""
    name: ClassVar[str] = "l2_normalize"
    family: ClassVar[str] = "text"
    inputs: ClassVar = {"x": In("vector", "sequence", doc="[B, D] (or [B, T, D])")}
    dim: int = -1
    eps: Eps = 1e-12

    def infer(self, x: PortType) -> PortType:
        expect_float(x, "x")
        rank = x.rank or 0
        if not -rank <= self.dim < rank:
            raise InferError(f"axis {self.dim} is out of range for a rank-{rank} input", param="dim",
                             expected=f"an axis in [{-rank}, {rank - 1}]", found=str(self.dim))
        return x

    def param_count(self, **inputs) -> int:
        return 0

    def build(self, x: PortType) -> nn.Module:
        return L2Normalize(self.dim, self.eps)

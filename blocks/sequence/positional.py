"""Positional encodings added to a sequence: `positional_encoding`, sinusoidal or learned.

- `sinusoidal` (Vaswani et al. 2017): PE[t, 2i] = sin(t / 10000^(2i/D)), PE[t, 2i+1] = cos(t / 10000^(2i/D)),
  computed at run time for the T of the input: no table, no maximum length, and an ONNX export
  with a dynamic T (a Range, the products, Sin and Cos). D must be even. No parameters.
- `learned`: a table of `max_length` rows, `position.weight` [max_length, D] (an `nn.Embedding`,
  initialised N(0, 0.02²) as BERT and GPT-2 do); a checkpoint's position table loads under that
  name. A static T above `max_length` is a spec error; a dynamic one fails at run time.

`scale_input` multiplies x by √D before the encoding is added (Vaswani et al. scale the embeddings
so); `dropout` applies after the sum, in training mode only. `blocks/text/embedding.py` keeps its
own fixed table, which position ids (RoBERTa's offsets) index; this block adds positions 0..T-1.
"""

from __future__ import annotations

import math
from typing import ClassVar, Literal, Optional

import torch
from torch import nn

from composer.block import Block, In
from composer.params import PosInt, Prob
from composer.registry import register
from composer.types import InferError, PortType, expect_float, expect_rank, expect_static


def sinusoidal_encoding(length: int, dim: int, device: Optional[torch.device] = None,
                        dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """The (length, dim) sinusoidal table: sin on even dims, cos on odd ones (an odd D ends with a sin);
    `length` may be a traced (symbolic) size. Also the fixed table of `embedding`'s sinusoidal positions."""
    pos = torch.arange(length, device=device, dtype=dtype)                              # (T,)
    freq = torch.exp(torch.arange(0, dim, 2, device=device, dtype=dtype)
                     * (-math.log(10000.0) / dim))                                      # (ceil(D/2),) = 10000^(-2i/D)
    angles = pos[:, None] * freq                                                        # (T, ceil(D/2))
    table = torch.stack((angles.sin(), angles.cos()), dim=-1).flatten(1)                # (T, ceil(D/2), 2) -> (T, 2·ceil(D/2))
    return table if dim % 2 == 0 else table[:, :dim]


class PositionalEncoding(nn.Module):
    """x (B, T, D) -> (x [· √D] + PE[:T]) then dropout."""

    def __init__(self, mode: str, dim: int, max_length: Optional[int], scale_input: bool, dropout: float):
        super().__init__()
        self.mode, self.dim = mode, dim
        self.scale = math.sqrt(dim) if scale_input else None
        if mode == "learned":
            self.position = nn.Embedding(max_length, dim)
            nn.init.normal_(self.position.weight, std=0.02)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = x.shape[1]
        if self.mode == "learned":
            pe = self.position.weight[:t]                                               # (T, D)
        else:
            pe = sinusoidal_encoding(t, self.dim, x.device)                             # (T, D)
        if self.scale is not None:
            x = x * self.scale
        return self.dropout(x + pe.to(x.dtype))                                         # (B, T, D) + (T, D)

    def extra_repr(self) -> str:
        return f"mode={self.mode}, dim={self.dim}, scale={self.scale}"


@register
class PositionalEncodingBlock(Block):
    """Add positional encodings to a sequence: sinusoidal (any length, computed at run time) or a learned table."""
    name: ClassVar[str] = "positional_encoding"
    family: ClassVar[str] = "sequence"
    inputs: ClassVar = {"x": In("sequence", doc="[B, T, D]")}
    mode: Literal["sinusoidal", "learned"] = "sinusoidal"
    max_length: Optional[PosInt] = None   # learned: rows of the table (the longest T)
    scale_input: bool = False             # multiply x by sqrt(D) first (Vaswani et al.)
    dropout: Prob = 0.0

    def _dim(self, x: PortType) -> int:
        expect_rank(x, 3, "x", " [B, T, D]")
        expect_float(x, "x")
        d = expect_static(x.shape[2], "x", "the feature size (last dim) of a positional encoding's input")
        if self.mode == "sinusoidal":
            if d % 2:
                raise InferError(f"sinusoidal positional encoding needs an even feature size, not {d}", port="x",
                                 code="E302", expected="an even D (sin and cos pairs)", found=f"D = {d}",
                                 hint="project to an even size with a `dense` block, or use mode: learned")
            if self.max_length is not None:
                raise InferError("`max_length` does not apply to sinusoidal encodings (computed for any length)",
                                 param="max_length", code="E302", expected="mode learned", found="mode sinusoidal",
                                 hint="remove `max_length`, or set `mode: learned`")
            return d
        if self.max_length is None:
            raise InferError("a learned positional encoding needs `max_length` (the rows of its table)",
                             param="mode", code="E302", expected="max_length (the longest T)",
                             found="max_length unset", hint="set `max_length`, or use mode: sinusoidal")
        t = x.shape[1]
        if isinstance(t, int) and t > self.max_length:
            raise InferError(f"sequences of {t} steps are longer than the {self.max_length} positions the table holds",
                             param="max_length", code="E302", expected=f"at most {self.max_length} steps",
                             found=f"T = {t}", hint="raise `max_length`, or use mode: sinusoidal")
        return d

    def infer(self, x: PortType) -> PortType:
        self._dim(x)
        return x

    def param_count(self, x: PortType) -> int:
        d = self._dim(x)
        return (self.max_length or 0) * d if self.mode == "learned" else 0

    def build(self, x: PortType) -> nn.Module:
        d = self._dim(x)
        return PositionalEncoding(self.mode, d, self.max_length, self.scale_input, self.dropout)

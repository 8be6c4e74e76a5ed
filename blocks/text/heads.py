"""Text heads: sequence and token classifiers, a language-model head, BERT's MLM head (decoder tied to an embedding's
word table through a port) and ELECTRA's replaced-token discriminator.

Parameter names: sequence_classifier `dense`, `out_proj` (or `out` without a hidden layer);
token_classifier `out`; mlm_head `transform.dense`, `transform.norm`, `bias`;
electra_discriminator_head `dense`, `dense_prediction`; lm_head `weight` (untied only), `bias`.
"""

from __future__ import annotations

from typing import ClassVar, Optional

import torch
import torch.nn.functional as F
from torch import nn

from blocks.core.activations import make_activation
from composer.block import Block, In
from composer.params import Activation, Eps, PosInt, Prob
from composer.registry import register
from composer.types import InferError, PortType, expect_float, expect_rank, expect_static

from .common import init_like_bert


def _features(x: PortType, ranks, what: str) -> int:
    expect_rank(x, ranks, "x", what)
    expect_float(x, "x")
    return expect_static(x.shape[-1], "x", "the feature size (last dim) of a head's input")


# ---- sequence_classifier ------------------------------------------------------------------


class SequenceClassifierHead(nn.Module):
    """(B, D) or (B, T, D) -> (B, C): [dropout, dense, act,] dropout, out (RoBERTa's head with a hidden layer)."""

    def __init__(self, dim: int, num_classes: int, hidden: Optional[int], activation: str, dropout: float,
                 first_token: bool):
        super().__init__()
        self.first_token = first_token
        self.hidden = hidden is not None
        self.dropout = nn.Dropout(dropout)
        if hidden is not None:
            self.dense = nn.Linear(dim, hidden)
            self.activation = make_activation(activation)
            self.out_proj = nn.Linear(hidden, num_classes)
        else:
            self.out = nn.Linear(dim, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.first_token:
            x = x[:, 0]                                                     # (B, D): the [CLS] / <s> step
        if self.hidden:
            x = self.activation(self.dense(self.dropout(x)))
            return self.out_proj(self.dropout(x))
        return self.out(self.dropout(x))


@register
class SequenceClassifier(Block):
    """Class logits for a whole sequence, from a pooled vector or a sequence's first step (RoBERTa/ELECTRA head)."""
    name: ClassVar[str] = "sequence_classifier"
    family: ClassVar[str] = "text"
    inputs: ClassVar = {"x": In("vector", "sequence", doc="[B, D], or [B, T, D] (position 0 is used)")}
    example: ClassVar = {"params": {"num_classes": 3, "hidden": 6},
                         "inputs": {"x": PortType("sequence", (2, 5, 8))}}
    num_classes: PosInt
    hidden: Optional[PosInt] = None       # a dense + activation before the output layer (RoBERTa: hidden size)
    activation: Activation = "tanh"       # RoBERTa tanh, ELECTRA gelu
    dropout: Prob = 0.0

    def infer(self, x: PortType) -> PortType:
        _features(x, (2, 3), " [B, D] or [B, T, D]")
        return PortType("logits", (x.shape[0], self.num_classes), x.dtype)

    def param_count(self, x: PortType) -> int:
        d = _features(x, (2, 3), " [B, D] or [B, T, D]")
        if self.hidden is None:
            return (d + 1) * self.num_classes
        return (d + 1) * self.hidden + (self.hidden + 1) * self.num_classes

    def build(self, x: PortType) -> nn.Module:
        d = _features(x, (2, 3), " [B, D] or [B, T, D]")
        return init_like_bert(SequenceClassifierHead(d, self.num_classes, self.hidden, self.activation,
                                                     self.dropout, first_token=x.rank == 3))


# ---- token_classifier ---------------------------------------------------------------------


class TokenClassifierHead(nn.Module):
    """(B, T, D) -> (B, T, C): dropout, then one Linear per step."""

    def __init__(self, dim: int, num_classes: int, dropout: float):
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.out = nn.Linear(dim, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.dropout(x))


@register
class TokenClassifier(Block):
    """Per-token class logits [B, T, C] (tagging, NER)."""
    name: ClassVar[str] = "token_classifier"
    family: ClassVar[str] = "text"
    inputs: ClassVar = {"x": In("sequence", doc="[B, T, D]")}
    num_classes: PosInt
    dropout: Prob = 0.0

    def infer(self, x: PortType) -> PortType:
        _features(x, 3, " [B, T, D]")
        return PortType("logits", (x.shape[0], x.shape[1], self.num_classes), x.dtype)

    def param_count(self, x: PortType) -> int:
        return (_features(x, 3, " [B, T, D]") + 1) * self.num_classes

    def build(self, x: PortType) -> nn.Module:
        return init_like_bert(TokenClassifierHead(_features(x, 3, " [B, T, D]"), self.num_classes, self.dropout))


# ---- mlm_head -----------------------------------------------------------------------------


class Transform(nn.Module):
    """BERT's prediction-head transform: dense, activation, LayerNorm."""

    def __init__(self, dim: int, out: int, activation: str, eps: float):
        super().__init__()
        self.dense = nn.Linear(dim, out)
        self.activation = make_activation(activation)
        self.norm = nn.LayerNorm(out, eps=eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.activation(self.dense(x)))


class MLMHead(nn.Module):
    """(x (B, T, D), table (V, E)) -> (B, T, V): transform D -> E, then scores against the tied table."""

    def __init__(self, dim: int, vocab_size: int, table_dim: int, activation: str, eps: float):
        super().__init__()
        self.transform = Transform(dim, table_dim, activation, eps)
        self.bias = nn.Parameter(torch.zeros(vocab_size))

    def forward(self, x: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
        return tied_logits(self.transform(x), table, self.bias)            # (B, T, E) -> (B, T, V)


@register
class MaskedLMHead(Block):
    """BERT's masked-LM head: dense, activation, LayerNorm, then logits over the vocabulary with the
    decoder weight tied to an embedding's `table` input (only the bias is the head's own)."""
    name: ClassVar[str] = "mlm_head"
    family: ClassVar[str] = "text"
    inputs: ClassVar = {"x": In("sequence", doc="[B, T, D]"),
                        "table": In("weight", doc="[V, E] the word table (embedding.table); E may differ from D")}
    example: ClassVar = {"params": {}, "inputs": {"x": PortType("sequence", (2, 5, 8)),
                                                  "table": PortType("weight", (11, 6))}}
    activation: Activation = "gelu"
    eps: Eps = 1e-12

    def _sizes(self, x: PortType, table: PortType) -> tuple[int, int, int]:
        d = _features(x, 3, " [B, T, D]")
        if table.rank != 2:
            raise InferError("port `table` needs a [V, E] matrix (an embedding's `table` output)", port="table",
                             code="E302", expected="rank 2 [V, E]", found=str(table))
        expect_float(table, "table")
        v = expect_static(table.shape[0], "table", "the vocabulary size of a tied table")
        e = expect_static(table.shape[1], "table", "the embedding size of a tied table")
        return d, v, e

    def infer(self, x: PortType, table: PortType) -> PortType:
        _, v, _ = self._sizes(x, table)
        return PortType("logits", (x.shape[0], x.shape[1], v), x.dtype)

    def param_count(self, x: PortType, table: PortType) -> int:
        d, v, e = self._sizes(x, table)
        return (d + 1) * e + 2 * e + v          # the table is the embedding's, not counted here

    def build(self, x: PortType, table: PortType) -> nn.Module:
        d, v, e = self._sizes(x, table)
        return init_like_bert(MLMHead(d, v, e, self.activation, self.eps))


# ---- lm_head ------------------------------------------------------------------------------


def tied_logits(h: torch.Tensor, table: torch.Tensor, bias: Optional[torch.Tensor]) -> torch.Tensor:
    """(B, T, E) against a (V, E) table -> (B, T, V).

    A 2-D linear exports as one Gemm(transB) that reads the shared table; a 3-D one makes the ONNX
    exporter fold a transposed second copy of the table into the file."""
    scores = F.linear(h.reshape(-1, h.shape[-1]), table, bias)          # (B*T, V)
    return scores.reshape(h.shape[0], h.shape[1], -1)                   # (B, T, V)


class LMHead(nn.Module):
    """(x (B, T, D)[, table (V, D)]) -> (B, T, V): scores of the next token against the tied table or
    the head's own `weight`, after an optional scale (T5 with tied embeddings: D^-0.5)."""

    def __init__(self, dim: int, vocab_size: int, tied: bool, bias: bool, scale: Optional[float]):
        super().__init__()
        self.scale = scale
        self.weight = None if tied else nn.Parameter(torch.empty(vocab_size, dim).normal_(0.0, 0.02))
        self.bias = nn.Parameter(torch.zeros(vocab_size)) if bias else None

    def forward(self, x: torch.Tensor, table: Optional[torch.Tensor] = None) -> torch.Tensor:
        if self.scale is not None:
            x = x * self.scale
        return tied_logits(x, self.weight if table is None else table, self.bias)

    def extra_repr(self) -> str:
        return "tied" if self.weight is None else ""


@register
class LanguageModelHead(Block):
    """Next-token logits [B, T, V]: the hidden states against the embedding's word table (`table`
    connected: GPT-2, T5 v1.0, tied) or a matrix of the head's own (`vocab_size`: T5 v1.1, untied)."""
    name: ClassVar[str] = "lm_head"
    family: ClassVar[str] = "text"
    inputs: ClassVar = {"x": In("sequence", doc="[B, T, D]"),
                        "table": In("weight", optional=True, doc="[V, D] the word table (embedding.table) to tie to")}
    example: ClassVar = {"params": {}, "inputs": {"x": PortType("sequence", (2, 5, 8)),
                                                  "table": PortType("weight", (11, 8))}}
    vocab_size: Optional[PosInt] = None   # untied: the rows of the head's own matrix
    bias: bool = False
    scale: Optional[float] = None         # multiplies x first (T5 tied: d_model ** -0.5)

    def _sizes(self, x: PortType, table: Optional[PortType]) -> tuple[int, int]:
        d = _features(x, 3, " [B, T, D]")
        if table is None:
            if self.vocab_size is None:
                raise InferError("an untied lm_head needs `vocab_size`", param="vocab_size", code="E302",
                                 expected="vocab_size, or a `table` input (embedding.table) to tie to",
                                 found="neither")
            return d, self.vocab_size
        if table.rank != 2:
            raise InferError("port `table` needs a [V, D] matrix (an embedding's `table` output)", port="table",
                             code="E302", expected="rank 2 [V, D]", found=str(table))
        expect_float(table, "table")
        v = expect_static(table.shape[0], "table", "the vocabulary size of a tied table")
        if table.shape[1] != d:
            raise InferError(f"the tied table is {table.shape[1]} wide, the hidden states {d}", port="table",
                             code="E302", expected=f"[V, {d}]", found=str(table))
        if self.vocab_size is not None and self.vocab_size != v:
            raise InferError(f"vocab_size {self.vocab_size} differs from the tied table's {v} rows",
                             param="vocab_size", code="E302", expected=str(v), found=str(self.vocab_size),
                             hint="leave `vocab_size` out when the head is tied")
        return d, v

    def infer(self, x: PortType, table: Optional[PortType] = None) -> PortType:
        _, v = self._sizes(x, table)
        return PortType("logits", (x.shape[0], x.shape[1], v), x.dtype)

    def param_count(self, x: PortType, table: Optional[PortType] = None) -> int:
        d, v = self._sizes(x, table)
        return (0 if table is not None else d * v) + (v if self.bias else 0)

    def build(self, x: PortType, table: Optional[PortType] = None) -> nn.Module:
        d, v = self._sizes(x, table)
        return LMHead(d, v, table is not None, self.bias, self.scale)


# ---- electra_discriminator_head -----------------------------------------------------------


class DiscriminatorHead(nn.Module):
    """(B, T, D) -> (B, T): dense, activation, dense_prediction D -> 1."""

    def __init__(self, dim: int, activation: str):
        super().__init__()
        self.dense = nn.Linear(dim, dim)
        self.activation = make_activation(activation)
        self.dense_prediction = nn.Linear(dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dense_prediction(self.activation(self.dense(x))).squeeze(-1)


@register
class ElectraDiscriminatorHead(Block):
    """ELECTRA's replaced-token detection head: one logit per token, [B, T]."""
    name: ClassVar[str] = "electra_discriminator_head"
    family: ClassVar[str] = "text"
    inputs: ClassVar = {"x": In("sequence", doc="[B, T, D]")}
    activation: Activation = "gelu"

    def infer(self, x: PortType) -> PortType:
        _features(x, 3, " [B, T, D]")
        return PortType("logits", (x.shape[0], x.shape[1]), x.dtype)

    def param_count(self, x: PortType) -> int:
        d = _features(x, 3, " [B, T, D]")
        return (d + 1) * d + d + 1

    def build(self, x: PortType) -> nn.Module:
        return init_like_bert(DiscriminatorHead(_features(x, 3, " [B, T, D]"), self.activation))

"""Attention over sequences: `attention` (additive, dot, scaled-dot or multi-head; self-attention or
driven by a query) and `attention_pool` (a learned query: [B, T, D] to a [B, D] vector).

Modes of `attention` (keys and values are the steps of `x` [B, T, D]; the context is a weighted sum
of those steps, so it has D features):

- `additive` (Bahdanau et al. 2015): score(q, k) = vᵀ tanh(W_q q + W_k k + b), with `hidden` units
  (default D). Parameters: `score.query_proj` (W_q [hidden, Dq], no bias), `score.key_proj`
  (W_k [hidden, D] and b), `score.v` (v [1, hidden], no bias).
- `dot` (Luong et al. 2015): score = q · k; `scaled_dot`: q · k / √D. Both need Dq == D unless
  `project_query: true`, which first maps the query through a learned W [D, Dq] (`query_proj`, no
  bias): Luong's `general` score qᵀ W k. No parameters otherwise.
- `multihead`: `blocks.core.attention.MultiHeadAttention` (the catalog's one multi-head attention,
  `F.scaled_dot_product_attention`) with `num_heads`, in `nn.MultiheadAttention`'s parameter names
  (`in_proj_weight`, `in_proj_bias`, `out_proj.*`), so its state dicts load unchanged. It outputs
  only `out` (the fused kernel does not return weights) and needs Dq == D.

Without `query` every step queries all steps (self-attention); a `vector` query [B, Dq] gives one
context [B, D] and weights [B, T]; a `sequence` query [B, Tq, Dq] gives [B, Tq, D] and [B, Tq, T].

Masking (`mask` [B, T], 1/True = a real step): the weights are a softmax over the real keys only,
padded keys get weight 0 exactly, and what sits in padded steps changes nothing. A row with no real
key at all gets weights 0 and a context of 0 (never NaN; `multihead` zeroes that row's output too).
In self-attention a padded step is also a padded query: its weights and output are 0.

`attention_pool` is the additive score with a learned query: score(k) = vᵀ tanh(W_k k + b), where v
plays the learned context vector u_w of Yang et al. (2016, hierarchical attention networks); a
query projection would only add a constant inside the tanh, which b already is. It is the same
module as `additive` attention (`AdditiveAttention`, without a query projection). `pooling`'s
`attention` mode (blocks/text/pooling.py) scores linearly (wᵀ k + b, no hidden layer): a
different function, which shares `masked_softmax` with this module.
"""

from __future__ import annotations

from typing import ClassVar, Literal, Optional

import torch
from torch import nn

from composer.block import Block, In
from composer.dims import format_dim, shape_str
from composer.params import PosInt
from composer.registry import register
from composer.types import InferError, PortType, expect_float, expect_rank, expect_static, register_kind

from ..core.attention import MultiHeadAttention

# attention weights: [B, T] or [B, Tq, T], each row summing to 1 over the keys (0 where nothing is real)
register_kind("attention", "probs")

MASK_DTYPES = ("bool", "int64", "int32", "uint8")
Mode = Literal["additive", "dot", "scaled_dot", "multihead"]
_MASK_DOC = "[B, T] 1/True = a real step, 0 = padding (bool or integer)"


def masked_softmax(scores: torch.Tensor, keep: Optional[torch.Tensor] = None, dim: int = -1) -> torch.Tensor:
    """Softmax of `scores` along `dim` over the positions where `keep` (bool, broadcastable) is True.

    Masked positions get weight 0 exactly; a slice with nothing kept gets all zeros (not NaN, and the
    same in torch and onnxruntime: the fill is a finite minimum, never -inf)."""
    if keep is None:
        return torch.softmax(scores, dim=dim)
    s = scores.masked_fill(~keep, torch.finfo(scores.dtype).min)
    return torch.softmax(s, dim=dim) * keep.to(scores.dtype)


def attend(scores: torch.Tensor, values: torch.Tensor, mask: Optional[torch.Tensor] = None,
           mask_queries: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """scores (B, Tq, T), values (B, T, D), mask (B, T) -> context (B, Tq, D), weights (B, Tq, T).
    `mask_queries` (self-attention, Tq = T): padded steps also get no weights as queries."""
    keep = None if mask is None else mask != 0                       # (B, T)
    w = masked_softmax(scores, None if keep is None else keep[:, None, :])   # (B, Tq, T)
    if keep is not None and mask_queries:
        w = w * keep[:, :, None].to(w.dtype)                         # (B, T, 1): padded query rows -> 0
    return w @ values, w                                             # (B, Tq, D), (B, Tq, T)


def _as_queries(query: Optional[torch.Tensor]) -> tuple[Optional[torch.Tensor], bool]:
    """A vector query (B, Dq) as one query step (B, 1, Dq); whether it was a vector."""
    if query is not None and query.dim() == 2:
        return query[:, None], True                                  # (B, Dq) -> (B, 1, Dq)
    return query, False


class _ScoredAttention(nn.Module):
    """Score every (query, key) pair, softmax over the real keys, weight the steps of x."""

    def scores(self, x: torch.Tensor, q: Optional[torch.Tensor]) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, x: torch.Tensor, query: Optional[torch.Tensor] = None,
                mask: Optional[torch.Tensor] = None) -> tuple[torch.Tensor, torch.Tensor]:
        """x (B, T, D), query None | (B, Dq) | (B, Tq, Dq), mask (B, T) -> (context, weights)."""
        q, vector = _as_queries(query)
        out, w = attend(self.scores(x, q), x, mask, mask_queries=query is None)
        return (out[:, 0], w[:, 0]) if vector else (out, w)          # (B, D), (B, T) for a vector query


class AdditiveScore(nn.Module):
    """vᵀ tanh(W_q q + W_k k + b) for every query and key; without `query_dim`, a learned query
    (vᵀ tanh(W_k k + b), v the learned context vector)."""

    def __init__(self, dim: int, hidden: int, query_dim: Optional[int]):
        super().__init__()
        self.query_proj = nn.Linear(query_dim, hidden, bias=False) if query_dim else None
        self.key_proj = nn.Linear(dim, hidden)
        self.v = nn.Linear(hidden, 1, bias=False)

    def forward(self, x: torch.Tensor, q: Optional[torch.Tensor] = None) -> torch.Tensor:
        """x (B, T, D), q (B, Tq, Dq) (x itself when None and there is a query projection) -> (B, Tq, T)."""
        k = self.key_proj(x)                                         # (B, T, H)
        if self.query_proj is None:
            e = torch.tanh(k)[:, None]                               # (B, 1, T, H): the learned query
        else:
            qh = self.query_proj(x if q is None else q)              # (B, Tq, H)
            e = torch.tanh(qh[:, :, None] + k[:, None])              # (B, Tq, 1, H) + (B, 1, T, H) -> (B, Tq, T, H)
        return self.v(e).squeeze(-1)                                 # (B, Tq, T)


class AdditiveAttention(_ScoredAttention):
    """Bahdanau attention: (x (B, T, D)[, query][, mask]) -> (context, weights)."""

    def __init__(self, dim: int, hidden: int, query_dim: Optional[int]):
        super().__init__()
        self.score = AdditiveScore(dim, hidden, query_dim)

    def scores(self, x: torch.Tensor, q: Optional[torch.Tensor]) -> torch.Tensor:
        return self.score(x, q)


class AttentionPool(AdditiveAttention):
    """(x (B, T, D)[, mask (B, T)]) -> (pooled (B, D), weights (B, T)): additive attention with a learned query."""

    def __init__(self, dim: int, hidden: int):
        super().__init__(dim, hidden, query_dim=None)

    def forward(self, x: torch.Tensor, mask: Optional[torch.Tensor] = None) -> tuple[torch.Tensor, torch.Tensor]:
        out, w = attend(self.score(x), x, mask)                      # (B, 1, D), (B, 1, T)
        return out[:, 0], w[:, 0]                                    # (B, D), (B, T)


class DotAttention(_ScoredAttention):
    """Luong attention: q · k (optionally ÷ √D), with an optional learned query projection (`general`)."""

    def __init__(self, dim: int, query_dim: int, scaled: bool, project_query: bool):
        super().__init__()
        self.query_proj = nn.Linear(query_dim, dim, bias=False) if project_query else None
        self.scale = dim ** -0.5 if scaled else None

    def scores(self, x: torch.Tensor, q: Optional[torch.Tensor]) -> torch.Tensor:
        q = x if q is None else q                                    # (B, Tq, Dq)
        if self.query_proj is not None:
            q = self.query_proj(q)                                   # (B, Tq, D)
        s = q @ x.transpose(1, 2)                                    # (B, Tq, D) @ (B, D, T) -> (B, Tq, T)
        return s if self.scale is None else s * self.scale

    def extra_repr(self) -> str:
        return f"scale={self.scale}"


class MultiHeadSequenceAttention(MultiHeadAttention):
    """`MultiHeadAttention` on the ports of `attention`: self-attention over x, or a query (vector or
    sequence) attending to x; rows with no real key (and, in self-attention, padded steps) output 0."""

    def forward(self, x: torch.Tensor, query: Optional[torch.Tensor] = None,  # type: ignore[override]
                mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        q, vector = _as_queries(query)
        if q is None:
            out = super().forward(x, mask)                           # (B, T, D)
        else:
            out = super().forward(q, mask, kv=x)                     # (B, Tq, D)
        if mask is not None:
            keep = mask != 0                                         # (B, T)
            rows = keep[:, :, None] if q is None else keep.any(dim=-1)[:, None, None]   # (B, T, 1) | (B, 1, 1)
            out = out * rows.to(out.dtype)
        return out[:, 0] if vector else out                          # (B, D) for a vector query


def _check_x(x: PortType, what: str) -> int:
    expect_rank(x, 3, "x", " [B, T, D]")
    expect_float(x, "x")
    return expect_static(x.shape[2], "x", f"the feature size (last dim) of {what}")


def _check_mask(x: PortType, mask: Optional[PortType]) -> None:
    if mask is None:
        return
    expect_rank(mask, 2, "mask", " [B, T]")
    if mask.dtype not in MASK_DTYPES:
        raise InferError("port `mask` needs a bool or integer mask (1 = a real step, 0 = padding)", port="mask",
                         code="E303", expected=" or ".join(MASK_DTYPES), found=str(mask),
                         hint="declare the mask input with dtype: bool (or int64)")
    if tuple(mask.shape) != tuple(x.shape[:2]):
        raise InferError("the mask must have the [B, T] of `x`", port="mask", code="E302",
                         expected=shape_str(x.shape[:2]), found=str(mask))


# the params each mode reads; giving another mode's param is an error, not silently ignored
_MODE_PARAMS = {"additive": {"hidden"}, "dot": {"project_query"}, "scaled_dot": {"project_query"},
                "multihead": {"num_heads"}}


@register
class Attention(Block):
    """Attention over a sequence: additive (Bahdanau), dot or scaled-dot (Luong), or multi-head; self-attention or a query."""
    name: ClassVar[str] = "attention"
    family: ClassVar[str] = "sequence"
    inputs: ClassVar = {
        "x": In("sequence", doc="[B, T, D] keys and values"),
        "query": In("vector", "sequence", optional=True,
                    doc="[B, Dq] one query per row, or [B, Tq, Dq]; unbound: self-attention"),
        "mask": In("mask", optional=True, doc=_MASK_DOC),
    }
    outputs: ClassVar = ("out", "weights")
    example: ClassVar = {"params": {"mode": "additive", "hidden": 6},
                         "inputs": {"x": PortType("sequence", (2, 5, 8)), "query": PortType("vector", (2, 4)),
                                    "mask": PortType("mask", (2, 5), "int64")}}
    mode: Mode = "additive"
    hidden: Optional[PosInt] = None       # additive: units of the tanh layer (default D)
    project_query: bool = False           # dot, scaled_dot: a learned W [D, Dq] on the query (Luong's general)
    num_heads: Optional[PosInt] = None    # multihead: required, divides D

    def _check(self, x: PortType, query: Optional[PortType], mask: Optional[PortType]) -> tuple[int, int]:
        """(D, Dq) after checking every port and param."""
        # by value, not by `model_fields_set`: a resolved spec written out (emit) lists every param
        given = {p for p, f in type(self).model_fields.items() if getattr(self, p) != f.default}
        for p in sorted(given - {"mode"} - _MODE_PARAMS[self.mode]):
            modes = " or ".join(m for m, ps in _MODE_PARAMS.items() if p in ps)
            raise InferError(f"`{p}` does not apply to mode `{self.mode}`", param=p, code="E302",
                             expected=f"mode {modes}", found=f"mode {self.mode}",
                             hint=f"remove `{p}`, or set `mode` to {modes}")
        d = _check_x(x, "attention's keys and values")
        _check_mask(x, mask)
        dq = d
        if query is not None:
            expect_rank(query, (2, 3), "query", " ([B, Dq] vector or [B, Tq, Dq] sequence)")
            expect_float(query, "query")
            if query.shape[0] != x.shape[0]:
                raise InferError("`query` and `x` have different batch sizes", port="query", code="E302",
                                 expected=f"batch {format_dim(x.shape[0])}", found=str(query))
            if query.shape[-1] != d and (self.mode == "multihead" or
                                         (self.mode in ("dot", "scaled_dot") and not self.project_query)):
                fix = ("set `project_query: true` (a learned projection)" if self.mode != "multihead"
                       else "project the query to D with a `dense` block")
                raise InferError(f"mode `{self.mode}` needs a query with the feature size of `x` ({d})",
                                 port="query", code="E302", expected=f"Dq = {d}", found=str(query),
                                 hint=f"{fix}, or use mode additive")
            dq = expect_static(query.shape[-1], "query", "the feature size (last dim) of the query")
        if self.mode == "multihead":
            if self.num_heads is None:
                raise InferError("mode `multihead` needs `num_heads`", param="mode", code="E302",
                                 expected="num_heads (a divisor of D)", found="num_heads unset",
                                 hint=f"set `num_heads`, e.g. 1 or another divisor of {d}")
            if d % self.num_heads:
                raise InferError(f"num_heads={self.num_heads} must divide the feature size {d}", param="num_heads",
                                 code="E302", expected=f"a divisor of {d}", found=str(self.num_heads))
        return d, dq

    def infer(self, x: PortType, query: Optional[PortType] = None,
              mask: Optional[PortType] = None) -> PortType | dict[str, PortType]:
        d, _ = self._check(x, query, mask)
        b, t = x.shape[0], x.shape[1]
        if query is not None and query.rank == 2:
            out, weights = PortType("vector", (b, d), x.dtype), PortType("attention", (b, t), x.dtype)
        else:
            tq = t if query is None else query.shape[1]
            out, weights = PortType("sequence", (b, tq, d), x.dtype), PortType("attention", (b, tq, t), x.dtype)
        if self.mode == "multihead":
            return out
        return {"out": out, "weights": weights}

    def param_count(self, x: PortType, query: Optional[PortType] = None, mask: Optional[PortType] = None) -> int:
        d, dq = self._check(x, query, mask)
        if self.mode == "additive":
            h = self.hidden or d
            return dq * h + d * h + 2 * h                            # W_q, W_k and b, v
        if self.mode == "multihead":
            return 4 * d * d + 4 * d
        return dq * d if self.project_query else 0

    def build(self, x: PortType, query: Optional[PortType] = None, mask: Optional[PortType] = None) -> nn.Module:
        d, dq = self._check(x, query, mask)
        if self.mode == "additive":
            return AdditiveAttention(d, self.hidden or d, dq)
        if self.mode == "multihead":
            return MultiHeadSequenceAttention(d, self.num_heads or 1)
        return DotAttention(d, dq, self.mode == "scaled_dot", self.project_query)


@register
class AttentionPoolBlock(Block):
    """Pool a sequence to a vector with a learned query and additive scores; outputs the vector and the weights."""
    name: ClassVar[str] = "attention_pool"
    family: ClassVar[str] = "sequence"
    inputs: ClassVar = {"x": In("sequence", doc="[B, T, D]"), "mask": In("mask", optional=True, doc=_MASK_DOC)}
    outputs: ClassVar = ("out", "weights")
    example: ClassVar = {"params": {"hidden": 4},
                         "inputs": {"x": PortType("sequence", (2, 5, 8)), "mask": PortType("mask", (2, 5), "int64")}}
    hidden: Optional[PosInt] = None       # units of the tanh layer (default D)

    def _dim(self, x: PortType, mask: Optional[PortType]) -> int:
        d = _check_x(x, "attention pooling")
        _check_mask(x, mask)
        return d

    def infer(self, x: PortType, mask: Optional[PortType] = None) -> dict[str, PortType]:
        d = self._dim(x, mask)
        return {"out": PortType("vector", (x.shape[0], d), x.dtype),
                "weights": PortType("attention", (x.shape[0], x.shape[1]), x.dtype)}

    def param_count(self, x: PortType, mask: Optional[PortType] = None) -> int:
        d = self._dim(x, mask)
        h = self.hidden or d
        return d * h + 2 * h                                         # W_k and b, v (the learned query)

    def build(self, x: PortType, mask: Optional[PortType] = None) -> nn.Module:
        d = self._dim(x, mask)
        return AttentionPool(d, self.hidden or d)

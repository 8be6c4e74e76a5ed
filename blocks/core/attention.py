"""Multi-head attention: the one attention layer of the catalog (ViT, BERT, ALBERT, and the decoders).

Written here rather than taken from `nn.MultiheadAttention` because one module has to serve every
family: it computes with `F.scaled_dot_product_attention` (the fused kernels on GPU, one op that the
dynamo ONNX exporter lowers at dynamic batch and length), takes a padding mask in the form text
pipelines carry it ([B, T], 1 = a real token), has a causal switch for decoders, and stores its
projections in either of the two checkpoint layouts in use:

- `fused`: `in_proj_weight` [3D, D], `in_proj_bias` [3D], `out_proj.{weight,bias}`, exactly the
  names of `nn.MultiheadAttention`, so torchvision ViT state dicts load unchanged;
- `separate`: `query`, `key`, `value`, `out_proj` (`nn.Linear` each), which the Hugging Face
  families (BERT's `query/key/value/dense`, GPT-2's, T5's) reach by renaming keys.

A checkpoint layout is a naming concern of the weight mapping, never a second copy of the layer.
"""

from __future__ import annotations

import math
from typing import Literal, Optional

import torch
import torch.nn.functional as F
from torch import nn

Layout = Literal["fused", "separate"]


def key_padding_mask(mask: torch.Tensor) -> torch.Tensor:
    """A [B, S] padding mask (1/True = a real token, bool or integer) as the boolean attention mask
    [B, 1, 1, S] that `scaled_dot_product_attention` broadcasts over heads and queries.

    A row with no real token at all attends to every position instead of to none: with nothing to
    attend to, torch returns zeros while onnxruntime's lowering returns the mean of the values, so
    an all-padding row would make an export disagree with torch. Such a row's output means nothing
    either way."""
    keep = mask.to(torch.bool)                                   # (B, S)
    keep = keep | ~keep.any(dim=-1, keepdim=True)
    return keep[:, None, None, :]                                # (B, 1, 1, S)


def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: Optional[torch.Tensor] = None,
           causal: bool = False, bias: Optional[torch.Tensor] = None, scale: Optional[float] = None,
           dropout: float = 0.0) -> torch.Tensor:
    """softmax(q·kᵀ·scale + bias + mask)·v through `F.scaled_dot_product_attention`, the catalog's one
    attention computation (every block that attends calls this).

    q (B, H, T, hd), k and v (B, H, S, hd). `mask`: which keys are real, (B, S) with 1/True = real
    (bool or integer), or a prepared boolean broadcasting to (B, H, T, S). `causal`: query t sees the
    keys up to S - T + t (aligned bottom-right, so T new queries after S - T cached keys see the
    cache and the past of their own step). `bias` (broadcasting to (B, H, T, S)) is added to the
    scaled scores (T5's relative positions, XLNet's position and segment terms). `scale` defaults
    to 1/sqrt(hd) (T5: 1).

    With a causal mask or a bias, masked keys get the dtype's lowest value added instead of being
    cut out, as the Hugging Face decoders do: a query that sees no real key (a left pad) then
    averages over what it sees instead of producing NaN, which its values would carry into every
    later layer."""
    if not causal and bias is None:
        keep = None if mask is None else key_padding_mask(mask) if mask.dim() == 2 else mask.to(torch.bool)
        return F.scaled_dot_product_attention(q, k, v, attn_mask=keep, dropout_p=dropout, scale=scale)
    keep = causal_keep(mask, q.shape[2], k.shape[2], causal, q.device)
    if bias is None:
        add = additive_mask(keep, q.dtype)
    else:
        add = bias.to(q.dtype) if keep is None else bias.to(q.dtype).masked_fill(~keep, torch.finfo(q.dtype).min)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=add, dropout_p=dropout, scale=scale)


def causal_keep(mask: Optional[torch.Tensor], t: int, s: int, causal: bool = True,
                device: Optional[torch.device] = None) -> Optional[torch.Tensor]:
    """Which of S keys each of T queries sees, as a boolean (T, S) or (B, 1, T, S): the real keys of
    `mask` ((B, S) or prepared), and with `causal` the keys up to S - T + t for query t."""
    keep = None
    if mask is not None:
        keep = key_padding_mask(mask) if mask.dim() == 2 else mask.to(torch.bool)       # (B, 1, 1|T, S)
    if causal:
        tri = torch.ones(t, s, dtype=torch.bool, device=device).tril(diagonal=s - t)      # (T, S)
        keep = tri if keep is None else keep & tri
    return keep


def additive_mask(keep: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """A boolean keep mask as the float mask SDPA adds to the scores: 0 where kept, the dtype's lowest
    value where not (see `attend`). A stack computes it once for all its layers."""
    return torch.zeros(keep.shape, dtype=dtype, device=keep.device).masked_fill(~keep, torch.finfo(dtype).min)


class MultiHeadAttention(nn.Module):
    """Multi-head (self- or cross-) attention on [B, T, D] tokens through `F.scaled_dot_product_attention`.

    `layout` decides only the parameter names (see the module docstring); both compute the same
    function, and equal weights give equal outputs. `dropout` is attention-probability dropout,
    applied in training mode only.
    """

    def __init__(self, dim: int, num_heads: int, bias: bool = True, dropout: float = 0.0,
                 layout: Layout = "fused", scale: Optional[float] = None, head_dim: Optional[int] = None):
        super().__init__()
        if head_dim is None and dim % num_heads:
            raise ValueError(f"num_heads={num_heads} must divide dim={dim}")
        self.dim, self.num_heads, self.head_dim = dim, num_heads, head_dim or dim // num_heads
        self.inner = self.num_heads * self.head_dim                # T5 v1.1: heads x d_kv need not be dim
        self.dropout, self.layout, self.scale = dropout, layout, scale
        if layout == "fused" and self.inner != dim:
            raise ValueError("the fused layout needs num_heads x head_dim = dim")
        if layout == "fused":
            # nn.MultiheadAttention's names, registration order and initialisation (the same seed gives
            # the same weights): out_proj's default init first, then xavier on the fused projection
            self.in_proj_weight = nn.Parameter(torch.empty(3 * dim, dim))
            if bias:
                self.in_proj_bias = nn.Parameter(torch.empty(3 * dim))
            else:
                self.register_parameter("in_proj_bias", None)
            self.out_proj = nn.Linear(dim, dim, bias=bias)
            nn.init.xavier_uniform_(self.in_proj_weight)
            projections = []
        elif layout == "separate":
            self.query = nn.Linear(dim, self.inner, bias=bias)
            self.key = nn.Linear(dim, self.inner, bias=bias)
            self.value = nn.Linear(dim, self.inner, bias=bias)
            self.out_proj = nn.Linear(self.inner, dim, bias=bias)
            bound = math.sqrt(6.0 / (4 * dim))       # the fused layout's xavier bound on [3D, D]
            projections = [self.query, self.key, self.value]
            for lin in projections:
                nn.init.uniform_(lin.weight, -bound, bound)
        else:
            raise ValueError(f"layout must be 'fused' or 'separate', not {layout!r}")
        with torch.no_grad():
            for b in [self.in_proj_bias if layout == "fused" else None, self.out_proj.bias,
                      *(p.bias for p in projections)]:
                if b is not None:
                    b.zero_()

    def _project(self, x: torch.Tensor, kv: Optional[torch.Tensor]):
        """q from x, k and v from kv (x itself for self-attention), each (B, T or S, D)."""
        if self.layout == "separate":
            src = x if kv is None else kv
            return self.query(x), self.key(src), self.value(src)
        if kv is None:
            return F.linear(x, self.in_proj_weight, self.in_proj_bias).chunk(3, dim=-1)   # (B, T, 3D) -> 3 x (B, T, D)
        w_q, w_kv = self.in_proj_weight.split([self.dim, 2 * self.dim])   # fused: inner = dim
        b_q, b_kv = (None, None) if self.in_proj_bias is None else self.in_proj_bias.split([self.dim, 2 * self.dim])
        return (F.linear(x, w_q, b_q), *F.linear(kv, w_kv, b_kv).chunk(2, dim=-1))

    def forward(self, x: torch.Tensor, mask: Optional[torch.Tensor] = None, causal: bool = False,
                kv: Optional[torch.Tensor] = None, bias: Optional[torch.Tensor] = None,
                past: Optional[tuple[torch.Tensor, torch.Tensor]] = None, cache: bool = False):
        """x (B, T, D) -> (B, T, D). `mask`: which keys are real tokens, (B, S) with 1/True = real and
        0/False = padding (bool or integer), or an already prepared boolean (B, 1, 1 or T, S); `causal`:
        query t sees keys <= t only (after the cached ones); `kv` (B, S, D): attend to these instead of
        x (cross-attention), S = T without it; `bias`: added to the scores (see `attend`).

        `past` (keys, values), each (B, H, P, hd): keys and values of earlier steps, put before this
        step's (S = P + T, and `mask` covers all S); with `cache`, the result is (out, (keys, values))
        with the P + T keys and values, the next step's `past`."""
        q, k, v = (p.unflatten(-1, (self.num_heads, self.head_dim)).transpose(1, 2)   # (B, L, D) -> (B, H, L, hd)
                   for p in self._project(x, kv))
        if past is not None:
            k, v = torch.cat([past[0], k], dim=2), torch.cat([past[1], v], dim=2)     # (B, H, P + T, hd)
        y = attend(q, k, v, mask, causal, bias, self.scale, self.dropout if self.training else 0.0)   # (B, H, T, hd)
        out = self.out_proj(y.transpose(1, 2).flatten(2))                             # (B, T, D)
        return (out, (k, v)) if cache else out

    def extra_repr(self) -> str:
        extra = "" if self.scale is None else f", scale={self.scale}"
        return f"dim={self.dim}, num_heads={self.num_heads}, layout={self.layout}, dropout={self.dropout}{extra}"

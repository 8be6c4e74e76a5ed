"""`transformer_decoder`: a GPT-2 stack of causal self-attention layers with an optional KV cache.

The layers are the encoder's (`blocks.text.encoder.EncoderLayer`, pre-norm, fused projections,
GELU-tanh MLP) run with a causal mask; the stack adds GPT-2's final LayerNorm `ln_f`. One
compiled model serves the prompt and every generation step: the optional `past` input holds the
keys and values of the P earlier steps (P = 0 for the prompt), and `present` gives them back with
this call's T steps appended, ready to be the next call's `past`.

The cache is one tensor [L, 2, B, H, P, hd] (layers, keys/values, batch, heads, steps, head size),
so an exported decoder has one cache input and one cache output at any depth. Which cached steps
are real is `past_mask` [B, P] (1 = a real token): a batch of left-padded prompts keeps its pads
out of attention at every step.

Keys as the encoder layers': `layers.N.ln_1`, `layers.N.self_attention.in_proj_weight` (GPT-2's
`h.N.attn.c_attn`, transposed: GPT-2 stores `Conv1D` weights as [in, out]), `…out_proj`,
`layers.N.ln_2`, `layers.N.mlp.0`, `layers.N.mlp.3`, and `ln_f`.
"""

from __future__ import annotations

from typing import ClassVar, Optional

import torch
from torch import nn

from composer.block import In
from composer.dims import shape_str
from composer.params import Eps, PosInt, Prob
from composer.registry import register
from composer.types import InferError, PortType, expect_rank, expect_static, unify_shapes

from ..core.attention import additive_mask, causal_keep
from .common import init_like_bert
from .encoder import FFNActivation, MASK_DTYPES, EncoderLayer, _LayerParams


def cache_mask(mask: Optional[torch.Tensor], past_mask: Optional[torch.Tensor], b: int, t: int, p: int,
               device: torch.device) -> Optional[torch.Tensor]:
    """Which of the P + T keys are real, (B, P + T), or None when all are."""
    if mask is None and past_mask is None:
        return None
    if mask is None:
        mask = torch.ones(b, t, dtype=past_mask.dtype, device=device)
    if past_mask is None:
        past_mask = torch.ones(b, p, dtype=mask.dtype, device=device)
    return torch.cat([past_mask.to(mask.dtype), mask], dim=1)                       # (B, P + T)


class DecoderStack(nn.Module):
    """`num_layers` causal layers under `layers.N`, then `ln_f`; (x, mask, past, past_mask) -> (x, present)."""

    def __init__(self, num_layers: int, final_norm: bool, **layer):
        super().__init__()
        self.layers = nn.ModuleList(EncoderLayer(**layer) for _ in range(num_layers))
        self.ln_f = nn.LayerNorm(layer["dim"], eps=layer["eps"]) if final_norm else None

    def forward(self, x: torch.Tensor, mask: Optional[torch.Tensor] = None, past: Optional[torch.Tensor] = None,
                past_mask: Optional[torch.Tensor] = None):
        b, t, _ = x.shape
        p = 0 if past is None else past.shape[4]
        keys = cache_mask(mask, past_mask, b, t, p, x.device)                          # (B, P + T)
        # the causal and padding mask, built once for every layer
        bias = additive_mask(causal_keep(keys, t, p + t, device=x.device), x.dtype)   # (B | 1, 1, T, P + T)
        new = []
        for i, layer in enumerate(self.layers):
            layer_past = None if past is None else (past[i, 0], past[i, 1])           # 2 x (B, H, P, hd)
            x, (k, v) = layer(x, past=layer_past, bias=bias, cache=True)               # 2 x (B, H, P + T, hd)
            new.append(torch.stack([k[:, :, p:], v[:, :, p:]]))                        # (2, B, H, T, hd)
        if self.ln_f is not None:
            x = self.ln_f(x)
        steps = torch.stack(new)                                                       # (L, 2, B, H, T, hd)
        # one copy of the cache: the P earlier steps, then this call's
        return x, steps if past is None else torch.cat([past, steps], dim=4)           # (L, 2, B, H, P + T, hd)


@register
class TransformerDecoder(_LayerParams):
    """Transformer decoder (GPT-2 layout): causal pre-norm layers and a final LayerNorm, with a KV cache.

    `past` [L, 2, B, H, P, hd] are the keys and values of P earlier steps (from a previous call's
    `present`), `past_mask` [B, P] which of them are real; `mask` [B, T] marks this call's real tokens.
    Outputs `sequence` [B, T, D] and `present` [L, 2, B, H, P + T, hd] (P = 0 without `past`).
    """
    name: ClassVar[str] = "transformer_decoder"
    inputs: ClassVar = {
        "x": In("sequence", doc="[B, T, D]"),
        "mask": In("mask", optional=True, doc="[B, T] 1 = a real token of this call"),
        "past": In("kv_cache", optional=True, doc="[L, 2, B, H, P, hd] keys and values of P earlier steps"),
        "past_mask": In("mask", optional=True, doc="[B, P] 1 = a real earlier step"),
    }
    outputs: ClassVar = ("sequence", "present")
    example: ClassVar = {"params": {"num_layers": 2, "num_heads": 2, "mlp_dim": 16},
                         "inputs": {"x": PortType("sequence", (2, 3, 8)), "mask": PortType("mask", (2, 3), "int64"),
                                    "past": PortType("kv_cache", (2, 2, 2, 2, 4, 4)),
                                    "past_mask": PortType("mask", (2, 4), "int64")}}
    num_layers: PosInt
    norm: str = "pre"
    activation: FFNActivation = "gelu_tanh"
    eps: Eps = 1e-5
    final_norm: bool = True
    dropout: Prob = 0.0
    attention_dropout: Prob = 0.0

    def _sizes(self, x: PortType, mask: Optional[PortType], past: Optional[PortType],
               past_mask: Optional[PortType]) -> tuple[int, object]:
        """The feature size, and P (0 without a past)."""
        if self.norm != "pre" or self.qkv != "fused":
            raise InferError("a decoder is pre-norm with fused projections (GPT-2)", param="norm",
                             expected="norm: pre, qkv: fused", found=f"norm: {self.norm}, qkv: {self.qkv}")
        d = self._dim(x, mask)
        b, hd = x.shape[0], d // self.num_heads
        if past is None:
            if past_mask is not None:
                raise InferError("`past_mask` is connected without a `past`", port="past_mask", code="E302",
                                 expected="a `past` input beside it", found="past unconnected")
            return d, 0
        expect_rank(past, 6, "past", " ([L, 2, B, H, P, hd] cache)")
        want = (self.num_layers, 2, b, self.num_heads)
        for i, (got, exp, what) in enumerate(zip(past.shape[:4], want, ("layers", "keys/values", "batch", "heads"))):
            if got != exp:
                raise InferError(f"the cache does not fit this decoder: dim {i} ({what}) is {got}, not {exp}",
                                 port="past", code="E302",
                                 expected=shape_str((*want, "P", hd)), found=str(past))
        if past.shape[5] != hd:
            raise InferError(f"the cache's head size is {past.shape[5]}, the decoder's {hd}", port="past",
                             code="E302", expected=shape_str((*want, "P", hd)), found=str(past))
        if past_mask is not None:
            expect_rank(past_mask, 2, "past_mask", " ([B, P])")
            if past_mask.dtype not in MASK_DTYPES:
                raise InferError("port `past_mask` needs a bool or integer mask", port="past_mask", code="E303",
                                 expected=" or ".join(MASK_DTYPES), found=str(past_mask))
            unify_shapes([("past_mask", past_mask), ("past", PortType("mask", (b, past.shape[4])))])
        return d, past.shape[4]

    def infer(self, x: PortType, mask: Optional[PortType] = None, past: Optional[PortType] = None,
              past_mask: Optional[PortType] = None) -> dict[str, PortType]:
        d, p = self._sizes(x, mask, past, past_mask)
        b, t = x.shape[0], x.shape[1]
        present = (self.num_layers, 2, b, self.num_heads, p + t, d // self.num_heads)
        return {"sequence": x, "present": PortType("kv_cache", present, x.dtype)}

    def param_count(self, x: PortType, mask: Optional[PortType] = None, past: Optional[PortType] = None,
                    past_mask: Optional[PortType] = None) -> int:
        d = expect_static(x.shape[2], "x", "the feature size (last dim) of a decoder input")
        return self._layer_count(d) * self.num_layers + (2 * d if self.final_norm else 0)

    def build(self, x: PortType, mask: Optional[PortType] = None, past: Optional[PortType] = None,
              past_mask: Optional[PortType] = None) -> nn.Module:
        d, _ = self._sizes(x, mask, past, past_mask)
        return init_like_bert(DecoderStack(self.num_layers, self.final_norm, **self._layer_args(d)))

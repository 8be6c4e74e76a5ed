"""T5 stacks: `t5_encoder` and `t5_decoder` (T5 v1.0 with ReLU feed-forward, T5 v1.1 / Flan-T5 with
gated GELU), equal to Hugging Face transformers' `T5Stack` given the same weights.

A T5 pipeline is an `embedding` block (`positions: none, norm: false`: T5's shared word table,
named `emb` below), `t5_encoder` on its sequence, `t5_decoder` on the target embeddings and the
encoder's sequence, then an `lm_head` block. With tied embeddings (T5 v1.0) Hugging Face scales
the decoder output by d_model**-0.5 before the LM head; that factor is the `lm_head` block's
`scale` param, not part of the decoder.

Pre-norm layers with RMS norms (`blocks.core.norm.RMSNorm`, T5LayerNorm's semantics), attention
without biases and without 1/sqrt(d) scaling (`blocks.core.attention.MultiHeadAttention`, the
catalog's only attention, layout `separate`, `scale=1.0`, `head_dim=d_kv`; num_heads x d_kv need
not be d_model). Positions enter only as a relative position bias added to the self-attention
scores: one `nn.Embedding(num_buckets, num_heads)` per stack (Hugging Face keeps it in layer 0
and passes its output to the other layers; here it sits at the stack level as `relative_bias`).
The bucket of a distance comes from a table computed once with Hugging Face's
`_relative_position_bucket` formula (log-spaced buckets beyond num_buckets/2 exact ones), so the
exported graph holds a lookup, not a float log and a cast whose rounding at a bucket edge could
differ between torch, onnxruntime and devices.

Hugging Face key -> our key (`N` a layer index; the Hugging Face prefixes `encoder.` / `decoder.`
become the block names `encoder.` / `decoder.`):

    encoder.block.0.layer.0.SelfAttention.relative_attention_bias  -> encoder.relative_bias
    encoder.block.N.layer.0.layer_norm                             -> encoder.layers.N.ln_1
    encoder.block.N.layer.0.SelfAttention.{q,k,v,o}                -> encoder.layers.N.self_attention.{query,key,value,out_proj}
    encoder.block.N.layer.1.layer_norm                             -> encoder.layers.N.ln_2
    encoder.block.N.layer.1.DenseReluDense.{wi,wi_0,wi_1,wo}       -> encoder.layers.N.mlp.{wi,wi_0,wi_1,wo}
    encoder.final_layer_norm                                       -> encoder.final_norm
    decoder.block.0.layer.0.SelfAttention.relative_attention_bias  -> decoder.relative_bias
    decoder.block.N.layer.0.layer_norm                             -> decoder.layers.N.ln_1
    decoder.block.N.layer.0.SelfAttention.{q,k,v,o}                -> decoder.layers.N.self_attention.{...}
    decoder.block.N.layer.1.layer_norm                             -> decoder.layers.N.ln_cross
    decoder.block.N.layer.1.EncDecAttention.{q,k,v,o}              -> decoder.layers.N.cross_attention.{...}
    decoder.block.N.layer.2.layer_norm                             -> decoder.layers.N.ln_2
    decoder.block.N.layer.2.DenseReluDense.{wi,wi_0,wi_1,wo}       -> decoder.layers.N.mlp.{...}
    decoder.final_layer_norm                                       -> decoder.final_norm
    shared                                                         -> emb.word
    lm_head                                                        -> lm_head (unchanged)

`HF_ENCODER_RULES`, `HF_DECODER_RULES` and `HF_SHARED_RULES` hold these as (regex, replacement)
rename rules for `composer.weights` (`HF_RULES`: all three); `HF_IGNORE` matches the tied copies
of the word table (`encoder.embed_tokens`, `decoder.embed_tokens`) that a state dict holds and
`save_pretrained` leaves out (there the ignore rule only warns that it matched nothing). Old
checkpoints with an unused `decoder.block.0.layer.1.EncDecAttention.relative_attention_bias`
need one more ignore rule for it.
"""

from __future__ import annotations

import math
from typing import ClassVar, Literal, Optional

import torch
from torch import nn

from composer.block import Block, In
from composer.dims import format_dim, shape_str
from composer.params import Eps, PosInt, Prob
from composer.registry import register
from composer.types import InferError, PortType, expect_float, expect_rank, expect_static

from ..core.attention import MultiHeadAttention, key_padding_mask
from ..core.norm import RMSNorm
from .encoder import MASK_DTYPES

FeedForward = Literal["relu", "gated_gelu"]


# ---- Hugging Face key correspondence --------------------------------------------------------


def _stack_rules(stack: str, cross: bool) -> tuple[tuple[str, str], ...]:
    """Rename rules from Hugging Face's `{stack}.` keys to the `{stack}` block's keys."""
    layer = rf"^{stack}\.block\.(\d+)\.layer\."
    ours = rf"{stack}.layers.\1."
    attn = (("q", "query"), ("k", "key"), ("v", "value"), ("o", "out_proj"))
    rules = [(rf"^{stack}\.block\.0\.layer\.0\.SelfAttention\.relative_attention_bias\.", f"{stack}.relative_bias.")]
    rules += [(rf"{layer}0\.SelfAttention\.{hf}\.", rf"{ours}self_attention.{name}.") for hf, name in attn]
    rules.append((rf"{layer}0\.layer_norm\.", rf"{ours}ln_1."))
    ff = 1
    if cross:
        rules += [(rf"{layer}1\.EncDecAttention\.{hf}\.", rf"{ours}cross_attention.{name}.") for hf, name in attn]
        rules.append((rf"{layer}1\.layer_norm\.", rf"{ours}ln_cross."))
        ff = 2
    rules.append((rf"{layer}{ff}\.layer_norm\.", rf"{ours}ln_2."))
    rules.append((rf"{layer}{ff}\.DenseReluDense\.", rf"{ours}mlp."))
    rules.append((rf"^{stack}\.final_layer_norm\.", f"{stack}.final_norm."))
    return tuple(rules)


HF_ENCODER_RULES: tuple[tuple[str, str], ...] = _stack_rules("encoder", cross=False)
HF_DECODER_RULES: tuple[tuple[str, str], ...] = _stack_rules("decoder", cross=True)
HF_SHARED_RULES: tuple[tuple[str, str], ...] = ((r"^shared\.weight$", "emb.word.weight"),)
HF_RULES: tuple[tuple[str, str], ...] = HF_SHARED_RULES + HF_ENCODER_RULES + HF_DECODER_RULES
HF_IGNORE: tuple[str, ...] = (r"^(encoder|decoder)\.embed_tokens\.weight$",)


# ---- relative positions ---------------------------------------------------------------------


def bucket_table(bidirectional: bool, num_buckets: int, max_distance: int) -> torch.Tensor:
    """The bucket of every distance n = 0 … max_distance (int64, [max_distance + 1]) by Hugging Face's
    `T5Attention._relative_position_bucket`, evaluated with the same float32 torch ops: n below
    max_exact (half the buckets of a direction) is its own bucket, larger n fall into log-spaced
    buckets up to max_distance, and everything further shares the last one. With `bidirectional`,
    a direction has num_buckets // 2 buckets (keys after the query add that many, see
    `relative_buckets`)."""
    buckets = num_buckets // 2 if bidirectional else num_buckets
    max_exact = buckets // 2
    n = torch.arange(max_distance + 1, dtype=torch.long)
    # n < max_exact takes the exact branch; clamping keeps log(0) out of the discarded branch
    large = max_exact + (torch.log(n.clamp(min=max_exact).float() / max_exact)
                         / math.log(max_distance / max_exact) * (buckets - max_exact)).to(torch.long)
    large = torch.min(large, torch.full_like(large, buckets - 1))
    return torch.where(n < max_exact, n, large)


def relative_buckets(relative: torch.Tensor, table: torch.Tensor, bidirectional: bool,
                     num_buckets: int) -> torch.Tensor:
    """Buckets of relative positions (key position - query position, int64, any shape) through a
    `bucket_table`: equal to Hugging Face's `_relative_position_bucket` at every distance."""
    max_distance = table.shape[0] - 1
    if bidirectional:
        offset = (relative > 0).to(torch.long) * (num_buckets // 2)            # keys after the query
        return offset + table[relative.abs().clamp(max=max_distance)]
    return table[(-relative).clamp(min=0, max=max_distance)]                    # keys after the query: bucket 0


class RelativeBias(nn.Module):
    """What the stacks share: the bucket table (a buffer, not in the state dict) and the bias
    computation; `relative_bias` itself is an attribute of the stack module (its key)."""

    relative_bias: nn.Embedding
    buckets: torch.Tensor

    def _init_bias(self, num_heads: int, num_buckets: int, max_distance: int, bidirectional: bool) -> None:
        self.num_buckets, self.bidirectional = num_buckets, bidirectional
        self.relative_bias = nn.Embedding(num_buckets, num_heads)
        self.register_buffer("buckets", bucket_table(bidirectional, num_buckets, max_distance), persistent=False)

    def position_bias(self, t: int, s: int, offset) -> torch.Tensor:
        """The bias (1, H, T, S) of T queries at positions offset … offset + T - 1 over S keys at 0 … S - 1."""
        device = self.relative_bias.weight.device
        query = torch.arange(t, dtype=torch.long, device=device)[:, None] + offset      # (T, 1)
        key = torch.arange(s, dtype=torch.long, device=device)[None, :]                 # (1, S)
        buckets = relative_buckets(key - query, self.buckets, self.bidirectional, self.num_buckets)   # (T, S)
        bias = self.relative_bias(buckets).permute(2, 0, 1).unsqueeze(0)                # (T, S, H) -> (1, H, T, S)
        # an attention bias that requires grad makes torch.export pick an SDPA kernel whose decomposition
        # changes the output strides, and the ONNX conversion then fails; an exported graph has no grads
        return bias.detach() if torch.compiler.is_exporting() else bias


# ---- layers ---------------------------------------------------------------------------------


class T5FeedForward(nn.Module):
    """T5's feed-forward, without biases: `wo(relu(wi(x)))` (v1.0) or `wo(gelu_tanh(wi_0(x)) * wi_1(x))`
    (v1.1, `gated_gelu`), dropout before `wo`; Hugging Face's DenseReluDense / DenseGatedActDense."""

    def __init__(self, dim: int, d_ff: int, feed_forward: FeedForward, dropout: float):
        super().__init__()
        self.gated = feed_forward == "gated_gelu"
        if self.gated:
            self.wi_0 = nn.Linear(dim, d_ff, bias=False)
            self.wi_1 = nn.Linear(dim, d_ff, bias=False)
            self.act = nn.GELU(approximate="tanh")
        else:
            self.wi = nn.Linear(dim, d_ff, bias=False)
            self.act = nn.ReLU()
        self.dropout = nn.Dropout(dropout)
        self.wo = nn.Linear(d_ff, dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.act(self.wi_0(x)) * self.wi_1(x) if self.gated else self.act(self.wi(x))   # (B, T, d_ff)
        return self.wo(self.dropout(h))                                                     # (B, T, D)


class T5Layer(nn.Module):
    """One T5 block, pre-norm: self-attention (+ relative bias), [cross-attention,] feed-forward, each
    `x = x + dropout(f(norm(x)))`."""

    def __init__(self, dim: int, num_heads: int, d_kv: int, d_ff: int, feed_forward: FeedForward, eps: float,
                 dropout: float, cross: bool):
        super().__init__()
        attention = dict(dim=dim, num_heads=num_heads, bias=False, dropout=dropout, layout="separate", scale=1.0,
                         head_dim=d_kv)
        self.ln_1 = RMSNorm(dim, eps)
        self.self_attention = MultiHeadAttention(**attention)
        if cross:
            self.ln_cross = RMSNorm(dim, eps)
            self.cross_attention = MultiHeadAttention(**attention)
        self.ln_2 = RMSNorm(dim, eps)
        self.mlp = T5FeedForward(dim, d_ff, feed_forward, dropout)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, mask: Optional[torch.Tensor], bias: torch.Tensor):
        """Encoder layer: x (B, T, D), mask a prepared (B, 1, 1, T) boolean or None, bias (1, H, T, T)."""
        x = x + self.dropout(self.self_attention(self.ln_1(x), mask, bias=bias))
        return x + self.dropout(self.mlp(self.ln_2(x)))

    def decode(self, x: torch.Tensor, mask: Optional[torch.Tensor], bias: torch.Tensor, encoder: torch.Tensor,
               encoder_mask: Optional[torch.Tensor], past: Optional[tuple[torch.Tensor, torch.Tensor]]):
        """Decoder layer: x (B, T, D), mask (B, 1, 1, P + T) or None, bias (1, H, T, P + T), encoder
        (B, S, D), encoder_mask (B, 1, 1, S) or None, past (keys, values) (B, H, P, d_kv) or None ->
        (x, (keys, values) of all P + T positions)."""
        h, kv = self.self_attention(self.ln_1(x), mask, causal=True, bias=bias, past=past, cache=True)
        x = x + self.dropout(h)
        x = x + self.dropout(self.cross_attention(self.ln_cross(x), encoder_mask, kv=encoder))
        return x + self.dropout(self.mlp(self.ln_2(x))), kv


def init_t5(module: nn.Module, dim: int, num_heads: int, d_kv: int, d_ff: int) -> nn.Module:
    """Hugging Face's T5 initialisation (initializer_factor 1.0): normal with std d^-0.5 by fan-in
    (the query d·d_kv, since T5 leaves out the 1/sqrt(d_kv) scaling), RMS norm weights 1; in module
    order, so a seed gives the same weights."""
    std = {"query": (dim * d_kv) ** -0.5, "key": dim ** -0.5, "value": dim ** -0.5,
           "out_proj": (num_heads * d_kv) ** -0.5, "wi": dim ** -0.5, "wi_0": dim ** -0.5, "wi_1": dim ** -0.5,
           "wo": d_ff ** -0.5, "relative_bias": dim ** -0.5}
    with torch.no_grad():
        for name, m in module.named_modules():
            leaf = name.rsplit(".", 1)[-1]
            if isinstance(m, (nn.Linear, nn.Embedding)) and leaf in std:
                nn.init.normal_(m.weight, mean=0.0, std=std[leaf])
            elif isinstance(m, RMSNorm):
                nn.init.ones_(m.weight)
    return module


class T5EncoderStack(RelativeBias):
    """`num_layers` T5 encoder layers with a bidirectional relative bias, then the final RMS norm."""

    def __init__(self, dim: int, num_layers: int, num_heads: int, d_kv: int, d_ff: int, feed_forward: FeedForward,
                 num_buckets: int, max_distance: int, eps: float, dropout: float):
        super().__init__()
        self._init_bias(num_heads, num_buckets, max_distance, bidirectional=True)
        self.layers = nn.ModuleList(T5Layer(dim, num_heads, d_kv, d_ff, feed_forward, eps, dropout, cross=False)
                                    for _ in range(num_layers))
        self.final_norm = RMSNorm(dim, eps)
        self.dropout = nn.Dropout(dropout)
        init_t5(self, dim, num_heads, d_kv, d_ff)

    def forward(self, x: torch.Tensor, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        """x (B, S, D), mask (B, S) with 1 = a real token -> (B, S, D)."""
        t = x.shape[1]
        bias = self.position_bias(t, t, 0)                                       # (1, H, S, S)
        keep = None if mask is None else key_padding_mask(mask)                  # (B, 1, 1, S), once
        x = self.dropout(x)
        for layer in self.layers:
            x = layer(x, keep, bias)
        return self.dropout(self.final_norm(x))


class T5DecoderStack(RelativeBias):
    """`num_layers` T5 decoder layers (causal self-attention with a unidirectional relative bias over
    cached and new positions, cross-attention to the encoder), then the final RMS norm."""

    def __init__(self, dim: int, num_layers: int, num_heads: int, d_kv: int, d_ff: int, feed_forward: FeedForward,
                 num_buckets: int, max_distance: int, eps: float, dropout: float):
        super().__init__()
        self._init_bias(num_heads, num_buckets, max_distance, bidirectional=False)
        self.layers = nn.ModuleList(T5Layer(dim, num_heads, d_kv, d_ff, feed_forward, eps, dropout, cross=True)
                                    for _ in range(num_layers))
        self.final_norm = RMSNorm(dim, eps)
        self.dropout = nn.Dropout(dropout)
        init_t5(self, dim, num_heads, d_kv, d_ff)

    def forward(self, x: torch.Tensor, mask: Optional[torch.Tensor], encoder: torch.Tensor,
                encoder_mask: Optional[torch.Tensor] = None, past: Optional[torch.Tensor] = None,
                past_mask: Optional[torch.Tensor] = None) -> tuple[torch.Tensor, torch.Tensor]:
        """x (B, T, D), mask (B, T), encoder (B, S, D), encoder_mask (B, S), past (L, 2, B, H, P, d_kv),
        past_mask (B, P) -> (sequence (B, T, D), present (L, 2, B, H, P + T, d_kv))."""
        b, t = x.shape[0], x.shape[1]
        p = 0 if past is None else past.shape[4]
        if past is not None and (mask is not None or past_mask is not None):
            # an unbound half of the mask is all real
            old = past_mask.to(torch.bool) if past_mask is not None else \
                torch.ones(b, p, dtype=torch.bool, device=x.device)                 # (B, P)
            new = mask.to(torch.bool) if mask is not None else \
                torch.ones(b, t, dtype=torch.bool, device=x.device)                 # (B, T)
            mask = torch.cat([old, new], dim=1)                                  # (B, P + T)
        keep = None if mask is None else key_padding_mask(mask)                  # (B, 1, 1, P + T)
        cross_keep = None if encoder_mask is None else key_padding_mask(encoder_mask)   # (B, 1, 1, S)
        bias = self.position_bias(t, p + t, p)                                   # (1, H, T, P + T)
        x = self.dropout(x)
        present = []
        for i, layer in enumerate(self.layers):
            cached = None if past is None else (past[i, 0], past[i, 1])         # (B, H, P, d_kv) each
            x, (k, v) = layer.decode(x, keep, bias, encoder, cross_keep, cached)
            present.append(torch.cat([k.unsqueeze(0), v.unsqueeze(0)], dim=0).unsqueeze(0))   # (1, 2, B, H, P + T, d_kv)
        return self.dropout(self.final_norm(x)), torch.cat(present, dim=0)       # (L, 2, B, H, P + T, d_kv)


# ---- blocks ---------------------------------------------------------------------------------


def _check_mask(mask: Optional[PortType], like: tuple, port: str, what: str) -> None:
    if mask is None:
        return
    expect_rank(mask, 2, port, f" ({what})")
    if mask.dtype not in MASK_DTYPES:
        raise InferError(f"port `{port}` needs a bool or integer padding mask (1 = a real token, 0 = padding)",
                         port=port, code="E303", expected=" or ".join(MASK_DTYPES), found=str(mask),
                         hint="declare the mask input with dtype: int64 (or bool)")
    if tuple(mask.shape) != tuple(like):
        raise InferError(f"port `{port}` must be {what}", port=port, code="E302", expected=shape_str(like),
                         found=str(mask))


class _T5Params(Block):
    """The params both T5 stacks take (not registered itself)."""
    family: ClassVar[str] = "text"
    num_layers: PosInt
    num_heads: PosInt
    d_kv: PosInt                                  # head size; num_heads x d_kv need not be d_model
    d_ff: PosInt
    feed_forward: FeedForward = "relu"            # relu: T5 v1.0 (wi, wo); gated_gelu: T5 v1.1 (wi_0, wi_1, wo)
    num_buckets: PosInt = 32
    max_distance: PosInt = 128
    eps: Eps = 1e-6
    dropout: Prob = 0.0

    def _dim(self, x: PortType, port: str = "x") -> int:
        expect_rank(x, 3, port, " ([B, T, D] sequence)")
        expect_float(x, port)
        if self.num_buckets < 4 or self.num_buckets % 2:
            raise InferError("num_buckets must be even and at least 4 (T5: 32)", param="num_buckets",
                             expected="an even number >= 4", found=str(self.num_buckets))
        if self.max_distance <= self.num_buckets // 2:
            raise InferError("max_distance must exceed the exact buckets (num_buckets / 2) (T5: 128)",
                             param="max_distance", expected=f"more than {self.num_buckets // 2}",
                             found=str(self.max_distance))
        return expect_static(x.shape[2], port, "the feature size (last dim) of a T5 stack input")

    def _layer_count(self, d: int, cross: bool) -> int:
        inner = self.num_heads * self.d_kv
        attention = 4 * d * inner + d                                            # q, k, v, o and its norm
        ff = (3 if self.feed_forward == "gated_gelu" else 2) * d * self.d_ff + d
        return attention * (2 if cross else 1) + ff

    def _stack_count(self, d: int, cross: bool) -> int:
        return self.num_layers * self._layer_count(d, cross) + self.num_buckets * self.num_heads + d

    def _stack_args(self, d: int) -> dict:
        return dict(dim=d, num_layers=self.num_layers, num_heads=self.num_heads, d_kv=self.d_kv, d_ff=self.d_ff,
                    feed_forward=self.feed_forward, num_buckets=self.num_buckets, max_distance=self.max_distance,
                    eps=self.eps, dropout=self.dropout)


@register
class T5Encoder(_T5Params):
    """T5 encoder stack (Hugging Face `T5EncoderModel` minus the embedding): relative-bias self-attention
    layers, final RMS norm.

    `x` is the word embedding of the tokens (an `embedding` block with `positions: none, norm: false`);
    `mask` [B, S] (1 = a real token) keeps padding out of attention. Keys: `relative_bias`,
    `layers.N.{ln_1, self_attention, ln_2, mlp}`, `final_norm` (see the module docstring for the
    Hugging Face names and `HF_ENCODER_RULES`).
    """
    name: ClassVar[str] = "t5_encoder"
    inputs: ClassVar = {"x": In("sequence", doc="[B, S, D] word embeddings"),
                        "mask": In("mask", optional=True, doc="[B, S] 1 = a real token, 0 = padding")}
    outputs: ClassVar = ("sequence",)
    example: ClassVar = {"params": {"num_layers": 2, "num_heads": 2, "d_kv": 3, "d_ff": 16, "num_buckets": 8,
                                    "max_distance": 16, "feed_forward": "gated_gelu"},
                         "inputs": {"x": PortType("sequence", (2, 5, 8)), "mask": PortType("mask", (2, 5), "int64")}}

    def infer(self, x: PortType, mask: Optional[PortType] = None) -> dict[str, PortType]:
        self._dim(x)
        _check_mask(mask, x.shape[:2], "mask", "[B, S], the first two dims of `x`")
        return {"sequence": x}

    def param_count(self, x: PortType, mask: Optional[PortType] = None) -> int:
        return self._stack_count(self._dim(x), cross=False)

    def build(self, x: PortType, mask: Optional[PortType] = None) -> nn.Module:
        return T5EncoderStack(**self._stack_args(self._dim(x)))


@register
class T5Decoder(_T5Params):
    """T5 decoder stack (Hugging Face T5's `decoder` minus the embedding): causal relative-bias
    self-attention with a key/value cache, cross-attention to the encoder, final RMS norm.

    `x` [B, T, D]: embeddings of the T new target tokens; `mask` [B, T] and `past_mask` [B, P]: 1 = a
    real token; `past` [L, 2, B, H, P, d_kv]: self-attention keys and values of the P earlier steps
    (the previous call's `present`); the new tokens sit at positions P … P + T - 1. `present`
    [L, 2, B, H, P + T, d_kv] holds the keys and values of all P + T steps. Cross-attention keys and
    values are recomputed from `encoder` [B, S, D] (and `encoder_mask` [B, S]) on every call, not
    cached. Keys: `relative_bias`, `layers.N.{ln_1, self_attention, ln_cross, cross_attention, ln_2,
    mlp}`, `final_norm` (`HF_DECODER_RULES`). The LM head's d_model**-0.5 scaling of tied T5 models
    belongs to the `lm_head` block (`scale`).
    """
    name: ClassVar[str] = "t5_decoder"
    inputs: ClassVar = {
        "x": In("sequence", doc="[B, T, D] embeddings of the new target tokens"),
        "mask": In("mask", optional=True, doc="[B, T] 1 = a real token, 0 = padding"),
        "encoder": In("sequence", doc="[B, S, D] the encoder's sequence"),
        "encoder_mask": In("mask", optional=True, doc="[B, S] 1 = a real source token"),
        "past": In("kv_cache", optional=True, doc="[L, 2, B, H, P, d_kv] self-attention keys/values of P earlier steps"),
        "past_mask": In("mask", optional=True, doc="[B, P] 1 = a real earlier token"),
    }
    outputs: ClassVar = ("sequence", "present")
    example: ClassVar = {
        "params": {"num_layers": 2, "num_heads": 2, "d_kv": 3, "d_ff": 16, "num_buckets": 8, "max_distance": 16},
        "inputs": {"x": PortType("sequence", (2, 3, 8)), "mask": PortType("mask", (2, 3), "int64"),
                   "encoder": PortType("sequence", (2, 5, 8)), "encoder_mask": PortType("mask", (2, 5), "int64"),
                   "past": PortType("kv_cache", (2, 2, 2, 2, 4, 3)), "past_mask": PortType("mask", (2, 4), "int64")},
    }

    def _check(self, x: PortType, mask: Optional[PortType], encoder: PortType, encoder_mask: Optional[PortType],
               past: Optional[PortType], past_mask: Optional[PortType]) -> int:
        d = self._dim(x)
        b = x.shape[0]
        _check_mask(mask, x.shape[:2], "mask", "[B, T], the first two dims of `x`")
        expect_rank(encoder, 3, "encoder", " ([B, S, D] sequence)")
        expect_float(encoder, "encoder")
        if encoder.shape[0] != b or encoder.shape[2] != d:
            raise InferError("the encoder's sequence must have the batch and feature size of `x`", port="encoder",
                             code="E302", expected=f"[{format_dim(b)}, S, {d}]", found=str(encoder))
        _check_mask(encoder_mask, encoder.shape[:2], "encoder_mask", "[B, S], the first two dims of `encoder`")
        if past is None:
            if past_mask is not None:
                raise InferError("`past_mask` is connected but `past` is not", port="past_mask", code="E302",
                                 expected="past connected", found="past unbound",
                                 hint="connect `past` (the previous step's `present`), or leave `past_mask` out")
            return d
        expect_rank(past, 6, "past", " ([L, 2, B, H, P, d_kv] key/value cache)")
        if past.dtype != x.dtype:
            raise InferError("`past` must have the dtype of `x`", port="past", code="E303", expected=x.dtype,
                             found=past.dtype)
        want = (self.num_layers, 2, b, self.num_heads, past.shape[4], self.d_kv)
        if tuple(past.shape) != want:
            raise InferError("`past` must be [num_layers, 2, B, num_heads, P, d_kv]", port="past", code="E302",
                             expected=shape_str(want), found=str(past))
        _check_mask(past_mask, (b, past.shape[4]), "past_mask", "[B, P], the batch of `x` and the P of `past`")
        return d

    def infer(self, x: PortType, mask: Optional[PortType], encoder: PortType, encoder_mask: Optional[PortType] = None,
              past: Optional[PortType] = None, past_mask: Optional[PortType] = None) -> dict[str, PortType]:
        self._check(x, mask, encoder, encoder_mask, past, past_mask)
        b, t = x.shape[0], x.shape[1]
        steps = t if past is None else past.shape[4] + t
        return {"sequence": x,
                "present": PortType("kv_cache", (self.num_layers, 2, b, self.num_heads, steps, self.d_kv), x.dtype)}

    def param_count(self, x: PortType, mask: Optional[PortType], encoder: PortType,
                    encoder_mask: Optional[PortType] = None, past: Optional[PortType] = None,
                    past_mask: Optional[PortType] = None) -> int:
        return self._stack_count(self._check(x, mask, encoder, encoder_mask, past, past_mask), cross=True)

    def build(self, x: PortType, mask: Optional[PortType], encoder: PortType, encoder_mask: Optional[PortType] = None,
              past: Optional[PortType] = None, past_mask: Optional[PortType] = None) -> nn.Module:
        return T5DecoderStack(**self._stack_args(self._check(x, mask, encoder, encoder_mask, past, past_mask)))

"""Transformer encoders: `transformer_encoder_layer` (one layer) and `transformer_encoder` (a stack).

One layer serves text and vision: pre-norm as in ViT (torchvision's EncoderBlock), post-norm as in
BERT and ALBERT. Module names stay torchvision's whatever the options (`ln_1`, `self_attention`,
`ln_2`, `mlp.0`, `mlp.3`), so ViT checkpoints load unchanged and the Hugging Face families reach
them by rename rules. Attention is `blocks.core.attention.MultiHeadAttention`, the catalog's only
attention, with its `fused` (nn.MultiheadAttention's names) or `separate` (query/key/value) layout.
"""

from __future__ import annotations

from typing import ClassVar, Literal, Optional

import torch
from torch import nn

from composer.block import Block, In
from composer.dims import shape_str
from composer.params import Eps, PosInt, Prob
from composer.registry import register
from composer.types import InferError, PortType, expect_float, expect_rank, expect_static

from ..core.attention import MultiHeadAttention, key_padding_mask

Norm = Literal["pre", "post"]
FFNActivation = Literal["gelu", "gelu_tanh", "relu"]
QKV = Literal["fused", "separate"]
MASK_DTYPES = ("bool", "int64", "int32", "uint8")

_ACTIVATIONS = {"gelu": lambda: nn.GELU(), "gelu_tanh": lambda: nn.GELU(approximate="tanh"), "relu": lambda: nn.ReLU()}


class MLPBlock(nn.Sequential):
    """Linear, activation, Dropout, Linear, Dropout (keys `0.*`, `3.*` as torchvision's MLPBlock)."""

    def __init__(self, dim: int, mlp_dim: int, dropout: float, activation: FFNActivation = "gelu", bias: bool = True):
        super().__init__(nn.Linear(dim, mlp_dim, bias=bias), _ACTIVATIONS[activation](), nn.Dropout(dropout),
                         nn.Linear(mlp_dim, dim, bias=bias), nn.Dropout(dropout))
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                if m.bias is not None:
                    nn.init.normal_(m.bias, std=1e-6)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        for i in range(2):  # old torchvision checkpoints name the linears linear_1, linear_2
            for kind in ("weight", "bias"):
                old = f"{prefix}linear_{i + 1}.{kind}"
                if old in state_dict:
                    state_dict[f"{prefix}{3 * i}.{kind}"] = state_dict.pop(old)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)


class EncoderLayer(nn.Module):
    """Self-attention and an MLP, each in a residual with a layer norm.

    pre (ViT):   x = x + attn(ln_1(x));  x = x + mlp(ln_2(x))
    post (BERT): x = ln_1(x + attn(x));  x = ln_2(x + mlp(x))
    """

    def __init__(self, dim: int, num_heads: int, mlp_dim: int, dropout: float = 0.0, attention_dropout: float = 0.0,
                 eps: float = 1e-6, norm: Norm = "pre", activation: FFNActivation = "gelu", qkv: QKV = "fused",
                 bias: bool = True):
        super().__init__()
        self.pre_norm = norm == "pre"
        self.ln_1 = nn.LayerNorm(dim, eps=eps)
        self.self_attention = MultiHeadAttention(dim, num_heads, bias=bias, dropout=attention_dropout, layout=qkv)
        self.dropout = nn.Dropout(dropout)
        self.ln_2 = nn.LayerNorm(dim, eps=eps)
        self.mlp = MLPBlock(dim, mlp_dim, dropout, activation, bias)

    def forward(self, x: torch.Tensor, mask: Optional[torch.Tensor] = None, causal: bool = False,
                past: Optional[tuple[torch.Tensor, torch.Tensor]] = None, bias: Optional[torch.Tensor] = None,
                cache: bool = False):
        """x (B, T, D) -> (B, T, D); mask (B, T), 1 = a real token (or a prepared (B, 1, 1, T) boolean).

        Decoders pass `causal` and `past` (keys, values of earlier steps, each (B, H, P, hd), or None;
        the mask then covers P + T keys), or the stack's prepared additive `bias`, and `cache`; they
        get (x, (keys, values)) back, the P + T steps' cache."""
        decoding = causal or past is not None or cache
        h = self.ln_1(x) if self.pre_norm else x
        a = self.self_attention(h, mask, causal=causal, past=past, bias=bias, cache=decoding)
        a, kv = a if decoding else (a, None)
        if self.pre_norm:
            x = x + self.dropout(a)
            x = x + self.mlp(self.ln_2(x))
        else:
            x = self.ln_1(x + self.dropout(a))
            x = self.ln_2(x + self.mlp(x))
        return (x, kv) if decoding else x


class TransformerEncoderModule(nn.Module):
    """`num_layers` encoder layers under `layers.0`, `layers.1`, …; with `share_weights`, one layer
    (`layers.0`) applied `num_layers` times (ALBERT)."""

    def __init__(self, num_layers: int, share_weights: bool, **layer):
        super().__init__()
        self.num_layers = num_layers
        self.share_weights = share_weights
        self.layers = nn.ModuleList(EncoderLayer(**layer) for _ in range(1 if share_weights else num_layers))

    def forward(self, x: torch.Tensor, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        attn_mask = None if mask is None else key_padding_mask(mask)       # (B, T) -> (B, 1, 1, T), once
        if self.share_weights:
            for _ in range(self.num_layers):
                x = self.layers[0](x, attn_mask)
            return x
        for layer in self.layers:
            x = layer(x, attn_mask)
        return x

    def extra_repr(self) -> str:
        return f"num_layers={self.num_layers}, share_weights={self.share_weights}"


_MASK_DOC = "[B, T] padding mask: 1/True = a real token, 0 = padding (bool or integer)"


class _LayerParams(Block):
    """The params and checks one encoder layer has, shared by both blocks (not registered itself)."""
    family: ClassVar[str] = "text"
    inputs: ClassVar = {"x": In("sequence", doc="[B, T, D]"), "mask": In("mask", optional=True, doc=_MASK_DOC)}
    num_heads: PosInt
    mlp_dim: PosInt
    norm: Norm = "pre"
    activation: FFNActivation = "gelu"
    qkv: QKV = "fused"
    bias: bool = True
    dropout: Prob = 0.0
    attention_dropout: Prob = 0.0
    eps: Eps = 1e-6

    def _dim(self, x: PortType, mask: Optional[PortType]) -> int:
        expect_rank(x, 3, "x", " ([B, T, D] sequence)")
        expect_float(x, "x")
        d = expect_static(x.shape[2], "x", "the feature size (last dim) of a transformer layer input")
        if d % self.num_heads:
            raise InferError(f"num_heads={self.num_heads} must divide the feature size {d}", param="num_heads",
                             expected=f"a divisor of {d}", found=str(self.num_heads))
        if mask is not None:
            expect_rank(mask, 2, "mask", " ([B, T] padding mask)")
            if mask.dtype not in MASK_DTYPES:
                raise InferError("port `mask` needs a bool or integer padding mask (1 = a real token, 0 = padding)",
                                 port="mask", code="E303", expected=" or ".join(MASK_DTYPES), found=str(mask),
                                 hint="declare the mask input with dtype: int64 (or bool)")
            if tuple(mask.shape) != tuple(x.shape[:2]):
                raise InferError("the mask must have the [B, T] of `x`", port="mask", code="E302",
                                 expected=shape_str(x.shape[:2]), found=str(mask))
        return d

    def _layer_count(self, d: int) -> int:
        m, b = self.mlp_dim, int(self.bias)
        return 4 * d + (4 * d * d + 4 * d * b) + (2 * d * m + (m + d) * b)   # 2 norms, attention, MLP

    def _layer_args(self, d: int) -> dict:
        return dict(dim=d, num_heads=self.num_heads, mlp_dim=self.mlp_dim, dropout=self.dropout,
                    attention_dropout=self.attention_dropout, eps=self.eps, norm=self.norm,
                    activation=self.activation, qkv=self.qkv, bias=self.bias)

    def infer(self, x: PortType, mask: Optional[PortType] = None) -> PortType:
        self._dim(x, mask)
        return x


@register
class TransformerEncoderLayer(_LayerParams):
    """Transformer encoder layer: self-attention and an MLP; pre-norm (ViT, the default) or post-norm (BERT).

    Keys as torchvision's EncoderBlock: `ln_1`, `self_attention` (`in_proj_weight`/`in_proj_bias`/
    `out_proj` with `qkv: fused`; `query`/`key`/`value`/`out_proj` with `qkv: separate`), `ln_2`,
    `mlp.0`, `mlp.3`. The optional `mask` [B, T] (1 = a real token) keeps padding out of attention.
    """
    name: ClassVar[str] = "transformer_encoder_layer"
    example: ClassVar = {"params": {"num_heads": 2, "mlp_dim": 16},
                         "inputs": {"x": PortType("sequence", (2, 5, 8)), "mask": PortType("mask", (2, 5), "int64")}}

    def param_count(self, x: PortType, mask: Optional[PortType] = None) -> int:
        return self._layer_count(self._dim(x, mask))

    def build(self, x: PortType, mask: Optional[PortType] = None) -> nn.Module:
        return EncoderLayer(**self._layer_args(self._dim(x, mask)))


@register
class TransformerEncoder(_LayerParams):
    """Transformer encoder: `num_layers` encoder layers (BERT, ViT), or one layer applied `num_layers` times (ALBERT).

    Every layer param of `transformer_encoder_layer` applies to each layer; the layers' keys sit under
    `layers.0.`, `layers.1.`, … (only `layers.0.` with `share_weights: true`). No final layer norm:
    a pre-norm stack (ViT) is followed by a `layernorm` block.
    """
    name: ClassVar[str] = "transformer_encoder"
    example: ClassVar = {"params": {"num_layers": 2, "num_heads": 2, "mlp_dim": 16, "norm": "post", "qkv": "separate"},
                         "inputs": {"x": PortType("sequence", (2, 5, 8)), "mask": PortType("mask", (2, 5), "int64")}}
    num_layers: PosInt
    share_weights: bool = False

    def param_count(self, x: PortType, mask: Optional[PortType] = None) -> int:
        return self._layer_count(self._dim(x, mask)) * (1 if self.share_weights else self.num_layers)

    def build(self, x: PortType, mask: Optional[PortType] = None) -> nn.Module:
        return TransformerEncoderModule(self.num_layers, self.share_weights, **self._layer_args(self._dim(x, mask)))

"""Vision Transformer (torchvision's ViT-B/16 .. H/14) and its patch_embed part.

Module names mirror torchvision's `VisionTransformer` (`class_token`, `conv_proj`,
`encoder.pos_embedding`, `encoder.layers.encoder_layer_N`, `encoder.ln`, `heads.head`), so its state
dicts load with identical keys. The layers are the shared pre-norm `EncoderLayer` of
blocks/text/encoder.py (also the `transformer_encoder_layer` block), whose attention keeps
`nn.MultiheadAttention`'s parameter names.

The position embedding has one entry per patch of an `image_size` square image, so the input's
H and W must both be exactly `image_size` (fixed integers, not symbolic dims).
"""

from __future__ import annotations

import math
from collections import OrderedDict
from typing import ClassVar, Literal, Optional

import torch
from torch import nn

from composer.block import Block, In
from composer.params import PosInt, Prob
from composer.registry import register
from composer.types import InferError, PortType, expect_static

from ..text.encoder import EncoderLayer, TransformerEncoderLayer  # noqa: F401  (the block, importable from here too)
from .layers import in_channels

# variant: patch size, layers, heads, hidden dim, MLP dim
_VARIANTS = {
    "b16": (16, 12, 12, 768, 3072), "b32": (32, 12, 12, 768, 3072), "l16": (16, 24, 16, 1024, 4096),
    "l32": (32, 24, 16, 1024, 4096), "h14": (14, 32, 16, 1280, 5120),
}


def _patch_proj(cin: int, dim: int, patch: int) -> nn.Conv2d:
    conv = nn.Conv2d(cin, dim, kernel_size=patch, stride=patch)
    nn.init.trunc_normal_(conv.weight, std=math.sqrt(1 / (cin * patch * patch)))
    nn.init.zeros_(conv.bias)
    return conv


def _tokens(x: torch.Tensor, conv_proj: nn.Module, class_token: torch.Tensor) -> torch.Tensor:
    """Patchify and prepend the class token: (B, C, H, W) -> (B, 1 + H/p * W/p, D)."""
    x = conv_proj(x).flatten(2).transpose(1, 2)                   # (B, D, h, w) -> (B, h*w, D)
    return torch.cat([class_token.expand(x.shape[0], -1, -1), x], dim=1)


class PositionEmbedding(nn.Module):
    """A learned position embedding (`pos_embedding`, [1, T, D]) added to the tokens, then dropout."""

    def __init__(self, seq_len: int, dim: int, dropout: float):
        super().__init__()
        self.pos_embedding = nn.Parameter(torch.empty(1, seq_len, dim).normal_(std=0.02))
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(x + self.pos_embedding)


class PatchEmbedModule(nn.Module):
    """`class_token`, `conv_proj`, `position.pos_embedding`: torchvision's order, so a ViT checkpoint maps
    onto a pipeline of parts by order. (Deliberately not `encoder.pos_embedding`: with all four of
    torchvision's names, a key-prefix weights loader would map a whole ViT checkpoint onto this block.)"""

    def __init__(self, cin: int, dim: int, patch: int, seq_len: int, dropout: float):
        super().__init__()
        self.class_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.conv_proj = _patch_proj(cin, dim, patch)
        self.position = PositionEmbedding(seq_len, dim, dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.position(_tokens(x, self.conv_proj, self.class_token))


class Encoder(nn.Module):
    """Position embedding, dropout, the layers and a final layer norm (torchvision's Encoder)."""

    def __init__(self, seq_len: int, layers: int, heads: int, dim: int, mlp_dim: int, dropout: float,
                 attention_dropout: float):
        super().__init__()
        self.pos_embedding = nn.Parameter(torch.empty(1, seq_len, dim).normal_(std=0.02))
        self.dropout = nn.Dropout(dropout)
        self.layers = nn.Sequential(OrderedDict(
            (f"encoder_layer_{i}", EncoderLayer(dim, heads, mlp_dim, dropout, attention_dropout)) for i in range(layers)))
        self.ln = nn.LayerNorm(dim, eps=1e-6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.ln(self.layers(self.dropout(x + self.pos_embedding)))


class VisionTransformerModule(nn.Module):
    """ViT with outputs (pooled class token, {grid, tokens}[, logits])."""

    def __init__(self, cin: int, image_size: int, patch: int, layers: int, heads: int, dim: int, mlp_dim: int,
                 dropout: float, attention_dropout: float, num_classes: Optional[int]):
        super().__init__()
        self.grid = image_size // patch
        self.class_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.conv_proj = _patch_proj(cin, dim, patch)
        self.encoder = Encoder(self.grid ** 2 + 1, layers, heads, dim, mlp_dim, dropout, attention_dropout)
        self.heads = None
        if num_classes is not None:
            self.heads = nn.Sequential(OrderedDict(head=nn.Linear(dim, num_classes)))

    def forward(self, x: torch.Tensor):
        tokens = self.encoder(_tokens(x, self.conv_proj, self.class_token))   # (B, 1 + g*g, D)
        pooled = tokens[:, 0]                                                  # (B, D)
        grid = tokens[:, 1:].transpose(1, 2).unflatten(2, (self.grid, self.grid))  # (B, D, g, g)
        features = {"grid": grid, "tokens": tokens}
        if self.heads is None:
            return pooled, features
        return pooled, features, self.heads(pooled)


def _check_image(x: PortType, image_size: int, patch: int, param: str) -> int:
    """The input's channels; H and W must both equal `image_size` (a multiple of the patch size)."""
    c = in_channels(x, "a vision transformer")
    for axis, d in (("H", x.shape[2]), ("W", x.shape[3])):
        if d != image_size:
            raise InferError(
                f"the input's {axis} must be exactly image_size={image_size}: the position embedding has one "
                f"entry per patch of an image_size x image_size image", port="x", code="E302",
                expected=f"[B, {c}, {image_size}, {image_size}]", found=str(x),
                hint=f"fix H and W to {image_size} in `inputs` (or resize/crop to it), or set `{param}`")
    if image_size % patch:
        raise InferError(f"image_size {image_size} is not a multiple of the patch size {patch}", param=param,
                         expected=f"a multiple of {patch}", found=str(image_size))
    return c


@register
class PatchEmbed(Block):
    """ViT patch embedding: patchify conv, prepend a class token, add a learned position embedding.

    Input H and W must be fixed integers that are multiples of `patch_size`.
    """
    name: ClassVar[str] = "patch_embed"
    family: ClassVar[str] = "vision"
    inputs: ClassVar = {"x": In("feature_map", doc="[B, C, H, W] image, H and W fixed")}
    patch_size: PosInt = 16
    hidden_dim: PosInt = 768
    dropout: Prob = 0.0

    def _geometry(self, x: PortType) -> tuple[int, int]:
        c = in_channels(x, "a patch_embed")
        hw = []
        for axis, d in (("H", x.shape[2]), ("W", x.shape[3])):
            n = expect_static(d, "x", f"the input's {axis} (the position embedding has one entry per patch)")
            if n % self.patch_size:
                raise InferError(f"the input's {axis}={n} is not a multiple of patch_size {self.patch_size}",
                                 param="patch_size", expected=f"a divisor of {n}", found=str(self.patch_size))
            hw.append(n // self.patch_size)
        return c, hw[0] * hw[1] + 1

    def infer(self, x: PortType) -> PortType:
        _, t = self._geometry(x)
        return PortType("sequence", (x.shape[0], t, self.hidden_dim), x.dtype)

    def param_count(self, x: PortType) -> int:
        c, t = self._geometry(x)
        d = self.hidden_dim
        return d + d * c * self.patch_size ** 2 + d + t * d

    def build(self, x: PortType) -> nn.Module:
        c, t = self._geometry(x)
        return PatchEmbedModule(c, self.hidden_dim, self.patch_size, t, self.dropout)


@register
class ViT(Block):
    """Vision Transformer B/16 .. H/14 (torchvision-compatible weights): class token, grid and tokens, logits.

    The input's H and W must both be exactly `image_size` (fixed integers).
    """
    name: ClassVar[str] = "vit"
    family: ClassVar[str] = "vision"
    inputs: ClassVar = {"x": In("feature_map", doc="[B, 3, image_size, image_size] image")}
    outputs: ClassVar = ("pooled", "features", "logits")
    example: ClassVar = {"params": {"variant": "b32", "image_size": 32, "num_classes": 10},
                         "inputs": {"x": PortType("image", (2, 3, 32, 32))}}
    variant: Literal["b16", "b32", "l16", "l32", "h14"] = "b16"
    image_size: PosInt = 224
    num_classes: Optional[PosInt] = None   # None: no head, no `logits` port
    dropout: Prob = 0.0
    attention_dropout: Prob = 0.0

    def infer(self, x: PortType) -> dict[str, PortType]:
        patch, _, _, dim, _ = _VARIANTS[self.variant]
        _check_image(x, self.image_size, patch, "image_size")
        b, g = x.shape[0], self.image_size // patch
        # features: the patch grid (a map at stride `patch`) and the whole token sequence (class token first)
        fields = (("grid", PortType("feature_map", (b, dim, g, g), x.dtype)),
                  ("tokens", PortType("sequence", (b, g * g + 1, dim), x.dtype)))
        out = {"pooled": PortType("vector", (b, dim), x.dtype),
               "features": PortType("features", None, x.dtype, fields=fields,
                                    meta=(("strides", (patch, patch)), ("channels", (dim, dim))))}
        if self.num_classes is not None:
            out["logits"] = PortType("logits", (b, self.num_classes), x.dtype)
        return out

    def build(self, x: PortType) -> nn.Module:
        patch, layers, heads, dim, mlp = _VARIANTS[self.variant]
        c = _check_image(x, self.image_size, patch, "image_size")
        return VisionTransformerModule(c, self.image_size, patch, layers, heads, dim, mlp, self.dropout,
                                       self.attention_dropout, self.num_classes)

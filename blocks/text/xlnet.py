"""XLNet's encoder: `xlnet_encoder`, two-stream relative positional attention over word embeddings.

Written here rather than taken from `transformers.XLNetModel` because the reference keeps its
tensors length-first ([T, B, D]), embeds the ids itself and returns a different output (the query
stream) when `target_mapping` is given; here the layer takes the catalog's [B, T, D] sequences
from an `embedding` block, always gives both streams and the memory, and exports with the dynamo
ONNX exporter at dynamic batch and length. The attention itself is `blocks.core.attention.attend`,
the catalog's one softmax attention: the content term (q + r_w_bias)·k is its q·kᵀ, the position
term (q + r_r_bias)·r (relatively shifted) and the segment term (q + r_s_bias)·seg_embed are its
`bias`. `tests/blocks/text/test_xlnet.py` proves it equal to `XLNetModel`.

Per layer, as `XLNetLayer`: relative attention for the content stream h (queries at every token,
each seeing itself) and for the query stream g (queries from `mask_emb`, placed at the positions
`target_mapping` names, not seeing the content of the token they stand for unless `perm_mask`
lets them), each followed by the output projection `o`, a residual and `layer_norm`; then the
feed-forward sublayer (`layer_1`, activation, `layer_2`, residual, `layer_norm`) on both streams.

Parameter names are the reference's: `mask_emb`, `layer.N.rel_attn.{q,k,v,o,r,r_r_bias,r_s_bias,
r_w_bias,seg_embed,layer_norm}`, `layer.N.ff.{layer_norm,layer_1,layer_2}`; `HF_RULES` maps a
Hugging Face XLNet checkpoint onto a spec whose blocks are `emb` (an `embedding` with
`positions: none, norm: false`, holding `word_embedding` as `emb.word`) and `encoder`.
"""

from __future__ import annotations

from typing import ClassVar, Literal, Optional

import torch
from torch import nn

from composer.block import Block, In
from composer.dims import DimLike, shape_str, sym
from composer.params import Eps, PosInt, Prob
from composer.registry import register
from composer.types import FLOAT_DTYPES, InferError, PortType, expect_float, expect_rank, expect_static

from ..core.attention import attend
from .common import INIT_STD, expect_ids, init_like_bert

FFNActivation = Literal["gelu", "gelu_tanh", "relu"]
_ACTIVATIONS = {"gelu": lambda: nn.GELU(), "gelu_tanh": lambda: nn.GELU(approximate="tanh"), "relu": lambda: nn.ReLU()}

# Hugging Face XLNet keys -> a spec with an `emb` embedding block and an `encoder` xlnet_encoder block
# (task checkpoints nest the base model under `transformer.`, a bare XLNetModel does not)
HF_RULES: tuple[tuple[str, str], ...] = (
    (r"^(?:transformer\.)?word_embedding\.", "emb.word."),
    (r"^(?:transformer\.)?mask_emb$", "encoder.mask_emb"),
    (r"^(?:transformer\.)?layer\.(\d+)\.", r"encoder.layer.\1."),
)


def rel_shift(x: torch.Tensor, klen: int) -> torch.Tensor:
    """Scores against the relative positions (B, H, T, R = K + T), R running from distance K down to
    -T + 1, as scores against the K keys (B, H, T, K): entry (i, j) is entry (i, T - i + j) of the input.
    The reference's `rel_shift_bnij` (a reshape to (R, T) less its first row is the flat scores less their
    first T), written as a slice of the flattened scores: torch.export traces it for every T, where the
    reference's reshapes add a guard T != 1."""
    t, r = x.shape[2], x.shape[3]
    x = x.flatten(2)[..., t:]                                # (B, H, T * R - T): row by row, less the first T
    return x.unflatten(-1, (t, r - 1))[..., :klen]           # (B, H, T, R - 1) -> (B, H, T, K)


class RelativeAttention(nn.Module):
    """XLNet's two-stream relative attention with its output projection, residual and layer norm
    (`XLNetRelativeAttention`). Projections are [D, H, d_head] tensors, as the reference stores them."""

    def __init__(self, dim: int, num_heads: int, d_head: int, eps: float, dropout: float):
        super().__init__()
        self.num_heads, self.d_head = num_heads, d_head
        self.scale = 1 / d_head ** 0.5
        for name in ("q", "k", "v", "o", "r"):
            setattr(self, name, nn.Parameter(torch.empty(dim, num_heads, d_head)))
        for name in ("r_r_bias", "r_s_bias", "r_w_bias"):
            setattr(self, name, nn.Parameter(torch.empty(num_heads, d_head)))
        self.seg_embed = nn.Parameter(torch.empty(2, num_heads, d_head))
        self.layer_norm = nn.LayerNorm(dim, eps=eps)
        self.dropout = nn.Dropout(dropout)
        for p in (self.q, self.k, self.v, self.o, self.r, self.r_r_bias, self.r_s_bias, self.r_w_bias, self.seg_embed):
            nn.init.normal_(p, 0.0, INIT_STD)

    @staticmethod
    def _heads(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        """(B, L, D) through a [D, H, d_head] projection -> (B, H, L, d_head)."""
        return (x @ w.flatten(1)).unflatten(-1, w.shape[1:]).transpose(1, 2)

    def _core(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, k_r: torch.Tensor,
              seg: Optional[torch.Tensor], keep: Optional[torch.Tensor]) -> torch.Tensor:
        """q (B, H, T, hd) at the T positions; k, v (B, H, K, hd); k_r (H, hd, K + T) the position keys;
        seg (B, T, K) True where query and key lie in different segments; keep (B, 1, T or 1, K) the
        visible keys. -> (B, H, T, hd)."""
        bd = rel_shift(torch.matmul(q + self.r_r_bias[:, None], k_r), k.shape[2])     # (B, H, T, K)
        if seg is not None:
            ef = torch.matmul(q + self.r_s_bias[:, None], self.seg_embed.permute(1, 2, 0))   # (B, H, T, 2)
            bd = bd + torch.where(seg[:, None], ef[..., 1:], ef[..., :1])             # (B, H, T, K)
        p = self.dropout.p if self.training else 0.0
        return attend(q + self.r_w_bias[:, None], k, v, mask=keep, bias=bd * self.scale, scale=self.scale, dropout=p)

    def _post(self, x: torch.Tensor, vec: torch.Tensor) -> torch.Tensor:
        """vec (B, H, L, hd) through `o`, then the residual with x (B, L, D) and the layer norm."""
        # an explicit copy to (B, L, H, hd): which layout the attention returns differs between the fused
        # kernel seen while tracing and its ONNX decomposition, and a flatten traced as a view breaks there
        vec = vec.transpose(1, 2).clone(memory_format=torch.contiguous_format)      # (B, L, H, hd)
        out = vec.flatten(2) @ self.o.flatten(1).t()                                 # (B, L, D)
        return self.layer_norm(self.dropout(out) + x)

    def forward(self, h: torch.Tensor, g: torch.Tensor, pos: torch.Tensor, seg: Optional[torch.Tensor],
                keep_h: Optional[torch.Tensor], keep_g: Optional[torch.Tensor], mem: Optional[torch.Tensor],
                target_mapping: Optional[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """h (B, T, D) content, g (B, Q, D) query stream, pos (K + T, D) position encodings, mem (B, M, D);
        target_mapping (B, Q, T), None: query q stands at position q (Q = T). -> new (h, g)."""
        cat = h if mem is None else torch.cat([mem, h], dim=1)                       # (B, K = M + T, D)
        k, v = self._heads(cat, self.k), self._heads(cat, self.v)                    # (B, H, K, hd)
        k_r = (pos @ self.r.flatten(1)).unflatten(-1, self.r.shape[1:]).permute(1, 2, 0)   # (H, hd, K + T)
        out_h = self._post(h, self._core(self._heads(h, self.q), k, v, k_r, seg, keep_h))
        q_g = self._heads(g, self.q)                                                 # (B, H, Q, hd)
        if target_mapping is not None:
            q_g = target_mapping.transpose(1, 2)[:, None] @ q_g                      # (B, H, T, hd)
        vec = self._core(q_g, k, v, k_r, seg, keep_g)                                # (B, H, T, hd)
        if target_mapping is not None:
            vec = target_mapping[:, None] @ vec                                      # (B, H, Q, hd)
        return out_h, self._post(g, vec)


class FeedForward(nn.Module):
    """layer_norm(x + layer_2(act(layer_1(x)))), dropout after the activation and after layer_2 (`XLNetFeedForward`)."""

    def __init__(self, dim: int, d_inner: int, activation: FFNActivation, eps: float, dropout: float):
        super().__init__()
        self.layer_norm = nn.LayerNorm(dim, eps=eps)
        self.layer_1 = nn.Linear(dim, d_inner)
        self.layer_2 = nn.Linear(d_inner, dim)
        self.dropout = nn.Dropout(dropout)
        self.activation = _ACTIVATIONS[activation]()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.dropout(self.layer_2(self.dropout(self.activation(self.layer_1(x)))))
        return self.layer_norm(y + x)


class XLNetLayer(nn.Module):
    """Relative attention on both streams, then the feed-forward sublayer on each (`XLNetLayer`)."""

    def __init__(self, dim: int, num_heads: int, d_head: int, d_inner: int, activation: FFNActivation,
                 eps: float, dropout: float):
        super().__init__()
        self.rel_attn = RelativeAttention(dim, num_heads, d_head, eps, dropout)
        self.ff = FeedForward(dim, d_inner, activation, eps, dropout)

    def forward(self, h: torch.Tensor, g: torch.Tensor,
                *args: Optional[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """h (B, T, D), g (B, Q, D), then RelativeAttention's other inputs -> new (h, g)."""
        h, g = self.rel_attn(h, g, *args)
        return self.ff(h), self.ff(g)


class XLNetEncoderModule(nn.Module):
    """(x, mask, token_types, perm_mask, target_mapping, mems) -> (sequence, query, new_mems); see `XLNetEncoder`."""

    def __init__(self, num_layers: int, dim: int, num_heads: int, d_head: int, d_inner: int,
                 activation: FFNActivation, eps: float, dropout: float, clamp_len: int,
                 mem_len: Optional[int], reuse_len: Optional[int]):
        super().__init__()
        self.dim, self.clamp_len, self.mem_len, self.reuse_len = dim, clamp_len, mem_len, reuse_len
        self.mask_emb = nn.Parameter(torch.empty(1, 1, dim))
        self.layer = nn.ModuleList(XLNetLayer(dim, num_heads, d_head, d_inner, activation, eps, dropout)
                                   for _ in range(num_layers))
        self.dropout = nn.Dropout(dropout)
        init_like_bert(self.layer)               # the linears and norms; RelativeAttention draws its own tensors
        nn.init.normal_(self.mask_emb, 0.0, INIT_STD)

    def _positions(self, t: int, klen: int, like: torch.Tensor) -> torch.Tensor:
        """The sinusoid encodings of the relative distances klen, klen - 1, ..., -t + 1: (klen + t, D),
        sines then cosines, as the reference's `relative_positional_encoding` (attn_type bi, no bi_data)."""
        freq = torch.arange(0, self.dim, 2, dtype=torch.int64, device=like.device).float()
        inv_freq = 1 / torch.pow(10000, freq / self.dim)                              # (D / 2,)
        pos = torch.arange(klen, -t, -1, dtype=torch.int64, device=like.device).float()   # (K + T,)
        if self.clamp_len > 0:
            pos = pos.clamp(-self.clamp_len, self.clamp_len)
        angles = pos[:, None] * inv_freq                                              # (K + T, D / 2)
        return torch.cat([angles.sin(), angles.cos()], dim=-1).to(like.dtype)         # (K + T, D)

    @staticmethod
    def _masks(mask: Optional[torch.Tensor], perm_mask: Optional[torch.Tensor], mems: Optional[torch.Tensor],
               t: int, like: torch.Tensor) -> tuple[Optional[torch.Tensor], Optional[torch.Tensor]]:
        """Which keys each query sees, (B, 1, T or 1, K) booleans for the content and the query stream
        (None: all). Padding and perm_mask hide keys, memory is always visible, and the content stream
        always sees its own token, as the reference's `non_tgt_mask`."""
        if mask is None and perm_mask is None:
            return None, None
        hidden = 0
        if mask is not None:
            hidden = (1.0 - mask.to(like.dtype))[:, None, :]                          # (B, 1, T): 1 = padding
        if perm_mask is not None:
            hidden = hidden + perm_mask.to(like.dtype)                                # (B, T, T): 1 = not seen
        m = 0
        if mems is not None:
            m = mems.shape[2]
            hidden = torch.cat([hidden.new_zeros(hidden.shape[0], hidden.shape[1], m), hidden], dim=-1)
        blocked = hidden > 0                                                          # (B, 1 or T, K)
        keys = torch.arange(m + t, device=like.device)
        own = keys[None, :] == torch.arange(t, device=like.device)[:, None] + m       # (T, K): the token itself
        return (~blocked | own)[:, None], (~blocked)[:, None]

    def _cache(self, h: torch.Tensor, mem: Optional[torch.Tensor]) -> torch.Tensor:
        """A layer's input kept as memory (the reference's `cache_mem`): the first `reuse_len` tokens,
        after the earlier memory, the last `mem_len` of them; detached, as there."""
        cur = h if self.reuse_len is None else h[:, : self.reuse_len]
        new = cur if mem is None else torch.cat([mem, cur], dim=1)                   # (B, M + T, D)
        if self.mem_len is not None:
            new = new[:, -self.mem_len:]
        return new.detach()

    def forward(self, x: torch.Tensor, mask: Optional[torch.Tensor] = None, token_types: Optional[torch.Tensor] = None,
                perm_mask: Optional[torch.Tensor] = None, target_mapping: Optional[torch.Tensor] = None,
                mems: Optional[torch.Tensor] = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """x (B, T, D); mask (B, T) 1 = real; token_types (B, T); perm_mask (B, T, T) 1 = i cannot see j;
        target_mapping (B, Q, T); mems (L, B, M, D). -> (B, T, D), (B, Q or T, D), (L, B, M', D)."""
        b, t, _ = x.shape
        klen = t if mems is None else mems.shape[2] + t
        keep_h, keep_g = self._masks(mask, perm_mask, mems, t, x)
        seg = None
        if token_types is not None:
            cat_ids = token_types                                                     # memory counts as segment 0
            if mems is not None:
                cat_ids = torch.cat([token_types.new_zeros(b, mems.shape[2]), token_types], dim=1)   # (B, K)
            seg = token_types[:, :, None] != cat_ids[:, None, :]                      # (B, T, K): other segment
        pos = self.dropout(self._positions(t, klen, x))                               # (K + T, D)
        tm = None if target_mapping is None else target_mapping.to(x.dtype)
        q_len = t if tm is None else tm.shape[1]
        h = self.dropout(x)
        g = self.dropout(self.mask_emb.to(x.dtype).expand(b, q_len, -1))             # (B, Q, D)
        new_mems = []
        for i, layer in enumerate(self.layer):
            mem = None if mems is None else mems[i]                                   # (B, M, D)
            new_mems.append(self._cache(h, mem))
            h, g = layer(h, g, pos, seg, keep_h, keep_g, mem, tm)
        return self.dropout(h), self.dropout(g), torch.stack(new_mems)

    def extra_repr(self) -> str:
        return f"clamp_len={self.clamp_len}, mem_len={self.mem_len}, reuse_len={self.reuse_len}"


_NUMERIC = FLOAT_DTYPES + ("int64", "int32", "uint8", "bool")


def _expect_shape(t: PortType, port: str, want: tuple, what: str) -> None:
    if tuple(t.shape) != tuple(want):
        raise InferError(f"port `{port}` must be {what} {shape_str(want)}", port=port, code="E302",
                         expected=shape_str(want), found=str(t))


@register
class XLNetEncoder(Block):
    """XLNet encoder: two-stream relative positional attention (content and query stream), with segment
    terms and memory, equal to Hugging Face's XLNetModel.

    `x` [B, T, D] are the word embeddings (an `embedding` block with `positions: none, norm: false`;
    this block applies XLNet's dropout to them). `mask` [B, T] (1 = a real token) is XLNet's
    attention_mask, `token_types` [B, T] its segment ids, `perm_mask` [B, T, T] (1: token i does not
    see token j) the factorisation order, `target_mapping` [B, Q, T] (one-hot rows: the position each
    of Q predictions stands at) places the query stream, and `mems` [L, B, M, D] (the `new_mems` of the
    previous segment) are visible to every token.

    Outputs: `sequence` [B, T, D], the content stream after the last layer; `query` [B, Q, D], the
    query stream (XLNetModel's last_hidden_state when target_mapping is given); without
    `target_mapping` the query stream still runs, with query t at position t (Q = T, as target_mapping
    = the identity), so the outputs do not depend on what is bound; `new_mems` [L, B, M', D], each
    layer's input after `mems` (the first `reuse_len` tokens of this segment, the last `mem_len` of all).
    """
    name: ClassVar[str] = "xlnet_encoder"
    family: ClassVar[str] = "text"
    inputs: ClassVar = {
        "x": In("sequence", doc="[B, T, D] word embeddings"),
        "mask": In("mask", optional=True, doc="[B, T] 1 = a real token, 0 = padding (XLNet's attention_mask)"),
        "token_types": In("tokens", optional=True, doc="[B, T] segment ids (no segment term when unbound)"),
        "perm_mask": In("mask", "tensor", optional=True, doc="[B, T, T] 1 = token i does not see token j"),
        "target_mapping": In("tensor", optional=True, doc="[B, Q, T] float: prediction q stands at position t"),
        "mems": In("sequence", "tensor", optional=True, doc="[L, B, M, D] memory: an earlier segment's new_mems"),
    }
    outputs: ClassVar = ("sequence", "query", "new_mems")
    example: ClassVar = {
        "params": {"num_layers": 2, "num_heads": 2, "d_inner": 16, "mem_len": 4},
        "inputs": {"x": PortType("sequence", (2, 5, 8)), "mask": PortType("mask", (2, 5), "int64"),
                   "token_types": PortType("tokens", (2, 5), "int64"),
                   "perm_mask": PortType("mask", (2, 5, 5)), "target_mapping": PortType("tensor", (2, 3, 5)),
                   "mems": PortType("tensor", (2, 2, 3, 8))},
    }
    num_layers: PosInt
    num_heads: PosInt
    d_head: Optional[PosInt] = None       # None: D / num_heads
    d_inner: PosInt
    activation: FFNActivation = "gelu"    # HF ff_activation: gelu, relu, gelu_new (= gelu_tanh)
    eps: Eps = 1e-12
    dropout: Prob = 0.0
    bi_data: bool = False
    clamp_len: int = -1                   # > 0: relative distances clamped to [-clamp_len, clamp_len]
    attn_type: Literal["bi", "uni"] = "bi"
    same_length: bool = False
    mem_len: Optional[PosInt] = None      # None: keep the whole memory
    reuse_len: Optional[PosInt] = None    # None: all tokens of the segment go into the memory

    def _check(self, x: PortType, mask: Optional[PortType], token_types: Optional[PortType],
               perm_mask: Optional[PortType], target_mapping: Optional[PortType],
               mems: Optional[PortType]) -> tuple[int, int]:
        """(D, d_head) after checking the params and every bound port."""
        for param, value, want in (("bi_data", self.bi_data, False), ("attn_type", self.attn_type, "bi"),
                                   ("same_length", self.same_length, False)):
            if value != want:
                raise InferError(f"{param}: {str(value).lower()} is a pretraining setting of the original XLNet "
                                 "that xlnet_encoder does not implement", param=param, code="E305",
                                 expected=str(want).lower(), found=str(value).lower(),
                                 hint=f"leave `{param}` at {str(want).lower()} (every released checkpoint's setting)")
        expect_rank(x, 3, "x", " ([B, T, D] word embeddings)")
        expect_float(x, "x")
        d = expect_static(x.shape[2], "x", "the feature size (last dim) of the XLNet encoder's input")
        if self.d_head is None and d % self.num_heads:
            raise InferError(f"num_heads={self.num_heads} must divide the feature size {d}", param="num_heads",
                             expected=f"a divisor of {d} (or set d_head)", found=str(self.num_heads))
        b, t = x.shape[:2]
        if mask is not None:
            expect_rank(mask, 2, "mask", " ([B, T] padding mask)")
            if mask.dtype not in _NUMERIC:
                raise InferError("port `mask` needs a numeric padding mask", port="mask", code="E303",
                                 expected="int64, bool or float", found=mask.dtype)
            _expect_shape(mask, "mask", (b, t), "the [B, T] of `x`:")
        if token_types is not None:
            expect_ids(token_types, "token_types")
            _expect_shape(token_types, "token_types", (b, t), "the [B, T] of `x`:")
        if perm_mask is not None:
            expect_rank(perm_mask, 3, "perm_mask", " ([B, T, T]: 1 = token i does not see token j)")
            if perm_mask.dtype not in _NUMERIC:
                raise InferError("port `perm_mask` needs numbers (0/1)", port="perm_mask", code="E303",
                                 expected="float32, int64 or bool", found=perm_mask.dtype)
            _expect_shape(perm_mask, "perm_mask", (b, t, t), "[B, T, T] with the B, T of `x`:")
        if target_mapping is not None:
            expect_rank(target_mapping, 3, "target_mapping", " ([B, Q, T])")
            expect_float(target_mapping, "target_mapping")
            _expect_shape(target_mapping, "target_mapping", (b, target_mapping.shape[1], t),
                          "[B, Q, T] with the B, T of `x`:")
        if mems is not None:
            expect_rank(mems, 4, "mems", " ([L, B, M, D] memory)")
            _expect_shape(mems, "mems", (self.num_layers, b, mems.shape[2], d),
                          "[num_layers, B, M, D] with the B, D of `x`:")
            if mems.dtype != x.dtype:
                raise InferError("port `mems` must have the dtype of `x`", port="mems", code="E303",
                                 expected=x.dtype, found=mems.dtype)
        return d, self.d_head or d // self.num_heads

    def _mem_length(self, m: DimLike, t: DimLike) -> DimLike:
        """The length of `new_mems`: M + T, or fewer with `reuse_len` / `mem_len` (a new dim where the
        minimum depends on the input size)."""
        cur = t
        if self.reuse_len is not None:
            cur = min(t, self.reuse_len) if isinstance(t, int) else None
        n = None if cur is None else m + cur
        if self.mem_len is not None:
            n = min(n, self.mem_len) if isinstance(n, int) else None
        return sym("M_new") if n is None else n

    def infer(self, x: PortType, mask: Optional[PortType] = None, token_types: Optional[PortType] = None,
              perm_mask: Optional[PortType] = None, target_mapping: Optional[PortType] = None,
              mems: Optional[PortType] = None) -> dict[str, PortType]:
        d, _ = self._check(x, mask, token_types, perm_mask, target_mapping, mems)
        b, t = x.shape[:2]
        q = t if target_mapping is None else target_mapping.shape[1]
        m = 0 if mems is None else mems.shape[2]
        return {"sequence": PortType("sequence", (b, t, d), x.dtype),
                "query": PortType("sequence", (b, q, d), x.dtype),
                "new_mems": PortType("tensor", (self.num_layers, b, self._mem_length(m, t), d), x.dtype)}

    def param_count(self, x: PortType, mask: Optional[PortType] = None, token_types: Optional[PortType] = None,
                    perm_mask: Optional[PortType] = None, target_mapping: Optional[PortType] = None,
                    mems: Optional[PortType] = None) -> int:
        d, hd = self._check(x, mask, token_types, perm_mask, target_mapping, mems)
        inner, f = self.num_heads * hd, self.d_inner
        attn = 5 * d * inner + 5 * inner + 2 * d              # q k v o r, three biases and seg_embed, layer_norm
        ff = 2 * d + (d * f + f) + (f * d + d)
        return d + self.num_layers * (attn + ff)              # mask_emb, layers

    def build(self, x: PortType, mask: Optional[PortType] = None, token_types: Optional[PortType] = None,
              perm_mask: Optional[PortType] = None, target_mapping: Optional[PortType] = None,
              mems: Optional[PortType] = None) -> nn.Module:
        d, hd = self._check(x, mask, token_types, perm_mask, target_mapping, mems)
        return XLNetEncoderModule(self.num_layers, d, self.num_heads, hd, self.d_inner, self.activation, self.eps,
                                  self.dropout, self.clamp_len, self.mem_len, self.reuse_len)

"""The diffusion UNet (`unet2d`): the denoiser of DDPM/DDIM, in the layout of `diffusers.UNet2DModel`.

Written here rather than taken from diffusers because diffusers is a reference of the tests, not a
runtime dependency, and because the block must type-check before any weight exists: the sample's
H and W have to be divisible by 2**(levels - 1) (each level but the last halves them, and the up
path doubles them back and concatenates the skips), which `infer` proves from the dims' declared
`multiple_of`, and channels, groups and heads are checked against each other there too.

The module tree is diffusers' (`conv_in`, `time_embedding.linear_{1,2}`, `down_blocks.N.resnets.M.
{norm1,conv1,time_emb_proj,norm2,conv2,conv_shortcut}`, `down_blocks.N.attentions.M`,
`down_blocks.N.downsamplers.0.conv`, `mid_block`, `up_blocks.N...upsamplers.0.conv`,
`conv_norm_out`, `conv_out`), so a `UNet2DModel` state dict loads key for key except inside the
self-attention layers: those are the catalog's one attention (`blocks.core.attention.
MultiHeadAttention`, separate layout), whose projections are `attn.{query,key,value,out_proj}`
where diffusers has `to_q`, `to_k`, `to_v`, `to_out.0`. `DIFFUSERS_RULES` (or `diffusers_rules(block)`
for a pipeline whose UNet block has a name) renames those keys for `composer.weights`.

Supported: the positional (sinusoidal) time embedding, `DownBlock2D`/`AttnDownBlock2D` and
`UpBlock2D`/`AttnUpBlock2D` per level with conv down/upsampling, the `UNetMidBlock2D` with or
without attention, SiLU, `resnet_time_scale_shift: default`, no class conditioning.
"""

from __future__ import annotations

import math
from typing import ClassVar, Optional

import torch
import torch.nn.functional as F
from pydantic import Field, model_validator
from torch import nn

from blocks.core.attention import MultiHeadAttention
from composer.block import Block, In, Params
from composer.dims import DimLike, floordiv, format_dim
from composer.params import Eps, NonNegInt, PosInt, Prob
from composer.registry import register
from composer.types import FLOAT_DTYPES, InferError, PortType, expect_float, expect_rank, expect_static

# diffusers' attention keys -> this module's (state-dict keys of the UNet module itself)
DIFFUSERS_RULES: tuple[tuple[str, str], ...] = (
    (r"^(.*\.attentions\.\d+\.)to_q\.", r"\1attn.query."),
    (r"^(.*\.attentions\.\d+\.)to_k\.", r"\1attn.key."),
    (r"^(.*\.attentions\.\d+\.)to_v\.", r"\1attn.value."),
    (r"^(.*\.attentions\.\d+\.)to_out\.0\.", r"\1attn.out_proj."),
)


def diffusers_rules(block: str = "") -> list[tuple[str, str]]:
    """Rename rules from a `diffusers.UNet2DModel` state dict onto a pipeline whose `unet2d` block is
    named `block` (every key gets the `block.` prefix; '' for the bare module)."""
    rules = list(DIFFUSERS_RULES)
    if block:
        rules.append((r"^", f"{block}."))
    return rules


# ---- layers -----------------------------------------------------------------------------------


def timestep_frequencies(dim: int, freq_shift: float, max_period: float = 10000.0,
                         device: Optional[torch.device] = None) -> torch.Tensor:
    """The dim // 2 frequencies of the sinusoidal embedding: exp(-ln(max_period) * i / (dim/2 - shift))."""
    half = dim // 2
    exponent = -math.log(max_period) * torch.arange(half, dtype=torch.float32, device=device) / (half - freq_shift)
    return torch.exp(exponent)


class Timesteps(nn.Module):
    """Sinusoidal timestep features [B] -> [B, dim] (DDPM's): sin then cos of t x frequencies, or cos
    first with `flip_sin_to_cos`. The frequencies are computed in forward (no tensor to hold, so a
    module built on the meta device and given its weights is complete)."""

    def __init__(self, dim: int, flip_sin_to_cos: bool, freq_shift: float):
        super().__init__()
        self.dim, self.flip, self.shift = dim, flip_sin_to_cos, freq_shift

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        freqs = timestep_frequencies(self.dim, self.shift, device=t.device)
        arg = t[:, None].float() * freqs[None, :]                    # (B, dim/2)
        parts = (torch.cos(arg), torch.sin(arg)) if self.flip else (torch.sin(arg), torch.cos(arg))
        emb = torch.cat(parts, dim=-1)                               # (B, 2 * (dim/2))
        return F.pad(emb, (0, 1)) if self.dim % 2 else emb


class TimestepEmbedding(nn.Module):
    """linear_1 -> SiLU -> linear_2: the timestep features to the embedding every resnet adds."""

    def __init__(self, cin: int, dim: int):
        super().__init__()
        self.linear_1 = nn.Linear(cin, dim)
        self.act = nn.SiLU()
        self.linear_2 = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear_2(self.act(self.linear_1(x)))


class ResnetBlock2D(nn.Module):
    """GroupNorm -> SiLU -> conv3x3, + the projected time embedding, GroupNorm -> SiLU -> dropout ->
    conv3x3, plus the input (through a 1x1 conv where the channels change).

    `forward` takes the embedding after its SiLU (`act_temb`), computed once for every resnet of the
    UNet: diffusers applies the same SiLU inside each resnet, which gives the same values."""

    def __init__(self, cin: int, cout: int, temb: int, groups: int, eps: float, dropout: float):
        super().__init__()
        self.norm1 = nn.GroupNorm(groups, cin, eps=eps)
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1)
        self.time_emb_proj = nn.Linear(temb, cout)
        self.norm2 = nn.GroupNorm(groups, cout, eps=eps)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1)
        self.conv_shortcut = nn.Conv2d(cin, cout, 1) if cin != cout else None

    def forward(self, x: torch.Tensor, act_temb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))                               # (B, C_out, H, W)
        h = h + self.time_emb_proj(act_temb)[:, :, None, None]              # + (B, C_out, 1, 1)
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))
        return (x if self.conv_shortcut is None else self.conv_shortcut(x)) + h


class SelfAttention2D(nn.Module):
    """Residual self-attention over the H x W positions: GroupNorm, then the catalog's
    `MultiHeadAttention` on the [B, H*W, C] tokens, added back to the input."""

    def __init__(self, channels: int, head_dim: int, groups: int, eps: float):
        super().__init__()
        self.group_norm = nn.GroupNorm(groups, channels, eps=eps)
        self.attn = MultiHeadAttention(channels, channels // head_dim, layout="separate")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        y = self.group_norm(x).flatten(2).transpose(1, 2)                  # (B, H*W, C)
        y = self.attn(y)                                                    # (B, H*W, C)
        return x + y.transpose(1, 2).reshape(b, c, h, w)


class Downsample2D(nn.Module):
    """conv3x3 at stride 2, padding 1: H -> H/2."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class Upsample2D(nn.Module):
    """Nearest-neighbour x2, then conv3x3: H -> 2H."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class DownBlock2D(nn.Module):
    """A down level: resnets (each followed by self-attention on an attention level), then a
    downsampler except on the last level. Every resnet's (or attention's) output and the
    downsampler's are pushed on the skip stack."""

    def __init__(self, resnets: list[ResnetBlock2D], attentions: Optional[list[SelfAttention2D]],
                 down: Optional[Downsample2D]):
        super().__init__()
        self.attentions = nn.ModuleList(attentions) if attentions else None      # diffusers' registration order
        self.resnets = nn.ModuleList(resnets)
        self.downsamplers = nn.ModuleList([down]) if down is not None else None

    def forward(self, x: torch.Tensor, act_temb: torch.Tensor, skips: list[torch.Tensor]) -> torch.Tensor:
        for i, resnet in enumerate(self.resnets):
            x = resnet(x, act_temb)
            if self.attentions is not None:
                x = self.attentions[i](x)
            skips.append(x)
        if self.downsamplers is not None:
            x = self.downsamplers[0](x)
            skips.append(x)
        return x


class UpBlock2D(nn.Module):
    """An up level: per resnet, the last skip concatenated on the channels, the resnet (and the
    self-attention on an attention level); then an upsampler except on the last level."""

    def __init__(self, resnets: list[ResnetBlock2D], attentions: Optional[list[SelfAttention2D]],
                 up: Optional[Upsample2D]):
        super().__init__()
        self.attentions = nn.ModuleList(attentions) if attentions else None      # diffusers' registration order
        self.resnets = nn.ModuleList(resnets)
        self.upsamplers = nn.ModuleList([up]) if up is not None else None

    def forward(self, x: torch.Tensor, act_temb: torch.Tensor, skips: list[torch.Tensor]) -> torch.Tensor:
        for i, resnet in enumerate(self.resnets):
            x = resnet(torch.cat([x, skips.pop()], dim=1), act_temb)       # (B, C + C_skip, H, W) -> (B, C_out, H, W)
            if self.attentions is not None:
                x = self.attentions[i](x)
        if self.upsamplers is not None:
            x = self.upsamplers[0](x)
        return x


class UNetMidBlock2D(nn.Module):
    """resnet, (self-attention), resnet at the lowest resolution."""

    def __init__(self, resnets: list[ResnetBlock2D], attention: Optional[SelfAttention2D]):
        super().__init__()
        self.attentions = nn.ModuleList([attention]) if attention is not None else None
        self.resnets = nn.ModuleList(resnets)

    def forward(self, x: torch.Tensor, act_temb: torch.Tensor) -> torch.Tensor:
        x = self.resnets[0](x, act_temb)
        if self.attentions is not None:
            x = self.attentions[0](x)
        return self.resnets[1](x, act_temb)


class UNet2D(nn.Module):
    """(sample [B, C, H, W], timestep [B] or []) -> [B, C_out, H, W]; see the module docstring."""

    def __init__(self, conv_in: nn.Conv2d, time_proj: Timesteps, time_embedding: TimestepEmbedding,
                 down: list[DownBlock2D], mid: UNetMidBlock2D, up: list[UpBlock2D], out_channels: int,
                 groups: int, eps: float):
        super().__init__()
        self.conv_in, self.time_proj, self.time_embedding = conv_in, time_proj, time_embedding
        self.down_blocks = nn.ModuleList(down)
        self.up_blocks = nn.ModuleList(up)              # before mid_block: diffusers' state-dict order
        self.mid_block = mid
        c0 = conv_in.out_channels
        self.conv_norm_out = nn.GroupNorm(groups, c0, eps=eps)
        self.conv_act = nn.SiLU()
        self.conv_out = nn.Conv2d(c0, out_channels, 3, padding=1)

    def forward(self, sample: torch.Tensor, timestep: torch.Tensor) -> torch.Tensor:
        t = timestep.reshape(-1).expand(sample.shape[0])                    # [] or [1] or [B] -> (B,)
        emb = self.time_embedding(self.time_proj(t).to(sample.dtype))       # (B, 4 * C0)
        act_temb = F.silu(emb)
        x = self.conv_in(sample)                                            # (B, C0, H, W)
        skips = [x]
        for block in self.down_blocks:
            x = block(x, act_temb, skips)
        x = self.mid_block(x, act_temb)
        for block in self.up_blocks:
            x = block(x, act_temb, skips)
        return self.conv_out(self.conv_act(self.conv_norm_out(x)))


# ---- the block ---------------------------------------------------------------------------------


class UNetNorm(Params):
    """The group norms of every resnet, attention and the output (diffusers' `norm_num_groups`, `norm_eps`)."""

    groups: PosInt = 32
    eps: Eps = 1e-5


class TimeEmbedding(Params):
    """The sinusoidal timestep embedding (diffusers' `flip_sin_to_cos`, `freq_shift`, `time_embedding_dim`)."""

    flip_sin_to_cos: bool = True
    freq_shift: NonNegInt = 0
    dim: Optional[PosInt] = Field(default=None, description="the embedding width (default 4 x channels[0])")


class MidBlock(Params):
    """The middle block (diffusers' `add_attention`)."""

    attention: bool = True


@register
class UNet2DBlock(Block):
    """The diffusion UNet of DDPM (diffusers' `UNet2DModel`): a noisy sample and its timestep in, the
    predicted noise (or v, or x0) out, same H x W.

    `channels` are the output channels of each level (diffusers' `block_out_channels`); each level
    but the last halves H and W, so both must be multiples of 2**(levels - 1) (declare the dims
    `multiple_of` it). `attention` marks the levels with self-attention (AttnDownBlock2D /
    AttnUpBlock2D), one bool per level; `attention_head_dim` is the width of each head (None: one head).
    Load a diffusers state dict with the rename rules `blocks.generative.unet.diffusers_rules(name)`.
    """
    name: ClassVar[str] = "unet2d"
    family: ClassVar[str] = "generative"
    inputs: ClassVar = {"sample": In("feature_map", doc="[B, C, H, W] the noisy sample x_t"),
                        "timestep": In("tensor", doc="[B] (or []) the diffusion timestep, int64 or float")}
    example: ClassVar = {"params": {"channels": [8, 16], "layers_per_block": 1, "attention": [False, True],
                                    "attention_head_dim": 4, "norm": {"groups": 4}},
                         "inputs": {"sample": PortType("feature_map", (2, 3, 16, 16)),
                                    "timestep": PortType("tensor", (2,), "int64")}}
    channels: list[PosInt] = Field(min_length=1, description="output channels per level (block_out_channels)")
    out_channels: Optional[PosInt] = Field(default=None, description="default: the sample's channels")
    layers_per_block: PosInt = 2
    attention: Optional[list[bool]] = Field(default=None, description="self-attention per level (default: none)")
    attention_head_dim: Optional[PosInt] = 8
    norm: UNetNorm = UNetNorm()
    time_embedding: TimeEmbedding = TimeEmbedding()
    mid: MidBlock = MidBlock()
    dropout: Prob = 0.0

    @model_validator(mode="after")
    def _levels(self) -> "UNet2DBlock":
        if self.attention is not None and len(self.attention) != len(self.channels):
            raise ValueError(f"`attention` needs one bool per level: {len(self.channels)} (as `channels`), "
                             f"not {len(self.attention)}")
        return self

    # -- types ----------------------------------------------------------------------------------

    @property
    def factor(self) -> int:
        return 2 ** (len(self.channels) - 1)

    def _attn(self, level: int) -> bool:
        return bool(self.attention and self.attention[level])

    def _check_params(self) -> None:
        g = self.norm.groups
        bad = [c for c in self.channels if c % g]
        if bad:
            raise InferError(f"norm.groups={g} must divide the channels of every level ({bad[0]} is not a multiple)",
                             param="norm", expected=f"a divisor of {self.channels}", found=str(g))
        hd = self.attention_head_dim
        if hd is not None:
            bad = [c for i, c in enumerate(self.channels) if (self._attn(i) or (i == len(self.channels) - 1 and
                                                                                self.mid.attention)) and c % hd]
            if bad:
                raise InferError(f"attention_head_dim={hd} must divide the channels of every level with attention "
                                 f"({bad[0]} is not a multiple)", param="attention_head_dim",
                                 expected=f"a divisor of {bad[0]}", found=str(hd))

    def _in_channels(self, sample: PortType, timestep: PortType) -> int:
        expect_rank(sample, 4, "sample", " [B, C, H, W]")
        expect_float(sample, "sample")
        c = expect_static(sample.shape[1], "sample", "the channel count of a unet2d sample")
        if timestep.shape is None or len(timestep.shape) not in (0, 1):
            raise InferError("port `timestep` needs one timestep per sample, [B] (or one for all, [])",
                             port="timestep", code="E302", expected="[B] or []", found=str(timestep))
        if timestep.dtype not in FLOAT_DTYPES + ("int64", "int32"):
            raise InferError("port `timestep` needs integer or float timesteps", port="timestep", code="E303",
                             expected="int64 or float32", found=timestep.dtype)
        if timestep.rank == 1 and timestep.shape[0] not in (1, sample.shape[0]):
            raise InferError("`timestep` and `sample` have different batch sizes", port="timestep", code="E302",
                             expected=f"[{format_dim(sample.shape[0])}]", found=str(timestep))
        self._check_params()
        for axis, name in ((2, "H"), (3, "W")):
            self._check_divisible(sample.shape[axis], name)
        return c

    def _check_divisible(self, d: DimLike, name: str) -> None:
        f = self.factor
        if f == 1:
            return
        if floordiv(d, f) * f == d:
            return
        levels = len(self.channels)
        if isinstance(d, int):
            found, hint = str(d), f"resize the sample to a multiple of {f}, or use fewer levels"
        else:
            found = f"{format_dim(d)} (not declared a multiple of {f})"
            hint = f"declare the dim `multiple_of: {f}` in `dims`, or use fewer levels"
        raise InferError(f"the sample's {name} must be divisible by {f}: the UNet's {levels} levels halve it "
                         f"{levels - 1} times and double it back", port="sample", code="E302",
                         expected=f"a multiple of {f}", found=found, hint=hint)

    def infer(self, sample: PortType, timestep: PortType) -> PortType:
        c = self._in_channels(sample, timestep)
        out = self.out_channels or c
        return PortType("feature_map", (sample.shape[0], out, sample.shape[2], sample.shape[3]), sample.dtype)

    # -- the layout, shared by the count and the build -------------------------------------------

    def _temb(self) -> int:
        return self.time_embedding.dim or 4 * self.channels[0]

    def _plan(self) -> tuple[list, list]:
        """(down levels, up levels): per level its resnets' (C_in, C_out), whether it attends, and
        whether it resamples. The up resnets' inputs add the skips, popped in reverse."""
        ch, n, levels = self.channels, self.layers_per_block, len(self.channels)
        skips, down, cin = [ch[0]], [], ch[0]
        for i, cout in enumerate(ch):
            resnets = [(cin if j == 0 else cout, cout) for j in range(n)]
            skips += [cout] * n
            last = i == levels - 1
            if not last:
                skips.append(cout)
            down.append((resnets, self._attn(i), not last))
            cin = cout
        up, prev = [], ch[-1]
        for i in range(levels):
            level = levels - 1 - i
            cout = ch[level]
            resnets = []
            for j in range(n + 1):
                resnets.append(((prev if j == 0 else cout) + skips.pop(), cout))
            up.append((resnets, self._attn(level), level != 0))
            prev = cout
        return down, up

    def param_count(self, sample: PortType, timestep: PortType) -> int:
        cin = self._in_channels(sample, timestep)
        out, temb, c0 = self.out_channels or cin, self._temb(), self.channels[0]
        conv = lambda i, o, k=3: o * i * k * k + o  # noqa: E731
        lin = lambda i, o: i * o + o  # noqa: E731
        resnet = lambda i, o: 2 * i + conv(i, o) + lin(temb, o) + 2 * o + conv(o, o) + (conv(i, o, 1) if i != o else 0)  # noqa: E731
        attn = lambda c: 2 * c + 4 * lin(c, c)  # noqa: E731
        down, up = self._plan()
        total = conv(cin, c0) + lin(c0, temb) + lin(temb, temb) + 2 * c0 + conv(c0, out)
        for resnets, has_attn, resample in down + up:
            total += sum(resnet(i, o) for i, o in resnets)
            total += has_attn * sum(attn(o) for _, o in resnets) + resample * conv(resnets[-1][1], resnets[-1][1])
        cm = self.channels[-1]
        return total + 2 * resnet(cm, cm) + (attn(cm) if self.mid.attention else 0)

    def build(self, sample: PortType, timestep: PortType) -> nn.Module:
        cin = self._in_channels(sample, timestep)
        g, eps, temb, p = self.norm.groups, self.norm.eps, self._temb(), self.dropout
        res = lambda i, o: ResnetBlock2D(i, o, temb, g, eps, p)  # noqa: E731
        att = lambda c: SelfAttention2D(c, self.attention_head_dim or c, g, eps)  # noqa: E731
        c0, cm = self.channels[0], self.channels[-1]
        down_plan, up_plan = self._plan()
        te = self.time_embedding
        conv_in = nn.Conv2d(cin, c0, 3, padding=1)                  # built in diffusers' order
        time_proj, time_embedding = Timesteps(c0, te.flip_sin_to_cos, te.freq_shift), TimestepEmbedding(c0, temb)
        down = [DownBlock2D([res(i, o) for i, o in rs], [att(o) for _, o in rs] if a else None,
                            Downsample2D(rs[-1][1]) if r else None) for rs, a, r in down_plan]
        mid = UNetMidBlock2D([res(cm, cm), res(cm, cm)], att(cm) if self.mid.attention else None)
        up = [UpBlock2D([res(i, o) for i, o in rs], [att(o) for _, o in rs] if a else None,
                        Upsample2D(rs[-1][1]) if r else None) for rs, a, r in up_plan]
        return UNet2D(conv_in, time_proj, time_embedding, down, mid, up, self.out_channels or cin, g, eps)

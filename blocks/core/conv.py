"""2-D, transposed 2-D and 1-D convolution, and TensorFlow-style "same" padding shared by the conv blocks."""

from __future__ import annotations

from typing import ClassVar, Literal, Optional, Sequence, Union

import torch
import torch.nn.functional as F
from torch import nn

from composer.block import Block, In
from composer.dims import DimLike, ceildiv, conv_out, floordiv, is_static
from composer.params import NonNegInt, Pad2, PosInt, Size2, pair
from composer.registry import register
from composer.types import InferError, PortType, expect_float, expect_rank, expect_static

from .norm import with_spectral_norm

# ---- TensorFlow "same" padding --------------------------------------------------------------


def same_pad(size: DimLike, kernel: int, stride: int = 1, dilation: int = 1) -> Optional[tuple[int, int]]:
    """TensorFlow's "same" padding (before, after) of one spatial dim, or None where it depends on the size.

    The output is ceil(n / s) and the total padding max((ceil(n/s) - 1)*s + (k-1)*d + 1 - n, 0), the
    smaller half before. The total depends only on n mod s (it is max((k-1)*d + 1 - (n mod s or s), 0)),
    so it is one constant when the size is static, the stride is 1, the dim is known to be a multiple
    of the stride (a `multiple_of` dim), or the kernel spans one pixel; only then is it returned.
    """
    span = (kernel - 1) * dilation + 1
    if span == 1:
        return 0, 0
    rem = size - floordiv(size, stride) * stride          # size mod stride, when the dims can tell
    if not is_static(rem):
        return None
    total = max(span - (rem or stride), 0)
    return total // 2, total - total // 2


def same_out(size: DimLike, stride: int) -> DimLike:
    """The output size of a "same"-padded conv: ceil(size / stride)."""
    return ceildiv(size, stride)


def _runtime_pad(n, kernel: int, stride: int, dilation: int) -> tuple:
    """`same_pad` of a runtime size (a SymInt under torch.export, exported as shape arithmetic).

    The total is at least span - stride, so the max with 0 is needed only for a kernel span below
    the stride. Leaving it out otherwise keeps torch.export's size expressions short: the padded
    size is then (ceil(n/s) - 1)*s + span and the output simply ceil(n/s), where a max would nest
    into every later layer's size and slow the export by an order of magnitude.
    """
    span = (kernel - 1) * dilation + 1
    total = (n + stride - 1) // stride * stride - stride + span - n
    if span < stride:
        total = torch.sym_max(total, 0)
    return total // 2, total - total // 2


class Conv2dSame(nn.Conv2d):
    """nn.Conv2d with TensorFlow's "same" padding at any stride: F.pad in forward, then an unpadded conv.

    PyTorch's own `padding="same"` allows only stride 1, and symmetric padding (k - 1) // 2 differs from
    TensorFlow's at stride 2 on even sizes (TF puts the extra pixel at the bottom/right), so models
    ported from TensorFlow need this. `pad_h` (top, bottom) and `pad_w` (left, right) are fixed at
    build time where `same_pad` knows them (so a module built for a static size pads for that size);
    a None one is computed from the input's shape in forward.
    Parameters are nn.Conv2d's `weight` and `bias`, so state-dict keys are those of a plain conv.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride=1, dilation=1, groups: int = 1,
                 bias: bool = True, pad_h: Optional[tuple[int, int]] = None, pad_w: Optional[tuple[int, int]] = None):
        super().__init__(in_channels, out_channels, kernel_size, stride, 0, dilation, groups, bias)
        self.pad_h, self.pad_w = pad_h, pad_w

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        (kh, kw), (sh, sw), (dh, dw) = self.kernel_size, self.stride, self.dilation
        top, bottom = self.pad_h if self.pad_h is not None else _runtime_pad(x.shape[-2], kh, sh, dh)
        left, right = self.pad_w if self.pad_w is not None else _runtime_pad(x.shape[-1], kw, sw, dw)
        x = F.pad(x, (left, right, top, bottom))                 # (B, C, H + top + bottom, W + left + right)
        return self._conv_forward(x, self.weight, self.bias)

    def extra_repr(self) -> str:
        show = lambda p: "runtime" if p is None else p  # noqa: E731
        return f"{super().extra_repr()}, same_pad_h={show(self.pad_h)}, same_pad_w={show(self.pad_w)}"


def same_conv2d(cin: int, cout: int, kernel, stride=1, dilation=1, groups: int = 1, bias: bool = True, *,
                size: Sequence[DimLike]) -> nn.Conv2d:
    """A conv with TensorFlow "same" padding for inputs of spatial size `size` ((H, W), ints or dims):
    a plain nn.Conv2d where that padding is fixed and symmetric, else a `Conv2dSame`."""
    k, s, d = pair(kernel), pair(stride), pair(dilation)
    ph, pw = (same_pad(n, k[i], s[i], d[i]) for i, n in enumerate(size))
    if ph is not None and pw is not None and ph[0] == ph[1] and pw[0] == pw[1]:
        return nn.Conv2d(cin, cout, k, s, (ph[0], pw[0]), d, groups, bias)
    return Conv2dSame(cin, cout, k, s, d, groups, bias, ph, pw)


def check_groups(c: int, out_channels: int, groups: int) -> int:
    """`groups` must divide both channel counts; returns the input channels."""
    if c % groups or out_channels % groups:
        raise InferError(f"groups={groups} must divide both input channels ({c}) and out_channels ({out_channels})",
                         param="groups", expected=f"a divisor of {c} and {out_channels}", found=str(groups))
    return c


# ---- the block ------------------------------------------------------------------------------


@register
class Conv2d(Block):
    """2-D convolution over [B, C, H, W]; input channels are inferred.

    `padding: same` is TensorFlow's "same" at any stride: output ceil(H / stride), the odd pixel of
    padding at the bottom/right. `spectral_norm: true` divides the weight by its largest singular value
    (SN-GAN discriminators); its state-dict keys are then `parametrizations.weight.original`, `._u`, `._v`.
    """
    name: ClassVar[str] = "conv2d"
    family: ClassVar[str] = "core"
    inputs: ClassVar = {"x": In("feature_map", doc="[B, C_in, H, W]")}
    out_channels: PosInt
    kernel: Size2 = 3
    stride: Size2 = 1
    padding: Union[Pad2, Literal["same"]] = 0
    dilation: Size2 = 1
    groups: PosInt = 1
    bias: bool = True
    spectral_norm: bool = False

    def _in_channels(self, x: PortType) -> int:
        expect_rank(x, 4, "x")
        expect_float(x, "x")
        c = expect_static(x.shape[1], "x", "the channel count of a conv2d input")
        return check_groups(c, self.out_channels, self.groups)

    def infer(self, x: PortType) -> PortType:
        self._in_channels(x)
        k, s, d = pair(self.kernel), pair(self.stride), pair(self.dilation)
        if self.padding == "same":
            h, w = same_out(x.shape[2], s[0]), same_out(x.shape[3], s[1])
        else:
            p = pair(self.padding)
            h = conv_out(x.shape[2], k[0], s[0], p[0], d[0])
            w = conv_out(x.shape[3], k[1], s[1], p[1], d[1])
        for dim in (h, w):
            if isinstance(dim, int) and dim < 1:
                raise InferError("the kernel is larger than the (padded) input", param="kernel",
                                 expected="an output of at least 1x1", found=f"{h}x{w}")
        kind = "feature_map" if x.kind == "image" else x.kind
        return x.with_(kind=kind, shape=(x.shape[0], self.out_channels, h, w))

    def param_count(self, x: PortType) -> int:
        k = pair(self.kernel)
        c = self._in_channels(x)
        return self.out_channels * (c // self.groups) * k[0] * k[1] + (self.out_channels if self.bias else 0)

    def build(self, x: PortType) -> nn.Module:
        if self.padding == "same":
            conv = same_conv2d(x.shape[1], self.out_channels, self.kernel, self.stride, self.dilation, self.groups,
                               self.bias, size=x.shape[2:])
        else:
            conv = nn.Conv2d(x.shape[1], self.out_channels, pair(self.kernel), pair(self.stride), pair(self.padding),
                             pair(self.dilation), self.groups, self.bias)
        return with_spectral_norm(conv, self.spectral_norm)


# ---- transposed 2-D convolution (generators, decoders: upsampling by a learned kernel) -------------


def conv_transpose_out(size: DimLike, kernel: int, stride: int = 1, padding: int = 0, output_padding: int = 0,
                       dilation: int = 1) -> DimLike:
    """Output length of a transposed convolution, exactly as torch computes it:
    (size - 1) * stride - 2 * padding + dilation * (kernel - 1) + output_padding + 1."""
    return (size - 1) * stride - 2 * padding + dilation * (kernel - 1) + output_padding + 1


@register
class ConvTranspose2d(Block):
    """Transposed 2-D convolution over [B, C, H, W] (a feature map, or a latent code [B, Z, 1, 1]);
    input channels are inferred.

    Output side (H - 1) * stride - 2 * padding + dilation * (kernel - 1) + output_padding + 1, so
    kernel 4, stride 2, padding 1 doubles it and kernel 4, stride 1, padding 0 takes 1x1 to 4x4.
    `output_padding` (below the stride or the dilation) adds rows and columns at the bottom/right,
    picking which of the sizes a stride-s conv maps to the same output this one gives back.
    `spectral_norm: true` normalises the weight as in conv2d (over dim 1, the output channels).
    """
    name: ClassVar[str] = "conv_transpose2d"
    family: ClassVar[str] = "core"
    inputs: ClassVar = {"x": In("feature_map", "latent", doc="[B, C_in, H, W]")}
    out_channels: PosInt
    kernel: Size2 = 4
    stride: Size2 = 1
    padding: Pad2 = 0
    output_padding: Pad2 = 0
    dilation: Size2 = 1
    groups: PosInt = 1
    bias: bool = True
    spectral_norm: bool = False

    def _in_channels(self, x: PortType) -> int:
        expect_rank(x, 4, "x", " [B, C, H, W] (a latent [B, Z] needs a reshape to [B, Z, 1, 1] first)")
        expect_float(x, "x")
        c = expect_static(x.shape[1], "x", "the channel count of a conv_transpose2d input")
        return check_groups(c, self.out_channels, self.groups)

    def infer(self, x: PortType) -> PortType:
        self._in_channels(x)
        k, s, p, op, d = (pair(v) for v in (self.kernel, self.stride, self.padding, self.output_padding,
                                             self.dilation))
        for i in (0, 1):
            if op[i] >= max(s[i], d[i]):
                raise InferError("output_padding must be smaller than the stride or the dilation",
                                 param="output_padding", expected=f"below {max(s[i], d[i])}",
                                 found=str(self.output_padding))
        h, w = (conv_transpose_out(x.shape[2 + i], k[i], s[i], p[i], op[i], d[i]) for i in (0, 1))
        for dim in (h, w):
            if isinstance(dim, int) and dim < 1:
                raise InferError("the padding removes the whole output", param="padding",
                                 expected="an output of at least 1x1", found=f"{h}x{w}")
        kind = "feature_map" if x.kind in ("image", "latent") else x.kind
        return x.with_(kind=kind, shape=(x.shape[0], self.out_channels, h, w))

    def param_count(self, x: PortType) -> int:
        k = pair(self.kernel)
        c = self._in_channels(x)
        return c * (self.out_channels // self.groups) * k[0] * k[1] + (self.out_channels if self.bias else 0)

    def build(self, x: PortType) -> nn.Module:
        conv = nn.ConvTranspose2d(self._in_channels(x), self.out_channels, pair(self.kernel), pair(self.stride),
                                  pair(self.padding), pair(self.output_padding), self.groups, self.bias,
                                  pair(self.dilation))
        return with_spectral_norm(conv, self.spectral_norm)


# ---- 1-D convolution (temporal: TCNs, audio, sensor signals) -------------------------------------


class Conv1dPad(nn.Conv1d):
    """nn.Conv1d that pads in forward with F.pad: `pad` (left, right) fixed at build time, or None for
    TensorFlow "same" padding computed from the input's length (see `_runtime_pad`).

    Used for padding a plain conv cannot express: causal (all of it on the left) and asymmetric or
    length-dependent "same". Parameters are nn.Conv1d's `weight` and `bias`, so state-dict keys are a
    plain conv's.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1, dilation: int = 1,
                 groups: int = 1, bias: bool = True, pad: Optional[tuple[int, int]] = None):
        super().__init__(in_channels, out_channels, kernel_size, stride, 0, dilation, groups, bias)
        self.pad = pad

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        (k,), (s,), (d,) = self.kernel_size, self.stride, self.dilation
        left, right = self.pad if self.pad is not None else _runtime_pad(x.shape[-1], k, s, d)
        x = F.pad(x, (left, right))                                # (B, C, T + left + right)
        return self._conv_forward(x, self.weight, self.bias)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, pad={'runtime same' if self.pad is None else self.pad}"


@register
class Conv1d(Block):
    """1-D convolution over a channels-first signal [B, C, T]; input channels are inferred.

    `padding: same` is TensorFlow's "same" (output ceil(T / stride), the odd step of padding on the
    right); `padding: causal` pads (kernel - 1) * dilation steps on the left only, so the output at t
    sees inputs up to t and never later ones (TCN, WaveNet), with output length ceil(T / stride).
    """
    name: ClassVar[str] = "conv1d"
    family: ClassVar[str] = "core"
    inputs: ClassVar = {"x": In("signal", doc="[B, C_in, T], channels first")}
    out_channels: PosInt
    kernel: PosInt = 3
    stride: PosInt = 1
    padding: Union[NonNegInt, Literal["same", "causal"]] = 0
    dilation: PosInt = 1
    groups: PosInt = 1
    bias: bool = True

    def _in_channels(self, x: PortType) -> int:
        expect_rank(x, 3, "x", " [B, C, T]")
        expect_float(x, "x")
        c = expect_static(x.shape[1], "x", "the channel count (axis 1) of a conv1d input")
        return check_groups(c, self.out_channels, self.groups)

    def infer(self, x: PortType) -> PortType:
        self._in_channels(x)
        if self.padding in ("same", "causal"):
            t = same_out(x.shape[2], self.stride)
        else:
            t = conv_out(x.shape[2], self.kernel, self.stride, self.padding, self.dilation)
            if isinstance(t, int) and t < 1:
                raise InferError("the kernel is longer than the (padded) input", param="kernel",
                                 expected="an output of at least 1 step", found=str(t))
        return x.with_(shape=(x.shape[0], self.out_channels, t))

    def param_count(self, x: PortType) -> int:
        c = self._in_channels(x)
        return self.out_channels * (c // self.groups) * self.kernel + (self.out_channels if self.bias else 0)

    def build(self, x: PortType) -> nn.Module:
        c = self._in_channels(x)
        k, s, d = self.kernel, self.stride, self.dilation
        if self.padding == "causal":
            pad: Optional[tuple[int, int]] = ((k - 1) * d, 0)
        elif self.padding == "same":
            pad = same_pad(x.shape[2], k, s, d)
        else:
            return nn.Conv1d(c, self.out_channels, k, s, self.padding, d, self.groups, self.bias)
        if pad is not None and pad[0] == pad[1]:
            return nn.Conv1d(c, self.out_channels, k, s, pad[0], d, self.groups, self.bias)
        return Conv1dPad(c, self.out_channels, k, s, d, self.groups, self.bias, pad)

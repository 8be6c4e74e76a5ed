"""Generic vision parts: conv_bn_act, squeeze_excite, classifier, and the shared CNN backbone module.

Module layouts mirror torchvision (`Conv2dNormActivation` is a Sequential "0" conv, "1" norm,
"2" activation; `SqueezeExcitation` has `fc1`, `fc2`; classifier heads are Sequentials of
Dropout/Linear), so torchvision state dicts load with identical keys.
"""

from __future__ import annotations

from typing import ClassVar, Literal, Optional, Sequence, Union

import torch
from torch import nn

from blocks.core.activations import make_activation
from blocks.core.conv import same_conv2d, same_out
from composer.block import Block, In
from composer.dims import DimLike, conv_out
from composer.params import Activation, Eps, PosInt, Prob, Size2, pair
from composer.registry import register
from composer.types import InferError, PortType, expect_float, expect_rank, expect_static


def make_divisible(v: float, divisor: int = 8, min_value: Optional[int] = None) -> int:
    """Round a channel count to a multiple of `divisor`, never more than 10% down (TF/torchvision rule)."""
    min_value = divisor if min_value is None else min_value
    new_v = max(min_value, int(v + divisor / 2) // divisor * divisor)
    if new_v < 0.9 * v:
        new_v += divisor
    return new_v


def in_channels(x: PortType, what: str) -> int:
    """The static channel count of a [B, C, H, W] float input."""
    expect_rank(x, 4, "x")
    expect_float(x, "x")
    return expect_static(x.shape[1], "x", f"the channel count of {what} input")


Padding = Literal["symmetric", "same"]  # (k - 1) // 2 * dilation every side (torchvision), or TensorFlow's "same"


def padded_out(size: DimLike, kernel: int, stride: int, dilation: int, padding: Padding) -> DimLike:
    """The output size of a conv that pads by `padding` (both give ceil(size / stride) for odd kernels)."""
    if padding == "same":
        return same_out(size, stride)
    return conv_out(size, kernel, stride, (kernel - 1) // 2 * dilation, dilation)


def same_size(x: PortType, padding: Padding) -> Optional[tuple[DimLike, DimLike]]:
    """The input's (H, W) when a conv pads as TensorFlow's "same" (what ConvBNAct's `same` takes), else None."""
    return (x.shape[2], x.shape[3]) if padding == "same" else None


def map_type(x: PortType, channels: int, h, w) -> PortType:
    """A feature map [B, channels, h, w] of x's batch and dtype (an image becomes a feature_map)."""
    return PortType("feature_map", (x.shape[0], channels, h, w), x.dtype)


# ---- modules ------------------------------------------------------------------------------


class ConvBNAct(nn.Sequential):
    """conv (no bias) -> BatchNorm2d -> activation: torchvision's Conv2dNormActivation layout.

    The conv pads (k - 1) // 2 * dilation on every side; with `same` (the input's (H, W), ints or
    symbolic dims) it pads as TensorFlow's "same" instead (blocks/core/conv.py), under the same keys.
    """

    def __init__(self, cin: int, cout: int, kernel: int | tuple[int, int] = 3, stride: int | tuple[int, int] = 1,
                 groups: int = 1, dilation: int = 1, activation: Activation = "relu", eps: float = 1e-5,
                 momentum: float = 0.1, same: Optional[Sequence[DimLike]] = None):
        k = pair(kernel) if isinstance(kernel, int) else kernel
        if same is None:
            padding = ((k[0] - 1) // 2 * dilation, (k[1] - 1) // 2 * dilation)
            conv = nn.Conv2d(cin, cout, k, stride, padding, dilation=dilation, groups=groups, bias=False)
        else:
            conv = same_conv2d(cin, cout, k, stride, dilation, groups, False, size=same)
        layers: list[nn.Module] = [conv, nn.BatchNorm2d(cout, eps=eps, momentum=momentum)]
        if activation != "none":
            layers.append(make_activation(activation))
        super().__init__(*layers)
        self.out_channels = cout


class SqueezeExcitation(nn.Module):
    """x * scale_act(fc2(act(fc1(avgpool(x))))): torchvision's SqueezeExcitation layout."""

    def __init__(self, channels: int, squeeze_channels: int, activation: Activation = "relu",
                 scale_activation: Activation = "sigmoid"):
        super().__init__()
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Conv2d(channels, squeeze_channels, 1)
        self.fc2 = nn.Conv2d(squeeze_channels, channels, 1)
        self.activation = make_activation(activation)
        self.scale_activation = make_activation(scale_activation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.avgpool(x)                                      # (B, C, 1, 1)
        s = self.scale_activation(self.fc2(self.activation(self.fc1(s))))
        return s * x


class ClassifierHead(nn.Sequential):
    """[Linear, act,] Dropout, Linear: the layouts of torchvision's classification heads.

    Without `hidden` it is `Sequential(Dropout, Linear)` (MobileNetV2, EfficientNet: keys `1.*`);
    with it `Sequential(Linear, act, Dropout, Linear)` (MobileNetV3: keys `0.*`, `3.*`).
    A `pool` of "first" or "mean" first reduces a [B, T, C] sequence to [B, C].
    """

    def __init__(self, cin: int, num_classes: int, hidden: Optional[int] = None, activation: Activation = "relu",
                 dropout: float = 0.0, bias: bool = True, pool: Optional[str] = None):
        layers: list[nn.Module] = []
        if hidden is not None:
            layers += [nn.Linear(cin, hidden, bias=bias), make_activation(activation)]
            cin = hidden
        layers += [nn.Dropout(dropout), nn.Linear(cin, num_classes, bias=bias)]
        super().__init__(*layers)
        self.pool = pool

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.pool == "first":
            x = x[:, 0]                                          # (B, T, C) -> (B, C)
        elif self.pool == "mean":
            x = x.mean(dim=1)                                    # (B, T, C) -> (B, C)
        return super().forward(x)


class CNNBackbone(nn.Module):
    """`features` (a Sequential), global average pool and an optional `classifier`.

    forward returns (pooled, {tap name: stage output}) or (pooled, features, logits); the taps
    are the outputs of chosen `features` entries (the last one at each stride).
    """

    def __init__(self, features: Sequence[nn.Module], taps: Sequence[tuple[int, str]],
                 classifier: Optional[nn.Module] = None):
        super().__init__()
        self.features = nn.Sequential(*features)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = classifier
        names: list[Optional[str]] = [None] * len(features)
        for i, name in taps:
            names[i] = name
        self.tap_names = tuple(names)

    def forward(self, x: torch.Tensor):
        feats: dict[str, torch.Tensor] = {}
        for layer, name in zip(self.features, self.tap_names):
            x = layer(x)
            if name is not None:
                feats[name] = x
        pooled = torch.flatten(self.avgpool(x), 1)               # (B, C, 1, 1) -> (B, C)
        if self.classifier is None:
            return pooled, feats
        return pooled, feats, self.classifier(pooled)


def stride_taps(strides: Sequence[int], levels: Sequence[int] = (4, 8, 16, 32)) -> list[tuple[int, str]]:
    """For cumulative strides per layer, the last layer at each level, named c2..c5 (stride 2**k is ck)."""
    taps = []
    for level in levels:
        idx = [i for i, s in enumerate(strides) if s == level]
        if idx:
            taps.append((idx[-1], f"c{level.bit_length() - 1}"))
    return taps


def stages(maps: dict[str, PortType], strides: Sequence[int]) -> list[tuple[str, PortType, int]]:
    """Named stage maps paired with their strides, as `backbone_outputs` takes them."""
    return [(name, t, s) for (name, t), s in zip(maps.items(), strides)]


def backbone_outputs(x: PortType, maps: Sequence[tuple[str, PortType, int]], pooled_channels: int,
                     num_classes: Optional[int]) -> dict[str, PortType]:
    """The output ports of a CNN backbone: pooled, features ({name: map}, strides, channels), logits."""
    fields = tuple((name, t) for name, t, _ in maps)
    features = PortType("features", None, x.dtype, fields=fields,
                        meta=(("strides", tuple(s for _, _, s in maps)),
                              ("channels", tuple(t.shape[1] for _, t, _ in maps))))
    out = {"pooled": PortType("vector", (x.shape[0], pooled_channels), x.dtype), "features": features}
    if num_classes is not None:
        out["logits"] = PortType("logits", (x.shape[0], num_classes), x.dtype)
    return out


# ---- blocks -------------------------------------------------------------------------------


@register
class ConvBNActBlock(Block):
    """Convolution (no bias), batch norm and activation: torchvision's Conv2dNormActivation.

    Padding is (kernel - 1) // 2 * dilation, so stride 1 keeps H and W and stride s gives ceil(H/s)
    for odd kernels; `padding: same` is TensorFlow's "same" (ceil(H/s), the odd pixel at the bottom/right).
    """
    name: ClassVar[str] = "conv_bn_act"
    family: ClassVar[str] = "vision"
    inputs: ClassVar = {"x": In("feature_map", doc="[B, C_in, H, W]")}
    out_channels: PosInt
    kernel: Size2 = 3
    stride: Size2 = 1
    dilation: PosInt = 1
    groups: Union[PosInt, Literal["depthwise"]] = 1
    padding: Padding = "symmetric"
    activation: Activation = "relu"
    eps: Eps = 1e-5
    momentum: Prob = 0.1

    def _groups(self, x: PortType) -> tuple[int, int]:
        c = in_channels(x, "a conv_bn_act")
        g = c if self.groups == "depthwise" else self.groups
        if c % g or self.out_channels % g:
            raise InferError(f"groups={g} must divide both input channels ({c}) and out_channels "
                             f"({self.out_channels})", param="groups", expected=f"a divisor of {c} and "
                             f"{self.out_channels}", found=str(self.groups))
        return c, g

    def infer(self, x: PortType) -> PortType:
        self._groups(x)
        k, s, d = pair(self.kernel), pair(self.stride), self.dilation
        h = padded_out(x.shape[2], k[0], s[0], d, self.padding)
        w = padded_out(x.shape[3], k[1], s[1], d, self.padding)
        for dim in (h, w):
            if isinstance(dim, int) and dim < 1:
                raise InferError("the kernel is larger than the (padded) input", param="kernel",
                                 expected="an output of at least 1x1", found=f"{h}x{w}")
        return map_type(x, self.out_channels, h, w)

    def param_count(self, x: PortType) -> int:
        c, g = self._groups(x)
        k = pair(self.kernel)
        return self.out_channels * (c // g) * k[0] * k[1] + 2 * self.out_channels

    def build(self, x: PortType) -> nn.Module:
        c, g = self._groups(x)
        return ConvBNAct(c, self.out_channels, pair(self.kernel), pair(self.stride), g, self.dilation,
                         self.activation, self.eps, self.momentum, same_size(x, self.padding))


@register
class SqueezeExcite(Block):
    """Squeeze-and-excitation: channel weights from a pooled bottleneck (torchvision layout)."""
    name: ClassVar[str] = "squeeze_excite"
    family: ClassVar[str] = "vision"
    inputs: ClassVar = {"x": In("feature_map", doc="[B, C, H, W]")}
    squeeze_channels: Optional[PosInt] = None   # default: max(1, C // reduction), rounded to `round_to`
    reduction: PosInt = 4
    round_to: PosInt = 1
    activation: Activation = "relu"
    scale_activation: Activation = "sigmoid"

    def _squeeze(self, x: PortType) -> tuple[int, int]:
        c = in_channels(x, "a squeeze_excite")
        if self.squeeze_channels is not None:
            return c, self.squeeze_channels
        s = c // self.reduction
        return c, (make_divisible(s, self.round_to) if self.round_to > 1 else max(1, s))

    def infer(self, x: PortType) -> PortType:
        self._squeeze(x)
        return map_type(x, x.shape[1], x.shape[2], x.shape[3])

    def param_count(self, x: PortType) -> int:
        c, s = self._squeeze(x)
        return 2 * c * s + c + s

    def build(self, x: PortType) -> nn.Module:
        c, s = self._squeeze(x)
        return SqueezeExcitation(c, s, self.activation, self.scale_activation)


@register
class Classifier(Block):
    """Classification head: [dense + activation,] dropout, dense to num_classes logits.

    On a [B, T, C] sequence, `pool` first takes the first (class) token or the mean token.
    """
    name: ClassVar[str] = "classifier"
    family: ClassVar[str] = "vision"
    inputs: ClassVar = {"x": In("vector", "sequence", doc="[B, C] or [B, T, C]")}
    num_classes: PosInt
    hidden: Optional[PosInt] = None
    activation: Activation = "relu"
    dropout: Prob = 0.0
    bias: bool = True
    pool: Literal["first", "mean"] = "first"  # only for sequence inputs

    def _features(self, x: PortType) -> int:
        expect_rank(x, (2, 3), "x", " ([B, C] vector or [B, T, C] sequence)")
        expect_float(x, "x")
        return expect_static(x.shape[-1], "x", "the feature size (last dim) of a classifier input")

    def infer(self, x: PortType) -> PortType:
        self._features(x)
        return PortType("logits", (x.shape[0], self.num_classes), x.dtype)

    def param_count(self, x: PortType) -> int:
        c, b = self._features(x), int(self.bias)
        if self.hidden is None:
            return c * self.num_classes + b * self.num_classes
        return c * self.hidden + b * self.hidden + self.hidden * self.num_classes + b * self.num_classes

    def build(self, x: PortType) -> nn.Module:
        return ClassifierHead(self._features(x), self.num_classes, self.hidden, self.activation, self.dropout,
                              self.bias, self.pool if x.rank == 3 else None)


# ---- plans: a backbone as a list of part blocks ---------------------------------------------

Plan = list  # of Block instances, or lists of them (a stage: one nn.Sequential)


def _part_stride(part) -> int:
    if isinstance(part, list):
        s = 1
        for p in part:
            s *= _part_stride(p)
        return s
    return pair(getattr(part, "stride", 1))[0]


def fold_plan(plan: Plan, x: PortType) -> tuple[list[PortType], list[int]]:
    """The output type and the cumulative stride after each entry of a plan."""
    types, strides, stride = [], [], 1
    for part in plan:
        for p in (part if isinstance(part, list) else [part]):
            x = p.infer(x=x)
        stride *= _part_stride(part)
        types.append(x)
        strides.append(stride)
    return types, strides


def plan_taps(strides: Sequence[int], extra: Sequence[int] = ()) -> list[tuple[int, str]]:
    """The c2..c5 taps and the extra layer taps `l{i}`, in layer order (the features' order)."""
    taps = stride_taps(strides)
    used = {i for i, _ in taps}
    for i in extra:
        if not 0 <= i < len(strides):
            raise InferError(f"extra_taps: there is no layer {i}", param="extra_taps",
                             expected=f"layer indices 0..{len(strides) - 1}", found=str(i))
        if i not in used:
            taps.append((i, f"l{i}"))
            used.add(i)
    return sorted(taps)


def plan_outputs(plan: Plan, x: PortType, num_classes: Optional[int], extra: Sequence[int] = ()) -> dict[str, PortType]:
    """A CNN backbone's output ports from its plan: pooled last map, c2..c5 (and extra) features, logits."""
    types, strides = fold_plan(plan, x)
    maps = [(name, types[i], strides[i]) for i, name in plan_taps(strides, extra)]
    return backbone_outputs(x, maps, types[-1].shape[1], num_classes)


def build_plan(plan: Plan, x: PortType, classifier: Optional[nn.Module], extra: Sequence[int] = ()) -> CNNBackbone:
    """The CNNBackbone module of a plan (a stage list becomes one nn.Sequential)."""
    modules, strides, stride = [], [], 1
    for part in plan:
        if isinstance(part, list):
            stage = []
            for p in part:
                stage.append(p.build(x=x))
                x = p.infer(x=x)
            modules.append(nn.Sequential(*stage))
        else:
            modules.append(part.build(x=x))
            x = part.infer(x=x)
        stride *= _part_stride(part)
        strides.append(stride)
    return CNNBackbone(modules, plan_taps(strides, extra), classifier)


def init_cnn(module: nn.Module, linear: Literal["normal", "uniform"] = "normal") -> None:
    """torchvision's CNN init: kaiming-normal (fan_out) convs, unit norms, small linears."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            if linear == "normal":
                nn.init.normal_(m.weight, 0, 0.01)
            else:
                r = 1.0 / m.out_features ** 0.5
                nn.init.uniform_(m.weight, -r, r)
            if m.bias is not None:
                nn.init.zeros_(m.bias)

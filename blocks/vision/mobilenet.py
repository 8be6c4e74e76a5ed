"""MobileNet V2 and V3 (small, large) backbones and their inverted residual part.

Module names mirror torchvision's `MobileNetV2` / `MobileNetV3` (`features.N...`,
`classifier.N`), so their state dicts load with identical keys.
"""

from __future__ import annotations

from typing import ClassVar, Literal, Optional, Sequence

import torch
from torch import nn

from composer.block import Block, In
from composer.dims import DimLike
from composer.params import Activation, Eps, PosFloat, PosInt, Prob
from composer.registry import register
from composer.types import InferError, PortType

from .layers import (ClassifierHead, ConvBNAct, ConvBNActBlock, Padding, SqueezeExcitation, build_plan, in_channels,
                     init_cnn, make_divisible, map_type, padded_out, plan_outputs, same_size)

# MobileNetV2: expand ratio t, channels c, repeats n, first stride s
_V2 = [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1)]

# MobileNetV3 (paper tables 1 and 2): in, kernel, expanded, out, squeeze-excite, activation, stride
_V3 = {
    "v3_large": ([
        (16, 3, 16, 16, False, "relu", 1), (16, 3, 64, 24, False, "relu", 2), (24, 3, 72, 24, False, "relu", 1),
        (24, 5, 72, 40, True, "relu", 2), (40, 5, 120, 40, True, "relu", 1), (40, 5, 120, 40, True, "relu", 1),
        (40, 3, 240, 80, False, "hardswish", 2), (80, 3, 200, 80, False, "hardswish", 1),
        (80, 3, 184, 80, False, "hardswish", 1), (80, 3, 184, 80, False, "hardswish", 1),
        (80, 3, 480, 112, True, "hardswish", 1), (112, 3, 672, 112, True, "hardswish", 1),
        (112, 5, 672, 160, True, "hardswish", 2), (160, 5, 960, 160, True, "hardswish", 1),
        (160, 5, 960, 160, True, "hardswish", 1),
    ], 1280),
    "v3_small": ([
        (16, 3, 16, 16, True, "relu", 2), (16, 3, 72, 24, False, "relu", 2), (24, 3, 88, 24, False, "relu", 1),
        (24, 5, 96, 40, True, "hardswish", 2), (40, 5, 240, 40, True, "hardswish", 1),
        (40, 5, 240, 40, True, "hardswish", 1), (40, 5, 120, 48, True, "hardswish", 1),
        (48, 5, 144, 48, True, "hardswish", 1), (48, 5, 288, 96, True, "hardswish", 2),
        (96, 5, 576, 96, True, "hardswish", 1), (96, 5, 576, 96, True, "hardswish", 1),
    ], 1024),
}


class InvertedResidualV2(nn.Module):
    """MobileNetV2 block: `conv` = [1x1 expand,] depthwise, 1x1 project conv + norm; residual when shapes keep.

    `same`: the input's (H, W) when the depthwise conv pads as TensorFlow's "same" (see ConvBNAct).
    """

    def __init__(self, cin: int, cout: int, hidden: int, kernel: int, stride: int, activation: Activation,
                 eps: float, momentum: float, same: Optional[Sequence[DimLike]] = None):
        super().__init__()
        layers: list[nn.Module] = []
        if hidden != cin:
            layers.append(ConvBNAct(cin, hidden, 1, activation=activation, eps=eps, momentum=momentum))
        layers += [
            ConvBNAct(hidden, hidden, kernel, stride, groups=hidden, activation=activation, eps=eps, momentum=momentum,
                      same=same),
            nn.Conv2d(hidden, cout, 1, 1, 0, bias=False),
            nn.BatchNorm2d(cout, eps=eps, momentum=momentum),
        ]
        self.conv = nn.Sequential(*layers)
        self.use_res_connect = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x) if self.use_res_connect else self.conv(x)


class InvertedResidualV3(nn.Module):
    """MobileNetV3 block: `block` = [expand,] depthwise, [squeeze-excite,] project; residual when shapes keep.

    `same`: the input's (H, W) when the depthwise conv pads as TensorFlow's "same" (see ConvBNAct).
    """

    def __init__(self, cin: int, cout: int, hidden: int, kernel: int, stride: int, activation: Activation,
                 se: bool, eps: float, momentum: float, same: Optional[Sequence[DimLike]] = None):
        super().__init__()
        layers: list[nn.Module] = []
        if hidden != cin:
            layers.append(ConvBNAct(cin, hidden, 1, activation=activation, eps=eps, momentum=momentum))
        layers.append(ConvBNAct(hidden, hidden, kernel, stride, groups=hidden, activation=activation, eps=eps,
                                momentum=momentum, same=same))
        if se:
            layers.append(SqueezeExcitation(hidden, make_divisible(hidden // 4, 8), "relu", "hardsigmoid"))
        layers.append(ConvBNAct(hidden, cout, 1, activation="none", eps=eps, momentum=momentum))
        self.block = nn.Sequential(*layers)
        self.use_res_connect = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.block(x)
        return out + x if self.use_res_connect else out


@register
class InvertedResidual(Block):
    """MobileNet inverted residual: 1x1 expand, depthwise conv, [SE,] 1x1 linear project, skip.

    `style` picks the module layout (and norm defaults) of torchvision's MobileNetV2 or V3 block.
    The depthwise conv pads (kernel - 1) // 2 (torchvision); `padding: same` is TensorFlow's "same"
    (ceil(H/s), the odd pixel at the bottom/right), as MobileNets ported from TensorFlow need.
    """
    name: ClassVar[str] = "inverted_residual"
    family: ClassVar[str] = "vision"
    inputs: ClassVar = {"x": In("feature_map", doc="[B, C_in, H, W]")}
    out_channels: PosInt
    kernel: Literal[3, 5, 7] = 3
    stride: Literal[1, 2] = 1
    expand_ratio: PosFloat = 6.0
    expanded_channels: Optional[PosInt] = None  # overrides expand_ratio
    se: bool = False
    padding: Padding = "symmetric"
    activation: Activation = "relu6"
    style: Literal["v2", "v3"] = "v2"
    eps: Optional[Eps] = None        # default 1e-5 (v2) or 1e-3 (v3), as torchvision
    momentum: Optional[Prob] = None  # default 0.1 (v2) or 0.01 (v3)

    def _hidden(self, x: PortType) -> tuple[int, int]:
        c = in_channels(x, "an inverted_residual")
        if self.se and self.style == "v2":
            raise InferError("squeeze-excite is part of the v3 block layout only", param="se",
                             expected="se: false with style v2", found="se: true", hint="use style: v3")
        hidden = self.expanded_channels if self.expanded_channels is not None else int(round(c * self.expand_ratio))
        return c, hidden

    def infer(self, x: PortType) -> PortType:
        self._hidden(x)
        h = padded_out(x.shape[2], self.kernel, self.stride, 1, self.padding)
        w = padded_out(x.shape[3], self.kernel, self.stride, 1, self.padding)
        return map_type(x, self.out_channels, h, w)

    def build(self, x: PortType) -> nn.Module:
        c, hidden = self._hidden(x)
        same = same_size(x, self.padding)
        v3 = self.style == "v3"
        eps = self.eps if self.eps is not None else (1e-3 if v3 else 1e-5)
        momentum = self.momentum if self.momentum is not None else (0.01 if v3 else 0.1)
        if v3:
            return InvertedResidualV3(c, self.out_channels, hidden, self.kernel, self.stride, self.activation,
                                      self.se, eps, momentum, same)
        return InvertedResidualV2(c, self.out_channels, hidden, self.kernel, self.stride, self.activation, eps,
                                  momentum, same)


@register
class MobileNet(Block):
    """MobileNet V2 / V3 backbone (torchvision-compatible weights): pooled vector, c2..c5 features, logits."""
    name: ClassVar[str] = "mobilenet"
    family: ClassVar[str] = "vision"
    inputs: ClassVar = {"x": In("feature_map", doc="[B, 3, H, W] image")}
    outputs: ClassVar = ("pooled", "features", "logits")
    example: ClassVar = {"params": {"variant": "v3_small", "num_classes": 10},
                         "inputs": {"x": PortType("image", (2, 3, 32, 32))}}
    variant: Literal["v2", "v3_small", "v3_large"] = "v3_large"
    num_classes: Optional[PosInt] = None  # None: no classification head, no `logits` port
    width_mult: PosFloat = 1.0
    dropout: Prob = 0.2
    eps: Optional[Eps] = None    # BatchNorm eps; default as torchvision's classifiers (1e-5 v2, 1e-3 v3); its detectors use 1e-5
    extra_taps: list[int] = []   # more layers (of `features.N`) to expose, as `l{N}`: [13] for torchvision's detector FPN

    def _plan(self):
        w = self.width_mult
        if self.variant == "v2":
            cin = make_divisible(32 * w, 8)
            v2 = {} if self.eps is None else {"eps": self.eps}
            plan = [ConvBNActBlock(out_channels=cin, stride=2, activation="relu6", **v2)]
            for t, c, n, s in _V2:
                cout = make_divisible(c * w, 8)
                for i in range(n):
                    plan.append(InvertedResidual(out_channels=cout, stride=s if i == 0 else 1,
                                                 expanded_channels=int(round(cin * t)), style="v2", eps=self.eps))
                    cin = cout
            last = make_divisible(1280 * max(1.0, w), 8)
            plan.append(ConvBNActBlock(out_channels=last, kernel=1, activation="relu6", **v2))
            return plan, None
        rows, last_channel = _V3[self.variant]
        bn = dict(eps=1e-3 if self.eps is None else self.eps, momentum=0.01)
        plan = [ConvBNActBlock(out_channels=make_divisible(rows[0][0] * w), stride=2, activation="hardswish", **bn)]
        for _, k, e, c, se, act, s in rows:
            plan.append(InvertedResidual(out_channels=make_divisible(c * w), kernel=k, stride=s,
                                         expanded_channels=make_divisible(e * w), se=se, activation=act, style="v3",
                                         eps=self.eps))
        plan.append(ConvBNActBlock(out_channels=6 * make_divisible(rows[-1][3] * w), kernel=1,
                                   activation="hardswish", **bn))
        return plan, make_divisible(last_channel * w)

    def infer(self, x: PortType) -> dict[str, PortType]:
        in_channels(x, "a mobilenet")
        plan, _ = self._plan()
        return plan_outputs(plan, x, self.num_classes, self.extra_taps)

    def build(self, x: PortType) -> nn.Module:
        plan, hidden = self._plan()
        classifier = None
        if self.num_classes is not None:
            c = plan[-1].out_channels
            classifier = ClassifierHead(c, self.num_classes, hidden, "hardswish", self.dropout)
        model = build_plan(plan, x, classifier, self.extra_taps)
        init_cnn(model)
        return model

"""EfficientNet B0-B7 (torchvision's v1 family) and its MBConv part.

Module names mirror torchvision's `EfficientNet` (`features.N.M.block...`, `classifier.1`),
so its state dicts load with identical keys.
"""

from __future__ import annotations

import math
from typing import ClassVar, Literal, Optional, Sequence

import torch
from torch import nn

from composer.block import Block, In
from composer.dims import DimLike
from composer.params import Activation, Eps, PosFloat, PosInt, Prob
from composer.registry import register
from composer.types import PortType

from .layers import (ClassifierHead, ConvBNAct, ConvBNActBlock, Padding, SqueezeExcitation, build_plan, in_channels,
                     init_cnn, make_divisible, map_type, padded_out, plan_outputs, same_size)

# B0 stages: expand ratio, kernel, stride, in, out, layers
_STAGES = [(1, 3, 1, 32, 16, 1), (6, 3, 2, 16, 24, 2), (6, 5, 2, 24, 40, 2), (6, 3, 2, 40, 80, 3),
           (6, 5, 1, 80, 112, 3), (6, 5, 2, 112, 192, 4), (6, 3, 1, 192, 320, 1)]

# variant: width multiplier, depth multiplier, head dropout, batchnorm eps (momentum 0.01 with eps 1e-3)
_VARIANTS = {
    "b0": (1.0, 1.0, 0.2, 1e-5), "b1": (1.0, 1.1, 0.2, 1e-5), "b2": (1.1, 1.2, 0.3, 1e-5),
    "b3": (1.2, 1.4, 0.3, 1e-5), "b4": (1.4, 1.8, 0.4, 1e-5), "b5": (1.6, 2.2, 0.4, 1e-3),
    "b6": (1.8, 2.6, 0.5, 1e-3), "b7": (2.0, 3.1, 0.5, 1e-3),
}


class StochasticDepth(nn.Module):
    """Drop whole residual branches per sample with probability p in training; identity in eval."""

    def __init__(self, p: float):
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        keep = 1.0 - self.p
        noise = torch.empty((x.shape[0],) + (1,) * (x.ndim - 1), dtype=x.dtype, device=x.device).bernoulli_(keep)
        if keep > 0.0:
            noise = noise / keep
        return x * noise

    def extra_repr(self) -> str:
        return f"p={self.p}"


class MBConvModule(nn.Module):
    """`block` = [1x1 expand,] depthwise, [squeeze-excite,] 1x1 project; stochastic-depth residual.

    `squeeze` None leaves the squeeze-excite out; `same` is the input's (H, W) when the depthwise
    conv pads as TensorFlow's "same" (see ConvBNAct).
    """

    def __init__(self, cin: int, cout: int, hidden: int, kernel: int, stride: int, squeeze: Optional[int],
                 activation: Activation, sd_prob: float, eps: float, momentum: float,
                 same: Optional[Sequence[DimLike]] = None):
        super().__init__()
        bn = dict(eps=eps, momentum=momentum)
        layers: list[nn.Module] = []
        if hidden != cin:
            layers.append(ConvBNAct(cin, hidden, 1, activation=activation, **bn))
        layers.append(ConvBNAct(hidden, hidden, kernel, stride, groups=hidden, activation=activation, same=same, **bn))
        if squeeze is not None:
            layers.append(SqueezeExcitation(hidden, squeeze, activation, "sigmoid"))
        layers.append(ConvBNAct(hidden, cout, 1, activation="none", **bn))
        self.block = nn.Sequential(*layers)
        self.stochastic_depth = StochasticDepth(sd_prob)
        self.use_res_connect = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.block(x)
        if self.use_res_connect:
            out = self.stochastic_depth(out) + x
        return out


@register
class MBConv(Block):
    """EfficientNet mobile inverted bottleneck: expand, depthwise, squeeze-excite, project, skip.

    The depthwise conv pads (kernel - 1) // 2 (torchvision); `padding: same` is TensorFlow's "same"
    (ceil(H/s), the odd pixel at the bottom/right), as EfficientNets ported from TensorFlow need.
    `se_reduction: null` leaves the squeeze-excite out.
    """
    name: ClassVar[str] = "mbconv"
    family: ClassVar[str] = "vision"
    inputs: ClassVar = {"x": In("feature_map", doc="[B, C_in, H, W]")}
    out_channels: PosInt
    kernel: Literal[3, 5, 7] = 3
    stride: Literal[1, 2] = 1
    expand_ratio: PosFloat = 6.0          # expanded = make_divisible(C_in * expand_ratio, 8)
    se_reduction: Optional[PosInt] = 4    # squeeze channels = max(1, C_in // se_reduction); null: no SE
    padding: Padding = "symmetric"        # or TensorFlow's "same"
    activation: Activation = "silu"
    stochastic_depth_prob: Prob = 0.0     # residual drop rate in training; identity in eval
    eps: Eps = 1e-5
    momentum: Prob = 0.1

    def _channels(self, x: PortType) -> tuple[int, int, Optional[int]]:
        c = in_channels(x, "an mbconv")
        squeeze = None if self.se_reduction is None else max(1, c // self.se_reduction)
        return c, make_divisible(c * self.expand_ratio, 8), squeeze

    def infer(self, x: PortType) -> PortType:
        self._channels(x)
        h = padded_out(x.shape[2], self.kernel, self.stride, 1, self.padding)
        w = padded_out(x.shape[3], self.kernel, self.stride, 1, self.padding)
        return map_type(x, self.out_channels, h, w)

    def param_count(self, x: PortType) -> int:
        c, e, s = self._channels(x)
        expand = c * e + 2 * e if e != c else 0
        se = 0 if s is None else 2 * e * s + e + s
        return expand + e * self.kernel ** 2 + 2 * e + se + e * self.out_channels + 2 * self.out_channels

    def build(self, x: PortType) -> nn.Module:
        c, e, s = self._channels(x)
        return MBConvModule(c, self.out_channels, e, self.kernel, self.stride, s, self.activation,
                            self.stochastic_depth_prob, self.eps, self.momentum, same_size(x, self.padding))


@register
class EfficientNet(Block):
    """EfficientNet B0-B7 backbone (torchvision-compatible weights): pooled vector, c2..c5 features, logits."""
    name: ClassVar[str] = "efficientnet"
    family: ClassVar[str] = "vision"
    inputs: ClassVar = {"x": In("feature_map", doc="[B, 3, H, W] image")}
    outputs: ClassVar = ("pooled", "features", "logits")
    example: ClassVar = {"params": {"variant": "b0", "num_classes": 10},
                         "inputs": {"x": PortType("image", (2, 3, 32, 32))}}
    variant: Literal["b0", "b1", "b2", "b3", "b4", "b5", "b6", "b7"] = "b0"
    num_classes: Optional[PosInt] = None   # None: no classification head, no `logits` port
    dropout: Optional[Prob] = None         # head dropout; default per variant (0.2 .. 0.5)
    stochastic_depth_prob: Prob = 0.2      # grows linearly over blocks up to this value

    def _plan(self) -> list:
        width, depth, _, eps = _VARIANTS[self.variant]
        bn = dict(eps=eps, momentum=0.01 if eps == 1e-3 else 0.1)
        ch = lambda c: make_divisible(c * width, 8)  # noqa: E731
        stages = [(t, k, s, ch(cin), ch(cout), int(math.ceil(n * depth))) for t, k, s, cin, cout, n in _STAGES]
        total = sum(n for *_, n in stages)
        plan: list = [ConvBNActBlock(out_channels=stages[0][3], stride=2, activation="silu", **bn)]
        i = 0
        for t, k, s, _, cout, n in stages:
            stage = []
            for j in range(n):
                stage.append(MBConv(out_channels=cout, kernel=k, stride=s if j == 0 else 1, expand_ratio=float(t),
                                    stochastic_depth_prob=self.stochastic_depth_prob * i / total, **bn))
                i += 1
            plan.append(stage)
        plan.append(ConvBNActBlock(out_channels=4 * stages[-1][4], kernel=1, activation="silu", **bn))
        return plan

    def infer(self, x: PortType) -> dict[str, PortType]:
        in_channels(x, "an efficientnet")
        return plan_outputs(self._plan(), x, self.num_classes)

    def build(self, x: PortType) -> nn.Module:
        plan = self._plan()
        classifier = None
        if self.num_classes is not None:
            dropout = self.dropout if self.dropout is not None else _VARIANTS[self.variant][2]
            classifier = ClassifierHead(plan[-1].out_channels, self.num_classes, dropout=dropout)
        model = build_plan(plan, x, classifier)
        init_cnn(model, linear="uniform")
        return model

"""`fpn`: torchvision's FeaturePyramidNetwork over a backbone's `features` port.

The module is torchvision's own (`inner_blocks`, `layer_blocks`, extra levels), so
detection checkpoints load with their keys; the block chooses the levels by name and
names the outputs by stride (`p2` is stride 4, … `p6` stride 64).
"""

from __future__ import annotations

from collections import OrderedDict
from typing import ClassVar, Literal, Optional

from torch import nn
from torchvision.ops.feature_pyramid_network import FeaturePyramidNetwork, LastLevelMaxPool, LastLevelP6P7

from composer.block import Block, In
from composer.dims import conv_out
from composer.params import PosInt
from composer.registry import register
from composer.types import InferError, PortType, expect_static

from .ports import feature_levels


def level_name(stride: int) -> str:
    return f"p{stride.bit_length() - 1}"


class FPN(FeaturePyramidNetwork):
    """torchvision's FPN taking and returning a dict of maps under our names."""

    def __init__(self, levels: list[str], in_channels: list[int], out_channels: int, names: list[str],
                 extra: Optional[nn.Module]):
        super().__init__(in_channels, out_channels, extra_blocks=extra)
        self.levels, self.names = list(levels), list(names)

    def forward(self, features: dict) -> dict:
        maps = OrderedDict((n, features[n]) for n in self.levels)
        out = super().forward(maps)
        return dict(zip(self.names, out.values()))


@register
class FPNBlock(Block):
    """Feature pyramid network (torchvision layout): top-down fusion of chosen backbone levels, optional extra levels.

    `extra: maxpool` adds a stride-2 max-pooled level on top (Faster/Mask R-CNN), `p6p7` two
    strided convs from the last input level (RetinaNet).
    """
    name: ClassVar[str] = "fpn"
    family: ClassVar[str] = "detection"
    inputs: ClassVar = {"x": In("features", doc="a backbone's features port")}
    example: ClassVar = {"params": {"out_channels": 8},
                         "inputs": {"x": PortType("features", None, fields=(
                             ("c4", PortType("feature_map", (2, 6, 8, 8))), ("c5", PortType("feature_map", (2, 10, 4, 4)))),
                             meta=(("strides", (16, 32)), ("channels", (6, 10))))}}
    levels: Optional[list[str]] = None          # default: every level of the input
    out_channels: PosInt = 256
    extra: Literal["none", "maxpool", "p6p7"] = "maxpool"

    def _plan(self, x: PortType):
        chosen = feature_levels(x, self.levels, "fpn")
        strides = [s for _, _, s in chosen]
        if any(b < a for a, b in zip(strides, strides[1:])):
            raise InferError("fpn levels must go from fine to coarse", param="levels" if self.levels else None,
                             port=None if self.levels else "x", expected="increasing strides",
                             found=", ".join(f"{n} (stride {s})" for n, _, s in chosen))
        channels = [expect_static(t.shape[1], "x", f"the channel count of level `{n}`") for n, t, _ in chosen]
        return chosen, channels

    def _names(self, chosen) -> list[str]:
        names = [level_name(s) for _, _, s in chosen]
        if len(set(names)) != len(names):   # two maps at one stride (MobileNet): keep the input names
            names = [f"p_{n}" for n, _, _ in chosen]
        return names

    def infer(self, x: PortType) -> PortType:
        chosen, _ = self._plan(x)
        names = self._names(chosen)
        fields = [(n, t.with_(kind="feature_map", shape=(t.shape[0], self.out_channels, t.shape[2], t.shape[3])))
                  for n, (_, t, _) in zip(names, chosen)]
        strides = [s for _, _, s in chosen]
        last = fields[-1][1]
        if self.extra == "maxpool":
            h, w = conv_out(last.shape[2], 1, 2, 0), conv_out(last.shape[3], 1, 2, 0)
            fields.append((level_name(strides[-1] * 2), last.with_(shape=(*last.shape[:2], h, w))))
            strides.append(strides[-1] * 2)
        elif self.extra == "p6p7":
            h, w = last.shape[2], last.shape[3]
            for _ in range(2):
                h, w = conv_out(h, 3, 2, 1), conv_out(w, 3, 2, 1)
                strides.append(strides[-1] * 2)
                fields.append((level_name(strides[-1]), last.with_(shape=(*last.shape[:2], h, w))))
        extra = tuple(n for n, _ in fields[len(chosen):])
        return PortType("features", None, x.dtype, fields=tuple(fields),
                        meta=(("strides", tuple(strides)), ("channels", (self.out_channels,) * len(fields)),
                              ("extra", extra)))

    def param_count(self, x: PortType) -> int:
        _, channels = self._plan(x)
        c = self.out_channels
        n = sum(ci * c + c + 9 * c * c + c for ci in channels)
        if self.extra == "p6p7":
            n += 9 * channels[-1] * c + c + 9 * c * c + c
        return n

    def build(self, x: PortType) -> nn.Module:
        chosen, channels = self._plan(x)
        names = self._names(chosen)
        extra: Optional[nn.Module] = None
        if self.extra == "maxpool":
            extra = LastLevelMaxPool()
            names.append(level_name(chosen[-1][2] * 2))
        elif self.extra == "p6p7":
            extra = LastLevelP6P7(channels[-1], self.out_channels)
            names += [level_name(chosen[-1][2] * 2), level_name(chosen[-1][2] * 4)]
        return FPN([n for n, _, _ in chosen], channels, self.out_channels, names, extra)

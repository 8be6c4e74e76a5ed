"""Inception v3 (torchvision-compatible): the `inception` backbone and its part `inception_module`.

Module names mirror `torchvision.models.Inception3` (Conv2d_1a_3x3.conv/.bn, Mixed_5b.branch1x1,
..., AuxLogits, fc), so a torchvision state dict loads with identical keys.

The auxiliary classifier. torchvision computes it only in training mode, so its output type
changes between train and eval, which composer does not allow. Here `aux_logits: true` (the
default, as torchvision) keeps the AuxLogits head and its parameters (27,161,264 in all with
1000 classes, so checkpoints load), but it is not in the forward unless `aux_output: true`,
which adds an `aux_logits` output port computed in every mode. That head pools 5x5/3 and then
applies a 5x5 conv to Mixed_6e's map, so it needs an input of at least 299x299 (the 17x17
map of the original network); without it the backbone runs from 75x75.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal, Optional

import torch
import torch.nn.functional as F
from torch import nn

from composer.block import Block, In
from composer.dims import DimLike, conv_out
from composer.params import PosInt, Prob
from composer.registry import register
from composer.types import InferError, PortType, expect_float, expect_rank, expect_static

from .layers import backbone_outputs, stages
from .resnet import check_size, feature_map, image_channels

STAGE_STRIDES = (4, 8, 16, 32)  # nominal strides of c2..c5 (the convs are unpadded, sizes are exact)


def init_like_torchvision_inception(module: nn.Module) -> None:
    """torchvision's Inception3 init: truncated normal (std 0.1, or a module's `stddev`), BN 1/0."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            std = float(getattr(m, "stddev", 0.1))
            nn.init.trunc_normal_(m.weight, mean=0.0, std=std, a=-2, b=2)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.constant_(m.weight, 1)
            nn.init.constant_(m.bias, 0)


# ---- modules ------------------------------------------------------------------------------


class BasicConv2d(nn.Module):
    """Conv (no bias), BatchNorm (eps 1e-3), ReLU."""

    def __init__(self, cin: int, cout: int, **kwargs: Any):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, bias=False, **kwargs)
        self.bn = nn.BatchNorm2d(cout, eps=0.001)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(self.conv(x)), inplace=True)


class InceptionA(nn.Module):
    """35x35 module: 1x1, 5x5, double 3x3 and pooled branches -> 224 + pool_features channels."""

    def __init__(self, cin: int, pool_features: int):
        super().__init__()
        self.branch1x1 = BasicConv2d(cin, 64, kernel_size=1)
        self.branch5x5_1 = BasicConv2d(cin, 48, kernel_size=1)
        self.branch5x5_2 = BasicConv2d(48, 64, kernel_size=5, padding=2)
        self.branch3x3dbl_1 = BasicConv2d(cin, 64, kernel_size=1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, kernel_size=3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, kernel_size=3, padding=1)
        self.branch_pool = BasicConv2d(cin, pool_features, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b1 = self.branch1x1(x)
        b5 = self.branch5x5_2(self.branch5x5_1(x))
        b3 = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        bp = self.branch_pool(F.avg_pool2d(x, kernel_size=3, stride=1, padding=1))
        return torch.cat([b1, b5, b3, bp], 1)


class InceptionB(nn.Module):
    """Grid reduction 35 -> 17: strided 3x3, double 3x3 and max-pool branches -> 480 + C_in channels."""

    def __init__(self, cin: int):
        super().__init__()
        self.branch3x3 = BasicConv2d(cin, 384, kernel_size=3, stride=2)
        self.branch3x3dbl_1 = BasicConv2d(cin, 64, kernel_size=1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, kernel_size=3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, kernel_size=3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b3 = self.branch3x3(x)
        bd = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        bp = F.max_pool2d(x, kernel_size=3, stride=2)
        return torch.cat([b3, bd, bp], 1)


class InceptionC(nn.Module):
    """17x17 module with factorised 7x7 convs (1x7, 7x1) -> 768 channels."""

    def __init__(self, cin: int, channels_7x7: int):
        super().__init__()
        c7 = channels_7x7
        self.branch1x1 = BasicConv2d(cin, 192, kernel_size=1)
        self.branch7x7_1 = BasicConv2d(cin, c7, kernel_size=1)
        self.branch7x7_2 = BasicConv2d(c7, c7, kernel_size=(1, 7), padding=(0, 3))
        self.branch7x7_3 = BasicConv2d(c7, 192, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7dbl_1 = BasicConv2d(cin, c7, kernel_size=1)
        self.branch7x7dbl_2 = BasicConv2d(c7, c7, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7dbl_3 = BasicConv2d(c7, c7, kernel_size=(1, 7), padding=(0, 3))
        self.branch7x7dbl_4 = BasicConv2d(c7, c7, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7dbl_5 = BasicConv2d(c7, 192, kernel_size=(1, 7), padding=(0, 3))
        self.branch_pool = BasicConv2d(cin, 192, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b1 = self.branch1x1(x)
        b7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
        bd = self.branch7x7dbl_1(x)
        bd = self.branch7x7dbl_5(self.branch7x7dbl_4(self.branch7x7dbl_3(self.branch7x7dbl_2(bd))))
        bp = self.branch_pool(F.avg_pool2d(x, kernel_size=3, stride=1, padding=1))
        return torch.cat([b1, b7, bd, bp], 1)


class InceptionD(nn.Module):
    """Grid reduction 17 -> 8: strided 3x3, strided 7x7x3 and max-pool branches -> 512 + C_in channels."""

    def __init__(self, cin: int):
        super().__init__()
        self.branch3x3_1 = BasicConv2d(cin, 192, kernel_size=1)
        self.branch3x3_2 = BasicConv2d(192, 320, kernel_size=3, stride=2)
        self.branch7x7x3_1 = BasicConv2d(cin, 192, kernel_size=1)
        self.branch7x7x3_2 = BasicConv2d(192, 192, kernel_size=(1, 7), padding=(0, 3))
        self.branch7x7x3_3 = BasicConv2d(192, 192, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7x3_4 = BasicConv2d(192, 192, kernel_size=3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b3 = self.branch3x3_2(self.branch3x3_1(x))
        b7 = self.branch7x7x3_4(self.branch7x7x3_3(self.branch7x7x3_2(self.branch7x7x3_1(x))))
        bp = F.max_pool2d(x, kernel_size=3, stride=2)
        return torch.cat([b3, b7, bp], 1)


class InceptionE(nn.Module):
    """8x8 module with expanded 1x3/3x1 filter banks -> 2048 channels."""

    def __init__(self, cin: int):
        super().__init__()
        self.branch1x1 = BasicConv2d(cin, 320, kernel_size=1)
        self.branch3x3_1 = BasicConv2d(cin, 384, kernel_size=1)
        self.branch3x3_2a = BasicConv2d(384, 384, kernel_size=(1, 3), padding=(0, 1))
        self.branch3x3_2b = BasicConv2d(384, 384, kernel_size=(3, 1), padding=(1, 0))
        self.branch3x3dbl_1 = BasicConv2d(cin, 448, kernel_size=1)
        self.branch3x3dbl_2 = BasicConv2d(448, 384, kernel_size=3, padding=1)
        self.branch3x3dbl_3a = BasicConv2d(384, 384, kernel_size=(1, 3), padding=(0, 1))
        self.branch3x3dbl_3b = BasicConv2d(384, 384, kernel_size=(3, 1), padding=(1, 0))
        self.branch_pool = BasicConv2d(cin, 192, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b1 = self.branch1x1(x)
        b3 = self.branch3x3_1(x)
        b3 = torch.cat([self.branch3x3_2a(b3), self.branch3x3_2b(b3)], 1)
        bd = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        bd = torch.cat([self.branch3x3dbl_3a(bd), self.branch3x3dbl_3b(bd)], 1)
        bp = self.branch_pool(F.avg_pool2d(x, kernel_size=3, stride=1, padding=1))
        return torch.cat([b1, b3, bd, bp], 1)


class InceptionAux(nn.Module):
    """Auxiliary classifier on the 17x17 map: 5x5/3 avg pool, 1x1 conv, 5x5 conv, pool, fc."""

    def __init__(self, cin: int, num_classes: int):
        super().__init__()
        self.conv0 = BasicConv2d(cin, 128, kernel_size=1)
        self.conv1 = BasicConv2d(128, 768, kernel_size=5)
        self.conv1.stddev = 0.01  # type: ignore[assignment]  (read by the init)
        self.fc = nn.Linear(768, num_classes)
        self.fc.stddev = 0.001  # type: ignore[assignment]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv1(self.conv0(F.avg_pool2d(x, kernel_size=5, stride=3)))  # (B, 768, h, w)
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, (1, 1)), 1))    # (B, classes)


class Inception3(nn.Module):
    """torchvision's Inception3 with outputs (pooled, {c2..c5}[, logits][, aux_logits])."""

    def __init__(self, in_channels: int = 3, num_classes: Optional[int] = None, aux_logits: bool = True,
                 aux_output: bool = False, transform_input: bool = False, dropout: float = 0.5):
        super().__init__()
        self.transform_input = transform_input
        self.aux_output = aux_output
        self.Conv2d_1a_3x3 = BasicConv2d(in_channels, 32, kernel_size=3, stride=2)
        self.Conv2d_2a_3x3 = BasicConv2d(32, 32, kernel_size=3)
        self.Conv2d_2b_3x3 = BasicConv2d(32, 64, kernel_size=3, padding=1)
        self.maxpool1 = nn.MaxPool2d(kernel_size=3, stride=2)
        self.Conv2d_3b_1x1 = BasicConv2d(64, 80, kernel_size=1)
        self.Conv2d_4a_3x3 = BasicConv2d(80, 192, kernel_size=3)
        self.maxpool2 = nn.MaxPool2d(kernel_size=3, stride=2)
        self.Mixed_5b = InceptionA(192, pool_features=32)
        self.Mixed_5c = InceptionA(256, pool_features=64)
        self.Mixed_5d = InceptionA(288, pool_features=64)
        self.Mixed_6a = InceptionB(288)
        self.Mixed_6b = InceptionC(768, channels_7x7=128)
        self.Mixed_6c = InceptionC(768, channels_7x7=160)
        self.Mixed_6d = InceptionC(768, channels_7x7=160)
        self.Mixed_6e = InceptionC(768, channels_7x7=192)
        has_head = num_classes is not None
        self.AuxLogits = InceptionAux(768, num_classes) if has_head and aux_logits else None
        self.Mixed_7a = InceptionD(768)
        self.Mixed_7b = InceptionE(1280)
        self.Mixed_7c = InceptionE(2048)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.dropout = nn.Dropout(p=dropout)
        self.fc = nn.Linear(2048, num_classes) if has_head else None
        init_like_torchvision_inception(self)

    def _transform_input(self, x: torch.Tensor) -> torch.Tensor:
        # re-normalise from ImageNet mean/std to [-1, 1], as the Google checkpoint expects
        x0 = torch.unsqueeze(x[:, 0], 1) * (0.229 / 0.5) + (0.485 - 0.5) / 0.5
        x1 = torch.unsqueeze(x[:, 1], 1) * (0.224 / 0.5) + (0.456 - 0.5) / 0.5
        x2 = torch.unsqueeze(x[:, 2], 1) * (0.225 / 0.5) + (0.406 - 0.5) / 0.5
        return torch.cat((x0, x1, x2), 1)

    def forward(self, x: torch.Tensor):
        if self.transform_input:
            x = self._transform_input(x)
        x = self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x)))
        c2 = self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(self.maxpool1(x)))       # (B, 192, ~H/4, ~W/4)
        c3 = self.Mixed_5d(self.Mixed_5c(self.Mixed_5b(self.maxpool2(c2))))  # (B, 288, ~H/8, ~W/8)
        x = self.Mixed_6a(c3)
        c4 = self.Mixed_6e(self.Mixed_6d(self.Mixed_6c(self.Mixed_6b(x))))   # (B, 768, ~H/16, ~W/16)
        c5 = self.Mixed_7c(self.Mixed_7b(self.Mixed_7a(c4)))                 # (B, 2048, ~H/32, ~W/32)
        pooled = torch.flatten(self.avgpool(c5), 1)                          # (B, 2048)
        outputs: tuple = (pooled, {"c2": c2, "c3": c3, "c4": c4, "c5": c5})
        if self.fc is not None:
            outputs += (self.fc(self.dropout(pooled)),)
        if self.aux_output and self.AuxLogits is not None:
            outputs += (self.AuxLogits(c4),)
        return outputs


VARIANTS = {"a": InceptionA, "b": InceptionB, "c": InceptionC, "d": InceptionD, "e": InceptionE}


# ---- shapes -------------------------------------------------------------------------------


def _reduce(d: DimLike) -> DimLike:
    """An unpadded 3x3/2 conv or max pool (the grid reductions)."""
    return conv_out(d, 3, 2)


def _stage_sizes(d: DimLike) -> tuple[DimLike, DimLike, DimLike, DimLike]:
    """One spatial dim of c2..c5 for an input dim."""
    c2 = conv_out(_reduce(conv_out(_reduce(d), 3)), 3)  # 1a /2, 2a, 2b (same), maxpool1 /2, 3b, 4a
    c3 = _reduce(c2)                                    # maxpool2, Mixed_5b..5d
    c4 = _reduce(c3)                                    # Mixed_6a, 6b..6e
    c5 = _reduce(c4)                                    # Mixed_7a, 7b, 7c
    return c2, c3, c4, c5


def _aux_size(c4: DimLike) -> DimLike:
    return conv_out(conv_out(c4, 5, 3), 5)


# ---- blocks -------------------------------------------------------------------------------


@register
class InceptionBackbone(Block):
    """Inception v3 (torchvision layout and weights): pooled vector, c2..c5, logits, aux logits.

    The aux head's parameters are kept by default (torchvision's aux_logits=True) but it runs
    only with `aux_output: true`, in train and eval mode alike; see the module docstring.
    """
    name: ClassVar[str] = "inception"
    family: ClassVar[str] = "vision"
    inputs: ClassVar = {"x": In("image", "feature_map", doc="[B, 3, H, W], at least 75x75")}
    outputs: ClassVar = ("pooled", "features", "logits", "aux_logits")
    example: ClassVar = {"params": {"num_classes": 10},
                         "inputs": {"x": PortType("image", (2, 3, 75, 75))}}
    variant: Literal["v3"] = "v3"
    num_classes: Optional[PosInt] = None  # None: no fc and no aux head, outputs are pooled and features
    aux_logits: bool = True               # keep the auxiliary classifier's parameters (with num_classes)
    aux_output: bool = False              # also output `aux_logits`, computed in train and eval mode
    transform_input: bool = False         # True for Google's checkpoint: ImageNet-normalised to [-1, 1]
    dropout: Prob = 0.5                   # before fc

    def infer(self, x: PortType) -> dict[str, PortType]:
        if self.aux_output and (self.num_classes is None or not self.aux_logits):
            param = "num_classes" if self.num_classes is None else "aux_logits"
            raise InferError("aux_output needs the auxiliary classifier: set num_classes and aux_logits",
                             param="aux_output", expected="num_classes set and aux_logits true",
                             found=f"{param} {getattr(self, param)}")
        c = image_channels(x)
        if self.transform_input and c != 3:
            raise InferError("transform_input re-normalises three RGB channels", param="transform_input",
                             expected="a 3-channel input", found=f"{c} channels")
        hs, ws = _stage_sizes(x.shape[2]), _stage_sizes(x.shape[3])
        check_size(hs[3], ws[3], "inception v3 (it needs at least 75x75)")
        maps = {f"c{i + 2}": feature_map(x, ch, h, w)
                for i, (ch, h, w) in enumerate(zip((192, 288, 768, 2048), hs, ws))}
        out = backbone_outputs(x, stages(maps, STAGE_STRIDES), 2048, self.num_classes)
        if self.aux_output:
            check_size(_aux_size(hs[2]), _aux_size(ws[2]), "inception's aux head (it needs at least 299x299)",
                       param="aux_output")
            out["aux_logits"] = PortType("logits", (x.shape[0], self.num_classes), x.dtype)
        return out

    def build(self, x: PortType) -> nn.Module:
        return Inception3(x.shape[1], self.num_classes, self.aux_logits, self.aux_output,
                          self.transform_input, self.dropout)


@register
class InceptionModule(Block):
    """One Inception v3 module: variant a (35x35), b (reduction), c (17x17, 7x7), d (reduction), e (8x8)."""
    name: ClassVar[str] = "inception_module"
    example: ClassVar = {"params": {"variant": "a", "pool_features": 8},
                         "inputs": {"x": PortType("feature_map", (2, 8, 16, 16))}}
    family: ClassVar[str] = "vision"
    inputs: ClassVar = {"x": In("feature_map", doc="[B, C_in, H, W]")}
    variant: Literal["a", "b", "c", "d", "e"]
    pool_features: Optional[PosInt] = None  # variant a only: channels of the pooled branch
    channels_7x7: Optional[PosInt] = None   # variant c only: width of the factorised 7x7 branches

    def _check(self, x: PortType) -> int:
        for param, variant in (("pool_features", "a"), ("channels_7x7", "c")):
            value = getattr(self, param)
            if self.variant == variant and value is None:
                raise InferError(f"variant {variant} needs `{param}`", param=param, expected="a positive integer",
                                 found="nothing", hint=f"torchvision uses {param}: "
                                 + ("32 or 64" if variant == "a" else "128, 160 or 192"))
            if self.variant != variant and value is not None:
                raise InferError(f"`{param}` applies to variant {variant} only", param=param,
                                 expected="no value", found=str(value), hint=f"remove it, or use variant {variant}")
        expect_rank(x, 4, "x", " [B, C, H, W]")
        expect_float(x, "x")
        return expect_static(x.shape[1], "x", "the channel count of an inception module input")

    def infer(self, x: PortType) -> PortType:
        c = self._check(x)
        h, w = x.shape[2], x.shape[3]
        if self.variant in ("b", "d"):
            h, w = _reduce(h), _reduce(w)
            check_size(h, w, f"inception module {self.variant} (a 3x3/2 reduction)")
        cout = {"a": 224 + (self.pool_features or 0), "b": 480 + c, "c": 768, "d": 512 + c, "e": 2048}[self.variant]
        kind = "feature_map" if x.kind == "image" else x.kind
        return x.with_(kind=kind, shape=(x.shape[0], cout, h, w))

    def build(self, x: PortType) -> nn.Module:
        c = self._check(x)
        cls = VARIANTS[self.variant]
        if self.variant == "a":
            m = cls(c, self.pool_features)
        elif self.variant == "c":
            m = cls(c, self.channels_7x7)
        else:
            m = cls(c)
        init_like_torchvision_inception(m)
        return m

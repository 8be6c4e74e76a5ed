"""The YOLOv8 head: `yolo_head` (anchor-free, decoupled box and class branches, distribution
focal box regression, decoded over strides 8/16/32) and `yolo_nms` (confidence filter and
class-aware NMS into padded per-image slots).

`YoloHead` mirrors Ultralytics' `Detect` in its v8 ("legacy") form: `cv2` (box branch per
level: Conv, Conv, 1x1 Conv2d to 4 * reg_max), `cv3` (class branch: Conv, Conv, 1x1 Conv2d to
nc), `dfl` (a fixed 1x1 conv whose weight is arange(reg_max), a parameter that does not train),
registered in that order so an Ultralytics state dict loads by order. Its output is Detect's
eval-mode output: [B, 4 + nc, N] with xywh boxes in (letterboxed) pixels and class
probabilities, N anchors over all levels (row-major per level, levels in order).

In a training step (`composer.block_losses`) `yolo_head` also records Ultralytics' v8
detection loss (`loss_box`, `loss_cls`, `loss_dfl`: blocks.detection.yolo_loss) against the
step's targets in letterboxed pixels (what `letterbox` leaves in the scratch) with class ids
0..nc-1; its output is the same in both modes.

`yolo_nms` does what `ultralytics.utils.ops.non_max_suppression` does with its predictor
defaults (best class per box, conf > conf, class-aware NMS at iou, at most max_det per image)
but for the whole batch at once with the export-safe ops of `blocks.detection.ops`:
Ultralytics loops over images in Python, which `torch.export` cannot trace with a dynamic batch.
Ultralytics also keeps only the 30,000 best candidates before NMS; at imgsz 640 there are at
most 8,400 anchors, so that cap never applies.
"""

from __future__ import annotations

import math
from typing import ClassVar

import torch
from pydantic import Field
from torch import nn
from typing_extensions import Annotated

from composer.block import Block, In
from composer.block_losses import active
from composer.dims import Dim, Sym, format_dim
from composer.params import Activation, Eps, PosInt, Prob
from composer.registry import register
from composer.types import InferError, PortType, expect_float, expect_rank, expect_static

from .ops import clear_unused, gather_rows, select_top, slot_mask
from .ports import detections_type
from .training import step_targets
from .yolo_loss import YoloLoss
from .yolo_parts import BN_EPS, BN_MOMENTUM, conv, conv_params

Fraction01 = Annotated[float, Field(ge=0.0, le=1.0)]
NonNegFloat = Annotated[float, Field(ge=0.0)]


def head_widths(c0: int, num_classes: int, reg_max: int) -> tuple[int, int]:
    """Hidden widths of the box and class branches, as Detect computes them from the first level."""
    return max(16, c0 // 4, reg_max * 4), max(c0, min(num_classes, 100))


# ---- modules ------------------------------------------------------------------------------


class DFL(nn.Module):
    """Distribution focal loss integral: the expected value of a softmax over reg_max bins, as a
    fixed 1x1 conv with weight arange(reg_max) (Ultralytics' DFL; the weight never trains)."""

    def __init__(self, reg_max: int = 16):
        super().__init__()
        self.conv = nn.Conv2d(reg_max, 1, 1, bias=False).requires_grad_(False)
        with torch.no_grad():
            self.conv.weight.copy_(torch.arange(reg_max, dtype=torch.float32).view(1, reg_max, 1, 1))
        self.reg_max = reg_max

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, a = x.shape                                        # (B, 4 * reg_max, N)
        x = x.view(b, 4, self.reg_max, a).transpose(2, 1).softmax(1)   # (B, reg_max, 4, N)
        return self.conv(x).view(b, 4, a)                        # (B, 4, N) distances in grid cells


class YoloHead(nn.Module):
    """Ultralytics' v8 Detect head; forward takes the level maps and returns [B, 4 + nc, N]."""

    def __init__(self, channels: list[int], strides: list[int], num_classes: int = 80, reg_max: int = 16,
                 activation: Activation = "silu", eps: float = BN_EPS, momentum: float = BN_MOMENTUM,
                 loss: YoloLoss | None = None):
        super().__init__()
        self.nc, self.reg_max, self.strides = num_classes, reg_max, tuple(strides)
        self.loss = loss if loss is not None else YoloLoss(num_classes, reg_max, strides)   # training only
        c2, c3 = head_widths(channels[0], num_classes, reg_max)
        kw = {"activation": activation, "eps": eps, "momentum": momentum}
        self.cv2 = nn.ModuleList(
            nn.Sequential(conv(c, c2, 3, **kw), conv(c2, c2, 3, **kw), nn.Conv2d(c2, 4 * reg_max, 1)) for c in channels)
        self.cv3 = nn.ModuleList(
            nn.Sequential(conv(c, c3, 3, **kw), conv(c3, c3, 3, **kw), nn.Conv2d(c3, num_classes, 1)) for c in channels)
        self.dfl = DFL(reg_max) if reg_max > 1 else nn.Identity()
        self.bias_init()

    def bias_init(self) -> None:
        """Ultralytics' Detect.bias_init: box bias 2, class bias for ~0.01 objects per 640 image."""
        with torch.no_grad():
            for box, cls, s in zip(self.cv2, self.cv3, self.strides):
                box[-1].bias.fill_(2.0)
                cls[-1].bias[: self.nc] = math.log(5 / self.nc / (640 / s) ** 2)

    def anchors(self, xs: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Cell centres (2, N) in grid units and the stride of each (1, N), as Ultralytics' make_anchors."""
        points, strides = [], []
        for x, s in zip(xs, self.strides):
            h, w = x.shape[2:]
            sx = torch.arange(w, device=x.device).to(x.dtype) + 0.5
            sy = torch.arange(h, device=x.device).to(x.dtype) + 0.5
            gy, gx = torch.meshgrid(sy, sx, indexing="ij")
            points.append(torch.stack((gx, gy), -1).view(-1, 2))
            strides.append(torch.full((h * w, 1), float(s), dtype=x.dtype, device=x.device))
        return torch.cat(points).transpose(0, 1), torch.cat(strides).transpose(0, 1)

    def forward(self, xs: list[torch.Tensor]) -> torch.Tensor:
        b = xs[0].shape[0]
        box = torch.cat([m(x).view(b, 4 * self.reg_max, -1) for m, x in zip(self.cv2, xs)], -1)  # (B, 4 reg_max, N)
        cls = torch.cat([m(x).view(b, self.nc, -1) for m, x in zip(self.cv3, xs)], -1)          # (B, nc, N)
        points, strides = self.anchors(xs)
        if self.training and (step := active()) is not None:    # a training step: Ultralytics' v8 loss
            size = (xs[0].shape[2] * self.strides[0], xs[0].shape[3] * self.strides[0])   # the network input's h, w
            for name, value in self.loss(box, cls, points, strides, step_targets(step, b, box.device), size).items():
                step.add(name, value)
        lt, rb = self.dfl(box).chunk(2, 1)                       # (B, 2, N) each: left-top, right-bottom
        x1y1, x2y2 = points[None] - lt, points[None] + rb
        xywh = torch.cat(((x1y1 + x2y2) / 2, x2y2 - x1y1), 1) * strides   # (B, 4, N) pixels
        return torch.cat((xywh, cls.sigmoid()), 1)               # (B, 4 + nc, N)


def xywh_to_xyxy(x: torch.Tensor) -> torch.Tensor:
    """Centre-size boxes [..., 4] to corners, with Ultralytics' operations (xy -+ wh / 2)."""
    xy, wh = x[..., :2], x[..., 2:] / 2
    return torch.cat((xy - wh, xy + wh), -1)


class YoloNMS(nn.Module):
    """[B, 4 + nc, N] predictions -> detections padded to max_det: best class per box, score > conf,
    per-image class-aware (or agnostic) NMS, best first."""

    def __init__(self, conf: float, iou: float, max_det: int, agnostic: bool):
        super().__init__()
        self.conf, self.iou, self.max_det, self.agnostic = conf, iou, max_det, agnostic

    def forward(self, predictions: torch.Tensor) -> dict[str, torch.Tensor]:
        if predictions.device.type == "meta":                    # shapes only (MAC counts): nothing to select by
            return self._slots(predictions)
        pred = predictions.transpose(1, 2)                       # (B, N, 4 + nc)
        boxes = xywh_to_xyxy(pred[..., :4])                      # (B, N, 4)
        scores, labels = pred[..., 4:].max(-1)                   # (B, N) best class
        keep = scores > self.conf
        groups = torch.zeros_like(labels) if self.agnostic else labels
        idx, count = select_top(boxes, scores, keep, groups, self.iou, self.max_det)   # (B, K), (B,)
        valid = slot_mask(count, self.max_det)
        return {"boxes": clear_unused(gather_rows(boxes, idx), valid, 0.0),
                "scores": clear_unused(gather_rows(scores, idx), valid, 0.0),
                "labels": clear_unused(gather_rows(labels, idx), valid, -1),
                "count": count}

    def _slots(self, predictions: torch.Tensor) -> dict[str, torch.Tensor]:
        """Empty detections of the output shapes (NMS has data-dependent sizes, which meta tensors cannot have)."""
        b, k, like = predictions.shape[0], self.max_det, predictions
        return {"boxes": like.new_zeros((b, k, 4)), "scores": like.new_zeros((b, k)),
                "labels": like.new_full((b, k), -1, dtype=torch.int64), "count": like.new_zeros((b,), dtype=torch.int64)}


# ---- blocks -------------------------------------------------------------------------------


def _level_stride(d) -> int | None:
    """k when a dim is exactly S/k for one symbol S (a map at stride k of an input S), else None."""
    if isinstance(d, Dim) and len(d.terms) == 1:
        (mono, c), = d.terms.items()
        if len(mono) == 1 and isinstance(mono[0], Sym) and c.numerator == 1:
            return c.denominator
    return None


@register
class YoloHeadBlock(Block):
    """YOLOv8 detection head (Ultralytics Detect layout): anchor-free, decoupled box/class branches, DFL box decoding.

    Takes the neck's maps (P3, P4, P5 at `strides` 8, 16, 32) and returns `predictions`
    [B, 4 + num_classes, N]: xywh boxes in pixels of the network input and class
    probabilities for each of the N anchor points (Ultralytics' eval-mode output, before NMS).

    In training (`composer train`) it records Ultralytics' v8DetectionLoss as `loss_box` (CIoU),
    `loss_cls` (BCE) and `loss_dfl` (distribution focal loss), each times its gain and the batch
    size as Ultralytics returns them: targets assigned by the task-aligned assigner (`topk`,
    `alpha`, `beta`). Its classes are 0..num_classes-1: COCO data's categories in id order.
    """
    name: ClassVar[str] = "yolo_head"
    family: ClassVar[str] = "detection"
    inputs: ClassVar = {"xs": In("feature_map", variadic=True, doc="P3, P4, P5: [B, C_i, H/s_i, W/s_i]")}
    outputs: ClassVar = ("predictions",)
    losses: ClassVar = YoloLoss.names
    example: ClassVar = {"params": {"num_classes": 3},
                         "inputs": {"xs": [PortType("feature_map", (2, 8, 8, 8)), PortType("feature_map", (2, 16, 4, 4)),
                                           PortType("feature_map", (2, 32, 2, 2))]}}
    num_classes: PosInt = 80
    reg_max: PosInt = 16                                         # DFL bins per box side (1: direct distances)
    strides: Annotated[list[PosInt], Field(min_length=1)] = [8, 16, 32]
    activation: Activation = "silu"
    eps: Eps = BN_EPS
    momentum: Prob = BN_MOMENTUM
    # training (the loss; predictions are the same in both modes): Ultralytics' v8 defaults
    topk: PosInt = 10                # assigner: anchors each target takes, best by score^alpha * CIoU^beta
    alpha: NonNegFloat = 0.5
    beta: NonNegFloat = 6.0
    box_gain: NonNegFloat = 7.5      # factor of loss_box
    cls_gain: NonNegFloat = 0.5      # factor of loss_cls
    dfl_gain: NonNegFloat = 1.5      # factor of loss_dfl

    def _channels(self, xs: list[PortType]) -> list[int]:
        if len(xs) != len(self.strides):
            raise InferError(f"yolo_head has {len(self.strides)} strides but {len(xs)} input maps", port="xs",
                             code="E302", expected=f"{len(self.strides)} maps (one per stride)", found=str(len(xs)),
                             hint="connect one map per entry of `strides`")
        channels = []
        for i, (x, s) in enumerate(zip(xs, self.strides)):
            port = f"xs[{i}]"
            expect_rank(x, 4, port, " [B, C, H, W]")
            expect_float(x, port)
            channels.append(expect_static(x.shape[1], port, "the channel count of a yolo_head input"))
            for axis in (2, 3):
                k = _level_stride(x.shape[axis])
                if k is not None and k != s:
                    raise InferError(f"input {i} of yolo_head is at stride {k}, but `strides` says {s}",
                                     param="strides", expected=f"stride {k} for input {i}",
                                     found=f"{s} (map {format_dim(x.shape[axis])})")
        return channels

    def infer(self, xs: list[PortType]) -> dict[str, PortType]:
        self._channels(xs)
        b = xs[0].shape[0]
        n = 0
        for x in xs:
            n = n + x.shape[2] * x.shape[3]
        return {"predictions": PortType("tensor", (b, 4 + self.num_classes, n), xs[0].dtype,
                                        meta=(("classes", self.num_classes), ("box_format", "xywh")))}

    def param_count(self, xs: list[PortType]) -> int:
        channels = self._channels(xs)
        c2, c3 = head_widths(channels[0], self.num_classes, self.reg_max)
        total = self.reg_max if self.reg_max > 1 else 0          # the DFL weight
        for c in channels:
            total += conv_params(c, c2, 3) + conv_params(c2, c2, 3) + c2 * 4 * self.reg_max + 4 * self.reg_max
            total += conv_params(c, c3, 3) + conv_params(c3, c3, 3) + c3 * self.num_classes + self.num_classes
        return total

    def build(self, xs: list[PortType]) -> nn.Module:
        loss = YoloLoss(self.num_classes, self.reg_max, list(self.strides), self.topk, self.alpha, self.beta,
                        self.box_gain, self.cls_gain, self.dfl_gain)
        return YoloHead(self._channels(xs), list(self.strides), self.num_classes, self.reg_max, self.activation,
                        self.eps, self.momentum, loss)


@register
class YoloNMSBlock(Block):
    """YOLO post-processing: best class per box, confidence filter, class-aware NMS, top max_det (Ultralytics NMS).

    `predictions` [B, 4 + nc, N] (xywh boxes and class probabilities, from `yolo_head`) become
    `detections` padded to `max_det` per image (boxes xyxy in the same pixels, best first;
    unused slots: box 0, score 0, label -1). `agnostic: true` lets boxes of different classes
    suppress each other.
    """
    name: ClassVar[str] = "yolo_nms"
    family: ClassVar[str] = "detection"
    inputs: ClassVar = {"predictions": In("tensor", doc="[B, 4 + nc, N]: xywh boxes, class probabilities")}
    outputs: ClassVar = ("detections",)
    example: ClassVar = {"params": {"conf": 0.5, "max_det": 5},
                         "inputs": {"predictions": PortType("tensor", (2, 7, 40))}}
    conf: Fraction01 = 0.25
    iou: Fraction01 = 0.7
    max_det: PosInt = 300
    agnostic: bool = False

    def infer(self, predictions: PortType) -> dict[str, PortType]:
        expect_rank(predictions, 3, "predictions", " [B, 4 + nc, N]")
        expect_float(predictions, "predictions")
        c = expect_static(predictions.shape[1], "predictions", "the box + class count (axis 1) of yolo predictions")
        if c < 5:
            raise InferError("yolo predictions need 4 box values and at least one class score on axis 1",
                             port="predictions", code="E302", expected="[B, 4 + nc, N] with nc >= 1",
                             found=str(predictions))
        return {"detections": detections_type(predictions.shape[0], self.max_det, predictions.dtype,
                                              num_classes=c - 4, class_ids="index")}

    def param_count(self, predictions: PortType) -> int:
        return 0

    def build(self, predictions: PortType) -> nn.Module:
        return YoloNMS(self.conf, self.iou, self.max_det, self.agnostic)

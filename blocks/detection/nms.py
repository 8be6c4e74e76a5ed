"""`nms`: class-aware, batched non-maximum suppression of scored boxes into padded detections."""

from __future__ import annotations

from typing import ClassVar, Optional

import torch
from torch import nn

from composer.block import Block, In
from composer.params import PosInt
from composer.registry import register
from composer.types import InferError, PortType, expect_rank, expect_static

from .ops import clear_unused, gather_rows, select_top, slot_mask
from .ports import detections_type
from .rpn import Threshold


class NMS(nn.Module):
    """(boxes [B, N, 4], scores [B, N] or [B, N, C], labels [B, N]?) -> detections [B, K]."""

    def __init__(self, iou: float, score_thresh: float, k: int, class_aware: bool):
        super().__init__()
        self.iou, self.score_thresh, self.k, self.class_aware = iou, score_thresh, k, class_aware

    def forward(self, boxes: torch.Tensor, scores: torch.Tensor, labels: Optional[torch.Tensor] = None) -> dict:
        b, n = boxes.shape[:2]
        if scores.dim() == 3:                      # class scores: every (box, class) pair is a candidate
            c = scores.shape[2]
            labels = torch.arange(c, device=scores.device).view(1, 1, c).expand(b, n, c).reshape(b, -1)
            boxes = boxes[:, :, None].expand(b, n, c, 4).reshape(b, -1, 4)
            scores = scores.reshape(b, -1)
        elif labels is None:
            labels = torch.zeros((b, n), dtype=torch.int64, device=boxes.device)
        groups = labels if self.class_aware else torch.zeros_like(labels)
        keep = scores > self.score_thresh
        idx, count = select_top(boxes, scores, keep, groups, self.iou, self.k)
        valid = slot_mask(count, self.k)
        return {"boxes": clear_unused(gather_rows(boxes, idx), valid),
                "scores": clear_unused(gather_rows(scores, idx), valid),
                "labels": clear_unused(gather_rows(labels, idx), valid, -1), "count": count}


@register
class NMSBlock(Block):
    """Batched, class-aware non-maximum suppression: boxes and scores to detections padded to `max_detections`.

    `scores` [B, N] with optional `labels` [B, N], or class scores [B, N, C] (each box once per
    class). Candidates need a score above `score_thresh`; boxes of different classes never
    suppress each other unless `class_aware: false`. Exports to ONNX with a dynamic batch.
    """
    name: ClassVar[str] = "nms"
    family: ClassVar[str] = "detection"
    inputs: ClassVar = {"boxes": In("boxes", doc="[B, N, 4] xyxy"), "scores": In("scores", "probs", "tensor"),
                        "labels": In("labels", "tensor", optional=True, doc="[B, N] int64")}
    outputs: ClassVar = ("detections",)
    example: ClassVar = {"params": {"max_detections": 5},
                         "inputs": {"boxes": PortType("boxes", (2, 12, 4)), "scores": PortType("scores", (2, 12, 3))}}
    iou_thresh: Threshold = 0.5
    score_thresh: Threshold = 0.05
    max_detections: PosInt = 100
    class_aware: bool = True

    def infer(self, boxes: PortType, scores: PortType, labels: Optional[PortType] = None) -> dict[str, PortType]:
        expect_rank(boxes, 3, "boxes", " [B, N, 4]")
        if expect_static(boxes.shape[2], "boxes", "the last dim of boxes") != 4:
            raise InferError("boxes must be [B, N, 4] (x1, y1, x2, y2)", port="boxes", code="E302",
                             expected="[B, N, 4]", found=str(boxes))
        expect_rank(scores, (2, 3), "scores", " [B, N] or [B, N, C]")
        if tuple(scores.shape[:2]) != tuple(boxes.shape[:2]):
            raise InferError("scores and boxes disagree on [B, N]", port="scores", code="E302",
                             expected=str(boxes.shape[:2]), found=str(scores))
        if labels is not None:
            if scores.rank == 3:
                raise InferError("labels come with [B, N] scores, not with class scores", port="labels",
                                 code="E304", expected="no labels", found=str(labels))
            if labels.dtype != "int64" or tuple(labels.shape) != tuple(scores.shape):
                raise InferError("labels must be int64 [B, N]", port="labels", code="E302",
                                 expected=f"int64 {list(scores.shape)}", found=str(labels))
        return {"detections": detections_type(boxes.shape[0], self.max_detections, boxes.dtype, space="input")}

    def param_count(self, **inputs) -> int:
        return 0

    def build(self, **inputs) -> nn.Module:
        return NMS(self.iou_thresh, self.score_thresh, self.max_detections, self.class_aware)

"""`rpn`: region proposal network over FPN levels (torchvision's RPNHead and anchors).

The head is torchvision's `RPNHead` and the anchors are torchvision's `AnchorGenerator`
cell anchors laid out as it does, so checkpoints load and proposals are equal. The proposal
selection (top-k per level, clip, small-box and score filters, NMS per image and level,
post-NMS top-k) is torchvision's `filter_proposals` on the whole batch at once
(`ops.select_top`), because its per-image loop does not trace with a dynamic batch. The
result is padded to `post_nms_top_n` proposals per image with a count.

In a training step (`composer.block_losses`) it also records torchvision's RPN losses
(`training.AnchorSampler`); the proposals it outputs are the same as in eval mode.
"""

from __future__ import annotations

from typing import ClassVar, Optional

import torch
from pydantic import Field
from torch import nn
from torchvision.models.detection._utils import BoxCoder
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.rpn import RPNHead
from typing_extensions import Annotated

from composer.block import Block, In
from composer.block_losses import active
from composer.params import PosFloat, PosInt
from composer.registry import register
from composer.types import InferError, PortType, expect_static

from .ops import clear_unused, clip_boxes, gather_rows, grid_anchors, large_enough, select_top, slot_mask
from .ports import feature_levels, image_sizes_type, proposals_type
from .training import AnchorSampler, step_targets

Threshold = Annotated[float, Field(ge=0.0, le=1.0)]
Fraction = Annotated[float, Field(gt=0.0, le=1.0)]


def check_thresholds(fg: float, bg: float) -> None:
    """A matcher's IoU thresholds: the background one cannot exceed the foreground one."""
    if bg > fg:
        raise InferError("bg_iou_thresh is above fg_iou_thresh", param="bg_iou_thresh",
                         expected=f"at most fg_iou_thresh ({fg})", found=str(bg))


def features_example(channels: int = 8, b: int = 2) -> PortType:
    """A small two-level features port (strides 16 and 32 of a 128x128 image) for block examples."""
    maps = (("p4", PortType("feature_map", (b, channels, 8, 8))), ("p5", PortType("feature_map", (b, channels, 4, 4))))
    return PortType("features", None, fields=maps, meta=(("strides", (16, 32)), ("channels", (channels, channels))))


class RPN(nn.Module):
    """RPN head, anchors and batched proposal selection: (features, sizes) -> proposals."""

    def __init__(self, levels: list[str], strides: list[int], channels: int, sizes: list[list[int]],
                 ratios: list[list[float]], conv_depth: int, pre_nms_top_n: int, post_nms_top_n: int,
                 nms_thresh: float, score_thresh: float, min_size: float, sampler: AnchorSampler):
        super().__init__()
        self.levels, self.stride0 = list(levels), strides[0]
        cells = AnchorGenerator(tuple(tuple(s) for s in sizes), tuple(tuple(r) for r in ratios)).cell_anchors
        for i, cell in enumerate(cells):
            self.register_buffer(f"cell{i}", cell, persistent=False)
        self.head = RPNHead(channels, cells[0].shape[0], conv_depth)
        self.coder = BoxCoder(weights=(1.0, 1.0, 1.0, 1.0))
        self.pre_nms_top_n, self.post_nms_top_n = pre_nms_top_n, post_nms_top_n
        self.nms_thresh, self.score_thresh, self.min_size = nms_thresh, score_thresh, min_size
        self.sampler = sampler

    def forward(self, features: dict, sizes: dict) -> dict:
        maps = [features[n] for n in self.levels]
        logits, deltas = self.head(maps)
        b = maps[0].shape[0]
        # the padded image size: the first level's stride divides the transform's padding multiple
        image_hw = (maps[0].shape[-2] * self.stride0, maps[0].shape[-1] * self.stride0)
        step = active() if self.training else None
        boxes, scores, levels, every = [], [], [], []
        for i, (obj, delta, fmap) in enumerate(zip(logits, deltas, maps)):
            h, w = obj.shape[-2:]
            obj = obj.permute(0, 2, 3, 1).reshape(b, -1)                      # (B, h*w*A)
            delta = delta.view(b, -1, 4, h, w).permute(0, 3, 4, 1, 2).reshape(b, -1, 4)
            anchors = grid_anchors(getattr(self, f"cell{i}"), fmap, image_hw)  # (h*w*A, 4)
            if step is not None:
                every.append((obj, delta, anchors))
            obj, delta = obj.detach(), delta.detach()     # proposals are not trained through (torchvision)
            k = torch.sym_min(self.pre_nms_top_n, obj.shape[1])
            top, idx = obj.topk(k, dim=1)                                      # (B, k)
            chosen = self.coder.decode_single(gather_rows(delta, idx).reshape(-1, 4), anchors[idx].reshape(-1, 4))
            boxes.append(chosen.reshape(b, -1, 4))
            scores.append(top)
            levels.append(torch.full((k,), i, dtype=torch.int64, device=obj.device))
        box = clip_boxes(torch.cat(boxes, 1), sizes["resized"])               # (B, S, 4)
        prob = torch.sigmoid(torch.cat(scores, 1))                            # (B, S)
        level = torch.cat(levels).expand(b, -1)
        keep = large_enough(box, self.min_size) & (prob >= self.score_thresh)
        idx, count = select_top(box, prob, keep, level, self.nms_thresh, self.post_nms_top_n)
        valid = slot_mask(count, self.post_nms_top_n)
        if step is not None:    # a training step: torchvision's RPN losses over every anchor of the padded batch
            objectness = torch.cat([o for o, _, _ in every], 1)              # (B, S) every level's anchors
            pred = torch.cat([d for _, d, _ in every], 1)                    # (B, S, 4)
            anchors = torch.cat([a for _, _, a in every], 0)                 # (S, 4)
            targets = step_targets(step, b, objectness.device)
            loss_objectness, loss_box = self.sampler.losses(objectness, pred, anchors, targets, self.coder)
            step.add("loss_objectness", loss_objectness)
            step.add("loss_rpn_box_reg", loss_box)
        return {"boxes": clear_unused(gather_rows(box, idx), valid), "scores": clear_unused(gather_rows(prob, idx), valid),
                "count": count}


@register
class RPNBlock(Block):
    """Region proposal network (torchvision layout): anchors per level, objectness and box head, NMS, top-k proposals.

    One anchor size list per level (`anchor_sizes`, fine to coarse) and aspect ratios shared by
    all levels or given per level. Proposals are padded to `post_nms_top_n` per image, with a count.

    In training (`composer train`) it records torchvision's RPN losses: every anchor of the padded
    batch is matched to the target boxes (positive at IoU >= `fg_iou_thresh`, and each box's
    best anchors; negative below `bg_iou_thresh`), `batch_size_per_image` anchors are sampled
    per image with at most `positive_fraction` positive, and `loss_objectness` (BCE) and
    `loss_rpn_box_reg` (smooth L1, beta 1/9) are computed on them.
    """
    name: ClassVar[str] = "rpn"
    family: ClassVar[str] = "detection"
    losses: ClassVar = ("loss_objectness", "loss_rpn_box_reg")
    inputs: ClassVar = {"features": In("features", doc="FPN levels"), "sizes": In("image_sizes")}
    outputs: ClassVar = ("proposals",)
    example: ClassVar = {"params": {"anchor_sizes": [[32], [64]], "pre_nms_top_n": 50, "post_nms_top_n": 20},
                         "inputs": {"features": features_example(), "sizes": image_sizes_type(2)}}
    levels: Optional[list[str]] = None
    anchor_sizes: list[list[PosInt]] = [[32], [64], [128], [256], [512]]
    aspect_ratios: list[PosFloat] | list[list[PosFloat]] = [0.5, 1.0, 2.0]
    conv_depth: PosInt = 1
    pre_nms_top_n: PosInt = 1000       # per level, before NMS
    post_nms_top_n: PosInt = 1000      # per image, after NMS
    nms_thresh: Threshold = 0.7
    score_thresh: Threshold = 0.0
    min_size: Annotated[float, Field(ge=0.0)] = 1e-3
    # training (the losses; proposals are the same in both modes)
    fg_iou_thresh: Threshold = 0.7     # an anchor with IoU >= this to a target box is positive
    bg_iou_thresh: Threshold = 0.3     # an anchor with IoU < this to every target box is negative
    batch_size_per_image: PosInt = 256     # anchors sampled per image for the losses
    positive_fraction: Fraction = 0.5      # at most this share of them positive

    def _plan(self, features: PortType):
        check_thresholds(self.fg_iou_thresh, self.bg_iou_thresh)
        chosen = feature_levels(features, self.levels, "rpn")
        if len(self.anchor_sizes) != len(chosen):
            raise InferError(f"rpn: {len(self.anchor_sizes)} anchor size lists for {len(chosen)} feature levels",
                             param="anchor_sizes", expected=f"{len(chosen)} lists, one per level "
                             f"({', '.join(n for n, _, _ in chosen)})", found=str(self.anchor_sizes))
        ratios = self.aspect_ratios
        if ratios and isinstance(ratios[0], list):
            if len(ratios) != len(chosen):
                raise InferError("rpn: one aspect ratio list per level", param="aspect_ratios",
                                 expected=f"{len(chosen)} lists", found=str(ratios))
        else:
            ratios = [list(ratios)] * len(chosen)
        per_loc = {len(s) * len(r) for s, r in zip(self.anchor_sizes, ratios)}
        if len(per_loc) != 1:
            raise InferError("rpn: every level needs the same number of anchors per location (one shared head)",
                             param="anchor_sizes", expected="len(sizes) * len(ratios) equal on every level",
                             found=str(sorted(per_loc)))
        channels = {expect_static(t.shape[1], "features", "an rpn level's channel count") for _, t, _ in chosen}
        if len(channels) != 1:
            raise InferError("rpn: all levels need the same channel count (one shared head)", port="features",
                             code="E302", expected="equal channels (an fpn output)", found=str(sorted(channels)))
        return chosen, ratios, channels.pop(), per_loc.pop()

    def infer(self, features: PortType, sizes: PortType) -> dict[str, PortType]:
        chosen, _, _, _ = self._plan(features)
        return {"proposals": proposals_type(chosen[0][1].shape[0], self.post_nms_top_n, features.dtype)}

    def param_count(self, features: PortType, sizes: PortType) -> int:
        _, _, c, a = self._plan(features)
        return self.conv_depth * (9 * c * c + c) + (c * a + a) + (c * 4 * a + 4 * a)

    def build(self, features: PortType, sizes: PortType) -> nn.Module:
        chosen, ratios, c, _ = self._plan(features)
        return RPN([n for n, _, _ in chosen], [s for _, _, s in chosen], c, self.anchor_sizes, ratios,
                   self.conv_depth, self.pre_nms_top_n, self.post_nms_top_n, self.nms_thresh, self.score_thresh,
                   self.min_size, AnchorSampler(self.fg_iou_thresh, self.bg_iou_thresh, self.batch_size_per_image,
                                                self.positive_fraction))

"""`roi_heads` and `mask_head`: the second stage of Faster and Mask R-CNN.

The box head, predictors and mask head are torchvision's modules (`TwoMLPHead`,
`FastRCNNPredictor`, `MaskRCNNHeads`, `MaskRCNNPredictor`), so checkpoints load with their
keys (`box_head.fc6`, `box_predictor.cls_score`, `mask_head.0.0`, `mask_predictor.conv5_mask`).
Pooling is torchvision's multi-scale RoIAlign rule and the detection selection is its
`postprocess_detections` (softmax, decode, clip, score and size filters, NMS per class,
top detections), both done for the whole batch at once (`ops`) since the per-image loops
of torchvision do not trace with a dynamic batch.

In a training step (`composer.block_losses`) they also record torchvision's losses
(`training.ProposalSampler`, `fastrcnn_loss`, `maskrcnn_loss`) on sampled proposals; their
detections are computed as in eval mode.
"""

from __future__ import annotations

from typing import ClassVar, Optional

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn
from torchvision.models.detection._utils import BoxCoder
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
from torchvision.models.detection.mask_rcnn import MaskRCNNHeads, MaskRCNNPredictor
from torchvision.models.detection.roi_heads import fastrcnn_loss, maskrcnn_loss
from typing_extensions import Annotated

from composer.block import Block, In
from composer.block_losses import BlockLosses, active
from composer.params import PosInt
from composer.registry import register
from composer.types import InferError, PortType, expect_static

from .ops import (clear_unused, clip_boxes, gather_rows, large_enough, level_mapper, multiscale_roi_align,
                  roi_align_levels, select_top, slot_mask)
from .ports import detections_type, feature_levels, image_sizes_type, proposals_type
from .rpn import Fraction, Threshold, check_thresholds, features_example
from .training import POSITIVES, ProposalSampler, flat_rois, step_targets


def pooled_levels(features: PortType, names: Optional[list[str]], what: str):
    """The levels RoIAlign pools from: the given names, or every level but the FPN's extra ones."""
    if names is None:
        extra = set(features.get("extra", ()) or ())
        names = [n for n, _ in features.fields if n not in extra]
    chosen = feature_levels(features, names, what, "pool_levels")
    channels = {expect_static(t.shape[1], "features", "a pooled level's channel count") for _, t, _ in chosen}
    if len(channels) != 1:
        raise InferError(f"{what}: pooled levels need one channel count", port="features", code="E302",
                         expected="equal channels (an fpn output)", found=str(sorted(channels)))
    return chosen, channels.pop()


class Pooler(nn.Module):
    """Multi-scale RoIAlign of [B, N, 4] boxes from the chosen levels of a features dict."""

    def __init__(self, levels: list[str], strides: list[int], output_size: int, sampling_ratio: int):
        super().__init__()
        self.levels, self.strides = list(levels), list(strides)
        self.output_size, self.sampling_ratio = output_size, sampling_ratio
        self.mapper = level_mapper(strides)

    def forward(self, features: dict, boxes: torch.Tensor) -> torch.Tensor:
        maps = [features[n] for n in self.levels]
        return multiscale_roi_align(maps, self.strides, boxes, self.output_size, self.sampling_ratio, self.mapper)

    def pool_rois(self, features: dict, rois: torch.Tensor) -> torch.Tensor:
        """rois [K, 5] (image index, box) -> [K, C, r, r]: the training samples, a flat list."""
        maps = [features[n] for n in self.levels]
        return roi_align_levels(maps, self.strides, rois, self.output_size, self.sampling_ratio, self.mapper)


class RoIHeads(nn.Module):
    """(features, proposals, sizes) -> detections [B, K] in resized-image pixels."""

    def __init__(self, pooler: Pooler, channels: int, representation: int, num_classes: int, score_thresh: float,
                 nms_thresh: float, detections_per_image: int, min_size: float, sampling: dict):
        super().__init__()
        self.pooler = pooler
        r = pooler.output_size
        self.box_head = TwoMLPHead(channels * r * r, representation)
        self.box_predictor = FastRCNNPredictor(representation, num_classes)
        self.coder = BoxCoder(weights=(10.0, 10.0, 5.0, 5.0))
        self.score_thresh, self.nms_thresh = score_thresh, nms_thresh
        self.detections_per_image, self.min_size = detections_per_image, min_size
        self.sampler = ProposalSampler(box_coder=self.coder, **sampling)

    def forward(self, features: dict, proposals: dict, sizes: dict) -> dict:
        if self.training and (step := active()) is not None:
            self.record_losses(step, features, proposals)
        boxes = proposals["boxes"]                                             # (B, P, 4)
        b, p = boxes.shape[:2]
        logits, deltas = self.box_predictor(self.box_head(self.pooler(features, boxes)))   # (B*P, C), (B*P, 4C)
        c = logits.shape[-1]
        pred = self.coder.decode_single(deltas, boxes.reshape(-1, 4)).reshape(b, p, c, 4)
        pred = clip_boxes(pred, sizes["resized"])[:, :, 1:]                  # (B, P, C-1, 4), no background
        scores = F.softmax(logits, -1).reshape(b, p, c)[:, :, 1:]
        labels = torch.arange(1, c, device=logits.device).view(1, 1, -1).expand(b, p, c - 1)
        used = slot_mask(proposals["count"], p)[:, :, None]
        pred, scores, labels = pred.reshape(b, -1, 4), scores.reshape(b, -1), labels.reshape(b, -1)
        keep = (used.expand(b, p, c - 1).reshape(b, -1) & (scores > self.score_thresh)
                & large_enough(pred, self.min_size))
        k = self.detections_per_image
        idx, count = select_top(pred, scores, keep, labels, self.nms_thresh, k)
        valid = slot_mask(count, k)
        return {"boxes": clear_unused(gather_rows(pred, idx), valid),
                "scores": clear_unused(gather_rows(scores, idx), valid),
                "labels": clear_unused(gather_rows(labels, idx), valid, -1), "count": count}

    def record_losses(self, step: BlockLosses, features: dict, proposals: dict) -> None:
        """torchvision's RoIHeads training: sample each image's proposals (its target boxes
        appended), pool and classify the samples, record `fastrcnn_loss`; the positives are left
        for a mask head."""
        boxes = proposals["boxes"].detach()
        targets = step_targets(step, boxes.shape[0], boxes.device)
        per_image = [boxes[i, :n] for i, n in enumerate(proposals["count"].tolist())]
        samples, matched, labels, regression_targets = self.sampler.select_training_samples(per_image, targets)
        pooled = self.pooler.pool_rois(features, flat_rois(samples))
        logits, deltas = self.box_predictor(self.box_head(pooled))
        loss_classifier, loss_box_reg = fastrcnn_loss(logits, deltas, labels, regression_targets)
        step.add("loss_classifier", loss_classifier)
        step.add("loss_box_reg", loss_box_reg)
        positive = [torch.where(lab > 0)[0] for lab in labels]
        step.scratch[POSITIVES] = ([s[p] for s, p in zip(samples, positive)], [m[p] for m, p in zip(matched, positive)])


@register
class RoIHeadsBlock(Block):
    """Fast R-CNN box head (torchvision layout): multi-scale RoIAlign, two-layer MLP, class and box predictors, per-class NMS.

    `num_classes` counts the background class (91 for COCO). Detections are padded to
    `detections_per_image` per image with a count, in the resized image's pixels
    (`detection_postprocess` maps them to the input image).

    In training (`composer train`) it records torchvision's Fast R-CNN losses: the target boxes
    are added to each image's proposals, proposals with IoU >= `fg_iou_thresh` to a target are
    positive (its class) and below `bg_iou_thresh` background, `batch_size_per_image` are
    sampled per image with at most `positive_fraction` positive, and `loss_classifier`
    (cross-entropy) and `loss_box_reg` (smooth L1 of the true class's box, beta 1/9) are
    computed on them. The detections it outputs are computed from all proposals as in eval.
    """
    name: ClassVar[str] = "roi_heads"
    family: ClassVar[str] = "detection"
    losses: ClassVar = ("loss_classifier", "loss_box_reg")
    inputs: ClassVar = {"features": In("features"), "proposals": In("proposals"), "sizes": In("image_sizes")}
    outputs: ClassVar = ("detections",)
    example: ClassVar = {"params": {"num_classes": 3, "representation": 16, "detections_per_image": 5},
                         "inputs": {"features": features_example(), "proposals": proposals_type(2, 6),
                                    "sizes": image_sizes_type(2)}}
    num_classes: PosInt = 91
    pool_levels: Optional[list[str]] = None
    pool_size: PosInt = 7
    sampling_ratio: int = 2
    representation: PosInt = 1024
    score_thresh: Threshold = 0.05
    nms_thresh: Threshold = 0.5
    detections_per_image: PosInt = 100
    min_size: Annotated[float, Field(ge=0.0)] = 1e-2
    # training (the losses; detections are the same in both modes)
    fg_iou_thresh: Threshold = 0.5     # a proposal with IoU >= this to a target box takes its class
    bg_iou_thresh: Threshold = 0.5     # a proposal with IoU < this to every target box is background
    batch_size_per_image: PosInt = 512     # proposals sampled per image for the losses
    positive_fraction: Fraction = 0.25     # at most this share of them positive

    def _check(self):
        check_thresholds(self.fg_iou_thresh, self.bg_iou_thresh)
        if self.num_classes < 2:
            raise InferError("num_classes counts the background class, so it is at least 2", param="num_classes",
                             expected="2 or more (91 for COCO)", found=str(self.num_classes))

    def infer(self, features: PortType, proposals: PortType, sizes: PortType) -> dict[str, PortType]:
        self._check()
        pooled_levels(features, self.pool_levels, "roi_heads")
        b = proposals.field("boxes").shape[0]
        return {"detections": detections_type(b, self.detections_per_image, features.dtype,
                                              num_classes=self.num_classes)}

    def param_count(self, features: PortType, proposals: PortType, sizes: PortType) -> int:
        _, c = pooled_levels(features, self.pool_levels, "roi_heads")
        r, n = self.representation, self.num_classes
        return (c * self.pool_size ** 2 * r + r) + (r * r + r) + (r * n + n) + (r * 4 * n + 4 * n)

    def build(self, features: PortType, proposals: PortType, sizes: PortType) -> nn.Module:
        self._check()
        chosen, c = pooled_levels(features, self.pool_levels, "roi_heads")
        pooler = Pooler([n for n, _, _ in chosen], [s for _, _, s in chosen], self.pool_size, self.sampling_ratio)
        sampling = {"fg_iou_thresh": self.fg_iou_thresh, "bg_iou_thresh": self.bg_iou_thresh,
                    "batch_size_per_image": self.batch_size_per_image, "positive_fraction": self.positive_fraction}
        return RoIHeads(pooler, c, self.representation, self.num_classes, self.score_thresh, self.nms_thresh,
                        self.detections_per_image, self.min_size, sampling)


class MaskHead(nn.Module):
    """(features, detections) -> detections with `masks` [B, K, 28, 28]: the probability of each box's class."""

    def __init__(self, pooler: Pooler, channels: int, layers: list[int], dilation: int, num_classes: int):
        super().__init__()
        self.pooler = pooler
        self.mask_head = MaskRCNNHeads(channels, layers, dilation)
        self.mask_predictor = MaskRCNNPredictor(layers[-1], layers[-1], num_classes)

    def forward(self, features: dict, detections: dict) -> dict:
        if self.training and (step := active()) is not None:
            self.record_losses(step, features, detections["boxes"].shape[0])
        boxes = detections["boxes"]                                            # (B, K, 4)
        b, k = boxes.shape[:2]
        logits = self.mask_predictor(self.mask_head(self.pooler(features, boxes)))   # (B*K, C, 28, 28)
        labels = detections["labels"].reshape(-1).clamp(min=0)
        probs = logits[torch.arange(b * k, device=logits.device), labels].sigmoid()  # (B*K, 28, 28)
        valid = slot_mask(detections["count"], k)
        out = dict(detections)
        out["masks"] = clear_unused(probs.reshape(b, k, *probs.shape[-2:]), valid)
        return out

    def record_losses(self, step: BlockLosses, features: dict, batch: int) -> None:
        """torchvision's Mask R-CNN training: masks of the RoI head's positive samples against the
        target masks cropped to them (`maskrcnn_loss`). Nothing without target masks."""
        positives = step.scratch.get(POSITIVES)
        device = next(iter(features.values())).device
        targets = step_targets(step, batch, device)
        if positives is None or not all("masks" in t for t in targets):
            return
        samples, matched = positives
        logits = self.mask_predictor(self.mask_head(self.pooler.pool_rois(features, flat_rois(samples))))
        loss = maskrcnn_loss(logits, samples, [t["masks"] for t in targets], [t["labels"] for t in targets], matched)
        step.add("loss_mask", loss)


@register
class MaskHeadBlock(Block):
    """Mask R-CNN mask branch (torchvision layout): RoIAlign 14x14, four 3x3 convs, 2x deconv, 28x28 mask per detection.

    Adds `masks` (the probability map of each detection's class) to the detections;
    `detection_postprocess` pastes them into the input image. In training, when the targets
    have masks, it records torchvision's `loss_mask` (per-pixel BCE of the true class's 28x28
    mask, on the positive samples of the `roi_heads` before it).
    """
    name: ClassVar[str] = "mask_head"
    family: ClassVar[str] = "detection"
    losses: ClassVar = ("loss_mask",)
    inputs: ClassVar = {"features": In("features"), "detections": In("detections")}
    outputs: ClassVar = ("detections",)
    example: ClassVar = {"params": {"num_classes": 4, "layers": [8, 8]},
                         "inputs": {"features": features_example(), "detections": detections_type(2, 4)}}
    num_classes: PosInt = 91
    pool_levels: Optional[list[str]] = None
    pool_size: PosInt = 14
    sampling_ratio: int = 2
    layers: list[PosInt] = Field(default=[256, 256, 256, 256], min_length=1)
    dilation: PosInt = 1

    def infer(self, features: PortType, detections: PortType) -> dict[str, PortType]:
        pooled_levels(features, self.pool_levels, "mask_head")
        fields = dict(detections.fields)
        if "masks" in fields:
            raise InferError("these detections already have masks", port="detections", code="E301",
                             expected="detections from roi_heads", found=str(detections))
        known = detections.get("num_classes")
        if known is not None and known != self.num_classes:
            raise InferError(f"mask_head has {self.num_classes} classes, the detections {known}", param="num_classes",
                             expected=f"{known} (as the roi_heads that made the detections)",
                             found=str(self.num_classes))
        b, k = fields["boxes"].shape[:2]
        m = 2 * self.pool_size
        return {"detections": detections_type(b, k, detections.dtype, masks=(m, m), num_classes=self.num_classes)}

    def param_count(self, features: PortType, detections: PortType) -> int:
        _, c = pooled_levels(features, self.pool_levels, "mask_head")
        n, cin = 0, c
        for width in self.layers:
            n += 9 * cin * width + width
            cin = width
        return n + (cin * cin * 4 + cin) + (cin * self.num_classes + self.num_classes)

    def build(self, features: PortType, detections: PortType) -> nn.Module:
        chosen, c = pooled_levels(features, self.pool_levels, "mask_head")
        pooler = Pooler([n for n, _, _ in chosen], [s for _, _, s in chosen], self.pool_size, self.sampling_ratio)
        return MaskHead(pooler, c, self.layers, self.dilation, self.num_classes)

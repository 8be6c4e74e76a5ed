"""COCO mAP of a detection pipeline: its padded outputs and the per-image targets as the lists
torchmetrics' `MeanAveragePrecision` takes.

A detector's outputs are padded ([B, K] slots with a per-image `count`, see
`blocks/detection/ports.py`) and found by their kinds (`composer.detections.find_outputs`);
`MeanAveragePrecision.update(preds, target)` takes one dict per image with only the real
detections. `map_lists` cuts the padding off, per image:

    preds   {"boxes": [n, 4] xyxy, "scores": [n], "labels": [n] int64[, "masks": [n, H, W] bool]}
    target  {"boxes": [m, 4] xyxy, "labels": [m] int64[, "masks": [m, H, W] bool]}

Both in input pixels (the outputs of `detection_postprocess`, the targets as the data reader
gives them).
"""

from __future__ import annotations

from typing import Mapping, Optional, Sequence

import torch
from torch import Tensor

from ..detections import MASK_THRESHOLD, find_outputs


def detection_roles(kinds: Mapping[str, str]) -> dict[str, str]:
    """Role (boxes, scores, labels, count[, masks]) -> the output that plays it, from the outputs'
    kinds; ValueError when the outputs are not detections."""
    roles = find_outputs(kinds)
    if roles is None:
        raise ValueError("mAP needs detection outputs: kinds boxes, scores, labels and count, found "
                         + ", ".join(f"{n} ({k})" for n, k in kinds.items()))
    return roles


def map_lists(outputs: Mapping[str, Tensor], targets: Sequence[Mapping[str, Tensor]], roles: Mapping[str, str],
              masks: bool = False) -> tuple[list[dict[str, Tensor]], list[dict[str, Tensor]]]:
    """The (preds, target) lists of `MeanAveragePrecision.update` for one batch: per image its first
    `count` detections, and its target boxes and labels. `masks`: add thresholded masks (at 0.5)
    for `iou_type="segm"`. Detached; on the outputs' device."""
    boxes, scores, labels = (outputs[roles[r]].detach() for r in ("boxes", "scores", "labels"))
    count = outputs[roles["count"]].detach().tolist()
    probs = outputs[roles["masks"]].detach() if masks and "masks" in roles else None
    if masks and probs is None:
        raise ValueError("mask mAP needs a mask output (kind mask)")
    if len(targets) != len(count):
        raise ValueError(f"{len(targets)} targets for a batch of {len(count)} images")
    device = boxes.device
    preds, truth = [], []
    for i, n in enumerate(count):
        p = {"boxes": boxes[i, :n].float(), "scores": scores[i, :n].float(), "labels": labels[i, :n].long()}
        t = targets[i]
        g = {"boxes": torch.as_tensor(t["boxes"], dtype=torch.float32, device=device).reshape(-1, 4),
             "labels": torch.as_tensor(t["labels"], dtype=torch.int64, device=device).reshape(-1)}
        if probs is not None:
            p["masks"] = probs[i, :n] >= MASK_THRESHOLD
            g["masks"] = torch.as_tensor(t["masks"], device=device).bool()
        preds.append(p)
        truth.append(g)
    return preds, truth


def mean_average_precision(masks: bool = False, class_metrics: bool = False, max_detections: Optional[int] = None):
    """torchmetrics' COCO mAP (pycocotools backend) for xyxy boxes; with `masks` also the mask mAP
    (its keys then read `bbox_map`, `segm_map`, ...). `max_detections`: the largest of COCO's
    detection limits (1, 10, 100), e.g. a detector's `detections_per_image` when it is above 100."""
    from torchmetrics.detection import MeanAveragePrecision

    kw = {} if max_detections is None else {"max_detection_thresholds": [1, 10, max(100, max_detections)]}
    return MeanAveragePrecision(box_format="xyxy", iou_type=("bbox", "segm") if masks else "bbox",
                                class_metrics=class_metrics, **kw)

"""Padded detection outputs and per-image targets become MeanAveragePrecision's lists: the
padding is cut off, and detections equal to the targets score an mAP of 1."""

from __future__ import annotations

import pytest
import torch

from composer.train.detection_metrics import detection_roles, map_lists, mean_average_precision

KINDS = {"det.boxes": "boxes", "det.scores": "scores", "det.labels": "labels", "det.count": "count", "det.masks": "mask"}


def _batch():
    boxes = torch.zeros(2, 3, 4)
    boxes[0, :2] = torch.tensor([[2.0, 3.0, 20.0, 30.0], [30.0, 5.0, 50.0, 25.0]])
    boxes[1, :1] = torch.tensor([[10.0, 10.0, 40.0, 40.0]])
    scores = torch.tensor([[0.9, 0.8, 0.0], [0.7, 0.0, 0.0]])
    labels = torch.tensor([[1, 3, -1], [2, -1, -1]])
    masks = torch.zeros(2, 3, 60, 60)
    masks[0, 0, 3:30, 2:20] = 0.9
    masks[0, 1, 5:25, 30:50] = 0.8
    masks[1, 0, 10:40, 10:40] = 0.6
    outputs = {"det.boxes": boxes, "det.scores": scores, "det.labels": labels, "det.count": torch.tensor([2, 1]),
               "det.masks": masks}
    targets = [{"boxes": boxes[0, :2].numpy(), "labels": labels[0, :2].numpy(), "masks": (masks[0, :2] > 0).byte()},
               {"boxes": boxes[1, :1].clone(), "labels": labels[1, :1].clone(), "masks": (masks[1, :1] > 0).byte()}]
    return outputs, targets


def test_padding_is_cut_off_and_perfect_detections_score_one():
    outputs, targets = _batch()
    roles = detection_roles(KINDS)
    preds, truth = map_lists(outputs, targets, roles, masks=True)
    assert [len(p["boxes"]) for p in preds] == [2, 1] and [len(t["labels"]) for t in truth] == [2, 1]
    assert preds[0]["labels"].tolist() == [1, 3] and preds[0]["masks"].dtype == torch.bool
    metric = mean_average_precision(masks=True)
    metric.update(preds, truth)
    result = metric.compute()
    assert float(result["bbox_map"]) == pytest.approx(1.0) and float(result["segm_map"]) == pytest.approx(1.0)


def test_not_detections():
    with pytest.raises(ValueError, match="mAP needs detection outputs"):
        detection_roles({"logits": "logits"})

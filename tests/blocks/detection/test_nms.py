"""The `nms` block equals torchvision's batched_nms per image (score filter, class-aware, top-K),
in torch and exported to ONNX with dynamic batch and box counts."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torchvision

import composer
from composer.runtime import Session

SPEC = """
pipeline: nms_only
dims:
  B: {sizes: [1, 3], example: 2}
  N: {sizes: [40, 7], example: 40}
inputs:
  candidates: {kind: boxes, shape: [B, N, 4]}
  confidences: {kind: scores, shape: [B, N, C]}
blocks:
  nms: {block: nms, in: {boxes: candidates, scores: confidences}, iou_thresh: 0.5, score_thresh: 0.3, max_detections: 8}
outputs:
  boxes: nms.detections.boxes
  scores: nms.detections.scores
  labels: nms.detections.labels
  count: nms.detections.count
"""


def _data(b: int, n: int, c: int = 3, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(b, n, 2, generator=g) * 60
    wh = torch.rand(b, n, 2, generator=g) * 30 + 2
    return torch.cat([xy, xy + wh], -1), torch.rand(b, n, c, generator=g)


def _reference(boxes, scores, k: int = 8, thresh: float = 0.3, iou: float = 0.5):
    out = []
    for bx, sc in zip(boxes, scores):
        n, c = sc.shape
        labels = torch.arange(c).expand(n, c).reshape(-1)
        bx, sc = bx[:, None].expand(n, c, 4).reshape(-1, 4), sc.reshape(-1)
        keep = torch.where(sc > thresh)[0]
        bx, sc, labels = bx[keep], sc[keep], labels[keep]
        keep = torchvision.ops.batched_nms(bx, sc, labels, iou)[:k]
        out.append({"boxes": bx[keep], "scores": sc[keep], "labels": labels[keep]})
    return out


def _check(got, ref):
    for i, r in enumerate(ref):
        n = int(got["count"][i])
        assert n == len(r["boxes"])
        np.testing.assert_allclose(np.asarray(got["boxes"][i][:n]), r["boxes"].numpy(), atol=1e-5)
        np.testing.assert_allclose(np.asarray(got["scores"][i][:n]), r["scores"].numpy(), atol=1e-6)
        assert (np.asarray(got["labels"][i][:n]) == r["labels"].numpy()).all()
        assert (np.asarray(got["labels"][i][n:]) == -1).all()


def test_nms_block_equals_torchvision_batched_nms():
    model = composer.loads(SPEC.replace("[B, N, C]", "[B, N, 3]")).build().eval()
    for b, n in [(3, 40), (2, 5)]:
        boxes, scores = _data(b, n, seed=b)
        with torch.no_grad():
            _check(model(candidates=boxes, confidences=scores), _reference(boxes, scores))
    boxes, scores = _data(2, 10)
    with torch.no_grad():
        empty = model(candidates=boxes, confidences=scores * 0.1)      # nothing above the threshold
    assert (empty["count"] == 0).all()


def test_nms_exports_with_dynamic_batch_and_box_count(tmp_path):
    pipe = composer.loads(SPEC.replace("[B, N, C]", "[B, N, 3]"))
    report = composer.export(pipe, tmp_path / "nms.onnx")
    assert report["verification"]["passed"]
    sess = Session(tmp_path / "nms.onnx", device="cpu")
    for b, n in [(1, 60), (3, 9)]:
        boxes, scores = _data(b, n, seed=10 + b)
        _check(sess.run({"candidates": boxes.numpy(), "confidences": scores.numpy()}), _reference(boxes, scores))


@pytest.mark.parametrize("bad, message", [
    ("iou_thresh: 1.5", "iou_thresh"), ("score_thresh: -0.1", "score_thresh"), ("max_detections: 0", "max_detections")])
def test_bad_thresholds_are_spec_errors(bad, message):
    text = SPEC.replace("[B, N, C]", "[B, N, 3]").replace("iou_thresh: 0.5, score_thresh: 0.3, max_detections: 8", bad)
    with pytest.raises(composer.SpecError) as exc:
        composer.loads(text)
    assert message in str(exc.value) and "E1" in str(exc.value)

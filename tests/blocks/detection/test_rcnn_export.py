"""The whole detector, raw image batch to final detections with NMS, is one ONNX file with
dynamic batch, height and width; onnxruntime gives torchvision's detections with the same
weights at batch 1 and 3 and two image sizes, including images with no detections and with
more candidates than `detections_per_image`."""

from __future__ import annotations

import subprocess

import onnx
import pytest
import torch

from composer.runtime import Session
from tests.blocks.detection._support import assert_same_detections, images, reference, save_state, small_spec
from tests.conftest import COMPOSER


def _export(pipeline: str, ref, tmp_path, **over):
    spec = tmp_path / f"{pipeline}.yaml"
    spec.write_text(small_spec(pipeline, **over))
    ckpt = tmp_path / "tv.safetensors"
    save_state(ref, ckpt)
    out = tmp_path / f"{pipeline}.onnx"
    proc = subprocess.run([COMPOSER, "export", str(spec), "-o", str(out), "--weights", str(ckpt)],
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    graph = onnx.load(str(out), load_external_data=False).graph
    dims = [[d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim] for v in graph.input]
    assert dims == [["B", 3, "H", "W"]]
    return Session(out, device="cpu")


# onnxruntime's float32 convolutions differ from torch's by ~1e-6 relative per layer; box decoding
# (exp of the predicted log-size) turns that into up to 4e-3 px on boxes of 20-200 px (4e-5 relative).
ORT_BOX = {"box_atol": 2e-3, "box_rtol": 1e-4, "mask_atol": None}


def _compare(sess, ref, shapes, seed: int = 1) -> int:
    total = 0
    for shape in shapes:
        x = images(shape, seed=seed)
        with torch.no_grad():
            want = ref(list(x))
        total += assert_same_detections(sess.run({"image": x.numpy()}), want, **ORT_BOX)
    return total


def test_faster_rcnn_onnx_equals_torchvision(tmp_path):
    ref = reference("detection", detections_per_image=20)
    sess = _export("detection", ref, tmp_path)
    assert _compare(sess, ref, [(1, 3, 100, 150), (3, 3, 77, 61), (3, 3, 120, 90)]) > 0
    full = sess.run({"image": images((3, 3, 77, 61)).numpy()})
    assert (full["count"] == 20).all()   # more candidates than the 20 slots: the best 20, as torchvision
    with torch.no_grad():   # the same file, weights that detect nothing
        ref.roi_heads.box_predictor.cls_score.bias[1:] -= 100.0
    empty = _export("detection", ref, tmp_path)
    out = empty.run({"image": images((2, 3, 100, 150)).numpy()})
    assert (out["count"] == 0).all() and (out["labels"] == -1).all()


@pytest.mark.slow
@pytest.mark.parametrize("pipeline", ["mask_rcnn", "detection_mobilenet"])
def test_other_detectors_onnx_equal_torchvision(pipeline, tmp_path):
    ref = reference(pipeline)
    sess = _export(pipeline, ref, tmp_path)
    assert _compare(sess, ref, [(1, 3, 100, 150), (3, 3, 77, 61)]) > 0

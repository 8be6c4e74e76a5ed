"""pipelines/yolo.yaml with an Ultralytics YOLOv8n state dict exports to one ONNX file (letterbox,
network, NMS and box scaling) with dynamic batch, height and width, and onnxruntime's detections
at sizes it was neither traced nor verified at equal Ultralytics' own pipeline: LetterBox,
DetectionModel, non_max_suppression (conf 0.25, iou 0.7, max_det 300, class-aware), scale_boxes."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch

import composer
from composer.runtime import Session
from tests.blocks.detection.test_yolo_reference import (MAX_DET, SPEC, assert_detections_match, reference_detections,
                                                        reference_letterbox, reference_model, save_reference,
                                                        small_pipeline)

OUTPUTS = ["boxes", "scores", "labels", "count"]


def ultralytics_pipeline(ref, image: torch.Tensor, imgsz: int):
    """Detections of Ultralytics' own pre-processing, model and post-processing for a [B, 3, H, W] batch."""
    lb = reference_letterbox(image, imgsz)
    with torch.no_grad():
        y, _ = ref(lb)
    return reference_detections(y, lb.shape[2:], image.shape[2:])


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    folder = tmp_path_factory.mktemp("yolo_export")
    ref = reference_model()
    ckpt = save_reference(ref, folder / "yolov8n.pth")
    pipe = small_pipeline(160)
    model = pipe.build(seed=0)
    composer.load_weights(model, ckpt)
    path = folder / "yolo.onnx"
    report = composer.export(model, path)
    return model.eval(), ref, path, report


def test_exports_to_one_verified_file_with_dynamic_batch_height_and_width(exported):
    _, _, path, rep = exported
    assert rep["exporter"] == "dynamo" and rep["verification"]["passed"] and rep["external_data"] is None
    assert sorted(p.name for p in path.parent.iterdir() if p.suffix in (".onnx", ".data")) == ["yolo.onnx"]
    assert rep["inputs"] == [{"name": "image", "dtype": "float32", "shape": ["B", 3, "H", "W"]}]
    assert [(o["name"], o["dtype"], o["shape"]) for o in rep["outputs"]] == [
        ("boxes", "float32", ["B", MAX_DET, 4]), ("scores", "float32", ["B", MAX_DET]),
        ("labels", "int64", ["B", MAX_DET]), ("count", "int64", ["B"])]
    ops = {n.op_type for n in onnx.load(str(path)).graph.node}
    assert {"NonMaxSuppression", "Resize", "Pad"} <= ops                 # NMS and letterbox are in the file


@pytest.mark.parametrize("shape", [(2, 3, 128, 160), (3, 3, 97, 130)])
def test_onnxruntime_detections_equal_ultralytics(exported, shape):
    model, ref, path, _ = exported
    image = torch.rand(*shape, generator=torch.Generator().manual_seed(shape[0]))
    expected = ultralytics_pipeline(ref, image, 160)
    assert all(0 < len(s) < MAX_DET for _, s, _ in expected)
    got = Session(path, device="cpu").run({"image": image.numpy()})
    assert [got[k].shape[0] for k in OUTPUTS] == [shape[0]] * 4
    assert_detections_match(got, expected, box_atol=2e-3, score_atol=1e-4)
    with torch.no_grad():
        assert_detections_match(model(image=image), expected, box_atol=2e-3, score_atol=1e-4)


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_full_size_export_equals_ultralytics(tmp_path):
    """At 640 (the spec as it is). composer's own verification feeds normal noise, which these random
    weights turn into thousands of NMS candidates, where float rounding flips some IoU comparisons
    between torch and onnxruntime; so this checks real-range images against Ultralytics instead."""
    ref = reference_model()
    ckpt = save_reference(ref, tmp_path / "yolov8n.pth")
    out = tmp_path / "yolo.onnx"
    rep = composer.export(composer.load(SPEC), out, weights=ckpt, verify=False)
    assert rep["weights"]["strategy"] == "order" and rep["inputs"][0]["shape"] == ["B", 3, "H", "W"]
    model = composer.load(SPEC).build(seed=0)
    composer.load_weights(model, ckpt)
    sess = Session(out, device="cpu")
    for shape in [(1, 3, 480, 640), (2, 3, 375, 500)]:
        image = torch.rand(*shape, generator=torch.Generator().manual_seed(10))
        expected = ultralytics_pipeline(ref, image, 640)
        assert all(len(s) > 0 for _, s, _ in expected)
        got = sess.run({"image": image.numpy()})
        assert_detections_match(got, expected, box_atol=5e-3, score_atol=1e-4, box_rtol=2e-4)
        with torch.no_grad():
            assert_detections_match(model.eval()(image=image), expected, box_atol=5e-3, score_atol=1e-4,
                                    box_rtol=2e-4)
        assert np.all(got["boxes"][..., 2] <= shape[3]) and np.all(got["boxes"][..., 3] <= shape[2])

"""The Ultralytics reference of the YOLO tests, and the checks that pipelines/yolo.yaml has its
layout: YOLOv8n built offline from Ultralytics' packaged yolov8n.yaml with random weights
(nothing is downloaded), its outputs, and its NMS and box scaling on the same predictions.

The other test_yolo*.py files import the helpers from here."""

from __future__ import annotations

import copy
import os
import tempfile
from functools import lru_cache
from pathlib import Path

import numpy as np
import pytest
import torch

os.environ.setdefault("YOLO_OFFLINE", "1")          # Ultralytics: never go online
os.environ.setdefault("YOLO_VERBOSE", "False")
os.environ.setdefault("YOLO_CONFIG_DIR", tempfile.mkdtemp(prefix="ultralytics-settings-"))
pytest.importorskip("ultralytics")

from ultralytics.data.augment import LetterBox  # noqa: E402
from ultralytics.nn.tasks import DetectionModel  # noqa: E402
from ultralytics.utils.nms import non_max_suppression  # noqa: E402
from ultralytics.utils.ops import scale_boxes  # noqa: E402

import composer  # noqa: E402
from tests.conftest import ROOT  # noqa: E402

YOLOV8N_PARAMS = 3_157_200       # Ultralytics' published figure for yolov8n (80 classes)
CONF, IOU, MAX_DET = 0.25, 0.7, 300
SPEC = ROOT / "pipelines" / "yolo.yaml"

# Ultralytics layer index (row of yolov8.yaml) -> our block
LAYOUT = {0: "backbone/stem", 1: "backbone/down2", 2: "backbone/stage2", 3: "backbone/down3", 4: "backbone/stage3",
          5: "backbone/down4", 6: "backbone/stage4", 7: "backbone/down5", 8: "backbone/stage5", 9: "backbone/sppf",
          10: "neck/up4", 11: "neck/cat4", 12: "neck/top4", 13: "neck/up3", 14: "neck/cat3", 15: "neck/out3",
          16: "neck/down4", 17: "neck/mix4", 18: "neck/out4", 19: "neck/down5", 20: "neck/mix5", 21: "neck/out5",
          22: "head/detect"}


def calibrate(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Random BatchNorm affines, then running statistics from one batch of normal noise (what
    composer's export verification feeds), so every layer works at a trained-like scale and a
    wrong eps or BN mapping shows; in eval mode."""
    g = torch.Generator().manual_seed(seed)
    norms = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    with torch.no_grad():
        for m in norms:
            m.weight.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.bias.copy_(torch.randn(m.num_features, generator=g) * 0.2)
            m.reset_running_stats()
            m.momentum = None                      # the running statistics become this batch's
        model.train()
        model(torch.randn(2, 3, 128, 160, generator=g))
    for m in norms:
        m.momentum = 0.03
    return model.eval()


@lru_cache(maxsize=None)
def _reference(seed: int) -> DetectionModel:
    torch.manual_seed(seed)
    model = calibrate(DetectionModel("yolov8n.yaml", verbose=False), seed)
    with torch.no_grad():   # class logits around -3: some boxes of each image pass conf 0.25, none saturate
        for cls in model.model[-1].cv3:
            cls[-1].weight.mul_(0.3)
            cls[-1].bias.fill_(-3.0)
    return model


def reference_model(seed: int = 0) -> DetectionModel:
    """Ultralytics' YOLOv8n with random, calibrated weights, in eval mode (a fresh copy)."""
    return copy.deepcopy(_reference(seed))


def save_reference(model: torch.nn.Module, path: Path) -> Path:
    torch.save(model.state_dict(), path)
    return path


def small_pipeline(imgsz: int = 160) -> composer.Pipeline:
    """pipelines/yolo.yaml letterboxing to `imgsz` instead of 640 (fast tests)."""
    return composer.load(SPEC, overrides={"letterbox.imgsz": imgsz})


def reference_letterbox(image: torch.Tensor, imgsz: int) -> torch.Tensor:
    """Ultralytics' predictor LetterBox (auto, stride 32) of a [B, 3, H, W] batch in [0, 1], as [B, 3, Hs, Ws].
    cv2 resizes float32 images with the same bilinear rule as 8-bit ones."""
    lb = LetterBox((imgsz, imgsz), auto=True, stride=32)
    out = [lb(image=np.ascontiguousarray(im.permute(1, 2, 0).numpy() * 255)) for im in image]
    return torch.from_numpy(np.stack(out)).permute(0, 3, 1, 2) / 255


def reference_detections(predictions: torch.Tensor, letterboxed_hw, original_hw, agnostic: bool = False,
                         conf: float = CONF, iou: float = IOU, max_det: int = MAX_DET):
    """Ultralytics' NMS (class-aware unless agnostic, best class per box) on [B, 4 + nc, N]
    predictions, boxes scaled back to the original image: [(boxes [n, 4], scores [n], labels [n])]."""
    for scores in predictions[:, 4:].amax(1):       # no ties among the candidates: a well-defined order
        candidates = scores[scores > conf]
        assert len(torch.unique(candidates)) == len(candidates)
    out = []
    for det in non_max_suppression(predictions, conf, iou, agnostic=agnostic, max_det=max_det, max_time_img=60.0):
        boxes = scale_boxes(tuple(letterboxed_hw), det[:, :4].clone(), tuple(original_hw))
        out.append((boxes, det[:, 4], det[:, 5].long()))
    return out


def tie_order(boxes, scores, labels, ref_boxes, ref_scores, ref_labels, score_atol, box_atol, box_rtol) -> list:
    """Index of our detection for each reference one: the same position, unless two detections whose scores
    differ by less than score_atol came out in the other order (float rounding decides such a tie); then
    the one of those with the reference's label and box. Anything else keeps its position and fails."""
    order, used = [], set()
    for i in range(len(ref_scores)):
        near = [j for j in range(len(scores)) if j not in used and abs(scores[j] - ref_scores[i]) <= score_atol]
        same = [j for j in near if labels[j] == ref_labels[i] and torch.allclose(
            boxes[j], ref_boxes[i], atol=box_atol, rtol=box_rtol)]
        j = i if i in same or not same else min(same, key=lambda j: abs(j - i))
        order.append(j)
        used.add(j)
    return order


def assert_detections_match(ours: dict, ref: list, box_atol: float = 1e-4, score_atol: float = 1e-6,
                            box_rtol: float = 1e-6) -> None:
    """Padded detections (boxes, scores, labels, count; tensors or arrays) equal Ultralytics' per-image lists."""
    got = {k: torch.as_tensor(np.asarray(v)) for k, v in ours.items()}
    k = got["scores"].shape[1]
    assert got["count"].tolist() == [len(r[1]) for r in ref]
    for b, (boxes, scores, labels) in enumerate(ref):
        n = len(scores)
        order = tie_order(got["boxes"][b, :n], got["scores"][b, :n], got["labels"][b, :n], boxes, scores, labels,
                          score_atol, box_atol, box_rtol)
        assert got["labels"][b, order].tolist() == labels.tolist()
        torch.testing.assert_close(got["scores"][b, order], scores, atol=score_atol, rtol=0)
        torch.testing.assert_close(got["boxes"][b, order], boxes, atol=box_atol, rtol=box_rtol)
        assert (got["labels"][b, n:] == -1).all() and (got["scores"][b, n:] == 0).all()
        assert (got["boxes"][b, n:] == 0).all() and n <= k


def capture(model: torch.nn.Module, *names: str) -> dict:
    """Forward hooks that keep the (first) output of the named blocks of a built pipeline."""
    seen: dict = {}
    for name in names:
        def hook(module, args, out, name=name):
            seen[name] = out[0] if isinstance(out, tuple) else out
        model.get_submodule(name.replace("/", ".")).register_forward_hook(hook)
    return seen


# ---- the reference and the layout ------------------------------------------------------------


def test_reference_has_the_published_parameter_count():
    ref = reference_model()
    assert sum(p.numel() for p in ref.parameters()) == YOLOV8N_PARAMS
    assert len(ref.model) == len(LAYOUT)


def test_pipeline_has_the_yolov8n_parameter_count():
    pipe = composer.load(SPEC)
    assert pipe.graph.total_params() == YOLOV8N_PARAMS
    model = pipe.build(seed=0)
    assert sum(p.numel() for p in model.parameters()) == YOLOV8N_PARAMS
    dfl = model.get_submodule("head.detect.dfl.conv").weight
    assert not dfl.requires_grad and dfl.flatten().tolist() == list(range(16))   # fixed, and counted


def test_every_yolov8n_layer_maps_onto_one_block_in_order():
    """Row i of yolov8.yaml and our block LAYOUT[i] hold tensors of the same shapes in the same order."""
    ref = reference_model()
    model = composer.load(SPEC).build(seed=0)
    for i, name in LAYOUT.items():
        theirs = [tuple(t.shape) for t in ref.model[i].state_dict().values()]
        ours = [tuple(t.shape) for t in model.get_submodule(name.replace("/", ".")).state_dict().values()]
        assert ours == theirs, (i, name)
    ours_all = [k for k in model.state_dict()]
    assert len(ours_all) == len(ref.state_dict()) == 355


def test_ultralytics_state_dict_loads_by_order(tmp_path):
    ckpt = save_reference(reference_model(), tmp_path / "yolov8n.pth")
    model = composer.load(SPEC).build(seed=0)
    report = composer.load_weights(model, ckpt)
    assert report.strategy == "order" and report.loaded == 355
    ref = reference_model().state_dict()
    for (_, ours), (_, theirs) in zip(model.state_dict().items(), ref.items()):
        assert torch.equal(ours, theirs)

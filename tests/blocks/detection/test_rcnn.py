"""Faster R-CNN, Mask R-CNN and Faster R-CNN MobileNetV3 from our blocks equal torchvision's
detectors: parameter counts of the full pipelines, and, with the same (random, locally made)
weights loaded from torchvision state dicts, the RPN proposals, boxes, scores, labels and masks
on raw images of sizes that are not multiples of 32."""

from __future__ import annotations

import pytest
import torch
from torchvision.models import detection as tvd

import composer
from composer.weights import load_weights
from tests.blocks.detection._support import (assert_same_detections, frozen_bn_reference, images, reference,
                                             save_state, small_spec)
from tests.conftest import ROOT

PARAMS = {
    "detection": (tvd.fasterrcnn_resnet50_fpn, 41_808_406),
    "mask_rcnn": (tvd.maskrcnn_resnet50_fpn, 44_454_513),
    "detection_mobilenet": (tvd.fasterrcnn_mobilenet_v3_large_fpn, 19_410_754),
}


@pytest.mark.parametrize("pipeline", PARAMS)
def test_parameter_counts_equal_torchvision(pipeline):
    make, expected = PARAMS[pipeline]
    pipe = composer.load(ROOT / "pipelines" / f"{pipeline}.yaml")
    tv = sum(p.numel() for p in make(weights=None, weights_backbone=None).parameters())
    assert pipe.graph.total_params() == tv == expected


def _capture(module: torch.nn.Module, store: dict, key: str, pick=lambda o: o) -> None:
    module.register_forward_hook(lambda m, i, o: store.__setitem__(key, pick(o)))


@pytest.mark.parametrize("pipeline", ["detection", "mask_rcnn", "detection_mobilenet"])
def test_same_weights_give_torchvision_detections(pipeline, tmp_path):
    ref = reference(pipeline)
    ckpt = tmp_path / "tv.safetensors"
    save_state(ref, ckpt)
    model = composer.loads(small_spec(pipeline)).build().eval()
    report = load_weights(model, ckpt)
    assert report.strategy == "structure" and report.loaded == len(model.state_dict())
    seen: dict = {}
    _capture(ref.rpn, seen, "tv", lambda o: o[0])
    _capture(model.rpn, seen, "ours")
    total = 0
    for shape in [(2, 3, 100, 150), (1, 3, 77, 61)]:   # landscape and portrait, not multiples of 32
        x = images(shape)
        with torch.no_grad():
            want = ref(list(x))
            got = model(image=x)
        for i, props in enumerate(seen["tv"]):
            n = int(seen["ours"]["count"][i])
            assert n == len(props) > 0
            torch.testing.assert_close(seen["ours"]["boxes"][i, :n], props, atol=1e-3, rtol=0)
        total += assert_same_detections(got, want)
    assert total > 0


def test_frozen_batchnorm_checkpoint_loads_by_module_paths(tmp_path):
    """The layout of torchvision's COCO checkpoints: FrozenBatchNorm2d, so no num_batches_tracked keys."""
    ref = frozen_bn_reference()
    assert not any(k.endswith("num_batches_tracked") for k in ref.state_dict())
    spec = small_spec("detection").replace("depth: 50", "depth: 18")
    for suffix in (".pth", ".safetensors"):
        ckpt = tmp_path / f"coco_layout{suffix}"
        save_state(ref, ckpt)
        model = composer.loads(spec).build().eval()
        load_weights(model, ckpt)
        x = images((1, 3, 90, 120), seed=4)
        with torch.no_grad():
            assert assert_same_detections(model(image=x), ref(list(x))) > 0


def test_no_detections_and_more_candidates_than_slots():
    ref = reference("detection")
    spec = small_spec("detection", detections_per_image=3)
    model = composer.loads(spec).build().eval()
    model.load_state_dict({k: v for k, v in zip(model.state_dict(), ref.state_dict().values())})
    x = images((2, 3, 100, 150))
    with torch.no_grad():
        full = model(image=x)
        assert (full["count"] == 3).all()              # many more candidates than 3 slots
        model.roi.box_predictor.cls_score.bias[1:] -= 100.0   # every class below the score threshold
        empty = model(image=x)
    assert (empty["count"] == 0).all() and (empty["labels"] == -1).all() and (empty["boxes"] == 0).all()


def test_pipelines_are_torchvision_layouts_by_name():
    """State-dict keys are torchvision's under our block names (checkpoints map without guessing)."""
    ours = composer.load(ROOT / "pipelines/mask_rcnn.yaml").build(device="meta").state_dict()
    tv = tvd.maskrcnn_resnet50_fpn(weights=None, weights_backbone=None).state_dict()
    renamed = {k.replace("backbone.body.", "backbone.").replace("backbone.fpn.", "fpn.")
                .replace("roi_heads.mask_", "mask.mask_").replace("roi_heads.", "roi."): v.shape for k, v in tv.items()}
    assert {k: v.shape for k, v in ours.items()} == renamed

"""Helpers of the detection tests: the example pipelines shrunk for speed, the matching
torchvision detectors with random weights, and a comparison of padded detections with
torchvision's per-image results."""

from __future__ import annotations

import re
from typing import Optional

import torch
import torchvision
from torchvision.models import detection as tvd

from composer._match import mask_difference
from tests.conftest import ROOT

SMALL = {"min_size": 128, "max_size": 200, "pre_nms_top_n": 100, "post_nms_top_n": 50, "num_classes": 5,
         "detections_per_image": 20}


def small_spec(pipeline: str, *, sizes: tuple[list[int], list[int]] = ([100, 77], [150, 61]), **over) -> str:
    """pipelines/<pipeline>.yaml with small images, few proposals and 5 classes (the architecture kept)."""
    p = {**SMALL, **over}
    text = (ROOT / "pipelines" / f"{pipeline}.yaml").read_text()
    text = text.replace("min_size: 800, max_size: 1333", f"min_size: {p['min_size']}, max_size: {p['max_size']}")
    text = re.sub(r"num_classes: 91", f"num_classes: {p['num_classes']}", text)
    text = re.sub(r"detections_per_image: 100", f"detections_per_image: {p['detections_per_image']}", text)
    text = text.replace("pre_nms_top_n: 1000", f"pre_nms_top_n: {p['pre_nms_top_n']}")
    text = text.replace("post_nms_top_n: 1000", f"post_nms_top_n: {p['post_nms_top_n']}")
    for block in ("rpn", "roi"):   # blocks written in flow style take their defaults: set them
        text = re.sub(rf"(  {block}: +\{{block: {'rpn' if block == 'rpn' else 'roi_heads'}, .*)\}}$",
                      lambda m: m.group(1) + (f", pre_nms_top_n: {p['pre_nms_top_n']}, post_nms_top_n: "
                                              f"{p['post_nms_top_n']}}}" if block == "rpn" else
                                              f", detections_per_image: {p['detections_per_image']}}}"),
                      text, flags=re.M)
    if "roi:\n    block: roi_heads" in text and "detections_per_image" not in text:
        text = text.replace("    num_classes: ", f"    detections_per_image: {p['detections_per_image']}\n    num_classes: ", 1)
    if "rpn:\n    block: rpn" in text and "pre_nms_top_n" not in text:
        text = text.replace("    aspect_ratios:", f"    pre_nms_top_n: {p['pre_nms_top_n']}\n    post_nms_top_n: "
                            f"{p['post_nms_top_n']}\n    aspect_ratios:", 1)
    h, w = sizes
    text = re.sub(r"  H: \{.*\}", f"  H: {{sizes: {h}, example: {h[0]}}}", text)
    text = re.sub(r"  W: \{.*\}", f"  W: {{sizes: {w}, example: {w[0]}}}", text)
    return text


def reference(pipeline: str, **over) -> torch.nn.Module:
    """torchvision's detector of a pipeline, configured as `small_spec`, random weights, eval mode."""
    p = {**SMALL, **over}
    kw = dict(weights=None, weights_backbone=None, num_classes=p["num_classes"], min_size=p["min_size"],
              max_size=p["max_size"], rpn_pre_nms_top_n_test=p["pre_nms_top_n"],
              rpn_post_nms_top_n_test=p["post_nms_top_n"], box_detections_per_img=p["detections_per_image"])
    make = {"detection": tvd.fasterrcnn_resnet50_fpn, "mask_rcnn": tvd.maskrcnn_resnet50_fpn,
            "detection_mobilenet": tvd.fasterrcnn_mobilenet_v3_large_fpn}[pipeline]
    torch.manual_seed(0)
    return randomize(make(**kw), class_scale=CLASS_SCALE.get(pipeline, 0.05))


# How much the box head's class weights shrink (see `randomize`). MobileNet's pooled features
# are small: at 0.05 its box scores sit within 1e-6 of each other, so float noise reorders
# near-duplicate detections and picks another of two boxes 0.1 px apart; at 0.5 they stay apart.
CLASS_SCALE = {"detection_mobilenet": 0.5}


def randomize(model: torch.nn.Module, seed: int = 0, confident: int = 2, class_scale: float = 0.05) -> torch.nn.Module:
    """Random norm statistics (so a wrong eps or layout shows), spread objectness (torchvision's
    initial RPN head scores every anchor about 0.5, so float noise would reorder near-ties) and
    one confident class, so that detections exist: class `confident` gets +3 on its logit bias
    while the class weights shrink, so scores stay distinct (no ties at 1.0 to break)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in model.state_dict().items():
            if name.endswith("running_var"):
                t.copy_(torch.rand(t.shape, generator=g) + 0.5)
            elif name.endswith("running_mean"):
                t.copy_(torch.randn(t.shape, generator=g) * 0.1)
        cls = model.rpn.head.cls_logits.weight
        cls.copy_(torch.randn(cls.shape, generator=g) * 0.3)
        model.roi_heads.box_predictor.cls_score.weight.mul_(class_scale)
        model.roi_heads.box_predictor.cls_score.bias[confident] += 3.0
    return model.eval()


def images(shape, seed: int = 1) -> torch.Tensor:
    """A seeded RGB batch in [0, 1] with some structure (smooth blobs), so proposals differ by place."""
    g = torch.Generator().manual_seed(seed)
    b, c, h, w = shape
    low = torch.rand(b, c, max(2, h // 8), max(2, w // 8), generator=g)
    x = torch.nn.functional.interpolate(low, size=(h, w), mode="bilinear", align_corners=False)
    return (0.8 * x + 0.2 * torch.rand(shape, generator=g)).clamp(0, 1)


def assert_same_detections(got: dict, ref: list[dict], box_atol: float = 1e-3, mask_atol: Optional[float] = 1e-4,
                           box_rtol: float = 0.0) -> int:
    """Padded outputs (boxes/scores/labels/count[/masks], tensors or arrays) equal torchvision's
    per-image dicts; slots past the count are empty. `mask_atol=None` compares thresholded masks,
    which may differ along the outline (a box 1e-3 px off can round to the next pixel).
    Returns the number of detections compared."""
    got = {k: torch.as_tensor(v) for k, v in got.items()}
    total = 0
    for i, r in enumerate(ref):
        n = int(got["count"][i])
        assert n == len(r["boxes"]), (i, n, len(r["boxes"]))
        torch.testing.assert_close(got["boxes"][i, :n], r["boxes"], atol=box_atol, rtol=box_rtol)
        torch.testing.assert_close(got["scores"][i, :n], r["scores"], atol=1e-5, rtol=1e-4)
        assert torch.equal(got["labels"][i, :n], r["labels"])
        assert (got["labels"][i, n:] == -1).all() and (got["scores"][i, n:] == 0).all()
        assert (got["boxes"][i, n:] == 0).all()
        if "masks" in r and mask_atol is None:   # thresholded masks differ at most along the outline
            for j in range(n):
                assert mask_difference(got["masks"][i, j].numpy(), r["masks"][j, 0].numpy(), r["boxes"][j].numpy()) <= 1
        elif "masks" in r:
            torch.testing.assert_close(got["masks"][i, :n], r["masks"][:, 0], atol=mask_atol, rtol=0)
            assert (got["masks"][i, n:] == 0).all()
        total += n
    return total


def save_state(model: torch.nn.Module, path) -> None:
    """A torchvision state dict as .pth or as safetensors (keys sorted, no order to rely on)."""
    if str(path).endswith(".safetensors"):
        from safetensors.torch import save_file
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    else:
        torch.save(model.state_dict(), path)


def frozen_bn_reference(**over) -> torch.nn.Module:
    """A Faster R-CNN whose ResNet-18 backbone uses FrozenBatchNorm2d (no num_batches_tracked
    keys), as torchvision's trained COCO checkpoints do."""
    from torchvision.models.detection.backbone_utils import resnet_fpn_backbone
    p = {**SMALL, **over}
    torch.manual_seed(0)
    backbone = resnet_fpn_backbone(backbone_name="resnet18", weights=None, trainable_layers=5)
    model = tvd.FasterRCNN(backbone, num_classes=p["num_classes"], min_size=p["min_size"], max_size=p["max_size"],
                           rpn_pre_nms_top_n_test=p["pre_nms_top_n"], rpn_post_nms_top_n_test=p["post_nms_top_n"],
                           box_detections_per_img=p["detections_per_image"])
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torchvision.ops.FrozenBatchNorm2d):
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
                m.weight.copy_(torch.rand(m.weight.shape, generator=g) + 0.5)
    return randomize(model)

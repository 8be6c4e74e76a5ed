"""The detection blocks' training losses equal torchvision's: with the same weights (the very
same head modules), the same targets and the same random state, `rpn` records
RegionProposalNetwork's losses, `roi_heads` and `mask_head` RoIHeads' (box and mask), their
gradients are equal, and `detection_transform` resizes targets as GeneralizedRCNNTransform.
A composed detector records all its losses inside `collecting`, they reach every trainable
parameter, and nothing changes outside a training step."""

from __future__ import annotations

import copy
from collections import OrderedDict

import pytest
import torch
from torchvision.models.detection.image_list import ImageList
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.roi_heads import RoIHeads as TorchvisionRoIHeads
from torchvision.models.detection.rpn import RegionProposalNetwork
from torchvision.models.detection.transform import GeneralizedRCNNTransform
from torchvision.ops import MultiScaleRoIAlign

import composer
from blocks.detection.ports import detections_type, image_sizes_type, proposals_type
from blocks.detection.roi_heads import MaskHeadBlock, RoIHeadsBlock
from blocks.detection.rpn import RPNBlock
from blocks.detection.training import RESIZED_TARGETS
from blocks.detection.transform import DetectionTransform
from composer.block_losses import active, collecting
from composer.types import InferError, PortType
from tests.blocks.detection._support import images

H, W = 112, 128          # the (resized) image; padded to 112 x 128 (multiples of 16)
CLOSE = {"rtol": 1e-5, "atol": 1e-6}


def _features(b: int = 2, c: int = 8, seed: int = 0):
    """Two FPN-like levels, strides 8 and 16, random values, and their port type."""
    g = torch.Generator().manual_seed(seed)
    maps = {"p3": torch.randn(b, c, H // 8, W // 8, generator=g), "p4": torch.randn(b, c, H // 16, W // 16, generator=g)}
    port = PortType("features", None, fields=tuple((n, PortType("feature_map", tuple(m.shape))) for n, m in maps.items()),
                    meta=(("strides", (8, 16)), ("channels", (c, c))))
    return maps, port


def _targets(seed: int = 0, counts=(3, 2), masks: bool = False, num_classes: int = 4):
    g = torch.Generator().manual_seed(seed)
    out = []
    for n in counts:
        xy = torch.rand(n, 2, generator=g) * torch.tensor([W * 0.6, H * 0.6])
        wh = torch.rand(n, 2, generator=g) * 40 + 12
        boxes = torch.cat([xy, torch.minimum(xy + wh, torch.tensor([W - 1.0, H - 1.0]))], 1)
        t = {"boxes": boxes, "labels": torch.randint(1, num_classes, (n,), generator=g)}
        if masks:
            m = torch.zeros(n, H, W, dtype=torch.uint8)
            for j, (x1, y1, x2, y2) in enumerate(boxes.round().long().tolist()):   # an ellipse-ish blob in each box
                yy, xx = torch.meshgrid(torch.arange(H), torch.arange(W), indexing="ij")
                cx, cy, rx, ry = (x1 + x2) / 2, (y1 + y2) / 2, max(1, (x2 - x1) / 2), max(1, (y2 - y1) / 2)
                m[j] = (((xx - cx) / rx) ** 2 + ((yy - cy) / ry) ** 2 <= 1).to(torch.uint8)
            t["masks"] = m
        out.append(t)
    return out


def _grads(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    out = {n: p.grad.clone() for n, p in module.named_parameters() if p.grad is not None}
    module.zero_grad(set_to_none=True)
    return out


def test_transform_resizes_targets_as_torchvision():
    mean, std = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
    ours = DetectionTransform(64, 100, mean, std, 32).train()
    ref = GeneralizedRCNNTransform(64, 100, mean, std).train()
    x = images((2, 3, 90, 77))
    targets = [{**t, "boxes": t["boxes"] * 0.6} for t in _targets(1, masks=True)]
    targets = [{**t, "masks": t["masks"][:, :90, :77]} for t in targets]
    with collecting(targets) as step:
        _, sizes = ours(x)
    got = step.scratch[RESIZED_TARGETS]
    batch, want = ref(list(x), copy.deepcopy(targets))
    assert [tuple(s) for s in sizes["resized"].tolist()] == batch.image_sizes
    for g, w in zip(got, want):
        torch.testing.assert_close(g["boxes"], w["boxes"], rtol=0, atol=0)
        assert torch.equal(g["labels"], w["labels"])
        assert g["masks"].dtype == torch.uint8 and torch.equal(g["masks"], w["masks"])
    assert torch.equal(targets[0]["boxes"], _targets(1)[0]["boxes"] * 0.6)   # the step's own targets untouched


@pytest.mark.parametrize("counts", [(3, 2), (4, 0)], ids=["boxes", "one_background_image"])
def test_rpn_losses_equal_torchvision(counts):
    maps, port = _features()
    block = RPNBlock(anchor_sizes=[[16, 32], [48, 64]], aspect_ratios=[0.5, 1.0, 2.0], pre_nms_top_n=60,
                     post_nms_top_n=30, batch_size_per_image=64, positive_fraction=0.4, fg_iou_thresh=0.6,
                     bg_iou_thresh=0.35)
    ours = block.build(features=port, sizes=image_sizes_type(2)).train()
    with torch.no_grad():   # spread objectness, so proposals do not hinge on near-ties
        ours.head.cls_logits.weight.normal_(0, 0.3, generator=torch.Generator().manual_seed(2))
    ref = RegionProposalNetwork(AnchorGenerator(((16, 32), (48, 64)), ((0.5, 1.0, 2.0),) * 2), ours.head, 0.6, 0.35,
                                64, 0.4, {"training": 60, "testing": 60}, {"training": 30, "testing": 30}, 0.7).train()
    targets = _targets(3, counts)
    sizes = {"resized": torch.tensor([[H, W]] * 2), "original": torch.tensor([[H, W]] * 2)}

    torch.manual_seed(7)
    with collecting(copy.deepcopy(targets)) as step:
        proposals = ours(maps, sizes)
    sum(step.losses.values()).backward()
    got = _grads(ours)
    torch.manual_seed(7)
    boxes, want = ref(ImageList(torch.zeros(2, 3, H, W), [(H, W)] * 2), OrderedDict(maps), copy.deepcopy(targets))
    sum(want.values()).backward()
    expected = _grads(ref.head)

    assert set(step.losses) == set(want) == set(RPNBlock.losses)
    for name in want:
        assert want[name] > 0    # positives were sampled: every part of the loss is exercised
        torch.testing.assert_close(step.losses[name], want[name], **CLOSE)
    assert got.keys() == {f"head.{n}" for n in expected}
    for name, g in expected.items():
        torch.testing.assert_close(got[f"head.{name}"], g, **CLOSE)
    for i, b in enumerate(boxes):    # the proposals are those of eval mode (and torchvision's)
        n = int(proposals["count"][i])
        assert n == len(b) > 0
        torch.testing.assert_close(proposals["boxes"][i, :n], b, atol=1e-3, rtol=0)


def _padded_proposals(seed: int, counts=(40, 25), p: int = 40):
    g = torch.Generator().manual_seed(seed)
    boxes = torch.zeros(2, p, 4)
    per_image = []
    for i, n in enumerate(counts):
        xy = torch.rand(n, 2, generator=g) * torch.tensor([W * 0.7, H * 0.7])
        b = torch.cat([xy, torch.minimum(xy + torch.rand(n, 2, generator=g) * 50 + 6, torch.tensor([W, H]))], 1)
        boxes[i, :n] = b
        per_image.append(b)
    return {"boxes": boxes, "scores": torch.rand(2, p, generator=g), "count": torch.tensor(list(counts))}, per_image


@pytest.mark.parametrize("counts", [(3, 2), (4, 0)], ids=["boxes", "one_background_image"])
def test_roi_and_mask_losses_equal_torchvision(counts):
    maps, port = _features(c=8, seed=1)
    box_block = RoIHeadsBlock(num_classes=4, representation=32, detections_per_image=10, batch_size_per_image=48,
                              positive_fraction=0.3, fg_iou_thresh=0.55, bg_iou_thresh=0.45)
    mask_block = MaskHeadBlock(num_classes=4, layers=[8, 8])
    roi = box_block.build(features=port, proposals=proposals_type(2, 40), sizes=image_sizes_type(2)).train()
    mask = mask_block.build(features=port, detections=detections_type(2, 10)).train()
    ref = TorchvisionRoIHeads(MultiScaleRoIAlign(["p3", "p4"], 7, 2), roi.box_head, roi.box_predictor, 0.55, 0.45, 48,
                              0.3, None, 0.05, 0.5, 10, mask_roi_pool=MultiScaleRoIAlign(["p3", "p4"], 14, 2),
                              mask_head=mask.mask_head, mask_predictor=mask.mask_predictor).train()
    targets = _targets(4, counts, masks=True)
    proposals, per_image = _padded_proposals(5)
    sizes = {"resized": torch.tensor([[H, W]] * 2), "original": torch.tensor([[H, W]] * 2)}

    torch.manual_seed(11)
    with collecting(copy.deepcopy(targets)) as step:
        detections = roi(maps, proposals, sizes)
        out = mask(maps, detections)
    sum(step.losses.values()).backward()
    got = {**{f"box.{n}": g for n, g in _grads(roi).items()}, **{f"mask.{n}": g for n, g in _grads(mask).items()}}
    torch.manual_seed(11)
    _, want = ref(OrderedDict(maps), [p.clone() for p in per_image], [(H, W)] * 2, copy.deepcopy(targets))
    sum(want.values()).backward()
    expected = {(f"mask.{n}" if n.startswith("mask") else f"box.{n}"): g for n, g in _grads(ref).items()}

    assert set(step.losses) == set(want) == set(RoIHeadsBlock.losses) | set(MaskHeadBlock.losses)
    for name in want:
        assert want[name] > 0    # positives were sampled: every part of the loss is exercised
        torch.testing.assert_close(step.losses[name], want[name], **CLOSE)
    assert got.keys() == expected.keys() and len(got) == 16
    for name, g in expected.items():
        torch.testing.assert_close(got[name], g, **CLOSE)
    assert out["masks"].shape == (2, 10, 28, 28)     # the outputs keep their eval-mode types


def test_matcher_thresholds_are_checked():
    _, port = _features()
    with pytest.raises(InferError, match="bg_iou_thresh"):
        RPNBlock(anchor_sizes=[[16], [32]], fg_iou_thresh=0.3, bg_iou_thresh=0.7).infer(port, image_sizes_type(2))
    with pytest.raises(InferError, match="bg_iou_thresh"):
        RoIHeadsBlock(num_classes=3, bg_iou_thresh=0.6).infer(port, proposals_type(2, 6), image_sizes_type(2))


SPEC = """
pipeline: tiny_mask_rcnn
seed: 0
dims:
  H: {sizes: [48, 40], example: 48}
  W: {sizes: [60, 52], example: 60}
inputs:
  image: {kind: image, shape: [B, 3, H, W], dtype: float32}
blocks:
  transform: {block: detection_transform, in: image, min_size: 64, max_size: 96}
  backbone:  {block: resnet, in: transform.images, depth: 18}
  fpn:       {block: fpn, in: backbone.features, levels: [c3, c4, c5], out_channels: 16, extra: maxpool}
  rpn:
    block: rpn
    in: {features: fpn, sizes: transform.sizes}
    anchor_sizes: [[16], [32], [64], [128]]
    pre_nms_top_n: 100
    post_nms_top_n: 40
    batch_size_per_image: 64
  roi:
    block: roi_heads
    in: {features: fpn, proposals: rpn, sizes: transform.sizes}
    num_classes: 4
    representation: 32
    detections_per_image: 8
    batch_size_per_image: 64
  mask: {block: mask_head, in: {features: fpn, detections: roi}, num_classes: 4, layers: [8, 8]}
  post: {block: detection_postprocess, in: {detections: mask, sizes: transform.sizes, image: image}}
outputs:
  boxes: post.detections.boxes
  scores: post.detections.scores
  labels: post.detections.labels
  count: post.detections.count
  masks: post.detections.masks
"""


def _input_targets():
    """Targets in input pixels (48 x 60: the transform resizes by 4/3)."""
    out = []
    for t in _targets(6, (3, 1), masks=True):
        masks = torch.nn.functional.interpolate(t["masks"][:, None].float(), size=(48, 60))[:, 0].byte()
        out.append({"boxes": t["boxes"] * torch.tensor([60 / W, 48 / H, 60 / W, 48 / H]), "labels": t["labels"],
                    "masks": masks})
    return out


def test_composed_detector_records_every_block_loss():
    pipe = composer.loads(SPEC)
    declared = {n for node in pipe.graph.order if (b := pipe.graph.nodes[node].block) is not None
                for n in type(b).losses}
    model = pipe.build().train()
    x = images((2, 3, 48, 60), seed=3)
    torch.manual_seed(0)
    with collecting(_input_targets()) as step:
        inside = model(image=x)
    assert active() is None
    assert set(step.losses) == declared == {"loss_objectness", "loss_rpn_box_reg", "loss_classifier", "loss_box_reg",
                                            "loss_mask"}
    assert all(v.dim() == 0 and torch.isfinite(v) for v in step.losses.values())
    sum(step.losses.values()).backward()
    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    assert trainable
    missing = [n for n, p in trainable if p.grad is None or not bool(p.grad.abs().sum() > 0)]
    assert not missing, missing

    outside = model(image=x)              # train mode, no step: no losses, the same outputs
    assert inside.keys() == outside.keys()
    for k in inside:
        torch.testing.assert_close(inside[k], outside[k])
    model.eval()
    with collecting(_input_targets()) as step, torch.no_grad():
        evaluated = model(image=x)        # eval mode records nothing, and the types are those of training
    assert step.losses == {}
    for k in inside:
        assert evaluated[k].shape == inside[k].shape and evaluated[k].dtype == inside[k].dtype

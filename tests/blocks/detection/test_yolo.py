"""YOLOv8 blocks against Ultralytics: the parts (c2f, sppf, yolo_head) against Ultralytics' own
modules, the letterbox against its LetterBox, and the whole pipeline with an Ultralytics state
dict loaded: the head's raw predictions and the final detections (Ultralytics NMS and
scale_boxes on the same predictions) in torch."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest
import torch

import composer
from blocks.detection.yolo import Letterbox, YoloPostprocess, letterbox_size
from blocks.detection.yolo_head import YoloHeadBlock, YoloNMSBlock
from blocks.detection.yolo_parts import C2fBlock, SPPFBlock, UpsampleBlock
from composer.types import PortType
from tests.blocks.detection.test_yolo_reference import (CONF, IOU, MAX_DET, LetterBox, assert_detections_match,
                                                        capture, non_max_suppression, reference_detections,
                                                        reference_letterbox, reference_model, save_reference,
                                                        scale_boxes, small_pipeline)

# after the reference module: it sets Ultralytics' offline environment (or skips) before any import
from ultralytics.nn.modules import C2f, Detect  # noqa: E402
from ultralytics.utils.torch_utils import initialize_weights  # noqa: E402


def load_by_order(ours: torch.nn.Module, theirs: torch.nn.Module) -> torch.nn.Module:
    """Copy `theirs` into `ours` position by position (the shapes must agree), in eval mode."""
    a, b = ours.state_dict(), theirs.state_dict()
    assert [tuple(t.shape) for t in a.values()] == [tuple(t.shape) for t in b.values()]
    ours.load_state_dict({k: v for k, v in zip(a, b.values())})
    return ours.eval()


def randomized(module: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Ultralytics' BN settings (eps 1e-3, as DetectionModel sets them), random weights, biases and
    BN statistics (running variances in [0.5, 1.5)), in eval mode."""
    initialize_weights(module)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in module.state_dict().items():
            if t.is_floating_point() and not name.endswith("dfl.conv.weight"):
                t.copy_(torch.rand(t.shape, generator=g) + 0.5 if name.endswith("running_var")
                        else torch.randn(t.shape, generator=g) * 0.2)
    return module.eval()


def fm(c: int, h: int, w: int, b: int = 2) -> PortType:
    return PortType("feature_map", (b, c, h, w))


# ---- parts against Ultralytics modules ---------------------------------------------------------


@pytest.mark.parametrize("n,shortcut", [(1, True), (2, False), (3, True)])
def test_c2f_equals_ultralytics_c2f(n, shortcut):
    theirs = randomized(C2f(24, 32, n, shortcut))
    block = C2fBlock(out_channels=32, bottlenecks=n, shortcut=shortcut)
    ours = load_by_order(block.build(x=fm(24, 12, 10)), theirs)
    assert block.param_count(x=fm(24, 12, 10)) == sum(p.numel() for p in theirs.parameters())
    x = torch.randn(2, 24, 12, 10, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.testing.assert_close(ours(x), theirs(x), atol=1e-5, rtol=1e-5)


def test_sppf_equals_ultralytics_sppf_of_yolov8():
    theirs = reference_model().model[9]               # yolov8.yaml's legacy SPPF: SiLU after cv1
    block = SPPFBlock(out_channels=256)
    t = fm(256, 5, 4)
    ours = load_by_order(block.build(x=t), theirs)
    assert block.param_count(x=t) == sum(p.numel() for p in theirs.parameters())
    x = torch.randn(2, 256, 5, 4, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        torch.testing.assert_close(ours(x), theirs(x), atol=1e-5, rtol=1e-5)


def test_yolo_head_equals_ultralytics_detect(monkeypatch):
    monkeypatch.setattr(Detect, "legacy", True)      # v8's head (parse_model sets it for yolov8.yaml)
    channels = [16, 32, 64]
    theirs = Detect(nc=5, reg_max=16, ch=channels)
    theirs.stride = torch.tensor([8.0, 16.0, 32.0])
    theirs = randomized(theirs)
    types = [fm(c, 64 // s, 96 // s) for c, s in zip(channels, (8, 16, 32))]
    block = YoloHeadBlock(num_classes=5)
    ours = load_by_order(block.build(xs=types), theirs)
    assert block.param_count(xs=types) == sum(p.numel() for p in theirs.parameters())
    g = torch.Generator().manual_seed(3)
    xs = [torch.randn(2, c, 64 // s, 96 // s, generator=g) for c, s in zip(channels, (8, 16, 32))]
    with torch.no_grad():
        ref, _ = theirs(xs)
        got = ours(xs)
    assert got.shape == ref.shape == (2, 4 + 5, 8 * 12 + 4 * 6 + 2 * 3)
    torch.testing.assert_close(got, ref, atol=1e-4, rtol=1e-5)
    assert block.infer(xs=types)["predictions"].shape == (2, 9, 126)


def test_yolo_head_bias_init_is_ultralytics(monkeypatch):
    monkeypatch.setattr(Detect, "legacy", True)
    theirs = Detect(nc=80, ch=[64, 128, 256])
    theirs.stride = torch.tensor([8.0, 16.0, 32.0])
    theirs.bias_init()
    ours = YoloHeadBlock().build(xs=[fm(64, 8, 8), fm(128, 4, 4), fm(256, 2, 2)])
    for (name, a), b in zip(ours.state_dict().items(), theirs.state_dict().values()):
        if name.endswith("2.bias"):   # the last conv of each branch
            torch.testing.assert_close(a, b)


def test_upsample_matches_nn_upsample():
    x = torch.randn(2, 3, 5, 7)
    ours = UpsampleBlock().build(x=fm(3, 5, 7))
    torch.testing.assert_close(ours(x), torch.nn.Upsample(None, 2, "nearest")(x))


# ---- letterbox and box scaling against Ultralytics ---------------------------------------------


def _float_moves_the_tie(h: int, w: int, imgsz: int) -> bool:
    """True where the exact ratio side * imgsz / max(h, w) is a half-integer and Ultralytics'
    float64 product lands an ulp off it (so its round() goes the other way)."""
    m = max(h, w)
    for side in (h, w):
        exact = Fraction(side * imgsz, m)
        if exact.denominator == 2 and side * min(imgsz / h, imgsz / w) != float(exact):
            return True
    return False


def test_letterbox_sizes_and_pads_match_ultralytics():
    sizes = [(h, w) for h in (1, 2, 5, 31, 32, 33, 100, 127, 333, 480, 481, 639, 640, 641, 1000, 1080, 1856, 2496, 4000)
             for w in (1, 3, 17, 117, 150, 160, 500, 640, 719, 1280, 1305, 1365, 1920)]
    checked = 0
    for imgsz in (160, 320, 640):
        lb = LetterBox((imgsz, imgsz), auto=True, stride=32)
        for h, w in sizes:
            if _float_moves_the_tie(h, w, imgsz):
                continue
            p = lb.get_params({"img": np.broadcast_to(np.zeros((1, 1, 3), np.uint8), (h, w, 3))})
            nh, nw = letterbox_size(h, w, imgsz)
            assert (nw, nh) == p["new_unpad"], (h, w, imgsz)
            ph, pw = (nh + 31) // 32 * 32, (nw + 31) // 32 * 32
            assert ((ph - nh) // 2, (pw - nw) // 2) == (p["top"], p["left"]), (h, w, imgsz)
            assert (ph, pw) == (nh + p["top"] + p["bottom"], nw + p["left"] + p["right"]), (h, w, imgsz)
            checked += 1
    assert checked > 0.99 * 3 * len(sizes)


@pytest.mark.parametrize("hw,imgsz", [((100, 150), 160), ((300, 200), 160), ((97, 61), 64), ((64, 64), 64)])
def test_letterbox_pixels_match_ultralytics(hw, imgsz):
    image = torch.rand(2, 3, *hw, generator=torch.Generator().manual_seed(4))
    images, sizes = Letterbox(imgsz, 32, True, True, 114 / 255)(image)
    ref = reference_letterbox(image, imgsz)
    assert images.shape == ref.shape
    torch.testing.assert_close(images, ref, atol=2e-5, rtol=0)
    assert sizes["original"].tolist() == [list(hw)] * 2


def test_postprocess_equals_scale_boxes():
    g = torch.Generator().manual_seed(5)
    for hw, imgsz in (((333, 500), 640), ((480, 270), 640), ((128, 160), 160), ((90, 120), 160)):
        image = torch.zeros(1, 3, *hw)
        images, sizes = Letterbox(imgsz, 32, True, True, 114 / 255)(image)
        boxes = torch.rand(1, 7, 4, generator=g) * torch.tensor([*images.shape[-1:], *images.shape[-2:-1]] * 2) - 8
        boxes = torch.cat([boxes[..., :2].minimum(boxes[..., 2:]), boxes[..., :2].maximum(boxes[..., 2:])], -1)
        dets = {"boxes": boxes, "scores": torch.ones(1, 7), "labels": torch.zeros(1, 7, dtype=torch.int64),
                "count": torch.tensor([5])}
        out = YoloPostprocess()(dets, sizes, images)
        ref = scale_boxes(tuple(images.shape[-2:]), boxes[0, :5].clone(), hw)
        torch.testing.assert_close(out["boxes"][0, :5], ref, atol=1e-4, rtol=1e-6)
        assert (out["boxes"][0, 5:] == 0).all()


# ---- NMS against Ultralytics -------------------------------------------------------------------


def _predictions(b: int, nc: int, n: int, seed: int) -> torch.Tensor:
    """Clustered xywh boxes in a 160-pixel image and class probabilities, [B, 4 + nc, N]."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.rand(b, 2, 6, generator=g) * 160
    pick = torch.randint(0, 6, (b, n), generator=g)
    xy = torch.gather(centres, 2, pick[:, None].expand(b, 2, n)) + torch.randn(b, 2, n, generator=g) * 4
    wh = 10 + torch.rand(b, 2, n, generator=g) * 30
    cls = torch.rand(b, nc, n, generator=g) ** 3
    return torch.cat([xy, wh, cls], 1)


@pytest.mark.parametrize("agnostic", [False, True])
def test_nms_equals_ultralytics_nms(agnostic):
    pred = _predictions(3, 4, 200, seed=6)
    pred[1, 4:] *= 0.2                                   # image 1: nothing passes conf
    block = YoloNMSBlock(agnostic=agnostic, max_det=50)
    out = block.build(predictions=PortType("tensor", (3, 8, 200)))(pred)
    raw = non_max_suppression(pred, CONF, IOU, agnostic=agnostic, max_det=50, max_time_img=60.0)
    assert_detections_match(out, [(d[:, :4], d[:, 4], d[:, 5].long()) for d in raw])   # boxes before scaling
    assert out["count"][1] == 0 and out["count"][0] > 0


def test_nms_keeps_at_most_max_det():
    pred = _predictions(2, 3, 400, seed=7)
    pred[:, 2:4] = 2.0                                   # tiny boxes: nothing overlaps, all survive
    out = YoloNMSBlock(conf=0.01, max_det=20).build(predictions=PortType("tensor", (2, 7, 400)))(pred)
    raw = non_max_suppression(pred, 0.01, IOU, max_det=20, max_time_img=60.0)
    assert out["count"].tolist() == [20, 20]
    assert_detections_match(out, [(d[:, :4], d[:, 4], d[:, 5].long()) for d in raw])


# ---- the pipeline with an Ultralytics state dict -----------------------------------------------


@pytest.fixture(scope="module")
def loaded(tmp_path_factory):
    """The 160-pixel pipeline with the reference's weights, and the reference."""
    ref = reference_model()
    ckpt = save_reference(ref, tmp_path_factory.mktemp("yolo") / "yolov8n.pth")
    pipe = small_pipeline(160)
    model = pipe.build(seed=0).eval()
    assert composer.load_weights(model, ckpt).strategy == "order"
    return pipe, model, ref


@pytest.mark.parametrize("shape", [(2, 3, 128, 160), (1, 3, 150, 100)])
def test_pipeline_equals_ultralytics_yolov8n(loaded, shape):
    _, model, ref = loaded
    image = torch.rand(*shape, generator=torch.Generator().manual_seed(8))
    seen = capture(model, "letterbox", "head/detect")
    with torch.no_grad():
        out = model(image=image)
        lb = seen["letterbox"]
        torch.testing.assert_close(lb, reference_letterbox(image, 160), atol=2e-5, rtol=0)
        y, _ = ref(lb)                                           # Ultralytics on the same letterboxed batch
    assert seen["head/detect"].shape == y.shape == (shape[0], 84, 21 * lb.shape[2] * lb.shape[3] // 1024)
    torch.testing.assert_close(seen["head/detect"], y, atol=1e-4, rtol=0)   # raw predictions
    expected = reference_detections(y, lb.shape[2:], shape[2:])
    assert all(0 < len(s) < MAX_DET for _, s, _ in expected)       # a real test of the filter and the NMS
    assert_detections_match(out, expected)


def test_shapes_are_checked_before_building(write_spec):
    spec = write_spec(
        "pipeline: bad\ninputs:\n  image: {kind: image, shape: [B, 3, H, W]}\ndims:\n  H: {multiple_of: 32}\n"
        "  W: {multiple_of: 32}\nblocks:\n"
        "  a: {block: conv_bn_act, in: image, out_channels: 8, stride: 8}\n"
        "  b: {block: conv_bn_act, in: a, out_channels: 8, stride: 2}\n"
        "  c: {block: conv_bn_act, in: b, out_channels: 8, stride: 2}\n"
        "  head: {block: yolo_head, in: [a, c, b], num_classes: 2}\n"
        "outputs:\n  p: head.predictions\n")
    with pytest.raises(composer.SpecError) as exc:
        composer.load(spec)
    text = str(exc.value)
    assert "input 1 of yolo_head is at stride 32, but `strides` says 16" in text and "blocks.head.strides" in text

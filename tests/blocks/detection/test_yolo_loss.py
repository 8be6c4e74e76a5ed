"""The YOLOv8 training loss against Ultralytics' `v8DetectionLoss`: the same head outputs and
targets give the same three parts and the same gradients (the loss alone, over crowded and
tiny boxes, with and without DFL; and the whole yolov8n pipeline with an Ultralytics state
dict, weights' gradients included), images without objects; the letterbox moves the targets
with the image; COCO category ids become the head's 0..nc-1; a small YOLO spec trains."""

from __future__ import annotations

import shutil
from types import SimpleNamespace

import pytest
import torch

import composer
from blocks.detection.training import RESIZED_TARGETS
from blocks.detection.yolo import Letterbox
from blocks.detection.yolo_head import YoloHead, YoloHeadBlock
from blocks.detection.yolo_loss import YoloLoss
from composer.block_losses import collecting
from composer.types import PortType
from tests.blocks.detection.test_yolo_reference import reference_model, save_reference, small_pipeline
from tests.conftest import ROOT

# after the reference module: it sets Ultralytics' offline environment (or skips) before any import
from ultralytics.nn.modules import Detect  # noqa: E402
from ultralytics.utils import DEFAULT_CFG  # noqa: E402
from ultralytics.utils.loss import v8DetectionLoss  # noqa: E402
from ultralytics.utils.ops import xywh2xyxy  # noqa: E402

PARTS = ("loss_box", "loss_cls", "loss_dfl")      # ours, in the order of Ultralytics' loss tensor
STRIDES = (8, 16, 32)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One intra-op thread: on a shared 2-core machine two threads mostly wait on each other."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def random_targets(g: torch.Generator, counts: list[int], hw: tuple[int, int], nc: int):
    """Ultralytics' batch (normalised xywh, image index, class) and the same targets as ours
    (xyxy pixels, computed with Ultralytics' ops so both sides hold the same floats). Sides from
    3 px (under the 16 px the assigner widens) to most of the image, some boxes overlapping."""
    h, w = hw
    scale = torch.tensor([w, h, w, h], dtype=torch.float32)
    idx, cls, xywhn, ours = [], [], [], []
    for i, n in enumerate(counts):
        wh = torch.rand(n, 2, generator=g) * 0.7 + 3 / min(h, w)
        xy = wh / 2 + torch.rand(n, 2, generator=g) * (1 - wh)
        boxes = torch.cat([xy, wh], 1)
        labels = torch.randint(0, nc, (n,), generator=g)
        idx.append(torch.full((n,), float(i)))
        cls.append(labels.float())
        xywhn.append(boxes)
        ours.append({"boxes": xywh2xyxy(boxes * scale), "labels": labels})
    batch = {"batch_idx": torch.cat(idx), "cls": torch.cat(cls)[:, None], "bboxes": torch.cat(xywhn)}
    return batch, ours


def ultralytics_criterion(nc: int, reg_max: int) -> v8DetectionLoss:
    """v8DetectionLoss over a bare Detect head (the loss reads only its strides, nc and reg_max)."""
    detect = Detect(nc=nc, reg_max=reg_max, ch=(16, 32, 64))
    detect.stride = torch.tensor([float(s) for s in STRIDES])
    return v8DetectionLoss(SimpleNamespace(model=[detect], args=DEFAULT_CFG, parameters=detect.parameters))


def head_outputs(g: torch.Generator, b: int, hw: tuple[int, int], nc: int, reg_max: int):
    """Raw head outputs as YoloHead computes them (box distributions, class logits) and the level maps."""
    feats = [torch.zeros(b, 1, hw[0] // s, hw[1] // s) for s in STRIDES]
    n = sum(f.shape[2] * f.shape[3] for f in feats)
    box = (torch.randn(b, 4 * reg_max, n, generator=g) * 2).requires_grad_()
    if reg_max == 1:                      # direct side distances in grid cells
        box = (torch.rand(b, 4, n, generator=g) * 4).requires_grad_()
    cls = (torch.randn(b, nc, n, generator=g) - 2).requires_grad_()
    return box, cls, feats


def compare_loss(counts: list[int], hw=(96, 128), nc: int = 3, reg_max: int = 16, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    batch, targets = random_targets(g, counts, hw, nc)
    box, cls, feats = head_outputs(g, len(counts), hw, nc, reg_max)
    loss, _ = ultralytics_criterion(nc, reg_max)({"boxes": box, "scores": cls, "feats": feats}, batch)
    theirs = [v.detach() for v in loss]
    loss.sum().backward()
    grads = box.grad.clone(), cls.grad.clone()
    box.grad = cls.grad = None
    head = YoloHead([1, 1, 1], list(STRIDES), nc, reg_max)
    points, strides = head.anchors(feats)
    ours = YoloLoss(nc, reg_max, STRIDES)(box, cls, points, strides, targets, hw)
    sum(ours.values()).backward()
    for name, value in zip(PARTS, theirs):
        torch.testing.assert_close(ours[name].detach(), value, rtol=1e-5, atol=1e-6, msg=name)
    torch.testing.assert_close(box.grad, grads[0], rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(cls.grad, grads[1], rtol=1e-5, atol=1e-7)
    return ours


# ---- the loss alone --------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_loss_and_gradients_equal_v8_detection_loss(seed):
    ours = compare_loss([5, 12, 1], seed=seed)        # 12 boxes on a 96x128 image: anchors claimed twice
    assert all(float(v.detach()) > 0 for v in ours.values())


def test_dfl_free_head_equals_ultralytics_l1():
    compare_loss([4, 2], reg_max=1)


def test_images_without_objects():
    compare_loss([0, 3])                               # one image without objects
    ours = compare_loss([0, 0])                        # none in the whole batch: only the class term
    losses = {k: float(v.detach()) for k, v in ours.items()}
    assert losses["loss_box"] == losses["loss_dfl"] == 0.0 and losses["loss_cls"] > 0, losses


def test_class_ids_out_of_range_are_an_error():
    head = YoloHeadBlock(num_classes=2).build(xs=[PortType("feature_map", (1, c, 64 // s, 64 // s))
                                                   for c, s in zip((8, 16, 32), STRIDES)])
    xs = [torch.randn(1, c, 64 // s, 64 // s) for c, s in zip((8, 16, 32), STRIDES)]
    with collecting([{"boxes": torch.tensor([[1.0, 2, 30, 40]]), "labels": torch.tensor([2])}]):
        with pytest.raises(ValueError, match=r"class ids \[2\].*classes 0\.\.1"):
            head.train()(xs)


# ---- the pipeline: yolov8n with Ultralytics' weights -----------------------------------------


def test_yolov8n_losses_and_weight_gradients_equal_ultralytics(tmp_path):
    """Input 128x160 with imgsz 160 letterboxes to itself, so both models see the same image."""
    ref = reference_model().train()
    ref.args = DEFAULT_CFG
    model = small_pipeline(160).build(seed=0)
    composer.load_weights(model, save_reference(ref, tmp_path / "yolov8n.pth"))
    model.train()
    g = torch.Generator().manual_seed(4)
    x = torch.rand(2, 3, 128, 160, generator=g)
    batch, targets = random_targets(g, [3, 0], (128, 160), 80)
    loss, _ = ref.loss(batch, ref(x))
    loss.sum().backward()
    with collecting(targets) as step:
        model(image=x)
    sum(step.losses.values()).backward()
    assert set(step.losses) == set(PARTS)
    for name, value in zip(PARTS, loss.detach()):
        torch.testing.assert_close(step.losses[name].detach(), value, rtol=1e-5, atol=1e-6, msg=name)
    ours = [p for p in model.parameters() if p.requires_grad]
    theirs = [p for p in ref.parameters() if p.requires_grad]
    assert len(ours) == len(theirs)
    worst = 0.0
    for a, b in zip(ours, theirs):
        assert a.shape == b.shape
        worst = max(worst, float((a.grad - b.grad).abs().max() / b.grad.abs().max().clamp(min=1e-12)))
    assert worst < 1e-5, worst                          # each tensor's largest difference / its largest gradient


def test_eval_outputs_do_not_change_inside_a_training_step():
    model = small_pipeline(160).build(seed=0).eval()
    x = torch.rand(1, 3, 100, 140, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        plain = model(image=x)
        with collecting([{"boxes": torch.tensor([[5.0, 5, 50, 60]]), "labels": torch.tensor([1])}]) as step:
            inside = model(image=x)
    assert not step.losses and not step.scratch
    for k in plain:
        assert torch.equal(plain[k], inside[k])


def test_letterbox_moves_the_targets_with_the_image():
    """90x120 to imgsz 160: scaled by 4/3 to 120x160, padded to 128x160 (4 rows on top)."""
    box = torch.tensor([[3.0, 6, 60, 81]])
    with collecting([{"boxes": box, "labels": torch.tensor([0])}]) as step:
        images, sizes = Letterbox(160, 32, True, True, 114 / 255).train()(torch.rand(1, 3, 90, 120))
    assert images.shape == (1, 3, 128, 160) and sizes["resized"].tolist() == [[120, 160]]
    moved = step.scratch[RESIZED_TARGETS][0]["boxes"]
    torch.testing.assert_close(moved, torch.tensor([[4.0, 12, 80, 112]]))
    img = torch.zeros(1, 3, 90, 120)
    img[:, :, 6:81, 3:60] = 1.0                        # the box, filled: it lands where the target went
    with collecting([{"boxes": box, "labels": torch.tensor([0])}]):
        out, _ = Letterbox(160, 32, True, True, 0.0).train()(img)
    rows = (out[0, 0] > 0.5).any(1).nonzero()[:, 0]
    cols = (out[0, 0] > 0.5).any(0).nonzero()[:, 0]
    assert abs(int(rows[0]) - 12) <= 1 and abs(int(rows[-1]) + 1 - 112) <= 1
    assert abs(int(cols[0]) - 4) <= 1 and abs(int(cols[-1]) + 1 - 80) <= 1


# ---- class ids from COCO data, and training ------------------------------------------------------

COCO80 = [*range(1, 12), *range(13, 26), 27, 28, *range(31, 45), *range(46, 66), 67, 70, *range(72, 83),
          *range(84, 91)]
TRAIN = """
train:
  data: {{format: coco, train: {data}/annotations.json, targets: {{boxes: objects}}}}
  optimizer: {{type: adamw, lr: {lr}}}
  batch_size: {batch}
  {length}
"""


def _yolo_spec(tmp_path, data: str, length: str = "epochs: 1", batch: int = 2, lr: float = 1e-3):
    """pipelines/yolo.yaml with a train section (its parts copied beside it)."""
    shutil.copytree(ROOT / "pipelines" / "parts", tmp_path / "parts", dirs_exist_ok=True)
    spec = tmp_path / "yolo.yaml"
    spec.write_text((ROOT / "pipelines" / "yolo.yaml").read_text()
                    + TRAIN.format(data=data, lr=lr, batch=batch, length=length))
    return spec


def _coco80(folder, generate):
    """write_coco's squares and circles, relabelled with COCO's category ids 1 and 90 among all 80."""
    import json
    generate.write_coco(folder, 4, size=64, seed=0)
    doc = json.loads((folder / "annotations.json").read_text())
    doc["categories"] = [{"id": c, "name": f"class{c}"} for c in reversed(COCO80)]   # any order: sorted by id
    for a in doc["annotations"]:
        a["category_id"] = {1: 1, 2: 90}[a["category_id"]]
    (folder / "annotations.json").write_text(json.dumps(doc))


def test_coco_category_ids_become_yolo_class_indices(tmp_path):
    from composer.train.data.base import DataError
    from composer.train.data.coco import CocoExamples
    from composer.train.plan import plan as make_plan
    from tests.train.conftest import generate

    _coco80(tmp_path / "coco80", generate)
    p = make_plan(composer.load(_yolo_spec(tmp_path, "coco80")))
    need = p.targets["boxes"]
    assert (need.role, need.num_classes, need.class_ids) == ("detection", 80, "index")
    examples = CocoExamples(p, tmp_path / "coco80" / "annotations.json")
    examples.check(p)
    labels = {int(v) for i in range(len(examples)) for v in examples[i]["objects"]["labels"]}
    assert labels == {0, 79}                       # ids 1 and 90: first and last of the 80 in id order
    generate.write_coco(tmp_path / "two", 4, size=64, seed=0)      # 2 categories for 80 classes
    two = make_plan(composer.load(_yolo_spec(tmp_path, "two")))
    with pytest.raises(DataError, match=r"lists 2 categories \(ids 1, 2\), and the detector has 80 classes.*"
                                        r"num_classes to 2"):
        CocoExamples(two, tmp_path / "two" / "annotations.json").check(two)


def test_yolov8n_spec_trains_on_coco80_data(tmp_path):
    from composer.train import train
    from tests.train.conftest import generate

    _coco80(tmp_path / "coco80", generate)
    pipe = composer.load(_yolo_spec(tmp_path, "coco80"), overrides={"letterbox.imgsz": 64})
    result = train(pipe, tmp_path / "run", progress=False, echo=lambda line: None)
    assert result.steps == 2
    assert {"train/loss_box", "train/loss_cls", "train/loss_dfl"} <= set(result.metrics), result.metrics


TINY = """
pipeline: tiny_yolo
seed: 0
labels: [square, circle]
dims:
  B: {sizes: [1, 2], example: 2}
  H: {sizes: [64, 48], example: 64}
  W: {sizes: [64, 48], example: 64}
inputs:
  image: {kind: image, shape: [B, 3, H, W], dtype: float32}
blocks:
  letterbox: {block: letterbox, in: image, imgsz: 64}
  stem:  {block: conv_bn_act, in: letterbox.images, out_channels: 16, stride: 2, activation: silu}
  down2: {block: conv_bn_act, in: stem, out_channels: 32, stride: 2, activation: silu}
  down3: {block: conv_bn_act, in: down2, out_channels: 32, stride: 2, activation: silu}
  p3:    {block: c2f, in: down3, out_channels: 32, bottlenecks: 1, shortcut: true}
  down4: {block: conv_bn_act, in: p3, out_channels: 64, stride: 2, activation: silu}
  p4:    {block: c2f, in: down4, out_channels: 64, bottlenecks: 1, shortcut: true}
  down5: {block: conv_bn_act, in: p4, out_channels: 64, stride: 2, activation: silu}
  p5:    {block: sppf, in: down5, out_channels: 64}
  detect: {block: yolo_head, in: [p3, p4, p5], num_classes: 2}
  nms:   {block: yolo_nms, in: detect.predictions, max_det: 10}
  post:  {block: yolo_postprocess, in: {detections: nms.detections, sizes: letterbox.sizes, images: letterbox.images}}
outputs:
  boxes: post.detections.boxes
  scores: post.detections.scores
  labels: post.detections.labels
  count: post.detections.count
train:
  data: {format: coco, train: train/annotations.json, val: val/annotations.json, targets: {boxes: objects}}
  metrics: {boxes: [map]}
  optimizer: {type: adamw, lr: 0.005}
  batch_size: 8
  epochs: 12
"""


def test_small_yolo_spec_trains_its_loss_goes_down_and_it_detects(tmp_path):
    import json

    from composer.train import train
    from tests.train.conftest import generate

    generate.write_coco(tmp_path / "train", 64, size=64, seed=0)
    generate.write_coco(tmp_path / "val", 16, size=64, seed=1)
    spec = tmp_path / "tiny_yolo.yaml"
    spec.write_text(TINY)
    result = train(composer.load(spec), tmp_path / "run", progress=False, echo=lambda line: None)
    assert result.steps == 96
    curves = json.loads((result.folder / "report.json").read_text())["curves"]
    epochs = curves["train/loss"]                      # the mean training loss of each epoch
    assert len(epochs) == 12 and epochs[-1] < 0.5 * epochs[0], epochs
    for part in PARTS:
        assert curves[f"train/{part}"][-1] < curves[f"train/{part}"][0], (part, curves[f"train/{part}"])
    # the boxes are found with their classes: the data's category ids 1, 2 are the head's 0, 1 in loss and mAP
    assert result.monitor == "val/map" and max(curves["val/map_50"]) >= 0.6, curves["val/map_50"]

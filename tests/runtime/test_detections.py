"""Detection results of `composer run`: padded outputs found by kind, printed, written to
detections.json and drawn, for a spec (torch and onnx backends) and for an .onnx file.

The images are generated here with PIL; nothing is downloaded. `FakeDetector` produces the
padded detection contract (K = 3 slots, two used) from the image size alone, so every figure
the tests check is known exactly.
"""

from __future__ import annotations

import json
from typing import ClassVar

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn
from typer.testing import CliRunner

from composer import Block, In, PortType
from composer.cli import app
from composer.detections import (MASK_ALPHA, DetectionError, ImageDetections, class_colour, draw, find_outputs,
                                 format_lines, images_from_input, render_files, split, to_json)
from composer.inputs import InputSpec
from composer.labels import builtin
from composer.spec import Preprocess
from tests.conftest import ROOT

runner = CliRunner()
NAMES = ("__background__", "person", "bicycle", "car")
FRACTIONS = [[0.10, 0.20, 0.50, 0.60], [0.55, 0.10, 0.90, 0.45], [0.0, 0.0, 0.0, 0.0]]
SCORES = [0.93, 0.61, 0.0]
LABELS = [1, 3, -1]


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def street(path, w=160, h=120):
    """A grey street with a brown house: an image file of known size."""
    img = np.full((h, w, 3), (200, 200, 200), np.uint8)
    img[h // 4: h // 2, w // 3: w // 2] = (120, 80, 40)
    Image.fromarray(img).save(path)
    return path


# ---- a detector that needs no weights ---------------------------------------------------------


class FakeDetector(nn.Module):
    """Padded detections from the image size: two boxes (fractions of W, H), scores, labels,
    count 2 of 3 slots, and with `masks` the boxes filled as probability maps."""

    def __init__(self, masks: bool = False):
        super().__init__()
        self.masks = masks
        self.register_buffer("fractions", torch.tensor(FRACTIONS))
        self.register_buffer("scores", torch.tensor(SCORES))
        self.register_buffer("labels", torch.tensor(LABELS, dtype=torch.int64))

    def forward(self, image):
        b, h, w = image.shape[0], image.shape[2], image.shape[3]
        fh, fw = image.new_ones(h).sum(), image.new_ones(w).sum()          # H and W as float tensors
        boxes = self.fractions * torch.stack([fw, fh, fw, fh])             # (K, 4) in input pixels
        out = {
            "boxes": boxes[None].expand(b, -1, -1),                        # (B, K, 4)
            "scores": self.scores[None].expand(b, -1),
            "labels": self.labels[None].expand(b, -1),
            "count": torch.full_like(image[:, 0, 0, 0], 2).to(torch.int64),
        }
        if self.masks:
            ys = image.new_ones(h).cumsum(0)[None, :, None] - 0.5         # (1, H, 1) pixel centres
            xs = image.new_ones(w).cumsum(0)[None, None, :] - 0.5         # (1, 1, W)
            inside = ((xs >= boxes[:, 0, None, None]) & (xs < boxes[:, 2, None, None])
                      & (ys >= boxes[:, 1, None, None]) & (ys < boxes[:, 3, None, None]))     # (K, H, W)
            out["masks"] = (inside.to(image.dtype) * 0.9)[None].expand(b, -1, -1, -1)
        return out


class FakeDetectorBlock(Block):
    """Test-only block: the padded detection contract from an image, without weights."""

    name: ClassVar[str] = "_fake_detector"
    internal: ClassVar[bool] = True
    inputs: ClassVar = {"image": In("image")}
    outputs: ClassVar = ("detections",)
    masks: bool = False

    def infer(self, image: PortType) -> dict:
        b, _, h, w = image.shape
        fields = [("boxes", PortType("boxes", (b, 3, 4))), ("scores", PortType("scores", (b, 3))),
                  ("labels", PortType("labels", (b, 3), "int64")), ("count", PortType("count", (b,), "int64"))]
        if self.masks:
            fields.append(("masks", PortType("mask", (b, 3, h, w))))
        return {"detections": PortType("detections", None, fields=tuple(fields), meta=(("max", 3),))}

    def param_count(self, **inputs) -> int:
        return 0

    def build(self, image: PortType) -> nn.Module:
        return FakeDetector(self.masks)


SPEC = """\
pipeline: fake_detection
labels: [__background__, person, bicycle, car]
dims:
  H: {{sizes: [24, 32], example: 24}}
  W: {{sizes: [32, 40], example: 32}}
inputs:
  image: {{kind: image, shape: [B, 3, H, W], preprocess: {{scale: 1/255}}}}
blocks:
  det: {{block: _fake_detector, in: image, masks: {masks}}}
outputs:
  boxes: det.detections.boxes
  scores: det.detections.scores
  labels: det.detections.labels
  count: det.detections.count
{mask_output}"""


@pytest.fixture
def fake_block(monkeypatch):
    """The fake detector in the registry for one test only (registry-driven tests never see it)."""
    from composer.registry import REGISTRY, load_blocks
    load_blocks()
    monkeypatch.setitem(REGISTRY, FakeDetectorBlock.name, FakeDetectorBlock)


def fake_spec(write_spec, masks: bool = False):
    return write_spec(SPEC.format(masks=str(masks).lower(),
                                  mask_output="  masks: det.detections.masks\n" if masks else ""), "fake.yaml")


def expected_boxes(w, h):
    return [[round(f[0] * w, 2), round(f[1] * h, 2), round(f[2] * w, 2), round(f[3] * h, 2)] for f in FRACTIONS[:2]]


# ---- unit: finding, splitting, printing, JSON -------------------------------------------------


def padded(b=2, k=3, masks=False, h=20, w=30):
    boxes = np.zeros((b, k, 4), np.float32)
    boxes[:, 0] = [2, 3, 12, 15]
    boxes[:, 1] = [10, 1, 28, 9]
    out = {"boxes": boxes, "scores": np.tile(np.float32([0.9, 0.5, 0]), (b, 1)),
           "labels": np.tile(np.int64([1, 3, -1]), (b, 1)), "count": np.array([2, 1][:b], np.int64)}
    if masks:
        out["masks"] = np.zeros((b, k, h, w), np.float32)
    return out


def test_find_outputs_by_kind():
    kinds = {"b": "boxes", "s": "scores", "l": "labels", "n": "count", "logits": "logits"}
    assert find_outputs(kinds) == {"boxes": "b", "scores": "s", "labels": "l", "count": "n"}
    assert find_outputs({**kinds, "m": "mask"})["masks"] == "m"
    assert find_outputs({"b": "boxes", "s": "scores", "l": "labels"}) is None        # no count
    assert find_outputs({"logits": "logits", "probs": "probs"}) is None
    # a structured output flattened (`det.boxes`) groups by prefix; proposals lack labels
    flat = {"proposals.boxes": "boxes", "proposals.scores": "scores", "proposals.count": "count",
            "det.boxes": "boxes", "det.scores": "scores", "det.labels": "labels", "det.count": "count"}
    assert find_outputs(flat) == {"boxes": "det.boxes", "scores": "det.scores", "labels": "det.labels",
                                  "count": "det.count"}


def test_split_cuts_the_padding():
    dets = split(padded(), {"boxes": "boxes", "scores": "scores", "labels": "labels", "count": "count"})
    assert [len(d) for d in dets] == [2, 1]
    assert dets[0].labels.tolist() == [1, 3] and dets[1].boxes.tolist() == [[2, 3, 12, 15]]
    assert dets[0].masks is None


@pytest.mark.parametrize("change, message", [
    (lambda o: o.update(boxes=o["boxes"][..., :3]), "`boxes` has shape [2, 3, 3], expected [B, K, 4]"),
    (lambda o: o.update(scores=o["scores"][:, :2]), "`scores` has shape [2, 2], but `boxes` is [2, 3, 4]"),
    (lambda o: o.update(count=np.array([2], np.int64)), "`count` has shape [1], expected [2]"),
    (lambda o: o.update(count=np.array([2, 4], np.int64)), "`count`[1] is 4, outside 0..3"),
    (lambda o: o.update(labels=o["labels"].astype(np.float32)), "`labels` has dtype float32"),
    (lambda o: o.update(masks=np.zeros((2, 2, 5, 5), np.float32)), "`masks` has shape [2, 2, 5, 5]"),
])
def test_split_rejects_what_breaks_the_contract(change, message):
    out = padded()
    change(out)
    roles = {"boxes": "boxes", "scores": "scores", "labels": "labels", "count": "count"}
    if "masks" in out:
        roles["masks"] = "masks"
    with pytest.raises(DetectionError, match=message.replace("[", r"\[").replace("]", r"\]")):
        split(out, roles)


def test_format_lines_and_json_name_the_classes():
    det = ImageDetections(np.array([[2.0, 3.0, 12.25, 15.0], [10, 1, 28, 9]]), np.array([0.93, 0.5]),
                          np.array([1, 7]))
    lines = format_lines([det, ImageDetections(np.zeros((0, 4)), np.zeros(0), np.zeros(0, np.int64))], NAMES)
    assert lines == ["  [0] 2 detections", "      person  0.930  [2.0, 3.0, 12.2, 15.0]",
                     "      7       0.500  [10.0, 1.0, 28.0, 9.0]", "  [1] 0 detections"]
    doc = to_json([det], NAMES, [{"file": "a.jpg"}], "p")
    assert doc == {"pipeline": "p", "images": [{
        "file": "a.jpg", "count": 2, "boxes": [[2.0, 3.0, 12.25, 15.0], [10.0, 1.0, 28.0, 9.0]],
        "scores": [0.93, 0.5], "labels": [1, 7], "names": ["person", "7"]}]}
    assert to_json([det], None, [{}], "p")["images"][0]["names"] == ["1", "7"]


# ---- unit: drawing -----------------------------------------------------------------------------


def test_draw_outlines_boxes_in_their_class_colour():
    base = Image.new("RGB", (200, 100), (255, 255, 255))
    det = ImageDetections(np.array([[20.0, 40.0, 80.0, 90.0], [120, 30, 190, 70]]), np.array([0.9, 0.8]),
                          np.array([1, 3]))
    img = draw(base, det, NAMES)
    assert img.size == (200, 100) and base.getpixel((20, 65)) == (255, 255, 255)     # the input is untouched
    for (x1, y1, x2, y2), label in zip(det.boxes, det.labels):
        mid = int((y1 + y2) / 2)
        assert img.getpixel((int(x1), mid)) == class_colour(label)                # left edge
        assert img.getpixel((int(x2), mid)) == class_colour(label)                # right edge
        assert img.getpixel((int((x1 + x2) / 2), mid)) == (255, 255, 255)          # inside: not filled
        # the label sits above the box, on a band of the class colour
        band = [img.getpixel((x, int(y1) - 2)) for x in range(int(x1), int(x1) + 20)]
        assert class_colour(label) in band
    assert class_colour(1) != class_colour(3)


def test_draw_blends_masks_over_the_image():
    base = Image.new("RGB", (120, 80), (0, 0, 0))
    masks = np.zeros((1, 80, 120), np.float32)
    masks[0, 30:70, 20:100] = 0.8
    masks[0, 60, 40] = 0.4                                                           # below the threshold
    det = ImageDetections(np.array([[20.0, 30.0, 100.0, 70.0]]), np.array([0.9]), np.array([2]), masks)
    img = draw(base, det, NAMES)
    blended = tuple(int(round(c * MASK_ALPHA)) for c in class_colour(2))
    assert img.getpixel((60, 50)) == blended
    assert img.getpixel((40, 60)) == (0, 0, 0) and img.getpixel((5, 75)) == (0, 0, 0)
    # a mask at another resolution is resampled to the image
    small = ImageDetections(det.boxes, det.scores, det.labels, masks[:, ::2, ::2].copy())
    assert draw(base, small, NAMES).getpixel((60, 50)) == blended


def test_images_from_input_undo_the_preprocessing():
    pixels = np.random.default_rng(0).integers(0, 256, (1, 3, 8, 10)).astype(np.float32)
    pre = Preprocess(mean=[0.5, 0.4, 0.3], std=[0.2, 0.25, 0.3])
    x = (pixels / 255 - np.float32([0.5, 0.4, 0.3]).reshape(1, 3, 1, 1)) / np.float32([0.2, 0.25, 0.3]).reshape(1, 3, 1, 1)
    (img,) = images_from_input(x.astype(np.float32), InputSpec("image", None, "float32", "image", pre))
    assert img.size == (10, 8) and np.array_equal(np.asarray(img).transpose(2, 0, 1), pixels[0].astype(np.uint8))
    assert images_from_input(np.zeros((1, 5, 4, 4), np.float32), InputSpec("x", None, "float32")) is None


def test_render_files_in_a_batch():
    out = padded(b=2)
    dets = split(out, {"boxes": "boxes", "scores": "scores", "labels": "labels", "count": "count"})
    files = render_files(dets, NAMES, "p", "image", np.zeros((2, 3, 20, 30), np.float32),
                         InputSpec("image", None, "float32", "image"), "x.npy")
    assert list(files) == ["detections.json", "x.0.detections.png", "x.1.detections.png"]
    doc = json.loads(files["detections.json"])
    assert [i["count"] for i in doc["images"]] == [2, 1] and doc["images"][1]["index"] == 1
    assert doc["images"][0]["width"] == 30 and doc["images"][0]["height"] == 20


# ---- end to end: `composer run` ----------------------------------------------------------------


def check_results(folder, w, h, masks=False, stem="street", source=None):
    doc = json.loads((folder / "detections.json").read_text())
    (image,) = doc["images"]
    assert image["count"] == 2 and image["width"] == w and image["height"] == h
    np.testing.assert_allclose(image["boxes"], expected_boxes(w, h), atol=0.01)
    assert image["scores"] == pytest.approx(SCORES[:2], abs=1e-4)
    assert image["labels"] == [1, 3] and image["names"] == ["person", "car"]
    assert image["drawing"] == f"{stem}.detections.png" and image["file"] == source
    img = Image.open(folder / image["drawing"])
    assert img.size == (w, h)
    for (x1, y1, x2, y2), label in zip(image["boxes"], image["labels"]):
        assert img.getpixel((round(x1), round((y1 + y2) / 2))) == class_colour(label)
    if masks:   # inside the first box, away from its edges and its label: the house or street, tinted
        x1, y1, x2, y2 = image["boxes"][0]
        px = img.getpixel((round((x1 + x2) / 2), round(y2) - 4))
        assert px != (200, 200, 200) and px != class_colour(1)
    return doc


def test_run_spec_writes_detections_torch_and_onnx_agree(fake_block, write_spec, tmp_path):
    spec = fake_spec(write_spec, masks=True)
    image = street(tmp_path / "street.png")
    docs = {}
    for backend in ("torch", "onnx"):
        folder = tmp_path / backend / "out"                                 # -o creates the folder
        r = invoke("run", spec, "--input", f"image={image}", "--backend", backend, "-o", folder, "--device", "cpu")
        assert r.exit_code == 0, r.output
        assert "detections (boxes, scores, labels, count, masks)" in r.output
        assert "[0] 2 detections (with masks)" in r.output
        assert "person  0.930  [16.0, 24.0, 80.0, 72.0]" in r.output
        assert "car     0.610  [88.0, 12.0, 144.0, 54.0]" in r.output
        assert f"wrote detections.json, street.detections.png to {folder}" in r.output
        docs[backend] = check_results(folder, 160, 120, masks=True, source=str(image))
    assert docs["torch"] == docs["onnx"]


def test_a_structured_detections_output(fake_block, write_spec, tmp_path):
    """`outputs: {det: det.detections}` (the whole port): the torch backend flattens it to
    `det.boxes`, `det.scores`, ... and finds the detections by their field kinds."""
    text = SPEC.format(masks="false", mask_output="")
    text = text[:text.index("outputs:")] + "outputs:\n  det: det.detections\n"
    spec = write_spec(text, "structured.yaml")
    r = invoke("run", spec, "--input", f"image={street(tmp_path / 'street.png')}", "-o", tmp_path / "out")
    assert r.exit_code == 0, r.output
    assert "detections (det.boxes, det.scores, det.labels, det.count)" in r.output
    check_results(tmp_path / "out", 160, 120, source=str(tmp_path / "street.png"))


def test_a_failed_run_writes_nothing(fake_block, write_spec, tmp_path):
    spec = fake_spec(write_spec)
    folder = tmp_path / "out"
    r = invoke("run", spec, "--input", f"image={tmp_path / 'missing.png'}", "-o", folder)
    assert r.exit_code == 1 and "does not exist" in r.output and "Traceback" not in r.output
    assert not folder.exists()
    (tmp_path / "taken").write_text("a file")
    r = invoke("run", spec, "--input", f"image={street(tmp_path / 's.png')}", "-o", tmp_path / "taken")
    assert r.exit_code == 1 and "-o names a folder" in r.output
    assert (tmp_path / "taken").read_text() == "a file"


def test_o_needs_detection_outputs(tiny_spec, tmp_path):
    np.save(tmp_path / "x.npy", np.zeros((1, 3, 16, 16), np.float32))
    r = invoke("run", tiny_spec, "--input", f"image={tmp_path / 'x.npy'}", "-o", tmp_path / "out")
    assert r.exit_code == 1 and "has no detection outputs" in r.output and "--save" in r.output
    assert not (tmp_path / "out").exists()


@pytest.mark.filterwarnings("ignore::DeprecationWarning")   # the legacy exporter says it is legacy
def test_run_onnx_file_with_composer_metadata(tmp_path):
    """An .onnx file written by torch.onnx, with the metadata keys composer's export adds."""
    import onnx

    path = tmp_path / "fake.onnx"
    image = torch.rand(1, 3, 24, 32)
    torch.onnx.export(FakeDetector(), (image,), str(path), dynamo=False, input_names=["image"],
                      output_names=["boxes", "scores", "labels", "count"],
                      dynamic_axes={"image": {0: "B", 2: "H", 3: "W"}})
    model = onnx.load(str(path))
    meta = {"composer.pipeline": "fake_onnx",
            "composer.inputs": json.dumps({"image": {"kind": "image", "preprocess": Preprocess().model_dump()}}),
            "composer.outputs": json.dumps({"boxes": "boxes", "scores": "scores", "labels": "labels",
                                            "count": "count"}),
            "composer.labels": json.dumps(list(NAMES))}
    for k, v in meta.items():
        p = model.metadata_props.add()
        p.key, p.value = k, v
    onnx.save(model, str(path))

    picture = street(tmp_path / "road.jpg", w=96, h=64)
    r = invoke("run", path, "--input", f"image={picture}", "-o", tmp_path / "out", "--device", "cpu")
    assert r.exit_code == 0, r.output
    assert "fake_onnx: onnxruntime on cpu" in r.output and "person  0.930" in r.output
    check_results(tmp_path / "out", 96, 64, stem="road", source=str(picture))

    # without composer's metadata nothing says these are detections: plain outputs, no -o
    bare = onnx.load(str(path))
    del bare.metadata_props[:]
    onnx.save(bare, str(tmp_path / "bare.onnx"))
    r = invoke("run", tmp_path / "bare.onnx", "--input", f"image={picture}", "--device", "cpu")
    assert r.exit_code == 0, r.output
    assert "boxes  [1, 3, 4]" in r.output and "detections" not in r.output


def test_export_stores_output_kinds(fake_block, write_spec, tmp_path):
    import onnx

    spec = fake_spec(write_spec)
    r = invoke("export", spec, "-o", tmp_path / "d.onnx")
    assert r.exit_code == 0, r.output
    meta = {p.key: p.value for p in onnx.load(str(tmp_path / "d.onnx")).metadata_props}
    assert json.loads(meta["composer.outputs"]) == {"boxes": "boxes", "scores": "scores", "labels": "labels",
                                                    "count": "count"}
    assert json.loads(meta["composer.labels"]) == list(NAMES)


# ---- end to end on the real Faster R-CNN pipeline ---------------------------------------------

DETECTION = ROOT / "pipelines" / "detection.yaml"
# the model resizes its input to 320..480 pixels rather than 800..1333: the same blocks, quicker
SHRINK = ["--set", "transform.min_size=320", "--set", "transform.max_size=480"]


def run_detection(tmp_path, image, backend: str, weights) -> dict:
    folder = tmp_path / backend
    r = invoke("run", DETECTION, *SHRINK, "--input", f"image={image}", "--backend", backend, "-o", folder,
               "--device", "cpu", "--weights", weights)
    assert r.exit_code == 0, r.output
    assert "detections (boxes, scores, labels, count" in r.output
    (entry,) = json.loads((folder / "detections.json").read_text())["images"]
    assert entry["width"] == 96 and entry["height"] == 64 and entry["count"] == len(entry["boxes"]) > 0
    assert all(0 <= x1 <= x2 <= 96 and 0 <= y1 <= y2 <= 64 for x1, y1, x2, y2 in entry["boxes"])
    assert set(entry["names"]) <= set(builtin("coco"))
    assert entry["names"][0] in r.output
    assert Image.open(folder / "street.detections.png").size == (96, 64)
    return entry


@pytest.mark.slow
def test_run_detection_pipeline_torch_and_onnx(tmp_path):
    """torchvision weights (random, with one confident class) through `--weights`: detections
    printed, written and drawn, and the same with the onnx backend."""
    from tests.blocks.detection._support import reference, save_state
    ref = reference("detection", num_classes=91, min_size=320, max_size=480, pre_nms_top_n=1000,
                    post_nms_top_n=1000, detections_per_image=100)
    weights = tmp_path / "frcnn.pth"
    save_state(ref, weights)
    image = street(tmp_path / "street.jpg", w=96, h=64)
    torch_entry = run_detection(tmp_path, image, "torch", weights)
    onnx_entry = run_detection(tmp_path, image, "onnx", weights)
    assert onnx_entry["labels"] == torch_entry["labels"]
    np.testing.assert_allclose(onnx_entry["boxes"], torch_entry["boxes"], atol=0.05)
    np.testing.assert_allclose(onnx_entry["scores"], torch_entry["scores"], atol=1e-3)


def test_write_files_is_all_or_nothing(tmp_path):
    from composer._io import write_files
    (tmp_path / "detections.json").write_text("earlier")
    (tmp_path / "x.detections.png").mkdir()                                 # cannot be replaced by a file
    with pytest.raises(OSError):
        write_files(tmp_path, {"detections.json": b"new", "x.detections.png": b"png"})
    assert (tmp_path / "detections.json").read_text() == "earlier"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["detections.json", "x.detections.png"]   # no temp files
    write_files(tmp_path / "new", {"a.json": b"1", "b.png": b"2"})
    assert (tmp_path / "new" / "a.json").read_bytes() == b"1" and (tmp_path / "new" / "b.png").read_bytes() == b"2"

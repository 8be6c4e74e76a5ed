"""The `coco` reader: a small generated COCO file and its images read as detection examples
(boxes from x, y, w, h to corners, category ids as labels, crowd annotations left out, masks
from polygons), and every kind of bad data is a DataError that names its file first."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
from PIL import Image

import composer
from composer.train.data.base import DataError
from composer.train.data.coco import CocoExamples
from composer.train.plan import plan as make_plan

SPEC = """
pipeline: tiny_detector
dims:
  H: {sizes: [48, 40], example: 48}
  W: {sizes: [60, 52], example: 60}
inputs:
  image: {kind: image, shape: [B, 3, H, W], dtype: float32}
blocks:
  transform: {block: detection_transform, in: image, min_size: 64, max_size: 96}
  backbone:  {block: resnet, in: transform.images, depth: 18}
  fpn:       {block: fpn, in: backbone.features, levels: [c4, c5], out_channels: 16}
  rpn:       {block: rpn, in: {features: fpn, sizes: transform.sizes}, anchor_sizes: [[32], [64], [128]]}
  roi:       {block: roi_heads, in: {features: fpn, proposals: rpn, sizes: transform.sizes}, num_classes: 8,
              representation: 32}
  post:      {block: detection_postprocess, in: {detections: roi, sizes: transform.sizes}}
outputs:
  boxes: post.detections.boxes
  scores: post.detections.scores
  labels: post.detections.labels
  count: post.detections.count
train:
  data: {format: coco, train: annotations.json, targets: {boxes: objects}}
  epochs: 1
"""


@pytest.fixture(scope="module")
def plan():
    p = make_plan(composer.loads(SPEC))
    need = p.targets["boxes"]
    if need.num_classes is None:      # the detector's classes, as the roi_heads' num_classes gives them
        p.targets["boxes"] = dataclasses.replace(need, num_classes=8)
    return p


def _write(tmp_path, mutate=None):
    """Three images (one without annotations) and their annotation file; `mutate(doc, folder)`
    breaks something before it is written."""
    rng = np.random.default_rng(0)
    folder = tmp_path / "images"
    folder.mkdir()
    pixels = {}
    for name, (w, h) in {"a.png": (40, 30), "b.jpg": (32, 36), "c.png": (20, 20)}.items():
        arr = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        Image.fromarray(arr).save(folder / name, quality=95)
        pixels[name] = np.asarray(Image.open(folder / name).convert("RGB"))
    doc = {
        "images": [{"id": 1, "file_name": "a.png", "width": 40, "height": 30},
                   {"id": 2, "file_name": "b.jpg", "width": 32, "height": 36},
                   {"id": 3, "file_name": "c.png"}],
        "annotations": [
            {"id": 10, "image_id": 1, "category_id": 3, "bbox": [2, 4, 10, 6], "iscrowd": 0,
             "segmentation": [[2, 4, 12, 4, 12, 10, 2, 10]]},
            {"id": 11, "image_id": 1, "category_id": 7, "bbox": [30.5, 20.0, 20.0, 5.0], "iscrowd": 0,   # past the edge
             "segmentation": [[30.5, 20, 40, 20, 40, 25, 30.5, 25]]},
            {"id": 12, "image_id": 2, "category_id": 1, "bbox": [0, 0, 32, 36], "iscrowd": 1,
             "segmentation": {"size": [36, 32], "counts": [0, 1152]}},
            {"id": 13, "image_id": 2, "category_id": 1, "bbox": [1, 2, 3, 4],
             "segmentation": {"size": [36, 32], "counts": [38, 4, 32, 4, 32, 4, 1038]}},
        ],
        "categories": [{"id": 1, "name": "cat"}, {"id": 3, "name": "dog"}, {"id": 7, "name": "owl"}],
    }
    if mutate is not None:
        mutate(doc, folder)
    path = tmp_path / "annotations.json"
    path.write_text(json.dumps(doc))
    return path, folder, pixels


def test_reads_examples(tmp_path, plan):
    path, folder, pixels = _write(tmp_path)
    data = CocoExamples(plan, path, folder)
    data.check(plan)
    assert len(data) == 3 and data.fields == ("image", "objects")
    assert data.where(1) == str(folder / "b.jpg")
    assert data.categories == {1: "cat", 3: "dog", 7: "owl"}
    first = data[0]
    image = first["image"]
    assert image.dtype == np.float32 and image.shape == (3, 30, 40)
    np.testing.assert_allclose(image, pixels["a.png"].transpose(2, 0, 1) / 255.0, atol=1e-6)
    target = first["objects"]
    assert target["boxes"].dtype == np.float32 and target["labels"].dtype == np.int64
    np.testing.assert_array_equal(target["boxes"], [[2, 4, 12, 10], [30.5, 20, 40, 25]])   # clipped at x = 40
    np.testing.assert_array_equal(target["labels"], [3, 7])
    second = data[1]["objects"]                      # the crowd annotation is left out
    np.testing.assert_array_equal(second["boxes"], [[1, 2, 4, 6]])
    np.testing.assert_array_equal(second["labels"], [1])
    background = data[2]
    assert background["image"].shape == (3, 20, 20)
    assert background["objects"]["boxes"].shape == (0, 4) and background["objects"]["labels"].shape == (0,)
    assert "masks" not in target


def test_reads_masks(tmp_path, plan):
    path, folder, _ = _write(tmp_path)
    data = CocoExamples(plan, path, folder, masks=True)
    data.check(plan)
    masks = data[0]["objects"]["masks"]
    assert masks.dtype == np.uint8 and masks.shape == (2, 30, 40)
    ys, xs = np.nonzero(masks[0])                    # the polygon fills its box
    assert (xs.min(), xs.max(), ys.min(), ys.max()) == (2, 11, 4, 9)
    rle = data[1]["objects"]["masks"]                # an uncompressed RLE, column-major
    assert rle.shape == (1, 36, 32) and rle.sum() == 12 and rle[2:6, 1:4].all()


def _set(path: str, value):
    def mutate(doc, folder):
        *keys, last = path.split("/")
        node = doc
        for k in keys:
            node = node[int(k)] if k.isdigit() else node[k]
        node[int(last) if last.isdigit() else last] = value
    return mutate


def _file(name: str, content: bytes):
    return lambda doc, folder: (folder / name).write_bytes(content)


def _remove(name: str):
    return lambda doc, folder: (folder / name).unlink()


BAD = {
    "missing_image": (_remove("b.jpg"), "images/b.jpg", "no such image file (image id 2"),
    "not_an_image": (_file("a.png", b"just some text\n"), "images/a.png", "it is not an image, it looks like text"),
    "wrong_size": (_set("images/0/width", 41), "images/a.png", "the image is 40x30, and annotations.json says 41x30"),
    "category_out_of_range": (lambda doc, folder: (_set("annotations/1/category_id", 9)(doc, folder),
                                                   doc["categories"].append({"id": 9, "name": "bat"})), "annotations.json",
                              "annotation 1 (id 11): category_id 9 is not a class of the detector (1..7"),
    "unlisted_category": (_set("annotations/0/category_id", 2), "annotations.json",
                          "annotation 0 (id 10): category_id 2 is not among the file's `categories`"),
    "short_bbox": (_set("annotations/0/bbox", [1, 2, 3]), "annotations.json",
                   "annotation 0 (id 10): `bbox` must be 4 numbers [x, y, width, height], found [1, 2, 3]"),
    "zero_width": (_set("annotations/3/bbox", [1, 2, 0, 4]), "annotations.json",
                   "annotation 3 (id 13): the box [1, 2, 0, 4] has no area"),
    "unknown_image": (_set("annotations/0/image_id", 99), "annotations.json",
                      "annotation 0 (id 10): `image_id` 99 names no image"),
    "text_category": (_set("annotations/3/category_id", "cat"), "annotations.json",
                      "annotation 3 (id 13): needs an integer `category_id`, found 'cat'"),
    "outside": (_set("annotations/3/bbox", [33, 2, 3, 4]), "annotations.json",
                "annotation 3 (id 13): the box [33.0, 2.0, 3.0, 4.0] lies outside its 32x36 image b.jpg"),
    "nameless_image": (_set("images/2/file_name", ""), "annotations.json", "image 2 (id 3): needs a `file_name`"),
}


@pytest.mark.parametrize("case", BAD)
def test_bad_data_names_the_file(tmp_path, plan, case):
    mutate, file, message = BAD[case]
    path, folder, _ = _write(tmp_path, mutate)
    with pytest.raises(DataError) as err:
        CocoExamples(plan, path, folder).check(plan)
    text = str(err.value)
    assert text.startswith(f"{tmp_path / file}: "), text
    assert message in text, text


@pytest.mark.parametrize("content, message", [
    (b'{"images": [], "annotations": [}', "annotations.json:1:32: not valid JSON"),
    (b'[1, 2]', "annotations.json: a COCO annotation file is a JSON object"),
    (b'{"images": []}', "annotations.json: `annotations` must be a list, found nothing"),
])
def test_unreadable_annotation_file(tmp_path, plan, content, message):
    path = tmp_path / "annotations.json"
    path.write_bytes(content)
    with pytest.raises(DataError, match="^" + str(tmp_path / message).replace("[", r"\[")):
        CocoExamples(plan, path)
    with pytest.raises(DataError, match="no such COCO annotation file"):
        CocoExamples(plan, tmp_path / "missing.json")


def test_an_undecodable_image_fails_when_read(tmp_path, plan):
    """A file whose header reads but whose data is cut off passes the header check and fails,
    naming the file, when the example is read."""
    path, folder, _ = _write(tmp_path)
    full = (folder / "a.png").read_bytes()
    (folder / "a.png").write_bytes(full[: len(full) // 2])
    data = CocoExamples(plan, path, folder)
    data.check(plan)
    with pytest.raises(DataError, match="^" + str(folder / "a.png") + ": "):
        data[0]

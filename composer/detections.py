"""Detection results of `composer run`: found by output kind, printed, written as JSON, drawn.

A detection pipeline's outputs are padded tensors (see `blocks/detection/ports.py`):

    boxes   kind "boxes"   [B, K, 4] float, xyxy in input-image pixels
    scores  kind "scores"  [B, K]
    labels  kind "labels"  [B, K] int64 class ids
    count   kind "count"   [B] int64: slots past count are padding (box 0, score 0, label -1)
    masks   kind "mask"    [B, K, H, W] float probabilities in input pixels (optional; threshold 0.5)

They are recognised by their kinds (a spec's inferred output types, or the `composer.outputs`
metadata of an exported .onnx file), never by their names. `split` cuts the padding off per
image; `format_lines`, `to_json` and `draw` present the result. Nothing here writes files:
`render_files` returns their bytes, so a run writes them only once everything has succeeded.
"""

from __future__ import annotations

import io
import json
import re
from dataclasses import dataclass
from typing import Any, Mapping, Optional, Sequence

import numpy as np

from .errors import ComposerError
from .labels import name_of

ROLE_KINDS = {"boxes": "boxes", "scores": "scores", "labels": "labels", "count": "count", "masks": "mask"}
REQUIRED = ("boxes", "scores", "labels", "count")
MASK_THRESHOLD = 0.5
MASK_ALPHA = 0.45
JSON_NAME = "detections.json"

# distinct, saturated colours (Tableau 10 and its lighter half); class id i takes PALETTE[i % 20]
PALETTE = (
    (31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
    (140, 86, 75), (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207),
    (174, 199, 232), (255, 187, 120), (152, 223, 138), (255, 152, 150), (197, 176, 213),
    (196, 156, 148), (247, 182, 210), (199, 199, 199), (219, 219, 141), (158, 218, 229),
)


class DetectionError(ComposerError):
    """Detection outputs that do not fit the padded contract (exit code 1)."""


@dataclass
class ImageDetections:
    """The detections of one image, padding removed: n boxes [n, 4], scores [n], labels [n]
    (and masks [n, H, W] probabilities for instance segmentation)."""

    boxes: np.ndarray
    scores: np.ndarray
    labels: np.ndarray
    masks: Optional[np.ndarray] = None

    def __len__(self) -> int:
        return int(self.scores.shape[0])


def class_colour(label: int) -> tuple[int, int, int]:
    """The colour class `label` is drawn in (the same in every image and run)."""
    return PALETTE[int(label) % len(PALETTE)]


# ---- which outputs -------------------------------------------------------------------------


def find_outputs(kinds: Mapping[str, str]) -> Optional[dict[str, str]]:
    """Role (boxes, scores, labels, count[, masks]) -> output name, or None when the outputs are
    not detections. Outputs are grouped by prefix (`det.boxes` and `det.scores` belong together,
    top-level outputs form one group); the first group holding all four required kinds wins, and
    within it an output named like its role is preferred."""
    groups: dict[str, dict[str, list[str]]] = {}
    for name, kind in kinds.items():
        prefix = name.rpartition(".")[0]
        for role, k in ROLE_KINDS.items():
            if kind == k:
                groups.setdefault(prefix, {}).setdefault(role, []).append(name)
    for prefix, found in groups.items():
        if all(r in found for r in REQUIRED):
            out = {}
            for role, names in found.items():
                named = [n for n in names if n.rpartition(".")[2] == role]
                out[role] = (named or names)[0]
            return out
    return None


# ---- cutting off the padding ---------------------------------------------------------------


def _shape(a: np.ndarray) -> str:
    return "[" + ", ".join(str(s) for s in a.shape) + "]"


def split(outputs: Mapping[str, np.ndarray], roles: Mapping[str, str]) -> list[ImageDetections]:
    """Per image of the batch, its first `count` detections. Raises DetectionError (naming the
    outputs) when shapes or counts do not fit the padded contract."""
    boxes = np.asarray(outputs[roles["boxes"]])
    scores = np.asarray(outputs[roles["scores"]])
    labels = np.asarray(outputs[roles["labels"]])
    count = np.asarray(outputs[roles["count"]])
    names = {r: f"`{roles[r]}`" for r in roles}
    if boxes.ndim != 3 or boxes.shape[2] != 4:
        raise DetectionError(f"detection output {names['boxes']} has shape {_shape(boxes)}, expected [B, K, 4]")
    b, k = boxes.shape[:2]
    for role, arr in (("scores", scores), ("labels", labels)):
        if arr.shape != (b, k):
            raise DetectionError(f"detection output {names[role]} has shape {_shape(arr)}, but {names['boxes']} "
                                 f"is {_shape(boxes)}: expected [{b}, {k}]")
    if count.shape != (b,):
        raise DetectionError(f"detection output {names['count']} has shape {_shape(count)}, expected [{b}] "
                             f"(one count per image of {names['boxes']})")
    for role, arr in (("labels", labels), ("count", count)):
        if not np.issubdtype(arr.dtype, np.integer):
            raise DetectionError(f"detection output {names[role]} has dtype {arr.dtype}, expected an integer dtype")
    masks = None
    if "masks" in roles:
        masks = np.asarray(outputs[roles["masks"]])
        if masks.ndim != 4 or masks.shape[:2] != (b, k):
            raise DetectionError(f"detection output {names['masks']} has shape {_shape(masks)}, expected "
                                 f"[{b}, {k}, H, W] (one mask per slot of {names['boxes']})")
    out = []
    for i in range(b):
        n = int(count[i])
        if not 0 <= n <= k:
            raise DetectionError(f"detection output {names['count']}[{i}] is {n}, outside 0..{k} (the slots of "
                                 f"{names['boxes']})")
        out.append(ImageDetections(boxes[i, :n].astype(np.float64), scores[i, :n].astype(np.float64),
                                   labels[i, :n].astype(np.int64), None if masks is None else masks[i, :n]))
    return out


# ---- presenting ----------------------------------------------------------------------------


def format_lines(dets: Sequence[ImageDetections], names: Optional[Sequence[str]]) -> list[str]:
    """Printable lines: per image its count, then `person 0.930  [x1, y1, x2, y2]` per detection."""
    lines = []
    for i, det in enumerate(dets):
        n = len(det)
        lines.append(f"  [{i}] {n} detection{'s' if n != 1 else ''}" + (" (with masks)" if det.masks is not None
                                                                           and n else ""))
        shown = [name_of(l, names) for l in det.labels]
        width = max((len(s) for s in shown), default=0)
        for s, score, box in zip(shown, det.scores, det.boxes):
            coords = ", ".join(f"{v:.1f}" for v in box)
            lines.append(f"      {s.ljust(width)}  {score:.3f}  [{coords}]")
    return lines


def to_json(dets: Sequence[ImageDetections], names: Optional[Sequence[str]], images: Sequence[Mapping[str, Any]],
            pipeline: str) -> dict:
    """The contents of detections.json: per image its file, size, boxes ([x1, y1, x2, y2] in the
    input image's pixels, 0.01 px), scores (4 decimals), label ids and names (the id as text where
    the pipeline has no name for it)."""
    out = []
    for det, info in zip(dets, images):
        entry = dict(info)
        entry.update({
            "count": len(det),
            "boxes": [[round(float(v), 2) for v in box] for box in det.boxes],
            "scores": [round(float(s), 4) for s in det.scores],
            "labels": [int(l) for l in det.labels],
            "names": [name_of(l, names) for l in det.labels],
        })
        out.append(entry)
    return {"pipeline": pipeline, "images": out}


def images_from_input(array: np.ndarray, spec) -> Optional[list]:
    """The pictures a batch of image tensors [B, C, H, W] shows (PIL images, one per row), undoing
    the input's `preprocess` (std, mean, scale, channel order): the image as decoded, in the pixel
    coordinates the boxes refer to. None when the array is not a 1- or 3-channel image batch."""
    from PIL import Image

    from .spec import Preprocess

    a = np.asarray(array)
    if a.ndim != 4 or a.shape[1] not in (1, 3) or not np.issubdtype(a.dtype, np.number):
        return None
    pre = getattr(spec, "preprocess", None) or Preprocess()
    x = a.astype(np.float64)
    if getattr(spec, "dtype", "float32") != "uint8":
        c = a.shape[1]
        if pre.std is not None and len(pre.std) in (1, c):
            x = x * np.asarray(pre.std, np.float64).reshape(1, -1, 1, 1)
        if pre.mean is not None and len(pre.mean) in (1, c):
            x = x + np.asarray(pre.mean, np.float64).reshape(1, -1, 1, 1)
        x = x / pre.scale
    if pre.channels == "bgr" and a.shape[1] == 3:
        x = x[:, ::-1]
    pixels = np.clip(np.rint(np.nan_to_num(x)), 0, 255).astype(np.uint8)
    out = []
    for row in pixels:
        hwc = np.ascontiguousarray(row.transpose(1, 2, 0))
        out.append(Image.fromarray(hwc[:, :, 0], "L").convert("RGB") if hwc.shape[2] == 1 else
                   Image.fromarray(hwc, "RGB"))
    return out


def _font(size: int):
    from PIL import ImageFont
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1: the fixed bitmap font
        return ImageFont.load_default()


def draw(image, det: ImageDetections, names: Optional[Sequence[str]]):
    """A copy of `image` (PIL) with masks alpha-blended, boxes outlined in their class colour and
    `person 0.93` written above each box; the best detection is drawn last (on top)."""
    from PIL import Image, ImageDraw

    img = image.convert("RGB")
    w, h = img.size
    order = np.argsort(det.scores, kind="stable")         # ascending: the best is drawn last
    if det.masks is not None and len(det):
        pixels = np.asarray(img).astype(np.float32)
        for i in order:
            m = np.asarray(det.masks[i], np.float32)
            if m.shape != (h, w):                         # masks are in input pixels; resample if not
                m = np.asarray(Image.fromarray(m, "F").resize((w, h), Image.BILINEAR))
            sel = m > MASK_THRESHOLD
            colour = np.asarray(class_colour(det.labels[i]), np.float32)
            pixels[sel] = pixels[sel] * (1 - MASK_ALPHA) + colour * MASK_ALPHA
        img = Image.fromarray(np.clip(np.rint(pixels), 0, 255).astype(np.uint8), "RGB")
    else:
        img = img.copy()
    pen = ImageDraw.Draw(img)
    line = max(2, round(min(w, h) / 200))
    font = _font(max(10, round(min(w, h) / 40)))
    pad = max(1, line // 2)
    for i in order:
        box = det.boxes[i]
        if not np.all(np.isfinite(box)):
            continue
        x1, x2 = sorted((float(box[0]), float(box[2])))
        y1, y2 = sorted((float(box[1]), float(box[3])))
        x1, x2 = (min(max(round(v), 0), w - 1) for v in (x1, x2))
        y1, y2 = (min(max(round(v), 0), h - 1) for v in (y1, y2))
        colour = class_colour(det.labels[i])
        pen.rectangle([x1, y1, x2, y2], outline=colour, width=line)
        text = f"{name_of(det.labels[i], names)} {det.scores[i]:.2f}"
        left, top, right, bottom = pen.textbbox((0, 0), text, font=font)
        tw, th = right - left + 2 * pad, bottom - top + 2 * pad
        ty = y1 - th if y1 - th >= 0 else y1                 # above the box, or inside it at the top edge
        tx = min(x1, max(0, w - tw))
        pen.rectangle([tx, ty, tx + tw - 1, ty + th - 1], fill=colour)
        luminance = 0.299 * colour[0] + 0.587 * colour[1] + 0.114 * colour[2]
        pen.text((tx + pad - left, ty + pad - top), text, fill=(0, 0, 0) if luminance > 150 else (255, 255, 255),
                 font=font)
    return img


def png_bytes(img) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def render_files(dets: Sequence[ImageDetections], names: Optional[Sequence[str]], pipeline: str,
                 image_input: Optional[str], array: Optional[np.ndarray], spec, source: Optional[str]
                 ) -> dict[str, bytes]:
    """The files of a detection run, by file name: detections.json and, when the image input is
    known, `<image>.detections.png` per image (`<image>.<i>.detections.png` in a batch)."""
    from pathlib import Path

    pictures = images_from_input(array, spec) if array is not None else None
    if pictures is not None and len(pictures) != len(dets):
        pictures = None                                   # the boxes do not belong to these rows
    stem = Path(source).stem if source else (image_input or "image")
    files: dict[str, bytes] = {}
    infos = []
    for i, det in enumerate(dets):
        info: dict[str, Any] = {"input": image_input, "file": source, "index": i}
        if pictures is not None:
            drawing = f"{stem}.detections.png" if len(dets) == 1 else f"{stem}.{i}.detections.png"
            info.update(width=pictures[i].width, height=pictures[i].height, drawing=drawing)
            files[drawing] = png_bytes(draw(pictures[i], det, names))
        infos.append(info)
    doc = to_json(dets, names, infos, pipeline)
    files = {JSON_NAME: (dumps(doc) + "\n").encode("utf-8"), **files}
    return files


_NUMBERS = re.compile(r"\[\s+([-+0-9.eE,\s]+?)\s+\]")


def dumps(doc: Any) -> str:
    """JSON with an indent, except that a list of numbers (a box, the scores) stays on one line."""
    text = json.dumps(doc, indent=2, ensure_ascii=False)
    return _NUMBERS.sub(lambda m: "[" + ", ".join(x.strip() for x in m.group(1).split(",")) + "]", text)

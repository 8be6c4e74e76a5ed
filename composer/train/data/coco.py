"""`coco`: detection examples from a COCO annotation file (`instances_train2017.json`) and its images.

    {"images": [{"id": 1, "file_name": "000001.jpg", "width": 640, "height": 480}, ...],
     "annotations": [{"id": 7, "image_id": 1, "category_id": 18, "bbox": [x, y, w, h], "iscrowd": 0}, ...],
     "categories": [{"id": 18, "name": "dog"}, ...]}

One example per image, in the file's order (an image without annotations is a background
example): the image as RGB float32 [3, H, W] in [0, 1], decoded when the example is read,
and its target `{"boxes": float32 [N, 4] x1 y1 x2 y2 in the image's pixels, "labels": int64
[N]}` (optionally `"masks": uint8 [N, H, W]` from the segmentations). Labels are the category
ids themselves, as torchvision's COCO detectors take them (91 classes with the background 0,
ids 1..90 with gaps), unless the detector numbers its classes 0..n-1 (a YOLO head: the plan's
`class_ids: index`): then a label is its category's position among the file's `categories`
sorted by id (COCO's 80 ids 1..90 become Ultralytics' 0..79), and the file must list exactly
as many categories as the detector has classes. Crowd annotations (`iscrowd: 1`) are left
out, as torchvision's reference training does. Boxes are clipped to the image.

The annotation file is read and every entry checked when the reader is made; `check` reports
malformed entries (by their index and id), boxes without area, category ids the detector has
no class for, and image files that are missing or are not images (their headers are read), as
a DataError naming the file first.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import numpy as np

from ...inputs import InputError, _mode_problem, _undecodable, load_image
from .base import DataError, Examples

MAX_LISTED = 3      # problems quoted in one DataError (the rest are counted)


@dataclass
class _Image:
    id: Any
    file_name: str
    width: Optional[int]
    height: Optional[int]
    boxes: list[list[float]] = field(default_factory=list)     # x, y, w, h per annotation kept
    labels: list[int] = field(default_factory=list)
    segmentations: list[Any] = field(default_factory=list)
    annotations: list[tuple[int, Any]] = field(default_factory=list)   # (index, id) of each, for messages


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return (_is_int(v) or isinstance(v, float)) and math.isfinite(v)


def _entry(kind: str, index: int, entry: Any) -> str:
    ident = entry.get("id") if isinstance(entry, dict) else None
    return f"{kind} {index}" + (f" (id {ident!r})" if ident is not None else "")


class CocoExamples(Examples):
    """The images of a COCO annotation file with their boxes and category ids.

    `plan` names the image input it fills and the detection target's data field;
    `images` is the image folder (default: the annotation file's folder); `masks` adds each
    annotation's segmentation as a mask (Mask R-CNN)."""

    def __init__(self, plan, annotations: Path, images: Optional[Path] = None, *, masks: bool = False):
        self.source = Path(annotations)
        self.folder = Path(images) if images is not None else self.source.parent
        self.masks = masks
        self.image_need = _image_input(plan, self.source)
        self.target_need = _detection_target(plan, self.source)
        self.image_field, self.target_field = self.image_need.field, self.target_need.field
        self.fields = (self.image_field, self.target_field)
        self.problems: list[str] = []
        self.categories: dict[int, str] = {}
        self.images: list[_Image] = []
        self._read(self._load())
        # a detector numbering its classes 0..n-1: category id -> its position in id order
        self.class_index: Optional[dict[int, int]] = (
            {c: i for i, c in enumerate(sorted(self.categories))} if self.target_need.class_ids == "index" else None)

    # ---- reading the annotation file ----------------------------------------------------

    def _load(self) -> dict:
        path = self.source
        try:
            with open(path, "rb") as f:
                doc = json.load(f)
        except FileNotFoundError:
            raise DataError(f"{path}: no such COCO annotation file") from None
        except OSError as exc:
            raise DataError(f"{path}: cannot read the annotation file ({exc.strerror or exc})") from None
        except UnicodeDecodeError:
            raise DataError(f"{path}: not a COCO annotation file: it is not UTF-8 JSON text") from None
        except json.JSONDecodeError as exc:
            raise DataError(f"{path}:{exc.lineno}:{exc.colno}: not valid JSON: {exc.msg}") from None
        if not isinstance(doc, dict):
            raise DataError(f"{path}: a COCO annotation file is a JSON object with `images` and `annotations`, "
                            f"found a JSON {type(doc).__name__}")
        for key in ("images", "annotations"):
            if not isinstance(doc.get(key), list):
                found = "nothing" if key not in doc else f"a JSON {type(doc[key]).__name__}"
                hint = " (a test split without labels cannot train)" if key == "annotations" else ""
                raise DataError(f"{path}: `{key}` must be a list, found {found}{hint}")
        return doc

    def _read(self, doc: dict) -> None:
        bad = self.problems.append
        src = self.source
        cats = doc.get("categories", [])
        for i, c in enumerate(cats if isinstance(cats, list) else []):
            if not isinstance(c, dict) or not _is_int(c.get("id")):
                bad(f"{src}: {_entry('category', i, c)}: needs an integer `id`")
                continue
            self.categories[c["id"]] = str(c.get("name", c["id"]))
        by_id: dict[Any, _Image] = {}
        for i, im in enumerate(doc["images"]):
            where = f"{src}: {_entry('image', i, im)}"
            if not isinstance(im, dict):
                bad(f"{where}: an image entry is an object, found {type(im).__name__}")
                continue
            ident, name = im.get("id"), im.get("file_name")
            if not (_is_int(ident) or isinstance(ident, str)):
                bad(f"{where}: needs an `id` (an integer or a string), found {ident!r}")
                continue
            if not isinstance(name, str) or not name:
                bad(f"{where}: needs a `file_name`, found {name!r}")
                continue
            if ident in by_id:
                bad(f"{where}: the id {ident!r} is also image {by_id[ident].file_name!r}'s")
                continue
            w, h = im.get("width"), im.get("height")
            if any(v is not None and not (_is_int(v) and v > 0) for v in (w, h)):
                bad(f"{where}: `width` and `height` must be positive integers, found {w!r} x {h!r}")
                continue
            by_id[ident] = _Image(ident, name, w, h)
            self.images.append(by_id[ident])
        for i, ann in enumerate(doc["annotations"]):
            where = f"{src}: {_entry('annotation', i, ann)}"
            if not isinstance(ann, dict):
                bad(f"{where}: an annotation is an object, found {type(ann).__name__}")
                continue
            crowd = ann.get("iscrowd", 0)
            if crowd not in (0, 1) or isinstance(crowd, float):
                bad(f"{where}: `iscrowd` must be 0 or 1, found {crowd!r}")
                continue
            image = by_id.get(ann.get("image_id")) if isinstance(ann.get("image_id"), (int, str)) else None
            if image is None:
                bad(f"{where}: `image_id` {ann.get('image_id')!r} names no image of the file")
                continue
            if crowd:
                continue
            cat, box = ann.get("category_id"), ann.get("bbox")
            if not _is_int(cat):
                bad(f"{where}: needs an integer `category_id`, found {cat!r}")
                continue
            if not (isinstance(box, list) and len(box) == 4 and all(_is_number(v) for v in box)):
                bad(f"{where}: `bbox` must be 4 numbers [x, y, width, height], found {box!r}")
                continue
            if box[2] <= 0 or box[3] <= 0:
                bad(f"{where}: the box {box} has no area (width and height must be positive)")
                continue
            if self.categories and cat not in self.categories:
                bad(f"{where}: category_id {cat} is not among the file's `categories`")
                continue
            seg = ann.get("segmentation")
            if self.masks and not _is_segmentation(seg):
                bad(f"{where}: `segmentation` must be polygons [[x1, y1, x2, y2, x3, y3, ...], ...] or an RLE "
                    f"{{size, counts}}, found {_short(seg)}")
                continue
            image.boxes.append([float(v) for v in box])
            image.labels.append(cat)
            image.segmentations.append(seg if self.masks else None)
            image.annotations.append((i, ann.get("id")))

    # ---- the examples ----------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self.images)

    def path(self, i: int) -> Path:
        return self.folder / self.images[i].file_name

    def where(self, i: int) -> str:
        return str(self.path(i))

    def __getitem__(self, i: int) -> dict[str, Any]:
        im = self.images[i]
        path = self.path(i)
        try:
            image = load_image(path, self.image_need.spec)[0]             # (3, H, W) in [0, 1]
        except InputError as exc:
            raise DataError(f"{path}: {_without_path(_without_input(str(exc)), path)}") from None
        h, w = image.shape[-2:]
        xywh = np.asarray(im.boxes, np.float32).reshape(-1, 4)
        boxes = np.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], 1)
        boxes[:, 0::2] = boxes[:, 0::2].clip(0, w)
        boxes[:, 1::2] = boxes[:, 1::2].clip(0, h)
        labels = [self.class_index[c] for c in im.labels] if self.class_index is not None else im.labels
        target: dict[str, np.ndarray] = {"boxes": boxes, "labels": np.asarray(labels, np.int64)}
        if self.masks:
            target["masks"] = _masks(im.segmentations, h, w)
        return {self.image_field: image, self.target_field: target}

    def check(self, plan) -> None:
        """The annotation entries, the class range and every image file's header."""
        problems = list(self.problems)
        pre = self.image_need.spec.preprocess if self.image_need.spec is not None else None
        if pre is not None and (pre.resize or pre.crop):
            problems.insert(0, f"{self.source}: input `{self.image_need.name}` resizes or crops its image files "
                               "(`preprocess`), which would move them off their COCO boxes; resize in the "
                               "pipeline instead (detection_transform)")
        classes = _num_classes(plan, self.target_need)
        if self.class_index is not None:
            problems.extend(self._index_problems(classes))
        elif classes is not None:
            for im in self.images:
                for (index, ident), label in zip(im.annotations, im.labels):
                    if not 1 <= label < classes:
                        entry = f"annotation {index}" + (f" (id {ident!r})" if ident is not None else "")
                        problems.append(f"{self.source}: {entry}: category_id {label} is not a class of the detector "
                                        f"(1..{classes - 1}; num_classes {classes} counts the background 0): "
                                        "raise num_classes to the largest id + 1 (91 for COCO's ids)")
        more = ""
        if not problems:
            for i in range(len(self.images)):
                why = self._header_problem(i)
                if why is not None:
                    problems.append(why)
                    if len(problems) > MAX_LISTED:       # a wrong folder: no need to open every file
                        more = "\n(and more: the check stopped here)"
                        break
        if problems:
            if not more and len(problems) > MAX_LISTED:
                more = f"\n(and {len(problems) - MAX_LISTED} more)"
            raise DataError("\n".join(problems[:MAX_LISTED]) + more)
        if not self.images:
            raise DataError(f"{self.source}: the file lists no images")

    def _index_problems(self, classes: Optional[int]) -> list[str]:
        """A detector with classes 0..n-1 takes the file's categories in id order: it needs them
        listed, as many as it has classes."""
        if not self.categories:
            return [f"{self.source}: the detector numbers its classes 0..n-1 by the file's `categories` in id "
                    "order, and the file lists none: add `categories: [{id, name}, ...]`"]
        if classes is not None and len(self.categories) != classes:
            ids = sorted(self.categories)
            shown = ", ".join(str(c) for c in ids[:8]) + (", ..." if len(ids) > 8 else "")
            return [f"{self.source}: the file lists {len(ids)} categories (ids {shown}), and the detector has "
                    f"{classes} classes (0..{classes - 1}, one per category in id order): set its num_classes to "
                    f"{len(ids)}"]
        return []

    def _header_problem(self, i: int) -> Optional[str]:
        """Why image i cannot be read, from its header alone; None when it can."""
        from PIL import Image, UnidentifiedImageError

        im, path = self.images[i], self.path(i)
        named = f"(image id {im.id!r} of {self.source.name})"
        if not path.is_file():
            return f"{path}: no such image file {named}"
        try:
            with Image.open(path) as pic:
                problem = _mode_problem(pic, path, want_gray=False)
                w, h = pic.size
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError) as exc:
            why = _undecodable(path, None if isinstance(exc, UnidentifiedImageError) else exc)
            return f"{path}: {_without_path(why, path)} {named}"
        if problem is not None:
            return f"{path}: {_without_path(problem, path)} {named}"
        if (im.width, im.height) != (None, None) and (im.width, im.height) != (w, h):
            return (f"{path}: the image is {w}x{h}, and {self.source.name} says {im.width}x{im.height}: its boxes "
                    f"would not fit {named}")
        for (index, ident), (x, y, bw, bh) in zip(im.annotations, im.boxes):
            if x >= w or y >= h or x + bw <= 0 or y + bh <= 0:
                entry = f"annotation {index}" + (f" (id {ident!r})" if ident is not None else "")
                return f"{self.source}: {entry}: the box {[x, y, bw, bh]} lies outside its {w}x{h} image {path.name}"
        return None


def _is_segmentation(seg: Any) -> bool:
    if isinstance(seg, dict):
        return isinstance(seg.get("counts"), (list, str)) and isinstance(seg.get("size"), list)
    return isinstance(seg, list) and bool(seg) and all(
        isinstance(p, list) and len(p) >= 6 and len(p) % 2 == 0 and all(_is_number(v) for v in p) for p in seg)


def _image_input(plan, source: Path):
    images = [n for n in plan.inputs.values() if n.kind == "image" and not n.raw]
    if len(images) != 1:
        found = ", ".join(f"`{n.name}`" for n in images) or "none"
        raise DataError(f"{source}: COCO data fills one image input, and the pipeline has {found}")
    return images[0]


def _detection_target(plan, source: Path):
    targets = [t for t in plan.targets.values() if t.role == "detection"]
    if len(targets) != 1:
        found = ", ".join(f"`{t.output}`" for t in targets) or "none"
        raise DataError(f"{source}: COCO data is the target of one detection output, and the pipeline has {found}")
    return targets[0]


def _num_classes(plan, need) -> Optional[int]:
    """The detector's class count (with the background unless its `class_ids` are `index`), when the plan knows it."""
    current = plan.targets.get(need.output, need)
    return current.num_classes


def _masks(segmentations: list, h: int, w: int) -> np.ndarray:
    """Polygons or RLEs -> uint8 [N, h, w], as torchvision's COCO reference decodes them."""
    import warnings

    from pycocotools import mask as coco_mask

    out = np.zeros((len(segmentations), h, w), np.uint8)
    with warnings.catch_warnings():     # pycocotools' own use of numpy 2's copy keyword
        warnings.simplefilter("ignore", DeprecationWarning)
        for j, seg in enumerate(segmentations):
            if isinstance(seg, list):                              # polygons: their union
                m = coco_mask.decode(coco_mask.frPyObjects(seg, h, w))
                out[j] = m.reshape(h, w, -1).any(axis=2)
            else:
                rle = coco_mask.frPyObjects(seg, h, w) if isinstance(seg.get("counts"), list) else seg
                out[j] = coco_mask.decode(rle).reshape(h, w)
    return out


def _short(value: Any) -> str:
    text = json.dumps(value) if not isinstance(value, str) else repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _without_input(message: str) -> str:
    """An InputError's message without its `input `x`: ` prefix (the file is named first instead)."""
    return message.split(": ", 1)[1] if message.startswith("input `") else message


def _without_path(message: str, path: Path) -> str:
    """A reader's message about `path` once the path is named before it: "the image" instead."""
    return message.replace(f"image {path}", "the image").replace(str(path), "the image")

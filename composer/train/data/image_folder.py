"""Image folders: one sub-folder per class (`train/cat/001.jpg`, `train/dog/002.png`).

The class of a folder is its index in `data.classes`, else in the spec's `labels:`, else in
the sorted folder names. Images are decoded as `composer run` decodes them, by the input's
`preprocess` (resize, crop, channels, scale); its `mean`/`std` are applied by the loader after
augmentation, so colour augmentations see the [0, 1] image. Before the first step every file's
header is read (cheaply, no pixels decoded): an unreadable file, a class folder with no images,
a folder that is no class of the output, a wrong colour mode, and images whose sizes cannot be
batched are each a DataError naming the file.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np

from ...errors import did_you_mean
from ...inputs import IMAGE_SUFFIXES, InputError, InputSpec, _mode_problem, _undecodable, load_image
from .base import DataError, Examples
from .fields import dims_text


def image_input(plan, where: str):
    """The one image input an image folder fills."""
    found = [n for n in plan.inputs.values() if not (n.kind == "mask")]
    if len(found) != 1 or found[0].raw or found[0].spec is None:
        names = ", ".join(f"`{n.name}`" for n in found)
        raise DataError(f"{where}: `format: image_folder` fills one image input; this pipeline has {names or 'none'}")
    return found[0]


def class_target(plan, where: str):
    found = list(plan.targets.values())
    if len(found) != 1 or found[0].role != "class" or found[0].shape:
        names = ", ".join(f"`{t.output}` ({t.role})" for t in found)
        raise DataError(f"{where}: `format: image_folder` gives one class id per image, for one output with a "
                        f"cross_entropy loss; this pipeline learns {names}")
    return found[0]


def _final_size(w: int, h: int, pre) -> tuple[int, int]:
    """(width, height) after the input's `preprocess` resize and crop, as load_image computes it."""
    if pre is not None and pre.resize:
        s = pre.resize / min(w, h)
        w, h = max(1, round(w * s)), max(1, round(h * s))
    if pre is not None and pre.crop:
        return pre.crop, pre.crop
    return w, h


def _header(path: Path, spec: InputSpec) -> tuple[int, int]:
    """An image's size, from its header; verify() checks the file's structure without decoding."""
    import warnings

    from PIL import Image, UnidentifiedImageError

    gray = spec.preprocess is not None and spec.preprocess.channels == "gray"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                size = im.size
                problem = _mode_problem(im, path, gray)
                im.verify()
    except Image.DecompressionBombError:
        raise DataError(f"{path}: the image is too large to decode safely (a decompression bomb?); scale it "
                        "down") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError) as exc:
        raise DataError(_undecodable(path, None if isinstance(exc, UnidentifiedImageError) else exc)) from None
    if problem is not None:
        raise DataError(problem)
    return size


class ImageFolder(Examples):
    def __init__(self, plan, root: Path, labels: Optional[Sequence[str]] = None, sized_by_augment: bool = False):
        self.source = root
        self.need = image_input(plan, str(root))
        self.target = class_target(plan, str(root))
        if not root.is_dir():
            raise DataError(f"{root}: not a folder; `format: image_folder` reads a folder with one sub-folder of "
                            "images per class")
        folders = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
        if not folders:
            raise DataError(f"{root}: no class folders; put the images of each class in a sub-folder named after it")
        data = plan.spec.data
        classes = list(data.classes or labels or folders)
        source = "`data.classes`" if data.classes else ("the spec's `labels`" if labels else None)
        for name in folders:
            if name not in classes:
                hint = did_you_mean(name, classes)
                raise DataError(f"{root / name}: the folder is no class of {source} ({', '.join(classes[:8])}"
                                f"{', ...' if len(classes) > 8 else ''})" + (f"; {hint}" if hint else "") +
                                "; rename it, or list the folders in `data.classes`")
        if data.classes:
            absent = [c for c in data.classes if c not in folders]
            if absent:
                raise DataError(f"{root}: no folder for class `{absent[0]}` of `data.classes`; the folders are: "
                                f"{', '.join(folders)}")
        c = self.target.num_classes or 0
        over = [n for n in folders if classes.index(n) >= c]
        if over:
            raise DataError(f"{root / over[0]}: class {classes.index(over[0])} (`{over[0]}`), and output "
                            f"`{self.target.output}` has {c} classes: {len(classes)} classes for {c} scores; give "
                            "the output more classes, or fewer folders")
        self.classes = classes
        spec = self.need.spec
        pre = spec.preprocess
        # decode with resize/crop/scale; mean and std come after augmentation, in the loader
        self.spec = dataclasses.replace(spec, preprocess=pre.model_copy(update={"mean": None, "std": None})) \
            if pre is not None else spec
        self.pending_normalize = {self.need.field: (pre.mean, pre.std)} \
            if pre is not None and (pre.mean is not None or pre.std is not None) else {}
        files: list[Path] = []
        labels_: list[int] = []
        sizes: dict[tuple[int, int], Path] = {}
        for name in folders:
            found = sorted(p for p in (root / name).iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
            if not found:
                raise DataError(f"{root / name}: the class folder holds no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
            for p in found:
                w0, h0 = _header(p, spec)
                w, h = _final_size(w0, h0, pre)
                if pre is not None and pre.crop and pre.crop > min(_final_size(w0, h0, pre.model_copy(
                        update={"crop": None}))):
                    raise DataError(f"{p}: the image is {w0}x{h0}, smaller than the crop {pre.crop}x{pre.crop} of "
                                    f"input `{self.need.name}`'s `preprocess`")
                sizes.setdefault((w, h), p)
                files.append(p)
                labels_.append(classes.index(name))
        self.files = files
        self.labels = np.asarray(labels_, dtype=np.int64)
        self.fields = (self.need.field, self.target.field)
        self.sizes = sizes                               # (width, height) after preprocess -> a file of that size
        if not sized_by_augment:
            self.check_sizes()

    def check_sizes(self) -> None:
        """The images batch without augmentation (for validation examples split off this folder)."""
        self._check_sizes(self.sizes)

    def _check_sizes(self, sizes: dict[tuple[int, int], Path]) -> None:
        shape = self.need.spec.shape
        if len(sizes) > 1:
            (a, pa), (b, pb) = list(sizes.items())[:2]
            raise DataError(f"{pb}: the image is {b[0]}x{b[1]} and {pa} is {a[0]}x{a[1]}, so they cannot be batched; "
                            f"give the input `{self.need.name}` a `preprocess: {{resize: N, crop: N}}` (every split, "
                            "and `composer run`), or training an `augment: [{random_resized_crop: {size: N}}]`")
        (w, h), path = next(iter(sizes.items()))
        if shape is not None and len(shape) == 4:
            for axis, got in ((2, h), (3, w)):
                want = shape[axis]
                if isinstance(want, int) and want != got:
                    raise DataError(f"{path}: the image is {w}x{h} (after `preprocess`), and input `{self.need.name}` "
                                    f"is {dims_text(shape[1:])}; set the input's `preprocess: {{resize: ..., crop: "
                                    "...}}` to make it fit")
                sym = str(want) if isinstance(want, str) or hasattr(want, "symbols") else None
                m = self.need.spec.multiples.get(sym, 1) if sym else 1
                if got % m:
                    raise DataError(f"{path}: the image is {w}x{h} (after `preprocess`), and input "
                                    f"`{self.need.name}` takes sizes that are multiples of {m} ({sym}); set its "
                                    "`preprocess: {resize: ..., crop: ...}`")

    def __len__(self) -> int:
        return len(self.files)

    def where(self, i: int) -> str:
        return str(self.files[i])

    def __getitem__(self, i: int) -> dict[str, Any]:
        try:
            image = load_image(self.files[i], self.spec)[0]           # (C, H, W)
        except InputError as exc:
            raise DataError(str(exc)) from None
        return {self.need.field: image, self.target.field: self.labels[i]}

    def check(self, plan) -> None:
        """The headers were checked when the folder was listed; the first image is decoded here."""
        self[0]

"""The structured port types of the detection family: image sizes, proposals and detections.

Variable-sized results are padded to a declared maximum K with a per-image `count`, so
exported graphs keep fixed ranks and a dynamic batch: slots past `count` hold box 0,
score 0 and label -1.
"""

from __future__ import annotations

from typing import Optional

from composer.dims import DimLike
from composer.types import InferError, PortType, expect_float, expect_rank


def expect_rgb(x: PortType, what: str) -> None:
    """A detector's input: a float [B, 3, H, W] RGB batch."""
    expect_rank(x, 4, "x", " [B, 3, H, W]")
    expect_float(x, "x")
    if x.shape[1] != 3:
        raise InferError(f"{what} takes RGB images", port="x", code="E302", expected="[B, 3, H, W]", found=str(x))


def image_sizes_type(b: DimLike) -> PortType:
    """{resized, original}: [B, 2] int64 (height, width) of each image, after and before resizing."""
    size = PortType("sizes", (b, 2), "int64")
    return PortType("image_sizes", None, "int64", fields=(("resized", size), ("original", size)))


def proposals_type(b: DimLike, k: int, dtype: str = "float32") -> PortType:
    """{boxes [B, K, 4], scores [B, K], count [B]}: region proposals, best first."""
    return PortType("proposals", None, dtype, fields=(
        ("boxes", PortType("boxes", (b, k, 4), dtype)),
        ("scores", PortType("scores", (b, k), dtype)),
        ("count", PortType("count", (b,), "int64"))), meta=(("max", k),))


def detections_type(b: DimLike, k: int, dtype: str = "float32", masks: Optional[tuple] = None,
                    space: str = "resized", num_classes: Optional[int] = None,
                    class_ids: Optional[str] = None) -> PortType:
    """{boxes [B, K, 4], scores [B, K], labels [B, K], count [B][, masks [B, K, h, w]]}.

    `space` says whether boxes are in the resized (model) image or in input pixels.
    `class_ids` says how labels number the classes: unset, as torchvision's R-CNN heads
    (`num_classes` counts the background 0, labels are COCO category ids); `index`, as a YOLO
    head (labels 0..num_classes-1: the data's categories in id order)."""
    fields = [("boxes", PortType("boxes", (b, k, 4), dtype)),
              ("scores", PortType("scores", (b, k), dtype)),
              ("labels", PortType("labels", (b, k), "int64")),
              ("count", PortType("count", (b,), "int64"))]
    if masks is not None:
        fields.append(("masks", PortType("mask", (b, k, *masks), dtype)))
    meta = (("max", k), ("space", space)) + ((("num_classes", num_classes),) if num_classes else ()) \
        + ((("class_ids", class_ids),) if class_ids else ())
    return PortType("detections", None, dtype, fields=tuple(fields), meta=meta)


def feature_levels(features: PortType, names: Optional[list[str]], what: str, param: str = "levels"):
    """The chosen maps of a `features` port: [(name, type, stride)], checked (names exist, float maps)."""
    fields = dict(features.fields)
    strides = dict(zip(fields, features.get("strides", ()) or ()))
    chosen = list(fields) if names is None else names
    missing = [n for n in chosen if n not in fields]
    if missing:
        raise InferError(f"{what}: the features have no level `{missing[0]}`", param=param if names else None,
                         port=None if names else "features", code="E304",
                         expected=", ".join(fields) or "a features port", found=", ".join(missing))
    out = []
    for n in chosen:
        t = fields[n]
        if t.rank != 4:
            raise InferError(f"{what}: level `{n}` is not a [B, C, H, W] map", port="features", code="E302",
                             expected="[B, C, H, W]", found=str(t))
        if n not in strides:
            raise InferError(f"{what}: the stride of level `{n}` is unknown", port="features", code="E304",
                             expected="a features port from a backbone or fpn", found=str(features))
        out.append((n, t, strides[n]))
    return out

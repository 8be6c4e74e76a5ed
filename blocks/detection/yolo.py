"""YOLOv8 (Ultralytics layout): pre- and post-processing blocks, and the parts' registration.

- `letterbox`: Ultralytics' LetterBox inside the model: resize keeping the aspect ratio so the
  long side is `imgsz`, pad to a multiple of `stride` (`auto`, the predictor's minimum
  rectangle) with grey 114, centred; in a training step it maps the targets onto the
  letterboxed image for `yolo_head`'s loss (`letterbox_targets`);
- `yolo_postprocess`: boxes from the letterboxed image back to input pixels (undo the pad and
  the scale, clip), as Ultralytics' `scale_boxes`;
- the network parts live in `yolo_parts` (`c2f`, `sppf`, `upsample`) and `yolo_head`
  (`yolo_head`, `yolo_nms`); the strided convs are `conv_bn_act` with SiLU.

Ultralytics computes the resized size as round(side * min(imgsz / H, imgsz / W)) in floating
point; here it is the same round-half-to-even of the exact ratio in integer arithmetic on the
symbolic H and W, so the exported graph resizes any input size (the ONNX exporter has no
`round` for symbolic floats). The two differ only where the exact ratio is a half-integer
that float64 rounding moves by an ulp (3 of 3.1 million sizes checked against Ultralytics).
"""

from __future__ import annotations

from typing import ClassVar

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn
from typing_extensions import Annotated

from composer.block import Block, In
from composer.block_losses import active
from composer.dims import sym
from composer.params import PosInt
from composer.registry import register
from composer.types import InferError, PortType, expect_rank

from . import yolo_head, yolo_parts  # noqa: F401  (registers the network parts)
from .ops import clear_unused, slot_mask
from .ports import detections_type, expect_rgb, image_sizes_type
from .training import RESIZED_TARGETS, _on


def round_ratio(num, den):
    """round(num / den), half to even (Python's `round`), for non-negative ints or SymInts, without
    branching: q + [2r + (q mod 2) > den] with q, r the quotient and remainder."""
    q = num // den
    r = num - q * den
    return q + (2 * r + q % 2) // (den + 1)


def letterbox_size(h, w, imgsz: int, scaleup: bool = True):
    """The resized (height, width) of Ultralytics' LetterBox for a square `imgsz`: the ratio is
    min(imgsz / H, imgsz / W) = imgsz / max(H, W) (capped at 1 without `scaleup`), each side at least 1."""
    m = torch.sym_max(h, w)
    t = imgsz if scaleup else torch.sym_min(imgsz, m)
    return torch.sym_max(round_ratio(t * h, m), 1), torch.sym_max(round_ratio(t * w, m), 1)


def letterbox_targets(targets, original: tuple[int, int], resized: tuple[int, int], offset: tuple[int, int],
                      device: torch.device) -> list[dict[str, torch.Tensor]]:
    """Targets from input pixels to the letterboxed image: boxes scaled by resized / original per
    axis (what the image was resized by) and shifted by the pad's (top, left) `offset`. Ultralytics'
    training LetterBox scales both axes by its one ratio instead, which differs from the image's
    own per-axis scale by the rounding of the resized sides (under half a pixel). Masks are left
    out: no YOLO block reads them."""
    (h, w), (nh, nw), (top, left) = original, resized, offset
    out = []
    for t in _on(targets, device):
        r = {k: v for k, v in t.items() if k != "masks"}
        b = t["boxes"]                                           # (N, 4) x1 y1 x2 y2
        sx, sy = nw / w, nh / h
        r["boxes"] = torch.stack([b[:, 0] * sx + left, b[:, 1] * sy + top, b[:, 2] * sx + left, b[:, 3] * sy + top], -1)
        out.append(r)
    return out


# ---- modules ------------------------------------------------------------------------------


class Letterbox(nn.Module):
    """(B, 3, H, W) in [0, 1] -> resized (bilinear, as cv2.INTER_LINEAR) and padded (B, 3, Hs, Ws), and the sizes.

    In a training step (`composer.block_losses`) it also maps the step's targets onto the
    letterboxed image, for `yolo_head`'s loss."""

    def __init__(self, imgsz: int, stride: int, auto: bool, scaleup: bool, pad_value: float):
        super().__init__()
        self.imgsz, self.stride, self.auto, self.scaleup, self.pad_value = imgsz, stride, auto, scaleup, pad_value

    def forward(self, image: torch.Tensor):
        b, _, h, w = image.shape
        nh, nw = letterbox_size(h, w, self.imgsz, self.scaleup)
        x = F.interpolate(image, size=(nh, nw), mode="bilinear", align_corners=False)
        if self.auto:        # the minimum rectangle: up to a multiple of the stride
            ph, pw = (nh + self.stride - 1) // self.stride * self.stride, (nw + self.stride - 1) // self.stride * self.stride
        else:
            ph, pw = self.imgsz, self.imgsz
        top, left = (ph - nh) // 2, (pw - nw) // 2               # Ultralytics: round(d / 2 -+ 0.1)
        x = F.pad(x, (left, pw - nw - left, top, ph - nh - top), value=self.pad_value)   # (B, 3, Hs, Ws)
        device = image.device
        if self.training and (step := active()) is not None:     # a training step: targets follow the letterbox
            step.scratch[RESIZED_TARGETS] = letterbox_targets(step.targets, (h, w), (nh, nw), (top, left), device)
        resized = torch.tensor([nh, nw], dtype=torch.int64, device=device).expand(b, 2)
        original = torch.tensor([h, w], dtype=torch.int64, device=device).expand(b, 2)
        return x, {"resized": resized, "original": original}


class YoloPostprocess(nn.Module):
    """Boxes in letterboxed pixels -> input pixels: subtract the pad, divide by the gain of each
    axis (resized / original), clip to the input image (Ultralytics' scale_boxes)."""

    def forward(self, detections: dict, sizes: dict, images: torch.Tensor) -> dict:
        ph, pw = images.shape[-2:]
        boxes = detections["boxes"]                              # (B, K, 4)
        resized = sizes["resized"].to(boxes.dtype)               # (B, 2): h, w
        original = sizes["original"].to(boxes.dtype)
        gain = resized / original
        pad_y = torch.div(ph - sizes["resized"][:, 0], 2, rounding_mode="floor").to(boxes.dtype)
        pad_x = torch.div(pw - sizes["resized"][:, 1], 2, rounding_mode="floor").to(boxes.dtype)
        x1 = ((boxes[..., 0] - pad_x[:, None]) / gain[:, 1, None]).clamp(min=0)
        y1 = ((boxes[..., 1] - pad_y[:, None]) / gain[:, 0, None]).clamp(min=0)
        x2 = ((boxes[..., 2] - pad_x[:, None]) / gain[:, 1, None]).clamp(min=0)
        y2 = ((boxes[..., 3] - pad_y[:, None]) / gain[:, 0, None]).clamp(min=0)
        w, h = original[:, 1, None], original[:, 0, None]
        boxes = torch.stack([torch.minimum(x1, w), torch.minimum(y1, h), torch.minimum(x2, w), torch.minimum(y2, h)], -1)
        out = dict(detections)
        out["boxes"] = clear_unused(boxes, slot_mask(detections["count"], boxes.shape[1]), 0.0)
        return out


# ---- blocks -------------------------------------------------------------------------------


@register
class LetterboxBlock(Block):
    """YOLO pre-processing: Ultralytics' LetterBox (aspect-preserving resize to imgsz, centred grey pad to a multiple of 32).

    Takes RGB images in [0, 1] of any size; outputs the letterboxed batch `images` [B, 3, Hs, Ws]
    (Hs, Ws multiples of `stride` with `auto`, else imgsz x imgsz) and `sizes` {resized,
    original} ([B, 2] int64 height and width), which `yolo_postprocess` uses to map boxes back.
    """
    name: ClassVar[str] = "letterbox"
    family: ClassVar[str] = "detection"
    inputs: ClassVar = {"x": In("image", doc="[B, 3, H, W] RGB in [0, 1]")}
    outputs: ClassVar = ("images", "sizes")
    example: ClassVar = {"params": {"imgsz": 64},
                         "inputs": {"x": PortType("image", (2, 3, 50, 70))}}
    imgsz: PosInt = 640          # the long side after resizing
    stride: PosInt = 32          # with `auto`, pad each side up to a multiple of this
    auto: bool = True            # minimum rectangle (Ultralytics' predictor); false: pad to imgsz x imgsz
    scaleup: bool = True         # false: only shrink, never enlarge
    pad_value: Annotated[int, Field(ge=0, le=255)] = 114   # grey level of the pad, in 0-255 units

    def infer(self, x: PortType) -> dict[str, PortType]:
        expect_rgb(x, "letterbox")
        if self.imgsz % self.stride:
            raise InferError(f"imgsz {self.imgsz} is not a multiple of the stride {self.stride}", param="imgsz",
                             expected=f"a multiple of {self.stride}", found=str(self.imgsz),
                             hint=f"use {max(1, round(self.imgsz / self.stride)) * self.stride}")
        b = x.shape[0]
        if self.auto:
            h, w = sym("Hs", self.stride), sym("Ws", self.stride)
        else:
            h = w = self.imgsz
        images = PortType("image", (b, 3, h, w), x.dtype, meta=(("size_divisible", self.stride),))
        return {"images": images, "sizes": image_sizes_type(b)}

    def param_count(self, x: PortType) -> int:
        return 0

    def build(self, x: PortType) -> nn.Module:
        return Letterbox(self.imgsz, self.stride, self.auto, self.scaleup, self.pad_value / 255)


@register
class YoloPostprocessBlock(Block):
    """YOLO post-processing: boxes from the letterboxed image back to input pixels (undo pad and scale, clip).

    `detections` come from `yolo_nms` in letterboxed pixels; `sizes` and `images` from
    `letterbox` (the images only for their padded size). Unused slots keep box 0.
    """
    name: ClassVar[str] = "yolo_postprocess"
    family: ClassVar[str] = "detection"
    inputs: ClassVar = {"detections": In("detections"), "sizes": In("image_sizes"),
                        "images": In("image", doc="the letterboxed batch, for its padded size")}
    outputs: ClassVar = ("detections",)
    example: ClassVar = {"params": {}, "inputs": {"detections": detections_type(2, 5), "sizes": image_sizes_type(2),
                                                  "images": PortType("image", (2, 3, 64, 96))}}

    def infer(self, detections: PortType, sizes: PortType, images: PortType) -> dict[str, PortType]:
        expect_rank(images, 4, "images", " [B, 3, Hs, Ws]")
        if "masks" in dict(detections.fields):
            raise InferError("yolo_postprocess maps boxes only; these detections carry masks", port="detections",
                             code="E302", expected="detections {boxes, scores, labels, count}", found=str(detections))
        return {"detections": detections.with_(meta={**dict(detections.meta), "space": "input"})}

    def param_count(self, **inputs) -> int:
        return 0

    def build(self, **inputs) -> nn.Module:
        return YoloPostprocess()

"""Detection pre- and post-processing inside the exported model: `detection_transform`
(normalise, resize by min/max size, pad to a multiple of 32) and `detection_postprocess`
(boxes, and masks, back to input pixels).

The resize follows torchvision's `GeneralizedRCNNTransform` exactly (scale =
min(min_size / short side, max_size / long side), output size floor(side * scale),
bilinear) but on a batch tensor whose images share one size, computed from the symbolic
H and W so the exported graph resizes any input size. torchvision's transform takes a list
of images and loops over it, which `torch.export` cannot trace with a dynamic batch.
"""

from __future__ import annotations

import math
from typing import ClassVar

import torch
import torch.nn.functional as F
from pydantic import Field
from typing_extensions import Annotated
from torch import nn

from composer.block import Block, In
from composer.block_losses import active
from composer.dims import sym
from composer.params import PosFloat, PosInt
from composer.registry import register
from composer.types import InferError, PortType

from .ports import detections_type, expect_rgb, image_sizes_type
from .training import RESIZED_TARGETS, resize_targets

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
Triple = Annotated[list[float], Field(min_length=3, max_length=3)]


class DetectionTransform(nn.Module):
    """(B, 3, H, W) in [0, 1] -> normalised, resized, zero-padded (B, 3, Hs, Ws), and the sizes.

    In a training step (`composer.block_losses`) it also maps the step's targets into the
    resized image, for the RPN and RoI heads' losses."""

    def __init__(self, min_size: int, max_size: int, mean, std, size_divisible: int):
        super().__init__()
        self.min_size, self.max_size, self.size_divisible = min_size, max_size, size_divisible
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1), persistent=False)

    def forward(self, image: torch.Tensor):
        b, _, h, w = image.shape
        x = (image - self.mean) / self.std
        scale = torch.sym_min(self.min_size / torch.sym_min(h, w), self.max_size / torch.sym_max(h, w))
        nh, nw = math.floor(h * scale), math.floor(w * scale)       # as F.interpolate(scale_factor=...,
        x = F.interpolate(x, size=(nh, nw), mode="bilinear", align_corners=False)  # recompute_scale_factor)
        d = self.size_divisible
        ph, pw = (nh + d - 1) // d * d, (nw + d - 1) // d * d
        x = F.pad(x, (0, pw - nw, 0, ph - nh))                        # (B, 3, Hs, Ws), zeros bottom/right
        device = image.device
        if self.training and (step := active()) is not None:     # a training step: targets follow the resize
            step.scratch[RESIZED_TARGETS] = resize_targets(step.targets, (h, w), (nh, nw), device)
        resized = torch.tensor([nh, nw], dtype=torch.int64, device=device).expand(b, 2)
        original = torch.tensor([h, w], dtype=torch.int64, device=device).expand(b, 2)
        return x, {"resized": resized, "original": original}


@register
class DetectionTransformBlock(Block):
    """Detector pre-processing: normalise, resize by min_size/max_size (torchvision rule), pad to a multiple of 32.

    Takes RGB images in [0, 1] of any size; outputs the padded batch `images` [B, 3, Hs, Ws]
    and `sizes` {resized, original} ([B, 2] int64 height and width), which the RPN, RoI
    heads and `detection_postprocess` use to clip boxes and map them back to input pixels.
    """
    name: ClassVar[str] = "detection_transform"
    family: ClassVar[str] = "detection"
    inputs: ClassVar = {"x": In("image", doc="[B, 3, H, W] RGB in [0, 1]")}
    outputs: ClassVar = ("images", "sizes")
    example: ClassVar = {"params": {"min_size": 64, "max_size": 96},
                         "inputs": {"x": PortType("image", (2, 3, 50, 70))}}
    min_size: PosInt = 800
    max_size: PosInt = 1333
    mean: Triple = list(IMAGENET_MEAN)
    std: Annotated[list[PosFloat], Field(min_length=3, max_length=3)] = list(IMAGENET_STD)
    size_divisible: PosInt = 32

    def infer(self, x: PortType) -> dict[str, PortType]:
        expect_rgb(x, "detection_transform")
        if self.max_size < self.min_size:
            raise InferError("max_size is smaller than min_size", param="max_size",
                             expected=f"at least min_size ({self.min_size})", found=str(self.max_size))
        b = x.shape[0]
        images = PortType("image", (b, 3, sym("Hs", self.size_divisible), sym("Ws", self.size_divisible)), x.dtype,
                          meta=(("size_divisible", self.size_divisible),))
        return {"images": images, "sizes": image_sizes_type(b)}

    def param_count(self, x: PortType) -> int:
        return 0

    def build(self, x: PortType) -> nn.Module:
        return DetectionTransform(self.min_size, self.max_size, self.mean, self.std, self.size_divisible)


# ---- post-processing ----------------------------------------------------------------------


def paste_masks(masks: torch.Tensor, boxes: torch.Tensor, height, width, padding: int = 1) -> torch.Tensor:
    """Paste per-detection mask probabilities [B, K, M, M] into [B, K, height, width] images at
    their boxes (input pixels), as torchvision's `paste_masks_in_image`: the mask, padded by one
    pixel, is stretched bilinearly over the box enlarged by (M + 2) / M and rounded down to
    whole pixels. torchvision resizes each mask to its own box size in a Python loop; here
    every pixel samples its mask with `grid_sample` at the coordinate that resize would read,
    one batched op (`border` padding reproduces the resize's edge clamping)."""
    b, k, m = masks.shape[:3]
    scale = (m + 2 * padding) / m
    padded = F.pad(masks.reshape(b * k, 1, m, m), (padding,) * 4)        # (BK, 1, M+2, M+2)
    bx = boxes.reshape(b * k, 4)
    w_half = (bx[:, 2] - bx[:, 0]) * 0.5 * scale
    h_half = (bx[:, 3] - bx[:, 1]) * 0.5 * scale
    cx = (bx[:, 2] + bx[:, 0]) * 0.5
    cy = (bx[:, 3] + bx[:, 1]) * 0.5
    x0 = (cx - w_half).to(torch.int64)
    x1 = (cx + w_half).to(torch.int64)
    y0 = (cy - h_half).to(torch.int64)
    y1 = (cy + h_half).to(torch.int64)
    bw = torch.clamp(x1 - x0 + 1, min=1).to(masks.dtype)
    bh = torch.clamp(y1 - y0 + 1, min=1).to(masks.dtype)
    xs = torch.arange(width, device=masks.device)[None]                   # (1, W)
    ys = torch.arange(height, device=masks.device)[None]                  # (1, H)
    dx = (xs - x0[:, None]).to(masks.dtype)                               # (BK, W) pixel offset in the box
    dy = (ys - y0[:, None]).to(masks.dtype)
    gx = 2 * (dx + 0.5) / bw[:, None] - 1                                 # resize's source = grid_sample's
    gy = 2 * (dy + 0.5) / bh[:, None] - 1
    grid = torch.stack([gx[:, None, :].expand(-1, height, -1), gy[:, :, None].expand(-1, -1, width)], -1)
    pasted = F.grid_sample(padded, grid, mode="bilinear", padding_mode="border", align_corners=False)
    inside_x = (xs >= x0[:, None]) & (xs <= x1[:, None])                  # (BK, W)
    inside_y = (ys >= y0[:, None]) & (ys <= y1[:, None])
    inside = inside_y[:, :, None] & inside_x[:, None, :]
    pasted = torch.where(inside[:, None], pasted, torch.zeros_like(pasted))
    return pasted.reshape(b, k, height, width)


class DetectionPostprocess(nn.Module):
    """Boxes from the resized image back to input pixels (and masks pasted into the input image)."""

    def forward(self, detections: dict, sizes: dict, image: torch.Tensor = None):
        ratio = sizes["original"].to(torch.float32) / sizes["resized"].to(torch.float32)   # (B, 2): h, w
        rh, rw = ratio[:, 0, None], ratio[:, 1, None]
        boxes = detections["boxes"]
        boxes = torch.stack([boxes[..., 0] * rw, boxes[..., 1] * rh, boxes[..., 2] * rw, boxes[..., 3] * rh], -1)
        out = dict(detections)
        out["boxes"] = boxes
        if "masks" in detections and image is not None:
            h, w = image.shape[-2:]
            valid = torch.arange(boxes.shape[1], device=boxes.device)[None] < detections["count"][:, None]
            pasted = paste_masks(detections["masks"], boxes, h, w)
            out["masks"] = torch.where(valid[:, :, None, None], pasted, torch.zeros_like(pasted))
        return out


@register
class DetectionPostprocessBlock(Block):
    """Detector post-processing: boxes (and masks) back to input-image pixels.

    `detections` come from `roi_heads` (or `mask_head`) in resized-image coordinates; `sizes`
    from `detection_transform`. Masks are pasted into the input image, which `image` (the
    pipeline's image input) gives the size of; without masks `image` is not needed.
    """
    name: ClassVar[str] = "detection_postprocess"
    family: ClassVar[str] = "detection"
    inputs: ClassVar = {"detections": In("detections"), "sizes": In("image_sizes"),
                        "image": In("image", optional=True, doc="the input image, for pasting masks")}
    outputs: ClassVar = ("detections",)
    example: ClassVar = {"params": {}, "inputs": {"detections": detections_type(2, 5), "sizes": image_sizes_type(2)}}

    def infer(self, detections: PortType, sizes: PortType, image=None) -> dict[str, PortType]:
        fields = dict(detections.fields)
        if "masks" in fields:
            if image is None:
                raise InferError("pasting masks into the input image needs its size: connect the image input",
                                 port="image", code="E304", expected="image: <the pipeline's image input>",
                                 found="nothing")
            b, k = fields["boxes"].shape[:2]
            return {"detections": detections_type(b, k, detections.dtype, masks=(image.shape[2], image.shape[3]),
                                                   space="input", num_classes=detections.get("num_classes"))}
        return {"detections": detections.with_(meta={**dict(detections.meta), "space": "input"})}

    def param_count(self, **inputs) -> int:
        return 0

    def build(self, **inputs) -> nn.Module:
        return DetectionPostprocess()

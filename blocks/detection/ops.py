"""Batched, export-friendly detection ops shared by the two-stage and one-stage detectors.

torchvision's detectors post-process each image in a Python loop (`for boxes, scores in
zip(...)`), filter with boolean masks and call `batched_nms`, which picks an algorithm with
`if boxes.numel() > 4000` — a data-dependent branch. Under `torch.export` (and so the dynamo
ONNX exporter) a loop over a dynamic batch cannot be traced and the branch fails with a
data-dependent guard. The functions here do the same computation for the whole batch at
once with tensor ops only: candidates are flattened across images, filtered with
`nonzero` (a dynamic count, which ONNX expresses), suppressed with one `torchvision.ops.nms`
call where images and classes are kept apart by coordinate offsets, and written back into
fixed-size, per-image slots ([B, K] padded, with a count). The values equal torchvision's
per-image results.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
import torchvision
from torch import Tensor
from torchvision.ops.poolers import LevelMapper


def select_top(boxes: Tensor, scores: Tensor, keep: Tensor, groups: Tensor, iou: float, k: int) -> tuple[Tensor, Tensor]:
    """Per-image NMS (separately for each group id) of the candidates where `keep` is set,
    returning the indices of the `k` best survivors of each image and their count.

    boxes [B, N, 4] (xyxy), scores [B, N], keep [B, N] bool, groups [B, N] int64 (class or
    level; boxes of different groups never suppress each other). Returns idx [B, k] int64
    into N (0 in unused slots) in decreasing score order, and count [B] int64 (<= k).
    """
    b, n = scores.shape
    flat = torch.nonzero(keep.reshape(-1)).squeeze(1)                 # (M,) candidates of all images
    box = boxes.reshape(-1, 4)[flat]                                  # (M, 4)
    score = scores.reshape(-1)[flat]
    image = torch.div(flat, n, rounding_mode="floor")
    group = groups.reshape(-1)[flat]
    # shift each (image, group) into its own region, so one NMS call keeps them apart:
    # groups along x, images along y (smaller offsets than one combined id: fewer float32 ulps)
    every = boxes.reshape(-1)
    lo = every.amin(0)
    span = every.amax(0) - lo + 1
    shift = torch.stack([group, image, group, image], 1).to(box.dtype) * span
    survivors = torchvision.ops.nms(box - lo + shift, score, iou)    # (S,) by decreasing score
    flat, image = flat[survivors], image[survivors]
    return _pack(flat - image * n, image, b, k)


def _pack(index: Tensor, image: Tensor, b: int, k: int) -> tuple[Tensor, Tensor]:
    """Write a score-ordered list of (image, index) pairs into [B, k] slots: the r-th survivor
    of image i goes to slot (i, r) when r < k; the rest fall into one discarded slot."""
    member = (image[:, None] == torch.arange(b, device=image.device)[None]).to(torch.int64)   # (S, B)
    rank = (member.cumsum(0) * member).sum(1) - 1                     # position within its image
    slot = torch.where(rank < k, image * k + rank, torch.full_like(rank, b * k))
    out = torch.zeros(b * k + 1, dtype=torch.int64, device=index.device).index_put((slot,), index)
    count = torch.clamp(member.sum(0), max=k)
    return out[:-1].reshape(b, k), count


def gather_rows(x: Tensor, idx: Tensor) -> Tensor:
    """x [B, N, ...] gathered along N by idx [B, K] -> [B, K, ...]."""
    b, k = idx.shape
    flat = (idx + torch.arange(b, device=idx.device)[:, None] * x.shape[1]).reshape(-1)
    return x.reshape(-1, *x.shape[2:])[flat].reshape(b, k, *x.shape[2:])


def slot_mask(count: Tensor, k: int) -> Tensor:
    """[B, k] bool: True in the first count[b] slots of each row."""
    return torch.arange(k, device=count.device)[None] < count[:, None]


def clear_unused(x: Tensor, valid: Tensor, fill: float = 0) -> Tensor:
    """Set the slots past each image's count to `fill` (x [B, K, ...], valid [B, K])."""
    v = valid.reshape(*valid.shape, *([1] * (x.dim() - 2)))
    return torch.where(v, x, torch.full_like(x, fill))


def clip_boxes(boxes: Tensor, sizes: Tensor) -> Tensor:
    """Clip xyxy boxes [B, N, ..., 4] to each image's (height, width) in sizes [B, 2]."""
    shape = (sizes.shape[0],) + (1,) * (boxes.dim() - 2)
    h = sizes[:, 0].to(boxes.dtype).reshape(shape)
    w = sizes[:, 1].to(boxes.dtype).reshape(shape)
    zero = torch.zeros((), dtype=boxes.dtype, device=boxes.device)
    x1 = torch.minimum(torch.maximum(boxes[..., 0], zero), w)
    y1 = torch.minimum(torch.maximum(boxes[..., 1], zero), h)
    x2 = torch.minimum(torch.maximum(boxes[..., 2], zero), w)
    y2 = torch.minimum(torch.maximum(boxes[..., 3], zero), h)
    return torch.stack([x1, y1, x2, y2], -1)


def large_enough(boxes: Tensor, min_size: float) -> Tensor:
    """Boxes whose width and height are both at least `min_size` (torchvision's remove_small_boxes)."""
    return ((boxes[..., 2] - boxes[..., 0]) >= min_size) & ((boxes[..., 3] - boxes[..., 1]) >= min_size)


def grid_anchors(cell: Tensor, feature: Tensor, image_hw: Sequence) -> Tensor:
    """Anchors of one level, as torchvision's AnchorGenerator lays them out: (y, x, anchor)
    order, cell anchors shifted by the level's stride (image size // feature size).
    cell [A, 4], feature [B, C, h, w] -> [h * w * A, 4]."""
    h, w = feature.shape[-2:]
    stride_h, stride_w = image_hw[0] // h, image_hw[1] // w
    device = feature.device
    shift_x = torch.arange(0, w, dtype=torch.int32, device=device) * stride_w
    shift_y = torch.arange(0, h, dtype=torch.int32, device=device) * stride_h
    sy, sx = torch.meshgrid(shift_y, shift_x, indexing="ij")
    sx, sy = sx.reshape(-1), sy.reshape(-1)
    shifts = torch.stack((sx, sy, sx, sy), dim=1).to(cell.dtype)      # (h*w, 4)
    return (shifts.view(-1, 1, 4) + cell.view(1, -1, 4)).reshape(-1, 4)


def level_mapper(strides: Sequence[int], canonical_scale: int = 224, canonical_level: int = 4) -> LevelMapper:
    """torchvision's FPN level heuristic for pooling maps of the given strides (4, 8, 16, 32)."""
    k_min, k_max = round(math.log2(strides[0])), round(math.log2(strides[-1]))
    return LevelMapper(k_min, k_max, canonical_scale, canonical_level)


def multiscale_roi_align(maps: Sequence[Tensor], strides: Sequence[int], boxes: Tensor, output_size: int,
                         sampling_ratio: int, mapper: LevelMapper) -> Tensor:
    """RoIAlign of boxes [B, N, 4] from the FPN level each box maps to (torchvision's
    MultiScaleRoIAlign, on a fixed [B, N] box layout) -> [B * N, C, output_size, output_size]."""
    b, n = boxes.shape[:2]
    flat = boxes.reshape(-1, 4)
    image = torch.arange(b, device=boxes.device, dtype=boxes.dtype).repeat_interleave(n)
    rois = torch.cat([image[:, None], flat], 1)                        # (B*N, 5)
    return roi_align_levels(maps, strides, rois, output_size, sampling_ratio, mapper)


def roi_align_levels(maps: Sequence[Tensor], strides: Sequence[int], rois: Tensor, output_size: int,
                     sampling_ratio: int, mapper: LevelMapper) -> Tensor:
    """RoIAlign of rois [K, 5] (image index, x1, y1, x2, y2) from the FPN level each maps to
    -> [K, C, output_size, output_size] (torchvision's `_multiscale_roi_align`)."""
    if len(maps) == 1:
        return torchvision.ops.roi_align(maps[0], rois, output_size, 1.0 / strides[0], sampling_ratio, aligned=False)
    levels = mapper([rois[:, 1:]])
    out = torch.zeros((rois.shape[0], maps[0].shape[1], output_size, output_size), dtype=maps[0].dtype,
                      device=maps[0].device)
    for level, (fmap, stride) in enumerate(zip(maps, strides)):
        idx = torch.nonzero(levels == level).squeeze(1)
        pooled = torchvision.ops.roi_align(fmap, rois[idx], output_size, 1.0 / stride, sampling_ratio, aligned=False)
        out = out.index_put((idx,), pooled.to(out.dtype))
    return out

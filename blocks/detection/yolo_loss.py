"""The YOLOv8 detection loss: Ultralytics' `v8DetectionLoss`, written here in torch ops.

`yolo_head` records it in a training step (`composer.block_losses`); nothing here runs in
eval mode or in an export. For each image the targets (boxes x1 y1 x2 y2 in letterboxed
pixels, labels 0..nc-1) are assigned to anchor points by the task-aligned assigner
(`TaskAlignedAssigner`: anchors inside a box, the `topk` 10 best by score^alpha * CIoU^beta
with alpha 0.5, beta 6; an anchor claimed by several boxes goes to the one it overlaps most;
soft class targets scaled by the alignment), then:

- `loss_box`: 1 - CIoU of the assigned anchors' decoded boxes, weighted by their target score;
- `loss_cls`: binary cross-entropy of every anchor's class logits with the soft targets;
- `loss_dfl`: distribution focal loss of the reg_max-bin side distributions (with reg_max 1,
  Ultralytics' DFL-free L1 of the side distances, normalised by the image size, instead);

each summed and divided by the sum of the target scores (at least 1), times its gain (box 7.5,
cls 0.5, dfl 1.5) and times the batch size. That is exactly what `v8DetectionLoss.__call__`
returns (`loss * batch_size`, the three parts; its trainer backpropagates their sum), so the
recorded parts equal Ultralytics' and their sum is Ultralytics' training loss.

Why our own copy: Ultralytics is AGPL and a reference only (tests); its loss also wants its
batch dict (normalised xywh targets with image indices) and the model's `args`. The code
follows Ultralytics 8.4's `ultralytics/utils/loss.py` and `tal.py` step by step, including
its details (candidate boxes narrower than the middle stride widened to it, CIoU's alpha
without gradient, DFL targets clamped to reg_max - 1.01); tests/blocks/detection/
test_yolo_loss.py checks the parts and the gradients against it.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

EPS_ASSIGN = 1e-9        # TaskAlignedAssigner's eps
EPS_IOU = 1e-7           # bbox_iou's eps


def xyxy_to_xywh(x: Tensor) -> Tensor:
    """Corner boxes [..., 4] to centre-size (Ultralytics' xyxy2xywh)."""
    x1, y1, x2, y2 = x.unbind(-1)
    return torch.stack(((x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1), -1)


def xywh_to_xyxy(x: Tensor) -> Tensor:
    """Centre-size boxes [..., 4] to corners (Ultralytics' xywh2xyxy)."""
    xy, wh = x[..., :2], x[..., 2:] / 2
    return torch.cat((xy - wh, xy + wh), -1)


def ciou(box1: Tensor, box2: Tensor, eps: float = EPS_IOU) -> Tensor:
    """Complete IoU of corner boxes [..., 4] pairwise along the leading dims -> [..., 1]
    (Ultralytics' bbox_iou(xywh=False, CIoU=True): the aspect term's alpha carries no gradient)."""
    b1_x1, b1_y1, b1_x2, b1_y2 = box1.chunk(4, -1)
    b2_x1, b2_y1, b2_x2, b2_y2 = box2.chunk(4, -1)
    w1, h1 = b1_x2 - b1_x1, b1_y2 - b1_y1 + eps
    w2, h2 = b2_x2 - b2_x1, b2_y2 - b2_y1 + eps
    inter = (b1_x2.minimum(b2_x2) - b1_x1.maximum(b2_x1)).clamp(0) * \
        (b1_y2.minimum(b2_y2) - b1_y1.maximum(b2_y1)).clamp(0)
    union = w1 * h1 + w2 * h2 - inter + eps
    iou = inter / union
    cw = b1_x2.maximum(b2_x2) - b1_x1.minimum(b2_x1)             # enclosing box
    ch = b1_y2.maximum(b2_y2) - b1_y1.minimum(b2_y1)
    c2 = cw.pow(2) + ch.pow(2) + eps                             # its diagonal squared
    rho2 = ((b2_x1 + b2_x2 - b1_x1 - b1_x2).pow(2) + (b2_y1 + b2_y2 - b1_y1 - b1_y2).pow(2)) / 4   # centre distance²
    v = (4 / math.pi ** 2) * ((w2 / h2).atan() - (w1 / h1).atan()).pow(2)
    with torch.no_grad():
        alpha = v / (1 - iou + v + eps)
    return iou - (rho2 / c2 + v * alpha)


def padded_targets(targets: Sequence[dict[str, Tensor]], num_classes: int, device: torch.device
                   ) -> tuple[Tensor, Tensor, Tensor]:
    """Per-image targets -> labels (B, M) int64, boxes (B, M, 4) and a mask (B, M) of the real
    ones, M the most boxes of one image (Ultralytics' `preprocess`, on xyxy pixel boxes)."""
    b = len(targets)
    m = max((len(t["labels"]) for t in targets), default=0)
    labels = torch.zeros((b, m), dtype=torch.int64, device=device)
    boxes = torch.zeros((b, m, 4), dtype=torch.float32, device=device)
    valid = torch.zeros((b, m), dtype=torch.bool, device=device)
    for i, t in enumerate(targets):
        n = len(t["labels"])
        lab = t["labels"].to(device=device, dtype=torch.int64)
        if n and not bool(((lab >= 0) & (lab < num_classes)).all()):
            bad = sorted({int(v) for v in lab if not 0 <= int(v) < num_classes})
            raise ValueError(f"image {i} of the training step has class ids {bad}, and the YOLO head predicts "
                             f"classes 0..{num_classes - 1} (the data's categories in id order)")
        labels[i, :n] = lab
        boxes[i, :n] = t["boxes"].to(device=device, dtype=torch.float32).reshape(-1, 4)
        valid[i, :n] = True
    return labels, boxes, valid


class TaskAlignedAssigner:
    """Ultralytics' TaskAlignedAssigner (v8 settings: topk 10, alpha 0.5, beta 6.0): which target,
    if any, each anchor learns, and its soft class score."""

    def __init__(self, num_classes: int, strides: Sequence[int], topk: int = 10, alpha: float = 0.5,
                 beta: float = 6.0, eps: float = EPS_ASSIGN):
        self.nc, self.topk, self.alpha, self.beta, self.eps = num_classes, topk, alpha, beta, eps
        self.min_side = strides[1] if len(strides) > 1 else strides[0]   # candidate boxes are at least this wide

    @torch.no_grad()
    def __call__(self, scores: Tensor, boxes: Tensor, points: Tensor, gt_labels: Tensor, gt_boxes: Tensor,
                 valid: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """scores (B, N, nc) probabilities, boxes (B, N, 4) xyxy pixels, points (N, 2) anchor centres
        in pixels; gt_labels (B, M), gt_boxes (B, M, 4), valid (B, M) -> target boxes (B, N, 4),
        target scores (B, N, nc) and the foreground mask (B, N)."""
        b, n, _ = scores.shape
        if gt_boxes.shape[1] == 0:
            return torch.zeros_like(boxes), torch.zeros_like(scores), torch.zeros((b, n), dtype=torch.bool,
                                                                                  device=scores.device)
        inside = self.candidates(points, gt_boxes, valid)                              # (B, M, N)
        align, overlaps = self.metrics(scores, boxes, gt_labels, gt_boxes, inside & valid[..., None])
        k = min(self.topk, n)
        top = align.topk(k, dim=-1).indices                                            # (B, M, k)
        best_k = torch.zeros_like(inside).scatter_(-1, top, True)
        positive = best_k & inside & valid[..., None]                                  # (B, M, N)
        # an anchor several targets claim goes to the one it overlaps most
        claimed = positive.sum(1, keepdim=True) > 1                                    # (B, 1, N)
        nearest = torch.zeros_like(positive).scatter_(1, overlaps.argmax(1, keepdim=True), True)
        positive = torch.where(claimed, nearest, positive)
        fg = positive.any(1)                                                           # (B, N)
        index = positive.to(torch.int8).argmax(1)                                      # (B, N) its target
        target_labels = gt_labels.gather(1, index)                                     # (B, N)
        target_boxes = gt_boxes.gather(1, index[..., None].expand(-1, -1, 4))          # (B, N, 4)
        target_scores = F.one_hot(target_labels, self.nc) * fg[..., None]              # (B, N, nc)
        # soft scores: each target's alignment rescaled so its best anchor gets its best IoU
        align = align * positive
        overlaps = overlaps * positive
        best_align = align.amax(-1, keepdim=True)                                      # (B, M, 1)
        best_overlap = overlaps.amax(-1, keepdim=True)
        scale = (align * best_overlap / (best_align + self.eps)).amax(1)               # (B, N)
        return target_boxes, target_scores * scale[..., None], fg

    def candidates(self, points: Tensor, gt_boxes: Tensor, valid: Tensor) -> Tensor:
        """(B, M, N): anchor centres strictly inside each target box, boxes narrower (or lower) than
        the middle stride widened to it about their centre (`select_candidates_in_gts`)."""
        xywh = xyxy_to_xywh(gt_boxes)
        small = (xywh[..., 2:] < self.min_side) & valid[..., None]
        wh = torch.where(small, torch.tensor(float(self.min_side), dtype=xywh.dtype, device=xywh.device),
                         xywh[..., 2:])
        boxes = xywh_to_xyxy(torch.cat((xywh[..., :2], wh), -1))
        lt, rb = boxes[:, :, None, :2], boxes[:, :, None, 2:]                           # (B, M, 1, 2)
        x, y = points[:, 0], points[:, 1]
        return ((x - lt[..., 0] > self.eps) & (y - lt[..., 1] > self.eps)
                & (rb[..., 0] - x > self.eps) & (rb[..., 1] - y > self.eps))

    def metrics(self, scores: Tensor, boxes: Tensor, gt_labels: Tensor, gt_boxes: Tensor, pairs: Tensor
                ) -> tuple[Tensor, Tensor]:
        """Alignment score^alpha * CIoU^beta and the CIoU (clamped at 0) of each candidate pair,
        (B, M, N) each, zero elsewhere (`get_box_metrics`)."""
        ib, ig, ia = pairs.nonzero(as_tuple=True)
        score = scores[ib, ia, gt_labels[ib, ig]]
        iou = ciou(gt_boxes[ib, ig], boxes[ib, ia]).squeeze(-1).clamp(0)
        overlaps = torch.zeros(pairs.shape, dtype=boxes.dtype, device=boxes.device)
        align = torch.zeros(pairs.shape, dtype=scores.dtype, device=scores.device)
        overlaps[ib, ig, ia] = iou
        align[ib, ig, ia] = score.pow(self.alpha) * iou.pow(self.beta)
        return align, overlaps


def dfl(pred: Tensor, target: Tensor, reg_max: int) -> Tensor:
    """Distribution focal loss: pred (P, 4, reg_max) logits, target (P, 4) distances in bins ->
    (P, 1), the cross-entropy with the two bins around each target, linearly weighted, averaged
    over the four sides (Ultralytics' DFLoss)."""
    target = target.clamp(0, reg_max - 1 - 0.01)
    left = target.long()
    w_left = left + 1 - target
    logp = F.log_softmax(pred, -1)                                                     # (P, 4, reg_max)
    ce = logp.gather(-1, left[..., None])[..., 0] * w_left + logp.gather(-1, left[..., None] + 1)[..., 0] * (1 - w_left)
    return -ce.mean(-1, keepdim=True)


class YoloLoss:
    """Ultralytics' v8DetectionLoss over a YOLO head's raw outputs (see the module docstring).

    A plain object, not a module: the head's module tree and state dict stay Ultralytics'."""

    names = ("loss_box", "loss_cls", "loss_dfl")

    def __init__(self, num_classes: int, reg_max: int, strides: Sequence[int], topk: int = 10, alpha: float = 0.5,
                 beta: float = 6.0, box: float = 7.5, cls: float = 0.5, dfl: float = 1.5):
        self.nc, self.reg_max, self.strides = num_classes, reg_max, tuple(strides)
        self.assigner = TaskAlignedAssigner(num_classes, strides, topk, alpha, beta)
        self.gains = (box, cls, dfl)

    def decode(self, dist: Tensor, points: Tensor) -> Tensor:
        """(B, N, 4 * reg_max) side distributions -> (B, N, 4) xyxy boxes in grid units (`bbox_decode`)."""
        b, n, _ = dist.shape
        if self.reg_max > 1:
            bins = torch.arange(self.reg_max, dtype=dist.dtype, device=dist.device)
            dist = dist.view(b, n, 4, self.reg_max).softmax(3).matmul(bins)            # (B, N, 4) expected side
        lt, rb = dist.chunk(2, -1)
        return torch.cat((points - lt, points + rb), -1)

    def __call__(self, box: Tensor, cls: Tensor, points: Tensor, strides: Tensor,
                 targets: Sequence[dict[str, Tensor]], image_size: tuple[int, int]) -> dict[str, Tensor]:
        """box (B, 4 * reg_max, N) and cls (B, nc, N): the head's raw outputs; points (2, N) anchor
        centres in grid units and strides (1, N), as `YoloHead.anchors`; targets per image in the
        pixels of the (padded) network input of size image_size (h, w) -> the three losses."""
        dist = box.float().permute(0, 2, 1)                                            # (B, N, 4 * reg_max)
        logits = cls.float().permute(0, 2, 1)                                          # (B, N, nc)
        points, strides = points.float().t(), strides.float().t()                      # (N, 2), (N, 1)
        batch = logits.shape[0]
        gt_labels, gt_boxes, valid = padded_targets(targets, self.nc, logits.device)
        boxes = self.decode(dist, points)                                              # (B, N, 4) grid units
        target_boxes, target_scores, fg = self.assigner(
            logits.detach().sigmoid(), boxes.detach() * strides, points * strides, gt_labels, gt_boxes, valid)
        total = target_scores.sum().clamp(min=1)
        loss_cls = F.binary_cross_entropy_with_logits(logits, target_scores, reduction="none").sum() / total
        loss_box, loss_dist = self.box_losses(dist, boxes, points, target_boxes / strides, target_scores, total, fg,
                                              image_size, strides)
        g_box, g_cls, g_dfl = self.gains
        return {"loss_box": loss_box * g_box * batch, "loss_cls": loss_cls * g_cls * batch,
                "loss_dfl": loss_dist * g_dfl * batch}

    def box_losses(self, dist: Tensor, boxes: Tensor, points: Tensor, target_boxes: Tensor, target_scores: Tensor,
                   total: Tensor, fg: Tensor, image_size: tuple[int, int], strides: Tensor) -> tuple[Tensor, Tensor]:
        """CIoU and DFL (or L1) losses over the foreground anchors, boxes in grid units (`BboxLoss`)."""
        fg = fg.nonzero(as_tuple=True)
        weight = target_scores[fg].sum(-1, keepdim=True)                                # (P, 1)
        iou = ciou(boxes[fg], target_boxes[fg])
        loss_box = ((1.0 - iou) * weight).sum() / total
        x1y1, x2y2 = target_boxes.chunk(2, -1)
        sides = torch.cat((points - x1y1, x2y2 - points), -1)                          # (B, N, 4) l, t, r, b
        if self.reg_max > 1:
            sides = sides.clamp(0, self.reg_max - 1 - 0.01)
            pred = dist[fg].view(-1, 4, self.reg_max)
            loss_dist = (dfl(pred, sides[fg], self.reg_max) * weight).sum() / total
        else:                      # DFL-free: L1 of the distances in pixels over the image size
            h, w = image_size
            norm = torch.tensor([w, h, w, h], dtype=dist.dtype, device=dist.device)
            l1 = F.l1_loss((dist * strides / norm)[fg], (sides * strides / norm)[fg], reduction="none")
            loss_dist = (l1.mean(-1, keepdim=True) * weight).sum() / total
        return loss_box, loss_dist

"""What the two-stage detector blocks do in a training step: targets, sampling and losses.

Inside `composer.block_losses.collecting(targets)` and in training mode, `detection_transform`
maps the targets into the resized image (`resize_targets`, torchvision's `resize_boxes` and
mask resize) and leaves them in the step's scratch; `rpn` matches anchors to them and records
torchvision's RPN losses; `roi_heads` samples proposals and records `fastrcnn_loss`, and
leaves its positive samples for `mask_head`, which records `maskrcnn_loss`. The blocks'
outputs are computed as in eval mode whatever happens here.

The matching, sampling and loss code is torchvision's own: `AnchorSampler` and
`ProposalSampler` are small holders of torchvision's `Matcher`,
`BalancedPositiveNegativeSampler` and `BoxCoder` that borrow the methods of
`RegionProposalNetwork` and `RoIHeads` which read only those (assigning targets, sampling,
computing the losses), so the losses equal torchvision's for the same random state. They are
plain objects, not modules: the blocks' module trees and state dicts stay torchvision's.
"""

from __future__ import annotations

from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor
from torchvision.models.detection import _utils as det_utils
from torchvision.models.detection.roi_heads import RoIHeads as _TorchvisionRoIHeads
from torchvision.models.detection.rpn import RegionProposalNetwork as _TorchvisionRPN
from torchvision.models.detection.transform import resize_boxes
from torchvision.ops import boxes as box_ops

from composer.block_losses import BlockLosses

RESIZED_TARGETS = "detection.resized_targets"   # scratch: the targets in the resized image (transform, letterbox)
POSITIVES = "detection.roi_positives"           # scratch: roi_heads' positive samples (proposals, matched targets)


def resize_targets(targets: Sequence[dict[str, Tensor]], original: tuple[int, int], resized: tuple[int, int],
                   device: torch.device) -> list[dict[str, Tensor]]:
    """Targets from input pixels to the resized image, as torchvision's GeneralizedRCNNTransform
    resizes them: boxes scaled by new/old size per axis, masks nearest-resized."""
    out = []
    for t in _on(targets, device):
        r = dict(t)
        r["boxes"] = resize_boxes(t["boxes"], list(original), list(resized))
        if "masks" in t:
            r["masks"] = F.interpolate(t["masks"][:, None].float(), size=tuple(resized))[:, 0].byte()
        out.append(r)
    return out


def _on(targets: Sequence[dict[str, Tensor]], device: torch.device) -> list[dict[str, Tensor]]:
    """The targets as tensors on `device`: boxes float32 [N, 4], labels int64 [N], masks uint8."""
    out = []
    for t in targets:
        r = dict(t)
        r["boxes"] = torch.as_tensor(t["boxes"], dtype=torch.float32, device=device).reshape(-1, 4)
        r["labels"] = torch.as_tensor(t["labels"], dtype=torch.int64, device=device).reshape(-1)
        if "masks" in t:
            r["masks"] = torch.as_tensor(t["masks"], dtype=torch.uint8, device=device)
        out.append(r)
    return out


def step_targets(step: BlockLosses, batch: int, device: torch.device) -> list[dict[str, Tensor]]:
    """The step's targets in the coordinates the detector heads work in: those
    `detection_transform` resized, or (a pipeline without one) the targets as given."""
    targets = step.scratch.get(RESIZED_TARGETS)
    if targets is None:
        targets = _on(step.targets, device)
    if len(targets) != batch:
        raise ValueError(f"the training step has targets for {len(targets)} images and a batch of {batch}")
    return targets


def flat_rois(boxes: Sequence[Tensor]) -> Tensor:
    """Per-image boxes [N_i, 4] -> rois [sum N_i, 5] (image index, x1, y1, x2, y2)."""
    if not boxes:
        return torch.zeros((0, 5))
    image = torch.cat([torch.full((len(b), 1), i, dtype=b.dtype, device=b.device) for i, b in enumerate(boxes)])
    return torch.cat([image, torch.cat(list(boxes))], 1)


class AnchorSampler:
    """torchvision's RPN training: anchors matched to targets (IoU, low-quality matches kept),
    a balanced sample per image, objectness BCE and smooth-L1 (beta 1/9) box loss."""

    assign_targets_to_anchors = _TorchvisionRPN.assign_targets_to_anchors
    compute_loss = _TorchvisionRPN.compute_loss

    def __init__(self, fg_iou_thresh: float, bg_iou_thresh: float, batch_size_per_image: int,
                 positive_fraction: float):
        self.box_similarity = box_ops.box_iou
        self.proposal_matcher = det_utils.Matcher(fg_iou_thresh, bg_iou_thresh, allow_low_quality_matches=True)
        self.fg_bg_sampler = det_utils.BalancedPositiveNegativeSampler(batch_size_per_image, positive_fraction)

    def losses(self, objectness: Tensor, deltas: Tensor, anchors: Tensor, targets: list[dict[str, Tensor]],
               coder: det_utils.BoxCoder) -> tuple[Tensor, Tensor]:
        """objectness [B, S] logits, deltas [B, S, 4], anchors [S, 4] (every image's) -> (loss_objectness,
        loss_rpn_box_reg) as `RegionProposalNetwork.forward` computes them."""
        per_image = [anchors] * objectness.shape[0]
        labels, matched = self.assign_targets_to_anchors(per_image, targets)
        regression_targets = coder.encode(matched, per_image)
        return self.compute_loss(objectness.reshape(-1, 1), deltas.reshape(-1, 4), labels, regression_targets)


class ProposalSampler:
    """torchvision's RoI-head training samples: target boxes appended to the proposals, matched
    (IoU, no low-quality matches), a balanced sample per image, regression targets encoded."""

    select_training_samples = _TorchvisionRoIHeads.select_training_samples
    add_gt_proposals = _TorchvisionRoIHeads.add_gt_proposals
    assign_targets_to_proposals = _TorchvisionRoIHeads.assign_targets_to_proposals
    subsample = _TorchvisionRoIHeads.subsample

    def __init__(self, fg_iou_thresh: float, bg_iou_thresh: float, batch_size_per_image: int,
                 positive_fraction: float, box_coder: det_utils.BoxCoder):
        self.proposal_matcher = det_utils.Matcher(fg_iou_thresh, bg_iou_thresh, allow_low_quality_matches=False)
        self.fg_bg_sampler = det_utils.BalancedPositiveNegativeSampler(batch_size_per_image, positive_fraction)
        self.box_coder = box_coder

    def check_targets(self, targets: Optional[list[dict[str, Tensor]]]) -> None:
        if targets is None or not all("boxes" in t and "labels" in t for t in targets):
            raise ValueError("every image's target needs `boxes` and `labels`")

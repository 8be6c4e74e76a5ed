"""The loss of each output, from the `train.loss` section and the plan's target needs.

Each written loss is one function of torch (`F.cross_entropy`, `F.binary_cross_entropy_with_logits`,
`F.mse_loss`, `F.l1_loss`, `F.huber_loss`); `blocks` is the sum of what the pipeline's own
blocks recorded in the step (a detector's RPN and box-head losses, composer.block_losses).
The total is the weighted sum over outputs plus the `regularize` penalties.
"""

from __future__ import annotations

from typing import Callable, Mapping, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .config import BCE, L1, MSE, BlockLosses, CrossEntropy, Huber, Regularize
from .plan import Plan

LossFn = Callable[[Tensor, Tensor], Tensor]


def _cross_entropy(cfg: CrossEntropy) -> LossFn:
    class_weights = torch.tensor(cfg.class_weights, dtype=torch.float32) if cfg.class_weights else None

    def loss(out: Tensor, target: Tensor) -> Tensor:
        c = out.shape[-1]
        weight = class_weights.to(out.device) if class_weights is not None else None
        flat = target.reshape(-1)
        if not bool((flat != cfg.ignore_index).any()):   # every step padding: nothing to learn, not NaN
            return out.sum() * 0.0
        # (B, *, C) -> (N, C): classes are the last dim of every class-score output
        return F.cross_entropy(out.reshape(-1, c).float(), flat, weight=weight, ignore_index=cfg.ignore_index,
                               label_smoothing=cfg.label_smoothing)
    return loss


def _bce(cfg: BCE) -> LossFn:
    def loss(out: Tensor, target: Tensor) -> Tensor:
        pw = torch.tensor(cfg.pos_weight, dtype=torch.float32, device=out.device) if cfg.pos_weight else None
        return F.binary_cross_entropy_with_logits(out.float(), target.reshape(out.shape).float(), pos_weight=pw)
    return loss


def _elementwise(fn) -> Callable:
    def make(cfg) -> LossFn:
        def loss(out: Tensor, target: Tensor) -> Tensor:
            extra = {"delta": cfg.delta} if isinstance(cfg, Huber) else {}
            return fn(out.float(), target.reshape(out.shape).float(), **extra)
        return loss
    return make


_MAKERS = {CrossEntropy: _cross_entropy, BCE: _bce, MSE: _elementwise(F.mse_loss), L1: _elementwise(F.l1_loss),
           Huber: _elementwise(F.huber_loss)}


class Objective:
    """The training objective of a plan: per-output losses, block losses and penalties."""

    def __init__(self, plan: Plan):
        self.plan = plan
        self.fns: dict[str, LossFn] = {}
        self.block: Optional[BlockLosses] = None
        for output, cfg in plan.losses.items():
            if isinstance(cfg, BlockLosses):
                self.block = cfg
            else:
                self.fns[output] = _MAKERS[type(cfg)](cfg)
        self.weights = {o: cfg.weight for o, cfg in plan.losses.items()}
        self.regularize: Regularize = plan.spec.regularize

    def parts(self, outputs: Mapping[str, Tensor], targets: Mapping[str, object],
              recorded: Optional[Mapping[str, Tensor]] = None) -> dict[str, Tensor]:
        """Each output's loss (unweighted), and each recorded block loss by its name."""
        parts = {o: fn(outputs[o], targets[o]) for o, fn in self.fns.items()}
        if self.block is not None and recorded:
            for name, value in recorded.items():
                parts[name] = value * self.block.weights.get(name, 1.0)
        return parts

    def total(self, parts: Mapping[str, Tensor], model: nn.Module) -> Tensor:
        block_w = self.block.weight if self.block is not None else 1.0
        total = sum((self.weights[o] * v for o, v in parts.items() if o in self.fns),
                    start=torch.zeros((), device=next(iter(parts.values())).device if parts else None))
        total = total + sum((block_w * v for n, v in parts.items() if n not in self.fns), start=torch.zeros_like(total))
        r = self.regularize
        if r.l1 or r.l2:
            weights = [p for p in model.parameters() if p.requires_grad and p.ndim >= 2]
            if r.l1:
                total = total + r.l1 * sum(p.abs().sum() for p in weights)
            if r.l2:
                total = total + r.l2 * sum(p.pow(2).sum() for p in weights)
        return total

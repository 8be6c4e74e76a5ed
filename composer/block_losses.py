"""Losses that blocks define themselves (a detector's RPN and box-head losses), recorded on the side.

A block whose training objective is part of its own computation (anchor matching, proposal
sampling) cannot express it as a loss on one of the pipeline's outputs, and its outputs must
not change type between train and eval mode. So a training step opens a context with the
per-image targets; the modules read them, and record their losses into it:

    with collecting(targets) as step:      # targets: one dict per image, input pixels
        outputs = model(image=x)           # model.train(): rpn, roi_heads record their losses
    total = sum(step.losses.values())

Modules look the context up with `active()` and act only when it is not None and they are
training, so inference, export and every call outside a training step are unchanged.
"""

from __future__ import annotations

from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any, Iterator, Optional, Sequence

from torch import Tensor

__all__ = ["BlockLosses", "active", "collecting"]


@dataclass
class BlockLosses:
    """One training step's targets, and the losses the modules record in it.

    `targets`: per image, in the pipeline input's pixel coordinates: `boxes` float32 [N, 4]
    x1 y1 x2 y2, `labels` int64 [N] (R-CNN heads: 1..num_classes-1, 0 is the background; a
    YOLO head: 0..num_classes-1), optionally `masks` uint8 [N, H, W]. `losses`: name -> scalar
    tensor. `scratch`: what one module hands to a later one in the same forward (the
    transform's or letterbox's resized targets, the RoI head's sampled positives)."""

    targets: list[dict[str, Tensor]]
    losses: dict[str, Tensor] = field(default_factory=dict)
    scratch: dict[str, Any] = field(default_factory=dict)

    def add(self, name: str, value: Tensor) -> None:
        """Record a loss; a name recorded twice in one step (two heads of one kind) is summed."""
        self.losses[name] = self.losses[name] + value if name in self.losses else value


_ACTIVE: ContextVar[Optional[BlockLosses]] = ContextVar("composer_block_losses", default=None)


@contextmanager
def collecting(targets: Sequence[dict[str, Tensor]]) -> Iterator[BlockLosses]:
    """A training step's context: modules called inside it (in training mode) see the targets
    and record their losses into the yielded `BlockLosses`."""
    step = BlockLosses(list(targets))
    token = _ACTIVE.set(step)
    try:
        yield step
    finally:
        _ACTIVE.reset(token)


def active() -> Optional[BlockLosses]:
    """The current training step's context; None outside `collecting` (inference, export)."""
    return _ACTIVE.get()

"""Helpers shared by the vision block tests: parameter counts, seeded random weights for torchvision
references, builds on the meta device, port shapes evaluated at sizes, and a seeded image batch.
Shared fixtures (one torch thread, the 64x64 image batch) are in this folder's conftest.py."""

from __future__ import annotations

import torch
from torch import nn

from composer.dims import evaluate
from composer.types import PortType


def n_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def randomize(module: nn.Module, seed: int = 0, std: float = 0.2) -> nn.Module:
    """Random weights everywhere (normal, times `std`) and norm running variances in [0.5, 1.5), so a
    wrong eps or layout shows, and so does a head that torchvision zero-initialises; in eval mode."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in module.state_dict().items():
            if t.is_floating_point():
                t.copy_(torch.rand(t.shape, generator=g) + 0.5 if name.endswith("running_var")
                        else torch.randn(t.shape, generator=g) * std)
    return module.eval()


def meta_build(block, x: PortType) -> nn.Module:
    """Our module without initialising weights (on the meta device): for counting parameters, or for
    loading a state dict with assign=True."""
    with torch.device("meta"):
        return block.build(x)


def shape_of(t: PortType, env: dict[str, int]) -> tuple[int, ...]:
    """The port type's shape evaluated at the given sizes."""
    return tuple(evaluate(d, env) for d in t.shape)


def image_batch(size: int = 64, batch: int = 2) -> torch.Tensor:
    """A random (batch, 3, size, size) image batch, always drawn from seed 1."""
    return torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(1))

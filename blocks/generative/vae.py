"""Variational autoencoder blocks: `reparameterize`, the sampling step between an encoder's Gaussian
(mean and log-variance) and the decoder."""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import nn

from composer.block import Block, In
from composer.registry import register
from composer.types import PortType, expect_float, expect_rank, unify_dtypes, unify_shapes


class Reparameterization(nn.Module):
    """z = mu + exp(logvar / 2) * eps with eps ~ N(0, I) in training mode; z = mu in eval mode.

    The draw is differentiable in mu and logvar (the reparameterization trick). The eval-mode
    value is the distribution's mean, so evaluation and the exported graph are deterministic."""

    def forward(self, mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
        if self.training:
            return mu + torch.exp(0.5 * logvar) * torch.randn_like(mu)      # (B, Z)
        return mu.clone()                                                    # its own tensor, not an alias of mu


@register
class Reparameterize(Block):
    """Sample a latent code z ~ N(mu, exp(logvar)) by the reparameterization trick.

    `mu` and `logvar` are the encoder's mean and log-variance, [B, Z] (or [B, Z, H, W]), of the
    same shape. In training mode z = mu + exp(0.5 * logvar) * eps with eps drawn from N(0, I) at
    every call; in eval mode (and in the exported ONNX) z is the mean mu. The output is a `latent`
    of the same shape in both modes; a decoder given it (a `decoder` part) samples new data from
    z ~ N(0, I).
    """
    name: ClassVar[str] = "reparameterize"
    family: ClassVar[str] = "generative"
    inputs: ClassVar = {"mu": In("vector", "latent", "feature_map", doc="[B, Z], the mean"),
                        "logvar": In("vector", "latent", "feature_map", doc="[B, Z], the log-variance")}

    def infer(self, mu: PortType, logvar: PortType) -> PortType:
        for port, t in (("mu", mu), ("logvar", logvar)):
            expect_rank(t, (2, 4), port, " [B, Z] or [B, Z, H, W]")
            expect_float(t, port)
        shape = unify_shapes([("mu", mu), ("logvar", logvar)])
        dtype = unify_dtypes([("mu", mu), ("logvar", logvar)])
        return PortType("latent", shape, dtype)

    def param_count(self, **inputs) -> int:
        return 0

    def build(self, mu: PortType, logvar: PortType) -> nn.Module:
        return Reparameterization()

"""Fully connected layers: dense (one linear layer) and mlp (a stack of them)."""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field
from torch import nn

from composer.block import Block, In
from composer.params import Activation, PosInt, Prob
from composer.registry import register
from composer.types import PortType, expect_float, expect_rank, expect_static

from .activations import make_activation
from .norm import with_spectral_norm

FEATURE_KINDS = ("vector", "sequence", "logits", "probs", "latent")


def _out(x: PortType, features: int) -> PortType:
    """The output type: the input's with `features` last (a latent code's features are a vector)."""
    return x.with_(kind="vector" if x.kind == "latent" else x.kind, shape=x.shape[:-1] + (features,))


def _features(x: PortType) -> int:
    expect_rank(x, (2, 3, 4, 5), "x")
    expect_float(x, "x")
    return expect_static(x.shape[-1], "x", "the feature size (last dim) of a dense layer's input")


@register
class Dense(Block):
    """Linear layer on the last axis: y = x W^T + b. Input features are inferred.

    `spectral_norm: true` divides W by its largest singular value (state-dict keys
    `parametrizations.weight.original`, `._u`, `._v` instead of `weight`)."""
    name: ClassVar[str] = "dense"
    family: ClassVar[str] = "core"
    inputs: ClassVar = {"x": In(*FEATURE_KINDS, doc="[..., C_in]")}
    out_features: PosInt
    bias: bool = True
    spectral_norm: bool = False

    def infer(self, x: PortType) -> PortType:
        _features(x)
        return _out(x, self.out_features)

    def param_count(self, x: PortType) -> int:
        return _features(x) * self.out_features + (self.out_features if self.bias else 0)

    def build(self, x: PortType) -> nn.Module:
        return with_spectral_norm(nn.Linear(x.shape[-1], self.out_features, bias=self.bias), self.spectral_norm)


@register
class MLP(Block):
    """A stack of dense layers with an activation (and optional dropout) between them."""
    name: ClassVar[str] = "mlp"
    family: ClassVar[str] = "core"
    inputs: ClassVar = {"x": In(*FEATURE_KINDS, doc="[..., C_in]")}
    hidden: list[PosInt] = Field(min_length=1)
    out_features: PosInt
    activation: Activation = "relu"
    dropout: Prob = 0.0
    bias: bool = True

    def _sizes(self, x: PortType) -> list[int]:
        return [_features(x), *self.hidden, self.out_features]

    def infer(self, x: PortType) -> PortType:
        _features(x)
        return _out(x, self.out_features)

    def param_count(self, x: PortType) -> int:
        s = self._sizes(x)
        return sum(a * b + (b if self.bias else 0) for a, b in zip(s, s[1:]))

    def build(self, x: PortType) -> nn.Module:
        sizes = self._sizes(x)
        layers: list[nn.Module] = []
        for i, (a, b) in enumerate(zip(sizes, sizes[1:])):
            layers.append(nn.Linear(a, b, bias=self.bias))
            if i < len(sizes) - 2:
                layers.append(make_activation(self.activation))
                if self.dropout:
                    layers.append(nn.Dropout(self.dropout))
        return nn.Sequential(*layers)

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

FEATURE_KINDS = ("vector", "sequence", "logits", "probs")


def _features(x: PortType) -> int:
    expect_rank(x, (2, 3, 4, 5), "x")
    expect_float(x, "x")
    return expect_static(x.shape[-1], "x", "the feature size (last dim) of a dense layer's input")


@register
class Dense(Block):
    """Linear layer on the last axis: y = x W^T + b. Input features are inferred."""
    name: ClassVar[str] = "dense"
    family: ClassVar[str] = "core"
    inputs: ClassVar = {"x": In(*FEATURE_KINDS, doc="[..., C_in]")}
    out_features: PosInt
    bias: bool = True

    def infer(self, x: PortType) -> PortType:
        _features(x)
        return x.with_(shape=x.shape[:-1] + (self.out_features,))

    def param_count(self, x: PortType) -> int:
        return _features(x) * self.out_features + (self.out_features if self.bias else 0)

    def build(self, x: PortType) -> nn.Module:
        return nn.Linear(x.shape[-1], self.out_features, bias=self.bias)


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
        return x.with_(shape=x.shape[:-1] + (self.out_features,))

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

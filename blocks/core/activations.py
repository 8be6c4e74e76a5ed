"""Element-wise activations (relu, leaky_relu, elu, gelu, silu, sigmoid, tanh), softmax and dropout."""

from __future__ import annotations

from typing import Annotated, ClassVar, Literal

from pydantic import Field
from torch import nn

from composer.block import Block, In
from composer.params import Activation, Prob
from composer.registry import register
from composer.types import InferError, PortType, expect_float

_MODULES = {
    "relu": nn.ReLU, "relu6": nn.ReLU6, "gelu": nn.GELU, "gelu_tanh": lambda: nn.GELU(approximate="tanh"),
    "silu": nn.SiLU, "sigmoid": nn.Sigmoid, "elu": nn.ELU,
    "tanh": nn.Tanh, "hardswish": nn.Hardswish, "hardsigmoid": nn.Hardsigmoid, "none": nn.Identity,
}


def make_activation(name: Activation, inplace: bool = False) -> nn.Module:
    """The module for an activation name (shared by every block with an `activation` param)."""
    cls = _MODULES[name]
    if inplace and name in ("relu", "relu6", "silu", "hardswish", "hardsigmoid"):
        return cls(inplace=True)
    return cls()


class _Elementwise(Block):
    family: ClassVar[str] = "core"
    inputs: ClassVar = {"x": In("tensor")}

    def infer(self, x: PortType) -> PortType:
        expect_float(x, "x")
        return x

    def param_count(self, **inputs) -> int:
        return 0

    def build(self, x: PortType) -> nn.Module:
        return make_activation(self.name)


@register
class ReLU(_Elementwise):
    """Rectified linear unit, max(x, 0)."""
    name: ClassVar[str] = "relu"


@register
class LeakyReLU(_Elementwise):
    """Leaky rectified linear unit: x for x >= 0, negative_slope * x otherwise.

    The default slope is 0.2, DCGAN's and most GAN discriminators' (torch's nn.LeakyReLU defaults to
    0.01: write `negative_slope: 0.01` for that)."""
    name: ClassVar[str] = "leaky_relu"
    negative_slope: Annotated[float, Field(ge=0.0)] = 0.2

    def build(self, x: PortType) -> nn.Module:
        return nn.LeakyReLU(self.negative_slope)


@register
class ELU(_Elementwise):
    """Exponential linear unit: x for x > 0, alpha * (exp(x) - 1) otherwise."""
    name: ClassVar[str] = "elu"
    alpha: float = 1.0

    def build(self, x: PortType) -> nn.Module:
        return nn.ELU(alpha=self.alpha)


@register
class GELU(_Elementwise):
    """Gaussian error linear unit (exact erf form, or the tanh approximation)."""
    name: ClassVar[str] = "gelu"
    approximate: Literal["none", "tanh"] = "none"

    def build(self, x: PortType) -> nn.Module:
        return nn.GELU(approximate=self.approximate)


@register
class SiLU(_Elementwise):
    """Sigmoid linear unit (swish), x * sigmoid(x)."""
    name: ClassVar[str] = "silu"


@register
class Sigmoid(_Elementwise):
    """Logistic sigmoid."""
    name: ClassVar[str] = "sigmoid"


@register
class Tanh(_Elementwise):
    """Hyperbolic tangent."""
    name: ClassVar[str] = "tanh"


@register
class Softmax(_Elementwise):
    """Softmax along one axis (the last by default): logits to probabilities."""
    name: ClassVar[str] = "softmax"
    dim: int = -1

    def infer(self, x: PortType) -> PortType:
        expect_float(x, "x")
        rank = x.rank or 0
        if not -rank <= self.dim < rank:
            raise InferError(f"softmax axis {self.dim} is out of range for a rank-{rank} input", param="dim",
                             expected=f"an axis in [{-rank}, {rank - 1}]", found=str(self.dim))
        return x.with_(kind="probs")

    def build(self, x: PortType) -> nn.Module:
        return nn.Softmax(dim=self.dim)


@register
class Dropout(_Elementwise):
    """Dropout with probability p (a no-op in eval mode and in exported models)."""
    name: ClassVar[str] = "dropout"
    p: Prob = 0.5

    def build(self, x: PortType) -> nn.Module:
        return nn.Dropout(self.p)

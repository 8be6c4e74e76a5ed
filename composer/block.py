"""The block interface: a params model, typed ports, type inference and a builder.

A block type is a pydantic model (its params, validated strictly, unknown keys rejected)
with class-level port declarations and two methods:

    @register
    class Conv2d(Block):
        '''2-D convolution.'''
        name = "conv2d"
        family = "core"
        inputs = {"x": In("feature_map")}
        out_channels: PosInt
        kernel: Size2 = 3

        def infer(self, x: PortType) -> PortType: ...      # types in -> types out, no tensors
        def build(self, x: PortType) -> nn.Module: ...     # a module whose forward takes the ports

`infer` returns one `PortType` (the output port `out`) or a dict of named output ports.
The module's forward takes the input ports positionally in declaration order (a variadic
port as a list; an unbound optional port as None) and returns one value, or a tuple in the
order of `infer`'s dict when there are several outputs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict

from .types import PortType


@dataclass(frozen=True)
class In:
    """An input port: the kinds it accepts, and whether it is variadic or optional."""

    kinds: tuple[str, ...] = ("tensor",)
    doc: str = ""
    variadic: bool = False
    optional: bool = False

    def __init__(self, *kinds: str, doc: str = "", variadic: bool = False, optional: bool = False):
        object.__setattr__(self, "kinds", kinds or ("tensor",))
        object.__setattr__(self, "doc", doc)
        object.__setattr__(self, "variadic", variadic)
        object.__setattr__(self, "optional", optional)


class Params(BaseModel):
    """Base of nested param groups: strict, closed, immutable."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class Block(Params):
    """Base class of every block type. Subclasses set the class vars and both methods."""

    name: ClassVar[str] = ""
    family: ClassVar[str] = "core"
    inputs: ClassVar[dict[str, In]] = {"x": In()}
    outputs: ClassVar[tuple[str, ...]] = ("out",)  # documented output ports (infer decides)
    internal: ClassVar[bool] = False  # internal blocks stay out of the catalog and schema
    passthrough: ClassVar[bool] = False  # compiled as a plain alias of its single input
    stage: ClassVar[str] = "core"  # "pre": runs in Python before the tensor core (a tokenizer), never exported
    path_params: ClassVar[tuple[str, ...]] = ()  # params naming files: resolved against the spec's folder
    losses: ClassVar[tuple[str, ...]] = ()  # losses its module records in training (composer.block_losses)

    def build_stage(self, **inputs: PortType):
        """A pre-processing block's runtime: a callable from raw input values to its output arrays."""
        raise NotImplementedError

    def infer(self, **inputs: PortType) -> PortType | dict[str, PortType]:
        raise NotImplementedError

    def build(self, **inputs: PortType):
        raise NotImplementedError

    def id_high(self, port: str) -> int | None:
        """For a port of integer ids: how many ids it takes (random example inputs stay below).
        None: not an id port, or no limit known."""
        return None

    def param_count(self, **inputs: PortType) -> int | None:
        """Parameter count from types alone; None means: count a meta-device build."""
        return None

    def key_params(self) -> dict[str, Any]:
        """The params worth showing on a diagram or in a summary: those set in the spec (files by
        their name: the resolved path is the machine's, not the spec's)."""
        shown = self.model_dump(exclude_defaults=True, mode="json")
        for p in type(self).path_params:
            if shown.get(p):
                shown[p] = shown[p].replace("\\", "/").rsplit("/", 1)[-1]
        return shown

    @classmethod
    def summary(cls) -> str:
        doc = (cls.__doc__ or "").strip()
        return doc.splitlines()[0] if doc else ""

    @classmethod
    def required_ports(cls) -> list[str]:
        return [n for n, p in cls.inputs.items() if not p.optional]

"""The internal `_port` block: a sub-pipeline's input, checking what flows into it."""

from __future__ import annotations

from typing import ClassVar, Optional, Union

from torch import nn

from .block import Block, In
from .dims import DimSyntaxError, parse_dim, shape_str
from .registry import register
from .types import InferError, PortType, is_a


@register
class Port(Block):
    """Entry of a sub-pipeline: passes its input through after checking it against the declaration."""

    name: ClassVar[str] = "_port"
    family: ClassVar[str] = "core"
    internal: ClassVar[bool] = True
    passthrough: ClassVar[bool] = True
    inputs: ClassVar = {"x": In("tensor", "features", "detections", "proposals", "image_sizes", "graph", "text")}
    kind: str
    shape: Optional[list[Union[int, str]]] = None
    dtype: str = "float32"
    multiples: dict[str, int] = {}

    def infer(self, x: PortType) -> PortType:
        if not is_a(x.kind, self.kind):
            raise InferError(f"this sub-pipeline input takes `{self.kind}`, but `{x.kind}` flows in", port="x",
                             code="E301", expected=self.kind, found=str(x))
        if x.dtype != self.dtype:
            raise InferError("dtype mismatch at a sub-pipeline input", port="x", code="E303",
                             expected=self.dtype, found=x.dtype)
        if self.shape is not None:
            declared = "[" + ", ".join(str(s) for s in self.shape) + "]"
            if x.shape is None or len(x.shape) != len(self.shape):
                raise InferError("rank mismatch at a sub-pipeline input", port="x", code="E302",
                                 expected=declared, found=str(x))
            bound: dict[str, object] = {}
            for want, got in zip(self.shape, x.shape):
                if isinstance(want, int):
                    ok = got == want
                elif isinstance(want, str) and want.isidentifier():
                    ok = bound.setdefault(want, got) == got
                else:
                    try:
                        parse_dim(want, self.multiples)
                        ok = True
                    except DimSyntaxError:
                        ok = False
                if not ok:
                    raise InferError("shape mismatch at a sub-pipeline input", port="x", code="E302",
                                     expected=declared, found=shape_str(x.shape))
        return x

    def param_count(self, **inputs) -> int:
        return 0

    def build(self, x: PortType) -> nn.Module:
        return nn.Identity()

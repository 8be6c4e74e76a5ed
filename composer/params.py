"""Shared param types for block params models (strict: `"3"`, `true` and `0` are rejected)."""

from __future__ import annotations

from typing import Annotated, Literal, Union

from pydantic import Field

PosInt = Annotated[int, Field(ge=1)]
NonNegInt = Annotated[int, Field(ge=0)]
PosFloat = Annotated[float, Field(gt=0)]
Prob = Annotated[float, Field(ge=0.0, lt=1.0)]
Eps = Annotated[float, Field(gt=0.0, le=1.0)]
Pair = Annotated[list[PosInt], Field(min_length=2, max_length=2)]
NonNegPair = Annotated[list[NonNegInt], Field(min_length=2, max_length=2)]
Size2 = Union[PosInt, Pair]            # 3 or [3, 5]
Pad2 = Union[NonNegInt, NonNegPair]    # 1 or [1, 2]
Activation = Literal["relu", "relu6", "elu", "gelu", "gelu_tanh", "silu", "sigmoid", "tanh", "hardswish", "hardsigmoid",
                     "none"]


def pair(v: int | list[int]) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else (v[0], v[1])

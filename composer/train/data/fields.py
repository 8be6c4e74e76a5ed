"""One example's data fields checked against what the pipeline needs, shared by every reader.

`input_value` and `target_value` turn a field as a reader found it (numbers, nested lists,
arrays) into an array of the input's or the target's dtype, and raise a `DataError` naming the
example (`data/train.jsonl:18`) when its shape, values or class ids do not fit, so a bad
example is reported where it is, before the first step, never as a shape error in a block.
"""

from __future__ import annotations

from typing import Any, Optional, Sequence

import numpy as np

from ...dims import Dim, format_dim
from ...inputs import NUMPY_DTYPES
from ..plan import InputNeed, TargetNeed
from .base import DataError


def dims_text(shape: Optional[Sequence[Any]], batch: bool = True) -> str:
    """`[B, 24]` for a per-example shape (24,); None (a symbolic dim) reads `?`."""
    if shape is None:
        return "any shape"
    parts = ["?" if d is None else (format_dim(d) if isinstance(d, Dim) else str(d)) for d in shape]
    return "[" + ", ".join((["B"] if batch else []) + parts) + "]"


def example_dims(need: InputNeed) -> Optional[tuple[Optional[int], ...]]:
    """The per-example shape of an input (its shape without the batch dim); None for a symbolic dim."""
    shape = need.spec.shape if need.spec is not None else None
    if shape is None:
        return None
    return tuple(d if isinstance(d, int) and not isinstance(d, bool) else None for d in shape[1:])


def symbolic_axes(need: InputNeed) -> list[int]:
    """Per-example axes whose size may differ between examples (symbolic dims)."""
    dims = example_dims(need)
    return [] if dims is None else [a for a, d in enumerate(dims) if d is None]


def as_array(value: Any, where: str, what: str) -> np.ndarray:
    """A field as a numeric array; nested lists must be rectangular."""
    if isinstance(value, np.ndarray):
        return value
    if hasattr(value, "numpy") and callable(value.numpy):      # a torch tensor
        return value.numpy()
    if isinstance(value, str):
        raise DataError(f"{where}: {what} is the text {_short(value)}, expected numbers")
    try:
        arr = np.asarray(value)
    except ValueError:
        raise DataError(f"{where}: {what} is a ragged nested list (its rows differ in length); every row of an "
                        "array must have the same length") from None
    if arr.dtype == object or arr.dtype.kind in "USV":
        raise DataError(f"{where}: {what} holds {'text' if arr.dtype.kind == 'U' else 'values that are not numbers'}"
                        f" ({_short(value)}), expected numbers")
    return arr


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _check_shape(arr: np.ndarray, want: Optional[tuple], where: str, what: str, whose: str) -> None:
    if want is None:
        return
    got = tuple(arr.shape)
    if len(got) == len(want) and all(w is None or w == g for g, w in zip(got, want)):
        return
    raise DataError(f"{where}: {what} has shape {list(got)}, and {whose} is {dims_text(want)}, so each example "
                    f"needs {dims_text(want, batch=False)}")


def _finite(arr: np.ndarray, where: str, what: str) -> None:
    if arr.dtype.kind == "f" and not np.isfinite(arr).all():
        bad = np.argwhere(~np.isfinite(arr))[0]
        at = f" at {list(int(i) for i in bad)}" if arr.ndim else ""
        raise DataError(f"{where}: {what} holds {arr[tuple(bad)]}{at}, not a finite number; fill or drop the "
                        "example (a model fed NaN or infinity learns NaN)")


def _integral(arr: np.ndarray, where: str, what: str, kind: str) -> np.ndarray:
    if arr.dtype.kind == "b":
        return arr.astype(np.int64)
    if arr.dtype.kind == "f":
        _finite(arr, where, what)
        frac = arr != np.round(arr)
        if frac.any():
            bad = np.argwhere(frac)[0]
            raise DataError(f"{where}: {what} holds {arr[tuple(bad)]:g}, and {kind} are whole numbers")
    return arr.astype(np.int64)


def input_value(value: Any, need: InputNeed, where: str) -> np.ndarray:
    """A field for a (non-text) input: its per-example shape and dtype, ids within the vocabulary."""
    spec = need.spec
    what = f"field `{need.field}`"
    arr = as_array(value, where, what)
    _check_shape(arr, example_dims(need), where, what, f"input `{need.name}`")
    dtype = spec.dtype if spec is not None else "float32"
    if dtype == "bool":
        if arr.dtype.kind not in "biuf" or not np.isin(arr, (0, 1)).all():
            raise DataError(f"{where}: {what} must hold true/false (or 1/0) for input `{need.name}` (bool)")
        return arr.astype(np.bool_)
    if dtype.startswith(("int", "uint")):
        arr = _integral(arr, where, what, f"the values of input `{need.name}` ({dtype})")
        high = spec.int_high if spec is not None else 0
        if need.kind == "tokens" and high > 2 and arr.size and (arr.min() < 0 or arr.max() >= high):
            bad = int(arr.max()) if arr.max() >= high else int(arr.min())
            raise DataError(f"{where}: {what} holds id {bad}, and input `{need.name}` takes ids in [0, {high}) "
                            "(the vocabulary of the block that reads it)")
        return arr.astype(NUMPY_DTYPES.get(dtype, np.int64))
    if arr.dtype.kind not in "biuf":
        raise DataError(f"{where}: {what} has dtype {arr.dtype}, expected numbers for input `{need.name}`")
    out = arr.astype(NUMPY_DTYPES.get(dtype, np.float32))
    _finite(out, where, what)
    return out


def target_value(value: Any, need: TargetNeed, where: str) -> np.ndarray:
    """A field for an output's target: class ids in range, [0, 1] for bce, finite values."""
    what = f"field `{need.field}`"
    arr = as_array(value, where, what)
    if need.role != "class" and need.shape is not None and arr.ndim == 0 and need.shape == (1,):
        arr = arr.reshape(1)                             # one value for an output of [B, 1]
    if need.role == "class":
        arr = _integral(arr, where, what, "class ids")
    if need.shape is not None:
        got, want = tuple(arr.shape), need.shape
        if not (len(got) == len(want) and all(w is None or w == g for g, w in zip(got, want))):
            full = (*want, need.num_classes) if need.role == "class" else want
            each = "a class id" if not want else f"class ids of shape {dims_text(want, batch=False)}"
            raise DataError(f"{where}: output `{need.output}` is {dims_text(full)} but {what} has shape "
                            f"{list(got)}" + (f"; each example needs {each}" if need.role == "class" else ""))
    if need.role == "class":
        c = need.num_classes or 0
        bad = (arr < 0) | (arr >= c)
        if need.ignore_index is not None:
            bad &= arr != need.ignore_index
        if bad.any():
            v = int(arr[tuple(np.argwhere(bad)[0])])
            ign = f" (or {need.ignore_index}, ignored)" if need.ignore_index is not None and arr.ndim else ""
            raise DataError(f"{where}: {what} holds class {v}, and output `{need.output}` has {c} classes: ids in "
                            f"[0, {c}){ign}")
        return arr
    if arr.dtype.kind not in "biuf":
        raise DataError(f"{where}: {what} has dtype {arr.dtype}, expected numbers")
    out = arr.astype(np.float32)
    _finite(out, where, what)
    if need.role == "binary" and ((out < 0) | (out > 1)).any():
        v = out[tuple(np.argwhere((out < 0) | (out > 1))[0])]
        raise DataError(f"{where}: {what} holds {v:g}, and bce compares with targets in [0, 1]")
    return out


def check_item(item: dict, plan, where: str, fields: Sequence[str]) -> None:
    """Check one example's fields against every input and target the plan reads from data."""
    for need in plan.inputs.values():
        if need.field not in fields:
            continue
        if need.field not in item:
            raise DataError(f"{where}: the example has no field `{need.field}` (for input `{need.name}`)")
        if need.raw:
            if not isinstance(item[need.field], str):
                raise DataError(f"{where}: field `{need.field}` is {_short(item[need.field])}, and input "
                                f"`{need.name}` takes text (a string)")
        else:
            input_value(item[need.field], need, where)
    for need in plan.targets.values():
        if need.role == "detection":
            continue
        if need.field not in item:
            raise DataError(f"{where}: the example has no field `{need.field}` (the target of output "
                            f"`{need.output}`)")
        target_value(item[need.field], need, where)
    check_lengths(item, plan, where)


def sequence_input(plan, fields: Sequence[str]) -> Optional[InputNeed]:
    """The first input read from data whose first per-example axis is symbolic (a sequence's T)."""
    for need in plan.inputs.values():
        dims = example_dims(need) if not need.raw else None
        if need.field in fields and dims and dims[0] is None:
            return need
    return None


def check_lengths(item: dict, plan, where: str) -> None:
    """A sequence target (a tagger's per-step classes) has one entry per step of the sequence input."""
    seq = sequence_input(plan, list(item))
    if seq is None:
        return
    n = len(item[seq.field])
    for need in plan.targets.values():
        if need.shape and need.shape[0] is None and need.field in item:
            m = len(item[need.field]) if hasattr(item[need.field], "__len__") else 1
            if m != n:
                raise DataError(f"{where}: field `{need.field}` has {m} steps and field `{seq.field}` (input "
                                f"`{seq.name}`) has {n}; the target of output `{need.output}` needs one per step")


def check_many(get, n: int, need, where_of, chunk: int = 4096) -> None:
    """Check the values of `n` examples stored as arrays (`get(a, b)`: examples a..b-1, stacked)
    chunk by chunk; the first bad example is then found one by one, for its location."""
    import dataclasses
    if isinstance(need, InputNeed):
        spec = need.spec
        many = dataclasses.replace(need, spec=dataclasses.replace(spec, shape=(spec.shape[0], None, *spec.shape[1:]))
                                   ) if spec is not None and spec.shape is not None else need
        check = input_value
    else:
        many = dataclasses.replace(need, shape=(None, *need.shape) if need.shape is not None else None)
        check = target_value
    for a in range(0, n, chunk):
        block = get(a, min(n, a + chunk))
        try:
            check(block, many, where_of(a))
        except DataError:
            for j in range(len(block)):      # raises for the first bad example (a [N] array for [B, 1] is fine)
                check(block[j], need, where_of(a + j))


def missing_fields(plan, fields: Sequence[str], source: str, extra: str = "") -> None:
    """Every input (except a mask, which padding can fill) and target must have its field."""
    from ...errors import did_you_mean
    for need in list(plan.inputs.values()) + list(plan.targets.values()):
        if need.field in fields or (isinstance(need, InputNeed) and need.kind == "mask"):
            continue
        whose = f"input `{need.name}`" if isinstance(need, InputNeed) else f"the target of output `{need.output}`"
        hint = did_you_mean(need.field, fields)
        raise DataError(f"{source}: no field `{need.field}` ({whose}); the data has: {', '.join(fields) or 'nothing'}"
                        + (f"; {hint}" if hint else "") + extra)

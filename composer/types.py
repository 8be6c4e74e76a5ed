"""Port types: a kind, a dtype and a symbolic shape, checked before any weight exists.

Kinds form a small tree (`image` is a kind of `feature_map`, every tensor kind is a
`tensor`), so a port that accepts `feature_map` also accepts an `image`. Structured kinds
(`features`: named multi-scale maps) carry their parts in `fields`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Sequence

from .dims import DimLike, format_dim, shape_str

# kind -> parent kind (None for roots)
KINDS: dict[str, str | None] = {
    "tensor": None,
    "feature_map": "tensor",   # [B, C, H, W]
    "image": "feature_map",    # [B, 3, H, W], pixels
    "mask": "tensor",          # boolean or {0,1} masks
    "sequence": "tensor",      # [B, T, C]
    "series": "sequence",      # [B, T, F]: a time series, one row of F features per step
    "signal": "tensor",        # [B, C, T]: channels first, the layout of 1-D convolutions and pools
    "tokens": "tensor",        # [B, T] integer ids
    "kv_cache": "tensor",      # [L, 2, B, H, P, hd]: a decoder's keys and values of P earlier steps, per layer
    "text": None,              # [B] strings: the input of a pre-processing stage (a tokenizer), never a tensor
    "vector": "tensor",        # [B, C]
    "latent": "tensor",        # [B, Z] or [B, Z, 1, 1]: a generator's or decoder's code, drawn from N(0, I) to sample
    "logits": "tensor",        # unnormalised scores
    "probs": "tensor",         # normalised scores
    "boxes": "tensor",         # [N, 4] or [B, N, 4], xyxy pixels
    "scores": "tensor",        # [B, N] confidences in [0, 1]
    "labels": "tensor",        # [B, N] int64 class ids
    "count": "tensor",         # [B] int64: how many padded slots of a row are used
    "sizes": "tensor",         # [B, 2] int64 (height, width) of each image
    "scalar": "tensor",
    "features": None,          # {name: feature_map}, multi-scale, with strides
    "detections": None,        # {boxes, scores, labels, count[, masks]}, padded to a maximum K
    "proposals": None,         # {boxes, scores, count}: region proposals, padded
    "image_sizes": None,       # {resized, original}: sizes of the images in a detection batch
    "graph": None,             # {x, edge_index[, edge_weight, edge_attr, batch]}: see blocks/graph/ports.py
    "nodes": "vector",         # [N, C] node features: a vector per node, N the batch axis of node-level heads
    "edge_index": "tensor",    # [2, E] int64 (source, target) of each edge
    "edge_weight": "tensor",   # [E] a weight per edge
    "edges": "tensor",         # [E, Fe] features per edge
    "graph_ids": "tensor",     # [N] int64: the graph of each node in a batch of graphs
}

DTYPES = ("float32", "float16", "bfloat16", "float64", "int64", "int32", "uint8", "bool", "string")
FLOAT_DTYPES = ("float32", "float16", "bfloat16", "float64")


def is_a(kind: str, accepted: str) -> bool:
    """True when `kind` is `accepted` or one of its descendants."""
    k: str | None = kind
    while k is not None:
        if k == accepted:
            return True
        k = KINDS.get(k)
    return False


def register_kind(kind: str, parent: str | None = "tensor") -> None:
    """Add a kind (for block families and plugins); re-adding the same kind is a no-op."""
    if kind in KINDS and KINDS[kind] != parent:
        raise ValueError(f"kind {kind!r} is already registered with parent {KINDS[kind]!r}")
    KINDS[kind] = parent


@dataclass(frozen=True, eq=True)
class PortType:
    """The type of a value on a port."""

    kind: str
    shape: tuple[DimLike, ...] | None = None
    dtype: str = "float32"
    fields: tuple[tuple[str, "PortType"], ...] = ()
    meta: tuple[tuple[str, Any], ...] = ()

    def __post_init__(self):
        if self.shape is not None and not isinstance(self.shape, tuple):
            object.__setattr__(self, "shape", tuple(self.shape))

    @property
    def rank(self) -> int | None:
        return None if self.shape is None else len(self.shape)

    def field(self, name: str) -> "PortType":
        return dict(self.fields)[name]

    def get(self, key: str, default: Any = None) -> Any:
        return dict(self.meta).get(key, default)

    def with_(self, **changes) -> "PortType":
        if "shape" in changes and changes["shape"] is not None:
            changes["shape"] = tuple(changes["shape"])
        if "meta" in changes and isinstance(changes["meta"], Mapping):
            changes["meta"] = tuple(changes["meta"].items())
        if "fields" in changes and isinstance(changes["fields"], Mapping):
            changes["fields"] = tuple(changes["fields"].items())
        new = object.__new__(PortType)
        for f in ("kind", "shape", "dtype", "fields", "meta"):
            object.__setattr__(new, f, changes[f] if f in changes else getattr(self, f))
        return new

    def __str__(self) -> str:
        parts = [self.kind]
        if self.shape is not None:
            parts.append(shape_str(self.shape))
        if self.dtype != "float32":
            parts.append(self.dtype)
        if self.fields:
            parts.append("{" + ", ".join(f"{n}: {shape_str(t.shape) if t.shape else t.kind}"
                                         for n, t in self.fields) + "}")
        return " ".join(parts)

    def to_dict(self) -> dict:
        out: dict[str, Any] = {"kind": self.kind, "dtype": self.dtype}
        if self.shape is not None:
            out["shape"] = [d if isinstance(d, int) else format_dim(d) for d in self.shape]
        if self.fields:
            out["fields"] = {n: t.to_dict() for n, t in self.fields}
        if self.meta:
            out["meta"] = {k: v for k, v in self.meta}
        return out


def tensor(kind: str, shape: Sequence[DimLike], dtype: str = "float32", **meta) -> PortType:
    return PortType(kind, tuple(shape), dtype, meta=tuple(meta.items()))


class InferError(Exception):
    """Raised by a block's `infer`: the message, and which port or param it concerns."""

    def __init__(self, message: str, *, port: str | None = None, param: str | None = None,
                 expected: str | None = None, found: str | None = None, code: str = "E305",
                 hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.port = port
        self.param = param
        self.expected = expected
        self.found = found
        self.code = code
        self.hint = hint


# ---- checks used by blocks' infer functions --------------------------------------------


def expect_rank(t: PortType, ranks: int | Iterable[int], port: str, what: str = "") -> None:
    allowed = (ranks,) if isinstance(ranks, int) else tuple(ranks)
    if t.shape is None or len(t.shape) not in allowed:
        exp = " or ".join(str(r) for r in allowed)
        raise InferError(f"port `{port}` needs a rank-{exp} tensor{what}", port=port, code="E302",
                         expected=f"rank {exp}", found=f"{t}")


def expect_float(t: PortType, port: str) -> None:
    if t.dtype not in FLOAT_DTYPES:
        raise InferError(f"port `{port}` needs a floating-point tensor", port=port, code="E303",
                         expected="float32 (or another float dtype)", found=t.dtype,
                         hint="integer ids go through an embedding first")


def expect_static(d: DimLike, port: str, what: str) -> int:
    if not isinstance(d, int):
        raise InferError(f"{what} must be a fixed size, but it depends on the input size", port=port,
                         code="E302", expected="a fixed integer", found=format_dim(d),
                         hint="pool to a fixed size first (global_avg_pool), or fix that dim in `inputs`")
    return d


def same_dims(a: DimLike, b: DimLike) -> bool:
    return a == b


def unify_shapes(types: Sequence[tuple[str, PortType]], *, skip_axis: int | None = None) -> tuple:
    """Check that shapes agree (optionally except one axis); returns the common shape."""
    (name0, t0), rest = types[0], types[1:]
    for name, t in rest:
        if t.shape is None or t0.shape is None or len(t.shape) != len(t0.shape):
            raise InferError(f"`{name0}` and `{name}` have different ranks", port=name, code="E302",
                             expected=f"{t0}", found=f"{t}")
        for axis, (a, b) in enumerate(zip(t0.shape, t.shape)):
            if axis == (skip_axis % len(t0.shape) if skip_axis is not None else None):
                continue
            if a != b:
                raise InferError(
                    f"shapes of `{name0}` and `{name}` differ at axis {axis}: {format_dim(a)} vs {format_dim(b)}",
                    port=name, code="E302", expected=shape_str(t0.shape), found=shape_str(t.shape))
    return t0.shape


def unify_dtypes(types: Sequence[tuple[str, PortType]]) -> str:
    (name0, t0), rest = types[0], types[1:]
    for name, t in rest:
        if t.dtype != t0.dtype:
            raise InferError(f"dtypes of `{name0}` and `{name}` differ", port=name, code="E303",
                             expected=t0.dtype, found=t.dtype, hint="insert a cast, or make both inputs the same dtype")
    return t0.dtype

"""Scatter reductions over edges and nodes, written with torch ops that export to ONNX.

`torch_geometric.utils.scatter` has the same semantics (an index with no entries gives 0 for
every reduction); these versions avoid data-dependent shapes (no boolean indexing, no
`unique`), so a graph block traces with symbolic N and E and runs in onnxruntime at any size.
"""

from __future__ import annotations

import torch
from torch import Tensor


def _expand(index: Tensor, like: Tensor) -> Tensor:
    """index [E] broadcast to the shape of `like` [E, ...] (the layout of `scatter_reduce`)."""
    return index.view((-1,) + (1,) * (like.dim() - 1)).expand_as(like)


def scatter_sum(src: Tensor, index: Tensor, size) -> Tensor:
    """out[i] = sum of src[e] over e with index[e] == i; out has `size` rows.

    `scatter_add_` in place on a fresh zeros tensor, as PyG (the out-of-place `scatter_add` would
    copy the zeros first); over an expanded index torch's CPU kernel sorts the index once and sums
    each row's run. It exports to ONNX ScatterElements (reduction add). Not `index_add_`: that
    exports to ScatterND (reduction add), which onnxruntime 1.31 runs ~20× faster but wrongly with
    more than one intra-op thread when indices repeat, as edge targets do (it races: max abs error
    ~3 at 100,000 × 64; onnxruntime issues #18048, #23396)."""
    out = src.new_zeros((size,) + tuple(src.shape[1:]))
    return out.scatter_add_(0, _expand(index, src), src)


def scatter_count(index: Tensor, size, dtype: torch.dtype) -> Tensor:
    """How many entries of `index` name each of `size` rows."""
    ones = torch.ones(index.shape, dtype=dtype, device=index.device)
    return torch.zeros((size,), dtype=dtype, device=index.device).scatter_add_(0, index, ones)


def scatter_mean(src: Tensor, index: Tensor, size) -> Tensor:
    """The mean over each row's entries (0 for a row with none)."""
    count = scatter_count(index, size, src.dtype).clamp_(min=1)
    total = scatter_sum(src, index, size)                   # fresh: divided in place (autograd-safe)
    return total.div_(count.view((-1,) + (1,) * (src.dim() - 1)))


def scatter_max(src: Tensor, index: Tensor, size) -> Tensor:
    """The elementwise maximum over each row's entries (0 for a row with none)."""
    return _scatter_extreme(src, index, size, "amax")


def scatter_min(src: Tensor, index: Tensor, size) -> Tensor:
    """The elementwise minimum over each row's entries (0 for a row with none)."""
    return _scatter_extreme(src, index, size, "amin")


def _scatter_extreme(src: Tensor, index: Tensor, size, reduce: str) -> Tensor:
    """In torch, PyG's CPU path: reduce into zeros without including them, so a row with no
    entries keeps its 0 and no count pass is needed. Under export, an initial value of -inf /
    +inf and the count (0 where a row has no entries) instead: the exporter would lower
    `include_self=False` to two ONNX ScatterElements (the touched rows set to the lowest float,
    then the max / min), and onnxruntime's ScatterElements is slow (~50 ms per million elements on
    one core) where a 1-D count is nearly free. Same values either way."""
    shape = (size,) + tuple(src.shape[1:])
    if not torch.compiler.is_exporting():
        return src.new_zeros(shape).scatter_reduce_(0, _expand(index, src), src, reduce, include_self=False)
    out = src.new_full(shape, float("-inf") if reduce == "amax" else float("inf"))
    out = out.scatter_reduce_(0, _expand(index, src), src, reduce, include_self=True)
    seen = scatter_count(index, size, src.dtype) > 0
    return torch.where(seen.view((-1,) + (1,) * (src.dim() - 1)), out, torch.zeros_like(out))


def scatter_mul(src: Tensor, index: Tensor, size) -> Tensor:
    """The elementwise product over each row's entries (0 for a row with none)."""
    out = src.new_ones((size,) + tuple(src.shape[1:]))
    out = out.scatter_reduce(0, _expand(index, src), src, "prod", include_self=True)
    seen = scatter_count(index, size, src.dtype) > 0
    return torch.where(seen.view((-1,) + (1,) * (src.dim() - 1)), out, torch.zeros_like(out))


REDUCTIONS = {"sum": scatter_sum, "add": scatter_sum, "mean": scatter_mean, "max": scatter_max,
              "min": scatter_min, "mul": scatter_mul}


def scatter(src: Tensor, index: Tensor, size, reduce: str) -> Tensor:
    """One of `sum` (`add`), `mean`, `max`, `min`, `mul` by name."""
    return REDUCTIONS[reduce](src, index, size)


def scatter_kept(src: Tensor, index: Tensor, keep: Tensor, size, reduce: str) -> Tensor:
    """`scatter` over only the entries where `keep` [E] is true, as if the others were removed.

    Removing entries (`src[keep]`) would make the entry count data-dependent; instead the
    dropped entries are sent to a sink row past the end (row `size`), which is cut off."""
    sink = torch.full_like(index, 0) + size
    return scatter(src, torch.where(keep, index, sink), size + 1, reduce)[:size]


def segment_softmax(src: Tensor, index: Tensor, size) -> Tensor:
    """Softmax of src [E, ...] over the entries that share an index (each target node's edges),
    as `torch_geometric.utils.softmax`: entries of -inf get weight 0."""
    top = scatter_max(src.detach(), index, size)
    ex = (src - top.index_select(0, index)).exp()
    total = scatter_sum(ex, index, size) + 1e-16
    return ex / total.index_select(0, index)


def gather(src: Tensor, index: Tensor) -> Tensor:
    """src[index] along the first axis (node values onto edges)."""
    return src.index_select(0, index)


def gather_mul(src: Tensor, index: Tensor, scale: Tensor) -> Tensor:
    """src[index] * scale[..., None]: node rows onto edges [E, ...], each scaled by its edge's value.

    The product is taken in place in the freshly gathered tensor (one E-sized tensor fewer to
    allocate and fill) unless autograd records it with a `scale` that needs a gradient, which
    would need the gathered rows as they were."""
    rows = src.index_select(0, index)
    factor = scale.unsqueeze(-1)
    if torch.is_grad_enabled() and scale.requires_grad:
        return rows * factor
    return rows.mul_(factor)

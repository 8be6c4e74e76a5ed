"""Shared by the graph tests: random graphs with the cases that differ between implementations
(isolated nodes, existing self-loops, duplicate edges), batches of graphs of different sizes,
and our modules built from a block with the weights of a PyG layer."""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor, nn

import blocks.graph  # noqa: F401  (registers the graph blocks)
from blocks.graph.ports import graph_type
from composer.dims import sym
from composer.registry import REGISTRY

C, FE, TOL = 5, 3, 1e-5     # node features, edge features, tolerance


def make_graph(n: int, e: int, features: int, seed: int, *, edge_dim: Optional[int] = None,
               loops: int = 2, duplicates: int = 2, isolated: bool = True) -> dict[str, Tensor]:
    """n nodes (the last one isolated unless `isolated` is false), e random edges between the
    others (no self-loops), then `loops` self-loops on distinct nodes and `duplicates` repeated
    edges, in shuffled order. One loop per node at most: with two loops of different weights,
    PyG's own result depends on its scatter order."""
    g = torch.Generator().manual_seed(seed)
    m = n - 1 if isolated else n                                    # the nodes that have edges
    src = torch.randint(0, m, (e,), generator=g)
    shift = torch.randint(1, m, (e,), generator=g)
    dst = (src + shift) % m                                         # != src
    loop_nodes = torch.randperm(m, generator=g)[:loops]
    dup = torch.randint(0, e, (duplicates,), generator=g)
    src = torch.cat([src, loop_nodes, src[dup]])
    dst = torch.cat([dst, loop_nodes, dst[dup]])
    order = torch.randperm(src.numel(), generator=g)
    total = src.numel()
    graph = {"x": torch.randn(n, features, generator=g), "edge_index": torch.stack([src, dst])[:, order],
             "edge_weight": (torch.rand(total, generator=g) + 0.5)}
    if edge_dim is not None:
        graph["edge_attr"] = torch.randn(total, edge_dim, generator=g)
    return graph


def make_batch(sizes: list[tuple[int, int]], features: int, seed: int, **kw) -> dict[str, Tensor]:
    """A batch of graphs of the given (nodes, edges) sizes: node ids offset, `batch` made."""
    parts = [make_graph(n, e, features, seed + i, **kw) for i, (n, e) in enumerate(sizes)]
    out: dict[str, Tensor] = {}
    offset = 0
    edges = []
    for p in parts:
        edges.append(p["edge_index"] + offset)
        offset += p["x"].shape[0]
    out["x"] = torch.cat([p["x"] for p in parts])
    out["edge_index"] = torch.cat(edges, dim=1)
    for key in ("edge_weight", "edge_attr"):
        if key in parts[0]:
            out[key] = torch.cat([p[key] for p in parts])
    out["batch"] = torch.repeat_interleave(torch.arange(len(parts)), torch.tensor([p["x"].shape[0] for p in parts]))
    return out


def build(name: str, params: dict, c: int = C, **fields) -> nn.Module:
    """Our block's module (eval mode) for a graph type with symbolic N and E and the given fields."""
    block = REGISTRY[name].model_validate(params)
    t = graph_type(sym("N"), sym("E"), c, **fields)
    block.infer(graph=t)
    return block.build(graph=t).eval()


def randomize(ref: nn.Module, seed: int = 0) -> nn.Module:
    """Random values for every parameter (PyG zero-inits its biases) and BatchNorm statistic."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in ref.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.5)
        for m in ref.modules():
            if isinstance(m, nn.BatchNorm1d):
                m.running_mean.copy_(torch.randn(m.num_features, generator=g))
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
    return ref.eval()


def paired(name: str, params: dict, ref: nn.Module, **fields) -> nn.Module:
    """Our module with the (randomized) PyG layer's weights, loaded strictly: this proves the names."""
    ours = build(name, params, **fields)
    ours.load_state_dict(randomize(ref).state_dict(), strict=True)
    return ours


def close(a, b) -> None:
    a, b = torch.as_tensor(a), torch.as_tensor(b)
    assert a.shape == b.shape, (a.shape, b.shape)
    torch.testing.assert_close(a, b, atol=TOL, rtol=TOL)

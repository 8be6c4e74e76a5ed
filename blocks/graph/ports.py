"""The `graph` port type and the checks graph blocks share.

A graph is a structured value, a dict of tensors (the keys are its fields):

    x           [N, F]   float   node features
    edge_index  [2, E]   int64   (source, target) node of each edge; messages flow source -> target
    edge_weight [E]      float   optional: a weight per edge
    edge_attr   [E, Fe]  float   optional: features per edge
    batch       [N]      int64   optional: the graph of each node (sorted, 0..G-1) in a batch of graphs

N, E and the graph count G are symbolic dims, inferred through every block like H and W. The
layout and the names are PyTorch Geometric's (`Data`/`Batch`), so its tensors feed composer as
they are. Node features after a graph block are a `nodes` port [N, C]; node-level heads
(`dense`, `mlp`, `classifier`) read it as they read any [B, C] vector, with N as the batch.
"""

from __future__ import annotations

from typing import Optional

from composer.block import In
from composer.dims import DimLike, format_dim
from composer.graph_data import GRAPH_COUNT, GRAPH_FIELDS, graph_type, nodes_type
from composer.types import InferError, PortType, expect_float, expect_static

__all__ = ["GRAPH_FIELDS", "GRAPH_COUNT", "GRAPH_INPUTS", "edge_dim", "expect_graph", "graph_count", "graph_type",
           "has_field", "in_channels", "node_features", "nodes_type", "num_edges", "num_nodes", "require_field"]

# the ports of every graph block, in this order: `in: g` binds the graph (its x the node features),
# `in: {graph: g, x: prev}` feeds node features from an earlier layer
GRAPH_INPUTS = {
    "graph": In("graph", doc="the graph: x [N, F], edge_index [2, E][, edge_weight, edge_attr, batch]"),
    "x": In("nodes", optional=True, doc="node features [N, C]; default: the graph's x"),
}


def expect_graph(t: PortType, port: str = "graph") -> PortType:
    """A `graph` port with its node features and edges."""
    names = dict(t.fields)
    if t.kind != "graph" or "x" not in names or "edge_index" not in names:
        raise InferError(f"port `{port}` takes a graph (x, edge_index, ...)", port=port, code="E301",
                         expected="graph {x: [N, F], edge_index: [2, E]}", found=str(t))
    return t


def num_nodes(graph: PortType) -> DimLike:
    return graph.field("x").shape[0]


def num_edges(graph: PortType) -> DimLike:
    return graph.field("edge_index").shape[1]


def graph_count(graph: PortType) -> DimLike:
    """G: how many graphs the value holds (1 without a `batch` field)."""
    return graph.get("graphs", 1)


def has_field(graph: PortType, name: str) -> bool:
    return name in dict(graph.fields)


def node_features(graph: PortType, x: Optional[PortType], what: str) -> PortType:
    """The node features a graph block reads: its `x` port when bound, else the graph's own `x`;
    checked to be float [N, C] with the graph's N."""
    expect_graph(graph)
    if x is None:
        return graph.field("x")
    if x.rank != 2:
        raise InferError(f"{what}: port `x` takes node features [N, C]", port="x", code="E302",
                         expected="[N, C]", found=str(x))
    expect_float(x, "x")
    n = num_nodes(graph)
    if x.shape[0] != n:
        raise InferError(f"{what}: `x` has {format_dim(x.shape[0])} rows and the graph has {format_dim(n)} nodes",
                         port="x", code="E302", expected=f"[{format_dim(n)}, C]", found=str(x),
                         hint="node features of another graph cannot flow into this one")
    return x


def edge_dim(graph: PortType) -> Optional[int]:
    """Fe, the width of the graph's edge features, or None without them."""
    return graph.field("edge_attr").shape[1] if has_field(graph, "edge_attr") else None


def in_channels(graph: PortType, x: Optional[PortType], what: str) -> tuple[PortType, int]:
    """The node features a graph block reads (see `node_features`) and their width C, which
    must be a fixed size (it sizes the block's weights)."""
    feats = node_features(graph, x, what)
    port = "graph" if x is None else "x"
    expect_float(feats, port)
    return feats, expect_static(feats.shape[1], port, f"the node feature width of {what}'s input")


def require_field(graph: PortType, name: str, param: str, what: str) -> None:
    """An InferError on `param` unless the graph has field `name`."""
    if not has_field(graph, name):
        have = ", ".join(n for n, _ in graph.fields)
        raise InferError(f"{what}: `{param}: true` reads the graph's `{name}`, and the graph has none",
                         param=param, code="E305", expected=f"a graph with `{name}`", found=f"fields {have}",
                         hint=f"declare `{name}` in the graph input's fields, or set `{param}: false`")

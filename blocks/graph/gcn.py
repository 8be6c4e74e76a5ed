"""Graph convolution (Kipf & Welling): gcn_conv, PyG's `GCNConv` in export-safe torch ops.

PyG's layer removes existing self-loops by boolean indexing (`edge_index[:, mask]`), so its
edge count depends on the data and it does not trace with a symbolic E. This version keeps
every edge, gives self-loop edges weight 0 and adds one self-loop term per node that carries the
existing loop's weight or the fill value, which is the same sum. The loop term is added to the
edges' sum as an [N] weight times the node's own row rather than as N appended edges: the
gather and scatter stay E rows long. tests/blocks/graph proves it equal to
`torch_geometric.nn.GCNConv` and loads its state dict as it is.
"""

from __future__ import annotations

from typing import ClassVar, Optional

import torch
from torch import Tensor, nn

from composer.block import Block
from composer.params import PosInt
from composer.registry import register
from composer.types import InferError, PortType

from . import ports
from .scatter import gather_mul, scatter_kept, scatter_sum


def gcn_norm(edge_index: Tensor, weight: Optional[Tensor], n, fill: float, add_self_loops: bool, dtype: torch.dtype
             ) -> tuple[Tensor, Optional[Tensor]]:
    """The normalised adjacency D^-1/2 (A + I) D^-1/2 as (the weight of each edge [E], the weight
    of each node's self-loop [N], or None without loops); `weight` None means unit weights.

    PyG's `add_remaining_self_loops`: a node's existing self-loop keeps its weight, a node without
    one gets `fill`. The loops are not appended to the edge list: existing loop edges get weight
    0 and every node's loop is a separate [N] weight, added after the sum over the edges (PyG
    appends the loops after the edges, so it sums in that order too). Degrees are summed at the
    target."""
    src, dst = edge_index[0], edge_index[1]
    if weight is None:
        weight = torch.ones(src.shape, dtype=dtype, device=src.device)
    loop_w = None
    if add_self_loops:
        is_loop = src == dst
        own = scatter_kept(weight, src, is_loop, n, "max")                      # (N,) the loop's weight
        has = scatter_kept(torch.ones_like(weight), src, is_loop, n, "sum") > 0
        loop_w = torch.where(has, own, torch.full_like(own, fill))
        weight = torch.where(is_loop, torch.zeros_like(weight), weight)
    deg = scatter_sum(weight, dst, n)
    if loop_w is not None:
        deg = deg + loop_w
    inv = deg.pow(-0.5)
    inv = inv.masked_fill(inv == float("inf"), 0.0)
    edge_w = inv.index_select(0, src) * weight * inv.index_select(0, dst)
    return edge_w, None if loop_w is None else inv * loop_w * inv


class GCNConv(nn.Module):
    """out = D^-1/2 (A + I) D^-1/2 X W^T + b, with PyG's parameter names (`lin.weight`, `bias`).

    As PyG: the linear map first (the gathered rows are C_out wide), then the weighted sum over
    in-edges, and the self-loop term added to it in place."""

    def __init__(self, in_channels: int, out_channels: int, *, improved: bool, add_self_loops: bool,
                 normalize: bool, edge_weight: bool, bias: bool):
        super().__init__()
        self.improved, self.add_self_loops, self.normalize = improved, add_self_loops, normalize
        self.use_edge_weight = edge_weight
        self.lin = nn.Linear(in_channels, out_channels, bias=False)
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None
        nn.init.xavier_uniform_(self.lin.weight)

    def forward(self, graph: dict[str, Tensor], x: Optional[Tensor] = None) -> Tensor:
        x = graph["x"] if x is None else x
        edge_index = graph["edge_index"]
        n = x.shape[0]
        h = self.lin(x)                                                          # (N, C_out)
        weight = graph["edge_weight"].to(h.dtype) if self.use_edge_weight else None
        loop_w = None
        if self.normalize:
            weight, loop_w = gcn_norm(edge_index, weight, n, 2.0 if self.improved else 1.0,
                                      self.add_self_loops, h.dtype)
        src, dst = edge_index[0], edge_index[1]
        msg = h.index_select(0, src) if weight is None else gather_mul(h, src, weight)   # (E, C_out)
        out = scatter_sum(msg, dst, n)                                           # (N, C_out), fresh
        if loop_w is not None:
            out = out.addcmul_(loop_w.unsqueeze(-1), h)
        return out if self.bias is None else out.add_(self.bias)


@register
class GCNConvBlock(Block):
    """Graph convolution (GCN): symmetric-normalised sum over neighbours and self, then a linear map.

    out_i = sum_j  w_ji / sqrt(d_i d_j) * W x_j + b over the edges j -> i and a self-loop
    (weight 1, or 2 when `improved`), d the weighted in-degree with the loop. PyG `GCNConv`'s
    weights load as they are."""
    name: ClassVar[str] = "gcn_conv"
    family: ClassVar[str] = "graph"
    inputs: ClassVar = ports.GRAPH_INPUTS
    example: ClassVar = {"params": {"out_channels": 6, "edge_weight": True},
                         "inputs": {"graph": ports.graph_type(7, 12, 5, edge_weight=True)}}
    out_channels: PosInt
    improved: bool = False          # self-loops of weight 2 (A + 2I)
    add_self_loops: Optional[bool] = None   # default: as `normalize` (PyG's default)
    normalize: bool = True          # D^-1/2 (A + I) D^-1/2; false: a plain (weighted) sum over in-edges
    edge_weight: bool = False       # weight each edge by the graph's `edge_weight` field
    bias: bool = True

    def _loops(self) -> bool:
        return self.normalize if self.add_self_loops is None else self.add_self_loops

    def _check(self, graph: PortType, x: Optional[PortType]) -> tuple[PortType, int]:
        feats, c = ports.in_channels(graph, x, "gcn_conv")
        if self._loops() and not self.normalize:
            raise InferError("gcn_conv adds self-loops only with `normalize: true` (as PyG's GCNConv)",
                             param="add_self_loops", expected="false with `normalize: false`", found="true",
                             hint="drop `add_self_loops`, or set `normalize: true`")
        if self.edge_weight:
            ports.require_field(graph, "edge_weight", "edge_weight", "gcn_conv")
        return feats, c

    def infer(self, graph: PortType, x: Optional[PortType] = None) -> PortType:
        feats, _ = self._check(graph, x)
        return ports.nodes_type(feats.shape[0], self.out_channels, feats.dtype)

    def param_count(self, graph: PortType, x: Optional[PortType] = None) -> int:
        _, c = self._check(graph, x)
        return c * self.out_channels + (self.out_channels if self.bias else 0)

    def build(self, graph: PortType, x: Optional[PortType] = None) -> nn.Module:
        _, c = self._check(graph, x)
        return GCNConv(c, self.out_channels, improved=self.improved, add_self_loops=self._loops(),
                       normalize=self.normalize, edge_weight=self.edge_weight, bias=self.bias)


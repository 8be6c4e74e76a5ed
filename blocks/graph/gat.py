"""Graph attention: gat_conv, PyG 2.8's `GATConv` in export-safe torch ops.

PyG's layer calls `remove_self_loops` (boolean indexing: the edge count becomes data-dependent)
before `add_self_loops`, so it does not trace with a symbolic E. This version keeps every edge,
masks the attention logit of existing self-loops to -inf (weight 0 after the softmax, as if
removed), appends one self-loop per node, and fills the loops' edge features with a reduction
over the kept in-edges only. tests/blocks/graph proves it equal to `torch_geometric.nn.GATConv`
and loads its state dict as it is.
"""

from __future__ import annotations

from typing import ClassVar, Literal, Optional, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from composer.block import Block
from composer.params import PosInt, Prob
from composer.registry import register
from composer.types import InferError, PortType

from . import ports
from .scatter import gather_mul, scatter_kept, scatter_sum, segment_softmax

FillReduce = Literal["mean", "add", "max", "min", "mul"]


class GATConv(nn.Module):
    """Multi-head attention over each node's in-edges (and a self-loop); PyG's names: `lin.weight`,
    `att_src`, `att_dst` [1, H, C], `lin_edge.weight` and `att_edge` with edge features,
    `res.weight` when residual, `bias`."""

    def __init__(self, in_channels: int, out_channels: int, *, heads: int, concat: bool, negative_slope: float,
                 dropout: float, add_self_loops: bool, edge_dim: Optional[int], fill_value: Union[str, float],
                 bias: bool, residual: bool):
        super().__init__()
        self.heads, self.out_channels, self.concat = heads, out_channels, concat
        self.negative_slope, self.dropout, self.add_self_loops = negative_slope, dropout, add_self_loops
        self.fill_value = fill_value
        hc = heads * out_channels
        total = hc if concat else out_channels
        self.lin = nn.Linear(in_channels, hc, bias=False)
        self.att_src = nn.Parameter(torch.empty(1, heads, out_channels))
        self.att_dst = nn.Parameter(torch.empty(1, heads, out_channels))
        if edge_dim is not None:
            self.lin_edge = nn.Linear(edge_dim, hc, bias=False)
            self.att_edge = nn.Parameter(torch.empty(1, heads, out_channels))
        else:
            self.lin_edge = None
            self.register_parameter("att_edge", None)
        self.res = nn.Linear(in_channels, total, bias=False) if residual else None
        self.bias = nn.Parameter(torch.zeros(total)) if bias else None
        for p in (self.lin.weight, self.att_src, self.att_dst, self.att_edge,
                  self.lin_edge.weight if self.lin_edge is not None else None,
                  self.res.weight if self.res is not None else None):
            if p is not None:
                nn.init.xavier_uniform_(p.view(-1, p.shape[-1]) if p.dim() == 3 else p)

    def _loop_attr(self, edge_attr: Tensor, dst: Tensor, keep: Tensor, n) -> Tensor:
        """The edge features of the appended self-loops: `fill_value`, or a reduction of each
        node's kept (not self-loop) in-edges' features, as PyG's `add_self_loops`."""
        if isinstance(self.fill_value, str):
            return scatter_kept(edge_attr, dst, keep, n, self.fill_value)
        return edge_attr.new_full((n, edge_attr.shape[1]), float(self.fill_value))

    def forward(self, graph: dict[str, Tensor], x: Optional[Tensor] = None) -> Tensor:
        x = graph["x"] if x is None else x
        src, dst = graph["edge_index"][0], graph["edge_index"][1]
        n, heads, c = x.shape[0], self.heads, self.out_channels
        h = self.lin(x).view(-1, heads, c)                                       # (N, H, C)
        a_src = (h * self.att_src).sum(-1)                                       # (N, H)
        a_dst = (h * self.att_dst).sum(-1)
        edge_attr = graph["edge_attr"] if self.lin_edge is not None else None
        keep = None
        if self.add_self_loops:
            keep = src != dst                                                    # existing self-loops drop out
            nodes = torch.arange(n, dtype=src.dtype, device=src.device)
            if edge_attr is not None:
                edge_attr = torch.cat([edge_attr, self._loop_attr(edge_attr, dst, keep, n)])
            keep = torch.cat([keep, torch.ones_like(nodes, dtype=torch.bool)])
            src, dst = torch.cat([src, nodes]), torch.cat([dst, nodes])
        alpha = a_src.index_select(0, src) + a_dst.index_select(0, dst)          # (E', H)
        if edge_attr is not None:
            e = self.lin_edge(edge_attr).view(-1, heads, c)                      # (E', H, C)
            alpha = alpha + (e * self.att_edge).sum(-1)
        alpha = F.leaky_relu(alpha, self.negative_slope)
        if keep is not None:
            alpha = alpha.masked_fill(~keep.unsqueeze(-1), float("-inf"))
        alpha = segment_softmax(alpha, dst, n)
        alpha = F.dropout(alpha, p=self.dropout, training=self.training)
        out = scatter_sum(gather_mul(h, src, alpha), dst, n)                     # (N, H, C)
        out = out.reshape(-1, heads * c) if self.concat else out.mean(dim=1)
        if self.res is not None:
            out = out + self.res(x)
        return out if self.bias is None else out + self.bias


@register
class GATConvBlock(Block):
    """Graph attention (GAT): each node attends over its in-edges and itself, with several heads.

    alpha_ji = softmax_j leaky_relu(a_s . W x_j + a_t . W x_i [+ a_e . W_e e_ji]); out_i =
    sum_j alpha_ji W x_j, heads concatenated (H * C features) or averaged (C). PyG `GATConv`'s
    weights load as they are."""
    name: ClassVar[str] = "gat_conv"
    family: ClassVar[str] = "graph"
    inputs: ClassVar = ports.GRAPH_INPUTS
    example: ClassVar = {"params": {"out_channels": 3, "heads": 2, "edge_features": True},
                         "inputs": {"graph": ports.graph_type(7, 12, 5, edge_dim=4)}}
    out_channels: PosInt            # per head
    heads: PosInt = 1
    concat: bool = True             # concatenate the heads (H * C features); false: their mean (C)
    negative_slope: float = 0.2     # of the leaky relu on the attention logits
    dropout: Prob = 0.0             # on the attention coefficients, in training
    add_self_loops: bool = True     # replace existing self-loops by one per node
    edge_features: bool = False     # the graph's `edge_attr` [E, Fe] enters the attention (Fe from the graph)
    fill_value: Union[FillReduce, float] = "mean"   # edge features of the added self-loops
    bias: bool = True
    residual: bool = False          # add a linear map of the input (PyG's `res`)

    def _total(self) -> int:
        return self.out_channels * (self.heads if self.concat else 1)

    def _check(self, graph: PortType, x: Optional[PortType]) -> tuple[PortType, int, Optional[int]]:
        feats, c = ports.in_channels(graph, x, "gat_conv")
        fe = None
        if self.edge_features:
            ports.require_field(graph, "edge_attr", "edge_features", "gat_conv")
            fe = ports.edge_dim(graph)
            if not isinstance(fe, int):
                raise InferError("gat_conv: the width of the graph's `edge_attr` must be a fixed size",
                                 port="graph", code="E302", expected="[E, Fe] with a fixed Fe", found=str(fe))
        if self.fill_value != "mean" and not (self.edge_features and self.add_self_loops):
            raise InferError("gat_conv: `fill_value` gives the edge features of added self-loops, and this layer "
                             "adds none with edge features", param="fill_value",
                             expected="`edge_features: true` and `add_self_loops: true`",
                             found=f"edge_features: {str(self.edge_features).lower()}, "
                                   f"add_self_loops: {str(self.add_self_loops).lower()}",
                             hint="drop `fill_value`")
        return feats, c, fe

    def infer(self, graph: PortType, x: Optional[PortType] = None) -> PortType:
        feats, _, _ = self._check(graph, x)
        return ports.nodes_type(feats.shape[0], self._total(), feats.dtype)

    def param_count(self, graph: PortType, x: Optional[PortType] = None) -> int:
        _, c, fe = self._check(graph, x)
        hc, total = self.heads * self.out_channels, self._total()
        return (c * hc + 2 * hc + (fe * hc + hc if fe is not None else 0) + (c * total if self.residual else 0)
                + (total if self.bias else 0))

    def build(self, graph: PortType, x: Optional[PortType] = None) -> nn.Module:
        _, c, fe = self._check(graph, x)
        return GATConv(c, self.out_channels, heads=self.heads, concat=self.concat,
                       negative_slope=self.negative_slope, dropout=self.dropout,
                       add_self_loops=self.add_self_loops, edge_dim=fe, fill_value=self.fill_value,
                       bias=self.bias, residual=self.residual)

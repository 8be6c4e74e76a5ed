"""GraphSAGE convolution: sage_conv, PyG's `SAGEConv` in export-safe torch ops.

PyG aggregates through `MessagePassing` (and, for max, `torch_scatter` or a path that is
special-cased under ONNX export); this version uses the scatter reductions of
`blocks.graph.scatter`, which keep N and E symbolic. tests/blocks/graph proves it equal to
`torch_geometric.nn.SAGEConv` and loads its state dict as it is.
"""

from __future__ import annotations

from typing import ClassVar, Literal, Optional

import torch.nn.functional as F
from torch import Tensor, nn

from composer.block import Block
from composer.params import PosInt
from composer.registry import register
from composer.types import PortType

from . import ports
from .scatter import scatter


class SAGEConv(nn.Module):
    """out = lin_l(aggr_{j -> i} x_j) + lin_r(x_i), optionally L2-normalised; PyG's names
    (`lin_l.weight`, `lin_l.bias`, `lin_r.weight`, `lin` when `project`)."""

    def __init__(self, in_channels: int, out_channels: int, *, aggr: str, root_weight: bool, normalize: bool,
                 project: bool, bias: bool):
        super().__init__()
        self.aggr, self.root_weight, self.normalize, self.project = aggr, root_weight, normalize, project
        if project:
            self.lin = nn.Linear(in_channels, in_channels, bias=True)
        self.lin_l = nn.Linear(in_channels, out_channels, bias=bias)
        self.lin_r = nn.Linear(in_channels, out_channels, bias=False) if root_weight else None

    def forward(self, graph: dict[str, Tensor], x: Optional[Tensor] = None) -> Tensor:
        x = graph["x"] if x is None else x
        src, dst = graph["edge_index"][0], graph["edge_index"][1]
        msg = self.lin(x).relu() if self.project else x
        agg = scatter(msg.index_select(0, src), dst, x.shape[0], self.aggr)      # (N, C_in); 0 without in-edges
        out = self.lin_l(agg)
        if self.lin_r is not None:
            out = out.add_(self.lin_r(x))                                        # fresh: in place
        return F.normalize(out, p=2.0, dim=-1) if self.normalize else out


@register
class SAGEConvBlock(Block):
    """GraphSAGE convolution: a linear map of the neighbours' mean (max, sum) plus one of the node itself.

    out_i = W_l aggr_{j -> i} x_j + b + W_r x_i; a node without in-edges aggregates 0. PyG
    `SAGEConv`'s weights load as they are."""
    name: ClassVar[str] = "sage_conv"
    family: ClassVar[str] = "graph"
    inputs: ClassVar = ports.GRAPH_INPUTS
    example: ClassVar = {"params": {"out_channels": 6, "aggr": "max"},
                         "inputs": {"graph": ports.graph_type(7, 12, 5)}}
    out_channels: PosInt
    aggr: Literal["mean", "max", "sum"] = "mean"
    root_weight: bool = True        # add W_r x_i (the node's own features)
    normalize: bool = False         # L2-normalise each output row
    project: bool = False           # relu(W x_j + b) on the neighbours before aggregating (PyG's `project`)
    bias: bool = True

    def infer(self, graph: PortType, x: Optional[PortType] = None) -> PortType:
        feats, _ = ports.in_channels(graph, x, "sage_conv")
        return ports.nodes_type(feats.shape[0], self.out_channels, feats.dtype)

    def param_count(self, graph: PortType, x: Optional[PortType] = None) -> int:
        _, c = ports.in_channels(graph, x, "sage_conv")
        o = self.out_channels
        return (c * c + c if self.project else 0) + c * o + (o if self.bias else 0) + (c * o if self.root_weight else 0)

    def build(self, graph: PortType, x: Optional[PortType] = None) -> nn.Module:
        _, c = ports.in_channels(graph, x, "sage_conv")
        return SAGEConv(c, self.out_channels, aggr=self.aggr, root_weight=self.root_weight,
                        normalize=self.normalize, project=self.project, bias=self.bias)

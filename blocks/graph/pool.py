"""Graph pooling: graph_pool, one vector per graph of a batch (mean, max, sum or attention).

The reductions are PyG's `global_mean_pool`, `global_max_pool`, `global_add_pool` and
`AttentionalAggregation`, written with the scatter ops of `blocks.graph.scatter` so that they
export: the graph count G = max(batch) + 1 is read from the data (`.item()`) and bounded with
`torch._check` (1 <= G <= N), which the dynamo exporter turns into a dynamic output dim.
tests/blocks/graph proves the results equal to PyG's.
"""

from __future__ import annotations

from typing import ClassVar, Literal, Optional

import torch
from torch import Tensor, nn

from blocks.core.activations import make_activation
from composer.block import Block
from composer.params import Activation, PosInt
from composer.registry import register
from composer.types import InferError, PortType

from . import ports
from .scatter import scatter, scatter_sum, segment_softmax


def num_graphs(batch: Tensor, n) -> int:
    """G = max(batch) + 1, the graph count of a batch vector (sorted, 0..G-1) of n nodes; under
    export an unbacked size bounded to 1 <= G <= n."""
    g = batch.max().item() + 1
    if not isinstance(g, int):          # a symbolic size under export; in eager a plain int needs no bound
        torch._check(g >= 1)
        torch._check(g <= n)
    return g


def stack(sizes: list[int], activation: Activation) -> nn.Module:
    """Linear layers of `sizes` with the activation between them; one Linear for two sizes."""
    if len(sizes) == 2:
        return nn.Linear(sizes[0], sizes[1])
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes, sizes[1:])):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers.append(make_activation(activation))
    return nn.Sequential(*layers)


class GraphPool(nn.Module):
    """[N, C] node features to [G, C'] graph features; with attention, PyG's names `gate_nn`, `nn`."""

    def __init__(self, reduce: str, batched: bool, gate_nn: Optional[nn.Module] = None,
                 transform: Optional[nn.Module] = None):
        super().__init__()
        self.reduce, self.batched = reduce, batched
        self.gate_nn = gate_nn
        self.nn = transform

    def forward(self, graph: dict[str, Tensor], x: Optional[Tensor] = None) -> Tensor:
        x = graph["x"] if x is None else x
        n = x.shape[0]
        if self.batched:
            batch = graph["batch"]
            g = num_graphs(batch, n)
        else:
            batch = torch.zeros(n, dtype=torch.int64, device=x.device)
            g = 1
        if self.reduce != "attention":
            return scatter(x, batch, g, self.reduce)                            # (G, C)
        gate = segment_softmax(self.gate_nn(x), batch, g)                       # (N, 1): softmax per graph
        h = x if self.nn is None else self.nn(x)                                # (N, C')
        return scatter_sum(gate * h, batch, g)


@register
class GraphPoolBlock(Block):
    """Graph pooling: one vector per graph, the mean, max or sum of its nodes, or an attention-weighted sum.

    Over the graph's `batch` field (one graph without it). `attention` is PyG's
    `AttentionalAggregation`: softmax over each graph's nodes of a gate (a linear layer, or an MLP
    of `gate_hidden`), weighting the node features (or an MLP `transform` of them)."""
    name: ClassVar[str] = "graph_pool"
    family: ClassVar[str] = "graph"
    inputs: ClassVar = ports.GRAPH_INPUTS
    example: ClassVar = {"params": {"reduce": "attention", "gate_hidden": [4], "transform": [6]},
                         "inputs": {"graph": ports.graph_type(9, 14, 5, batched=True)}}
    reduce: Literal["mean", "max", "sum", "attention"] = "mean"
    gate_hidden: list[PosInt] = []  # attention: hidden widths of the gate MLP (none: a linear gate)
    transform: list[PosInt] = []    # attention: widths of an MLP on the node features before weighting
    activation: Activation = "relu"  # between the layers of those MLPs

    def _check(self, graph: PortType, x: Optional[PortType]) -> tuple[PortType, int]:
        feats, c = ports.in_channels(graph, x, "graph_pool")
        if self.reduce != "attention":
            for param in ("gate_hidden", "transform"):
                if getattr(self, param):
                    raise InferError(f"graph_pool: `{param}` applies to `reduce: attention` only",
                                     param=param, expected="reduce: attention", found=f"reduce: {self.reduce}",
                                     hint=f"drop `{param}`, or set `reduce: attention`")
        return feats, c

    def _out(self, c: int) -> int:
        return self.transform[-1] if self.reduce == "attention" and self.transform else c

    def infer(self, graph: PortType, x: Optional[PortType] = None) -> PortType:
        feats, c = self._check(graph, x)
        return PortType("vector", (ports.graph_count(graph), self._out(c)), feats.dtype)

    def param_count(self, graph: PortType, x: Optional[PortType] = None) -> int:
        _, c = self._check(graph, x)
        if self.reduce != "attention":
            return 0
        count = 0
        for sizes in ([c, *self.gate_hidden, 1], [c, *self.transform] if self.transform else []):
            count += sum(a * b + b for a, b in zip(sizes, sizes[1:]))
        return count

    def build(self, graph: PortType, x: Optional[PortType] = None) -> nn.Module:
        _, c = self._check(graph, x)
        batched = ports.has_field(graph, "batch")
        if self.reduce != "attention":
            return GraphPool(self.reduce, batched)
        gate = stack([c, *self.gate_hidden, 1], self.activation)
        transform = stack([c, *self.transform], self.activation) if self.transform else None
        return GraphPool("attention", batched, gate, transform)

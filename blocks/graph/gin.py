"""Graph isomorphism network convolution: gin_conv, PyG's `GINConv` in export-safe torch ops.

PyG sums the neighbours through `MessagePassing`; this version sums them with the scatter of
`blocks.graph.scatter`, which keeps N and E symbolic for export. The MLP is an `nn.Sequential`
named `nn` as in `GINConv(Sequential(Linear, [BatchNorm1d,] ReLU, Linear))`, so PyG's state
dict loads as it is; tests/blocks/graph proves the outputs equal.
"""

from __future__ import annotations

from typing import ClassVar, Optional

import torch
from pydantic import Field
from torch import Tensor, nn

from blocks.core.activations import make_activation
from composer.block import Block
from composer.params import Activation, PosInt
from composer.registry import register
from composer.types import PortType

from . import ports
from .scatter import scatter_sum


class GINConv(nn.Module):
    """out = nn((1 + eps) x_i + sum_{j -> i} x_j); `eps` a Parameter when trained, else a buffer (PyG's)."""

    def __init__(self, mlp: nn.Sequential, eps: float, train_eps: bool):
        super().__init__()
        self.nn = mlp
        if train_eps:
            self.eps = nn.Parameter(torch.tensor([eps]))
        else:
            self.register_buffer("eps", torch.tensor([eps]))

    def forward(self, graph: dict[str, Tensor], x: Optional[Tensor] = None) -> Tensor:
        x = graph["x"] if x is None else x
        src, dst = graph["edge_index"][0], graph["edge_index"][1]
        out = scatter_sum(x.index_select(0, src), dst, x.shape[0])              # (N, C_in), fresh
        return self.nn(out.add_((1 + self.eps) * x))


def gin_mlp(sizes: list[int], activation: Activation, batch_norm: bool) -> nn.Sequential:
    """Linear, [BatchNorm1d,] activation, ..., Linear: the layout of PyG's GIN examples."""
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes, sizes[1:])):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2:
            if batch_norm:
                layers.append(nn.BatchNorm1d(b))
            layers.append(make_activation(activation))
    return nn.Sequential(*layers)


@register
class GINConvBlock(Block):
    """Graph isomorphism convolution (GIN): an MLP of the node's features plus the sum of its neighbours'.

    out_i = mlp((1 + eps) x_i + sum_{j -> i} x_j), the MLP Linear, [BatchNorm1d,] activation, ...,
    Linear. PyG `GINConv`'s weights load as they are."""
    name: ClassVar[str] = "gin_conv"
    family: ClassVar[str] = "graph"
    inputs: ClassVar = ports.GRAPH_INPUTS
    example: ClassVar = {"params": {"hidden": [8], "out_channels": 6, "batch_norm": True, "train_eps": True},
                         "inputs": {"graph": ports.graph_type(7, 12, 5)}}
    hidden: list[PosInt] = Field(min_length=1)   # the MLP's hidden widths
    out_channels: PosInt
    activation: Activation = "relu"
    batch_norm: bool = False        # BatchNorm1d after each hidden linear layer
    eps: float = 0.0                # the weight (1 + eps) of the node's own features
    train_eps: bool = False         # learn eps

    def _sizes(self, graph: PortType, x: Optional[PortType]) -> tuple[PortType, list[int]]:
        feats, c = ports.in_channels(graph, x, "gin_conv")
        return feats, [c, *self.hidden, self.out_channels]

    def infer(self, graph: PortType, x: Optional[PortType] = None) -> PortType:
        feats, _ = self._sizes(graph, x)
        return ports.nodes_type(feats.shape[0], self.out_channels, feats.dtype)

    def param_count(self, graph: PortType, x: Optional[PortType] = None) -> int:
        _, s = self._sizes(graph, x)
        linear = sum(a * b + b for a, b in zip(s, s[1:]))
        norms = 2 * sum(self.hidden) if self.batch_norm else 0
        return linear + norms + (1 if self.train_eps else 0)

    def build(self, graph: PortType, x: Optional[PortType] = None) -> nn.Module:
        _, s = self._sizes(graph, x)
        return GINConv(gin_mlp(s, self.activation, self.batch_norm), self.eps, self.train_eps)

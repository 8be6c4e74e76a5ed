"""The graph blocks export with the dynamo exporter, N and E (and the graph count G) dynamic, and
onnxruntime matches PyG at graph sizes other than the traced one: one size with an isolated
node, one without, and batches of another number of graphs for the pools. Each block config is
exported once (a few seconds each) and run at every size."""

from __future__ import annotations

import onnx
import onnxruntime as ort
import pytest
import torch
from torch import nn
from torch.export import Dim

from tests.blocks.graph._support import C, FE, close, make_batch, make_graph, paired

pyg = pytest.importorskip("torch_geometric.nn")
# the exporter names a dim once when two inputs share it (x and batch: N), and says so
pytestmark = pytest.mark.filterwarnings("ignore:# The axis name:UserWarning")

N, E = Dim("N", min=2), Dim("E", min=2)
DYNAMIC = {"x": {0: N}, "edge_index": {1: E}, "edge_weight": {0: E}, "edge_attr": {0: E}, "batch": {0: N}}

# traced at the first, checked at the others (7 nodes with an isolated one; 13 without)
GRAPHS = [make_graph(9, 20, C, seed=11, edge_dim=FE), make_graph(7, 13, C, seed=12, edge_dim=FE),
          make_graph(13, 31, C, seed=13, edge_dim=FE, isolated=False)]
BATCHES = [make_batch([(5, 8), (4, 6), (6, 9), (3, 3)], C, seed=20), make_batch([(5, 8), (3, 3), (7, 12)], C, seed=30),
           make_batch([(6, 10), (4, 4)], C, seed=40)]


class Flat(nn.Module):
    """A graph block's module with one tensor per graph field, as the tensor core passes them."""

    def __init__(self, inner: nn.Module, fields: tuple[str, ...]):
        super().__init__()
        self.inner, self.fields = inner, fields

    def forward(self, *tensors: torch.Tensor) -> torch.Tensor:
        return self.inner(dict(zip(self.fields, tensors)), None)


def export_and_check(ours: nn.Module, fields: tuple[str, ...], graphs: list[dict], reference, tmp_path) -> None:
    """Export at graphs[0]; at each other graph, onnxruntime equals `reference(graph)` (PyG)."""
    flat = Flat(ours, fields).eval()
    program = torch.onnx.export(flat, tuple(graphs[0][f] for f in fields), dynamo=True,
                                dynamic_shapes=(tuple(DYNAMIC[f] for f in fields),))
    path = tmp_path / "block.onnx"
    program.save(str(path))
    onnx.checker.check_model(str(path))
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]
    assert len(names) == len(fields)
    for g in graphs[1:]:
        (got,) = session.run(None, {n: g[f].numpy() for n, f in zip(names, fields)})
        with torch.no_grad():
            close(torch.from_numpy(got), reference(g))


def test_gcn_conv_exports(tmp_path):
    ref = pyg.GCNConv(C, 6, improved=True)
    ours = paired("gcn_conv", {"out_channels": 6, "improved": True, "edge_weight": True}, ref, edge_weight=True)
    export_and_check(ours, ("x", "edge_index", "edge_weight"), GRAPHS,
                     lambda g: ref(g["x"], g["edge_index"], g["edge_weight"]), tmp_path)


def test_sage_conv_exports(tmp_path):
    ref = pyg.SAGEConv(C, 6, aggr="max", normalize=True)
    ours = paired("sage_conv", {"out_channels": 6, "aggr": "max", "normalize": True}, ref)
    export_and_check(ours, ("x", "edge_index"), GRAPHS, lambda g: ref(g["x"], g["edge_index"]), tmp_path)


def test_gat_conv_exports(tmp_path):
    ref = pyg.GATConv(C, 3, heads=2, edge_dim=FE)
    ours = paired("gat_conv", {"out_channels": 3, "heads": 2, "edge_features": True}, ref, edge_dim=FE)
    export_and_check(ours, ("x", "edge_index", "edge_attr"), GRAPHS,
                     lambda g: ref(g["x"], g["edge_index"], g["edge_attr"]), tmp_path)


def test_gin_conv_exports(tmp_path):
    ref = pyg.GINConv(nn.Sequential(nn.Linear(C, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 6)), train_eps=True)
    ours = paired("gin_conv", {"hidden": [8], "out_channels": 6, "batch_norm": True, "train_eps": True}, ref)
    export_and_check(ours, ("x", "edge_index"), GRAPHS, lambda g: ref(g["x"], g["edge_index"]), tmp_path)


def test_graph_pool_max_exports_with_a_dynamic_graph_count(tmp_path):
    ours = paired("graph_pool", {"reduce": "max"}, nn.Module(), batched=True)
    export_and_check(ours, ("x", "edge_index", "batch"), BATCHES,
                     lambda g: pyg.global_max_pool(g["x"], g["batch"]), tmp_path)


def test_graph_pool_attention_exports(tmp_path):
    gate = nn.Sequential(nn.Linear(C, 4), nn.ReLU(), nn.Linear(4, 1))
    ref = pyg.aggr.AttentionalAggregation(gate, nn.Linear(C, 6))
    ours = paired("graph_pool", {"reduce": "attention", "gate_hidden": [4], "transform": [6]}, ref, batched=True)
    export_and_check(ours, ("x", "edge_index", "batch"), BATCHES, lambda g: ref(g["x"], g["batch"]), tmp_path)

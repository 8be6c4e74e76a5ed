"""A PyTorch Geometric model's state dict loads into the graph pipelines (`--weights model.pt`),
and the pipeline then gives the PyG model's outputs."""

from __future__ import annotations

import torch
from torch import nn

import composer
from composer.graph_data import random_graph
from composer.weights import load_weights
from tests.conftest import ROOT

pyg = __import__("torch_geometric.nn", fromlist=["GCNConv"])


class KarateGCN(nn.Module):
    """The node_classification spec written with PyG, blocks by the same names."""

    def __init__(self):
        super().__init__()
        self.conv1 = pyg.GCNConv(34, 16)
        self.conv2 = pyg.GCNConv(16, 2)

    def forward(self, x, edge_index):
        return self.conv2(self.conv1(x, edge_index).relu(), edge_index)


class MoleculeGIN(nn.Module):
    """The graph_classification spec written with PyG."""

    def __init__(self, features: int):
        super().__init__()

        def mlp(a):
            return nn.Sequential(nn.Linear(a, 32), nn.BatchNorm1d(32), nn.ReLU(), nn.Linear(32, 32))

        self.gin1 = pyg.GINConv(mlp(features), train_eps=True)
        self.gin2 = pyg.GINConv(mlp(32), train_eps=True)
        self.gin3 = pyg.GINConv(mlp(32), train_eps=True)
        self.head = nn.Sequential(nn.Linear(32, 32), nn.ReLU(), nn.Dropout(0.2), nn.Linear(32, 2))

    def forward(self, x, edge_index, batch):
        for conv in (self.gin1, self.gin2, self.gin3):
            x = conv(x, edge_index).relu()
        return self.head(pyg.global_add_pool(x, batch))


def _randomize(model: nn.Module) -> None:
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.copy_(torch.randn_like(p) * 0.3 + (1.0 if name.endswith("eps") else 0.0))
        for m in model.modules():
            if isinstance(m, nn.BatchNorm1d):
                m.running_mean.normal_()
                m.running_var.uniform_(0.5, 2.0)


def _same_outputs(spec: str, reference: nn.Module, tmp_path, graph: dict, args: tuple) -> None:
    torch.manual_seed(0)
    _randomize(reference)
    reference.eval()
    path = tmp_path / "pyg.pt"
    torch.save(reference.state_dict(), path)
    pipe = composer.load(ROOT / "pipelines" / spec)
    model = pipe.build().eval()
    report = load_weights(model, path)
    assert report.loaded == len(reference.state_dict())
    with torch.no_grad():
        want = reference(*args)
        got = model(**{f"graph_{k}": v for k, v in graph.items()})["logits"]
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


def test_pyg_gcn_state_dict_loads_into_node_classification(tmp_path):
    g = random_graph(34, 156, 34, torch.Generator().manual_seed(1))
    _same_outputs("node_classification.yaml", KarateGCN(), tmp_path, g, (g["x"], g["edge_index"]))


def test_pyg_gin_state_dict_loads_into_graph_classification(tmp_path):
    pipe = composer.load(ROOT / "pipelines" / "graph_classification.yaml")
    features = pipe.graph.types["graph"]["out"].field("x").shape[1]
    g = random_graph(40, 80, features, torch.Generator().manual_seed(2), batched=True)
    _same_outputs("graph_classification.yaml", MoleculeGIN(features), tmp_path, g,
                  (g["x"], g["edge_index"], g["batch"]))

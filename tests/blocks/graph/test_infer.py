"""Type inference of the graph blocks: output types, parameter counts, and the InferErrors of
configurations that cannot work (each names the param or port it concerns)."""

from __future__ import annotations

import pytest
import torch
from pydantic import ValidationError

from blocks.graph.ports import graph_type, nodes_type
from composer.dims import sym
from composer.registry import REGISTRY
from composer.types import InferError, PortType
from tests.blocks.graph._support import build

N, E = sym("N"), sym("E")
PLAIN = graph_type(N, E, 5)
RICH = graph_type(N, E, 5, edge_weight=True, edge_dim=3, batched=True)


def infer(name: str, params: dict, graph: PortType = PLAIN, x=None):
    return REGISTRY[name].model_validate(params).infer(graph=graph, x=x)


@pytest.mark.parametrize("name, params, width", [
    ("gcn_conv", {"out_channels": 6}, 6),
    ("sage_conv", {"out_channels": 6, "aggr": "sum"}, 6),
    ("gat_conv", {"out_channels": 4, "heads": 3}, 12),
    ("gat_conv", {"out_channels": 4, "heads": 3, "concat": False}, 4),
    ("gin_conv", {"hidden": [8], "out_channels": 6}, 6),
])
def test_convs_give_node_features(name, params, width):
    assert infer(name, params, RICH) == nodes_type(N, width)


@pytest.mark.parametrize("name, params, fields", [
    ("gcn_conv", {"out_channels": 6, "edge_weight": True, "bias": False}, {"edge_weight": True}),
    ("sage_conv", {"out_channels": 6, "project": True, "root_weight": False}, {}),
    ("gat_conv", {"out_channels": 4, "heads": 3, "edge_features": True, "residual": True}, {"edge_dim": 3}),
    ("gat_conv", {"out_channels": 4, "heads": 2, "concat": False, "residual": True, "bias": False}, {}),
    ("gin_conv", {"hidden": [8, 7], "out_channels": 6, "batch_norm": True}, {}),
    ("graph_pool", {"reduce": "attention", "gate_hidden": [4, 3], "transform": [6, 2]}, {"batched": True}),
    ("graph_pool", {"reduce": "sum"}, {}),
])
def test_param_count_matches_a_build(name, params, fields):
    t = graph_type(N, E, 5, **fields)
    block = REGISTRY[name].model_validate(params)
    module = build(name, params, **fields)
    assert block.param_count(graph=t) == sum(p.numel() for p in module.parameters())


def error(name: str, params: dict, graph: PortType = PLAIN, x=None) -> InferError:
    with pytest.raises(InferError) as info:
        infer(name, params, graph, x)
    return info.value


def test_edge_weight_needs_the_field():
    err = error("gcn_conv", {"out_channels": 4, "edge_weight": True})
    assert err.param == "edge_weight" and "edge_weight" in err.message and "has none" in err.message


def test_gcn_self_loops_need_normalization():
    err = error("gcn_conv", {"out_channels": 4, "normalize": False, "add_self_loops": True})
    assert err.param == "add_self_loops" and "normalize" in err.message
    assert infer("gcn_conv", {"out_channels": 4, "normalize": False}) == nodes_type(N, 4)   # loops default off


def test_gat_edge_features_need_edge_attr():
    err = error("gat_conv", {"out_channels": 4, "edge_features": True}, graph_type(N, E, 5, edge_weight=True))
    assert err.param == "edge_features" and "edge_attr" in err.message


def test_gat_fill_value_needs_edge_features_and_loops():
    err = error("gat_conv", {"out_channels": 4, "fill_value": "max"})
    assert err.param == "fill_value"
    err = error("gat_conv", {"out_channels": 4, "edge_features": True, "add_self_loops": False, "fill_value": 1.0},
                graph_type(N, E, 5, edge_dim=3))
    assert err.param == "fill_value"


@pytest.mark.parametrize("param", ["gate_hidden", "transform"])
def test_pool_mlps_are_for_attention_only(param):
    err = error("graph_pool", {"reduce": "mean", param: [4]})
    assert err.param == param and "attention" in err.message


def test_x_port_must_fit_the_graph():
    err = error("sage_conv", {"out_channels": 4}, PLAIN, nodes_type(sym("M"), 8))
    assert err.port == "x" and "rows" in err.message
    err = error("sage_conv", {"out_channels": 4}, PLAIN, PortType("sequence", (N, 3, 8)))
    assert err.port == "x"
    assert infer("sage_conv", {"out_channels": 4}, PLAIN, nodes_type(N, 8)) == nodes_type(N, 4)


def test_graph_port_takes_a_graph_with_float_features():
    assert error("gin_conv", {"hidden": [4], "out_channels": 2}, PortType("vector", (2, 5))).port == "graph"
    assert error("gcn_conv", {"out_channels": 2}, graph_type(N, E, 5, "int64")).port == "graph"
    assert error("gcn_conv", {"out_channels": 2}, graph_type(N, E, sym("F"))).port == "graph"


@pytest.mark.parametrize("name, params", [
    ("gat_conv", {"out_channels": 4, "heads": 0}),
    ("gat_conv", {"out_channels": 4, "dropout": 1.0}),
    ("gat_conv", {"out_channels": 4, "fill_value": "median"}),
    ("sage_conv", {"out_channels": 4, "aggr": "lstm"}),
    ("gin_conv", {"hidden": [], "out_channels": 4}),
    ("graph_pool", {"reduce": "median"}),
    ("gcn_conv", {"out_channels": 4, "cached": True}),
])
def test_bad_params_are_rejected(name, params):
    with pytest.raises(ValidationError):
        REGISTRY[name].model_validate(params)


def test_graph_pool_without_batch_gives_one_row():
    module = build("graph_pool", {"reduce": "attention"})
    out = module({"x": torch.randn(4, 5), "edge_index": torch.zeros(2, 0, dtype=torch.int64)}, None)
    assert out.shape == (1, 5)

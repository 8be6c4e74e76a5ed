"""Graph inputs: declared by their fields, random graphs that are valid, every bad graph a clear
error (from a file, or given to a compiled model), graph files read for `composer run`."""

from __future__ import annotations

import json
import subprocess

import numpy as np
import pytest
import torch

import composer
from composer.graph_data import GraphError, check_graph, join, random_graph, read_graph_file, split_batch
from composer.inputs import random_inputs, specs_from_pipeline
from tests.conftest import COMPOSER

SPEC = """
pipeline: graph_input
labels: [left, right]
dims:
  N: {sizes: [10, 17]}
  E: {sizes: [20, 41]}
inputs:
  graph:
    kind: graph
    fields: {x: [N, 4], edge_index: [2, E]%s}
blocks:
  scores: {block: dense, in: graph.x, out_features: 2}
outputs:
  logits: scores
"""


def _pipe(write_spec, extra: str = ""):
    return composer.load(write_spec(SPEC % extra))


def test_fields_are_core_inputs_joined_into_a_checked_dict(write_spec):
    pipe = _pipe(write_spec, ", edge_weight: [E], batch: [N]")
    t = pipe.graph.types["graph"]["out"]
    assert t.kind == "graph" and [n for n, _ in t.fields] == ["x", "edge_index", "edge_weight", "batch"]
    specs = specs_from_pipeline(pipe)
    assert list(specs) == ["graph_x", "graph_edge_index", "graph_edge_weight", "graph_batch"]
    assert {s.group for s in specs.values()} == {"graph"}
    model = pipe.build()
    assert model.input_names == tuple(specs)
    assert "graph_value('graph'" in model.code
    inputs = random_inputs(specs, {"N": 10, "E": 20})
    assert model(**inputs)["logits"].shape == (10, 2)


@pytest.mark.parametrize("n,e,batched", [(1, 0, False), (2, 5, False), (10, 20, True), (17, 41, True), (40, 3, True)])
def test_random_graphs_are_valid(n, e, batched):
    g = random_graph(n, e, 3, torch.Generator().manual_seed(0), edge_weight=True, edge_dim=2, batched=batched)
    check_graph(g, "random")
    assert g["x"].shape == (n, 3) and g["edge_index"].shape == (2, e) and g["edge_attr"].shape == (e, 2)
    if n >= 2:   # the last node is isolated
        assert not (g["edge_index"] == n - 1).any()
    if batched:
        b = g["batch"]
        sizes = torch.bincount(b)
        assert len(sizes) > 1 or n < 8
        assert len(set(sizes.tolist())) == len(sizes)        # graphs of different sizes
        assert (b[g["edge_index"][0]] == b[g["edge_index"][1]]).all()   # edges stay inside their graph


def _graph(**changes):
    g = {"x": np.zeros((4, 2), np.float32), "edge_index": np.array([[0, 1, 2], [1, 2, 3]]),
         "batch": np.array([0, 0, 1, 1])}
    g.update(changes)
    return {k: v for k, v in g.items() if v is not None}


@pytest.mark.parametrize("changes,message", [
    ({"edge_index": np.array([[0, 4], [1, 2]])}, r"edge 1 \(4 -> 2\) names node 4, and the graph has 4 nodes"),
    ({"edge_index": np.array([[0, -1], [1, 2]])}, r"edge 1 \(-1 -> 2\) names a negative node id"),
    ({"edge_index": np.array([[0., 1.], [1., 2.]])}, "edge_index holds node ids, so it must be int64, not float64"),
    ({"edge_index": np.array([[0, 1], [1, 2], [2, 3]])}, r"edge_index must be \[2, E\]"),
    ({"x": np.zeros((0, 2), np.float32), "batch": None}, "the graph is empty"),
    ({"batch": np.array([0, 1, 0, 1])}, "batch is not sorted: node 2 is in graph 0 after a node of graph 1"),
    ({"batch": np.array([1, 1, 2, 2])}, "batch must start at graph 0"),
    ({"batch": np.array([0, 0, 2, 2])}, "batch skips a graph"),
    ({"batch": np.array([0, 0, 1])}, "batch has 3 entries for 4 nodes"),
    ({"edge_weight": np.ones(2, np.float32)}, "edge_weight has 2 rows for 3 edges"),
])
def test_bad_graphs_are_clear_errors(changes, message):
    with pytest.raises(GraphError, match=message):
        check_graph(_graph(**changes), "g")


def test_compiled_model_refuses_a_bad_graph_before_any_scatter(write_spec):
    model = _pipe(write_spec).build()
    inputs = random_inputs(specs_from_pipeline(model.pipeline), {"N": 10, "E": 20})
    inputs["graph_edge_index"][1, 5] = 10
    with pytest.raises(GraphError, match=r"graph input `graph`: edge 5 .* names node 10, and the graph has 10 nodes"):
        model(**inputs)
    assert issubclass(GraphError, composer.ComposerError)


def test_graph_files_json_nodes_jsonl_and_npz(tmp_path):
    one = {"nodes": [{"x": [1, 0], "y": 0}, {"x": [0, 1], "y": 1}, {"x": [1, 1], "y": 1}],
           "edges": [[0, 1], [1, 2], [2, 2]], "undirected": True}
    (tmp_path / "g.json").write_text(json.dumps(one))
    (g,) = read_graph_file(tmp_path / "g.json", "t")
    assert g["x"].dtype == np.float32 and g["y"].tolist() == [0, 1, 1]
    assert g["edge_index"].T.tolist() == [[0, 1], [1, 2], [2, 2], [1, 0], [2, 1]]   # the self-loop once
    two = {"x": [[0.5, 0.5]], "edge_index": [[], []], "y": 3}
    (tmp_path / "g.jsonl").write_text(json.dumps(one) + "\n\n" + json.dumps(two) + "\n")
    graphs = read_graph_file(tmp_path / "g.jsonl", "t")
    assert [gr["x"].shape[0] for gr in graphs] == [3, 1] and graphs[1]["edge_index"].shape == (2, 0)
    batch = join(graphs, ["x", "edge_index", "batch"])
    assert batch["batch"].tolist() == [0, 0, 0, 1] and batch["edge_index"].shape == (2, 5)
    np.savez(tmp_path / "g.npz", **batch, y=np.array([7, 3]))
    back = read_graph_file(tmp_path / "g.npz", "t")
    assert [gr["y"] for gr in back] == [7, 3]
    for a, b in zip(back, graphs):
        assert np.array_equal(a["edge_index"], b["edge_index"]) and np.array_equal(a["x"], b["x"])


@pytest.mark.parametrize("text,message", [
    ('{"x": [[1], [2]], "edges": [[0, 1.5]]}', r"`edges` holds node ids, which are integers, and it has floats \(found 1.5\)"),
    ('{"x": [[1], [2]], "edges": [[0, 2]]}', r"edge 0 \(0 -> 2\) names node 2, and the graph has 2 nodes"),
    ('{"x": [[1], [2]]}', "the graph has no `edges`"),
    ('{"edges": []}', "the graph has no node features"),
    ('{"x": [[1], [2, 3]], "edges": []}', "`x` is not a rectangular array of numbers"),
    ('{"x": [[1]], ', "not valid JSON"),
    ('{"graphs": [{"x": [[1]], "edges": []}, {"x": [], "edges": []}]}', r"graphs\[1\]: the graph is empty"),
])
def test_bad_graph_files_name_the_file(tmp_path, text, message):
    (tmp_path / "bad.json").write_text(text)
    with pytest.raises(GraphError, match=message) as info:
        read_graph_file(tmp_path / "bad.json", "t")
    assert "bad.json" in str(info.value)


def test_graphs_of_a_batch_share_their_widths():
    graphs = [{"x": np.zeros((2, 3)), "edge_index": np.zeros((2, 0), np.int64)},
              {"x": np.zeros((1, 2)), "edge_index": np.zeros((2, 0), np.int64)}]
    with pytest.raises(GraphError, match=r"graph 1 has `x` of shape \[1, 2\], and graph 0 of shape \[2, 3\]"):
        join(graphs, ["x", "edge_index"])


def test_a_batch_edge_across_graphs_is_refused():
    with pytest.raises(GraphError, match="joins two graphs"):
        split_batch({"x": np.zeros((4, 1)), "edge_index": np.array([[0], [3]]), "batch": np.array([0, 0, 1, 1])})


def test_composer_run_prints_a_label_per_node_torch_and_onnx(write_spec, tmp_path):
    spec = write_spec(SPEC % "")
    graph = {"x": np.eye(5, 4).tolist(), "edges": [[0, 1], [1, 2], [3, 4]], "undirected": True}
    (tmp_path / "g.json").write_text(json.dumps(graph))
    lines = {}
    for backend in ("torch", "onnx"):
        r = subprocess.run([COMPOSER, "run", str(spec), "--input", f"graph={tmp_path / 'g.json'}", "--backend", backend],
                           capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stderr
        lines[backend] = [ln for ln in r.stdout.splitlines() if ln.strip().startswith("[node ")]
        assert len(lines[backend]) == 5 and all(("left" in ln and "right" in ln) for ln in lines[backend])
    assert lines["torch"] == lines["onnx"]


@pytest.mark.parametrize("graph,message", [
    ({"x": [[1, 0, 0, 0]], "edges": [[0, 3]]}, "names node 3, and the graph has 1 nodes"),
    ({"x": [[1, 0, 0]], "edges": []}, r"input `graph_x` from .* has shape \[1, 3\], expected \[N, 4\]: axis 1 must be 4"),
    ({"graphs": [{"x": [[1, 0, 0, 0]], "edges": []}] * 2}, "holds 2 graphs, and the input takes one graph"),
])
def test_composer_run_bad_graph_files(write_spec, tmp_path, graph, message):
    import re
    spec = write_spec(SPEC % "")
    (tmp_path / "g.json").write_text(json.dumps(graph))
    r = subprocess.run([COMPOSER, "run", str(spec), "--input", f"graph={tmp_path / 'g.json'}"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 1 and re.search(message, r.stderr), r.stderr
    assert "Traceback" not in r.stderr

"""Graph data in `composer train` / `composer eval` (`format: graph`): node classification on one
graph split by its masks or its nodes, graph classification over batches of graphs, JSON and
.npz files giving the same examples, bad graph data named by file, graph and node before the
first step, and a train / resume / eval round through the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

import composer
from composer.cli import app
from composer.train.data import DataError, make_loader, open_splits
from composer.train.plan import plan as make_plan
from composer.train.run import train
from tests.train.conftest import generate

ROOT = Path(__file__).resolve().parents[2]
GRAPHS = ROOT / "pipelines" / "data" / "graphs"

NODES = """
pipeline: nodes
seed: 0
dims:
  N: {{sizes: [12, 19]}}
  E: {{sizes: [30, 47]}}
inputs:
  graph:
    kind: graph
    fields: {{x: [N, {f}], edge_index: [2, E]{extra}}}
blocks:
{blocks}
outputs:
  logits: {out}
train:
{train}
"""

GCN = """  conv1: {block: gcn_conv, in: graph, out_channels: 16}
  act1: {block: relu, in: conv1}
  drop1: {block: dropout, in: act1, p: 0.5}
  conv2: {block: gcn_conv, in: {graph: graph, x: drop1}, out_channels: CLASSES}"""

MLP = """  conv1: {block: dense, in: graph.x, out_features: 16}
  act1: {block: relu, in: conv1}
  drop1: {block: dropout, in: act1, p: 0.5}
  conv2: {block: dense, in: drop1, out_features: CLASSES}"""

GIN = """  gin1: {block: gin_conv, in: graph, hidden: [32], out_channels: 32, batch_norm: true, train_eps: true}
  act1: {block: relu, in: gin1}
  gin2: {block: gin_conv, in: {graph: graph, x: act1}, hidden: [32], out_channels: 32, batch_norm: true, train_eps: true}
  act2: {block: relu, in: gin2}
  gin3: {block: gin_conv, in: {graph: graph, x: act2}, hidden: [32], out_channels: 32, batch_norm: true, train_eps: true}
  act3: {block: relu, in: gin3}
  pool: {block: graph_pool, in: {graph: graph, x: act3}, reduce: sum}
  head: {block: mlp, in: pool, hidden: [32], out_features: CLASSES, dropout: 0.2}"""


def spec(folder: Path, train_body: str, *, blocks: str = GCN, f: int = 8, classes: int = 4, out: str = "conv2",
         batch: bool = False, name: str = "spec.yaml") -> Path:
    path = folder / name
    path.write_text(NODES.format(f=f, extra=", batch: [N]" if batch else "", out=out,
                                 blocks=blocks.replace("CLASSES", str(classes)),
                                 train="\n".join("  " + line for line in train_body.strip().splitlines())))
    return path


def _train(path: Path, folder: Path, **kw):
    return train(composer.load(path, **kw), folder, progress=False, echo=lambda line: None)


def node_spec(folder: Path, data: str, extra: str = "", **kw) -> Path:
    return spec(folder, f"data: {{format: graph, train: {data}}}\nmetrics: {{logits: [accuracy]}}\n"
                        "optimizer: {type: adam, lr: 0.01, weight_decay: 5.0e-4}\nbatch_size: 1\n" + extra, **kw)


def gin_spec(folder: Path, data: str, extra: str = "", **kw) -> Path:
    return spec(folder, f"data: {{format: graph, train: {data}, val_fraction: 0.2}}\nmetrics: {{logits: [accuracy]}}\n"
                        "optimizer: {type: adamw, lr: 0.01}\nschedule: {type: cosine}\nbatch_size: 32\n" + extra,
                blocks=GIN, f=4, classes=2, out="head", batch=True, **kw)


# ---- learning --------------------------------------------------------------------------------


def test_gcn_learns_the_communities_an_mlp_cannot_see(tmp_path):
    """The shipped community graph: 48 labelled nodes (train_mask), 192 to validate (val_mask);
    a 2-layer GCN reads the communities from the edges, an MLP on the noisy features cannot."""
    data = GRAPHS / "communities.json"
    gcn = _train(node_spec(tmp_path, data, "epochs: 30"), tmp_path / "gcn")
    mlp = _train(node_spec(tmp_path, data, "epochs: 30", blocks=MLP, name="mlp.yaml"), tmp_path / "mlp")
    assert gcn.metrics["val/accuracy"] >= 0.88, gcn.metrics         # measured 0.94
    assert mlp.metrics["val/accuracy"] <= 0.5, mlp.metrics          # measured 0.35 (4 classes)
    assert gcn.steps == 30                                          # one graph: one step per epoch


def test_gin_classifies_rings_and_trees(tmp_path):
    """Batches of 32 molecules joined into one graph with `batch`; one label per graph."""
    result = _train(gin_spec(tmp_path, GRAPHS / "molecules.jsonl", "epochs: 20"), tmp_path / "gin")
    assert result.metrics["val/accuracy"] >= 0.9, result.metrics    # measured 1.0 (60 graphs)
    assert result.steps == 20 * (240 // 32)


# ---- the examples -----------------------------------------------------------------------------


def test_jsonl_and_npz_give_the_same_examples(tmp_path):
    pipes = [composer.load(gin_spec(tmp_path, GRAPHS / f"molecules.{ext}", "epochs: 1", name=f"{ext}.yaml"))
             for ext in ("jsonl", "npz")]
    (a, va), (b, vb) = [open_splits(make_plan(p), tmp_path, 0) for p in pipes]
    assert len(a) == len(b) == 240 and len(va) == len(vb) == 60
    for i in (0, 17, 239):
        x, y = a[i], b[i]
        assert set(x) == set(y) == {"graph", "y"}
        assert x["y"].shape == () and int(x["y"]) == int(y["y"])
        for fld in ("x", "edge_index"):
            np.testing.assert_array_equal(x["graph"][fld], y["graph"][fld])
    batches = [next(iter(make_loader(s, make_plan(p), train=False, batch_size=32, seed=0)))
               for s, p in ((va, pipes[0]), (vb, pipes[1]))]
    for key in ("graph_x", "graph_edge_index", "graph_batch"):
        assert torch.equal(batches[0]["inputs"][key], batches[1]["inputs"][key])
    assert torch.equal(batches[0]["targets"]["logits"], batches[1]["targets"]["logits"])
    assert "molecules.jsonl:" in a.where(3) and "molecules.npz: graphs[" in b.where(3)


def test_a_batch_of_graphs_is_one_disjoint_graph(tmp_path):
    graphs = [{"x": [[1.0, 0], [0, 1], [1, 1]], "edges": [[0, 1], [1, 2]], "y": [0, 1, 1]},
              {"x": [[0.0, 1], [1, 0]], "edges": [[1, 0]], "y": [1, 0]}]
    data = tmp_path / "two.json"
    data.write_text(json.dumps({"graphs": graphs}))
    pipe = composer.load(spec(tmp_path, f"data: {{format: graph, train: {data}}}\nbatch_size: 2",
                              blocks=MLP, f=2, classes=2, batch=True))
    p = make_plan(pipe)
    assert p.inputs["graph"].kind == "graph" and set(p.inputs["graph"].graph) == {"x", "edge_index", "batch"}
    assert p.targets["logits"].level == "node" and p.targets["logits"].field == "y"
    train_split, _ = open_splits(p, tmp_path, 0)
    batch = next(iter(make_loader(train_split, p, train=False, batch_size=2, seed=0)))
    inp = batch["inputs"]
    assert inp["graph_x"].shape == (5, 2) and inp["graph_x"].dtype == torch.float32
    assert inp["graph_edge_index"].tolist() == [[0, 1, 4], [1, 2, 3]]          # the second graph's ids + 3
    assert inp["graph_batch"].tolist() == [0, 0, 0, 1, 1]
    assert batch["targets"]["logits"].tolist() == [0, 1, 1, 1, 0]               # per node, concatenated
    out = pipe.build()(**inp)["logits"]
    assert out.shape == (5, 2)


def test_one_graph_splits_by_its_masks_or_its_nodes(tmp_path):
    pipe = composer.load(node_spec(tmp_path, GRAPHS / "karate.json", "epochs: 1", f=34, classes=2))
    p = make_plan(pipe)
    tr, va = open_splits(p, tmp_path, 0)
    raw = json.loads((GRAPHS / "karate.json").read_text())
    y, train_mask = np.asarray(raw["y"]), np.asarray(raw["train_mask"], bool)
    assert len(tr) == len(va) == 1 and train_mask.sum() == 8 and set(y[train_mask]) == {0, 1}
    ty, vy = tr[0]["y"], va[0]["y"]
    np.testing.assert_array_equal(ty, np.where(train_mask, y, -100))
    np.testing.assert_array_equal(vy, np.where(train_mask, -100, y))
    assert tr[0]["graph"]["edge_index"].shape == (2, 156)

    # without masks, val_fraction splits the labelled nodes, seeded, disjoint; unlabelled nodes stay out
    bare = dict(raw)
    del bare["train_mask"], bare["val_mask"]
    bare["y"] = [-100 if i == 5 else v for i, v in enumerate(raw["y"])]
    (tmp_path / "bare.json").write_text(json.dumps(bare))
    splits = []
    for seed in (0, 0, 1):
        s = node_spec(tmp_path, "bare.json", "epochs: 1", f=34, classes=2, name="bare.yaml")
        s.write_text(s.read_text().replace("train: bare.json}", "train: bare.json, val_fraction: 0.25}"))
        tr, va = open_splits(make_plan(composer.load(s)), tmp_path, seed)
        splits.append((tr[0]["y"] != -100, va[0]["y"] != -100))
    (t0, v0), (t1, v1), (t2, v2) = splits
    assert v0.sum() == 9 and t0.sum() == 24 and not (t0 & v0).any() and not t0[5] and not v0[5]
    assert (v0 == v1).all() and not (v0 == v2).all()


def test_metrics_and_loss_ignore_the_nodes_outside_the_split(tmp_path):
    """eval's accuracy is the accuracy over val_mask's nodes only."""
    s = node_spec(tmp_path, GRAPHS / "karate.json", "epochs: 8", f=34, classes=2)
    _train(s, tmp_path / "run")
    from composer.train.evaluation import evaluate
    pipe = composer.load(s)
    result = evaluate(pipe, tmp_path / "run" / "best.safetensors", accelerator="cpu")
    model = pipe.build().eval()
    from composer.weights import load_weights
    load_weights(model, tmp_path / "run" / "best.safetensors")
    raw = json.loads((GRAPHS / "karate.json").read_text())
    with torch.no_grad():
        pred = model(graph_x=torch.tensor(raw["x"], dtype=torch.float32),
                     graph_edge_index=torch.tensor(raw["edges"]).T.contiguous())["logits"].argmax(1).numpy()
    val = np.asarray(raw["val_mask"], bool)
    assert result.metrics["accuracy"] == pytest.approx(float((pred[val] == np.asarray(raw["y"])[val]).mean()))


# ---- bad data ---------------------------------------------------------------------------------


def _bad(tmp_path, data: dict | str, *, lines: bool = False, graph_level: bool = False, batch_size: int = 1,
         f: int = 2, batch: bool = False):
    path = tmp_path / ("bad.jsonl" if lines else "bad.json")
    path.write_text("\n".join(json.dumps(g) for g in data) + "\n" if lines else json.dumps(data))
    if graph_level:
        blocks = ("  h: {block: dense, in: graph.x, out_features: 4}\n"
                  "  pool: {block: graph_pool, in: {graph: graph, x: h}, reduce: mean}\n"
                  "  head: {block: dense, in: pool, out_features: 4}")
        s = spec(tmp_path, f"data: {{format: graph, train: {path.name}}}\nbatch_size: {batch_size}", blocks=blocks, f=f,
                 out="head", batch=batch)
    else:
        s = spec(tmp_path, f"data: {{format: graph, train: {path.name}}}\nbatch_size: {batch_size}", blocks=MLP, f=f,
                 batch=batch)
    with pytest.raises(DataError) as err:
        open_splits(make_plan(composer.load(s)), tmp_path, 0)[0].check(make_plan(composer.load(s)))
    return str(err.value), str(path)


def _g(n: int = 3, y=None, f: int = 2, **extra) -> dict:
    g = {"x": [[float(i)] * f for i in range(n)], "edges": [[i, i + 1] for i in range(n - 1)]}
    if y is not None:
        g["y"] = y
    g.update(extra)
    return g


def test_bad_graph_data_names_the_file_the_graph_and_the_node(tmp_path):
    graphs = [_g(8, [0] * 8) for _ in range(4)]
    graphs[3]["y"] = [0, 1, 2, 3, 0, 1, 2, 5]
    msg, path = _bad(tmp_path, {"graphs": graphs}, batch=True, batch_size=2)
    assert msg == f"{path}: graphs[3]: node 7 has label 5, and output `logits` has 4 classes (ids 0..3, or -100 to " \
                  "ignore it)"

    msg, path = _bad(tmp_path, [_g(3, [0, 1, 2]), _g(3, [0, 1, 2], f=3)], lines=True, batch=True, batch_size=2)
    assert msg.startswith(f"{path}:2: x has 3 features per node, and input `graph` takes 2"), msg

    msg, path = _bad(tmp_path, _g(4))
    assert msg.startswith(f"{path}: the graph has no `y`, and output `logits` [N, 4] learns a label per node"), msg

    msg, path = _bad(tmp_path, _g(4, [0, 1, 1, 0], train_mask=[1, 0, 1]))
    assert msg.startswith(f"{path}: train_mask has 3 entries for 4 nodes"), msg

    msg, path = _bad(tmp_path, _g(4, [0, 1, 1]))
    assert msg.startswith(f"{path}: `y` has 3 entries for 4 nodes"), msg

    msg, path = _bad(tmp_path, [_g(3, 1), _g(4, [0, 1, 1, 0])], lines=True, graph_level=True, batch=True)
    assert msg.startswith(f"{path}:2: `y` has a label per node (4), and output `logits` [G, 4] learns one label "
                          "per graph"), msg

    msg, path = _bad(tmp_path, [_g(3, 1), _g(3, 7)], lines=True, graph_level=True, batch=True)
    assert msg.startswith(f"{path}:2: the graph has label 7, and output `logits` has 4 classes"), msg

    msg, path = _bad(tmp_path, [_g(3, [0, 1, 2]), _g(3, [0, 1, 2])], lines=True, batch_size=2)
    assert msg.startswith(f"{path}: input `graph` takes one graph (it has no `batch` field), and `batch_size: 2`"), msg

    msg, path = _bad(tmp_path, {"graphs": [_g(3, [0, 1, 2]), {"x": [[0.0, 0.0]], "edges": [[0, 1]]}]}, batch=True)
    assert msg.startswith(f"{path}: graphs[1]: edge 0 (0 -> 1) names node 1, and the graph has 1 nodes"), msg


def test_graph_inputs_need_the_graph_format(tmp_path):
    s = spec(tmp_path, "data: {format: jsonl, train: d.jsonl}", blocks=MLP)
    (tmp_path / "d.jsonl").write_text('{"y": 1}\n')
    with pytest.raises(DataError, match=r"input `graph` is a graph, and `format: jsonl` holds no graphs"):
        open_splits(make_plan(composer.load(s)), tmp_path, 0)


# ---- the CLI ----------------------------------------------------------------------------------


def test_train_resume_and_eval_through_the_cli(tmp_path):
    runner = CliRunner()
    s = node_spec(tmp_path, GRAPHS / "karate.json", "epochs: 4", f=34, classes=2)
    run = tmp_path / "run"
    r = runner.invoke(app, ["train", str(s), "-o", str(run), "--no-progress"])
    assert r.exit_code == 0, r.output
    assert "trained nodes: 4 steps, 4 epochs" in r.output and "val/accuracy" in r.output
    r = runner.invoke(app, ["train", str(s), "-o", str(run), "--no-progress", "--resume", "--set", "train.epochs=6"])
    assert r.exit_code == 0, r.output
    assert "6 steps, 6 epochs" in r.output
    r = runner.invoke(app, ["eval", str(s), "--weights", str(run / "best.safetensors")])
    assert r.exit_code == 0, r.output
    saved = json.loads((run / "eval.json").read_text())
    assert saved["examples"] == 1 and 0.0 <= saved["metrics"]["accuracy"] <= 1.0
    r = runner.invoke(app, ["eval", str(s), "--weights", str(run / "best.safetensors"), "--data",
                            str(GRAPHS / "communities.json"), "-o", str(tmp_path / "e.json")])
    assert r.exit_code == 1 and "x has 8 features per node, and input `graph` takes 34" in r.output, r.output
    assert "Traceback" not in r.output


def test_generate_writes_the_shipped_graphs(tmp_path):
    """generate.py is deterministic: it writes the files shipped in pipelines/data/graphs."""
    generate.write_communities(tmp_path / "communities.json", seed=0)
    generate.write_karate(tmp_path / "karate.json")
    generate.write_molecules(tmp_path / "molecules.jsonl", tmp_path / "molecules.npz", 300, seed=0)
    for name in ("communities.json", "karate.json", "molecules.jsonl"):
        assert (tmp_path / name).read_text() == (GRAPHS / name).read_text(), name
    with np.load(tmp_path / "molecules.npz") as a, np.load(GRAPHS / "molecules.npz") as b:
        assert sorted(a.files) == sorted(b.files) == ["batch", "edge_index", "x", "y"]
        for k in a.files:
            np.testing.assert_array_equal(a[k], b[k])
    for name in ("communities.json", "karate.json", "molecules.jsonl", "molecules.npz"):
        assert (GRAPHS / name).stat().st_size < 300_000

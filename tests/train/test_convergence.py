"""The pipelines that train, on data generated here, each reaching a stated metric: the tabular
MLP, the shapes CNN (accuracy >= 0.95), the LSTM forecaster on sine waves (MSE below a bound),
the text classifier through its tokenizer, a small Faster R-CNN on COCO-format boxes (mAP), and
the four graph pipelines on their shipped graphs (node and graph classification accuracy)."""

from __future__ import annotations

from pathlib import Path

import pytest

import composer
from composer.train import train
from tests.train.conftest import generate

ROOT = Path(__file__).resolve().parents[2]


def _run(tmp_path, spec: Path, overrides: list[str]):
    pipe = composer.load(spec, overrides=overrides)
    return train(pipe, tmp_path / "run", progress=False, echo=lambda line: None)


def test_tabular_mlp_learns_a_generated_table(tmp_path):
    generate.write_table(tmp_path / "train.csv", 600, features=32, seed=3)
    generate.write_table(tmp_path / "val.csv", 200, features=32, seed=4)
    result = _run(tmp_path, ROOT / "pipelines" / "tabular_mlp.yaml",
                  [f"train.data.train={tmp_path}/train.csv", f"train.data.val={tmp_path}/val.csv"])
    assert result.best >= 0.9, result.metrics             # best val/accuracy


def test_shapes_cnn_reaches_95_percent(tmp_path):
    generate.write_shapes(tmp_path / "train", 120, size=64, seed=5)
    generate.write_shapes(tmp_path / "val", 30, size=64, seed=6)
    result = _run(tmp_path, ROOT / "pipelines" / "shapes_classifier.yaml",
                  [f"train.data.train={tmp_path}/train", f"train.data.val={tmp_path}/val"])
    assert result.best >= 0.95, result.metrics
    assert result.metrics["val/accuracy"] >= 0.95


def test_lstm_forecaster_learns_sine_waves(tmp_path):
    (tmp_path / "load").mkdir()
    generate.write_load(tmp_path / "load" / "train.csv", 1200, seed=7)
    generate.write_load(tmp_path / "load" / "val.csv", 400, seed=8)
    result = _run(tmp_path, ROOT / "pipelines" / "timeseries.yaml",
                  [f"train.data.train={tmp_path}/load/train.csv", f"train.data.val={tmp_path}/load/val.csv",
                   "train.data.stride=2", "train.epochs=12", "encoder.hidden=32"])
    # the load's variance is about 0.45: predicting its mean gives MSE 0.45, the cycles bring it under 0.05
    assert result.metrics["val/loss"] < 0.05, result.metrics
    assert result.metrics["val/mae"] < 0.2


def test_text_classifier_learns_a_generated_corpus(tmp_path):
    generate.write_corpus(tmp_path / "train.jsonl", 400, seed=9)
    generate.write_corpus(tmp_path / "val.jsonl", 100, seed=10)
    result = _run(tmp_path, ROOT / "pipelines" / "text_classifier.yaml",
                  [f"train.data.train={tmp_path}/train.jsonl", f"train.data.val={tmp_path}/val.jsonl",
                   "train.epochs=3", "encoder.num_layers=1", "emb.dim=64", "encoder.mlp_dim=128", "head.hidden=64",
                   "train.optimizer.lr=1.0e-3"])
    assert result.metrics["val/accuracy"] >= 0.9, result.metrics


@pytest.mark.slow
def test_faster_rcnn_learns_boxes_from_coco_data(tmp_path):
    generate.write_coco(tmp_path / "train", 96, seed=0)
    generate.write_coco(tmp_path / "val", 24, seed=1)
    result = _run(tmp_path, ROOT / "pipelines" / "box_detector.yaml",
                  [f"train.data.train={tmp_path}/train/annotations.json",
                   f"train.data.val={tmp_path}/val/annotations.json"])
    assert {"train/loss_objectness", "train/loss_rpn_box_reg", "train/loss_classifier", "train/loss_box_reg"} <= set(result.metrics), result.metrics
    assert result.monitor == "val/map" and result.metrics["val/map_50"] >= 0.3, result.metrics


# the graph pipelines as shipped, on their shipped data (pipelines/data/graphs, written by
# data/generate.py): the final val accuracy each reaches (measured: karate 0.96, communities
# GraphSAGE 0.85 and GAT 0.91, molecules GIN 1.0)
GRAPH_PIPELINES = {"node_classification": 0.9, "graphsage": 0.8, "gat": 0.85, "graph_classification": 0.9}


@pytest.mark.parametrize("name", GRAPH_PIPELINES)
def test_graph_pipelines_learn_their_graphs(tmp_path, name):
    result = _run(tmp_path, ROOT / "pipelines" / f"{name}.yaml", [])
    assert result.metrics["val/accuracy"] >= GRAPH_PIPELINES[name], result.metrics

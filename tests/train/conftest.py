"""Small generated data sets for the training tests (the generators of the data shipped in
pipelines/data), and a spec writer."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

import composer

_spec = importlib.util.spec_from_file_location("pipelines_data_generate",
                                               Path(__file__).resolve().parents[2] / "pipelines" / "data" / "generate.py")
generate = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(generate)
write_table, write_shapes, write_sines, write_corpus = (generate.write_table, generate.write_shapes,
                                                       generate.write_sines, generate.write_corpus)


MLP = """
pipeline: mlp
seed: 0
dims:
  B: {sizes: [1, 4], example: 2}
inputs:
  features: {kind: vector, shape: [B, 8]}
blocks:
  hidden: {block: dense, in: features, out_features: 32}
  act: {block: relu, in: hidden}
  head: {block: dense, in: act, out_features: 3}
outputs:
  logits: head
"""


@pytest.fixture(scope="session")
def table_data(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("table")
    write_table(folder / "train.csv", 512, seed=0)
    write_table(folder / "val.csv", 256, seed=1)
    return folder


def mlp_spec(folder: Path, train: str, name: str = "spec.yaml") -> Path:
    """The small MLP with a `train:` section (YAML text, indented under `train:`), in `folder`."""
    path = folder / name
    path.write_text(MLP + "train:\n" + "\n".join("  " + line for line in train.strip().splitlines()) + "\n")
    return path


def load(path: Path, **kw):
    return composer.load(path, **kw)

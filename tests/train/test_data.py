"""The data path of `composer train`: every reader, the validation split, bad data reported
before the first step (file and row named), the sampler (order, DDP shares, exact resume) and
the collation of text, sequences, masks and detection targets."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

import composer
from composer.train.data import (DataError, Examples, dim_examples, make_loader, open_data, open_splits,
                                 pipeline_context)
from composer.train.data.loader import Collate
from composer.train.plan import InputNeed, TargetNeed, plan as make_plan

ROOT = Path(__file__).resolve().parents[2]
VOCAB = ROOT / "pipelines" / "data" / "vocab.txt"

MLP = """
pipeline: mlp
seed: 3
dims: {{B: {{sizes: [1, 4], example: 2}}}}
inputs:
  features: {{kind: vector, shape: [B, {f}]}}
blocks:
  head: {{block: dense, in: features, out_features: {out}}}
outputs: {{logits: head}}
train:
{train}
"""

TEXT = f"""
pipeline: text
seed: 0
labels: [negative, positive]
dims: {{B: {{sizes: [1, 2], example: 1}}, T: {{sizes: [8, 16], example: 8}}}}
inputs:
  text: {{kind: text, shape: [B]}}
blocks:
  tok: {{block: tokenizer, in: text, vocab: {VOCAB}, max_length: 16, truncation: true}}
  emb: {{block: embedding, in: {{tokens: tok.tokens}}, vocab_size: 1000, dim: 8, max_positions: 16}}
  pool: {{block: pooling, in: {{x: emb.sequence, mask: tok.mask}}, mode: mean}}
  head: {{block: dense, in: pool, out_features: 2}}
outputs: {{logits: head}}
train:
  data: {{format: jsonl, train: d.jsonl}}
  loss: {{logits: cross_entropy}}
"""

TAGGER = """
pipeline: tagger
seed: 0
dims: {B: {sizes: [1, 3], example: 1}, T: {sizes: [7, 40], example: 8}}
inputs:
  tokens: {kind: tokens, shape: [B, T], dtype: int64}
  mask: {kind: mask, shape: [B, T], dtype: bool}
blocks:
  embed: {block: embedding, in: tokens, vocab_size: 50, dim: 8, positions: none, norm: false, pad_token_id: 0}
  rnn: {block: lstm, in: {x: embed.sequence, mask: mask}, hidden: 8, bidirectional: true}
  tags: {block: dense, in: rnn.sequence, out_features: 5}
outputs: {logits: tags}
train:
  data: {format: DATA_FORMAT, train: DATA_FILE, targets: {logits: tags}}
  loss: {logits: {type: cross_entropy, ignore_index: -1}}
"""

SERIES = """
pipeline: forecast
seed: 0
dims: {{B: {{sizes: [1, 3], example: 1}}, T: {{sizes: [8, 16], example: {t}}}}}
inputs:
  series: {{kind: series, shape: [B, T, 2], columns: [a, load], ignore_columns: [time]}}
blocks:
  encoder: {{block: lstm, in: series, hidden: 8}}
  forecast: {{block: mlp, in: encoder.last, hidden: [8], out_features: {h}}}
outputs: {{forecast: forecast}}
train:
  data: {{format: series, train: {train}, targets: {{forecast: load}}{extra}}}
  loss: {{forecast: mse}}
"""

CNN = """
pipeline: cnn
seed: 0
{labels}
dims: {{B: {{sizes: [1, 3], example: 1}}, H: {{multiple_of: 2, sizes: [8, 16], example: 8}},
       W: {{multiple_of: 2, sizes: [8, 16], example: 8}}}}
inputs:
  image: {{kind: image, shape: [B, 3, H, W], dtype: float32{pre}}}
blocks:
  conv: {{block: conv2d, in: image, out_channels: 4, kernel: 3, padding: 1}}
  gap: {{block: global_avg_pool, in: conv}}
  head: {{block: dense, in: gap, out_features: {classes}}}
outputs: {{logits: head}}
train:
  data: {{format: image_folder, train: train{extra}}}
  loss: {{logits: cross_entropy}}
{augment}
"""


def load(tmp_path: Path, text: str):
    pipe = composer.loads(text, file=str(tmp_path / "spec.yaml"))
    return pipe, make_plan(pipe)


def mlp(tmp_path: Path, data: str, f: int = 4, out: int = 3, more: str = "loss: {logits: cross_entropy}"):
    train = "  data: " + data + "\n  " + more
    return load(tmp_path, MLP.format(f=f, out=out, train=train))


def write_csv(path: Path, header: list[str], rows: list[list]) -> Path:
    path.write_text("\n".join([",".join(header)] + [",".join(str(v) for v in r) for r in rows]) + "\n")
    return path


def table_rows(n: int, f: int = 4, classes: int = 3, seed: int = 0) -> list[list]:
    g = np.random.default_rng(seed)
    return [[round(float(v), 4) for v in g.normal(size=f)] + [int(g.integers(0, classes))] for _ in range(n)]


def error(fn, *args, **kw) -> str:
    with pytest.raises(DataError) as info:
        fn(*args, **kw)
    return str(info.value)


# ---- tables --------------------------------------------------------------------------------


def test_csv_table_default_columns_and_lazy_rows(tmp_path):
    rows = table_rows(10)
    write_csv(tmp_path / "d.csv", ["id", "a", "b", "c", "d", "label"], [[i] + r for i, r in enumerate(rows)])
    _, p = mlp(tmp_path, "{format: table, train: d.csv, ignore_columns: [id]}")
    train, val = open_splits(p, tmp_path, seed=0)
    assert val is None and len(train) == 10
    item = train[7]
    np.testing.assert_allclose(item["features"], np.asarray(rows[7][:4], np.float32))
    assert item["features"].dtype == np.float32 and item["label"] == rows[7][4]
    assert train.where(7) == f"{tmp_path / 'd.csv'}:9"
    assert train.rows.offsets.dtype == np.int64          # only offsets are kept, rows are read on demand


def test_csv_table_named_columns_multi_value_target_and_blank_lines(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text("y_1,x2,x1,y_0,junk\n\n1.5,2,1,0.5,zz\n\n3.5,4,3,2.5,zz\n")
    text = MLP.format(f=2, out=2, train="  data: {format: table, train: d.csv, columns: {features: [x1, x2]}, "
                                        "targets: {logits: y}, ignore_columns: [junk]}\n  loss: {logits: mse}")
    _, p = load(tmp_path, text)
    train, _ = open_splits(p, tmp_path, seed=0)
    assert len(train) == 2
    np.testing.assert_allclose(train[1]["features"], [3, 4])
    np.testing.assert_allclose(train[1]["y"], [2.5, 3.5])      # y_0, y_1 in order
    assert train.where(1) == f"{path}:5"


def test_csv_table_errors_name_file_and_row(tmp_path):
    write_csv(tmp_path / "d.csv", ["a", "b", "c", "d", "lable"], table_rows(3))
    _, p = mlp(tmp_path, "{format: table, train: d.csv}")
    msg = error(open_splits, p, tmp_path, 0)
    assert "d.csv:1" in msg and "no column `label`" in msg and "did you mean `lable`" in msg

    rows = table_rows(4)
    rows[2][1] = "abc"
    write_csv(tmp_path / "d.csv", ["a", "b", "c", "d", "label"], rows)
    msg = error(open_splits, p, tmp_path, 0)
    assert f"{tmp_path / 'd.csv'}:4" in msg and "`abc` is not a number" in msg and "column `b`" in msg

    rows = table_rows(4)
    rows[3][4] = 3
    write_csv(tmp_path / "d.csv", ["a", "b", "c", "d", "label"], rows)
    msg = error(open_splits, p, tmp_path, 0)
    assert f"{tmp_path / 'd.csv'}:5" in msg and "class 3" in msg and "3 classes" in msg

    rows = table_rows(2)
    rows[1][4] = 1.5
    write_csv(tmp_path / "d.csv", ["a", "b", "c", "d", "label"], rows)
    assert "whole numbers" in error(open_splits, p, tmp_path, 0)

    write_csv(tmp_path / "d.csv", ["a", "b", "c", "label"], [r[1:] for r in table_rows(2)])
    msg = error(open_splits, p, tmp_path, 0)
    assert "F = 4" in msg and "3 columns are left" in msg and "a, b, c" in msg

    (tmp_path / "d.csv").write_text("a,b,c,d,label\n1,2,3\n")
    assert f"{tmp_path / 'd.csv'}:2: the row has 3 cells" in error(open_splits, p, tmp_path, 0)


def test_table_text_column_feeds_the_tokenizer(tmp_path):
    (tmp_path / "d.csv").write_text('id,text,label\n1,"a good film, very fine",1\n2,bad,0\n')
    pipe, p = load(tmp_path, TEXT.replace("format: jsonl, train: d.jsonl", "format: table, train: d.csv, "
                                                                         "ignore_columns: [id]"))
    train, _ = open_splits(p, tmp_path, pipe.resolved.seed, **pipeline_context(pipe))
    assert train[0]["text"] == "a good film, very fine"
    batch = next(iter(make_loader(train, p, train=True, batch_size=2, seed=0)))
    assert batch["inputs"]["tokens"].shape[0] == 2 and sorted(batch["targets"]["logits"].tolist()) == [0, 1]


def test_parquet_by_row_group(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq
    rows = table_rows(25)
    cols = {k: [r[j] for r in rows] for j, k in enumerate(["a", "b", "c", "d", "label"])}
    pq.write_table(pa.table(cols), tmp_path / "d.parquet", row_group_size=10)
    _, p = mlp(tmp_path, "{format: table, train: d.parquet}")
    train, _ = open_splits(p, tmp_path, seed=0)
    assert len(train) == 25 and len(train._starts) == 4
    np.testing.assert_allclose(train[23]["features"], np.asarray(rows[23][:4], np.float32))
    assert train[23]["label"] == rows[23][4] and train[23]["label"].dtype == np.int64

    cols["label"][17] = 5
    pq.write_table(pa.table(cols), tmp_path / "d.parquet", row_group_size=10)
    msg = error(open_splits, p, tmp_path, 0)
    assert "d.parquet, row 18" in msg and "class 5" in msg
    cols["label"][17] = None
    pq.write_table(pa.table(cols), tmp_path / "d.parquet", row_group_size=10)
    assert "row 18: column `label` is missing a value" in error(open_splits, p, tmp_path, 0)


# ---- jsonl ---------------------------------------------------------------------------------


def write_jsonl(path: Path, objs: list) -> Path:
    path.write_text("".join((o if isinstance(o, str) else json.dumps(o)) + "\n" for o in objs))
    return path


def test_jsonl_text_through_the_tokenizer(tmp_path):
    write_jsonl(tmp_path / "d.jsonl", [{"text": "the movie was good", "label": 1}, {"text": "bad", "label": 0},
                                       {"text": "a very fine film and a good story", "label": 1}])
    _, p = load(tmp_path, TEXT)
    train, _ = open_splits(p, tmp_path, seed=0)
    assert train[0]["text"] == "the movie was good"
    batch = next(iter(make_loader(train, p, train=False, batch_size=3, seed=0)))
    assert set(batch["inputs"]) == set(p.stage.inputs)
    tokens, mask = batch["inputs"]["tokens"], batch["inputs"]["mask"]
    assert tokens.shape[0] == 3 and tokens.dtype == torch.int64 and mask.shape == tokens.shape
    assert mask.sum(1).tolist()[1] < mask.sum(1).tolist()[2]       # the short text is padded
    assert batch["targets"]["logits"].tolist() == [1, 0, 1]
    assert batch["index"].tolist() == [0, 1, 2]


def test_jsonl_sequences_pad_and_mask(tmp_path):
    write_jsonl(tmp_path / "d.jsonl", [{"tokens": [3, 4, 5], "tags": [0, 1, 2]}, {"tokens": [7], "tags": [4]},
                                       {"tokens": [1, 2], "tags": [3, 3]}])
    _, p = load(tmp_path, TAGGER.replace("DATA_FORMAT", "jsonl").replace("DATA_FILE", "d.jsonl"))
    train, _ = open_splits(p, tmp_path, seed=0)
    batch = next(iter(make_loader(train, p, train=False, batch_size=3, seed=0)))
    assert batch["inputs"]["tokens"].tolist() == [[3, 4, 5], [7, 0, 0], [1, 2, 0]]
    assert batch["inputs"]["mask"].tolist() == [[True] * 3, [True, False, False], [True, True, False]]
    assert batch["inputs"]["mask"].dtype == torch.bool
    assert batch["targets"]["logits"].tolist() == [[0, 1, 2], [4, -1, -1], [3, 3, -1]]


def test_jsonl_errors_name_file_and_line(tmp_path):
    spec = TAGGER.replace("DATA_FORMAT", "jsonl").replace("DATA_FILE", "d.jsonl")
    _, p = load(tmp_path, spec)
    path = tmp_path / "d.jsonl"
    cases = [
        ([{"tokens": [1], "tags": [0]}, "{not json"], ":2: not a JSON line"),
        ([{"tokens": [1], "tags": [0]}, [1, 2]], ":2: a line holds one example as a JSON object"),
        ([{"tokens": [1], "tagz": [0]}], "no field `tags`"),
        ([{"tokens": [1], "tags": [0]}, "", {"tokens": [1, 2], "tags": [0, 5]}], ":3: field `tags` holds class 5"),
        ([{"tokens": [1, 2], "tags": [0]}], ":1: field `tags` has 1 steps and field `tokens`"),
        ([{"tokens": [1, 99], "tags": [0, 1]}], ":1: field `tokens` holds id 99"),
        ([{"tokens": [[1], [2]], "tags": [0, 1]}], "has shape [2, 1]"),
        ([{"tokens": "abc", "tags": [0]}], "is the text 'abc'"),
    ]
    for objs, expected in cases:
        write_jsonl(path, objs)
        msg = error(open_splits, p, tmp_path, 0)
        assert expected in msg, (expected, msg)
        assert str(path) in msg


def test_target_shape_error_names_output_and_field(tmp_path):
    write_jsonl(tmp_path / "d.jsonl", [{"features": [1, 2, 3, 4], "y": [1.0]}])
    _, p = mlp(tmp_path, "{format: jsonl, train: d.jsonl, targets: {logits: y}}", out=2, more="loss: {logits: mse}")
    msg = error(open_splits, p, tmp_path, 0)
    assert f"{tmp_path / 'd.jsonl'}:1: output `logits` is [B, 2] but field `y`" in msg and "shape [1]" in msg


# ---- arrays --------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["npz", "npz_compressed", "safetensors"])
def test_arrays(tmp_path, kind):
    g = np.random.default_rng(0)
    x = g.normal(size=(12, 4)).astype(np.float32)
    y = g.integers(0, 3, size=12)
    if kind == "safetensors":
        from safetensors.numpy import save_file
        save_file({"features": x, "label": y}, str(tmp_path / "d.safetensors"))
        name = "d.safetensors"
    else:
        (np.savez if kind == "npz" else np.savez_compressed)(tmp_path / "d.npz", features=x, label=y)
        name = "d.npz"
    _, p = mlp(tmp_path, f"{{format: arrays, train: {name}}}")
    train, _ = open_splits(p, tmp_path, seed=0)
    assert len(train) == 12 and train.where(5).endswith(f"{name}[5]")
    np.testing.assert_array_equal(train[5]["features"], x[5])
    assert int(train[5]["label"]) == y[5]
    if kind == "npz":
        assert isinstance(train._array("features"), np.memmap)     # uncompressed members are memory-mapped
    batch = next(iter(make_loader(train, p, train=False, batch_size=4, seed=0)))
    assert batch["inputs"]["features"].shape == (4, 4) and batch["targets"]["logits"].dtype == torch.int64


def test_arrays_of_sequences_with_their_mask(tmp_path):
    tokens = np.array([[3, 4, 0], [5, 0, 0]])
    np.savez(tmp_path / "d.npz", tokens=tokens, mask=tokens > 0, tags=np.array([[1, 2, -1], [3, -1, -1]]))
    _, p = load(tmp_path, TAGGER.replace("DATA_FORMAT", "arrays").replace("DATA_FILE", "d.npz"))
    train, _ = open_splits(p, tmp_path, seed=0)
    batch = next(iter(make_loader(train, p, train=False, batch_size=2, seed=0)))
    assert batch["inputs"]["mask"].tolist() == [[True, True, False], [True, False, False]]   # the data's own
    assert batch["targets"]["logits"].tolist() == [[1, 2, -1], [3, -1, -1]]


def test_arrays_errors(tmp_path):
    x = np.zeros((5, 4), np.float32)
    np.savez(tmp_path / "d.npz", features=x, label=np.zeros(4, np.int64))
    _, p = mlp(tmp_path, "{format: arrays, train: d.npz}")
    assert "field `label` holds 4 examples and field `features` holds 5" in error(open_splits, p, tmp_path, 0)
    np.savez(tmp_path / "d.npz", features=x, label=np.array([0, 1, 2, 7, 0]))
    msg = error(open_splits, p, tmp_path, 0)
    assert "d.npz[3]: field `label` holds class 7" in msg
    np.savez(tmp_path / "d.npz", features=np.zeros((5, 3), np.float32), label=np.zeros(5, np.int64))
    assert "d.npz[0]: field `features` has shape [3]" in error(open_splits, p, tmp_path, 0)
    np.savez(tmp_path / "d.npz", feature=x, label=np.zeros(5, np.int64))
    assert "no field `features`" in error(open_splits, p, tmp_path, 0)
    with zipfile.ZipFile(tmp_path / "d.npz", "w") as z:
        z.writestr("x.txt", "hi")
    assert "no field" in error(open_splits, p, tmp_path, 0)


# ---- series --------------------------------------------------------------------------------


def write_series(path: Path, n: int, start: float = 0.0) -> Path:
    rows = [[i, start + i, 100 + start + i, 0] for i in range(n)]
    return write_csv(path, ["time", "a", "load", "other"], rows)


def test_series_windows_targets_and_files(tmp_path):
    (tmp_path / "s").mkdir()
    write_series(tmp_path / "s" / "1.csv", 10)
    write_series(tmp_path / "s" / "2.csv", 7, start=1000)
    pipe, p = load(tmp_path, SERIES.format(t=4, h=2, train="s", extra=", ignore_columns: [other], stride: 2"))
    train, _ = open_splits(p, tmp_path, seed=0, dims=dim_examples(pipe))
    # windows of 4 + 2 target steps every 2 steps: file 1 (10 rows): starts 0, 2, 4; file 2 (7 rows): start 0
    assert len(train) == 4
    item = train[1]
    np.testing.assert_allclose(item["series"], [[2, 102], [3, 103], [4, 104], [5, 105]])
    np.testing.assert_allclose(item["load"], [106, 107])
    np.testing.assert_allclose(train[3]["series"][0], [1000, 1100])       # a window never crosses files
    assert train.where(3) == f"{tmp_path / 's' / '2.csv'}:2"
    batch = next(iter(make_loader(train, p, train=False, batch_size=4, seed=0)))
    assert batch["inputs"]["series"].shape == (4, 4, 2) and batch["targets"]["forecast"].shape == (4, 2)


def test_series_window_horizon_and_errors(tmp_path):
    write_series(tmp_path / "s.csv", 30)
    pipe, p = load(tmp_path, SERIES.format(t=8, h=3, train="s.csv", extra=", ignore_columns: [other]"))
    train, _ = open_splits(p, tmp_path, seed=0, dims=dim_examples(pipe))
    assert train.window == 8 and len(train) == 30 - 8 - 3 + 1
    assert len(open_splits(p, tmp_path, seed=0)[0]) == len(train)           # dims read from the spec itself
    msg = error(open_splits, p, tmp_path, 0, dims={})                        # no example of T: no window
    assert "data.window" in msg and "`T`" in msg
    _, p = load(tmp_path, SERIES.format(t=8, h=3, train="s.csv", extra=", horizon: 2, ignore_columns: [other]"))
    assert "`data.horizon` is 2, and output `forecast` predicts 3" in error(open_splits, p, tmp_path, 0, dims={"T": 8})
    _, p = load(tmp_path, SERIES.format(t=8, h=3, train="s.csv", extra=", window: 40, ignore_columns: [other]"))
    assert "30 time steps, fewer than one window of 40" in error(open_splits, p, tmp_path, 0)
    _, p = load(tmp_path, SERIES.format(t=8, h=3, train="s.csv", extra=""))
    assert "column `other` that `series` does not take" in error(open_splits, p, tmp_path, 0, dims={"T": 8})
    (tmp_path / "s.csv").write_text((tmp_path / "s.csv").read_text().replace("\n5,5.0,105.0,0", "\n5,5.0,,0"))
    _, p = load(tmp_path, SERIES.format(t=8, h=3, train="s.csv", extra=", ignore_columns: [other]"))
    msg = error(open_splits, p, tmp_path, 0, dims={"T": 8})
    assert f"{tmp_path / 's.csv'}:7: column `load`" in msg and "missing value" in msg


def test_series_val_fraction_splits_by_time(tmp_path):
    write_series(tmp_path / "s.csv", 40)
    pipe, p = load(tmp_path, SERIES.format(t=4, h=2, train="s.csv", extra=", val_fraction: 0.25, "
                                                                          "ignore_columns: [other]"))
    train, val = open_splits(p, tmp_path, seed=0, dims=dim_examples(pipe))
    steps = lambda ex, i: set(range(int(ex[i]["series"][0, 0]), int(ex[i]["series"][0, 0]) + 6))   # noqa: E731
    last_train = max(int(train[i]["series"][0, 0]) for i in range(len(train)))
    first_val = min(int(val[i]["series"][0, 0]) for i in range(len(val)))
    assert len(val) == 9 and last_train < first_val
    assert not steps(train, len(train) - 1) & steps(val, 0)                 # no step is in both


# ---- image folders -------------------------------------------------------------------------


def write_images(root: Path, classes: dict[str, int], size=(8, 8), mode="RGB") -> Path:
    g = np.random.default_rng(0)
    for name, n in classes.items():
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            arr = g.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
            Image.fromarray(arr).convert(mode).save(root / name / f"{i}.png")
    return root


def cnn(tmp_path, classes=3, labels="", pre="", extra="", augment=""):
    return load(tmp_path, CNN.format(classes=classes, labels=labels, pre=pre, extra=extra, augment=augment))


def test_image_folder_classes_and_normalisation(tmp_path):
    write_images(tmp_path / "train", {"dog": 2, "cat": 3})
    _, p = cnn(tmp_path, pre=", preprocess: {mean: [0.5, 0.5, 0.5], std: [0.25, 0.25, 0.25]}")
    train, _ = open_splits(p, tmp_path, seed=0)
    assert train.classes == ["cat", "dog"] and train.labels.tolist() == [0, 0, 0, 1, 1]
    raw = np.asarray(Image.open(tmp_path / "train" / "dog" / "1.png"), np.float32).transpose(2, 0, 1) / 255
    np.testing.assert_allclose(train[4]["image"], raw, atol=1e-6)           # the reader keeps [0, 1]
    batch = next(iter(make_loader(train, p, train=False, batch_size=5, seed=0)))
    np.testing.assert_allclose(batch["inputs"]["image"][4].numpy(), (raw - 0.5) / 0.25, atol=1e-5)
    assert batch["targets"]["logits"].tolist() == [0, 0, 0, 1, 1]

    pipe, p = cnn(tmp_path, labels="labels: [zebra, dog, cat]")             # the spec's labels order classes
    train, _ = open_splits(p, tmp_path, seed=0)
    assert train.labels.tolist() == [2, 2, 2, 1, 1]
    assert pipeline_context(pipe)["labels"] == ["zebra", "dog", "cat"]
    train, _ = open_splits(p, tmp_path, seed=0, labels=["dog", "cat", "zebra"])
    assert train.labels.tolist() == [1, 1, 1, 0, 0]


def test_image_folder_errors(tmp_path):
    root = write_images(tmp_path / "train", {"a": 1, "b": 1, "c": 1, "d": 1})
    _, p = cnn(tmp_path)
    msg = error(open_splits, p, tmp_path, 0)
    assert f"{root / 'd'}: class 3" in msg and "has 3 classes" in msg
    _, p = cnn(tmp_path, classes=4)
    (root / "b" / "0.png").unlink()
    assert f"{root / 'b'}: the class folder holds no images" in error(open_splits, p, tmp_path, 0)
    (root / "b" / "0.png").write_text("not an image")
    msg = error(open_splits, p, tmp_path, 0)
    assert f"cannot decode image {root / 'b' / '0.png'}" in msg and "text" in msg
    write_images(root, {"b": 1}, size=(10, 8))
    msg = error(open_splits, p, tmp_path, 0)
    assert "10x8" in msg and "8x8" in msg and "preprocess" in msg and "augment" in msg
    _, p = cnn(tmp_path, classes=4, pre=", preprocess: {resize: 8, crop: 8}")
    open_splits(p, tmp_path, seed=0)                                         # preprocess makes them fit
    _, p = cnn(tmp_path, classes=4, augment="  augment: [{random_resized_crop: {size: 8}}]")
    open_splits(p, tmp_path, seed=0)                                         # so does a fixed-size augmentation
    _, p = cnn(tmp_path, classes=4, extra=", val_fraction: 0.5", augment="  augment: [{random_crop: {size: 8}}]")
    assert "10x8" in error(open_splits, p, tmp_path, 0)                     # but not for validation examples
    write_images(root, {"b": 1}, mode="L")
    _, p = cnn(tmp_path, classes=4)
    assert "is a L image (grayscale)" in error(open_splits, p, tmp_path, 0)
    _, p = cnn(tmp_path, classes=4, extra=", classes: [a, b, c, e]")
    assert "the folder is no class of `data.classes`" in error(open_splits, p, tmp_path, 0)


def test_val_fraction_and_val_and_open_data(tmp_path):
    write_csv(tmp_path / "d.csv", ["a", "b", "c", "d", "label"], table_rows(20))
    _, p = mlp(tmp_path, "{format: table, train: d.csv, val_fraction: 0.25}")
    train, val = open_splits(p, tmp_path, seed=0)
    assert len(train) == 15 and len(val) == 5
    assert not set(train.indices) & set(val.indices)
    again, val2 = open_splits(p, tmp_path, seed=0)
    assert val2.indices.tolist() == val.indices.tolist()                   # seeded: the same split
    _, other = open_splits(p, tmp_path, seed=1)
    assert other.indices.tolist() != val.indices.tolist()
    _, p2 = mlp(tmp_path, "{format: table, train: d.csv, val_fraction: 0.25}",
                more="loss: {logits: cross_entropy}\n  seed: 1")
    assert open_splits(p2, tmp_path, seed=0)[1].indices.tolist() == other.indices.tolist()  # train.seed wins
    assert val.where(0) == train.base.where(int(val.indices[0]))

    write_csv(tmp_path / "v.csv", ["a", "b", "c", "d", "label"], table_rows(6, seed=1))
    _, p = mlp(tmp_path, "{format: table, train: d.csv, val: v.csv}")
    train, val = open_splits(p, tmp_path, seed=0)
    assert len(val) == 6
    assert len(open_data(p, tmp_path / "v.csv")) == 6
    assert "no such file" in error(open_data, p, tmp_path / "missing.csv")
    _, p = mlp(tmp_path, "{format: table, train: nothing.csv}")
    assert "nothing.csv: no such file (`data.train`" in error(open_splits, p, tmp_path, 0)


def test_augment_on_a_table_is_a_spec_error(tmp_path):
    write_csv(tmp_path / "d.csv", ["a", "b", "c", "d", "label"], table_rows(8))
    _, p = mlp(tmp_path, "{format: table, train: d.csv}", more="loss: {logits: cross_entropy}\n  augment: "
                                                              "[horizontal_flip]")
    train, _ = open_splits(p, tmp_path, seed=0)
    with pytest.raises(composer.SpecError, match="transforms image inputs"):
        make_loader(train, p, train=True, batch_size=4, seed=0)


# ---- the sampler ---------------------------------------------------------------------------


class Numbers(Examples):
    """n examples whose feature is their index (to follow them through the loader)."""

    fields = ("features", "label")

    def __init__(self, n: int):
        self.n, self.source = n, Path("numbers")

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int):
        return {"features": np.full(4, i, np.float32), "label": np.int64(i % 3)}


def _indices(loader) -> list[list[int]]:
    return [b["index"].tolist() for b in loader]


def test_sampler_order_is_seeded_per_epoch(tmp_path):
    write_csv(tmp_path / "d.csv", ["a", "b", "c", "d", "label"], table_rows(2))
    _, p = mlp(tmp_path, "{format: table, train: d.csv}")
    data = Numbers(23)
    a = make_loader(data, p, train=True, batch_size=5, seed=7)
    b = make_loader(data, p, train=True, batch_size=5, seed=7)
    assert len(a) == 4
    first = _indices(a)
    assert first == _indices(b) and all(len(x) == 5 for x in first)
    assert len({i for x in first for i in x}) == 20                          # drop_last: 3 left out
    batch = next(iter(make_loader(data, p, train=True, batch_size=5, seed=7)))
    assert batch["inputs"]["features"][:, 0].tolist() == first[0]
    assert _indices(a) != first                                              # the next epoch, reshuffled
    a.batch_sampler.sampler.set_epoch(0)
    assert _indices(a) == first
    assert _indices(make_loader(data, p, train=True, batch_size=5, seed=8)) != first
    val = make_loader(data, p, train=False, batch_size=5, seed=7)
    assert _indices(val) == [list(range(k, min(k + 5, 23))) for k in range(0, 23, 5)]
    assert "does not divide" in error(make_loader, data, p, train=True, batch_size=5, seed=0, world=2)
    assert "fewer than one batch" in error(make_loader, Numbers(3), p, train=True, batch_size=5, seed=0)


@pytest.mark.parametrize("world", [2, 4])
def test_ranks_share_every_global_batch(tmp_path, world):
    write_csv(tmp_path / "d.csv", ["a", "b", "c", "d", "label"], table_rows(2))
    _, p = mlp(tmp_path, "{format: table, train: d.csv}")
    data = Numbers(30)
    single = _indices(make_loader(data, p, train=True, batch_size=8, seed=1))
    ranks = [_indices(make_loader(data, p, train=True, batch_size=8, seed=1, rank=r, world=world))
             for r in range(world)]
    assert all(len(r) == len(single) for r in ranks)
    for k, batch in enumerate(single):
        assert sorted(i for r in ranks for i in r[k]) == sorted(batch)
        assert all(len(r[k]) == 8 // world for r in ranks)
    # validation: every example once (the split padded to a multiple of world), equal steps per rank
    vals = [make_loader(data, p, train=False, batch_size=8, seed=1, rank=r, world=world) for r in range(world)]
    got = [_indices(v) for v in vals]
    assert len({len(g) for g in got}) == 1 and all(len(x) for g in got for x in g)
    seen = [i for g in got for x in g for i in x]
    assert set(seen) == set(range(30)) and len(seen) == 30 + vals[0].padding


def test_resume_continues_with_the_next_batch(tmp_path):
    write_csv(tmp_path / "d.csv", ["a", "b", "c", "d", "label"], table_rows(2))
    _, p = mlp(tmp_path, "{format: table, train: d.csv}")
    data = Numbers(40)
    full = make_loader(data, p, train=True, batch_size=4, seed=3)
    full.batch_sampler.sampler.set_epoch(2)
    expected = _indices(full)
    for k in (0, 3, 9, 10):
        run = make_loader(data, p, train=True, batch_size=4, seed=3)
        run.batch_sampler.sampler.set_epoch(2)
        it = iter(run)
        seen = [next(it)["index"].tolist() for _ in range(k)]
        state = run.state_dict()
        assert state["epoch"] == 2 and state["batches"] == k
        resumed = make_loader(data, p, train=True, batch_size=4, seed=3)
        resumed.load_state_dict(state)
        it2 = iter(resumed)                           # Lightning: load_state_dict, iter(), set_epoch, next()
        resumed.batch_sampler.sampler.set_epoch(2)
        rest = [b["index"].tolist() for b in it2]
        assert seen + rest == expected, k
        assert len(resumed) == 10                     # the epoch's length stays whole for Lightning's count
    # a state of another epoch (Lightning moved on): the new epoch starts from its first batch
    resumed = make_loader(data, p, train=True, batch_size=4, seed=3)
    resumed.load_state_dict({**state, "batches": 10})
    resumed.batch_sampler.sampler.set_epoch(3)
    assert len(_indices(resumed)) == 10
    assert "batch_size = 4" in error(make_loader(data, p, train=True, batch_size=8, seed=3).load_state_dict, state)


@pytest.mark.filterwarnings("ignore::UserWarning", "ignore::DeprecationWarning", "ignore::FutureWarning")
@pytest.mark.parametrize("stop, workers", [(8, 0), (6, 2)])
def test_resume_under_lightning(tmp_path, stop, workers):
    """A Lightning run stopped mid-epoch (or at an epoch's last batch) and resumed from its
    step checkpoint sees the same batches as an uninterrupted run."""
    import lightning as L
    write_csv(tmp_path / "d.csv", ["a", "b", "c", "d", "label"], table_rows(2))
    _, p = mlp(tmp_path, "{format: table, train: d.csv}")
    data = Numbers(24)

    class Module(L.LightningModule):
        def __init__(self):
            super().__init__()
            self.layer = torch.nn.Linear(4, 1)
            self.seen: list[list[int]] = []

        def training_step(self, batch, _):
            self.seen.append(batch["index"].tolist())
            return self.layer(batch["inputs"]["features"]).sum()

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.0)

        def train_dataloader(self):
            return make_loader(data, p, train=True, batch_size=4, seed=5, workers=workers)

    kw = dict(logger=False, enable_progress_bar=False, enable_model_summary=False, use_distributed_sampler=False,
              accelerator="cpu", devices=1)
    ref = Module()
    L.Trainer(max_epochs=3, enable_checkpointing=False, **kw).fit(ref)
    ckpt = L.pytorch.callbacks.ModelCheckpoint(dirpath=tmp_path / "ck", every_n_train_steps=1, save_top_k=-1)
    first = Module()
    L.Trainer(max_steps=stop, callbacks=[ckpt], **kw).fit(first)     # 6 batches an epoch
    second = Module()
    path = next((tmp_path / "ck").glob(f"*-step={stop}.ckpt"))
    L.Trainer(max_epochs=3, enable_checkpointing=False, **kw).fit(second, ckpt_path=str(path))
    assert first.seen + second.seen == ref.seen


# ---- collation of detection examples ----------------------------------------------------------


class Detections(Examples):
    fields = ("image", "boxes")

    def __init__(self):
        self.source = Path("detections")
        self.sizes = [(6, 5), (4, 9), (7, 7)]

    def __len__(self) -> int:
        return 3

    def __getitem__(self, i: int):
        h, w = self.sizes[i]
        return {"image": np.ones((3, h, w), np.float32) * (i + 1),
                "boxes": {"boxes": np.array([[0, 0, 2, 2]] * (i + 1), np.float32), "labels": np.arange(i + 1)}}


def test_detection_images_pad_bottom_right(tmp_path):
    from composer.dims import sym
    from composer.inputs import InputSpec
    spec = InputSpec("image", (sym("B"), 3, sym("H", 2), sym("W")), "float32", "image", multiples={"H": 2, "W": 1})
    plan = SimpleNamespace(inputs={"image": InputNeed("image", "image", spec, "image")},
                           targets={"detections": TargetNeed("detections", "boxes", "detection", None, "float32")},
                           stage=None, spec=SimpleNamespace(augment=[]))
    batch = next(iter(make_loader(Detections(), plan, train=False, batch_size=3, seed=0)))
    image = batch["inputs"]["image"]
    assert image.shape == (3, 3, 8, 9)                               # H 7 rounded up to its multiple of 2
    assert image[1, :, :4].eq(2).all() and image[1, :, 4:].eq(0).all()
    assert image[0, :, :6, :5].eq(1).all() and image[0, :, 6:].eq(0).all() and image[0, :, :, 5:].eq(0).all()
    targets = batch["targets"]["detections"]
    assert [t["labels"].tolist() for t in targets] == [[0], [0, 1], [0, 1, 2]]
    assert targets[2]["boxes"].dtype == torch.float32 and targets[2]["boxes"].shape == (3, 4)
    assert isinstance(Collate(Detections(), plan), Collate)

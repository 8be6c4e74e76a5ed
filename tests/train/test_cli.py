"""`composer train`, `composer eval` and the other commands on a run's weights, through the CLI:
what they print and write, and bad input as clear errors without a traceback."""

from __future__ import annotations

import json

import numpy as np
from typer.testing import CliRunner

from composer.cli import app
from tests.train.conftest import mlp_spec

runner = CliRunner()
DATA = "data: {{format: table, train: {d}/train.csv, val: {d}/val.csv, targets: {{logits: label}}}}"


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def test_train_eval_export_run_on_the_weights(tmp_path, table_data):
    spec = mlp_spec(tmp_path, DATA.format(d=table_data) + "\nmetrics: {logits: [accuracy, f1]}\n"
                    "optimizer: {type: adam, lr: 0.01}\nbatch_size: 64\nepochs: 3")
    run = tmp_path / "runs" / "mlp"
    r = invoke("train", spec, "-o", run, "--no-progress", "--set", "train.epochs=4")
    assert r.exit_code == 0, r.output
    assert "trained mlp: 32 steps, 4 epochs" in r.output and "best val/loss" in r.output
    assert "epoch 4/4" in r.output and "val/accuracy" in r.output

    r = invoke("eval", spec, "--weights", run / "best.safetensors")
    assert r.exit_code == 0, r.output
    assert "accuracy" in r.output and "f1" in r.output and "256 examples" in r.output
    saved = json.loads((run / "eval.json").read_text())
    assert saved["examples"] == 256 and 0.8 <= saved["metrics"]["accuracy"] <= 1.0

    r = invoke("eval", spec, "--weights", run / "best.safetensors", "--data", table_data / "train.csv",
               "-o", tmp_path / "train_eval.json")
    assert r.exit_code == 0, r.output
    assert json.loads((tmp_path / "train_eval.json").read_text())["examples"] == 512

    r = invoke("export", spec, "--weights", run / "best.safetensors", "-o", tmp_path / "mlp.onnx")
    assert r.exit_code == 0, r.output
    np.save(tmp_path / "x.npy", np.zeros((2, 8), np.float32))
    r = invoke("run", spec, "--weights", run / "last.safetensors", "--input", f"features={tmp_path / 'x.npy'}")
    assert r.exit_code == 0 and "logits" in r.output, r.output


def test_bad_data_is_an_error_before_the_first_step(tmp_path, table_data):
    bad = tmp_path / "bad.csv"
    bad.write_text((table_data / "train.csv").read_text().replace(",label", ",labl", 1))
    spec = mlp_spec(tmp_path, f"data: {{format: table, train: {bad}, targets: {{logits: label}}}}\nepochs: 1")
    r = invoke("train", spec, "-o", tmp_path / "run", "--no-progress")
    assert r.exit_code == 1, r.output
    assert str(bad) in r.output and "`label`" in r.output and "labl" in r.output and "Traceback" not in r.output
    assert not (tmp_path / "run").exists()


def test_spec_errors_exit_2_located(tmp_path, table_data):
    spec = mlp_spec(tmp_path, DATA.format(d=table_data) + "\nepochs: 1")
    r = invoke("train", spec, "--set", "train.optimizer.type=adamm", "-o", tmp_path / "run")
    assert r.exit_code == 2 and "--set train.optimizer.type=adamm:1:" in r.output and "did you mean `adam`" in r.output
    plain = tmp_path / "plain.yaml"
    plain.write_text(spec.read_text().split("train:")[0])
    r = invoke("train", plain, "-o", tmp_path / "run")
    assert r.exit_code == 2 and "no `train:` section" in r.output
    r = invoke("validate", spec, "--set", "train.loss.logit=mse")
    assert r.exit_code == 2 and "train.loss.logit" in r.output and "did you mean `logits`" in r.output


def test_eval_without_validation_data_says_what_to_give(tmp_path, table_data):
    spec = mlp_spec(tmp_path, f"data: {{format: table, train: {table_data}/train.csv, targets: {{logits: label}}}}\n"
                    "epochs: 1")
    r = invoke("eval", spec)
    assert r.exit_code == 1 and "--data PATH" in r.output and "Traceback" not in r.output
    r = invoke("eval", spec, "--split", "test")
    assert r.exit_code == 1 and "--split test" in r.output

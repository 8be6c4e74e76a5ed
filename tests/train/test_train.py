"""`composer train` on the small MLP: optimizers, schedules, accumulation, precision, early
stopping, non-finite losses, frozen blocks, the run folder and `composer eval`."""

from __future__ import annotations

import csv
import json
import math
import pytest
import torch
from safetensors.torch import load_file

import composer
from composer.errors import ComposerError, SpecError
from composer.train import evaluate, train

from tests.train.conftest import mlp_spec

DATA = "data: {{format: table, train: {d}/train.csv, val: {d}/val.csv, targets: {{logits: label}}}}"


def _train(tmp_path, table_data, body: str, name: str = "run", overrides=None, **kw):
    spec = mlp_spec(tmp_path, DATA.format(d=table_data) + "\n" + body, name=f"{name}.yaml")
    pipe = composer.load(spec, overrides=overrides)
    return train(pipe, tmp_path / name, progress=False, echo=lambda line: None, **kw), pipe


def _lr_column(folder) -> list[float]:
    with (folder / "metrics.csv").open() as f:
        rows = list(csv.DictReader(f))
    key = next(k for k in rows[0] if k.startswith("lr-"))
    return [float(r[key]) for r in rows if r.get(key)]


@pytest.mark.parametrize("optimizer", [
    "{type: sgd, lr: 0.1, momentum: 0.9, nesterov: true}",
    "{type: adam, lr: 0.01}",
    "{type: adamw, lr: 0.01, weight_decay: 0.01}",
    "{type: rmsprop, lr: 0.005}",
])
def test_every_optimizer_learns_the_table(tmp_path, table_data, optimizer):
    result, _ = _train(tmp_path, table_data, f"optimizer: {optimizer}\nmetrics: {{logits: [accuracy]}}\n"
                                             "batch_size: 32\nepochs: 6")
    assert result.metrics["val/accuracy"] >= 0.85, result.metrics
    assert result.metrics["val/loss"] < 0.5


def _expected_lrs(kind: str, lr: float, total: int, per_epoch: int) -> list[float]:
    """The learning rate after each epoch, written out from the schedules' definitions."""
    out = []
    for epoch in range(1, total // per_epoch + 1):
        step = epoch * per_epoch
        if kind == "step":
            out.append(lr * 0.5 ** (epoch // 2))
        elif kind == "multistep":
            out.append(lr * 0.1 ** sum(epoch >= m for m in (2, 3)))
        elif kind == "cosine":
            out.append(0.5 * lr * (1 + math.cos(math.pi * step / total)))
        elif kind == "constant":
            out.append(lr)
    return out


@pytest.mark.parametrize("kind,body", [
    ("constant", "{type: constant}"),
    ("step", "{type: step, step_size: 2, gamma: 0.5}"),
    ("multistep", "{type: multistep, milestones: [2, 3], gamma: 0.1}"),
    ("cosine", "{type: cosine}"),
])
def test_schedules_follow_their_definition_and_learn(tmp_path, table_data, kind, body):
    result, _ = _train(tmp_path, table_data, f"optimizer: {{type: adam, lr: 0.01}}\nschedule: {body}\n"
                                             "metrics: {logits: [accuracy]}\nbatch_size: 64\nepochs: 4")
    per_epoch = 512 // 64
    lrs = _lr_column(result.folder)          # logged at each epoch's start
    expected = [0.01] + _expected_lrs(kind, 0.01, 4 * per_epoch, per_epoch)[:-1]
    assert lrs == pytest.approx(expected, rel=1e-6), (lrs, expected)
    assert result.metrics["val/accuracy"] >= 0.8


def test_warmup_onecycle_and_plateau(tmp_path, table_data):
    warm, _ = _train(tmp_path, table_data, "optimizer: {type: sgd, lr: 0.1, momentum: 0.9}\n"
                                           "schedule: {type: cosine, warmup_steps: 8}\nbatch_size: 64\nepochs: 3",
                     name="warm")
    lrs = _lr_column(warm.folder)
    assert lrs[0] == pytest.approx(0.001) and lrs[1] == pytest.approx(0.1)   # lr/100 at step 0, full at step 8
    one, _ = _train(tmp_path, table_data, "optimizer: {type: adam, lr: 0.01}\nschedule: {type: onecycle}\n"
                                          "metrics: {logits: [accuracy]}\nbatch_size: 64\nepochs: 4", name="one")
    assert _lr_column(one.folder)[0] == pytest.approx(0.01 / 25)
    assert one.metrics["val/accuracy"] >= 0.8
    flat, _ = _train(tmp_path, table_data, "optimizer: {type: sgd, lr: 1.0e-7}\n"
                                           "schedule: {type: plateau, patience: 0, factor: 0.5}\nbatch_size: 64\n"
                                           "epochs: 4", name="flat")
    lrs = _lr_column(flat.folder)
    assert lrs[-1] < lrs[0]        # no improvement at a negligible lr: the plateau schedule halves it


def test_accumulation_equals_the_larger_batch(tmp_path, table_data):
    body = "optimizer: {{type: sgd, lr: 0.1}}\nbatch_size: {b}\naccumulate: {a}\nepochs: 2"
    small, _ = _train(tmp_path, table_data, body.format(b=16, a=4), name="acc")
    large, _ = _train(tmp_path, table_data, body.format(b=64, a=1), name="big")
    assert small.steps == large.steps == 2 * 512 // 64
    a, b = load_file(small.folder / "last.safetensors"), load_file(large.folder / "last.safetensors")
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-5, atol=1e-6)


def test_l1_l2_clipping_and_bf16(tmp_path, table_data):
    plain, _ = _train(tmp_path, table_data, "optimizer: {type: sgd, lr: 0.1}\nbatch_size: 64\nepochs: 3",
                      name="plain")
    reg, _ = _train(tmp_path, table_data, "optimizer: {type: sgd, lr: 0.1}\nregularize: {l1: 0.001, l2: 0.01}\n"
                                          "clip_grad: {norm: 0.5}\nbatch_size: 64\nepochs: 3", name="reg")
    norm = lambda f: sum(float(v.abs().sum()) for k, v in load_file(f / "last.safetensors").items()
                         if k.endswith("weight"))
    assert norm(reg.folder) < norm(plain.folder)       # the penalties pull the weights in
    bf16, _ = _train(tmp_path, table_data, "optimizer: {type: adam, lr: 0.01}\nprecision: bf16-mixed\n"
                                           "metrics: {logits: [accuracy]}\nbatch_size: 64\nepochs: 5", name="bf16")
    assert bf16.metrics["val/accuracy"] >= 0.8
    assert all(v.dtype == torch.float32 for v in load_file(bf16.folder / "last.safetensors").values())


def test_early_stopping_stops(tmp_path, table_data):
    result, _ = _train(tmp_path, table_data, "optimizer: {type: sgd, lr: 1.0e-9}\nbatch_size: 64\nepochs: 30\n"
                                             "early_stopping: {monitor: val/loss, patience: 2, min_delta: 0.01}")
    assert result.epochs < 30 and result.epochs <= 4, result.epochs


def test_non_finite_loss_stops_with_the_step_and_keeps_the_checkpoint(tmp_path, table_data):
    body = "optimizer: {type: sgd, lr: 1.0e+12}\nbatch_size: 64\nepochs: 3\ncheckpoint: {every_n_steps: 1}"
    with pytest.raises(ComposerError) as info:
        _train(tmp_path, table_data, body)
    message = str(info.value)
    assert "step" in message and "`logits`" in message and ("nan" in message or "inf" in message), message
    assert "examples" in message
    ckpts = list((tmp_path / "run" / "checkpoints").glob("step*.ckpt"))
    assert ckpts, "the last good checkpoint is kept"
    state = torch.load(sorted(ckpts)[-1], map_location="cpu", weights_only=False)["state_dict"]
    assert all(torch.isfinite(v).all() for v in state.values() if v.is_floating_point())


def test_frozen_block_gets_no_gradient_and_keeps_batchnorm_statistics(tmp_path, table_data):
    spec = tmp_path / "frozen.yaml"
    text = mlp_spec(tmp_path, DATA.format(d=table_data) + "\noptimizer: {type: adam, lr: 0.01}\nbatch_size: 64\n"
                    "epochs: 2").read_text()
    text = text.replace("  act: {block: relu, in: hidden}",
                        "  norm: {block: batchnorm, in: hidden, frozen: true}\n  act: {block: relu, in: norm}")
    text = text.replace("  hidden: {block: dense, in: features, out_features: 32}",
                        "  hidden: {block: dense, in: features, out_features: 32, frozen: true}")
    spec.write_text(text)
    pipe = composer.load(spec)
    before = pipe.build().state_dict()
    result = train(pipe, tmp_path / "frozen", progress=False, echo=lambda line: None)
    after = load_file(result.folder / "last.safetensors")
    for key in ("hidden.weight", "hidden.bias", "norm.running_mean", "norm.running_var", "norm.weight"):
        torch.testing.assert_close(after[key], before[key], rtol=0, atol=0)
    assert not torch.equal(after["head.weight"], before["head.weight"])


def test_run_folder_weights_serve_every_command(tmp_path, table_data):
    result, pipe = _train(tmp_path, table_data, "optimizer: {type: adam, lr: 0.01}\nmetrics: {logits: [accuracy, f1]}\n"
                                                "batch_size: 64\nepochs: 3")
    folder = result.folder
    for name in ("best.safetensors", "last.safetensors", "metrics.csv", "curves.png", "report.json", "spec.yaml",
                 "checkpoints/last.ckpt"):
        assert (folder / name).exists(), name
    assert list((folder / "tensorboard").iterdir())
    report = json.loads((folder / "report.json").read_text())
    assert report["steps"] == 3 * 8 and report["monitor"] == "val/loss"
    assert report["curves"]["val/accuracy"] and len(report["curves"]["train/loss"]) == 3
    again = composer.load(folder / "spec.yaml")            # the resolved spec builds and trains the same way
    assert again.resolved.train.spec == pipe.resolved.train.spec
    from composer.weights import as_source
    ev = evaluate(pipe, as_source(str(folder / "last.safetensors")))   # the final validation ran on these weights
    assert ev.metrics["accuracy"] == pytest.approx(result.metrics["val/accuracy"], abs=1e-6)
    assert ev.metrics["loss"] == pytest.approx(result.metrics["val/loss"], rel=1e-5)
    assert ev.examples == 256


def test_a_new_run_never_overwrites_an_earlier_one(tmp_path, table_data):
    result, pipe = _train(tmp_path, table_data, "batch_size: 64\nepochs: 1")
    before = (result.folder / "last.safetensors").read_bytes()
    with pytest.raises(ComposerError, match="--resume"):
        train(pipe, result.folder, progress=False, echo=lambda line: None)
    assert (result.folder / "last.safetensors").read_bytes() == before
    with pytest.raises(ComposerError, match="no checkpoint"):
        train(pipe, tmp_path / "empty", resume=True, progress=False, echo=lambda line: None)


@pytest.mark.parametrize("body,code,where", [
    ("optimizer: {type: adam, momentum: 0.9}", "E103", "train.optimizer.momentum"),
    ("optimizer: {type: adamm}", "E105", "train.optimizer.type"),
    ("schedule: {type: step}", "E104", "train.schedule.step_size"),
    ("loss: {logit: cross_entropy}", "E201", "train.loss.logit"),
    ("metrics: {logits: [acuracy]}", "E105", "train.metrics.logits[0]"),
    ("early_stopping: {monitor: val/acc}", "E201", "train.early_stopping.monitor"),
    ("epochs: 0", "E105", "train.epochs"),
    ("clip_grad: {norm: 1.0, value: 1.0}", "E105", "train.clip_grad"),
    ("batch_sise: 3", "E103", "train.batch_sise"),
])
def test_bad_train_sections_are_located(tmp_path, table_data, body, code, where):
    with pytest.raises(SpecError) as info:
        _train(tmp_path, table_data, body)
    found = [(d.code, d.path) for d in info.value.errors]
    assert (code, where) in found, found
    d = next(d for d in info.value.errors if d.path == where)
    assert d.loc is not None and d.loc.line > 1


def test_set_overrides_reach_the_train_section(tmp_path, table_data):
    result, pipe = _train(tmp_path, table_data, "optimizer: {type: sgd, lr: 0.5}\nbatch_size: 64\nepochs: 1",
                          overrides=["train.optimizer.lr=0.25", "train.epochs=2"])
    assert pipe.resolved.train.spec.optimizer.lr == 0.25
    assert result.epochs == 2 and _lr_column(result.folder)[0] == pytest.approx(0.25)
    with pytest.raises(SpecError) as info:
        composer.load(pipe.file, overrides=["train.optimizer.lrr=1"])
    assert info.value.errors[0].hint == "did you mean `lr`?"


def test_a_loss_that_does_not_fit_its_output_is_a_located_error(tmp_path, table_data):
    spec = mlp_spec(tmp_path, DATA.format(d=table_data) + "\nloss: {probs: cross_entropy}")
    text = spec.read_text().replace("  head: {block: dense, in: act, out_features: 3}",
                                    "  head: {block: dense, in: act, out_features: 3}\n  soft: {block: softmax, in: head}")
    spec.write_text(text.replace("  logits: head", "  logits: head\n  probs: soft"))
    pipe = composer.load(spec)         # a valid spec; the loss meets the output's type when training starts
    with pytest.raises(SpecError) as info:
        train(pipe, tmp_path / "run", progress=False, echo=lambda line: None)
    d = info.value.errors[0]
    assert (d.code, d.path) == ("E301", "train.loss.probs") and d.loc.file == str(spec)
    assert not (tmp_path / "run").exists()

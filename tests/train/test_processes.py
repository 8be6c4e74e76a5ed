"""`composer train` as users run it, in processes of its own: a run killed with SIGKILL resumes
to the weights of an uninterrupted run, and DDP over two CPU processes (gloo) gives the
single-process result."""

from __future__ import annotations

import os
import signal
import subprocess
import time

import pytest
import torch
from safetensors.torch import load_file

from tests.conftest import COMPOSER

from tests.train.conftest import mlp_spec

DATA = "data: {{format: table, train: {d}/train.csv, val: {d}/val.csv, targets: {{logits: label}}}}"


def _cli(*args, **kw) -> subprocess.CompletedProcess:
    env = {**os.environ, "CI": "true"}
    return subprocess.run([COMPOSER, *map(str, args)], capture_output=True, text=True, env=env, timeout=300, **kw)


def _assert_same_weights(a, b, **tol) -> None:
    wa, wb = load_file(a), load_file(b)
    assert wa.keys() == wb.keys()
    for k in wa:
        torch.testing.assert_close(wa[k], wb[k], **tol, msg=lambda m: f"{k}: {m}")


def test_sigkill_then_resume_equals_an_uninterrupted_run(tmp_path, table_data):
    spec = mlp_spec(tmp_path, DATA.format(d=table_data) + """
optimizer: {type: adamw, lr: 0.003}
schedule: {type: cosine, warmup_steps: 5}
batch_size: 16
epochs: 12
checkpoint: {every_n_steps: 7, keep: 2}""")
    text = spec.read_text().replace("  act: {block: relu, in: hidden}",
                                    "  act: {block: relu, in: hidden}\n  drop: {block: dropout, in: act, p: 0.3}")
    spec.write_text(text.replace("head: {block: dense, in: act,", "head: {block: dense, in: drop,"))
    whole = _cli("train", spec, "-o", tmp_path / "whole", "--no-progress")
    assert whole.returncode == 0, whole.stderr

    run = tmp_path / "killed"
    env = {**os.environ, "CI": "true"}
    proc = subprocess.Popen([COMPOSER, "train", str(spec), "-o", str(run), "--no-progress"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and proc.poll() is None:
        steps = [int(p.stem[4:]) for p in (run / "checkpoints").glob("step*.ckpt")] if (run / "checkpoints").exists() else []
        if steps and max(steps) >= 40:          # mid-epoch (32 steps an epoch), well before the end (384)
            break
        time.sleep(0.005)
    assert proc.poll() is None, "the run ended before it could be killed: " + (proc.stderr.read() or "")
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (run / "last.safetensors").exists()
    for leftover in (run / "checkpoints").glob("*.tmp"):     # an interrupted write leaves no partial checkpoint
        leftover.unlink()
    resumed = _cli("train", spec, "-o", run, "--resume", "--no-progress")
    assert resumed.returncode == 0, resumed.stderr
    _assert_same_weights(run / "last.safetensors", tmp_path / "whole" / "last.safetensors", rtol=0, atol=0)
    rows = (run / "metrics.csv").read_text().splitlines()
    assert rows and len(rows) == len((tmp_path / "whole" / "metrics.csv").read_text().splitlines())


@pytest.mark.timeout(600)
def test_ddp_two_cpu_processes_give_the_single_process_result(tmp_path, table_data):
    spec = mlp_spec(tmp_path, DATA.format(d=table_data) + """
optimizer: {type: sgd, lr: 0.1, momentum: 0.9}
metrics: {logits: [accuracy]}
batch_size: 32
epochs: 3""")
    single = _cli("train", spec, "-o", tmp_path / "one", "--no-progress", "--accelerator", "cpu")
    assert single.returncode == 0, single.stderr
    ddp = _cli("train", spec, "-o", tmp_path / "two", "--no-progress", "--accelerator", "cpu", "--devices", "2",
               "--strategy", "ddp")
    assert ddp.returncode == 0, ddp.stderr
    assert ddp.stdout.count("trained mlp") == 1            # rank 0 reports
    _assert_same_weights(tmp_path / "two" / "last.safetensors", tmp_path / "one" / "last.safetensors",
                         rtol=1e-5, atol=1e-6)
    import json
    one = json.loads((tmp_path / "one" / "report.json").read_text())
    two = json.loads((tmp_path / "two" / "report.json").read_text())
    assert two["machine"]["devices"] == 2 and one["steps"] == two["steps"]
    assert two["metrics"]["val/accuracy"] == pytest.approx(one["metrics"]["val/accuracy"], abs=1e-6)


def test_fsdp_on_the_cpu_is_refused_plainly(tmp_path, table_data):
    spec = mlp_spec(tmp_path, DATA.format(d=table_data) + "\nbatch_size: 32\nepochs: 1")
    r = _cli("train", spec, "-o", tmp_path / "f", "--accelerator", "cpu", "--devices", "2", "--strategy", "fsdp")
    assert r.returncode == 1 and "fsdp" in r.stderr and "CUDA" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "f").exists()

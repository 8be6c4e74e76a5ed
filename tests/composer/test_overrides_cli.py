"""`--set BLOCK.PARAM=VALUE` on every command that reads a spec: applied, checked, exit 2 when bad."""

from __future__ import annotations

import json
import re
import subprocess

import pytest
from typer.testing import CliRunner

from composer.cli import app
from tests.conftest import COMPOSER, ROOT
from tests.export.conftest import TINY_CNN

CNN = ROOT / "pipelines" / "cnn_classifier.yaml"
MLP = ROOT / "pipelines" / "tabular_mlp.yaml"
runner = CliRunner()

BAD = ["--set", "conv1.out_chanels=16", "--set", "head.out_features=0.5", "--set", "hed.out_features=3"]
BAD_TEXT = """\
--set hed.out_features=3:1:1: error[E405] `hed.out_features`: no block `hed`
  found:    hed
  hint: did you mean `head`?
--set conv1.out_chanels=16:1:7: error[E103] blocks.conv1.out_chanels: unknown param `out_chanels`
  expected: one of: out_channels, kernel, stride, padding, dilation, groups, bias, spectral_norm
  found:    out_chanels
  hint: did you mean `out_channels`?
--set head.out_features=0.5:1:19: error[E105] blocks.head.out_features: invalid value for `out_features`
  expected: a valid integer
  found:    0.5 (float)
"""


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


@pytest.fixture
def tiny(tmp_path):
    path = tmp_path / "tiny_cnn.yaml"
    path.write_text(TINY_CNN)
    return path


@pytest.mark.parametrize("command", ["validate", "build", "resolve", "render", "export", "run"])
def test_every_command_takes_set(command):
    r = invoke(command, "--help")
    assert r.exit_code == 0 and "--set" in r.output and "BLOCK.PARAM=VALUE" in r.output


@pytest.mark.parametrize("command", ["validate", "build", "resolve", "export", "run"])
def test_a_bad_override_is_exit_2_with_every_error(command, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    r = invoke(command, CNN, *BAD)
    assert r.exit_code == 2, r.output
    assert BAD_TEXT in r.output and "Traceback" not in r.output
    assert list(tmp_path.iterdir()) == []  # nothing written


def test_validate_ok_and_json(tmp_path):
    r = invoke("validate", CNN, MLP, "--set", "head.out_features=3")
    assert r.exit_code == 0 and "cnn_classifier.yaml: ok" in r.output and "tabular_mlp.yaml: ok" in r.output
    r = invoke("validate", CNN, "--set", "head.out_features=0", "--json")
    assert r.exit_code == 2
    (d,) = json.loads(r.stdout)[str(CNN)]
    assert (d["code"], d["file"], d["line"], d["col"]) == ("E105", "--set head.out_features=0", 1, 19)


def test_resolve_and_build_write_the_overridden_values(tmp_path):
    r = invoke("resolve", CNN, "--set", "head.out_features=100", "--set", "conv1.kernel=[3, 5]", "--set",
               "conv1.padding=[1, 2]")
    assert r.exit_code == 0, r.output
    assert re.search(r"head:\n(    .*\n)*    out_features: 100\n", r.stdout)
    assert "kernel: [3, 5]" in r.stdout and "padding: [1, 2]" in r.stdout
    r = invoke("build", CNN, "-o", tmp_path, "--no-onnx", "--set", "head.out_features=100")
    assert r.exit_code == 0, r.output
    flat = (tmp_path / "cnn_classifier" / "cnn_classifier.resolved.yaml").read_text()
    assert "out_features: 100" in flat and "vector [B, 100]" in r.output


def test_render_draws_the_override_and_lists_a_bad_one(tmp_path):
    out = tmp_path / "cnn.dot"
    r = invoke("render", CNN, "--format", "dot", "-o", out, "--set", "head.out_features=7")
    assert r.exit_code == 0, r.output
    assert "vector [B, 7]" in out.read_text()
    r = invoke("render", CNN, "--format", "dot", "-o", out, "--set", "head.out_features=-7")
    assert r.exit_code == 2 and "--set head.out_features=-7:1:19: error[E105]" in r.output
    assert "--set head.out_features=-7:1:19:" in out.read_text()  # the diagram lists it among its errors


def test_export_and_run_use_the_override(tiny, tmp_path):
    target = tmp_path / "m.onnx"
    r = invoke("export", tiny, "-o", target, "--set", "head.out_features=3")
    assert r.exit_code == 0, r.output
    import onnx
    dims = onnx.load(str(target)).graph.output[0].type.tensor_type.shape.dim
    assert dims[-1].dim_value == 3
    r = invoke("run", tiny, "--random", "--set", "head.out_features=3", "--set", "conv.out_channels=2")
    assert r.exit_code == 0, r.output
    assert "logits  [1, 3] float32" in r.output
    r = invoke("run", target, "--random", "--set", "head.out_features=3")
    assert r.exit_code == 1 and "--set applies to a spec" in r.output


def test_the_installed_command(tmp_path):
    proc = subprocess.run([COMPOSER, "validate", str(MLP), "--set", "drop1.p=1.5"], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.startswith("--set drop1.p=1.5:1:9: error[E105] blocks.drop1.p: invalid value for `p`\n"
                                  "  expected: a number < 1.0\n  found:    1.5 (float)\n")

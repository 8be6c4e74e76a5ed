"""`parts:`: sub-pipelines that export and run on their own, sharing the pipeline's weights."""

from __future__ import annotations

import pytest
import torch
from typer.testing import CliRunner

import composer
from composer.cli import app
from composer.parts import part_model, part_pipeline

SPEC = """
pipeline: toy
dims:
  B: {sizes: [1, 2]}
  T: {sizes: [3, 5]}
inputs:
  x: {kind: sequence, shape: [B, T, 8]}
  y: {kind: sequence, shape: [B, T, 8]}
blocks:
  a: {block: dense, in: x, out_features: 8}
  b: {block: add, in: [a, y]}
  c: {block: dense, in: b, out_features: 4}
outputs:
  hidden: a
  out: c
parts:
  first: {outputs: [hidden]}
  second: {given: {h: a}, outputs: [out]}
"""


def test_parts_compute_the_pipeline_in_two_steps_with_its_weights():
    model = composer.loads(SPEC).build(seed=0).eval()
    first, second = part_model(model, "first"), part_model(model, "second")
    assert list(first.input_names) == ["x"] and list(second.input_names) == ["y", "h"]
    assert "self.c" not in first.code and "self.a" not in second.code     # each holds what it needs only
    assert second.c.weight is model.c.weight                               # shared, not copied
    x, y = torch.randn(2, 3, 8), torch.randn(2, 3, 8)
    with torch.no_grad():
        full = model(x=x, y=y)
        out = second(h=first(x=x)["hidden"], y=y)["out"]
    assert torch.equal(out, full["out"])
    assert part_pipeline(model.pipeline, "second").graph.output_type(
        part_pipeline(model.pipeline, "second").resolved.outputs["out"]).shape[2] == 4


def test_bad_parts_are_located_errors():
    bad = SPEC.replace("outputs: [out]}", "outputs: [outt]}").replace("given: {h: a}", "given: {x: a}")
    with pytest.raises(composer.SpecError) as exc:
        composer.loads(bad, file="toy.yaml")
    text = exc.value.format()
    assert "part `second` names output `outt`" in text and "did you mean `out`" in text
    assert "given input `x` of part `second` has the name of a spec input" in text
    assert "toy.yaml:18:37: error[E204] parts.second.outputs[0]" in text
    with pytest.raises(composer.ComposerError, match="has no part `third`"):
        part_pipeline(composer.loads(SPEC), "third")


def test_export_cli_exports_one_part_verified(tmp_path):
    spec = tmp_path / "toy.yaml"
    spec.write_text(SPEC)
    res = CliRunner().invoke(app, ["export", str(spec), "--part", "second", "-o", str(tmp_path / "second.onnx")])
    assert res.exit_code == 0, res.output
    assert "verified" in res.output and (tmp_path / "second.onnx").is_file()
    res = CliRunner().invoke(app, ["export", str(spec), "--part", "third", "-o", str(tmp_path / "third.onnx")])
    assert res.exit_code != 0 and "has no part `third`" in res.output and not (tmp_path / "third.onnx").exists()

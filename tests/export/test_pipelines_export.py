"""Registry-driven: every pipelines/*.yaml exports to ONNX and matches torch in onnxruntime
at two or more sizes of every dynamic dim. Pipelines over 1M parameters are marked slow; one over its
own memory limit (gpt3_175b) is refused before anything is allocated (its summary: tests/composer/test_scale.py)."""

from __future__ import annotations

import onnx
import pytest

import composer
from composer.export import export
from composer.graph import param_memory_error
from composer.stages import core_inputs
from tests.conftest import PIPELINES

SLOW_PARAMS = 1_000_000


def _marks(path) -> list:
    try:
        graph = composer.load(path).graph
    except composer.ComposerError:
        return []
    return [pytest.mark.slow] if graph.total_params() > SLOW_PARAMS and param_memory_error(graph) is None else []


CASES = [pytest.param(p, id=p.stem, marks=_marks(p)) for p in PIPELINES]


@pytest.mark.timeout(900)
@pytest.mark.parametrize("spec", CASES)
def test_pipeline_exports_with_verified_parity(spec, tmp_path):
    pipe = composer.load(spec)
    target = tmp_path / f"{pipe.name}.onnx"
    if param_memory_error(pipe.graph) is not None:        # too big to build: the export refuses, writing nothing
        with pytest.raises(composer.SpecError, match=r"E304"):
            export(pipe, target)
        assert not target.exists()
        return
    rep = export(pipe, target)
    assert target.is_file() and rep["verification"]["passed"]
    ver = rep["verification"]
    # at least two sizes of every dynamic dim were verified
    for name, dim in rep["dims"].items():
        seen = {run["sizes"][name] for run in ver["runs"]}
        assert len(seen) >= 2, f"dim {name} verified only at {seen}"
    # names are the spec's (a tokenizer's outputs for a text pipeline: the core's inputs); every
    # symbolic input dim is a named dynamic dim of the graph
    model = onnx.load(str(target))
    core = core_inputs(pipe.graph)
    assert [i.name for i in model.graph.input] == list(core)
    assert [o.name for o in model.graph.output] == list(pipe.resolved.outputs)
    for inp in model.graph.input:
        ci = core[inp.name]
        decl = pipe.resolved.inputs[inp.name].decl.shape if ci.port is None and ci.field is None else [
            d if isinstance(d, int) else str(d) for d in ci.type.shape]
        for d, want in zip(inp.type.tensor_type.shape.dim, decl):
            if isinstance(want, str) and want.isidentifier():
                assert d.dim_param == want
            elif isinstance(want, str):
                assert d.dim_param
            else:
                assert d.dim_value == want
    assert rep["exporter"] == "dynamo"

"""Registry-driven: every pipelines/*.yaml validates, resolves, builds and runs, and each
output has exactly the shape its inferred type gives at those sizes. A spec whose parameters exceed
its own memory limit (gpt3_175b) cannot be built for real: it is built and run on the meta device."""

from __future__ import annotations

import pytest
import torch

import composer
from composer.dims import evaluate
from composer.graph import param_memory_error
from composer.summary import example_env, example_inputs
from tests.conftest import PIPELINES


def _second_env(pipe) -> dict[str, int]:
    env = dict(example_env(pipe.graph))
    for name in env:
        decl = pipe.resolved.dims.get(name)
        if decl and decl.sizes and len(decl.sizes) > 1:
            env[name] = decl.sizes[-1]
    return env


@pytest.mark.parametrize("path", PIPELINES, ids=lambda p: p.stem)
def test_pipeline_builds_and_matches_its_types(path):
    pipe = composer.load(path)
    assert not pipe.warnings, [w.format() for w in pipe.warnings]
    meta = param_memory_error(pipe.graph) is not None
    model = pipe.build(seed=0, device="meta" if meta else None).eval()
    assert sum(p.numel() for p in model.parameters()) == pipe.graph.total_params()
    for env in (example_env(pipe.graph), _second_env(pipe)):
        inputs = example_inputs(pipe.graph, env, device="meta" if meta else "cpu",
                                generator=torch.Generator().manual_seed(0))
        with torch.no_grad():
            out = model(**inputs)
        assert list(out) == list(pipe.resolved.outputs)
        for name, ref in pipe.resolved.outputs.items():
            t = pipe.graph.output_type(ref)
            assert tuple(out[name].shape) == tuple(evaluate(d, env) for d in t.shape), (name, env)
            assert meta or torch.isfinite(out[name]).all()

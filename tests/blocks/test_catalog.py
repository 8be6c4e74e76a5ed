"""Registry-driven: every registered block infers, builds and runs, and its output matches
its inferred type; every block is documented in the catalog and the JSON Schema."""

from __future__ import annotations

import json
import os
import subprocess

import pytest
import torch

from composer.graph import count_params
from composer.registry import REGISTRY, catalog, load_blocks
from composer.schema import spec_schema
from composer.summary import torch_dtype
from composer.types import PortType
from tests.conftest import COMPOSER

load_blocks()
BLOCKS = sorted(n for n, c in REGISTRY.items() if not c.internal and c.stage == "core")
PRE_BLOCKS = sorted(n for n, c in REGISTRY.items() if not c.internal and c.stage == "pre")
CORPUS = "a man is eating food\na man rides a horse\nthe girl plays the violin\n"


def _tokenizer_example(folder):
    (folder / "corpus.txt").write_text(CORPUS)
    return {"train": str(folder / "corpus.txt"), "vocab_size": 60}, {"text": PortType("text", (2,), "string")}


# pre-processing blocks run outside the tensor core, on raw values: an example per block
PRE_EXAMPLES = {"tokenizer": (_tokenizer_example, {"text": ["a man rides", "the girl is eating food"]})}

SAMPLES = {
    "image": PortType("image", (2, 3, 32, 32)),
    "feature_map": PortType("feature_map", (2, 8, 16, 16)),
    "vector": PortType("vector", (2, 8)),
    "logits": PortType("logits", (2, 8)),
    "probs": PortType("probs", (2, 8)),
    "sequence": PortType("sequence", (2, 5, 8)),
    "series": PortType("series", (2, 5, 8)),
    "signal": PortType("signal", (2, 8, 5)),
    "tensor": PortType("feature_map", (2, 8, 16, 16)),
    "tokens": PortType("tokens", (2, 5), "int64"),
}


def _auto_value(prop: dict):
    if "anyOf" in prop:
        return _auto_value(prop["anyOf"][0])
    if "enum" in prop:
        return prop["enum"][0]
    t = prop.get("type")
    if t == "integer":
        return max(8, prop.get("minimum", 0))
    if t == "number":
        return 0.5
    if t == "array":
        return [_auto_value(prop.get("items", {}))] * max(1, prop.get("minItems", 1))
    if t == "boolean":
        return False
    return "x"


def example(cls) -> tuple[dict, dict]:
    """The block's own `example` (params, input types), or one derived from its schema."""
    own = getattr(cls, "example", None)
    if own:
        return dict(own["params"]), dict(own["inputs"])
    schema = cls.model_json_schema()
    params = {n: _auto_value(schema["properties"][n]) for n in schema.get("required", [])}
    inputs = {}
    for port, spec in cls.inputs.items():
        if spec.optional:
            continue
        t = SAMPLES[spec.kinds[0]]
        inputs[port] = [t, t] if spec.variadic else t
    return params, inputs


def tensor_for(t: PortType):
    """A random value of a port type: a tensor, or a dict of tensors for a structured port (a
    graph: valid node ids and a sorted batch vector)."""
    if t.kind == "graph":
        from composer.graph_data import random_for_type
        return random_for_type(t, torch.Generator().manual_seed(0))
    if t.fields:
        return {n: tensor_for(ft) for n, ft in t.fields}
    dtype = torch_dtype(t.dtype)
    if dtype.is_floating_point:
        return torch.randn(t.shape, dtype=dtype)
    low = 1 if t.kind == "sizes" else 0          # image sizes are at least 1 pixel
    return torch.randint(low, 4, t.shape, dtype=dtype)


def _check(value, t: PortType):
    if t.fields:
        assert isinstance(value, dict) and list(value) == [n for n, _ in t.fields], (list(value), t)
        for (n, ft) in t.fields:
            _check(value[n], ft)
        return
    assert isinstance(value, torch.Tensor)
    assert value.dim() == len(t.shape), (tuple(value.shape), t)
    for got, want in zip(value.shape, t.shape):
        if isinstance(want, int):
            assert got == want, (tuple(value.shape), t)
        else:   # a dim the block creates (a resized size): at least its declared multiple
            assert got % max(1, min(getattr(a, "multiple", 1) for a in _atoms(want))) == 0, (tuple(value.shape), t)
    assert value.dtype == torch_dtype(t.dtype)


def _atoms(d):
    from composer.dims import Sym
    atoms = [a for mono in d.terms for a in mono if isinstance(a, Sym)]
    return atoms or [Sym("_")]


@pytest.mark.parametrize("name", BLOCKS)
def test_block_infers_builds_and_runs(name):
    cls = REGISTRY[name]
    params, inputs = example(cls)
    block = cls.model_validate(params)
    outs = block.infer(**inputs)
    outs = outs if isinstance(outs, dict) else {"out": outs}
    torch.manual_seed(0)
    module = block.build(**inputs).eval()
    args = []
    for port, spec in cls.inputs.items():
        t = inputs.get(port)
        args.append(None if t is None else [tensor_for(x) for x in t] if spec.variadic else tensor_for(t))
    with torch.no_grad():
        result = module(*args)
    values = [result] if len(outs) == 1 else list(result)
    assert len(values) == len(outs)
    for value, t in zip(values, outs.values()):
        _check(value, t)
    n = sum(p.numel() for p in module.parameters())
    from composer.resolve import Node
    assert count_params(Node("n", name, block, {}), inputs) == n


@pytest.mark.parametrize("name", PRE_BLOCKS)
def test_pre_processing_block_infers_and_runs(name, tmp_path):
    """A pre-processing block (a tokenizer) gives arrays of its inferred types, and has no module."""
    import numpy as np
    assert name in PRE_EXAMPLES, f"pre-processing block {name} needs an entry in PRE_EXAMPLES"
    make, raw = PRE_EXAMPLES[name]
    params, inputs = make(tmp_path)
    block = REGISTRY[name].model_validate(params)
    outs = block.infer(**inputs)
    values = block.build_stage(**inputs)(**raw)
    assert list(values) == list(outs)
    for port, t in outs.items():
        v = values[port]
        assert isinstance(v, np.ndarray) and v.ndim == len(t.shape) and str(v.dtype) == t.dtype, (port, v, t)
        assert v.shape[0] == len(next(iter(raw.values())))
    assert block.param_count(**inputs) == 0


@pytest.mark.parametrize("name", BLOCKS + PRE_BLOCKS)
def test_block_is_documented(name):
    cls = REGISTRY[name]
    assert cls.summary(), f"{name} needs a docstring"
    assert cls.family
    json.dumps(cls.model_json_schema())


def test_schema_covers_every_block():
    schema = spec_schema()
    variants = schema["properties"]["blocks"]["additionalProperties"]["oneOf"]
    titles = {v["title"] for v in variants}
    assert set(catalog()) <= titles and "sub-pipeline" in titles
    conv = next(v for v in variants if v["title"] == "conv2d")
    assert conv["additionalProperties"] is False and "out_channels" in conv["required"]


def test_catalog_cli(tmp_path):
    env = {**os.environ, "COLUMNS": "240"}
    listing = subprocess.run([COMPOSER, "blocks"], capture_output=True, text=True, timeout=120, env=env)
    assert listing.returncode == 0
    for name in catalog():
        assert name in listing.stdout
    one = subprocess.run([COMPOSER, "blocks", "conv2d"], capture_output=True, text=True, timeout=60)
    assert one.returncode == 0 and "blocks/core/conv.py" in one.stdout and "out_channels" in one.stdout
    bad = subprocess.run([COMPOSER, "blocks", "conv2x"], capture_output=True, text=True, timeout=60)
    assert bad.returncode == 1 and "did you mean `conv2d`" in bad.stderr
    out = tmp_path / "schema.json"
    made = subprocess.run([COMPOSER, "schema", "-o", str(out)], capture_output=True, text=True, timeout=60)
    assert made.returncode == 0 and json.loads(out.read_text())["title"] == "composer pipeline spec"


def test_registry_rejects_duplicates():
    from composer.block import Block
    from composer.registry import RegistryError, register

    class Again(Block):
        """A second relu."""
        name = "relu"

    with pytest.raises(RegistryError, match="registered twice"):
        register(Again)

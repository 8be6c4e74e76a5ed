"""Rename and ignore rules, strictness and dtype casts: in Python, in the spec's `weights:`
section, and every bad rule a clear error naming it, with nothing loaded partially."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

import composer
from composer.errors import SpecError
from composer.weights import WeightsError, WeightsSource, load_weights, plan

MLP = """\
pipeline: node_mlp
inputs:
  x: {kind: vector, shape: [N, 8]}
blocks:
  conv1: {block: dense, in: x, out_features: 16}
  act: {block: relu, in: conv1}
  conv2: {block: dense, in: act, out_features: 3}
outputs:
  y: conv2
"""


def _pyg_style(tmp_path, name="gnn.pt"):
    """A checkpoint laid out like a PyG model (`convs.0.lin.weight`, `convs.0.bias`, ...) with
    a training-only tensor beside it."""
    torch.manual_seed(3)
    sd = {"convs.0.lin.weight": torch.randn(16, 8), "convs.0.bias": torch.randn(16),
          "convs.1.lin.weight": torch.randn(3, 16), "convs.1.bias": torch.randn(3),
          "similarity_head.weight": torch.randn(3, 3)}
    path = tmp_path / name
    torch.save(sd, path)
    return path, sd


def _state(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def _unchanged(model, before) -> bool:
    return all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


RULES = [(r"^convs\.0\.(lin\.)?", "conv1."), (r"^convs\.1\.(lin\.)?", "conv2.")]


def test_pyg_style_checkpoint_loads_with_rename_rules(tmp_path):
    path, sd = _pyg_style(tmp_path)
    model = composer.loads(MLP).build().eval()
    rep = load_weights(model, path, rename=[("^convs\\.(\\d+)\\.lin\\.weight$", r"layer\1.weight"),
                                            ("^convs\\.(\\d+)\\.bias$", r"layer\1.bias"),
                                            ("^layer0\\.", "conv1."), ("^layer1\\.", "conv2.")],
                       ignore=["^similarity_"])
    assert rep.renamed == 4 and rep.ignored == ["similarity_head.weight"] and rep.warnings == []
    assert {e.key: e.file_key for e in rep.entries} == {
        "conv1.weight": "convs.0.lin.weight", "conv1.bias": "convs.0.bias",
        "conv2.weight": "convs.1.lin.weight", "conv2.bias": "convs.1.bias"}
    x = torch.randn(5, 8)
    expected = F.linear(F.relu(F.linear(x, sd["convs.0.lin.weight"], sd["convs.0.bias"])),
                        sd["convs.1.lin.weight"], sd["convs.1.bias"])
    with torch.no_grad():
        torch.testing.assert_close(model(x=x)["y"], expected)


def test_rules_in_the_spec_load_on_build_and_round_trip(tmp_path):
    path, sd = _pyg_style(tmp_path)
    spec = tmp_path / "gnn.yaml"
    spec.write_text(MLP + f"""weights:
  file: {path.name}
  rename:
    - ['^convs\\.0\\.lin\\.', 'conv1.']
    - ['^convs\\.0\\.', 'conv1.']
    - ['^convs\\.1\\.lin\\.', 'conv2.']
    - ['^convs\\.1\\.', 'conv2.']
  ignore: ['^similarity_']
""")
    pipe = composer.load(spec)
    src = pipe.resolved.weights
    assert src.file == str(path) and len(src.rename) == 4 and src.strict
    assert src.rename[1].where == "weights.rename[1]"
    model = pipe.build()
    assert model.weights_report.renamed == 4
    assert torch.equal(model.state_dict()["conv2.bias"], sd["convs.1.bias"])
    # the resolved spec keeps the section, and builds the same model from another folder
    resolved = tmp_path / "elsewhere" / "resolved.yaml"
    resolved.parent.mkdir()
    resolved.write_text(composer.resolve_yaml(pipe) if hasattr(composer, "resolve_yaml") else _resolved(pipe))
    again = composer.load(resolved).build()
    assert torch.equal(again.state_dict()["conv1.weight"], sd["convs.0.lin.weight"])


def _resolved(pipe) -> str:
    from composer import emit
    return emit.to_yaml(pipe.resolved)


def test_a_rule_that_matches_nothing_is_a_warning_naming_it(tmp_path):
    path, _ = _pyg_style(tmp_path)
    rep = load_weights(composer.loads(MLP).build(), path, rename=[*RULES, ("^nothing_here", "x")],
                       ignore=["^similarity_", "^also_nothing"])
    text = "\n".join(rep.warnings)
    assert "rename rule rename[2] (`^nothing_here` → `x`) matches no file key" in text
    assert "ignore rule ignore[1] (`^also_nothing`) matches no file key" in text


@pytest.mark.parametrize("rename, ignore, message", [
    ([("convs.(", "x")], [], r"rename rule rename\[0\] \(`convs.\(` → `x`\): the regex does not compile"),
    ([("^convs", r"\2")], [], r"refers to group 2; the regex has 0"),
    ([], ["[unclosed"], r"ignore rule ignore\[0\] \(`\[unclosed`\): the regex does not compile"),
    ([(r"^convs\.\d+\.", "layer.")], ["^similarity_"], r"rename rules map file keys `convs.0.lin.weight` and "
                                                       r"`convs.1.lin.weight` both onto `layer.lin.weight`"),
    ([(r"^convs\.0\.lin\.", "conv1x.")], ["^similarity_"], r"(?s)rename rules produce keys the pipeline lacks.*"
                                                           r"turns `convs.0.lin.weight` into `conv1x.weight` "
                                                          r"\(did you mean `conv1.weight`\?\)"),
    ([(r"^convs\.0\.lin\.", "conv2.")], ["^similarity_"], r"turns file key `convs.0.lin.weight` \[16, 8\] into "
                                                          r"`conv2.weight`, which is \[3, 16\] in the pipeline"),
])
def test_bad_rules_are_errors_and_nothing_is_loaded(tmp_path, rename, ignore, message):
    path, _ = _pyg_style(tmp_path)
    model = composer.loads(MLP).build()
    before = _state(model)
    with pytest.raises(WeightsError, match=message):
        load_weights(model, path, rename=rename, ignore=ignore)
    assert _unchanged(model, before)


def test_bad_rules_in_the_spec_are_located(tmp_path):
    path, _ = _pyg_style(tmp_path)
    spec = tmp_path / "bad.yaml"
    spec.write_text(MLP + f"weights:\n  file: {path.name}\n  rename:\n    - ['ok', 'fine']\n    - ['(', 'x']\n"
                          f"  ignore: ['a)']\n")
    with pytest.raises(SpecError) as exc:
        composer.load(spec)
    found = {(d.code, d.path, d.loc.line) for d in exc.value.diagnostics}
    assert found == {("E107", "weights.rename[1]", 14), ("E107", "weights.ignore[0]", 15)}
    spec.write_text(MLP + f"weights:\n  file: {path.name}\n  strikt: false\n")
    with pytest.raises(SpecError) as exc:
        composer.load(spec)
    (d,) = exc.value.errors
    assert (d.code, d.path, d.loc.line, d.hint) == ("E103", "weights.strikt", 12, "did you mean `strict`?")


def test_missing_weights_file_in_the_spec_is_located(tmp_path):
    spec = tmp_path / "m.yaml"
    spec.write_text(MLP + "weights: {file: nowhere.safetensors, strict: false}\n")
    with pytest.raises(SpecError) as exc:
        composer.load(spec)
    (d,) = exc.value.errors
    assert d.code == "E009" and d.path == "weights.file" and "nowhere.safetensors" in d.message


def test_strict_false_keeps_initial_weights_and_says_which(tmp_path):
    torch.manual_seed(0)
    path = tmp_path / "part.safetensors"
    save_file({"conv1.weight": torch.randn(16, 8), "conv1.bias": torch.randn(16)}, str(path))
    model = composer.loads(MLP).build()
    before = _state(model)
    with pytest.raises(WeightsError, match=r"(?s)2 pipeline tensors have no match.*conv2.weight \[3, 16\]"):
        load_weights(model, path)
    assert _unchanged(model, before)
    rep = load_weights(model, WeightsSource(str(path), strict=False))
    assert rep.missing == ["conv2.weight", "conv2.bias"] and rep.kept_initial == ["conv2"]
    assert torch.equal(model.state_dict()["conv2.weight"], before["conv2.weight"])
    assert not torch.equal(model.state_dict()["conv1.weight"], before["conv1.weight"])


def test_dtype_casts_only_where_lossless_or_allowed(tmp_path):
    model = composer.loads(MLP).build()
    sd = {k: v.clone() for k, v in model.state_dict().items()}
    half = tmp_path / "half.safetensors"
    save_file({k: v.half() for k, v in sd.items()}, str(half))
    rep = load_weights(model, half)                       # float16 into float32 loses nothing
    assert {e.cast for e in rep.entries} == {"float16→float32"}
    exact64 = tmp_path / "exact64.safetensors"
    save_file({k: v.double() for k, v in sd.items()}, str(exact64))
    load_weights(model, exact64)                          # float64 holding float32 values: round trip is exact
    wide = {k: v.double() + 1e-12 for k, v in sd.items()}
    wide64 = tmp_path / "wide64.safetensors"
    save_file(wide, str(wide64))
    before = _state(model)
    with pytest.raises(WeightsError, match=r"casting 4 tensors would change their values: conv1.weight \(float64 in "
                                           r"the file, float32 in the pipeline\).*--allow-cast"):
        load_weights(model, wide64)
    assert _unchanged(model, before)
    load_weights(model, wide64, cast=True)
    torch.testing.assert_close(model.state_dict()["conv1.weight"], wide["conv1.weight"].float())
    ints = tmp_path / "ints.safetensors"
    save_file({k: (v * 100).round().int() for k, v in sd.items()}, str(ints))
    with pytest.raises(WeightsError, match="casting"):
        load_weights(model, ints)     # integers into float32 weights: only when allowed


def test_plan_reports_without_loading(tmp_path):
    path, _ = _pyg_style(tmp_path)
    model = composer.loads(MLP).build()
    before = _state(model)
    rep = plan(model, path, rename=RULES, ignore=["^similarity_"])
    assert rep.loaded == 4 and [e.how for e in rep.entries] == ["renamed"] * 4
    assert "rename[0]" in rep.entries[0].detail
    assert _unchanged(model, before)
    meta = composer.loads(MLP).build(device="meta")      # a plan needs no real tensors
    assert plan(meta, path, rename=RULES, ignore=["^similarity_"]).loaded == 4


def test_the_schema_takes_a_path_or_a_section():
    from composer.schema import spec_schema
    schema = spec_schema()
    options = schema["properties"]["weights"]["anyOf"]
    assert {"type": "string"} in options and {"$ref": "#/$defs/WeightsDecl"} in options
    section = schema["$defs"]["WeightsDecl"]
    assert set(section["properties"]) == {"file", "rename", "ignore", "transpose", "strict", "cast"}
    assert section["additionalProperties"] is False and section["required"] == ["file"]

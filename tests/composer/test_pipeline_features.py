"""Spec language features end to end: sub-pipelines, overrides, repeat, resolve round trip."""

from __future__ import annotations

import textwrap

import pytest
import torch

import composer
from composer import SpecError
from composer.emit import to_yaml
from tests.conftest import ROOT

PART = ROOT / "pipelines" / "parts" / "residual_block.yaml"


def spec_with(blocks: str, outputs: str = "y: out", inputs: str = "image: {kind: image, shape: [B, 3, H, W]}") -> str:
    return textwrap.dedent("""\
        pipeline: t
        inputs:
          {inputs}
        blocks:
        {blocks}
        outputs:
          {outputs}
        """).format(inputs=inputs, blocks=textwrap.indent(textwrap.dedent(blocks), "  "), outputs=outputs)


def test_subpipeline_ports_and_names(write_spec, tmp_path):
    (tmp_path / "block.yaml").write_text(PART.read_text())
    path = write_spec(spec_with("""\
        stem: {block: conv2d, in: image, out_channels: 64, padding: 1}
        res: {spec: block.yaml, in: {x: stem}}
        out: {block: global_avg_pool, in: res.y}
        """))
    pipe = composer.load(path)
    nodes = pipe.resolved.nodes
    assert "res/x" in nodes and nodes["res/x"].type == "_port"
    assert "res/conv1" in nodes and nodes["res/conv1"].scope == ("res",)
    model = pipe.build(seed=0)
    assert "res.conv1.weight" in model.state_dict()
    assert model(image=torch.randn(1, 3, 16, 16))["y"].shape == (1, 64)


def test_override_changes_params_and_is_checked(write_spec, tmp_path):
    (tmp_path / "block.yaml").write_text(PART.read_text())
    ok = write_spec(spec_with("""\
        stem: {block: conv2d, in: image, out_channels: 64, padding: 1}
        res: {spec: block.yaml, in: stem, overrides: {bn1.eps: 0.001, conv1.bias: true}}
        out: {block: global_avg_pool, in: res}
        """), "ok.yaml")
    pipe = composer.load(ok)
    assert pipe.resolved.nodes["res/bn1"].block.eps == 0.001
    assert pipe.graph.params["res/conv1"] == 64 * 64 * 9 + 64
    bad = write_spec(spec_with("""\
        stem: {block: conv2d, in: image, out_channels: 64, padding: 1}
        res: {spec: block.yaml, in: stem, overrides: {conv2.out_channels: 32, conv9.kernel: 1, conv1.kernel: "3"}}
        out: {block: global_avg_pool, in: res}
        """), "bad.yaml")
    with pytest.raises(SpecError) as info:
        composer.load(bad)
    # conv9 does not exist; kernel "3" is reported at the override in bad.yaml; nothing cascades
    assert sorted(info.value.codes()) == ["E105", "E403"]
    e105 = next(d for d in info.value.diagnostics if d.code == "E105")
    assert e105.loc.file.endswith("bad.yaml") and e105.loc.line == 6
    narrow = write_spec(spec_with("""\
        stem: {block: conv2d, in: image, out_channels: 64, padding: 1}
        res: {spec: block.yaml, in: stem, overrides: {conv2.out_channels: 32}}
        out: {block: global_avg_pool, in: res}
        """), "narrow.yaml")
    with pytest.raises(SpecError) as info:
        composer.load(narrow)
    (d,) = info.value.errors  # 32 channels cannot be added to the 64-channel shortcut
    assert d.code == "E302" and "res/sum" in d.message


def test_subpipeline_input_type_is_checked(write_spec, tmp_path):
    (tmp_path / "block.yaml").write_text(PART.read_text())
    path = write_spec(spec_with("""\
        pool: {block: global_avg_pool, in: image}
        out: {spec: block.yaml, in: pool}
        """))
    with pytest.raises(SpecError) as info:
        composer.load(path)
    assert info.value.codes() == ["E301"]


def test_subpipeline_missing_file(write_spec):
    path = write_spec(spec_with("out: {spec: nowhere.yaml, in: image}"))
    with pytest.raises(SpecError) as info:
        composer.load(path)
    assert info.value.codes() == ["E402"]


def test_mutual_inclusion(tmp_path):
    (tmp_path / "a.yaml").write_text(spec_with("out: {spec: b.yaml, in: image}"))
    (tmp_path / "b.yaml").write_text(spec_with("out: {spec: a.yaml, in: image}"))
    with pytest.raises(SpecError) as info:
        composer.load(tmp_path / "a.yaml")
    assert "E401" in info.value.codes()
    assert "a.yaml -> b.yaml -> a.yaml" in info.value.format()


def test_repeat_stacks_blocks(write_spec):
    path = write_spec(spec_with("""\
        proj: {block: dense, in: image, out_features: 16}
        layers: {block: mlp, in: proj, hidden: [32], out_features: 16, repeat: 4}
        out: {block: layernorm, in: layers}
        """, inputs="image: {kind: vector, shape: [B, 8]}"))
    pipe = composer.load(path)
    names = [n for n in pipe.resolved.nodes if n.startswith("layers/")]
    assert names == ["layers/0", "layers/1", "layers/2", "layers/3"]
    assert pipe.resolved.groups == {"layers": 4}
    assert pipe.resolved.nodes["layers/2"].bindings["x"].node == "layers/1"
    assert pipe.graph.params["layers/3"] == 16 * 32 + 32 + 32 * 16 + 16
    model = pipe.build()
    assert model(image=torch.randn(2, 8))["y"].shape == (2, 16)


def test_repeat_needs_one_input(write_spec):
    path = write_spec(spec_with("""\
        out: {block: add, in: [image, image], repeat: 2}
        """))
    with pytest.raises(SpecError) as info:
        composer.load(path)
    assert "E404" in info.value.codes()


def test_resolve_round_trip_builds_the_same_model(tmp_path):
    pipe = composer.load(ROOT / "pipelines" / "residual_cnn.yaml")
    flat = tmp_path / "flat.yaml"
    flat.write_text(to_yaml(pipe.resolved))
    again = composer.load(flat)
    assert list(again.resolved.nodes) == list(pipe.resolved.nodes)
    a, b = pipe.build(seed=3), again.build(seed=3)
    sa, sb = a.state_dict(), b.state_dict()
    assert list(sa) == list(sb) and all(torch.equal(sa[k], sb[k]) for k in sa)
    x = torch.randn(2, 3, 32, 32)
    a.eval(), b.eval()
    assert torch.equal(a(image=x)["logits"], b(image=x)["logits"])
    # resolving the resolved spec is a fixed point
    assert to_yaml(again.resolved).split("\n", 1)[1] == to_yaml(pipe.resolved).split("\n", 1)[1]


def test_named_ports_mapping_and_multiple_outputs(write_spec):
    path = write_spec(spec_with("""\
        a: {block: conv2d, in: {x: image}, out_channels: 4, padding: 1}
        b: {block: conv2d, in: image, out_channels: 4, padding: 1}
        cat: {block: concat, in: {xs: [a, b]}}
        out: {block: global_avg_pool, in: cat}
        """, outputs="y: out\n  feat: cat"))
    pipe = composer.load(path)
    assert str(pipe.graph.output_type(pipe.resolved.outputs["feat"])) == "feature_map [B, 8, H, W]"
    out = pipe.build()(image=torch.randn(1, 3, 8, 8))
    assert set(out) == {"y", "feat"} and out["feat"].shape == (1, 8, 8, 8)


def test_field_references_into_structured_ports(write_spec):
    path = write_spec(spec_with("""\
        backbone: {block: resnet, in: image, depth: 18}
        out: {block: conv2d, in: backbone.features.c4, out_channels: 8, kernel: 1}
        """, outputs="y: out\n  c5: backbone.features.c5",
        inputs="image: {kind: image, shape: [B, 3, H, W]}\ndims: {H: {multiple_of: 32}, W: {multiple_of: 32}}"))
    pipe = composer.load(path)
    assert str(pipe.graph.output_type(pipe.resolved.outputs["y"])) == "feature_map [B, 8, H/16, W/16]"
    assert "self.out(backbone__features['c4'])" in pipe.build().code
    out = pipe.build()(image=torch.randn(1, 3, 64, 64))
    assert out["y"].shape == (1, 8, 4, 4) and out["c5"].shape == (1, 512, 2, 2)
    bad = write_spec(path.read_text().replace("features.c4", "features.c9"), "bad.yaml")
    with pytest.raises(SpecError) as info:
        composer.load(bad)
    (d,) = info.value.errors
    assert d.code == "E202" and d.expected == "c2, c3, c4, c5" and d.loc.line == 7


def test_spec_weights_are_loaded_and_checked(tmp_path):
    text = (ROOT / "pipelines" / "cnn_classifier.yaml").read_text()
    trained = composer.loads(text).build(seed=5)
    composer.save_weights(trained, tmp_path / "trained.safetensors")
    spec = tmp_path / "spec.yaml"
    spec.write_text(text.replace("seed: 0\n", "seed: 0\nweights: trained.safetensors\n"))
    model = composer.load(spec).build()
    assert all(torch.equal(v, trained.state_dict()[k]) for k, v in model.state_dict().items())
    fresh = composer.load(spec).build(spec_weights=False)
    assert not torch.equal(fresh.conv1.weight, trained.conv1.weight)
    spec.write_text(text.replace("seed: 0\n", "seed: 0\nweights: missing.safetensors\n"))
    with pytest.raises(SpecError) as info:
        composer.load(spec)
    (d,) = info.value.errors
    assert (d.code, d.path, d.loc.line) == ("E009", "weights", 4)

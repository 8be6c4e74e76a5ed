"""Overrides from outside a spec (`--set BLOCK.PARAM=VALUE`, `load(..., overrides=...)`):
applied like the spec's own values, checked like them, errors located at the override."""

from __future__ import annotations

import copy
import textwrap

import pytest

import composer
from composer import SpecError
from composer._yaml import load_file
from composer.emit import to_yaml
from composer.pipeline import analyze_doc
from tests.conftest import ROOT

CNN = ROOT / "pipelines" / "cnn_classifier.yaml"
MLP = ROOT / "pipelines" / "tabular_mlp.yaml"
RESIDUAL = ROOT / "pipelines" / "residual_cnn.yaml"
DETECTION = ROOT / "pipelines" / "detection.yaml"
PART = ROOT / "pipelines" / "parts" / "residual_block.yaml"


def errors_of(path, overrides) -> str:
    with pytest.raises(SpecError) as info:
        composer.load(path, overrides=overrides)
    return "\n".join(d.format() for d in info.value.diagnostics)


# -- applying ------------------------------------------------------------------------------------


def test_mapping_overrides_change_params_and_the_resolved_spec():
    pipe = composer.load(CNN, overrides={"head.out_features": 100, "conv1.kernel": (3, 5), "conv1.padding": [1, 2]})
    conv1, head = pipe.resolved.nodes["conv1"].block, pipe.resolved.nodes["head"].block
    assert (head.out_features, conv1.kernel, conv1.padding) == (100, [3, 5], [1, 2])
    assert str(pipe.graph.output_type(pipe.resolved.outputs["logits"])) == "vector [B, 100]"
    flat = to_yaml(pipe.resolved)
    assert "out_features: 100" in flat and "kernel: [3, 5]" in flat
    assert composer.loads(flat).resolved.nodes["head"].block.out_features == 100  # the flat spec builds the same


def test_flag_values_are_yaml():
    pipe = composer.load(MLP, overrides=["drop1.p=0.3", "hidden1.bias=false", "norm1.momentum=0.2",
                                         "hidden2.out_features=48", "act1.description=a note"])
    nodes = pipe.resolved.nodes
    assert nodes["drop1"].block.p == 0.3 and isinstance(nodes["drop1"].block.p, float)
    assert nodes["hidden1"].block.bias is False
    assert nodes["hidden2"].block.out_features == 48
    assert nodes["act1"].description == "a note"
    pipe = composer.load(CNN, overrides=["conv1.kernel=[3, 5]", "conv1.padding=[1, 2]"])
    assert pipe.resolved.nodes["conv1"].block.kernel == [3, 5]


def test_api_entry_points_take_overrides(tmp_path):
    graph = composer.analyze_file(CNN, overrides={"head.out_features": 0})
    (d,) = graph.errors
    assert (d.code, d.path, d.loc.file) == ("E105", "blocks.head.out_features", "overrides['head.out_features']")
    pipe = composer.loads(CNN.read_text(), str(CNN), overrides=["head.out_features=7"])
    assert pipe.resolved.nodes["head"].block.out_features == 7
    doc = load_file(CNN)
    before = copy.deepcopy(doc.data), dict(doc.locs)
    assert not analyze_doc(doc, overrides={"head.out_features": 7}).errors
    assert (doc.data, doc.locs) == before  # the loaded document itself is left as it was
    assert composer.load(CNN, overrides={}).resolved.nodes["head"].block.out_features == 10


def test_repeat_frozen_and_blocks_inside_sub_pipelines():
    pipe = composer.load(RESIDUAL, overrides=["stage.repeat=2", "stage/conv1.bias=true", "stage/bn1.eps=0.01",
                                              "stem.frozen=true"])
    nodes = pipe.resolved.nodes
    assert sorted(n for n in nodes if n.endswith("/conv1")) == ["stage/0/conv1", "stage/1/conv1"]
    assert all(nodes[f"stage/{i}/conv1"].block.bias and nodes[f"stage/{i}/bn1"].block.eps == 0.01 for i in (0, 1))
    assert nodes["stem"].frozen
    assert "stage/2/conv1" not in nodes


def _nested(tmp_path):
    (tmp_path / "block.yaml").write_text(PART.read_text())
    (tmp_path / "stack.yaml").write_text(textwrap.dedent("""\
        pipeline: stack
        inputs:
          x: {kind: feature_map, shape: [B, C, H, W]}
        blocks:
          first: {spec: block.yaml, in: x, overrides: {conv1.bias: true, bn1.eps: 0.5}}
        outputs:
          y: first
        """))
    top = tmp_path / "top.yaml"
    top.write_text(textwrap.dedent("""\
        pipeline: top
        inputs:
          image: {kind: image, shape: [B, 3, H, W]}
        blocks:
          stem: {block: conv2d, in: image, out_channels: 64, padding: 1}
          body: {spec: stack.yaml, in: stem}
        outputs:
          y: body
        """))
    return top


def test_overrides_reach_nested_sub_pipelines_and_win_over_written_ones(tmp_path):
    top = _nested(tmp_path)
    nodes = composer.load(top).resolved.nodes
    assert nodes["body/first/bn1"].block.eps == 0.5
    nodes = composer.load(top, overrides=["body/first/bn1.eps=0.01", "body/first/conv2.bias=true"]).resolved.nodes
    assert nodes["body/first/bn1"].block.eps == 0.01          # the flag wins over the spec's `overrides:`
    assert nodes["body/first/conv1"].block.bias is True        # the spec's other override still applies
    assert nodes["body/first/conv2"].block.bias is True


def test_nested_errors_are_located_at_the_flag(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    text = errors_of(_nested(tmp_path), ["body/first/conv9.bias=true", "body/first/conv1.biass=true",
                                         "body/first/bn1.eps=0"])
    assert text == textwrap.dedent("""\
        --set body/first/conv9.bias=true:1:12: error[E405] `body/first/conv9.bias`: no block `conv9` in sub-pipeline `body/first` (block.yaml)
          found:    conv9
          hint: did you mean `conv2`?
        --set body/first/conv1.biass=true:1:18: error[E103] blocks.conv1.biass: unknown param `biass`
          expected: one of: out_channels, kernel, stride, padding, dilation, groups, bias, spectral_norm
          found:    biass
          hint: did you mean `bias`?
        --set body/first/bn1.eps=0:1:20: error[E105] blocks.bn1.eps: invalid value for `eps`
          expected: a number > 0.0
          found:    0 (int)""")


# -- errors, pinned -------------------------------------------------------------------------------


def test_unknown_param_invalid_value_and_unknown_block_in_one_pass():
    text = errors_of(DETECTION, ["roi.score_thres=0.3", "rpn.nms_thresh=high", "rio.score_thresh=0.3"])
    assert text == textwrap.dedent("""\
        --set rio.score_thresh=0.3:1:1: error[E405] `rio.score_thresh`: no block `rio`
          found:    rio
          hint: did you mean `roi`?
        --set rpn.nms_thresh=high:1:16: error[E105] blocks.rpn.nms_thresh: invalid value for `nms_thresh`
          expected: a valid number
          found:    "high" (string)
        --set roi.score_thres=0.3:1:5: error[E103] blocks.roi.score_thres: unknown param `score_thres`
          expected: one of: num_classes, pool_levels, pool_size, sampling_ratio, representation, score_thresh, nms_thresh, detections_per_image, min_size, fg_iou_thresh, bg_iou_thresh, batch_size_per_image, positive_fraction
          found:    score_thres
          hint: did you mean `score_thresh`?""")


@pytest.mark.parametrize("flag,expected", [
    ("drop1.p=1.5", "a number < 1.0"), ("drop1.p=1.0", "a number < 1.0"), ("drop1.p=-0.1", "a number >= 0.0"),
    ("norm1.momentum=2", None),
])
def test_a_probability_outside_its_range_is_rejected(flag, expected):
    with pytest.raises(SpecError) as info:
        composer.load(MLP, overrides=[flag])
    (d,) = info.value.errors
    assert d.code == "E105" and d.loc.file == f"--set {flag}" and (d.loc.line, d.loc.col) == (1, flag.index("=") + 2)
    if expected:
        assert d.expected == expected


def test_a_detection_threshold_outside_its_range_is_rejected():
    with pytest.raises(SpecError) as info:
        composer.load(DETECTION, overrides={"roi.score_thresh": 1.5})
    (d,) = info.value.errors
    assert (d.code, d.expected, d.found) == ("E105", "a number <= 1.0", "1.5 (float)")
    assert composer.load(DETECTION, overrides=["roi.score_thresh=0.3"]).resolved.nodes["roi"].block.score_thresh == 0.3


@pytest.mark.parametrize("flag,pinned", [
    ("head", "--set head:1:1: error[E405] `--set head` has no value\n"
             "  expected: `--set BLOCK.PARAM=VALUE (a block inside a sub-pipeline as SUB/BLOCK.PARAM=VALUE)`\n"
             "  found:    head\n  hint: write `--set head=VALUE`"),
    ("head=3", "--set head=3:1:1: error[E405] `head` names no param\n"
               "  expected: `BLOCK.PARAM=VALUE (a block inside a sub-pipeline as SUB/BLOCK.PARAM=VALUE)`\n"
               "  found:    head\n  hint: write `head.PARAM=VALUE`"),
    (".out_features=3", "--set .out_features=3:1:1: error[E405] `` is not a block name\n"
                        "  expected: a block name, or a path `sub/block`\n  found:    nothing"),
    ("head.=3", "--set head.=3:1:6: error[E405] `` is not a param name\n"
                "  expected: letters, digits and _, not starting with a digit\n  found:    nothing"),
    ("head.out-features=3", "--set head.out-features=3:1:6: error[E405] `out-features` is not a param name\n"
                            "  expected: letters, digits and _, not starting with a digit\n  found:    out-features"),
    ("head.in=conv1", "--set head.in=conv1:1:6: error[E405] `head.in`: `in` cannot be set from outside the spec\n"
                      "  found:    in\n  hint: an override changes params, `repeat` and `frozen`; edit the spec to "
                      "change what a block is or what feeds it"),
    ("head.block=conv2d", None), ("head.out_features=[1, 2", "--set head.out_features=[1, 2:1:24: error[E001] YAML "
                                                             "syntax error: did not find expected ',' or ']'"),
    ("head.out_features=!!python/object:os.system x", "--set head.out_features=!!python/object:os.system x:1:19: "
                                                      "error[E005] YAML tag `!!python/object:os.system` is not "
                                                      "allowed\n  hint: specs are plain data; remove the tag"),
    ("conv1/x.bias=true", "--set conv1/x.bias=true:1:1: error[E405] `conv1/x.bias`: `conv1` is a block, not a "
                          "sub-pipeline\n  found:    block: conv2d"),
])
def test_malformed_flags(flag, pinned):
    with pytest.raises(SpecError) as info:
        composer.load(CNN, overrides=[flag])
    (d,) = info.value.diagnostics
    assert d.loc.file == f"--set {flag}" and d.loc.line == 1
    if pinned is not None:
        assert d.format() == pinned
    else:
        assert d.code == "E405"


def test_sub_pipeline_blocks_and_repeat_copies():
    text = errors_of(RESIDUAL, ["stage.eps=0.1", "stage/1/conv1.bias=true", "stage/conv1.block=relu"])
    assert text == textwrap.dedent("""\
        --set stage.eps=0.1:1:7: error[E405] `stage.eps`: `stage` is a sub-pipeline; set a param of one of its blocks
          expected: `stage/BLOCK.eps`, or one of: repeat, frozen, description
          found:    eps
        --set stage/1/conv1.bias=true:1:7: error[E405] `stage/1/conv1.bias`: the copies of a repeated sub-pipeline share their params
          found:    1
          hint: set `stage/conv1.bias` for every copy
        --set stage/conv1.block=relu:1:13: error[E405] `stage/conv1.block`: `block` cannot be set from outside the spec
          found:    block
          hint: an override changes params, `repeat` and `frozen`; edit the spec to change what a block is or what feeds it""")
    (d,) = [d for d in composer.analyze_file(RESIDUAL, overrides=["stage.repeat=0"]).errors]
    assert (d.code, d.path, d.loc.file, d.loc.col) == ("E105", "blocks.stage.repeat", "--set stage.repeat=0", 14)


def test_the_same_key_twice_and_bad_python_keys():
    text = errors_of(CNN, ["head.out_features=3", "head.out_features=4"])
    assert text == ("--set head.out_features=4:1:1: error[E405] `head.out_features` is set twice\n"
                    "  note: first set at --set head.out_features=3:1:1\n"
                    "  hint: give each override once")
    with pytest.raises(SpecError) as info:
        composer.load(CNN, overrides={3: 1, "head": 2})
    assert info.value.codes() == ["E405", "E405"]


def test_yaml_11_hints_apply_to_flags():
    with pytest.raises(SpecError) as info:
        composer.load(MLP, overrides=["norm1.eps=1e-3", "hidden1.bias=no"])
    hints = sorted(d.hint for d in info.value.errors)
    assert hints == ["YAML 1.1 reads `1e-3` as text, not a number; write 1.0e-3"]  # `no` is false: a valid bias
    assert composer.load(MLP, overrides=["norm1.eps=1.0e-3"]).resolved.nodes["norm1"].block.eps == 0.001


def test_flag_errors_come_with_an_unreadable_spec(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("pipeline: [\n")
    with pytest.raises(SpecError) as info:
        composer.load(bad, overrides=["head"])
    assert info.value.codes() == ["E405", "E001"]


NASTY = ["", "=", ".", "a.=1", ".b=1", "a..b=1", "a/b/.c=1", "a//b.c=1", "/a.b=1", "head.out_features=&a [*a]",
         "head.out_features=*x", "head.out_features=---", "head.out_features=a: b: c", "head.out_features=\x00",
         "head.out_features=" + "[" * 100 + "]" * 100, "héad.x=1", "head.x=" + "9" * 5000, "head.x=" + "y" * 70000,
         "conv1.kernel={a: 1}", "conv1.kernel.x=1", "gap/x.y=1", "head.out_features=\n- 1\n- 2", "a.b=1=2"]


@pytest.mark.parametrize("flag", NASTY)
def test_nasty_flags_give_located_errors_only(flag):
    graph = None
    try:
        graph = composer.analyze_file(CNN, overrides=[flag])
    except SpecError as exc:  # only when the flag itself cannot be read
        diags = exc.diagnostics
    else:
        diags = graph.errors
    assert diags and all(d.loc is not None and d.loc.file == f"--set {flag}" for d in diags)

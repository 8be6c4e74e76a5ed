"""Golden tests on the DOT source: node and edge sets, labels with shapes, folding of repeats,
collapsed sub-pipelines, red highlighting of errors, escaping."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET

import pytest

import composer
from composer.render import render
from tests.conftest import ROOT
from composer.render.dot import clip, wrap
from tests.render.conftest import SPECS, draw, needs_dot, parse_dot, visible

CNN = ROOT / "pipelines" / "cnn_classifier.yaml"
NESTED = SPECS / "nested.yaml"
INVALID = SPECS / "invalid.yaml"


def test_cnn_classifier_nodes_edges_and_labels():
    d = draw(CNN)
    assert d.names() == ["image", "conv1", "act1", "pool1", "conv2", "act2", "gap", "head", "probs",
                         "logits", "probs"]
    assert {(s, t, lbl) for s, t, lbl, _ in d.edges} == {
        ("image", "conv1", "image [B, 3, H, W]"),
        ("conv1", "act1", "feature_map [B, 32, H, W]"),
        ("act1", "pool1", "feature_map [B, 32, H, W]"),
        ("pool1", "conv2", "feature_map [B, 32, H/2, W/2]"),
        ("conv2", "act2", "feature_map [B, 64, H/2, W/2]"),
        ("act2", "gap", "feature_map [B, 64, H/2, W/2]"),
        ("gap", "head", "vector [B, 64]"),
        ("head", "probs", "vector [B, 10]"),
        ("head", "logits", "vector [B, 10]"),
        ("probs", "probs", "probs [B, 10]"),
    }
    conv1 = d.node("conv1")
    assert conv1.label == "conv1\nconv2d\nout_channels=32\npadding=1\nparams 896 · MACs 3.54M"
    assert d.node("head").label == "head\ndense\nout_features=10\nparams 650 · MACs 640"
    assert d.node("act1").label == "act1\nrelu"
    # inputs and outputs are drawn distinctly from blocks
    assert d.node("image").attr("shape") == "invhouse" and d.node("image").label == "image\ninput: image [B, 3, H, W]"
    assert d.node("logits").attr("shape") == "house" and d.node("logits").label == "logits\noutput: vector [B, 10]"
    assert conv1.attr("shape") == "box" and "rounded" in conv1.attr("style")
    # colour by family, with a legend and the sizes the MACs were counted at
    assert conv1.attr("fillcolor") == "#dbe9f6" and "fam-core" in conv1.attr("class")
    assert "MACs at B=1, H=64, W=64" in d.source and ">core</font></td>" in d.source


def test_dtype_shown_when_not_float32(write_spec):
    path = write_spec("""
pipeline: ids
inputs:
  ids: {kind: tokens, shape: [B, T], dtype: int64}
  x: {kind: vector, shape: [B, 4]}
blocks:
  a: {block: identity, in: ids}
  h: {block: dense, in: x, out_features: 2}
outputs:
  a: a
  h: h
""")
    d = draw(path)
    assert ("ids", "a", "tokens [B, T] int64") in {(s, t, lbl) for s, t, lbl, _ in d.edges}
    assert ("x", "h", "vector [B, 4]") in {(s, t, lbl) for s, t, lbl, _ in d.edges}


def test_port_names_on_edges_into_sub_pipelines_only_where_they_tell(write_spec):
    # a block with one input port: no port names, just the type
    path = write_spec("""
pipeline: ports
inputs:
  a: {kind: feature_map, shape: [B, 4, H, W]}
  b: {kind: feature_map, shape: [B, 4, H, W]}
blocks:
  cat: {block: concat, in: [a, b]}
outputs:
  y: cat
""")
    d = draw(path)
    assert d.edge("a", "cat")[2] == "feature_map [B, 4, H, W]"
    assert d.edge("cat", "y")[2] == "feature_map [B, 8, H, W]"
    assert "a → cat.xs: feature_map [B, 4, H, W]" in d.edge("a", "cat")[3]  # the tooltip names both ports


def test_repeats_fold_and_clusters_nest():
    d = draw(NESTED)
    names = d.names()
    # `convs` (repeat: 4) is one node marked ×4 with the params of all four copies
    assert names.count("convs ×4") == 1 and not any(n.startswith("convs/") for n in names)
    convs = d.node("convs ×4")
    assert convs.attr("peripheries") == "2"
    assert "params 2.34k" in convs.label  # 4 × 584
    # the repeated sub-pipeline `stages` (repeat: 3) is one cluster with one copy of its blocks
    assert d.clusters == ["body\nsub-pipeline tower", "first\nsub-pipeline stage", "stages ×3\nsub-pipeline stage"]
    assert names.count("conv") == 2 and names.count("act") == 2 and names.count("x") == 3
    # no edge from a folded copy back into its group
    assert all(not (s == "act" and t == "x" and "×" in lbl) for s, t, lbl, _ in d.edges)
    assert len(d.edges) == 14
    assert {(s, t) for s, t, _, _ in d.edges} >= {("stem", "x"), ("stem", "convs ×4"), ("convs ×4", "merge"),
                                                  ("act", "merge"), ("merge", "gap"), ("head", "logits")}
    assert all(lbl == "feature_map [B, 8, H, W]" for s, t, lbl, _ in d.edges if t == "merge")


def test_depth_collapses_sub_pipelines():
    d0 = draw(NESTED, depth=0)
    assert d0.clusters == []
    body = d0.node("body")
    assert body.attr("shape") == "box3d"
    assert body.label.startswith("body\nsub-pipeline tower · 4 blocks")
    assert "params 2.34k" in body.label  # first (584) + stages ×3 (1,752)
    assert {(s, t, lbl) for s, t, lbl, _ in d0.edges} >= {("stem", "body", "→ x\nfeature_map [B, 8, H, W]"),
                                                        ("body", "merge", "feature_map [B, 8, H, W]")}
    assert "x" not in d0.names() and "conv" not in d0.names()

    d1 = draw(NESTED, depth=1)
    assert d1.clusters == ["body\nsub-pipeline tower"]
    assert d1.node("first").label.startswith("first\nsub-pipeline stage · 2 blocks")
    assert d1.node("stages ×3").label.startswith("stages ×3\nsub-pipeline stage · 2 blocks")
    assert ("first", "stages ×3") in {(s, t) for s, t, _, _ in d1.edges}


def test_invalid_spec_draws_errors_in_red():
    d = draw(INVALID)
    broken = d.node("broken")
    assert broken.attr("color") == "#d32f2f" and "failed" in broken.attr("class")
    assert ("E105: invalid value for `out_channels` (expected a number >= 1, found -1 (int))"
            in broken.label.replace("\n", " "))
    # the edge that does not type-check is red, with the error text
    src, dst, label, attrs = d.edge("conv", "head")
    assert 'color="#d32f2f"' in attrs and "failed" in attrs
    assert "E301: `conv` (feature_map) cannot feed port `x` of `head` (dense)" in label.replace("\n", " ")
    assert d.node("head").attr("color") == "#d32f2f"
    # a block after the error is not red: it is drawn dashed, as not checked
    after = d.node("after")
    assert after.attr("color") != "#d32f2f" and "dashed" in after.attr("style")
    assert "not checked (upstream error)" in after.label
    assert "2 errors: drawn in red" in d.source
    # edges of well-typed blocks stay normal
    assert 'color="#d32f2f"' not in d.edge("image", "conv")[3]


def test_unknown_block_reference_and_cycle_are_red(write_spec):
    path = write_spec("""
pipeline: bad
inputs:
  x: {kind: vector, shape: [B, 4]}
blocks:
  a: {block: dense, in: x, out_features: 4}
  b: {block: densse, in: a, out_features: 4}
  c: {block: dense, in: nope, out_features: 4}
  d: {block: dense, in: e, out_features: 4}
  e: {block: dense, in: d, out_features: 4}
outputs:
  y: a
""")
    d = draw(path)
    assert "E102: unknown block type `densse`" in d.node("b").label and d.node("b").attr("color") == "#d32f2f"
    assert "E201: reference to unknown block `nope`" in d.node("c").label
    assert d.node("d").attr("color") == "#d32f2f" and d.node("e").attr("color") == "#d32f2f"
    for s, t in (("d", "e"), ("e", "d")):
        assert 'color="#d32f2f"' in d.edge(s, t)[3] and "cycle" in d.edge(s, t)[2]


GRAPH_ERRORS = """
pipeline: outs
inputs:
  x: {kind: vector, shape: [B, 4]}
blocks:
  a: {block: dense, in: x, out_features: 4}
outputs:
  y: a
bogus: 1
"""


def test_graph_level_errors_are_listed(write_spec):
    path = write_spec(GRAPH_ERRORS.replace("  y: a\n", "  y: a\n  z: missing\n"))
    d = draw(path)
    assert "unknown top-level key `bogus`" in d.source and "refers to unknown block `missing`" in d.source


def _graph_error_lines(path) -> list[str]:
    label = next(line for line in draw(path).source.splitlines() if "drawn in red" in line)
    row = next(r for r in label.split("<tr>") if "E101" in r)
    return visible(row.replace('<br align="left"/>', "\n")).split("\n")


@pytest.mark.parametrize("depth", [1, 7, 13, 19, 31])
def test_graph_level_error_wraps_the_same_wherever_the_spec_lives(tmp_path, depth):
    """The location is a line of its own; the message below it wraps the same at any path length."""
    folder = tmp_path.joinpath(*["d" * k for k in range(1, depth + 1)])
    folder.mkdir(parents=True)
    (folder / "spec.yaml").write_text(GRAPH_ERRORS)
    lines = _graph_error_lines(folder / "spec.yaml")
    at = next(i for i, x in enumerate(lines) if x.startswith("E101"))
    assert "".join(lines[:at]) == f"{folder / 'spec.yaml'}:9:1:"
    assert lines[at].startswith("E101: unknown top-level key `bogus` (expected one of: pipeline, description,")
    (tmp_path / "spec.yaml").write_text(GRAPH_ERRORS)
    short = _graph_error_lines(tmp_path / "spec.yaml")
    assert lines[at:] == short[next(i for i, x in enumerate(short) if x.startswith("E101")):]  # the same message lines
    assert len(lines[at:]) == 3


@pytest.mark.parametrize("prefix", range(0, 24))
def test_wrap_never_splits_a_quoted_name(prefix):
    text = "x " * prefix + "unknown top-level key `bogus` and `in: <block>` with `a.very.long.name.that.runs.past.width`"
    lines = wrap(text, 20)
    joined = "\n".join(lines)
    for name in ("`bogus`", "`in: <block>`", "`a.very.long.name.that.runs.past.width`"):
        assert name in joined
    assert " ".join(lines).split() == text.split()
    assert all(len(x) <= 20 or "`" in x for x in lines)


def test_wrap_splits_long_paths_after_a_slash_and_clip_keeps_names_whole():
    path = "/tmp/" + "/".join(["folder"] * 12) + "/spec.yaml:9:1:"
    lines = wrap(path, 30)
    assert "".join(lines) == path and all(len(x) <= 30 for x in lines)
    assert all(x.endswith("/") for x in lines[:-1])
    assert wrap("a" * 25, 10) == ["a" * 10, "a" * 10, "a" * 5]
    shown = clip(wrap("one two three four five six `seven eight` nine ten", 14), 14, 2)
    assert shown == ["one two three", "four five …"]
    assert clip(["ab", "`a long quoted`", "c"], 15, 2) == ["ab", "…"]


NASTY = 'say "hi" <b>bold</b> & \\back\\slash\n2nd line ]]> {x|y} \t'


def nasty_spec(write_spec):
    """A valid spec whose pipeline name and descriptions hold every character that needs escaping."""
    q = json.dumps
    return write_spec(f"""
pipeline: {q('evil "name" <&>')}
description: {q(NASTY + "top")}
inputs:
  x: {{kind: vector, shape: [B, 4], description: {q(NASTY + "input")}}}
blocks:
  a: {{block: dense, in: x, out_features: 4, description: {q(NASTY + "block")}}}
outputs:
  y: a
""")


@pytest.mark.parametrize("fmt", ["dot", "mermaid", "html"])
def test_text_is_escaped(write_spec, fmt):
    path = nasty_spec(write_spec)
    graph = composer.analyze_file(path)
    assert not graph.errors, graph.errors
    out = render(graph, fmt).decode("utf-8")
    if fmt != "dot":  # (DOT keeps `<` raw inside quoted tooltips; Graphviz escapes it in the SVG)
        assert "<b>bold</b>" not in out and '"hi"' not in out and "]]>" not in out
    if fmt == "dot":
        d = parse_dot(out)
        assert 'say "hi" <b>bold</b> & \\back\\slash\n2nd line ]]> {x|y}' in d.node("a").label
        assert 'evil "name" <&>' in d.source.replace("&quot;", '"').replace("&lt;", "<").replace("&gt;", ">").replace(
            "&amp;", "&")
    if fmt == "mermaid":
        assert "say #34;hi#34; #60;b#62;bold#60;/b#62; #38; #92;back#92;slash<br/>2nd line ]]#62;" in out
        assert out.startswith("%% evil #34;name#34; #60;#38;#62;: drawn by composer")
    if fmt == "html":
        assert "say &quot;hi&quot; &lt;b&gt;bold&lt;/b&gt; &amp; \\back\\slash" in out  # the SVG text
        assert "<title>evil &quot;name&quot; &lt;&amp;&gt; · composer</title>" in out


@needs_dot
def test_escaped_text_survives_graphviz(write_spec):
    path = nasty_spec(write_spec)
    svg = render(composer.analyze_file(path), "svg").decode("utf-8")
    root = ET.fromstring(svg)  # well-formed XML
    texts = "\n".join(t.text or "" for t in root.iter("{http://www.w3.org/2000/svg}text"))
    assert 'say "hi" <b>bold</b> & \\back\\slash' in texts
    assert "2nd line ]]> {x|y}" in texts
    assert 'evil "name" <&>' in texts


@needs_dot
@pytest.mark.parametrize("fmt,magic", [("svg", b"<?xml"), ("png", b"\x89PNG"), ("pdf", b"%PDF")])
def test_graphviz_formats(fmt, magic):
    data = render(composer.analyze_file(NESTED), fmt, rankdir="LR")
    assert data.startswith(magic)


def test_rankdir_and_bad_arguments():
    g = composer.analyze_file(CNN)
    assert 'rankdir="LR"' in render(g, "dot", rankdir="LR").decode()
    with pytest.raises(composer.ComposerError, match="unknown format"):
        render(g, "jpeg")
    with pytest.raises(composer.ComposerError, match="rankdir"):
        render(g, "dot", rankdir="XY")


def test_without_macs():
    d = parse_dot(render(composer.analyze_file(CNN), "dot", macs=False).decode())
    assert d.node("conv1").label.endswith("params 896") and "MACs at" not in d.source


def test_errors_inside_sub_pipelines_and_when_collapsed(write_spec, tmp_path):
    (tmp_path / "stage.yaml").write_text((SPECS / "stage.yaml").read_text())
    path = write_spec("""
pipeline: outer
dims:
  H: {multiple_of: 2}
  W: {multiple_of: 2}
inputs:
  image: {kind: image, shape: [B, 3, H, W]}
blocks:
  stem: {block: conv2d, in: image, out_channels: 4, padding: 1}
  body: {spec: stage.yaml, in: stem}
  gap: {block: global_avg_pool, in: body}
outputs:
  y: gap
""")
    d = draw(path)
    src, dst, label, attrs = d.edge("stem", "x")
    assert 'color="#d32f2f"' in attrs and "shape mismatch at a sub-pipeline input" in label.replace("\n", " ")
    assert "expected [B, 8, H, W]" in label.replace("\n", " ")
    collapsed = draw(path, depth=0)
    body = collapsed.node("body")
    assert body.attr("color") == "#d32f2f"
    assert 'color="#d32f2f"' in collapsed.edge("stem", "body")[3]


def test_warnings_are_amber(write_spec):
    path = write_spec("""
pipeline: warn
inputs:
  x: {kind: vector, shape: [B, 4]}
blocks:
  a: {block: dense, in: x, out_features: 4}
  unused: {block: relu, in: x}
outputs:
  y: a
""")
    d = draw(path)
    unused = d.node("unused")
    assert unused.attr("color") == "#f9a825" and "warned" in unused.attr("class")
    assert "warning W205: block `unused` does not reach any output" in unused.label.replace("\n", " ")
    assert "error" not in d.source.split("node [")[0].lower().replace("errors", "")

"""Registry-driven: every pipelines/*.yaml renders to SVG, and every bad spec of the golden error
set that parses as YAML still renders, with its errors visible."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest

import composer
from composer import SpecError
from composer.render import render, view
from tests.conftest import PIPELINES, ROOT
from tests.render.conftest import HAS_DOT, needs_dot, parse_dot, visible

GOLDEN_ERRORS = sorted((ROOT / "tests" / "golden" / "errors").glob("*.yaml"))


def _readable(path) -> bool:
    try:
        composer.analyze_file(path)
        return True
    except SpecError:  # not readable as YAML (syntax, tags, aliases, ...): nothing to draw
        return False


# golden cases that load as YAML and have errors in the graph; the others cannot be drawn
DRAWABLE = [p for p in GOLDEN_ERRORS if _readable(p) and composer.analyze_file(p).errors]
SVG = "{http://www.w3.org/2000/svg}"


@needs_dot
@pytest.mark.parametrize("path", PIPELINES, ids=lambda p: p.stem)
def test_every_pipeline_renders_to_svg(path):
    graph = composer.analyze_file(path)
    assert not graph.errors
    svg = render(graph, "svg")
    root = ET.fromstring(svg)
    texts = {t.text for t in root.iter(SVG + "text")}
    v = view(graph, macs=False)
    for n in v.nodes.values():  # every drawn node's name is in the picture
        assert any(t and t.startswith(n.name) for t in texts), n.name
    assert len(v.nodes) < 80, "repeats fold and the picture stays readable"
    # every block's MACs were counted (meta device, example sizes)
    full = view(graph)
    assert full.macs_at and all(n.macs is not None for n in full.nodes.values() if n.role in ("block", "group"))


@pytest.mark.parametrize("path", PIPELINES, ids=lambda p: p.stem)
def test_every_pipeline_renders_to_mermaid(path):
    src = render(composer.analyze_file(path), "mermaid", macs=False).decode()
    assert src.splitlines()[1] == "flowchart TB"


def test_golden_cases_split_into_drawable_and_unreadable():
    unreadable = {p.stem for p in GOLDEN_ERRORS if not _readable(p)}
    assert unreadable == {"alias_bomb", "custom_tag", "duplicate_key", "empty_file", "not_a_mapping", "python_tag",
                          "self_alias", "too_deep", "yaml_syntax"}
    assert len(DRAWABLE) == len(GOLDEN_ERRORS) - len(unreadable) - 1  # and unused_block, only a warning


@pytest.mark.parametrize("path", DRAWABLE, ids=lambda p: p.stem)
def test_every_bad_spec_still_renders(path):
    graph = composer.analyze_file(path)
    d = parse_dot(render(graph, "dot").decode())
    red_nodes = [n for n in d.nodes.values() if n.attr("color") == "#d32f2f"]
    red_edges = [e for e in d.edges if 'color="#d32f2f"' in e[3]]
    first = graph.errors[0]
    shown = " ".join(visible(d.source).split())
    assert red_nodes or red_edges or " ".join(first.message.split()) in shown
    assert f"{len(graph.errors)} error" in d.source
    if HAS_DOT:
        ET.fromstring(render(graph, "svg", macs=False))

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


@pytest.mark.parametrize("path", GOLDEN_ERRORS, ids=lambda p: p.stem)
def test_every_bad_spec_still_renders(path):
    try:
        graph = composer.analyze_file(path)
    except SpecError:
        pytest.skip("not readable as YAML: nothing to draw")
    if not graph.errors:
        pytest.skip("no error in this golden case")
    d = parse_dot(render(graph, "dot").decode())
    red_nodes = [n for n in d.nodes.values() if n.attr("color") == "#d32f2f"]
    red_edges = [e for e in d.edges if 'color="#d32f2f"' in e[3]]
    first = graph.errors[0]
    shown = " ".join(visible(d.source).split())
    assert red_nodes or red_edges or " ".join(first.message.split()) in shown
    assert f"{len(graph.errors)} error" in d.source
    if HAS_DOT:
        ET.fromstring(render(graph, "svg", macs=False))

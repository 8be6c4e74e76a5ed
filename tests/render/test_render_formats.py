"""Mermaid and HTML output, and what still works without Graphviz."""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET

import pytest

import composer
from composer.render import GraphvizNotFound, render
from composer.render import dot as dot_mod
from tests.conftest import ROOT
from tests.render.conftest import SPECS, needs_dot

CNN = ROOT / "pipelines" / "cnn_classifier.yaml"
NESTED = SPECS / "nested.yaml"
INVALID = SPECS / "invalid.yaml"


@pytest.fixture
def no_dot(monkeypatch):
    """Pretend Graphviz is not installed."""
    monkeypatch.setattr(dot_mod.shutil, "which", lambda name, *a, **k: None if name == "dot" else "/usr/bin/" + name)


# ---- mermaid -------------------------------------------------------------------------------------


def _label_lines(src: str) -> list[str]:
    return [ln for ln in src.splitlines() if re.match(r"\s*n\d+\W", ln) and "-->" not in ln and "-.->" not in ln]


def test_mermaid_structure():
    src = render(composer.analyze_file(NESTED), "mermaid", rankdir="LR").decode()
    lines = src.splitlines()
    assert lines[1] == "flowchart LR"
    # every node once, with its label in one quoted string (no stray quote inside)
    nodes = _label_lines(src)
    assert len(nodes) == 14
    for ln in nodes:
        assert re.fullmatch(r'\s*n\d+[\[\(/\\"]+[^"]*"[\]\)/\\]+', ln), ln
    assert sum(ln.strip().startswith("subgraph ") for ln in lines) == 3
    assert sum(ln.strip() == "end" for ln in lines) == 3
    assert 'subgraph c2["stages ×3<br/><i>sub-pipeline stage</i>"]' in src
    assert '[["<b>convs ×4</b><br/>conv2d<br/>out_channels=8, padding=1<br/>params 2.34k · MACs 147.46k"]]' in src
    assert src.count("-->") == 14
    assert '-->|"feature_map [B, 8, H, W]"|' in src
    assert "classDef fam_core fill:#dbe9f6" in src


def test_mermaid_red_for_errors():
    src = render(composer.analyze_file(INVALID), "mermaid").decode()
    assert re.search(r"^  class (n\d+,)*n\d+ failed$", src, re.M)
    failed_ids = re.search(r"^  class ([\w,]+) failed$", src, re.M).group(1).split(",")
    labels = {ln.strip().split("(", 1)[0]: ln for ln in _label_lines(src)}
    assert sorted("<b>" + labels[i].split("<b>")[1].split("</b>")[0] for i in failed_ids) == ["<b>broken", "<b>head"]
    assert "linkStyle 2 stroke:#d32f2f" in src
    assert "E301: #96;conv#96; (feature_map) cannot feed" in src


# ---- html ----------------------------------------------------------------------------------------


def _page_data(page: str) -> dict:
    m = re.search(r'<script type="application/json" id="composer-data">(.*?)</script>', page, re.S)
    return json.loads(m.group(1))


def _check_self_contained(page: str) -> None:
    assert "Content-Security-Policy" in page and "default-src 'none'" in page
    assert not re.search(r"<(script|img|link|iframe)[^>]+(src|href)=", page)
    for url in re.findall(r"https?://[^\s\"'<>)]+", page):
        assert url.startswith(("http://www.w3.org/", "https://www.w3.org/")), url  # XML namespaces only
    assert "@import" not in page and "url(http" not in page


@needs_dot
def test_html_page_with_graphviz():
    page = render(composer.analyze_file(NESTED), "html").decode()
    _check_self_contained(page)
    assert 'data-layout="graphviz"' in page
    data = _page_data(page)
    convs = next(n for n in data["nodes"].values() if n["name"] == "convs")
    assert convs["count"] == 4 and convs["params"]["out_channels"] == 8 and convs["set"] == ["out_channels", "padding"]
    assert convs["inputs"] == {"x": "feature_map [B, 8, H, W]"} and convs["n_params"] == 2336
    assert convs["macs"] == 147456
    # every drawn node of the SVG has its data, by id
    ids = set(re.findall(r'<g id="(n\d+)" class="node', page))
    assert ids == set(data["nodes"])


def test_html_page_without_graphviz(no_dot):
    graph = composer.analyze_file(INVALID)
    page = render(graph, "html").decode()
    _check_self_contained(page)
    assert 'data-layout="simple"' in page and "apt-get install graphviz" in page
    svg = re.search(r"<svg.*?</svg>", page, re.S).group(0)
    ET.fromstring(svg)
    data = _page_data(page)
    ids = set(re.findall(r'<g id="(n\d+)" class="node', svg))
    assert ids == set(data["nodes"])
    broken = next(k for k, n in data["nodes"].items() if n["name"] == "broken")
    assert re.search(rf'<g id="{broken}" class="node cnode role-block failed">', svg)
    assert "2 errors" in page


def test_script_data_cannot_close_the_script(write_spec):
    path = write_spec("""
pipeline: inj
inputs:
  x: {kind: vector, shape: [B, 4]}
blocks:
  a: {block: dense, in: x, out_features: 4, description: "</script><script>alert(1)</script> <!-- \\u2028"}
outputs:
  y: a
""")
    page = render(composer.analyze_file(path), "html").decode()
    assert page.count("<script") == 2 and page.count("</script>") == 2
    assert "alert(1)" in _page_data(page)["nodes"]["n1"]["description"]


# ---- without Graphviz ----------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["svg", "png", "pdf"])
def test_missing_dot_says_how_to_install(no_dot, fmt):
    with pytest.raises(GraphvizNotFound) as exc:
        render(composer.analyze_file(CNN), fmt)
    msg = str(exc.value)
    assert "apt-get install graphviz" in msg and "brew install graphviz" in msg and "--format dot, mermaid or html" in msg
    assert exc.value.exit_code == 1


@pytest.mark.parametrize("fmt", ["dot", "mermaid", "html"])
def test_text_formats_work_without_dot(no_dot, fmt):
    assert render(composer.analyze_file(NESTED), fmt)


@pytest.mark.parametrize("rankdir", ["TB", "LR"])
def test_fallback_layout_places_every_node(no_dot, rankdir):
    from composer.render import view
    from composer.render.layout import to_svg

    v = view(composer.analyze_file(NESTED), macs=False)
    svg = to_svg(v, rankdir)
    root = ET.fromstring(svg)
    rects = {}
    for g in root.iter("{http://www.w3.org/2000/svg}g"):
        if "node" in (g.get("class") or "").split():
            r = g.find("{http://www.w3.org/2000/svg}rect")
            rects[g.get("id")] = (float(r.get("x")), float(r.get("y")), float(r.get("width")), float(r.get("height")))
    assert len(rects) == len(v.nodes)
    boxes = list(rects.values())
    for i, a in enumerate(boxes):  # no two boxes overlap
        for b in boxes[i + 1:]:
            assert a[0] + a[2] <= b[0] or b[0] + b[2] <= a[0] or a[1] + a[3] <= b[1] or b[1] + b[3] <= a[1]

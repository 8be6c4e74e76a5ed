"""Helpers for the diagram tests: read back what a DOT source draws."""

from __future__ import annotations

import html
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import pytest

import composer
from composer.render import render

SPECS = Path(__file__).resolve().parent / "specs"
HAS_DOT = shutil.which("dot") is not None
needs_dot = pytest.mark.skipif(not HAS_DOT, reason="Graphviz `dot` is not installed (make install does it)")

_NODE = re.compile(r"^\s*(n\d+) \[(.*)\];$")
_EDGE = re.compile(r"^\s*(n\d+) -> (n\d+) \[(.*)\];$")


def visible(label: str) -> str:
    """The text an HTML-like label shows: tags dropped, <br/> as newlines, entities decoded."""
    t = re.sub(r"<br[^>]*/>|</tr>", "\n", label)
    t = re.sub(r"<[^>]+>", "", t)
    return html.unescape(t).strip("\n")


def _attr(body: str, name: str) -> str | None:
    m = re.search(rf'(?:^|, ){name}="((?:[^"\\]|\\.)*)"', body)
    return m.group(1) if m else None


def _label(body: str) -> str:
    m = re.search(r"label=<(.*?)>(?:, [a-z]+=|$)", body)
    return visible(m.group(1)) if m else ""


@dataclass
class DotNode:
    id: str
    label: str
    attrs: str

    @property
    def name(self) -> str:
        return self.label.split("\n", 1)[0]

    def attr(self, name: str) -> str | None:
        return _attr(self.attrs, name)


@dataclass
class Drawing:
    source: str
    nodes: dict[str, DotNode] = field(default_factory=dict)        # id -> node
    edges: list[tuple[str, str, str, str]] = field(default_factory=list)  # (src name, dst name, label, attrs)
    clusters: list[str] = field(default_factory=list)               # cluster label texts

    def node(self, name: str) -> DotNode:
        found = [n for n in self.nodes.values() if n.name == name]
        assert len(found) == 1, (name, [n.name for n in self.nodes.values()])
        return found[0]

    def names(self) -> list[str]:
        return [n.name for n in self.nodes.values()]

    def edge(self, src: str, dst: str) -> tuple[str, str, str, str]:
        found = [e for e in self.edges if e[0] == src and e[1] == dst]
        assert len(found) == 1, (src, dst, self.edges)
        return found[0]


def parse_dot(source: str) -> Drawing:
    d = Drawing(source)
    for line in source.splitlines():
        m = _NODE.match(line)
        if m:
            d.nodes[m.group(1)] = DotNode(m.group(1), _label(m.group(2)), m.group(2))
            continue
        m = _EDGE.match(line)
        if m:
            src, dst = d.nodes[m.group(1)].name, d.nodes[m.group(2)].name
            d.edges.append((src, dst, _label(m.group(3)), m.group(3)))
            continue
        if line.strip().startswith("id=") and "label=<" in line:
            m2 = re.search(r"label=<(.*?)>; style=", line)
            d.clusters.append(visible(m2.group(1)) if m2 else "")
    return d


def draw(path: Path | str, **kw) -> Drawing:
    graph = composer.analyze_file(path)
    return parse_dot(render(graph, "dot", **kw).decode("utf-8"))


@pytest.fixture
def spec_dir() -> Path:
    return SPECS

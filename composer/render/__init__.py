"""Diagrams of a pipeline, drawn from its spec and inferred types (never by running the model).

    from composer import analyze_file
    from composer.render import render, write

    graph = analyze_file("pipelines/cnn_classifier.yaml")   # an invalid spec still draws
    svg = render(graph, "svg", rankdir="LR", depth=1)       # bytes
    write(graph, "build/cnn_classifier/cnn_classifier.svg")  # atomically; format from the suffix

Formats: svg, png, pdf (need Graphviz's `dot`), dot, mermaid, html (no `dot` needed: without
it the page carries composer's own simple layered layout instead of the Graphviz drawing).
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Union

from .. import _io
from ..errors import ComposerError
from ..graph import Graph
from .dot import INSTALL_HINT, GraphvizFailed, GraphvizNotFound, dot_path, run_dot, to_dot
from .view import View, build_view

FORMATS = ("svg", "png", "pdf", "dot", "mermaid", "html")
EXTENSIONS = {"svg": "svg", "png": "png", "pdf": "pdf", "dot": "dot", "mermaid": "mmd", "html": "html"}
_BY_SUFFIX = {".svg": "svg", ".png": "png", ".pdf": "pdf", ".dot": "dot", ".gv": "dot", ".mmd": "mermaid",
              ".mermaid": "mermaid", ".md": "mermaid", ".html": "html", ".htm": "html"}
BINARY = ("png", "pdf")

__all__ = ["render", "write", "view", "format_for", "FORMATS", "EXTENSIONS", "GraphvizNotFound", "GraphvizFailed",
           "INSTALL_HINT", "View", "dot_path"]


def format_for(path: Union[str, Path], default: str = "svg") -> str:
    """The format a file name asks for (`model.png` -> png); `default` for unknown suffixes."""
    return _BY_SUFFIX.get(Path(path).suffix.lower(), default)


def _macs(graph: Graph) -> tuple[Optional[dict[str, int]], dict[str, int]]:
    """Per-block MACs at example sizes (meta device), or None when they cannot be counted."""
    from ..summary import example_env, macs_per_block

    try:
        env = example_env(graph)
    except Exception:
        env = {}
    if graph.errors:
        return None, env
    try:
        return macs_per_block(graph, env), env
    except Exception:  # a block that cannot run on the meta device: draw without MACs
        return None, env


def view(graph: Graph, *, depth: Optional[int] = None, macs: Union[bool, dict[str, int]] = True) -> View:
    """The drawing model shared by every format (see `composer.render.view`)."""
    if macs is True:
        counts, env = _macs(graph)
    elif macs is False or macs is None:
        counts, env = None, {}
    else:
        from ..summary import example_env

        counts, env = dict(macs), example_env(graph)
    return build_view(graph, depth=depth, macs=counts, macs_at=env if counts is not None else {})


def render(graph: Graph, fmt: str = "svg", *, rankdir: str = "TB", depth: Optional[int] = None,
           macs: Union[bool, dict[str, int]] = True) -> bytes:
    """Draw `graph` in `fmt`; returns the file's bytes (text formats are UTF-8).

    `rankdir` is TB (top to bottom) or LR; `depth` collapses sub-pipelines nested deeper than it
    (0: every sub-pipeline is one node); `macs` may be a precomputed `{block: MACs}` or False.
    Raises GraphvizNotFound for svg/png/pdf when `dot` is missing.
    """
    fmt = fmt.lower()
    if fmt not in FORMATS:
        raise ComposerError(f"unknown format `{fmt}`; choose one of: {', '.join(FORMATS)}")
    rankdir = rankdir.upper()
    if rankdir not in ("TB", "LR", "BT", "RL"):
        raise ComposerError(f"unknown rankdir `{rankdir}`; choose TB or LR")
    if depth is not None and depth < 0:
        raise ComposerError("--depth must be 0 or more")
    if fmt in ("svg", "png", "pdf") and dot_path() is None:
        raise GraphvizNotFound()
    v = view(graph, depth=depth, macs=macs)
    if fmt == "mermaid":
        from .mermaid import to_mermaid

        return to_mermaid(v, rankdir).encode("utf-8")
    if fmt == "html":
        from .html import to_html

        return to_html(v, rankdir).encode("utf-8")
    source = to_dot(v, rankdir)
    if fmt == "dot":
        return source.encode("utf-8")
    return run_dot(source, fmt)


def write(graph: Graph, path: Union[str, Path], fmt: Optional[str] = None, **kw) -> Path:
    """Render and write atomically (temp file beside `path`, then os.replace); format from the suffix."""
    fmt = fmt or format_for(path)
    data = render(graph, fmt, **kw)
    return _io.write_bytes(path, data)

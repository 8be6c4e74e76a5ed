"""`composer render SPEC`: draw a pipeline (svg, png, pdf, dot, mermaid, html).

An invalid spec is still drawn, with its errors in red; the command then prints the
diagnostics and exits 2. A missing Graphviz `dot` (svg/png/pdf) is exit 1 with how to install it.
"""

from __future__ import annotations

import re
import sys
from enum import Enum
from pathlib import Path
from typing import Optional

import typer

from .. import _io
from ..graph import Graph
from ..pipeline import analyze_file
from ..render import EXTENSIONS, GraphvizNotFound, format_for, render as render_graph
from ._common import err, handled, out, print_diagnostics, set_option


class Format(str, Enum):
    svg = "svg"
    png = "png"
    pdf = "pdf"
    dot = "dot"
    mermaid = "mermaid"
    html = "html"


class RankDir(str, Enum):
    TB = "TB"
    LR = "LR"


def safe_name(name: str) -> str:
    """A pipeline name usable as a file and folder name."""
    s = re.sub(r"[^A-Za-z0-9_.-]", "_", name).lstrip(".")
    return s or "pipeline"


def default_path(graph: Graph, fmt: str, out_dir: Path = Path("build")) -> Path:
    name = safe_name(graph.resolved.name)
    return out_dir / name / f"{name}.{EXTENSIONS[fmt]}"


def render(
    spec: Path = typer.Argument(..., help="The spec to draw."),
    output: Optional[Path] = typer.Option(None, "-o", "--output",
                                          help="Output file ('-' for stdout); default build/<pipeline>/<pipeline>.<ext>."),
    fmt: Optional[Format] = typer.Option(None, "--format", "-f",
                                         help="svg (default), png, pdf, dot, mermaid or html; default from -o's suffix."),
    rankdir: RankDir = typer.Option(RankDir.TB, "--rankdir", help="TB: top to bottom; LR: left to right."),
    depth: Optional[int] = typer.Option(None, "--depth", min=0,
                                        help="Collapse sub-pipelines nested deeper than this (0: all collapsed)."),
    overrides: list[str] = set_option(),
) -> None:
    """Draw a pipeline from its spec and inferred types; an invalid spec is drawn with its errors in red."""
    with handled():
        graph = analyze_file(spec, overrides=overrides)
        f = fmt.value if fmt is not None else (format_for(output) if output is not None and str(output) != "-" else "svg")
        data = render_graph(graph, f, rankdir=rankdir.value, depth=depth)
        if output is not None and str(output) == "-":
            sys.stdout.buffer.write(data)
            sys.stdout.flush()
            where = "stdout"
        else:
            path = output if output is not None else default_path(graph, f)
            _io.write_bytes(path, data)
            where = str(path)
        print_diagnostics(graph.diagnostics)
        if graph.errors:
            n = len(graph.errors)
            err.print(f"{n} error{'s' if n != 1 else ''}: drawn in red in {where}", style="red bold", markup=False)
            raise typer.Exit(2)
        if where != "stdout":
            out.print(f"wrote {where}", markup=False)


def render_failure(graph: Graph, out_dir: Path = Path("build")) -> Optional[Path]:
    """For `composer validate --render`: draw an invalid spec with its errors in red.

    SVG when Graphviz is installed, else the HTML page (which needs nothing installed).
    Returns the path written, or None when drawing failed (a note is printed either way).
    """
    try:
        try:
            path = default_path(graph, "svg", out_dir)
            _io.write_bytes(path, render_graph(graph, "svg"))
        except GraphvizNotFound:
            path = default_path(graph, "html", out_dir)
            _io.write_bytes(path, render_graph(graph, "html"))
            err.print("note: Graphviz `dot` is not installed, so the drawing is an HTML page "
                      "(apt-get install graphviz for SVG)", markup=False)
    except Exception as exc:  # the diagnostics above are what matters; never a traceback
        err.print(f"note: could not draw the spec: {exc}", markup=False)
        return None
    err.print(f"errors drawn in red in {path}", markup=False)
    return path

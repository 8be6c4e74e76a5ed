"""`composer validate SPEC...`: compiler-grade errors, or `ok` per file."""

from __future__ import annotations

import json
from pathlib import Path
from typing import List, Optional

import typer

from ..errors import SpecError
from ..graph import param_memory_error
from ..pipeline import analyze_file
from ..registry import plugin_errors
from ._common import err, handled, out, print_diagnostics, set_option


def validate(
    specs: List[Path] = typer.Argument(..., help="Spec files to check."),
    max_param_memory: Optional[int] = typer.Option(None, help="Parameter memory limit in bytes (default 16 GiB): a "
                                                              "spec over it validates, with a note that a build "
                                                              "refuses it (E304)."),
    as_json: bool = typer.Option(False, "--json", help="Print diagnostics as JSON."),
    render: bool = typer.Option(False, "--render",
                                help="On failure, draw the spec with its errors in red (build/<pipeline>/<pipeline>.svg)."),
    overrides: list[str] = set_option(),
) -> None:
    """Check specs without building anything: syntax, params, references, types, memory."""
    with handled():
        for problem in plugin_errors():
            err.print(f"warning: {problem}", style="yellow", markup=False)
        _validate(specs, max_param_memory, as_json, render, overrides)


def _validate(specs: List[Path], max_param_memory: Optional[int], as_json: bool, render: bool,
              overrides: List[str]) -> None:
    failed = False
    report = {}
    for spec in specs:
        try:
            graph = analyze_file(spec, max_param_bytes=max_param_memory, overrides=overrides)
            diags = graph.diagnostics
        except SpecError as exc:
            graph, diags = None, exc.diagnostics
        errors = [d for d in diags if d.severity == "error"]
        failed |= bool(errors)
        if as_json:
            report[str(spec)] = [d.to_dict() for d in diags]
        else:
            print_diagnostics(diags)
            if errors:
                err.print(f"{spec}: {len(errors)} error{'s' if len(errors) != 1 else ''}", style="red bold", markup=False)
            else:
                out.print(f"{spec}: ok" + (f" ({len(diags)} warning{'s' if len(diags) != 1 else ''})" if diags else ""),
                          markup=False)
                over = param_memory_error(graph)
                if over is not None:
                    out.print(f"  note: {over.found}, over the limit of {over.expected.removeprefix('at most ')}: "
                              "`composer build` refuses it (E304); `composer build --no-weights` summarises it",
                              markup=False)
        if render and errors and graph is not None:
            from .render import render_failure
            render_failure(graph)
    if as_json:
        out.print(json.dumps(report, indent=2), markup=False)
    if failed:
        raise typer.Exit(2)

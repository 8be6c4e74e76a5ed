"""`composer build SPEC`: validate, compile and write every artifact of a pipeline."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.progress import Progress, SpinnerColumn, TextColumn
from rich.markup import escape
from rich.table import Table

from .. import build as build_lib
from ..pipeline import load
from ..summary import human, human_count, memory_text, shapes_text
from ._common import (cast_option, err, handled, ignore_option, out, print_diagnostics, print_weights, rename_option,
                      set_option, strict_option, weights_option, weights_source)


def build(
    spec: Path = typer.Argument(..., help="The spec to build."),
    out_dir: Path = typer.Option(Path("build"), "-o", "--out", help="Artifacts go to OUT/<pipeline>/."),
    seed: Optional[int] = typer.Option(None, help="Weight init seed (default: the spec's `seed`)."),
    max_param_memory: Optional[int] = typer.Option(None, help="Parameter memory limit in bytes of a real build "
                                                   "(default: the spec's `limits.max_param_bytes`, else 16 GiB)."),
    weights: Optional[Path] = weights_option(),
    rename: list[str] = rename_option(),
    ignore: list[str] = ignore_option(),
    strict: Optional[bool] = strict_option(),
    allow_cast: bool = cast_option(),
    save_weights: bool = typer.Option(False, "--save-weights", help="Write the weights as <pipeline>.safetensors."),
    onnx: Optional[bool] = typer.Option(None, "--onnx/--no-onnx",
                                        help="Export <pipeline>.onnx, verified against torch (default: on)."),
    no_weights: bool = typer.Option(False, "--no-weights",
                                    help="Summarise only, at any size: params, parameter memory by dtype and MACs, "
                                         "counted on the meta device. Allocates no tensor; writes summary.md, the "
                                         "diagram, the resolved spec and report.json, no ONNX or weights."),
    overrides: list[str] = set_option(),
) -> None:
    """Validate, compile, summarise, draw and export a pipeline; writes its artifacts atomically."""
    if no_weights:
        given = [flag for flag, on in (("--weights", weights is not None), ("--save-weights", save_weights),
                                       ("--onnx", onnx is True)) if on]
        if given:
            raise typer.BadParameter(f"{' and '.join(given)} {'needs' if len(given) == 1 else 'need'} weights; "
                                     "a `--no-weights` build has none",
                                     param_hint="'--no-weights'")
    with handled():
        pipe = load(spec, max_param_bytes=max_param_memory, overrides=overrides)
        print_diagnostics(pipe.warnings)
        if not no_weights:
            pipe.check_memory()   # the memory limit (E304) comes before any weights are read or allocated
        source = None if no_weights else weights_source(pipe, weights, rename, ignore, strict, allow_cast)
        with Progress(SpinnerColumn(), TextColumn("{task.description}"), console=err, transient=True) as bar:
            task = bar.add_task(f"{'summarising' if no_weights else 'building'} {pipe.name}")
            result = build_lib.build(pipe, out_dir, seed=seed,
                                     progress=lambda msg: bar.update(task, description=f"{pipe.name}: {msg}"),
                                     weights=source, save_weights=save_weights,
                                     onnx=not no_weights if onnx is None else onnx, no_weights=no_weights)
        print_weights(result.report.get("weights", {}).get("loaded"))
        print_summary(result)


def print_summary(result: build_lib.BuildResult) -> None:
    rep = result.report
    table = Table(title=escape(f"{rep['pipeline']}  (MACs at " + ", ".join(f"{k}={v}" for k, v in rep["macs_at"].items()) + ")"))
    table.add_column("block")
    table.add_column("type")
    table.add_column("output")
    table.add_column("params", justify="right")
    table.add_column("MACs", justify="right")
    for row in result.rows:
        table.add_row(escape(row.block) + (" (frozen)" if row.frozen else ""), row.type, escape(shapes_text(row.outputs)),
                      f"{row.params:,}", human(row.macs))
    table.add_section()
    table.add_row("total", "", "", f"{rep['params']:,}", human(rep["macs"]))
    out.print(table)
    out.print(f"  parameters     {rep['params']:,} ({human_count(rep['params'])})", markup=False)
    out.print(f"  memory         {memory_text(rep['params'])}", markup=False)
    if result.per_token is not None:
        out.print(f"  MACs per token {result.per_token.text(rep['macs_at'])}", markup=False)
    if rep.get("no_weights"):
        out.print("  no weights: counted on the meta device, nothing allocated; no ONNX or weights written",
                  markup=False)
    for name, path in result.artifacts.items():
        out.print(f"  {name:<9} {path}", markup=False)

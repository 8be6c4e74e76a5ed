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
from ..summary import human, shapes_text
from ._common import (cast_option, err, handled, ignore_option, out, print_diagnostics, print_weights, rename_option,
                      set_option, strict_option, weights_option, weights_source)


def build(
    spec: Path = typer.Argument(..., help="The spec to build."),
    out_dir: Path = typer.Option(Path("build"), "-o", "--out", help="Artifacts go to OUT/<pipeline>/."),
    seed: Optional[int] = typer.Option(None, help="Weight init seed (default: the spec's `seed`)."),
    max_param_memory: Optional[int] = typer.Option(None, help="Parameter memory limit in bytes (default 16 GiB)."),
    weights: Optional[Path] = weights_option(),
    rename: list[str] = rename_option(),
    ignore: list[str] = ignore_option(),
    strict: Optional[bool] = strict_option(),
    allow_cast: bool = cast_option(),
    save_weights: bool = typer.Option(False, "--save-weights", help="Write the weights as <pipeline>.safetensors."),
    onnx: bool = typer.Option(True, "--onnx/--no-onnx", help="Export <pipeline>.onnx, verified against torch."),
    overrides: list[str] = set_option(),
) -> None:
    """Validate, compile, summarise, draw and export a pipeline; writes its artifacts atomically."""
    with handled():
        pipe = load(spec, max_param_bytes=max_param_memory, overrides=overrides)
        print_diagnostics(pipe.warnings)
        source = weights_source(pipe, weights, rename, ignore, strict, allow_cast)
        with Progress(SpinnerColumn(), TextColumn("{task.description}"), console=err, transient=True) as bar:
            task = bar.add_task(f"building {pipe.name}")
            result = build_lib.build(pipe, out_dir, seed=seed,
                                     progress=lambda msg: bar.update(task, description=f"{pipe.name}: {msg}"),
                                     weights=source, save_weights=save_weights, onnx=onnx)
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
    for name, path in result.artifacts.items():
        out.print(f"  {name:<9} {path}", markup=False)

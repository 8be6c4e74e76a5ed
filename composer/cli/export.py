"""`composer export SPEC -o model.onnx`: export to ONNX, verified against torch in onnxruntime."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer
from rich.markup import escape
from rich.progress import Progress, SpinnerColumn, TextColumn
from rich.table import Table

from .. import _io
from ..export import export as export_lib
from ..parts import part_model, part_pipeline
from ..weights import load_weights
from ..pipeline import load
from ._common import (cast_option, err, handled, ignore_option, out, print_diagnostics, print_weights, rename_option,
                      set_option, strict_option, weights_option, weights_source)


def export(
    spec: Path = typer.Argument(..., help="The spec to export."),
    output: Optional[Path] = typer.Option(None, "-o", "--output", help="The .onnx file (default: <pipeline>.onnx)."),
    weights: Optional[Path] = weights_option(),
    rename: list[str] = rename_option(),
    ignore: list[str] = ignore_option(),
    strict: Optional[bool] = strict_option(),
    allow_cast: bool = cast_option(),
    fp16: bool = typer.Option(False, "--fp16", help="Half-precision weights and compute; float32 inputs/outputs."),
    static: bool = typer.Option(False, "--static", help="Fix every dim at its example size."),
    verify: bool = typer.Option(True, "--verify/--no-verify", help="Check against torch in onnxruntime."),
    opset: Optional[int] = typer.Option(None, "--opset", help="ONNX opset (default: the exporter's)."),
    seed: Optional[int] = typer.Option(None, "--seed", help="Weight init seed (default: the spec's `seed`)."),
    report: Optional[Path] = typer.Option(None, "--report", help="Also write the export report as JSON."),
    part: Optional[str] = typer.Option(None, "--part", help="Export one of the spec's `parts:` (an encoder, a "
                                                            "decoder step) instead of the whole pipeline."),
    overrides: list[str] = set_option(),
) -> None:
    """Export a pipeline to ONNX; the file is written only when it matches torch."""
    with handled():
        pipe = load(spec, overrides=overrides)
        print_diagnostics(pipe.warnings)
        target = output or Path(f"{pipe.name}{'_' + part if part else ''}.onnx")
        source = weights_source(pipe, weights, rename, ignore, strict, allow_cast)
        what = pipe
        if part is not None:
            what = part_pipeline(pipe, part)          # an unknown part fails before anything is built
            model = pipe.build(seed=seed)
            if source is not None:
                load_weights(model, source)
            what, source = part_model(model.eval(), part), None
        with Progress(SpinnerColumn(), TextColumn("{task.description}"), console=err, transient=True) as bar:
            task = bar.add_task(f"exporting {pipe.name}")
            rep = export_lib(what, target, weights=source, fp16=fp16, static=static, opset=opset, verify=verify,
                             seed=seed, progress=lambda msg: bar.update(task, description=f"{pipe.name}: {msg}"))
        print_weights(rep.get("weights"))
        print_report(rep)
        if report is not None:
            _io.write_text(report, json.dumps(rep, indent=2) + "\n")
            out.print(f"  report    {report}", markup=False)


def _dims(shape) -> str:
    return "[" + ", ".join(str(d) for d in shape) + "]"


def print_report(rep: dict) -> None:
    size = rep["file_bytes"]
    human = f"{size / 1024**2:.1f} MiB" if size >= 1024**2 else f"{size / 1024:.1f} KiB"
    exporter = rep["exporter"] + (f" ({rep['exporter_reason']})" if rep.get("exporter_reason") else "")
    out.print(f"{rep['path']}  {human}, opset {rep['opset']}, {exporter} exporter, "
              f"{'fp16' if rep['fp16'] else 'fp32'}{', static' if rep['static'] else ''}, "
              f"{rep['export_seconds']:.1f} s", markup=False)
    if rep.get("weights"):
        w = rep["weights"]
        out.print(f"  weights   {w['file']} ({w['strategy']}, {w['loaded']} tensors)", markup=False)
    for kind in ("inputs", "outputs"):
        for v in rep[kind]:
            out.print(f"  {kind[:-1]:<9} {v['name']} {_dims(v['shape'])} {v['dtype']}", markup=False)
    ver = rep.get("verification")
    if not ver:
        out.print("  not verified (--no-verify)", style="yellow", markup=False)
        return
    table = Table(title=escape(f"onnxruntime ({ver['provider']}) vs torch: atol {ver['atol']:g}, rtol {ver['rtol']:g}"))
    table.add_column("sizes")
    table.add_column("output")
    table.add_column("shape")
    table.add_column("max abs diff", justify="right")
    table.add_column("max rel diff", justify="right")
    for run in ver["runs"]:
        sizes = ", ".join(f"{k}={v}" for k, v in run["sizes"].items()) or "fixed"
        for name, c in run["outputs"].items():
            if c.get("detection_set"):   # matched as sets: boxes and scores of the matched pairs
                table.add_row(sizes, escape(name), f"{c['matched']}/{c['detections']} matched",
                              f"{c['max_box_diff']:.2e} (box)", f"{c['max_score_diff']:.2e} (score)")
            else:
                table.add_row(sizes, escape(name), _dims(c["shape"]), f"{c['max_abs']:.2e}", f"{c['max_rel']:.2e}")
            sizes = ""
    out.print(table)
    out.print("verified: onnxruntime matches torch", style="green", markup=False)

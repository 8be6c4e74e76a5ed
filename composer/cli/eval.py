"""`composer eval SPEC --weights W`: the metrics of trained weights on a data split, as a table and JSON."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from ._common import (cast_option, handled, ignore_option, out, print_diagnostics, print_weights, rename_option,
                      set_option, strict_option, weights_option, weights_source)


def eval_(
    spec: Path = typer.Argument(..., help="The spec (its `train:` section says how the data is read)."),
    weights: Optional[Path] = weights_option(),
    data: Optional[Path] = typer.Option(None, "--data", help="Evaluate on this file or folder (the spec's data "
                                                             "format)."),
    split: str = typer.Option("val", "--split", help="Without --data: val or train."),
    output: Optional[Path] = typer.Option(None, "-o", "--output",
                                          help="Write the metrics as JSON (default: eval.json beside --weights)."),
    accelerator: str = typer.Option("auto", "--accelerator", help="auto, cpu or cuda."),
    rename: list[str] = rename_option(),
    ignore: list[str] = ignore_option(),
    strict: Optional[bool] = strict_option(),
    allow_cast: bool = cast_option(),
    overrides: list[str] = set_option(),
) -> None:
    """Evaluate a pipeline's weights: loss and metrics of the `train:` section on a data split."""
    from .. import _io
    from ..errors import ComposerError
    from ..pipeline import load
    from ..train import evaluate

    with handled():
        if split not in ("val", "train"):
            raise ComposerError(f"--split {split}: choose val or train (or give --data PATH)")
        pipe = load(spec, overrides=overrides)
        print_diagnostics(pipe.warnings)
        source = weights_source(pipe, weights, rename, ignore, strict, allow_cast)
        result = evaluate(pipe, source, data=data, split=split, accelerator=accelerator)
        print_weights(result.weights)
        table = Table(title=f"{pipe.name} on {result.source} ({result.examples} examples)")
        table.add_column("metric")
        table.add_column("value", justify="right")
        for name, value in result.metrics.items():
            table.add_row(name, f"{value:.6g}")
        out.print(table)
        target = output or ((weights.parent if weights is not None else Path(".")) / "eval.json")
        _io.write_text(target, json.dumps({"pipeline": pipe.name, "data": str(result.source),
                                           "examples": result.examples, "weights": str(weights) if weights else None,
                                           "metrics": result.metrics}, indent=2) + "\n")
        out.print(f"wrote {target}", markup=False)

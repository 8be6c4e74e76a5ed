"""`composer weights SPEC FILE`: how a checkpoint maps onto a pipeline, without loading it;
`--save OUT.safetensors` writes it with the pipeline's own keys, so the next load is exact."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from ..errors import ComposerError
from ..pipeline import load
from ._common import (cast_option, err, handled, ignore_option, out, print_diagnostics, rename_option, set_option,
                      strict_option, weights_source)


def weights(
    spec: Path = typer.Argument(..., help="The spec whose tensors are to be filled."),
    file: Path = typer.Argument(..., help="The checkpoint: .safetensors, .pt, .pth or a Hugging Face model folder."),
    rename: list[str] = rename_option(),
    ignore: list[str] = ignore_option(),
    strict: Optional[bool] = strict_option(),
    allow_cast: bool = cast_option(),
    save: Optional[Path] = typer.Option(None, "--save", help="Write the mapped weights here (.safetensors) under "
                                                            "the pipeline's keys."),
    as_json: bool = typer.Option(False, "--json", help="Print the plan as JSON."),
    seed: Optional[int] = typer.Option(None, "--seed", help="Init seed for what the file lacks (--no-strict --save)."),
    overrides: list[str] = set_option(),
) -> None:
    """Print the mapping of a checkpoint onto a spec: pipeline key, file key, shape, how it matched."""
    from ..weights import load_weights, plan, save_weights
    with handled():
        if save is not None and save.suffix.lower() != ".safetensors":
            raise ComposerError(f"--save {save}: the mapped weights are written as .safetensors")
        pipe = load(spec, overrides=overrides)
        print_diagnostics(pipe.warnings)
        source = weights_source(pipe, file, rename, ignore, strict, allow_cast)
        if save is None:
            report = plan(pipe.build(device="meta", spec_weights=False), source)
        else:
            model = pipe.build(seed=seed, spec_weights=False)
            report = load_weights(model, source)
            save_weights(model, save, {"composer.source": str(file)})
        if as_json:
            data = report.to_dict() | {"entries": [vars(e) for e in report.entries]}
            out.print(json.dumps(data, indent=2), markup=False)
        else:
            print_plan(report)
        for w in report.warnings:
            err.print(f"warning: {w}", style="yellow", markup=False)
        if save is not None:
            out.print(f"  saved     {save}", markup=False)


def print_plan(report) -> None:
    """One aligned row per pipeline tensor (plain text: greppable, never cut at the terminal's width)."""
    rows = [("pipeline key", "file key", "shape", "how")]
    for e in report.entries:
        how = e.how + (f": {e.detail}" if e.detail else "") + (f" ({e.cast})" if e.cast else "")
        rows.append((e.key, e.file_key, "[" + ", ".join(map(str, e.shape)) + "]", how))
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    for i, r in enumerate(rows):
        line = "  ".join(c.ljust(w) for c, w in zip(r, widths)) + "  " + r[3]
        out.print(line.rstrip(), markup=False, style="bold" if i == 0 else None)
    for title, keys in (("kept initial (not in the file)", report.missing),
                        ("file keys not used", report.unused), ("file keys ignored", report.ignored)):
        if keys:
            out.print(f"{title} ({len(keys)}): " + ", ".join(keys), markup=False)
    out.print(report.describe(), markup=False)

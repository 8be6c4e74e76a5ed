"""`composer train SPEC`: train a pipeline by its `train:` section (Lightning), into a run folder."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from ._common import (cast_option, err, handled, ignore_option, is_tty, out, print_diagnostics, rename_option,
                      set_option, strict_option, weights_option, weights_source)


def _devices(text: Optional[str]):
    if text is None:
        return None
    if text == "auto":
        return "auto"
    try:
        n = int(text)
    except ValueError:
        return [int(x) for x in text.split(",")] if all(x.strip().isdigit() for x in text.split(",")) else text
    return n


def train(
    spec: Path = typer.Argument(..., help="The spec to train (it needs a `train:` section)."),
    output: Optional[Path] = typer.Option(None, "-o", "--output", help="The run folder (default runs/<pipeline>)."),
    resume: bool = typer.Option(False, "--resume", help="Continue the run in the folder from its last checkpoint."),
    devices: Optional[str] = typer.Option(None, "--devices", help="Devices per node: a count (2), a list (0,1) or "
                                                                  "auto (default 1)."),
    num_nodes: int = typer.Option(1, "--num-nodes", help="Machines (torchrun or SLURM sets up the rendezvous)."),
    strategy: str = typer.Option("auto", "--strategy", help="auto, ddp or fsdp."),
    accelerator: str = typer.Option("auto", "--accelerator", help="auto, cpu or cuda."),
    weights: Optional[Path] = weights_option(),
    rename: list[str] = rename_option(),
    ignore: list[str] = ignore_option(),
    strict: Optional[bool] = strict_option(),
    allow_cast: bool = cast_option(),
    progress: Optional[bool] = typer.Option(None, "--progress/--no-progress",
                                            help="A live progress bar (default: when the terminal is interactive)."),
    overrides: list[str] = set_option(),
) -> None:
    """Train a pipeline; writes best/last weights, checkpoints, metrics, curves and a report."""
    from ..pipeline import load
    from ..train import train as run_train

    with handled():
        pipe = load(spec, overrides=overrides)
        print_diagnostics(pipe.warnings)
        source = weights_source(pipe, weights, rename, ignore, strict, allow_cast)
        result = run_train(pipe, output, resume=resume, devices=_devices(devices), num_nodes=num_nodes,
                           strategy=strategy, accelerator=accelerator, init_weights=source,
                           progress=is_tty() if progress is None else progress,
                           echo=lambda line: err.print(line, markup=False))
        if result is None:      # a worker process of a distributed run: rank 0 reports
            return
        best = f"  best {result.monitor} {result.best:.4g}" if result.best is not None and result.monitor else ""
        epochs = f"{result.epochs} epoch" + ("s" if result.epochs != 1 else "")
        out.print(f"trained {pipe.name}: {result.steps} steps, {epochs} in {result.seconds:.1f} s "
                  f"({result.samples_per_s:.0f} samples/s){best}", markup=False)
        for name in ("best.safetensors", "last.safetensors", "metrics.csv", "curves.png", "report.json"):
            if name in result.files:
                out.print(f"  {name:<17} {result.folder / name}", markup=False)

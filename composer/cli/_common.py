"""Shared CLI plumbing: consoles, printing diagnostics, and turning errors into exit codes."""

from __future__ import annotations

import sys
from contextlib import contextmanager
from typing import Iterable, Iterator

import typer
from rich.console import Console

from ..errors import ComposerError, Diagnostic, SpecError

out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)


def print_diagnostics(diags: Iterable[Diagnostic]) -> None:
    for d in diags:
        style = "red" if d.severity == "error" else "yellow"
        first, *rest = d.format().split("\n")
        err.print(first, style=style, markup=False)
        for line in rest:
            err.print(line, markup=False)


@contextmanager
def handled() -> Iterator[None]:
    """Run a command body: spec errors exit 2, other composer errors exit 1, no tracebacks."""
    try:
        yield
    except SpecError as exc:
        print_diagnostics(exc.diagnostics)
        n = len(exc.errors)
        err.print(f"{n} error{'s' if n != 1 else ''}", style="red bold", markup=False)
        raise typer.Exit(2)
    except ComposerError as exc:
        err.print(f"error: {exc}", style="red", markup=False)
        raise typer.Exit(getattr(exc, "exit_code", 1))
    except KeyboardInterrupt:
        err.print("interrupted", style="red")
        raise typer.Exit(130)


def set_option():
    """The `--set BLOCK.PARAM=VALUE` option every command that reads a spec takes."""
    return typer.Option([], "--set", metavar="BLOCK.PARAM=VALUE",
                        help="Override a param of the spec, checked like the spec (repeatable); VALUE is YAML: "
                             "`--set head.out_features=100`, `--set backbone/conv1.kernel=[3, 3]`.")


def fail(message: str, code: int = 1) -> None:
    err.print(f"error: {message}", style="red", markup=False)
    raise typer.Exit(code)


def is_tty() -> bool:
    return sys.stderr.isatty()

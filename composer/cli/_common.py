"""Shared CLI plumbing: consoles, printing diagnostics, and turning errors into exit codes."""

from __future__ import annotations

import os
import sys
from contextlib import contextmanager
from typing import Iterable, Iterator, Optional

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


def weights_option():
    return typer.Option(None, "--weights", metavar="W",
                        help="Weights to load (.safetensors, .pt, .pth, or a Hugging Face model folder); replaces "
                             "the spec's `weights:`.")


def rename_option():
    return typer.Option([], "--rename", metavar="REGEX=REPL",
                        help="Rename the checkpoint's keys before matching (repeatable, applied in order; split at "
                             "the last `=`): `--rename '^model\\.='`.")


def ignore_option():
    return typer.Option([], "--ignore", metavar="REGEX", help="Leave out the checkpoint's keys that match (repeatable).")


def strict_option():
    return typer.Option(None, "--strict/--no-strict",
                        help="Every pipeline tensor must come from the checkpoint (default); --no-strict keeps the "
                             "initial weights of what it lacks.")


def cast_option():
    return typer.Option(False, "--allow-cast", help="Allow dtype casts that change values (float64 into float32).")


def weights_source(pipe, weights, rename: list[str], ignore: list[str], strict: Optional[bool], cast: bool):
    """The checkpoint the command loads: `--weights` with its options, or the spec's own
    `weights:` with the options added; None when neither says anything."""
    from ..weights import Rule, as_source, parse_rename
    rules = [parse_rename(r) for r in rename]
    ignores = [Rule(p, None, f"--ignore '{p}'") for p in ignore]
    if weights is not None:
        flips = []
        if not rules and not ignores:
            rules, ignores, flips = _hf_rules(pipe, weights)
        return as_source(weights, rules, ignores, strict, cast or None, flips)
    if not (rules or ignores or strict is not None or cast):
        return None
    spec_source = pipe.resolved.weights
    if spec_source is None:
        raise ComposerError("--rename, --ignore, --strict and --allow-cast apply to a checkpoint: give --weights, or "
                            "a spec with a `weights:` section")
    return as_source(spec_source, rules, ignores, strict, cast or None)


def _hf_rules(pipe, weights) -> tuple[list, list, list]:
    """`--weights DIR` of a Hugging Face folder of a family `composer import hf` knows, without
    rules of its own: the rules that import writes (rename, ignore, and GPT-2's transposes), where
    they land on the spec's keys (a spec named as the import names its blocks); else none, and the
    keys match as for any file."""
    from ..hf import folder_rules, hf_family
    from ..weights import Rule
    family = hf_family(weights) if os.path.isdir(weights) else None
    if family is None:
        return [], [], []
    found = folder_rules(weights, set(pipe.build(device="meta", spec_weights=False).state_dict()))
    if found is None:
        return [], [], []
    rename, ignore, transpose = found
    return ([Rule(p, r, f"{family} rule") for p, r in rename], [Rule(p, None, f"{family} rule") for p in ignore],
            [Rule(p, None, f"{family} rule") for p in transpose])


def print_weights(info: Optional[dict]) -> None:
    """What a load did (one line) and its warnings, on stderr."""
    if not info:
        return
    err.print(info["summary"], markup=False)
    for w in info["warnings"]:
        err.print(f"warning: {w}", style="yellow", markup=False)


def fail(message: str, code: int = 1) -> None:
    err.print(f"error: {message}", style="red", markup=False)
    raise typer.Exit(code)


def is_tty() -> bool:
    return sys.stderr.isatty()

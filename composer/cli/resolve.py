"""`composer resolve SPEC`: print the fully resolved spec as YAML."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from .. import _io
from ..emit import to_yaml
from ..pipeline import load
from ._common import handled, out, set_option


def resolve(
    spec: Path = typer.Argument(..., help="The spec to resolve."),
    output: Optional[Path] = typer.Option(None, "-o", "--output", help="Write to a file instead of stdout."),
    overrides: list[str] = set_option(),
) -> None:
    """Inline sub-pipelines, expand repeats and fill defaults; the result builds the same model."""
    with handled():
        text = to_yaml(load(spec, overrides=overrides).resolved)
        if output is None:
            out.print(text, markup=False, end="")
        else:
            _io.write_text(output, text)
            out.print(f"wrote {output}", markup=False)

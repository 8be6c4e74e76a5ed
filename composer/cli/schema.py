"""`composer schema`: the JSON Schema of specs, for editor completion."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from .. import _io
from ..schema import spec_schema
from ._common import handled, out


def schema(output: Optional[Path] = typer.Option(None, "-o", "--output", help="Write to a file instead of stdout.")) -> None:
    """Print (or write) the JSON Schema of pipeline specs, generated from every block's params."""
    with handled():
        text = json.dumps(spec_schema(), indent=2) + "\n"
        if output is None:
            out.print(text, markup=False, end="")
        else:
            _io.write_text(output, text)
            out.print(f"wrote {output}", markup=False)

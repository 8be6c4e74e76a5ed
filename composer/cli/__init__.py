"""The `composer` command line: one typer app; each command lives in its own module."""

from __future__ import annotations

import typer

from . import blocks, build, resolve, schema, validate
from . import export, run
from . import render, weights
from . import hf
from . import eval as eval_cmd, train
from . import generate, sample

app = typer.Typer(
    name="composer",
    help="Typed YAML pipeline specs → validated DAGs, diagrams, torch modules and verified ONNX.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

app.command("validate")(validate.validate)
app.command("build")(build.build)
app.command("blocks")(blocks.blocks)
app.command("schema")(schema.schema)
app.command("resolve")(resolve.resolve)
app.command("export")(export.export)
app.command("run")(run.run)
app.command("render")(render.render)
app.command("weights")(weights.weights)
app.command("train")(train.train)
app.command("eval")(eval_cmd.eval_)
app.command("generate")(generate.generate)
app.command("sample")(sample.sample)
app.add_typer(hf.app, name="import")


def main() -> None:
    app()

"""`composer import hf DIR -o spec.yaml`: a spec for a Hugging Face model folder (see composer.hf)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from ._common import err, handled, out

app = typer.Typer(name="import", no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)


@app.callback()
def main() -> None:
    """Write a spec for a model made elsewhere, with its weights mapped onto the blocks."""


@app.command("hf")
def hf(
    folder: Path = typer.Argument(..., help="A Hugging Face model folder (what `save_pretrained` writes): config.json, "
                                            "weights, tokenizer files."),
    output: Path = typer.Option(..., "-o", "--output", help="The spec to write (its paths are relative to it)."),
    architecture: Optional[str] = typer.Option(None, "--architecture", metavar="CLASS",
                                               help="Import this architecture instead of config.json's (e.g. "
                                                    "BertModel: the base model of a task folder; GPT2LMHeadModel: "
                                                    "a GPT2Model folder with the tied LM head)."),
    pair: bool = typer.Option(False, "--pair", help="Add a second text input `pair` (sentence pairs; the encoder "
                                                    "families)."),
    name: Optional[str] = typer.Option(None, "--name", help="The pipeline name (default: the folder's name)."),
    force: bool = typer.Option(False, "--force", help="Replace OUTPUT if it exists."),
) -> None:
    """BERT, RoBERTa, ALBERT, ELECTRA and DistilBERT folders: tokenizer, embedding, encoder, head and weights.
    GPT-2 (decoder with a KV cache, tied LM head), T5 (encoder, cached decoder, LM head, as two parts) and
    XLNet (relative-attention encoder, tied LM head) folders likewise."""
    from ..hf import import_hf
    with handled():
        result = import_hf(folder, output, force=force, architecture=architecture, pair=pair, name=name)
        for note in result.notes:
            err.print(f"note: {note}", style="yellow", markup=False)
        out.print(f"wrote {output}: {result.architecture} ({result.family}), outputs {', '.join(result.outputs)}; "
                  f"{result.tensors} tensors from {folder} ({result.rename} rename rules"
                  + (f", {len(result.ignored)} keys ignored" if result.ignored else "") + ")", markup=False)

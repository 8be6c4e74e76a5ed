"""`composer generate SPEC --prompt TEXT`: continue a text with a decoder spec and its KV cache.

The text streams to stdout as it comes (one prompt; a batch of prompts prints each completion
at the end); where it ran, the weights loaded and tokens/s go to stderr.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer

from ._common import (cast_option, err, handled, ignore_option, print_diagnostics, print_weights, rename_option,
                      set_option, strict_option, weights_option, weights_source)


def _write(text: str) -> None:
    """Text to stdout at once (no markup, no wrapping), readable on any terminal encoding."""
    try:
        sys.stdout.write(text)
    except UnicodeEncodeError:
        enc = sys.stdout.encoding or "utf-8"
        sys.stdout.write(text.encode(enc, errors="replace").decode(enc))
    sys.stdout.flush()


def generate(
    spec: Path = typer.Argument(..., help="A decoder spec (.yaml), such as pipelines/gpt2.yaml."),
    prompts: list[str] = typer.Option([], "--prompt", "-p", help="The text to continue (repeatable: a batch, "
                                                                 "left-padded)."),
    max_new_tokens: int = typer.Option(32, "--max-new-tokens", "-n", help="Tokens to generate after each prompt."),
    greedy: Optional[bool] = typer.Option(None, "--greedy/--sample",
                                          help="The argmax (the default), or a sample (the default once "
                                               "--temperature, --top-k or --top-p is given)."),
    temperature: Optional[float] = typer.Option(None, "--temperature", help="Sampling: divide the logits by T > 0 "
                                                                            "(default 1)."),
    top_k: Optional[int] = typer.Option(None, "--top-k", help="Sampling: keep the K likeliest tokens (default 50, as "
                                                              "transformers; 0 = off)."),
    top_p: Optional[float] = typer.Option(None, "--top-p", help="Sampling: keep the likeliest tokens whose "
                                                                "probability adds up to P in (0, 1] (default 1: "
                                                                "off)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the sampling generator (the same seed, the same tokens)."),
    stop: list[str] = typer.Option([], "--stop", help="A token that ends a row (repeatable; default: the "
                                                      "vocabulary's end-of-text token, such as <|endoftext|>)."),
    backend: Optional[str] = typer.Option(None, "--backend", help="torch (default) or onnx (the spec exported, "
                                                                  "verified, to a temporary file)."),
    onnx: Optional[Path] = typer.Option(None, "--onnx", help="An export of the spec to run in onnxruntime instead "
                                                             "of exporting it (implies --backend onnx)."),
    device: str = typer.Option("auto", "--device", help="auto, cpu or cuda (tensorrt with onnx)."),
    threads: Optional[int] = typer.Option(None, "--threads", help="CPU threads (torch, or onnxruntime intra-op)."),
    weights: Optional[Path] = weights_option(),
    rename: list[str] = rename_option(),
    ignore: list[str] = ignore_option(),
    strict: Optional[bool] = strict_option(),
    allow_cast: bool = cast_option(),
    overrides: list[str] = set_option(),
) -> None:
    """Generate text with a decoder spec (GPT-2), streaming it; tokens/s on stderr."""
    from ..generate import EncoderDecoder, GenerateError, TextGenerator, sampling_from
    with handled():
        if not prompts:
            raise GenerateError("give a prompt: --prompt \"Once upon a time\"")
        if max_new_tokens < 1:
            raise GenerateError(f"--max-new-tokens must be 1 or more, not {max_new_tokens}")
        sampling = sampling_from(greedy, temperature, top_k, top_p, seed)
        for i, p in enumerate(prompts):
            if not p.strip():
                raise GenerateError("--prompt is empty: give the text to continue" if len(prompts) == 1
                                    else f"--prompt {i + 1} is empty: give the text to continue")
        if spec.suffix.lower() == ".onnx":
            raise GenerateError(f"{spec} is an ONNX model; generate needs the spec (its tokenizer and types): give "
                                f"the spec, and the model with --onnx {spec}")
        if backend is not None and backend not in ("torch", "onnx"):
            raise GenerateError(f"unknown backend {backend!r}: choose torch or onnx")
        if onnx is not None and backend == "torch":
            raise GenerateError("--onnx runs the model in onnxruntime: leave out --backend torch")
        if onnx is not None and (weights is not None or rename or ignore or strict is not None or allow_cast):
            raise GenerateError("--weights applies to the spec; an .onnx file carries its own weights")
        if threads is not None and threads < 1:
            raise GenerateError(f"--threads must be 1 or more, not {threads}")
        from ..pipeline import load
        pipe = load(spec, overrides=list(overrides))
        print_diagnostics(pipe.warnings)
        source = weights_source(pipe, weights, rename, ignore, strict, allow_cast)
        use = "onnx" if onnx is not None else backend or "torch"
        if use == "torch" and threads:
            import torch
            torch.set_num_threads(threads)
        gen = TextGenerator(pipe, backend=use, onnx=onnx, weights=source, device=device, threads=threads,
                            on_weights=print_weights)
        try:
            request = gen.prepare(prompts, max_new_tokens=max_new_tokens, sampling=sampling, stop=stop or None)
            if use == "onnx" and onnx is None:
                err.print(f"exporting {pipe.name} to a temporary ONNX file, verified against torch", markup=False)
            gen.core()                      # built (or exported) before the prompt is printed
            stream = len(prompts) == 1
            echo = gen.scheme is not EncoderDecoder      # a decoder continues the prompt; T5 writes a new text
            if stream and echo:
                _write(prompts[0])
            result = gen.run(request, on_text=(lambda row, text: _write(text)) if stream else None)
        finally:
            gen.close()
        if stream:
            _write("\n")
        else:
            for i, (p, text) in enumerate(zip(result.prompts, result.texts)):
                _write(f"[{i}] {p}{text}\n" if echo else f"[{i}] {p} -> {text}\n")
        err.print(f"{pipe.name}: {result.summary()}", markup=False)

"""`composer sample SPEC -n 16 -o grid.png`: images from a GAN generator, a VAE decoder, a diffusion
denoiser (DDPM or DDIM, a progress bar over the steps) or a flow, as one grid picture; the tensors
too with `--save`. Where it ran and how long it took go to stderr."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from ._common import (cast_option, err, handled, ignore_option, print_diagnostics, print_weights, rename_option,
                      set_option, strict_option, weights_option, weights_source)


def sample(
    spec: Path = typer.Argument(..., help="A generative spec (.yaml): pipelines/dcgan.yaml, vae.yaml, ddpm.yaml, "
                                          "realnvp.yaml."),
    n: int = typer.Option(16, "-n", "--num", help="How many images."),
    output: Path = typer.Option(Path("samples.png"), "-o", "--output", help="The grid picture (.png, .jpg)."),
    save: Optional[Path] = typer.Option(None, "--save", help="Also write the images and the raw outputs as "
                                                             "tensors (.safetensors, .npz or .pt)."),
    nrow: Optional[int] = typer.Option(None, "--nrow", help="Images per row of the grid (default: a square)."),
    seed: int = typer.Option(0, "--seed", help="Seed of every random draw (the same seed, the same images, on "
                                               "either backend)."),
    steps: Optional[int] = typer.Option(None, "--steps", help="Diffusion: denoising steps (default: the spec's "
                                                              "`diffusion.sampler.steps`)."),
    sampler: Optional[str] = typer.Option(None, "--sampler", help="Diffusion: ddpm or ddim (default: the spec's)."),
    eta: Optional[float] = typer.Option(None, "--eta", help="DDIM: the share of fresh noise per step (0: "
                                                            "deterministic)."),
    temperature: float = typer.Option(1.0, "--temperature", help="Latent and flow models: the scale of the "
                                                                 "noise drawn."),
    backend: str = typer.Option("torch", "--backend", help="torch, or onnx (the generator, decoder, UNet step or "
                                                           "flow sampler exported, verified, to a temporary file)."),
    device: str = typer.Option("auto", "--device", help="auto, cpu or cuda."),
    threads: Optional[int] = typer.Option(None, "--threads", help="CPU threads (torch, or onnxruntime intra-op)."),
    weights: Optional[Path] = weights_option(),
    rename: list[str] = rename_option(),
    ignore: list[str] = ignore_option(),
    strict: Optional[bool] = strict_option(),
    allow_cast: bool = cast_option(),
    overrides: list[str] = set_option(),
) -> None:
    """Sample images from a generative spec and write them as a grid."""
    from ..sample import SampleError, ImageSampler, save_tensors, write_grid
    with handled():
        if threads is not None and threads < 1:
            raise SampleError(f"--threads must be 1 or more, not {threads}")
        if nrow is not None and nrow < 1:
            raise SampleError(f"--nrow must be 1 or more, not {nrow}")
        if output.suffix.lower() not in (".png", ".jpg", ".jpeg"):
            raise SampleError(f"-o {output}: the grid is a picture; give a .png or .jpg file")
        if save is not None and save.suffix.lower() not in (".safetensors", ".npz", ".pt"):
            raise SampleError(f"--save {save}: give a .safetensors, .npz or .pt file")
        from ..pipeline import load
        pipe = load(spec, overrides=list(overrides))
        print_diagnostics(pipe.warnings)
        source = weights_source(pipe, weights, rename, ignore, strict, allow_cast)
        if backend == "torch" and threads:
            import torch
            torch.set_num_threads(threads)
        sampler_ = ImageSampler(pipe, backend=backend, weights=source, device=device, threads=threads,
                                on_weights=print_weights)
        try:
            sampler_.check(n, steps, sampler, temperature)
            if backend == "onnx":
                err.print(f"exporting {pipe.name} to a temporary ONNX file, verified against torch", markup=False)
            sampler_.core()
            result = _with_progress(sampler_, n, seed, steps, sampler, eta, temperature)
        finally:
            sampler_.close()
        write_grid(result.images, output, nrow)
        err.print(f"wrote {output}", markup=False)
        if save is not None:
            save_tensors(result, save)
            err.print(f"wrote {save}", markup=False)
        err.print(f"{pipe.name}: {result.summary()}", markup=False)


def _with_progress(sampler_, n, seed, steps, sampler, eta, temperature):
    """The sampling call with a progress bar on stderr (diffusion steps, or images)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
    what = "steps" if sampler_.scheme.kind == "diffusion" else "images"
    with Progress(TextColumn(f"sampling ({what})"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                  console=err, transient=True) as bar:
        task = bar.add_task("sample", total=None)

        def progress(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        return sampler_.sample(n, seed=seed, steps=steps, sampler=sampler, eta=eta, temperature=temperature,
                               progress=progress)

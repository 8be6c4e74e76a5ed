"""`composer run SPEC|model.onnx --input name=FILE`: run a pipeline on real inputs.

Backends: `torch` (the compiled module; the default for a spec) and `onnx` (onnxruntime;
the only one for an .onnx file, and for a spec it exports, verified, to a temporary file first).
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Optional

import numpy as np
import typer

from .. import _io
from ..errors import ComposerError
from ..inputs import check_inputs, default_sizes, example_size, parse_assignments, random_inputs, read_inputs, symbols_of
from ._common import err, handled, out, print_diagnostics

LOGIT_KINDS = ("logits", "probs")


def run(
    target: Path = typer.Argument(..., help="A spec (.yaml) or an exported model (.onnx)."),
    inputs: list[str] = typer.Option([], "--input", "-i", help="NAME=FILE: an image, .npy, .npz or .safetensors."),
    backend: Optional[str] = typer.Option(None, "--backend", help="torch or onnx (default: torch for a spec, onnx "
                                                                 "for an .onnx file)."),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda or tensorrt (onnx backend only)."),
    weights: Optional[Path] = typer.Option(None, "--weights", help="Weights to load into a spec's model."),
    seed: Optional[int] = typer.Option(None, "--seed", help="Weight init seed (default: the spec's `seed`)."),
    random: bool = typer.Option(False, "--random", help="Seeded random tensors for inputs not given."),
    save: Optional[Path] = typer.Option(None, "--save", help="Write the outputs to .npz or .safetensors."),
    top_k: int = typer.Option(5, "--top-k", help="Classes shown per row of logits/probs outputs."),
    threads: Optional[int] = typer.Option(None, "--threads", help="onnxruntime intra-op threads."),
) -> None:
    """Run a pipeline (torch or onnxruntime) on input files; print outputs, optionally save them."""
    with handled():
        if save is not None and save.suffix.lower() not in (".npz", ".safetensors"):
            raise ComposerError(f"--save {save}: use a .npz or .safetensors file")
        files = parse_assignments(inputs)
        is_onnx = target.suffix.lower() == ".onnx"
        backend = backend or ("onnx" if is_onnx else "torch")
        if backend not in ("torch", "onnx"):
            raise ComposerError(f"unknown backend {backend!r}: choose torch or onnx")
        if is_onnx and backend == "torch":
            raise ComposerError(f"{target} is an ONNX model: it runs with --backend onnx only")
        if is_onnx and weights is not None:
            raise ComposerError("--weights applies to a spec; an .onnx file carries its own weights")
        if is_onnx:
            outputs, kinds, where = _run_onnx_file(target, files, device, random, threads)
        else:
            outputs, kinds, where = _run_spec(target, files, backend, device, weights, seed, random, threads)
        err.print(where, markup=False)
        for name, value in outputs.items():
            _print_output(name, value, kinds.get(name, ""), top_k)
        if save is not None:
            try:
                _save(outputs, save)
            except OSError as exc:
                raise ComposerError(f"cannot write {save}: {exc.strerror or exc}") from None
            out.print(f"saved {len(outputs)} outputs to {save}", markup=False)


def _fill(files, specs, random: bool, dims=None):
    given = {n: f for n, f in files.items()}
    if not random:
        return read_inputs(given, specs)
    unknown = [n for n in given if n not in specs]
    if unknown:
        return read_inputs(given, specs)  # raises the unknown-input error
    arrays = {}
    if given:
        partial = {n: s for n, s in specs.items() if n in given}
        arrays = read_inputs(given, partial)
    env = check_inputs(arrays, {n: specs[n] for n in arrays}) if arrays else {}
    rest = {n: s for n, s in specs.items() if n not in arrays}
    if rest:
        multiples = next(iter(specs.values())).multiples
        sizes = {sym: env.get(sym) or (example_size(sym, dims.get(sym)) if dims is not None else
                                       default_sizes(sym, multiples.get(sym, 1))[0]) for sym in symbols_of(rest)}
        for n, t in random_inputs(rest, sizes).items():
            arrays[n] = t.numpy()
    check_inputs(arrays, specs)
    return arrays


def _run_onnx_file(path: Path, files, device: str, random: bool, threads):
    import onnx

    from ..inputs import specs_from_onnx
    from ..runtime import Session

    sess = Session(path, device=device, threads=threads)   # checks the file and the device first
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:
        raise ComposerError(f"cannot read {path} as ONNX: {exc}") from None
    specs = specs_from_onnx(model)
    arrays = _fill(files, specs, random)
    outputs = sess.run(arrays)
    meta = {p.key: p.value for p in model.metadata_props}
    kinds = {n: _kind_by_name(n) for n in outputs}
    return outputs, kinds, f"{meta.get('composer.pipeline', path.name)}: {sess.describe()}"


def _run_spec(spec: Path, files, backend: str, device: str, weights, seed, random: bool, threads):
    import torch

    from ..inputs import specs_from_pipeline
    from ..pipeline import load

    pipe = load(spec)
    print_diagnostics(pipe.warnings)
    g = pipe.graph
    kinds = {n: _kind_by_name(n) for n in g.resolved.outputs}
    for n, ref in g.resolved.outputs.items():
        t = g.output_type(ref)
        if t is not None and t.kind in LOGIT_KINDS:
            kinds[n] = t.kind
    specs = specs_from_pipeline(pipe)
    arrays = _fill(files, specs, random, pipe.resolved.dims)
    if backend == "onnx":
        from ..export import export
        from ..runtime import Session
        with tempfile.TemporaryDirectory(prefix="composer-run-") as tmp:
            path = Path(tmp) / f"{pipe.name}.onnx"
            export(pipe, path, weights=weights, seed=seed)
            sess = Session(path, device=device, threads=threads)
            outputs = sess.run(arrays)
            return outputs, kinds, f"{pipe.name}: {sess.describe()}"
    if device == "tensorrt":
        raise ComposerError("device 'tensorrt' needs --backend onnx")
    if device not in ("auto", "cpu", "cuda"):
        raise ComposerError(f"unknown device {device!r}: choose auto, cpu or cuda for the torch backend")
    if device == "cuda" and not torch.cuda.is_available():
        raise ComposerError("device 'cuda' is not usable here: no CUDA device is visible (torch.cuda.is_available() "
                            "is False)")
    dev = "cuda" if device == "cuda" or (device == "auto" and torch.cuda.is_available()) else "cpu"
    model = pipe.build(seed=seed)
    if weights is not None:
        from ..weights import load_weights
        rep = load_weights(model, weights)
        err.print(rep.describe(), markup=False)
    model = model.to(dev).eval()
    with torch.no_grad():
        result = model(**{n: torch.from_numpy(np.ascontiguousarray(a)).to(dev) for n, a in arrays.items()})
    outputs = {}
    for n in model.output_names:
        _flatten(n, result[n], outputs)
    return outputs, kinds, f"{pipe.name}: torch on {dev}"


def _flatten(name: str, v, outputs: dict) -> None:
    """Tensors by name; a structured output (a backbone's `features` dict) as `features.c2`, ..."""
    import torch
    if isinstance(v, torch.Tensor):
        v = v.detach().cpu()
        outputs[name] = (v.float() if v.dtype == torch.bfloat16 else v).numpy()
    elif isinstance(v, dict):
        for k, x in v.items():
            _flatten(f"{name}.{k}", x, outputs)
    elif isinstance(v, (tuple, list)):
        for i, x in enumerate(v):
            _flatten(f"{name}.{i}", x, outputs)
    else:
        raise ComposerError(f"output `{name}` is a {type(v).__name__}, not a tensor")


def _kind_by_name(name: str) -> str:
    low = name.lower()
    return "logits" if "logit" in low else "probs" if "prob" in low else ""


def _print_output(name: str, value: np.ndarray, kind: str, top_k: int) -> None:
    shape = "[" + ", ".join(str(s) for s in value.shape) + "]"
    line = f"{name}  {shape} {value.dtype}"
    if value.size and np.issubdtype(value.dtype, np.number):
        v = value.astype(np.float64)
        line += f"  min {v.min():.4g}  max {v.max():.4g}  mean {v.mean():.4g}"
    out.print(line, markup=False)
    if kind in LOGIT_KINDS and value.ndim == 2 and top_k > 0 and np.issubdtype(value.dtype, np.floating):
        scores = value.astype(np.float64)
        if kind == "logits":
            e = np.exp(scores - scores.max(axis=1, keepdims=True))
            probs = e / e.sum(axis=1, keepdims=True)
        else:
            probs = scores
        k = min(top_k, value.shape[1])
        for row in range(value.shape[0]):
            idx = np.argsort(-scores[row], kind="stable")[:k]
            items = ", ".join(f"{i}: {probs[row, i]:.3f}" for i in idx)
            out.print(f"  [{row}] top-{k} class: prob  {items}", markup=False)


def _save(outputs: dict, path: Path) -> None:
    if path.suffix.lower() == ".npz":
        import io
        buf = io.BytesIO()
        np.savez(buf, **outputs)
        _io.write_bytes(path, buf.getvalue())
        return
    import torch
    from safetensors.torch import save as st_save
    tensors = {n: torch.from_numpy(np.ascontiguousarray(v)) for n, v in outputs.items()}
    _io.write_bytes(path, st_save(tensors))

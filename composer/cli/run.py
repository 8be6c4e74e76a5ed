"""`composer run SPEC|model.onnx --input name=FILE`: run a pipeline on real inputs.

Backends: `torch` (the compiled module; the default for a spec) and `onnx` (onnxruntime;
the only one for an .onnx file, and for a spec it exports, verified, to a temporary file first).
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import NamedTuple, Optional

import numpy as np
import typer

from .. import _io, detections
from ..errors import ComposerError
from ..inputs import (check_inputs, default_sizes, example_size, parse_assignments, parse_pairs, random_inputs,
                      read_inputs, read_texts, symbols_of)
from ..stages import PreStage
from ..labels import top_k_text
from ._common import (cast_option, err, handled, ignore_option, out, print_diagnostics, print_weights, rename_option,
                      set_option, strict_option, weights_option, weights_source)

LOGIT_KINDS = ("logits", "probs")


class _Ran(NamedTuple):
    """What a run gives back: outputs by name, their kinds, a line saying where it ran, and what
    presenting them needs (class names, the input arrays and specs)."""

    outputs: dict
    kinds: dict
    where: str
    name: str
    labels: Optional[tuple]
    arrays: dict
    specs: dict
    files: dict
    stage: Optional[PreStage] = None
    texts: Optional[dict] = None


def run(
    target: Path = typer.Argument(..., help="A spec (.yaml) or an exported model (.onnx)."),
    inputs: list[str] = typer.Option([], "--input", "-i", help="NAME=FILE: an image, .npy, .npz, .safetensors, or .csv "
                                                             "(series inputs)."),
    backend: Optional[str] = typer.Option(None, "--backend", help="torch or onnx (default: torch for a spec, onnx "
                                                                 "for an .onnx file)."),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda or tensorrt (onnx backend only)."),
    weights: Optional[Path] = weights_option(),
    rename: list[str] = rename_option(),
    ignore: list[str] = ignore_option(),
    strict: Optional[bool] = strict_option(),
    allow_cast: bool = cast_option(),
    seed: Optional[int] = typer.Option(None, "--seed", help="Weight init seed (default: the spec's `seed`)."),
    random: bool = typer.Option(False, "--random", help="Seeded random tensors for inputs not given."),
    save: Optional[Path] = typer.Option(None, "--save", help="Write the outputs to .npz or .safetensors."),
    output: Optional[Path] = typer.Option(None, "-o", "--output", help="Folder for detection results: "
                                          "detections.json and each image with its boxes drawn."),
    top_k: int = typer.Option(5, "--top-k", help="Classes shown per row of logits/probs outputs."),
    threads: Optional[int] = typer.Option(None, "--threads", help="onnxruntime intra-op threads."),
    overrides: list[str] = set_option(),
) -> None:
    """Run a pipeline (torch or onnxruntime) on input files; print outputs, optionally save them."""
    with handled():
        if save is not None and save.suffix.lower() not in (".npz", ".safetensors"):
            raise ComposerError(f"--save {save}: use a .npz or .safetensors file")
        if output is not None and output.exists() and not output.is_dir():
            raise ComposerError(f"-o {output}: it is a file; -o names a folder for the results")
        pairs = parse_pairs(inputs)
        is_onnx = target.suffix.lower() == ".onnx"
        backend = backend or ("onnx" if is_onnx else "torch")
        if backend not in ("torch", "onnx"):
            raise ComposerError(f"unknown backend {backend!r}: choose torch or onnx")
        if is_onnx and backend == "torch":
            raise ComposerError(f"{target} is an ONNX model: it runs with --backend onnx only")
        if is_onnx and (weights is not None or rename or ignore or strict is not None or allow_cast):
            raise ComposerError("--weights applies to a spec; an .onnx file carries its own weights")
        if is_onnx and overrides:
            raise ComposerError("--set applies to a spec; an .onnx file is fixed (export it again with --set)")
        if is_onnx:
            ran = _run_onnx_file(target, parse_assignments(pairs), device, random, threads)
        else:
            ran = _run_spec(target, pairs, backend, device, (weights, rename, ignore, strict, allow_cast), seed,
                            random, threads, overrides)
        outputs, kinds = ran.outputs, ran.kinds
        roles = detections.find_outputs(kinds)
        if output is not None and roles is None:
            raise ComposerError(f"-o writes detection results, and `{ran.name}` has no detection outputs (kinds "
                                "boxes, scores, labels, count); use --save FILE.npz to keep its outputs")
        dets = detections.split(outputs, roles) if roles is not None else None
        results = _detection_files(ran, dets, ran.files) if output is not None else {}
        err.print(ran.where, markup=False)
        for name, value in outputs.items():
            _print_output(name, value, kinds.get(name, ""), top_k, ran.labels)
            for line in _text_lines(ran, value, top_k):
                out.print(line, markup=False)
        if dets is not None:
            out.print(f"detections ({', '.join(roles[r] for r in detections.ROLE_KINDS if r in roles)})",
                      markup=False)
            for line in detections.format_lines(dets, ran.labels):
                out.print(line, markup=False)
        if save is not None:
            try:
                _save(outputs, save)
            except OSError as exc:
                raise ComposerError(f"cannot write {save}: {exc.strerror or exc}") from None
            out.print(f"saved {len(outputs)} outputs to {save}", markup=False)
        if results:
            try:
                _io.write_files(output, results)
            except OSError as exc:
                raise ComposerError(f"cannot write the results to {output}: {exc.strerror or exc}") from None
            out.print(f"wrote {', '.join(results)} to {output}", markup=False)


def _text_lines(ran: _Ran, value: np.ndarray, top_k: int) -> list[str]:
    """Sentence embeddings: their cosine similarities; a fill-mask model: the tokens at each [MASK]."""
    from .. import text_output
    texts = next(iter(ran.texts.values())) if ran.texts else None
    if text_output.is_unit_rows(value):
        return text_output.similarity_lines(value, texts)
    if ran.stage is not None and ran.texts and value.ndim == 3:
        for node in ran.stage.nodes:
            tok = getattr(ran.stage.runtime(node), "tok", None)
            ids = ran.arrays.get("tokens")
            if tok is not None and ids is not None:
                return text_output.fill_mask_lines(value, ids, tok, min(top_k, value.shape[-1]))
    return []


def _detection_files(ran: _Ran, dets, files) -> dict[str, bytes]:
    """detections.json and the drawings, in memory (written once the whole run has succeeded)."""
    image = next((n for n, s in ran.specs.items() if s.kind == "image"), None)
    source = str(files[image]) if image is not None and image in files else None
    return detections.render_files(dets, ran.labels, ran.name, image, ran.arrays.get(image) if image else None,
                                   ran.specs.get(image) if image else None, source)


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
    kinds = _with_kinds({n: _kind_by_name(n) for n in outputs}, _meta_json(meta, "composer.outputs", dict, path))
    labels = _meta_json(meta, "composer.labels", list, path)
    if labels is not None and not all(isinstance(x, str) for x in labels):
        labels = None
    name = meta.get("composer.pipeline", path.stem)
    return _Ran(outputs, kinds, f"{name}: {sess.describe()}", name, tuple(labels) if labels else None, arrays, specs,
                files)


def _meta_json(meta: dict, key: str, want: type, path: Path):
    """A JSON value of composer's ONNX metadata; a malformed one is skipped with a warning."""
    if key not in meta:
        return None
    try:
        value = json.loads(meta[key])
    except ValueError:
        value = None
    if not isinstance(value, want):
        err.print(f"warning: {path}: metadata `{key}` is not a JSON {want.__name__}; ignored", style="yellow",
                  markup=False)
        return None
    return value


def _with_kinds(kinds: dict, inferred: Optional[dict]) -> dict:
    """Name-based kinds, replaced by the inferred kind of an output where it says more (a
    `vector` named `logits` keeps reading as logits)."""
    for n, k in (inferred or {}).items():
        if n in kinds and k == "nodes":         # scores per node of a graph: `nodes:logits` by name
            kinds[n] = f"nodes:{kinds[n]}" if kinds[n] else k
        elif n in kinds and isinstance(k, str) and (k in LOGIT_KINDS or k not in ("tensor", "vector") or not kinds[n]):
            kinds[n] = k
    return kinds


def _split_texts(pipe, pairs):
    """The files given for tensor inputs, and the texts given for text inputs (repeatable)."""
    text_inputs = [n for n, i in pipe.resolved.inputs.items() if i.type is not None and i.type.kind == "text"]
    texts = {n: read_texts(n, [v for k, v in pairs if k == n]) for n in text_inputs if any(k == n for k, _ in pairs)}
    return parse_assignments([(k, v) for k, v in pairs if k not in text_inputs]), texts


def _run_spec(spec: Path, pairs, backend: str, device: str, weights, seed, random: bool, threads, overrides=()):
    import torch

    from ..inputs import specs_from_pipeline
    from ..pipeline import load

    pipe = load(spec, overrides=list(overrides))
    print_diagnostics(pipe.warnings)
    weights = weights_source(pipe, *weights)
    g = pipe.graph
    inferred = {}
    for n, ref in g.resolved.outputs.items():
        t = g.output_type(ref)
        if t is not None:
            inferred[n] = t.kind
            inferred.update({f"{n}.{f}": ft.kind for f, ft in t.fields})   # a structured output, flattened
    kinds = _with_kinds({n: _kind_by_name(n) for n in inferred}, inferred)
    labels = pipe.resolved.labels.names if pipe.resolved.labels is not None else None
    specs = specs_from_pipeline(pipe)
    files, texts = _split_texts(pipe, pairs)
    stage = PreStage(g)
    produced = stage(texts) if texts or (stage.nodes and not random) else {}
    arrays = {**produced, **_fill(files, {n: s for n, s in specs.items() if n not in produced}, random,
                                  pipe.resolved.dims)}
    check_inputs(arrays, specs)
    if backend == "onnx":
        from ..export import export
        from ..runtime import Session
        with tempfile.TemporaryDirectory(prefix="composer-run-") as tmp:
            path = Path(tmp) / f"{pipe.name}.onnx"
            rep = export(pipe, path, weights=weights, seed=seed)
            print_weights(rep.get("weights"))
            sess = Session(path, device=device, threads=threads)
            outputs = sess.run(arrays)
            return _Ran(outputs, kinds, f"{pipe.name}: {sess.describe()}", pipe.name, labels, arrays, specs, files,
                        stage, texts)
    if device == "tensorrt":
        raise ComposerError("device 'tensorrt' needs --backend onnx")
    if device not in ("auto", "cpu", "cuda"):
        raise ComposerError(f"unknown device {device!r}: choose auto, cpu or cuda for the torch backend")
    if device == "cuda" and not torch.cuda.is_available():
        raise ComposerError("device 'cuda' is not usable here: no CUDA device is visible (torch.cuda.is_available() "
                            "is False)")
    dev = "cuda" if device == "cuda" or (device == "auto" and torch.cuda.is_available()) else "cpu"
    model = pipe.build(seed=seed, spec_weights=weights is None)
    if weights is None and model.weights_report is not None:
        print_weights(model.weights_report.to_dict())
    if weights is not None:
        from ..weights import load_weights
        print_weights(load_weights(model, weights).to_dict())
    model = model.to(dev).eval()
    with torch.no_grad():
        result = model(**{n: torch.from_numpy(np.ascontiguousarray(a)).to(dev) for n, a in arrays.items()})
    outputs = {}
    for n in model.output_names:
        _flatten(n, result[n], outputs)
    return _Ran(outputs, kinds, f"{pipe.name}: torch on {dev}", pipe.name, labels, arrays, specs, files, stage, texts)


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


def _print_output(name: str, value: np.ndarray, kind: str, top_k: int, names=None) -> None:
    row_name = "node " if kind.startswith("nodes:") else ""      # per-node scores of a graph
    kind = kind.removeprefix("nodes:")
    shape = "[" + ", ".join(str(s) for s in value.shape) + "]"
    line = f"{name}  {shape} {value.dtype}"
    if value.size and np.issubdtype(value.dtype, np.number):
        v = value.astype(np.float64)
        line += f"  min {v.min():.4g}  max {v.max():.4g}  mean {v.mean():.4g}"
    out.print(line, markup=False)
    if kind == "attention" and value.ndim == 2 and top_k > 0 and np.issubdtype(value.dtype, np.floating):
        k = min(top_k, value.shape[1])
        for row in range(value.shape[0]):
            steps = np.argsort(-value[row], kind="stable")[:k]
            out.print(f"  [{row}] most attended steps: " + ", ".join(f"{s} ({value[row, s]:.3f})" for s in steps),
                      markup=False)
        return
    if kind in LOGIT_KINDS and value.ndim == 2 and top_k > 0 and np.issubdtype(value.dtype, np.floating):
        scores = value.astype(np.float64)
        if kind == "logits":
            e = np.exp(scores - scores.max(axis=1, keepdims=True))
            probs = e / e.sum(axis=1, keepdims=True)
        else:
            probs = scores
        k = min(top_k, value.shape[1])
        for row in range(value.shape[0]):
            items = top_k_text(scores[row], probs[row], k, names)
            out.print(f"  [{row_name}{row}] top-{k} " + ("class: prob  " if names is None else " ") + items, markup=False)


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

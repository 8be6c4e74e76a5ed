"""Export a pipeline to ONNX, verify it against torch, and write it atomically.

    report = composer.export(pipe, "build/model.onnx")            # verified, or ComposerError

Steps, each of which can fail with a `ComposerError` (exit code 1) that leaves no file at the
target and any earlier file there intact:

1. build the module (or take the one given), load `weights=` if any, switch to eval mode;
2. run it once in torch at the traced sizes and check every pipeline output is a tensor;
3. `torch.onnx.export(..., dynamo=True)`; the legacy TorchScript exporter (`dynamo=False`) only
   when a block of the pipeline declares `onnx_exporter = "legacy"` (see docs/export.md);
   ONNX input/output names are the spec's, every symbolic input dim is a named dynamic dim;
4. strip metadata that would make the bytes differ run to run (stack traces);
5. write to a temporary file in the target folder (external data next to it over 2 GiB);
6. `onnx.checker` full check, then onnxruntime (CPU provider) against torch at two or more
   sizes of every dynamic dim, with max absolute and relative differences per output;
7. `os.replace` into place.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Optional, Union

import numpy as np
import torch
from torch import nn

from . import _io
from .dims import Dim, format_dim
from .errors import ComposerError
from .inputs import InputSpec, default_sizes, graph_dims, random_inputs, specs_from_pipeline, symbols_of

EXTERNAL_DATA_THRESHOLD = 2 * 1024**3 - 64 * 1024**2   # protobuf's 2 GiB limit, with room for the graph
TOLERANCES = {"fp32": (1e-4, 1e-3), "fp16": (1e-2, 1e-2)}   # (atol, rtol)
STRIP_METADATA = ("pkg.torch.onnx.stack_trace", "pkg.torch.onnx.fx_node")


class ExportError(ComposerError):
    """An export or its verification failed (exit code 1); nothing was written."""


@dataclass
class DimPlan:
    """A symbolic input dim: the size the export traces at and the sizes it is verified at."""

    name: str
    multiple_of: int
    trace: int
    sizes: list[int]


# ---- planning ------------------------------------------------------------------------------


def plan_dims(pipe, specs: Mapping[str, InputSpec], static: bool = False) -> dict[str, DimPlan]:
    """Trace and verification sizes for every symbolic dim of the inputs."""
    dims = pipe.resolved.dims
    graph_sizes = graph_dims(specs)
    plans = {}
    for name in symbols_of(specs):
        decl = dims.get(name)
        m = decl.multiple_of if decl is not None else 1
        sizes = list(decl.sizes) if decl is not None and decl.sizes else \
            list(graph_sizes[name]) if name in graph_sizes else default_sizes(name, m)
        # trace at a size > 1 (torch.export fixes dims traced at 0 or 1) that is declared
        candidates = ([decl.example] if decl is not None and decl.example else []) + sizes
        trace = next((s for s in candidates if s > 1), None) or max(2, m)
        if static:
            trace = (decl.example if decl is not None and decl.example else sizes[0])
            sizes = [trace]
        plans[name] = DimPlan(name, m, trace, sizes)
    return plans


def size_configs(plans: Mapping[str, DimPlan]) -> list[dict[str, int]]:
    """Verification runs: run i takes the i-th size of every dim (cycling shorter lists)."""
    n = max((len(p.sizes) for p in plans.values()), default=1)
    return [{name: p.sizes[i % len(p.sizes)] for name, p in plans.items()} for i in range(n)]


def _dynamic_name(d) -> Optional[str]:
    if isinstance(d, Dim):
        syms = d.symbols()
        return str(d) if len(syms) == 1 and str(d) in syms else format_dim(d)
    return None


# ---- the module the exporter sees ----------------------------------------------------------


def _export_view(model: nn.Module, input_names, output_names, fp16: bool) -> nn.Module:
    """A view of `model` (same submodules, so ONNX initializers keep the pipeline's names) whose
    forward takes the inputs positionally and returns the outputs as a tuple; with `fp16`
    it casts float inputs to half and float outputs back to float32."""
    base = type(model)
    ins, outs = tuple(input_names), tuple(output_names)

    def forward(self, *args):
        kw = {}
        for n, a in zip(ins, args):
            kw[n] = a.half() if fp16 and a.is_floating_point() else a
        result = base.forward(self, **kw)
        values = []
        for n in outs:
            v = result[n]
            values.append(v.float() if fp16 and v.is_floating_point() else v)
        return tuple(values)

    import inspect
    params = [inspect.Parameter("self", inspect.Parameter.POSITIONAL_OR_KEYWORD)]
    params += [inspect.Parameter(n, inspect.Parameter.POSITIONAL_OR_KEYWORD) for n in ins]
    forward.__signature__ = inspect.Signature(params)   # torch.export matches dynamic_shapes by name
    view_cls = type(base.__name__, (base,), {"forward": forward, "__module__": base.__module__})
    view = copy.copy(model)          # shares _modules/_parameters: same tensors, same names
    view.__class__ = view_cls
    return view


def _check_outputs(result: Any, output_names, pipe_name: str) -> None:
    if not isinstance(result, Mapping):
        raise ExportError(f"pipeline `{pipe_name}`: forward returned a {type(result).__name__}, expected a dict "
                          "of named outputs")
    for n in output_names:
        v = result.get(n)
        if not isinstance(v, torch.Tensor):
            what = type(v).__name__
            if isinstance(v, Mapping):
                what = f"dict of {len(v)} tensors ({', '.join(map(str, v))})"
            elif isinstance(v, (tuple, list)):
                what = f"{type(v).__name__} of {len(v)} values"
            raise ExportError(f"pipeline `{pipe_name}`: output `{n}` is a {what}, not a tensor; ONNX outputs "
                              "must be tensors",
                              )


def _legacy_blocks(pipe) -> list[tuple[str, str]]:
    """Blocks that ask for the legacy exporter: (node name, reason)."""
    out = []
    if pipe is None:
        return out
    for name, node in pipe.graph.nodes.items():
        cls = type(node.block)
        if getattr(cls, "onnx_exporter", "dynamo") == "legacy":
            out.append((name, getattr(cls, "onnx_exporter_reason", "") or f"`{cls.name}` needs it"))
    return out


def _short(exc: BaseException, lines: int = 12) -> str:
    text = [l for l in str(exc).strip().splitlines() if l.strip()]
    body = "\n    ".join(text[:lines]) + ("\n    …" if len(text) > lines else "")
    return f"{type(exc).__name__}: {body}"


# ---- ONNX post-processing ------------------------------------------------------------------


def _clean(proto) -> None:
    """Drop metadata that differs run to run (stack traces, FX node dumps)."""
    def strip(props):
        keep = [p for p in props if p.key not in STRIP_METADATA]
        if len(keep) != len(props):
            del props[:]
            props.extend(keep)

    def graph(g):
        for n in g.node:
            strip(n.metadata_props)
            for a in n.attribute:
                if a.HasField("g"):
                    graph(a.g)
                for sub in a.graphs:
                    graph(sub)
        for v in list(g.value_info) + list(g.input) + list(g.output) + list(g.initializer):
            strip(v.metadata_props)

    graph(proto.graph)
    for f in proto.functions:
        for n in f.node:
            strip(n.metadata_props)


NOT_FOLDED = {"RandomNormal", "RandomNormalLike", "RandomUniform", "RandomUniformLike", "Multinomial", "Bernoulli",
              "Dropout"}
FOLD_MAX_BYTES = 256 * 1024**2


def _fold_weights(proto) -> int:
    """Compute once what the graph computes from its weights alone.

    A block that stores its weights in torch's layout and rearranges them for an ONNX operator
    (an LSTM's gates in ONNX's order, a projection folded into the recurrent matrix) exports that
    rearrangement as nodes on initializers; the exporter's optimizer folds only tensors up to 8192
    elements, so at real sizes every inference would repeat it. Each node whose inputs are all
    initializers or constants is evaluated here with onnxruntime (one thread, no graph
    optimisation) and its needed results become initializers; weights nothing reads any more are
    dropped. Returns the number of nodes folded."""
    import onnx
    import onnxruntime as ort
    from onnx import helper, numpy_helper

    g = proto.graph
    if any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS) for n in g.node for a in n.attribute):
        return 0                                   # subgraphs read outer values: leave such graphs alone
    const = {t.name for t in g.initializer}
    folded, keep = [], []
    for n in g.node:
        if n.op_type not in NOT_FOLDED and n.domain in ("", "ai.onnx") and n.output and \
                all(i in const or i == "" for i in n.input) and (n.input or n.op_type == "Constant"):
            folded.append(n)
            const.update(o for o in n.output if o)
        else:
            keep.append(n)
    made = {o for n in folded for o in n.output if o}
    needed = [v for v in dict.fromkeys([i for n in keep for i in n.input] + [o.name for o in g.output]) if v in made]
    if not needed or all(n.op_type == "Constant" for n in folded):
        return 0
    by_name = {t.name: t for t in g.initializer}
    weights = [by_name[i] for i in dict.fromkeys(i for n in folded for i in n.input) if i in by_name]
    if sum(len(t.raw_data) or t.ByteSize() for t in weights) > FOLD_MAX_BYTES:
        return 0
    types = {vi.name: vi.type.tensor_type.elem_type for vi in g.value_info}
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    try:
        if any(not types.get(v) for v in needed):
            inferred = onnx.shape_inference.infer_shapes(proto).graph.value_info
            types.update({vi.name: vi.type.tensor_type.elem_type for vi in inferred})
        sub = helper.make_graph(folded, "fold", [], [helper.make_tensor_value_info(v, types[v], None) for v in needed],
                                weights)
        model = helper.make_model(sub, opset_imports=proto.opset_import, ir_version=proto.ir_version)
        values = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"]).run(
            needed, {})
    except Exception:        # an op onnxruntime cannot run alone, an unknown type: keep the graph as it is
        return 0
    if sum(v.nbytes for v in values) > FOLD_MAX_BYTES:
        return 0
    del g.node[:]
    g.node.extend(keep)
    used = {i for n in keep for i in n.input} | {o.name for o in g.output}
    inits = [t for t in g.initializer if t.name in used]
    inits += [numpy_helper.from_array(v, name) for name, v in zip(needed, values)]
    del g.initializer[:]
    g.initializer.extend(inits)
    kept_info = [vi for vi in g.value_info if vi.name not in made]
    del g.value_info[:]
    g.value_info.extend(kept_info)
    return len(folded)


SHAPE_OPS = {"Shape", "Size", "Squeeze", "Unsqueeze", "Gather", "Min", "Max", "Add", "Sub", "Mul", "Div", "Cast",
             "Floor", "Ceil", "Concat", "Reshape", "Slice", "Neg", "Abs", "Identity", "Mod"}
FLOAT_ARITH = {"Min", "Max", "Add", "Sub", "Mul", "Div", "Floor", "Ceil", "Neg", "Abs", "Identity"}


def _double_size_math(proto) -> int:
    """Compute symbolic size arithmetic in float64, as torch does on the host.

    torch evaluates float expressions of sizes (`floor(H * min(800 / H, 1333 / W))`) in Python
    floats; the exporter casts the sizes to float32, where 61 * (128 / 61) rounds to 127.99999
    and a resize comes out one pixel short. Each connected piece of float arithmetic on values
    computed only from input shapes and constants, whose results only go back to integers,
    is switched to double. Returns the number of casts changed."""
    import onnx
    from onnx import TensorProto, numpy_helper

    g = proto.graph
    consts: dict[str, Any] = {t.name: t for t in g.initializer}
    for n in g.node:
        if n.op_type == "Constant" and len(n.output) == 1:
            consts[n.output[0]] = n
    shape_vals: set[str] = set()
    for n in g.node:                     # nodes are in topological order
        if n.op_type == "Shape" or (n.op_type in SHAPE_OPS and n.input and
                                     all(i in shape_vals or i in consts or i == "" for i in n.input)
                                     and any(i in shape_vals for i in n.input)):
            shape_vals.update(n.output)

    def cast_to(n) -> int:
        return next(a.i for a in n.attribute if a.name == "to")

    floats: dict[str, Any] = {}          # float-valued size expression -> its node
    for n in g.node:
        if not n.output or n.output[0] not in shape_vals:
            continue
        if n.op_type == "Cast" and cast_to(n) == TensorProto.FLOAT:
            floats[n.output[0]] = n
        elif n.op_type in FLOAT_ARITH and any(i in floats for i in n.input):
            floats[n.output[0]] = n
    parent = {v: v for v in floats}

    def root(v: str) -> str:
        while parent[v] != v:
            parent[v] = parent[parent[v]]
            v = parent[v]
        return v

    for v, n in floats.items():
        for i in n.input:
            if i in floats and n.op_type != "Cast":
                parent[root(i)] = root(v)
    bad: set[str] = {root(o.name) for o in g.output if o.name in floats}
    for n in g.node:
        for i in n.input:
            if i not in floats:
                continue
            internal = n.output and n.output[0] in floats and n.op_type != "Cast"
            to_int = n.op_type == "Cast" and cast_to(n) in (TensorProto.INT64, TensorProto.INT32)
            if not internal and not to_int:
                bad.add(root(i))
    changed = 0
    made: dict[str, str] = {}
    for v, n in floats.items():
        if root(v) in bad:
            continue
        for vi in g.value_info:
            if vi.name == v:
                vi.type.tensor_type.elem_type = TensorProto.DOUBLE
        if n.op_type == "Cast":
            next(a for a in n.attribute if a.name == "to").i = TensorProto.DOUBLE
            changed += 1
            continue
        for j, name in enumerate(n.input):
            if name in floats or name not in consts:
                continue
            c = consts[name]
            arr = numpy_helper.to_array(c if isinstance(c, onnx.TensorProto) else
                                        next(a.t for a in c.attribute if a.name == "value"))
            if arr.dtype.kind == "f":
                if name not in made:
                    made[name] = f"{name}__f64"
                    g.initializer.append(numpy_helper.from_array(arr.astype("float64"), made[name]))
                n.input[j] = made[name]
    return changed


def _set_metadata(proto, meta: Mapping[str, str]) -> None:
    existing = {p.key: p for p in proto.metadata_props}
    for k, v in meta.items():
        if k in existing:
            existing[k].value = v
        else:
            p = proto.metadata_props.add()
            p.key, p.value = k, v


def _value_dims(vi) -> list:
    out = []
    for d in vi.type.tensor_type.shape.dim:
        out.append(int(d.dim_value) if d.HasField("dim_value") else (d.dim_param if d.HasField("dim_param") else "?"))
    return out


def _elem_name(vi) -> str:
    from .inputs import ONNX_ELEM_DTYPES
    return ONNX_ELEM_DTYPES.get(vi.type.tensor_type.elem_type, str(vi.type.tensor_type.elem_type))


def _initializer_bytes(proto) -> int:
    return sum(len(t.raw_data) or t.ByteSize() for t in proto.graph.initializer)


# ---- comparison ----------------------------------------------------------------------------


def compare(got: np.ndarray, ref: np.ndarray, atol: float, rtol: float) -> dict:
    """Max abs and rel differences, and whether every element is within atol + rtol*|ref|."""
    if got.shape != ref.shape:
        return {"shape": list(ref.shape), "onnx_shape": list(got.shape), "max_abs": None, "max_rel": None,
                "ok": False}
    a = got.astype(np.float64)
    b = ref.astype(np.float64)
    if a.size == 0:
        return {"shape": list(ref.shape), "max_abs": 0.0, "max_rel": 0.0, "ok": True}
    nan_a, nan_b = np.isnan(a), np.isnan(b)
    nan_ok = bool(np.array_equal(nan_a, nan_b))
    both = ~(nan_a | nan_b)
    diff = np.abs(a - b)
    diff = np.where(both, diff, 0.0)
    inf_ok = bool(np.array_equal(np.isinf(a), np.isinf(b))) and bool(np.all(a[np.isinf(a)] == b[np.isinf(a)]))
    finite = both & np.isfinite(a) & np.isfinite(b)
    d = np.where(finite, diff, 0.0)
    mag = np.abs(b)
    # atol is for outputs of magnitude <= 1; a larger output scales it by its largest |value|
    # (random-init deep nets in eval mode reach 1e9, where fp32 rounding alone exceeds 1e-4)
    scale = max(1.0, float(mag[finite].max()) if finite.any() else 1.0)
    big = finite & (mag > atol * scale)    # relative error only where the reference is not ~0
    max_rel = float(np.max(d[big] / mag[big])) if big.any() else 0.0
    ok = nan_ok and inf_ok and bool(np.all(d <= atol * scale + rtol * mag))
    return {"shape": list(ref.shape), "max_abs": float(d.max()), "max_rel": max_rel, "scale": scale, "ok": ok}


# ---- writing -------------------------------------------------------------------------------


def _prepare_target(path: Path) -> Path:
    folder = path.parent
    if path.exists() and path.is_dir():
        raise ExportError(f"cannot write {path}: it is a folder")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ExportError(f"cannot create output folder {folder}: {exc.strerror or exc}") from None
    try:  # fail now, not after a long export
        fd, probe = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".probe", dir=folder)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise ExportError(f"cannot write to output folder {folder}: {exc.strerror or exc}") from None
    return folder


def _write_temp(proto, path: Path, external: bool) -> tuple[Path, Optional[str], Path]:
    """Write `proto` beside `path`; returns (temp model path, external data name, temp holder)."""
    import onnx

    folder = path.parent
    try:
        if not external:
            fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=folder)
            with os.fdopen(fd, "wb") as f:
                f.write(proto.SerializeToString(deterministic=True))
                f.flush()
                os.fsync(f.fileno())
            return Path(tmp), None, Path(tmp)
        tmpdir = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmpdir", dir=folder))
        data_name = path.name + ".data"          # a plain file name inside the output folder
        onnx.save_model(proto, str(tmpdir / path.name), save_as_external_data=True, all_tensors_to_one_file=True,
                        location=data_name, size_threshold=1024)
        if not (tmpdir / data_name).exists():       # every tensor was small enough to stay inline
            data_name = None
        return tmpdir / path.name, data_name, tmpdir
    except OSError as exc:
        raise ExportError(f"cannot write to output folder {folder}: {exc.strerror or exc}") from None


def _discard(holder: Optional[Path]) -> None:
    if holder is None or not holder.exists():
        return
    if holder.is_dir():
        shutil.rmtree(holder, ignore_errors=True)
    else:
        holder.unlink(missing_ok=True)


def _commit(tmp_model: Path, data_name: Optional[str], holder: Path, path: Path) -> None:
    mode = _io.file_mode()
    os.chmod(tmp_model, mode)
    if data_name is not None:
        os.chmod(holder / data_name, mode)
    if data_name is None:
        os.replace(tmp_model, path)
        if holder.is_dir():
            shutil.rmtree(holder, ignore_errors=True)
        return
    os.replace(holder / data_name, path.parent / data_name)
    os.replace(tmp_model, path)
    shutil.rmtree(holder, ignore_errors=True)


# ---- verification --------------------------------------------------------------------------


def verify_onnx(onnx_path: Path, reference: nn.Module, specs: Mapping[str, InputSpec], configs: list[dict[str, int]],
                output_names, atol: float, rtol: float, seed: int = 0,
                detections: Optional[Mapping[str, Mapping[str, str]]] = None) -> dict:
    """onnxruntime (CPU provider) against `reference` (a torch module taking **inputs, returning a
    dict) at each size configuration; returns the per-run figures. Outputs that are the fields of
    one detections port (`detections`: {group: {field: output}}) are compared as matched sets
    (composer/_match.py), every other output element by element."""
    from ._match import compare_detections
    from .runtime import Session

    grouped = {n for fields in (detections or {}).values() for n in fields.values()}

    sess = Session(onnx_path, device="cpu")
    runs = []
    worst_abs = worst_rel = 0.0
    ok = True
    for i, env in enumerate(configs):
        inputs = random_inputs(specs, env, seed=seed + i)
        device = next((p.device for p in reference.parameters()), torch.device("cpu"))
        with torch.no_grad():
            ref = reference(**{k: v.to(device) for k, v in inputs.items()})
        try:
            got = sess.run({k: v.numpy() for k, v in inputs.items()})
        except ComposerError as exc:
            raise ExportError(f"onnxruntime could not run the exported model at {_sizes(env)}: {exc}") from None
        outs = {}
        host = {n: (ref[n].detach().float().cpu().numpy() if ref[n].is_floating_point() else ref[n].cpu().numpy())
                for n in output_names}
        for n in output_names:
            if n in grouped:
                continue
            c = compare(got[n], host[n], atol, rtol)
            outs[n] = c
            ok = ok and c["ok"]
            if c["max_abs"] is not None:
                worst_abs = max(worst_abs, c["max_abs"])
                worst_rel = max(worst_rel, c["max_rel"])
        for group, fields in (detections or {}).items():
            c = compare_detections({f: got[n] for f, n in fields.items()}, {f: host[n] for f, n in fields.items()},
                                   atol, rtol)
            outs[group] = {**c, "detection_set": True}
            ok = ok and c["ok"]
        runs.append({"sizes": dict(env), "outputs": outs})
    return {"provider": sess.providers[0], "atol": atol, "rtol": rtol, "runs": runs,
            "max_abs": worst_abs, "max_rel": worst_rel, "passed": ok}


def _sizes(env: Mapping[str, int]) -> str:
    return ", ".join(f"{k}={v}" for k, v in env.items()) or "fixed sizes"


def _failure_text(result: dict) -> str:
    lines = [f"the exported model does not match torch (atol {result['atol']:g}, rtol {result['rtol']:g}):"]
    for run in result["runs"]:
        for n, c in run["outputs"].items():
            if c["ok"]:
                continue
            if c.get("detection_set"):
                lines.append(f"  detections {n} at {_sizes(run['sizes'])}: {c['matched']} of {c['detections']} "
                             "matched (same label, box and score within tolerance)" + (f" ({c['reason']})" if
                                                                                      c.get("reason") else ""))
            elif c["max_abs"] is None:
                lines.append(f"  {n} at {_sizes(run['sizes'])}: shape {c['onnx_shape']} in onnxruntime, "
                             f"{c['shape']} in torch")
            else:
                lines.append(f"  {n} at {_sizes(run['sizes'])}: max abs diff {c['max_abs']:.3g}, "
                             f"max rel diff {c['max_rel']:.3g}")
    return "\n".join(lines)


# ---- the export ----------------------------------------------------------------------------


def export(pipe_or_model, path: Union[str, os.PathLike], *, weights=None,
           fp16: bool = False, static: bool = False, opset: Optional[int] = None, verify: bool = True,
           seed: Optional[int] = None, pipeline=None, atol: Optional[float] = None, rtol: Optional[float] = None,
           external_data_threshold: int = EXTERNAL_DATA_THRESHOLD,
           progress: Optional[Callable[[str], None]] = None) -> dict:
    """Export a `Pipeline` (built with `seed`) or a built `CompiledPipeline` (whose `pipeline`
    gives the input types; `pipeline=` overrides it) to ONNX at `path`; returns the report.
    `weights` (a path or a `composer.weights.WeightsSource`) is loaded first, in place of the
    spec's own `weights:`. Raises `ExportError` (exit code 1) and leaves no file at `path`
    when the export or its verification fails."""
    from .pipeline import Pipeline

    say = progress or (lambda msg: None)
    t_start = time.perf_counter()
    path = Path(path)
    if isinstance(pipe_or_model, Pipeline):
        pipe = pipe_or_model
        model = pipe.build(seed=seed, spec_weights=weights is None)
    elif isinstance(pipe_or_model, nn.Module):
        model = pipe_or_model
        pipe = pipeline or getattr(model, "pipeline", None)
        if pipe is None:
            raise ExportError("exporting a built model needs its pipeline for the input types: "
                              "export(model, path, pipeline=pipe), or export(pipe, path)")
    else:
        raise ExportError(f"export() takes a Pipeline or a built model, not a {type(pipe_or_model).__name__}")
    name = pipe.name
    _prepare_target(path)

    weights_report = model.weights_report.to_dict() if getattr(model, "weights_report", None) else None
    if weights is not None:
        from .weights import load_weights
        weights_report = load_weights(model, weights).to_dict()
        say(f"weights: {weights_report['strategy']} mapping, {weights_report['loaded']} tensors")

    specs = specs_from_pipeline(pipe)
    for n, s in specs.items():
        if s.shape is None or s.dtype not in ("float32", "float16", "bfloat16", "float64", "int64", "int32",
                                              "uint8", "bool"):
            raise ExportError(f"input `{n}` ({s.kind}) is not a tensor with a declared shape, so it cannot be an ONNX "
                              "input; pre-processing such as tokenisation runs before the exported tensor core")
    plans = plan_dims(pipe, specs, static)
    trace_env = {n: p.trace for n, p in plans.items()}
    input_names = list(model.input_names or specs)
    output_names = list(model.output_names or pipe.resolved.outputs)
    clash = [n for n in output_names if n in input_names]
    if clash:
        raise ExportError(f"pipeline `{name}`: output `{clash[0]}` has the name of an input; ONNX names every "
                          "value once, so rename the output (or the input) in the spec")

    was_training = model.training
    model.eval()
    try:
        device = next((p.device for p in model.parameters()), torch.device("cpu"))
        example = {k: v.to(device) for k, v in random_inputs(specs, trace_env, seed=0).items()}
        try:
            with torch.no_grad():
                result = model(**example)
        except Exception as exc:
            raise ExportError(f"pipeline `{name}` failed to run in torch at {_sizes(trace_env)}: {_short(exc)}") from None
        _check_outputs(result, output_names, name)

        target_model = model
        if fp16:
            target_model = copy.deepcopy(model).half()
        view = _export_view(target_model, input_names, output_names, fp16)
        args = tuple(example[n] for n in input_names)

        dynamic: dict[str, dict[int, str]] = {}
        if not static:
            for n in input_names:
                axes = {}
                for axis, d in enumerate(specs[n].shape):
                    dn = _dynamic_name(d)
                    if dn is not None:
                        axes[axis] = dn
                dynamic[n] = axes

        legacy = _legacy_blocks(pipe)
        exporter = "legacy" if legacy else "dynamo"
        say(f"exporting with the {exporter} exporter")
        t0 = time.perf_counter()
        proto = _run_exporter(view, args, input_names, output_names, dynamic, opset, legacy, name, path)
        export_s = time.perf_counter() - t0

        _clean(proto)
        _unique_values(proto)
        _fold_weights(proto)
        _double_size_math(proto)
        _check_dynamic(proto, dynamic, name)
        _name_output_dims(proto, pipe, output_names)
        _set_metadata(proto, _metadata(pipe, specs, seed, fp16, static))
        opset_used = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), None)

        external = _initializer_bytes(proto) > external_data_threshold
        holder = None
        try:
            tmp_model, data_name, holder = _write_temp(proto, path, external)
            del proto
            say("checking with onnx.checker")
            _checker(tmp_model, path)
            verification = None
            t1 = time.perf_counter()
            if verify:
                configs = [{n: p.trace for n, p in plans.items()}] if static else size_configs(plans)
                a0, r0 = TOLERANCES["fp16" if fp16 else "fp32"]
                say("verifying against torch in onnxruntime at " + "; ".join(_sizes(c) for c in configs))
                from ._match import detection_groups
                verification = verify_onnx(tmp_model, model, specs, configs, output_names,
                                           a0 if atol is None else atol, r0 if rtol is None else rtol,
                                           detections=detection_groups(pipe, output_names))
                if not verification["passed"]:
                    raise ExportError(_failure_text(verification) + f"\n  no file was written at {path}")
            verify_s = time.perf_counter() - t1
            import onnx
            graph = onnx.load(str(tmp_model), load_external_data=False).graph
            inputs_info = [{"name": v.name, "dtype": _elem_name(v), "shape": _value_dims(v)} for v in graph.input]
            outputs_info = [{"name": v.name, "dtype": _elem_name(v), "shape": _value_dims(v)} for v in graph.output]
            digest = _sha256(tmp_model)
            size = tmp_model.stat().st_size + ((holder / data_name).stat().st_size if data_name else 0)
            _commit(tmp_model, data_name, holder, path)
            holder = None
        finally:
            _discard(holder)
    finally:
        model.train(was_training)

    return {
        "pipeline": name,
        "path": str(path),
        "exporter": exporter,
        "exporter_reason": "; ".join(f"{n}: {r}" for n, r in legacy) or None,
        "opset": opset_used,
        "fp16": fp16,
        "static": static,
        "seed": pipe.resolved.seed if seed is None else seed,
        "weights": weights_report,
        "inputs": inputs_info,
        "outputs": outputs_info,
        "dims": {n: {"trace": p.trace, "verified": p.sizes, "multiple_of": p.multiple_of} for n, p in plans.items()},
        "checker": "full",
        "verification": verification,
        "file_bytes": size,
        "external_data": data_name,
        "sha256": digest,
        "export_seconds": round(export_s, 3),
        "verify_seconds": round(verify_s, 3),
        "total_seconds": round(time.perf_counter() - t_start, 3),
    }


def _sha256(p: Path) -> str:
    h = hashlib.sha256()
    with open(p, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _metadata(pipe, specs: Mapping[str, InputSpec], seed, fp16: bool, static: bool) -> dict[str, str]:
    from . import __version__
    r = pipe.resolved
    inputs = {}
    for n, s in specs.items():
        info: dict[str, Any] = {"kind": s.kind}
        if s.preprocess is not None:
            info["preprocess"] = s.preprocess.model_dump(mode="json")
        if s.dtype not in ("float32", "float16", "bfloat16", "float64", "bool"):
            info["int_high"] = s.int_high
        if s.columns:                  # a series input: `composer run model.onnx` reads its CSV columns
            info["columns"] = list(s.columns)
        if s.ignore_columns:
            info["ignore_columns"] = list(s.ignore_columns)
        if s.group:                    # a graph input's field: `composer run model.onnx` reads graph files
            info["group"], info["field"] = s.group, s.field
        inputs[n] = info
    outputs = {}
    for n, ref in r.outputs.items():   # what each output is: `composer run model.onnx` reads detections by kind
        t = pipe.graph.output_type(ref)
        outputs[n] = t.kind if t is not None else "tensor"
    meta = {
        "composer.version": __version__,
        "composer.pipeline": r.name,
        "composer.seed": str(r.seed if seed is None else seed),
        "composer.inputs": json.dumps(inputs, sort_keys=True),
        "composer.outputs": json.dumps(outputs),
        "composer.multiples": json.dumps({n: d.multiple_of for n, d in r.dims.items()}, sort_keys=True),
        "composer.precision": "fp16" if fp16 else "fp32",
        "composer.static": "true" if static else "false",
    }
    if r.labels is not None:
        meta["composer.labels"] = json.dumps(list(r.labels.names), ensure_ascii=False)
    return meta


def _run_exporter(view, args, input_names, output_names, dynamic, opset, legacy, name: str, path: Path):
    import contextlib
    import io
    import warnings

    import onnx

    buf = io.StringIO()
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(buf):
            warnings.simplefilter("ignore")
            if not legacy:
                from ._onnx_ops import TRANSLATIONS
                shapes = {n: dynamic.get(n, {}) for n in input_names} if dynamic else None
                program = torch.onnx.export(view, args, dynamo=True, input_names=input_names,
                                            output_names=output_names, dynamic_shapes=shapes, opset_version=opset,
                                            optimize=True, verbose=False, report=False,
                                            custom_translation_table=dict(TRANSLATIONS) or None)
                return program.model_proto
            # legacy TorchScript exporter: only for blocks that declare they need it
            f = io.BytesIO()
            torch.onnx.export(view, args, f, dynamo=False, input_names=input_names, output_names=output_names,
                              dynamic_axes=dynamic or None, opset_version=opset or 17, do_constant_folding=True)
            return onnx.load_from_string(f.getvalue())
    except ComposerError:
        raise
    except Exception as exc:
        exporter = "legacy" if legacy else "dynamo"
        raise ExportError(f"pipeline `{name}`: the {exporter} ONNX exporter failed: {_short(exc)}\n"
                          f"  no file was written at {path}") from None


def _unique_values(proto) -> None:
    """Keep the graph in SSA form when an output's name is also the exporter's name for an inner
    value (an output `embedding` beside the `embedding` lookup of a text model): the inner value
    is renamed, and the nodes that read it follow."""
    outputs = {o.name for o in proto.graph.output}
    producers: dict[str, int] = {}
    for node in proto.graph.node:
        for o in node.output:
            if o in outputs:
                producers[o] = producers.get(o, 0) + 1
    if all(n == 1 for n in producers.values()):
        return
    seen: dict[str, int] = {}
    alias: dict[str, str] = {}
    taken = {v for node in proto.graph.node for v in (*node.input, *node.output)}
    for node in proto.graph.node:
        for i, name in enumerate(node.input):
            if name in alias:
                node.input[i] = alias[name]
        for i, name in enumerate(node.output):
            if producers.get(name, 0) < 2:
                continue
            seen[name] = seen.get(name, 0) + 1
            if seen[name] == producers[name]:      # the last producer is the graph's output
                alias.pop(name, None)
                continue
            fresh, k = f"{name}__inner", 1
            while fresh in taken:
                k += 1
                fresh = f"{name}__inner{k}"
            taken.add(fresh)
            node.output[i] = fresh
            alias[name] = fresh
    kept = [vi for vi in proto.graph.value_info if producers.get(vi.name, 0) < 2]   # hints only; outputs keep theirs
    del proto.graph.value_info[:]
    proto.graph.value_info.extend(kept)


def _name_output_dims(proto, pipe, output_names) -> None:
    """Output dims that are a bare symbol of the inferred type keep its name (a graph pool's rows
    `G`, which the exporter derives from the data and would call `u0 + 1`)."""
    graph = pipe.graph
    for vi in proto.graph.output:
        ref = pipe.resolved.outputs.get(vi.name)
        t = graph.output_type(ref) if ref is not None and vi.name in output_names else None
        if t is None or t.shape is None or len(t.shape) != len(vi.type.tensor_type.shape.dim):
            continue
        for d, want in zip(vi.type.tensor_type.shape.dim, t.shape):
            dn = _dynamic_name(want)
            if dn is not None and dn.isidentifier() and d.HasField("dim_param"):
                d.dim_param = dn


def _check_dynamic(proto, dynamic: Mapping[str, Mapping[int, str]], name: str) -> None:
    """Every dim asked to be dynamic must be a named dim of the graph input."""
    by_name = {v.name: v for v in proto.graph.input}
    for n, axes in dynamic.items():
        vi = by_name.get(n)
        if vi is None:
            raise ExportError(f"pipeline `{name}`: the exported graph has no input `{n}`")
        dims = vi.type.tensor_type.shape.dim
        for axis, dname in axes.items():
            d = dims[axis]
            if d.HasField("dim_value"):
                raise ExportError(
                    f"pipeline `{name}`: dim `{dname}` of input `{n}` (axis {axis}) was fixed to {d.dim_value} by "
                    "the exporter: something in the forward depends on its exact size\n"
                    "  hint: export with --static, or find the block that specialises it")
            if d.dim_param != dname:
                d.dim_param = dname


def _checker(model_path: Path, target: Path) -> None:
    import onnx
    try:
        onnx.checker.check_model(str(model_path), full_check=True)
    except Exception as exc:
        raise ExportError(f"onnx.checker rejected the exported model: {_short(exc, 6)}\n"
                          f"  no file was written at {target}") from None

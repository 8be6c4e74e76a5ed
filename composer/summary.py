"""Per-block figures for summaries and diagrams: output types, parameters and MACs.

MACs come from `torch.utils.flop_counter` on the meta device at example sizes, so no
tensor is ever allocated. Pipelines with data-dependent steps (NMS, `nonzero`) cannot run on
the meta device; those up to `REAL_RUN_PARAMS` parameters are counted in one real CPU run
instead (never beyond the pipeline's memory limit), larger ones show no MACs. Example sizes are
each dim's `example`, else its first `sizes` entry, else 1 for `B` and 64 for others (rounded up to
`multiple_of`). A decoder (a pipeline with a `kv_cache` input) is also given MACs per token: the
MACs at the example sizes over its B x T new tokens, with P tokens in the cache.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from .dims import Dim, evaluate
from .graph import Graph, param_memory_error
from .types import PortType

_TORCH_DTYPES = {
    "float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16, "float64": torch.float64,
    "int64": torch.int64, "int32": torch.int32, "uint8": torch.uint8, "bool": torch.bool,
}


def torch_dtype(name: str) -> torch.dtype:
    return _TORCH_DTYPES[name]


def example_env(graph: Graph) -> dict[str, int]:
    """A concrete size for every symbolic dim of the pipeline's inputs."""
    from .stages import core_inputs
    r = graph.resolved
    env: dict[str, int] = {}
    types = [i.type for i in r.inputs.values()] + [ci.type for ci in core_inputs(graph).values()]
    for t in types:
        if t is None or t.shape is None:
            continue
        for d in t.shape:
            if isinstance(d, Dim):
                for s in d.symbols():
                    if s in env:
                        continue
                    decl = r.dims.get(s)
                    m = decl.multiple_of if decl else 1
                    if decl and decl.example:
                        v = decl.example
                    elif decl and decl.sizes:
                        v = decl.sizes[0]
                    else:
                        v = 1 if s == "B" else 64
                    env[s] = -(-v // m) * m
    for t in types:     # a batch of graphs: how many graphs its random example holds
        if t is not None and t.kind == "graph" and isinstance(t.get("graphs"), Dim):
            from .graph_data import GRAPH_COUNT, graph_count
            n = t.field("x").shape[0]
            env.setdefault(GRAPH_COUNT, graph_count(evaluate(n, env) if isinstance(n, Dim) else n))
    return env


def example_inputs(graph: Graph, env: Optional[dict[str, int]] = None, device: str = "cpu",
                   generator: Optional[torch.Generator] = None) -> dict[str, torch.Tensor]:
    """Seeded example tensors for every input of the tensor core at the sizes in `env` (ids
    below what their consumers take; masks with padding)."""
    from .inputs import _int_high, random_graph_input, padding_mask, specs_from_graph
    from .stages import core_inputs
    env = env or example_env(graph)
    generator = generator or torch.Generator().manual_seed(0)
    out = {}
    for name, ci in core_inputs(graph).items():
        t = ci.type
        if ci.field is not None and device != "meta":     # a graph input: a valid random graph
            if name not in out:
                out.update(random_graph_input(specs_from_graph(graph), ci.node, env, generator))
            continue
        shape = [evaluate(d, env) for d in (t.shape or ())]
        dtype = torch_dtype(t.dtype)
        if device == "meta":
            out[name] = torch.empty(shape, dtype=dtype, device="meta")
        elif t.kind == "mask" and len(shape) == 2:
            out[name] = padding_mask(tuple(shape), generator).to(dtype)
        elif dtype.is_floating_point:
            out[name] = torch.randn(shape, dtype=dtype, generator=generator)
        elif dtype == torch.bool:
            out[name] = torch.ones(shape, dtype=dtype)
        else:
            high = t.get("vocab") or _int_high(graph, ci.node)
            out[name] = torch.randint(0, max(1, high), shape, dtype=dtype, generator=generator)
    return out


REAL_RUN_PARAMS = 200_000_000


def _count(graph: Graph, env: Optional[dict[str, int]], device: str) -> tuple[str, dict, list[tuple[str, str]]]:
    """Run the model once under a flop counter: its class name, the counts by module path and, on the
    meta device, the layers whose run was reused (`_RepeatedLayers`)."""
    from .compile import compile_graph

    model = compile_graph(graph, device=device if device == "meta" else None)
    inputs = example_inputs(graph, env, device=device, generator=torch.Generator().manual_seed(0))
    counter = FlopCounterMode(display=False)
    cls_name = type(model).__name__
    model.eval().requires_grad_(False)   # a model built to be counted: the counter's module tracker hooks no grads
    repeats = _RepeatedLayers(model, cls_name) if device == "meta" else None
    try:
        with counter, torch.no_grad():
            model(**inputs)
    finally:
        if repeats is not None:
            repeats.restore()
    return cls_name, counter.get_flop_counts(), repeats.reused if repeats is not None else []


class _Unkeyed(Exception):
    pass


def _key(value) -> object:
    """What a layer's meta run depends on in an argument: shapes and dtypes of tensors, plain values."""
    if isinstance(value, torch.Tensor):
        return ("tensor", tuple(value.shape), value.dtype, value.device.type)
    if isinstance(value, (list, tuple)):
        return (type(value).__name__, tuple(_key(v) for v in value))
    if isinstance(value, dict):
        return ("dict", tuple((k, _key(v)) for k, v in value.items()))
    if value is None or isinstance(value, (bool, int, float, str, torch.dtype)):
        return value
    raise _Unkeyed


def _plain(value) -> object:
    if value is None or isinstance(value, (bool, int, float, str, torch.dtype)):
        return value
    if isinstance(value, (list, tuple)):
        return (type(value).__name__, tuple(_plain(v) for v in value))
    return ("object", id(value))


def _layer_key(module: nn.Module) -> object:
    """A layer's structure: every submodule's type, mode, parameter and buffer shapes, and its own
    attributes (plain values by value, other objects by identity)."""
    parts = []
    for name, sub in module.named_modules():
        state = tuple((n, tuple(t.shape), t.dtype) for n, t in
                      list(sub.named_parameters(recurse=False)) + list(sub.named_buffers(recurse=False)))
        attrs = tuple(sorted((k, _plain(v)) for k, v in vars(sub).items() if not k.startswith("_")))
        parts.append((name, type(sub), sub.training, state, attrs))
    return tuple(parts)


class _RepeatedLayers:
    """On the meta device a layer's outputs and MACs depend only on its structure and the shapes of
    its inputs. The layers of a stack (the children of an `nn.ModuleList` or `nn.Sequential`) that
    equal one already run on inputs of the same shapes are not run again: they return its outputs
    (meta tensors hold no data), and `reused` records (layer, the layer it repeats) by the counter's
    module paths, so its MACs are counted once per layer. A 96-layer decoder runs one layer."""

    def __init__(self, model: nn.Module, root: str):
        self.reused: list[tuple[str, str]] = []
        self._patched: list[nn.Module] = []
        seen: dict = {}
        for path, container in model.named_modules():
            if not isinstance(container, (nn.ModuleList, nn.Sequential)):
                continue
            for name, layer in container.named_children():
                if "forward" in vars(layer):
                    continue
                fqn = ".".join(x for x in (root, path, name) if x)
                layer.forward = self._wrap(layer.forward, _layer_key(layer), fqn, seen)
                self._patched.append(layer)

    def _wrap(self, forward, layer_key, fqn: str, seen: dict):
        def run(*args, **kwargs):
            try:
                key = (layer_key, _key(args), _key(dict(sorted(kwargs.items()))))
            except _Unkeyed:
                return forward(*args, **kwargs)
            if key in seen:
                first, out = seen[key]
                self.reused.append((fqn, first))
                return out
            out = forward(*args, **kwargs)
            seen[key] = (fqn, out)
            return out
        return run

    def restore(self) -> None:
        for layer in self._patched:
            del layer.forward


def _totals(counts: dict, reused: list[tuple[str, str]]) -> Callable[[str], int]:
    """FLOPs of a module path: its own count plus those of the reused layers under it (each as
    much as the layer it repeats, itself with any reused layers inside)."""
    extra: list[tuple[str, int]] = []

    def total(fqn: str) -> int:
        under = fqn + "."
        return sum(counts.get(fqn, {}).values()) + sum(f for t, f in extra if t.startswith(under))

    for target, source in reused:
        extra.append((target, total(source)))
    return total


def macs_per_block(graph: Graph, env: Optional[dict[str, int]] = None) -> dict[str, int]:
    """Multiply-accumulates of each block at example sizes, counted on the meta device (or in one
    real CPU run where a data-dependent step cannot run on it; {} when neither can)."""
    try:
        cls_name, counts, reused = _count(graph, env, "meta")
    except Exception:
        if graph.total_params() > REAL_RUN_PARAMS or param_memory_error(graph) is not None:
            return {}
        try:
            cls_name, counts, reused = _count(graph, env, "cpu")
        except Exception:
            return {}
    total = _totals(counts, reused)
    return {name: total(f"{cls_name}.{name.replace('/', '.')}") // 2 for name in graph.order}


@dataclass
class Row:
    block: str
    type: str
    outputs: dict[str, PortType]
    params: int
    macs: Optional[int]
    frozen: bool = False


def rows(graph: Graph, with_macs: bool = True) -> list[Row]:
    macs = macs_per_block(graph) if with_macs and not graph.errors else {}
    out = []
    for name in graph.order:
        node = graph.nodes[name]
        if type(node.block).passthrough:
            continue
        out.append(Row(name, node.type, graph.types.get(name, {}), graph.params.get(name, 0), macs.get(name),
                       node.frozen))
    return out


# bytes per parameter of the dtypes a summary quotes parameter memory in
PARAM_DTYPES = {"float32": 4, "float16/bfloat16": 2, "int8": 1}


def param_memory(params: int) -> dict[str, int]:
    """Bytes the parameters take in each dtype of `PARAM_DTYPES`."""
    return {name: params * size for name, size in PARAM_DTYPES.items()}


def human_bytes(n: int) -> str:
    for unit, size in (("TiB", 1024**4), ("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n} B"


def memory_text(params: int) -> str:
    """`float32 650.5 GiB · float16/bfloat16 325.2 GiB · int8 162.6 GiB`."""
    return " · ".join(f"{k} {human_bytes(v)}" for k, v in param_memory(params).items())


@dataclass
class PerToken:
    """MACs of one forward pass over its new tokens: `tokens` = B x T at the example sizes, `cached` = P."""

    macs: int
    tokens: int
    cached: Optional[int]

    def text(self, env: dict[str, int]) -> str:
        """`179.40G (at B=1, T=1, with P=2047 tokens cached)`."""
        at = ", ".join(f"{k}={env[k]}" for k in ("B", "T") if k in env)
        cache = f", with P={self.cached} tokens cached" if self.cached is not None else ""
        return f"{human(self.macs)} (at {at}{cache})"


def macs_per_token(graph: Graph, table: list[Row], env: dict[str, int]) -> Optional[PerToken]:
    """For a decoder (a `kv_cache` input) with a sequence dim `T`: the example's MACs over its B x T
    tokens; None for other pipelines or without MACs."""
    decoder = any(i.type is not None and i.type.kind == "kv_cache" for i in graph.resolved.inputs.values())
    macs = [r.macs for r in table if r.macs is not None]
    if not decoder or "T" not in env or not macs:
        return None
    tokens = env["T"] * env.get("B", 1)
    return PerToken(sum(macs) // tokens, tokens, env.get("P"))


def human_count(n: int) -> str:
    """`174.6B`, `124.4M`: a parameter count in short."""
    for unit, size in (("B", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= size:
            return f"{n / size:.1f}{unit}"
    return str(n)


def human(n: Optional[int]) -> str:
    if n is None:
        return "-"
    for unit, size in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= size:
            return f"{n / size:.2f}{unit}"
    return str(n)


def shapes_text(outputs: dict[str, PortType]) -> str:
    if len(outputs) == 1:
        return str(next(iter(outputs.values())))
    return "; ".join(f"{p}: {t}" for p, t in outputs.items())


def markdown(graph: Graph, table: list[Row], env: dict[str, int], svg_name: Optional[str] = None) -> str:
    r = graph.resolved
    lines = [f"# {r.name}", ""]
    if r.description:
        lines += [r.description, ""]
    if svg_name:
        lines += [f"![{r.name}]({svg_name})", ""]
    lines += ["## Inputs", "", "| input | type |", "|---|---|"]
    for name, inp in r.inputs.items():
        lines.append(f"| {name} | `{inp.type}` |")
    lines += ["", "## Outputs", "", "| output | from | type |", "|---|---|---|"]
    for name, ref in r.outputs.items():
        lines.append(f"| {name} | `{ref}` | `{graph.output_type(ref)}` |")
    sizes = ", ".join(f"{k}={v}" for k, v in env.items())
    lines += ["", f"## Blocks (MACs at {sizes})", "", "| block | type | output | params | MACs |", "|---|---|---|---:|---:|"]
    for row in table:
        name = row.block + (" (frozen)" if row.frozen else "")
        lines.append(f"| {name} | {row.type} | `{shapes_text(row.outputs)}` | {row.params:,} | {human(row.macs)} |")
    total_macs = sum(r.macs or 0 for r in table)
    frozen = sum(r.params for r in table if r.frozen)
    lines += ["", f"**Total:** {graph.total_params():,} parameters ({frozen:,} frozen), {human(total_macs)} MACs.", "",
              f"**Parameter memory:** {memory_text(graph.total_params())}.", ""]
    per_token = macs_per_token(graph, table, env)
    if per_token is not None:
        lines += [f"**MACs per token:** {per_token.text(env)}.", ""]
    return "\n".join(lines)

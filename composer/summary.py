"""Per-block figures for summaries and diagrams: output types, parameters and MACs.

MACs come from `torch.utils.flop_counter` on the meta device at example sizes, so no
tensor is ever allocated. Pipelines with data-dependent steps (NMS, `nonzero`) cannot run on
the meta device; those up to `REAL_RUN_PARAMS` parameters are counted in one real CPU run
instead, larger ones show no MACs. Example sizes are each dim's `example`, else its first `sizes`
entry, else 1 for `B` and 64 for others (rounded up to `multiple_of`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
from torch.utils.flop_counter import FlopCounterMode

from .dims import Dim, evaluate
from .graph import Graph
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


def _count(graph: Graph, env: Optional[dict[str, int]], device: str) -> tuple[str, dict]:
    from .compile import compile_graph

    model = compile_graph(graph, device=device if device == "meta" else None)
    inputs = example_inputs(graph, env, device=device, generator=torch.Generator().manual_seed(0))
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model.eval()(**inputs)
    return type(model).__name__, counter.get_flop_counts()


def macs_per_block(graph: Graph, env: Optional[dict[str, int]] = None) -> dict[str, int]:
    """Multiply-accumulates of each block at example sizes, counted on the meta device (or in one
    real CPU run where a data-dependent step cannot run on it; {} when neither can)."""
    try:
        cls_name, counts = _count(graph, env, "meta")
    except Exception:
        if graph.total_params() > REAL_RUN_PARAMS:
            return {}
        try:
            cls_name, counts = _count(graph, env, "cpu")
        except Exception:
            return {}
    out = {}
    for name in graph.order:
        fqn = f"{cls_name}.{name.replace('/', '.')}"
        out[name] = sum(counts.get(fqn, {}).values()) // 2
    return out


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
    lines += ["", f"**Total:** {graph.total_params():,} parameters ({frozen:,} frozen), {human(total_macs)} MACs.", ""]
    return "\n".join(lines)

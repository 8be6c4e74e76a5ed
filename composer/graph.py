"""The typed DAG: references checked, cycles found, port types inferred, params estimated.

`analyze` never raises for spec problems; it returns a `Graph` whose `diagnostics` hold them,
so a diagram can still be drawn from an invalid spec. Nodes whose inputs are unknown (an
upstream error) are not checked and not reported again; `Graph.failed` holds both the nodes
with an error of their own and those left unchecked (they have no entry in `types`).
"""

from __future__ import annotations

import heapq
import zlib
from dataclasses import dataclass, field
from typing import Optional, Union

import networkx as nx
import torch

from . import errors as E
from .errors import Diagnostic, Diagnostics, did_you_mean
from .labels import class_count_diagnostics
from .registry import load_blocks
from .resolve import Node, Resolved
from .spec import DEFAULT_MAX_PARAM_BYTES, Ref
from .types import InferError, PortType, is_a

DTYPE_BYTES = 4


@dataclass
class Graph:
    """A resolved pipeline with its DAG, inferred types and parameter counts."""

    resolved: Resolved
    dag: nx.MultiDiGraph
    order: list[str]                                   # blocks in topological order
    types: dict[str, dict[str, PortType]]              # node or input -> output port -> type
    in_types: dict[str, dict[str, Union[PortType, list[PortType]]]]
    params: dict[str, int]
    diagnostics: list[Diagnostic] = field(default_factory=list)
    failed: set[str] = field(default_factory=set)     # nodes with an error, or unchecked after one
    max_param_bytes: int = DEFAULT_MAX_PARAM_BYTES     # the limit a real build checks (`param_memory_error`)

    @property
    def errors(self) -> list[Diagnostic]:
        return [d for d in self.diagnostics if d.severity == "error"]

    @property
    def warnings(self) -> list[Diagnostic]:
        return [d for d in self.diagnostics if d.severity == "warning"]

    @property
    def nodes(self) -> dict[str, Node]:
        return self.resolved.nodes

    def output_type(self, ref: Ref) -> Optional[PortType]:
        """The type a reference reads, or None where it cannot be resolved (never reports)."""
        return _lookup_type(ref, self.types, self.nodes, Diagnostics())

    def port_of(self, ref: Ref) -> Optional[str]:
        """The output port a reference reads (its own, or the only one)."""
        outs = self.types.get(ref.node)
        if ref.port is not None or not outs:
            return ref.port
        return next(iter(outs)) if len(outs) == 1 else None

    def total_params(self) -> int:
        return sum(self.params.values())


def node_seed(seed: int, name: str) -> int:
    """Each block's init seed depends only on the pipeline seed and its own name."""
    return zlib.crc32(f"{seed}:{name}".encode()) & 0x7FFFFFFF


def _refs(binding) -> list[Ref]:
    return binding if isinstance(binding, list) else [binding]


def analyze(resolved: Resolved, *, max_param_bytes: Optional[int] = None) -> Graph:
    diags = Diagnostics()
    diags.extend(resolved.diagnostics)
    nodes = resolved.nodes
    registry = load_blocks()
    dag = nx.MultiDiGraph()
    for name, inp in resolved.inputs.items():
        dag.add_node(name, role="input")
    for name, node in nodes.items():
        dag.add_node(name, role="block")
    for name, node in nodes.items():
        for port, binding in node.bindings.items():
            for i, ref in enumerate(_refs(binding)):
                if ref.node not in dag:
                    diags.add(E.UNKNOWN_REF, f"reference to unknown block `{ref.node}`", loc=ref.loc, path=ref.path,
                              hint=did_you_mean(ref.node, list(nodes) + list(resolved.inputs)))
                    node.bad_bindings = True
                    continue
                dag.add_edge(ref.node, name, src_port=ref.port, dst_port=port, index=i, ref=ref)
    for oname, ref in resolved.outputs.items():
        if ref.node not in dag:
            diags.add(E.UNKNOWN_OUTPUT_REF, f"output `{oname}` refers to unknown block `{ref.node}`", loc=ref.loc,
                      path=ref.path, hint=did_you_mean(ref.node, list(nodes) + list(resolved.inputs)))

    # cycles: report each strongly connected component once, naming its blocks
    in_cycle: set[str] = set()
    for comp in nx.strongly_connected_components(dag):
        if len(comp) > 1 or any(dag.has_edge(n, n) for n in comp):
            cyc = sorted(comp, key=lambda n: list(nodes).index(n) if n in nodes else -1)
            first = nodes[cyc[0]]
            diags.add(E.CYCLE, "cycle between blocks " + " -> ".join(f"`{n}`" for n in cyc + [cyc[0]]),
                      loc=first.binding_loc(), path=first.path + ".in",
                      hint="a pipeline is a DAG: break the loop (repeat: N stacks a block N times)")
            in_cycle |= comp

    # a pre-processing block (a tokenizer) runs before the tensor core: it reads spec inputs and
    # other pre-processing blocks only
    for name, node in nodes.items():
        if node.block is None or type(node.block).stage != "pre":
            continue
        for src, _, data in dag.in_edges(name, data=True):
            other = nodes.get(src)
            if other is not None and (other.block is None or type(other.block).stage != "pre"):
                diags.add(E.BAD_BINDING, f"pre-processing block `{name}` reads `{src}`, a block of the tensor core",
                          loc=data["ref"].loc, path=data["ref"].path,
                          hint="a pre-processing stage (a tokenizer) takes spec inputs, such as a `text` input")
                node.bad_bindings = True

    order = _topological(dag, nodes, in_cycle)

    # unused blocks: nothing of theirs reaches an output
    live: set[str] = set()
    for ref in resolved.outputs.values():
        if ref.node in dag:
            live.add(ref.node)
            live |= nx.ancestors(dag, ref.node)
    for name, node in nodes.items():
        if name not in live and node.type != "_port" and not (node.group and node.group[1] != node.group[2] - 1):
            diags.add(E.UNUSED_BLOCK, f"block `{name}` does not reach any output", loc=node.loc, path=node.path,
                      severity="warning", hint="remove it, or use it in `outputs:`")

    types: dict[str, dict[str, PortType]] = {}
    in_types: dict[str, dict] = {}
    for name, inp in resolved.inputs.items():
        if inp.type is not None:
            types[name] = {"out": inp.type}
    failed: set[str] = set(in_cycle)
    params: dict[str, int] = {}
    for name in order:
        node = nodes[name]
        if node.block is None or node.bad_bindings:
            failed.add(name)
            continue
        cls = registry[node.type]
        ins: dict = {}
        ok = True
        for port, binding in node.bindings.items():
            spec_port = cls.inputs.get(port)
            got = []
            for ref in _refs(binding):
                t = _lookup_type(ref, types, nodes, diags)
                if t is None:
                    ok = False
                    break
                if spec_port is not None and not any(is_a(t.kind, k) for k in spec_port.kinds):
                    diags.add(E.KIND_MISMATCH,
                              f"`{ref}` ({t.kind}) cannot feed port `{port}` of `{name}` ({node.type})",
                              loc=ref.loc, path=ref.path, expected=" or ".join(spec_port.kinds), found=str(t),
                              hint=_kind_hint(t.kind, spec_port.kinds))
                    ok = False
                    failed.add(name)
                    break
                got.append(t)
            if not ok:
                break
            ins[port] = got if (spec_port is not None and spec_port.variadic) else got[0]
        if not ok:
            failed.add(name)
            continue
        for port, p in cls.inputs.items():
            if port not in ins and p.optional:
                ins[port] = None
        in_types[name] = ins
        try:
            out = node.block.infer(**ins)
        except InferError as exc:
            loc = node.param_loc(exc.param) if exc.param else node.binding_loc(exc.port)
            path = node.path + (f".{exc.param}" if exc.param else ".in")
            diags.add(exc.code, f"`{name}` ({node.type}): {exc.message}", loc=loc, path=path,
                      expected=exc.expected, found=exc.found, hint=exc.hint)
            failed.add(name)
            continue
        except Exception as exc:  # a block's own bug must still not escape as a traceback
            diags.add(E.TYPE_ERROR, f"`{name}` ({node.type}): type inference failed: {type(exc).__name__}: {exc}",
                      loc=node.loc, path=node.path)
            failed.add(name)
            continue
        types[name] = out if isinstance(out, dict) else {"out": out}
        params[name] = count_params(node, ins)

    output_types = {}
    for oname, ref in resolved.outputs.items():
        if ref.node in types:
            output_types[oname] = _lookup_type(ref, types, nodes, diags)
    diags.extend(class_count_diagnostics(resolved.labels, output_types))

    return Graph(resolved, dag, order, types, in_types, params, diags.items, failed,
                 max_param_bytes=max_param_bytes or resolved.max_param_bytes)


def param_memory_error(graph: Graph) -> Optional[Diagnostic]:
    """The E304 error when the float32 parameters would not fit `graph.max_param_bytes`, else None.

    Analysis works at any size (nothing is allocated there); this check is made where weights
    would be: `Pipeline.build` on a real device, and so `composer build`, `export`, `run`, `train`.
    It is located at the largest block."""
    limit, params = graph.max_param_bytes, graph.params
    total = sum(params.values())
    if total * DTYPE_BYTES <= limit:
        return None
    biggest = sorted(params.items(), key=lambda kv: -kv[1])[:3]
    top = graph.nodes[biggest[0][0]]
    return Diagnostic(E.PARAM_MEMORY, "the parameters of this pipeline would not fit the memory limit",
                      loc=top.loc, path=top.path,
                      expected=f"at most {_gib(limit)} of float32 parameters",
                      found=f"{total:,} parameters = {_gib(total * DTYPE_BYTES)} (largest: "
                            + ", ".join(f"{n} {c:,}" for n, c in biggest) + ")",
                      hint="shrink the largest blocks, or raise `limits.max_param_bytes` (`--max-param-memory`); "
                           "`composer build --no-weights` summarises it without allocating")


def _gib(n: int) -> str:
    return f"{n / 1024**3:.1f} GiB"


def _topological(dag: nx.MultiDiGraph, nodes: dict, skip: set[str]) -> list[str]:
    """Blocks in dependency order, ties broken by the order they are written in."""
    index = {n: i for i, n in enumerate(nodes)}
    indegree: dict[str, int] = {}
    succ: dict[str, list[str]] = {}
    for n in dag:
        if n in skip:
            continue
        indegree.setdefault(n, 0)
        for _, m in dag.out_edges(n):
            if m in skip:
                continue
            succ.setdefault(n, []).append(m)
            indegree[m] = indegree.get(m, 0) + 1
    ready = [(index.get(n, -1), n) for n, d in indegree.items() if d == 0]
    heapq.heapify(ready)
    order = []
    while ready:
        _, n = heapq.heappop(ready)
        if n in nodes:
            order.append(n)
        for m in succ.get(n, ()):
            indegree[m] -= 1
            if indegree[m] == 0:
                heapq.heappush(ready, (index.get(m, -1), m))
    return order


def _kind_hint(found: str, accepted: tuple[str, ...]) -> Optional[str]:
    if found == "tokens":
        return "token ids go through an `embedding` block first"
    if found == "vector" and any(is_a("feature_map", k) for k in accepted):
        return "this block needs a spatial [B, C, H, W] map; connect it before pooling"
    if found in ("feature_map", "image") and "vector" in accepted:
        return "pool or flatten the map first (global_avg_pool, flatten)"
    # 1-D layouts: time-major sequences [B, T, C] and channels-first signals [B, C, T]
    if "signal" in accepted and is_a(found, "sequence"):
        return ("this block wants a channels-first signal [B, C, T] (the layout of 1-D convs and pools); "
                "insert a `transpose` block (dims: [1, 2]) to turn a [B, T, C] sequence into one")
    if "signal" in accepted and found == "tensor":
        return ("this block wants a channels-first signal [B, C, T]: declare the input `kind: signal` if it is "
                "[B, C, T] already, or insert a `transpose` block (dims: [1, 2]) if it is [B, T, C]")
    if found == "signal" and any(is_a("sequence", k) for k in accepted):
        return ("this block wants a time-major sequence [B, T, C], and a signal is channels first [B, C, T]; "
                "insert a `transpose` block (dims: [1, 2]) before it")
    return None


def _lookup_type(ref: Ref, types: dict, nodes: dict, diags: Diagnostics) -> Optional[PortType]:
    outs = types.get(ref.node)
    if outs is None:
        return None  # an upstream error, already reported
    if ref.port is None:
        if len(outs) == 1:
            return _field(ref, next(iter(outs.values())), diags)
        diags.add(E.UNKNOWN_PORT, f"`{ref.node}` has several outputs; name one", loc=ref.loc, path=ref.path,
                  expected=", ".join(f"`{ref.node}.{p}`" for p in outs), found=f"`{ref.node}`")
        return None
    if ref.port not in outs:
        what = "input" if ref.node not in nodes else f"block `{ref.node}`"
        diags.add(E.UNKNOWN_PORT, f"{what} has no output port `{ref.port}`", loc=ref.loc, path=ref.path,
                  expected=", ".join(outs), found=ref.port, hint=did_you_mean(ref.port, outs))
        return None
    return _field(ref, outs[ref.port], diags)


def _field(ref: Ref, t: PortType, diags: Diagnostics) -> Optional[PortType]:
    if ref.field is None:
        return t
    fields = dict(t.fields)
    if ref.field not in fields:
        names = ", ".join(fields) or "none: it is not a structured port"
        owner = ref.node if ref.port is None else f"{ref.node}.{ref.port}"
        diags.add(E.UNKNOWN_PORT, f"`{owner}` has no field `{ref.field}`", loc=ref.loc, path=ref.path,
                  expected=names, found=ref.field, hint=did_you_mean(ref.field, fields))
        return None
    return fields[ref.field]


def count_params(node: Node, ins: dict) -> int:
    """Parameters from types alone: the block's formula, or a build on the meta device."""
    n = node.block.param_count(**ins)
    if n is not None:
        return int(n)
    with torch.device("meta"):
        module = node.block.build(**ins)
    return sum(p.numel() for p in module.parameters())

"""Compile a typed graph to an `nn.Module` whose forward is generated Python source.

The forward calls each block's module once, in topological order, with named keyword
inputs and a dict of named outputs: no per-node lookups at run time, readable with
`print(model.code)`, and traceable by `torch.compile`, `torch.export` and the ONNX exporter.
Modules are nested by name (`backbone/layer1/0` is `model.backbone.layer1["0"]`), so state
dict keys read `backbone.layer1.0.conv1.weight`.
"""

from __future__ import annotations

import keyword
import linecache
import re
from typing import Optional

import torch
from torch import nn

from .errors import ComposerError
from .graph import Graph, node_seed
from .graph_data import graph_value
from .stages import PreStage, core_inputs
from .types import PortType


class CompiledPipeline(nn.Module):
    """Base of compiled pipelines; subclasses carry the generated `forward`."""

    code: str = ""
    pipeline_name: str = ""
    input_names: tuple[str, ...] = ()
    output_names: tuple[str, ...] = ()
    pipeline = None  # the `Pipeline` it was built from (set by `Pipeline.build`)
    weights_report = None  # how the spec's `weights:` loaded (a `composer.weights.LoadReport`), if it has one

    _pre_stage = None

    def preprocess(self, **raw):
        """Run the pre-processing blocks (a tokenizer) on raw inputs, `text=["…", …]`: returns the
        arrays this module (and its ONNX export) takes, by input name."""
        if self._pre_stage is None:
            self._pre_stage = PreStage(self.pipeline.graph)
        return self._pre_stage(raw)

    def extra_repr(self) -> str:
        return f"pipeline={self.pipeline_name!r}, inputs={list(self.input_names)}, outputs={list(self.output_names)}"


def _var(name: str, used: set[str]) -> str:
    v = re.sub(r"\W", "_", name.replace("/", "__"))
    if v[0].isdigit():
        v = "_" + v
    if keyword.iskeyword(v) or v in ("self", "torch") or v in used:
        base, i = v, 1
        while f"{base}_{i}" in used:
            i += 1
        v = f"{base}_{i}"
    used.add(v)
    return v


def _module_expr(name: str) -> str:
    expr = "self"
    for seg in name.split("/"):
        expr += f".{seg}" if seg.isidentifier() and not keyword.iskeyword(seg) else f"[{seg!r}]"
    return expr


def _attach(root: nn.Module, name: str, module: nn.Module) -> None:
    parts = name.split("/")
    parent = root
    for seg in parts[:-1]:
        child = parent._modules.get(seg)
        if child is None:
            child = nn.ModuleDict()
            parent.add_module(seg, child)
        elif not isinstance(child, nn.ModuleDict):
            raise ComposerError(f"cannot nest modules under `{seg}`: it is a block, not a scope")
        parent = child
    parent.add_module(parts[-1], module)


def _type_comment(t: Optional[PortType]) -> str:
    return f"  # {t}" if t is not None else ""


def _value(var: dict, graph: Graph, ref) -> tuple[str, str]:
    """The expression for a reference (a variable, or one field of a structured value) and its variable."""
    name = var[(ref.node, graph.port_of(ref))]
    base = name.split("[", 1)[0]
    return (name if ref.field is None else f"{name}[{ref.field!r}]"), base


def generate(graph: Graph) -> tuple[str, dict[tuple[str, Optional[str]], str]]:
    """The forward's source, and the variable that holds each (node, port) value.

    Each intermediate is deleted right after its last use, so peak memory matches a
    hand-written forward rather than holding every activation until the end.
    """
    r = graph.resolved
    used: set[str] = set()
    var: dict[tuple[str, Optional[str]], str] = {}
    args = []
    graphs: dict[str, list[tuple[str, str]]] = {}
    for name, ci in core_inputs(graph).items():   # spec inputs, and what pre-processing blocks produce
        v = _var(name, used)
        args.append(v)
        if ci.field is not None:                  # one field of a graph input
            graphs.setdefault(ci.node, []).append((ci.field, v))
        else:
            var[(ci.node, ci.port or "out")] = v
    # statements: (source lines, variables read, variables written)
    stmts: list[tuple[list[str], set[str], list[str]]] = []
    for node, fields in graphs.items():           # a graph input: its fields joined into one checked dict
        v = _var(node, used)
        var[(node, "out")] = v
        call = ", ".join(f"{f}={a}" for f, a in fields)
        stmts.append(([f"    {v} = graph_value({node!r}, {call}){_type_comment(r.inputs[node].type)}"], set(), [v]))
    for name in graph.order:
        node = graph.nodes[name]
        outs = graph.types[name]
        cls = type(node.block)
        if cls.stage == "pre":
            continue
        call_args, reads = [], set()
        for port, spec_port in cls.inputs.items():
            if port not in node.bindings:
                call_args.append("None")
                continue
            b = node.bindings[port]
            refs = b if isinstance(b, list) else [b]
            values = [_value(var, graph, ref) for ref in refs]
            reads |= {base for _, base in values}
            exprs = [e for e, _ in values]
            call_args.append(f"[{', '.join(exprs)}]" if spec_port.variadic else exprs[0])
        base = _var(name, used)
        if cls.passthrough:
            var[(name, next(iter(outs)))] = call_args[0]
            continue
        call = f"{_module_expr(name)}({', '.join(call_args)})"
        if len(outs) == 1:
            port = next(iter(outs))
            var[(name, port)] = base
            stmts.append(([f"    {base} = {call}{_type_comment(outs[port])}"], reads, [base]))
        else:
            targets = []
            for port in outs:
                v = _var(f"{name}__{port}", used)
                var[(name, port)] = v
                targets.append(v)
            text = [f"    {', '.join(targets)} = {call}"] + [f"    # {v}: {outs[port]}" for port, v in zip(outs, targets)]
            stmts.append((text, reads, targets))
    results = [_value(var, graph, ref) for ref in r.outputs.values()]
    returned = {base for _, base in results}
    last: dict[str, int] = {}
    for i, (_, reads, writes) in enumerate(stmts):
        for v in writes:
            last.setdefault(v, i)
        for v in reads:
            last[v] = i
    lines = [f"def forward(self, {', '.join(args)}):"]
    for i, (text, _, _) in enumerate(stmts):
        lines += text
        dead = [v for v, j in last.items() if j == i and v not in returned and v not in args]
        if dead:
            lines.append(f"    del {', '.join(dead)}")
    result = ", ".join(f"{o!r}: {e}" for o, (e, _) in zip(r.outputs, results))
    lines.append(f"    return {{{result}}}")
    return "\n".join(lines) + "\n", var


_counter = [0]


def compile_graph(graph: Graph, *, seed: Optional[int] = None, device: Optional[torch.device | str] = None) -> CompiledPipeline:
    """Build every block's module (deterministically from the seed) and the generated forward."""
    if graph.errors:
        raise ComposerError("cannot compile a pipeline with errors")
    r = graph.resolved
    seed = r.seed if seed is None else seed
    source, _ = generate(graph)
    _counter[0] += 1
    filename = f"<composer:{r.name}:{_counter[0]}>"
    namespace: dict = {"graph_value": graph_value}
    exec(compile(source, filename, "exec"), namespace)  # our own generated source, never spec text
    linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
    cls_name = "Pipeline_" + re.sub(r"\W", "_", r.name)
    cls = type(cls_name, (CompiledPipeline,), {"forward": namespace["forward"], "__module__": "composer.compiled"})
    model = cls()
    model.code = source
    model.pipeline_name = r.name
    model.input_names = tuple(core_inputs(graph))
    model.output_names = tuple(r.outputs)
    for name in graph.order:
        node = graph.nodes[name]
        if type(node.block).passthrough or type(node.block).stage == "pre":
            continue
        if str(device) == "meta":  # shapes only: no values, so no seeding
            with torch.device("meta"):
                module = node.block.build(**graph.in_types[name])
        else:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(node_seed(seed, name))
                if device is not None:
                    with torch.device(device):
                        module = node.block.build(**graph.in_types[name])
                else:
                    module = node.block.build(**graph.in_types[name])
        if node.frozen:
            for p in module.parameters():
                p.requires_grad_(False)
        _attach(model, name, module)
    return model

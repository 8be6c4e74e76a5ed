"""Stages: pre-processing blocks (a tokenizer) run in Python before the tensor core.

A block whose class says `stage = "pre"` takes spec inputs (text, or other pre-processing
outputs) and produces tensors. It is part of the typed graph — checked, drawn, summarised like
any block — but not of the compiled module: the module, and the ONNX file exported from it,
take the pre-processing outputs as their inputs, named after the ports (`tokens`, `mask`),
or `block_port` where two blocks would give the same name. A graph input is one tensor per
field (`graph_x`, `graph_edge_index`, …). `PreStage` runs the pre-processing
blocks on raw values, so `composer run` feeds the torch and the onnxruntime core alike.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Optional

import numpy as np

from .errors import ComposerError
from .types import PortType


@dataclass(frozen=True)
class CoreInput:
    """One input of the tensor core: a spec input, or a pre-processing block's output port."""

    name: str
    type: Optional[PortType]
    node: str                      # the spec input, or the pre-processing block
    port: Optional[str] = None     # None for a spec input
    field: Optional[str] = None    # one field of a graph input (composer.graph_data): `graph_x` is graph.x


def is_pre(graph, name: str) -> bool:
    node = graph.nodes.get(name)
    return node is not None and node.block is not None and type(node.block).stage == "pre"


def pre_nodes(graph) -> list[str]:
    """The pre-processing blocks, in topological order."""
    return [n for n in graph.order if is_pre(graph, n)]


def _read_by_core(graph, name: str) -> set[Optional[str]]:
    """The ports of `name` that a core block or an output reads."""
    refs = [data["ref"] for _, dst, data in graph.dag.out_edges(name, data=True) if not is_pre(graph, dst)]
    refs += [ref for ref in graph.resolved.outputs.values() if ref.node == name]
    return {graph.port_of(ref) for ref in refs}


def core_inputs(graph) -> dict[str, CoreInput]:
    """What the compiled module takes, in order: spec inputs a core block reads, then the
    pre-processing outputs the core reads."""
    r = graph.resolved
    out: dict[str, CoreInput] = {}
    pres = pre_nodes(graph)
    for name, inp in r.inputs.items():
        if not pres or any(not is_pre(graph, dst) for dst in graph.dag.successors(name)) or \
                any(ref.node == name for ref in r.outputs.values()):
            if inp.type is not None and inp.type.kind == "graph":   # one tensor per field
                from .graph_data import core_name
                for fld, ft in inp.type.fields:
                    out[core_name(name, fld)] = CoreInput(core_name(name, fld), ft, name, field=fld)
            elif inp.type is None or inp.type.kind != "text":
                out[name] = CoreInput(name, inp.type, name)
    wanted: list[tuple[str, str]] = []
    for node in pres:
        read = _read_by_core(graph, node)
        wanted += [(node, p) for p in graph.types.get(node, {}) if p in read]
    counts: dict[str, int] = {}
    for _, port in wanted:
        counts[port] = counts.get(port, 0) + 1
    for node, port in wanted:
        name = port if counts[port] == 1 and port not in out else f"{node.replace('/', '_')}_{port}"
        out[name] = CoreInput(name, graph.types[node][port], node, port)
    return out


class PreStage:
    """Runs a pipeline's pre-processing blocks: raw values by spec input name (a list of texts)
    -> the core's input arrays by name."""

    def __init__(self, graph):
        self.graph = graph
        self.nodes = pre_nodes(graph)
        self.inputs = core_inputs(graph)
        self._runtimes: dict[str, Any] = {}

    @property
    def raw_inputs(self) -> list[str]:
        """The spec inputs the pre-processing blocks read."""
        names = []
        for node in self.nodes:
            for src in self.graph.dag.predecessors(node):
                if src in self.graph.resolved.inputs and src not in names:
                    names.append(src)
        return names

    def runtime(self, node: str):
        if node not in self._runtimes:
            block = self.graph.nodes[node].block
            self._runtimes[node] = block.build_stage(**self.graph.in_types[node])
        return self._runtimes[node]

    def __call__(self, values: Mapping[str, Any]) -> dict[str, np.ndarray]:
        missing = [n for n in self.raw_inputs if n not in values]
        if missing:
            raise ComposerError(f"input {', '.join(f'`{n}`' for n in missing)} is missing: give "
                                + " ".join(f'--input {n}="…"' for n in missing))
        produced: dict[tuple[str, Optional[str]], Any] = {(n, None): v for n, v in values.items()}
        for node in self.nodes:
            args = {}
            for src, _, data in self.graph.dag.in_edges(node, data=True):
                port = None if src in self.graph.resolved.inputs else self.graph.port_of(data["ref"])
                args[data["dst_port"]] = produced[(src, port)]
            result = self.runtime(node)(**args)
            for port, value in result.items():
                produced[(node, port)] = value
        return {name: produced[(ci.node, ci.port)] for name, ci in self.inputs.items() if ci.port is not None}

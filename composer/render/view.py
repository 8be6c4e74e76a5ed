"""What a diagram shows, independent of the output format.

`build_view` turns a typed `Graph` into a small drawing model: nodes (inputs, blocks, folded
repeat groups, collapsed sub-pipelines, sub-pipeline entry ports, outputs), labelled edges
and nested clusters, with every diagnostic attached to the node or edge it is about. The DOT,
Mermaid and HTML writers only format this model, so all formats show the same picture.

Folding: copies of a `repeat: N` block (`layers/0` .. `layers/N-1`) become one node `layers`
marked ×N; copies of a repeated sub-pipeline become one cluster. Sub-pipelines nested deeper
than `depth` collapse to a single node.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

import networkx as nx

from ..graph import Graph
from ..registry import load_blocks
from ..resolve import Node
from ..types import PortType

MAX_PARAM_CHARS = 40


@dataclass
class VNode:
    """One drawn node."""

    id: str                      # safe DOM/DOT id: n0, n1, ...
    key: str                     # canonical name: block name, folded group, scope, `in:x`, `out:y`
    role: str                    # input | output | block | group | subpipeline | port
    name: str
    type: str                    # block type, input kind, `sub-pipeline <name>`
    family: str = ""
    cluster: Optional[str] = None  # key of the enclosing cluster
    key_params: dict[str, Any] = field(default_factory=dict)
    all_params: dict[str, Any] = field(default_factory=dict)
    n_params: Optional[int] = None
    macs: Optional[int] = None
    count: int = 1               # ×N for folded repeats
    blocks: int = 1              # blocks inside (collapsed sub-pipelines)
    description: str = ""
    frozen: bool = False
    checked: bool = True         # False: not type-checked because of an upstream error
    failed: bool = False
    in_ports: dict[str, str] = field(default_factory=dict)
    out_ports: dict[str, str] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    location: str = ""
    members: list[str] = field(default_factory=list)
    stage: str = "core"          # "pre": a pre-processing block (a tokenizer), outside the exported core

    @property
    def red(self) -> bool:
        return self.failed or bool(self.errors)


@dataclass
class VEdge:
    id: str
    src: str                     # VNode keys
    dst: str
    src_port: Optional[str]      # shown only where it tells something (several ports)
    dst_port: Optional[str]
    type: Optional[str]          # `feature_map [B, 32, H, W]`, None when unknown
    errors: list[str] = field(default_factory=list)
    tooltip: str = ""

    @property
    def red(self) -> bool:
        return bool(self.errors)

    @property
    def ports(self) -> str:
        if self.src_port and self.dst_port:
            return f"{self.src_port} → {self.dst_port}"
        if self.src_port:
            return f"{self.src_port} →"
        if self.dst_port:
            return f"→ {self.dst_port}"
        return ""


@dataclass
class VCluster:
    id: str
    key: str
    name: str                    # local name (`backbone`, `layers`)
    pipeline: str                # the sub-pipeline's own `pipeline:` name
    parent: Optional[str] = None
    count: int = 1
    description: str = ""
    errors: list[str] = field(default_factory=list)


@dataclass
class View:
    name: str
    description: str
    nodes: dict[str, VNode]
    edges: list[VEdge]
    clusters: dict[str, VCluster]
    errors: list[tuple[str, str]] = field(default_factory=list)  # diagnostics no node or edge owns: (where, text)
    macs_at: dict[str, int] = field(default_factory=dict)
    families: list[str] = field(default_factory=list)
    n_errors: int = 0

    def error_lines(self) -> list[str]:
        """The diagnostics no node or edge owns, each as one line: `file:line:col: text`."""
        return [f"{where}: {text}" if where else text for where, text in self.errors]

    def node_by_id(self, id: str) -> VNode:
        return next(n for n in self.nodes.values() if n.id == id)

    def nesting(self) -> tuple[dict[Optional[str], list["VCluster"]], dict[Optional[str], list[VNode]]]:
        """Clusters and nodes grouped by the cluster that holds them (None: the top level)."""
        children: dict[Optional[str], list[VCluster]] = {}
        for c in self.clusters.values():
            children.setdefault(c.parent, []).append(c)
        members: dict[Optional[str], list[VNode]] = {}
        for n in self.nodes.values():
            members.setdefault(n.cluster, []).append(n)
        return children, members


# ---- formatting helpers ------------------------------------------------------------------


def short_value(v: Any, limit: int = MAX_PARAM_CHARS) -> str:
    if isinstance(v, bool):
        s = "true" if v else "false"
    elif isinstance(v, float):
        s = f"{v:g}"
    elif isinstance(v, (list, tuple)):
        s = "[" + ", ".join(short_value(x, limit) for x in v) + "]"
    elif isinstance(v, dict):
        s = "{" + ", ".join(f"{k}: {short_value(x, limit)}" for k, x in v.items()) + "}"
    else:
        s = str(v)
    return s if len(s) <= limit else s[: limit - 1] + "…"


def type_str(t: Optional[PortType]) -> Optional[str]:
    return None if t is None else str(t)


def diag_text(d) -> str:
    text = f"{d.code}: {d.message}"
    parts = [f"{k} {v}" for k, v in (("expected", d.expected), ("found", d.found)) if v is not None]
    return text + (f" ({', '.join(parts)})" if parts else "")


# ---- building ----------------------------------------------------------------------------


class _Canon:
    """Maps flat node and scope names to what is drawn for them (folding repeat copies)."""

    def __init__(self, groups: dict[str, int]):
        self.groups = groups

    def __call__(self, name: str) -> str:
        segs = name.split("/")
        out: list[str] = []
        i = 0
        while i < len(segs):
            out.append(segs[i])
            orig = "/".join(segs[: i + 1])
            if orig in self.groups and i + 1 < len(segs) and segs[i + 1].isdigit():
                i += 2
            else:
                i += 1
        return "/".join(out)

    def copies(self, name: str) -> dict[str, int]:
        """{repeat group: copy index} along a flat name (`body/stages/2/conv` -> {body/stages: 2})."""
        segs = name.split("/")
        out = {}
        for i in range(len(segs) - 1):
            orig = "/".join(segs[: i + 1])
            if orig in self.groups and segs[i + 1].isdigit():
                out[orig] = int(segs[i + 1])
        return out

    def count(self, scope_name: str) -> int:
        base, _, idx = scope_name.rpartition("/")
        return self.groups.get(base, 1) if idx.isdigit() and base in self.groups else 1


def _file_of(node: Node) -> Optional[str]:
    return node.doc.file if node.doc is not None else None


def _same_file(d, file: Optional[str]) -> bool:
    return d.loc is None or file is None or d.loc.file == file


def build_view(graph: Graph, *, depth: Optional[int] = None, macs: Optional[dict[str, int]] = None,
               macs_at: Optional[dict[str, int]] = None) -> View:
    """The drawing model of `graph`; `depth` collapses sub-pipelines nested deeper than it."""
    r = graph.resolved
    registry = load_blocks()
    canon = _Canon(r.groups)
    nodes: dict[str, VNode] = {}
    clusters: dict[str, VCluster] = {}
    owner: dict[str, str] = {}          # flat name (input or node) -> VNode key
    counter = {"n": 0, "c": 0, "e": 0}

    def new_id(kind: str) -> str:
        i = counter[kind]
        counter[kind] += 1
        return f"{kind}{i}"

    def cluster_for(scope: tuple[str, ...], upto: int) -> Optional[str]:
        """Create clusters for scope[:upto]; returns the innermost one's key."""
        parent = None
        for level in range(upto):
            sname = scope[level]
            key = canon(sname)
            if key not in clusters:
                info = r.scopes.get(sname)
                clusters[key] = VCluster(new_id("c"), key, key.rsplit("/", 1)[-1], info.pipeline if info else "",
                                         parent, canon.count(sname), info.description if info else "")
            parent = key
        return parent

    # inputs
    for name, inp in r.inputs.items():
        key = f"in:{name}"
        t = type_str(inp.type)
        nodes[key] = VNode(new_id("n"), key, "input", name, t or inp.decl.kind, "input",
                           description=inp.decl.description, out_ports={"out": t or "?"},
                           location=str(inp.loc) if inp.loc else "", members=[name])
        owner[name] = key

    cyclic_nodes: set[str] = set()     # blocks on a cycle, and the edges between them
    cyclic_edges: set[tuple[str, str]] = set()
    for comp in nx.strongly_connected_components(graph.dag):
        if len(comp) > 1 or any(graph.dag.has_edge(n, n) for n in comp):
            cyclic_nodes |= comp
            cyclic_edges |= {(u, v) for u, v in graph.dag.subgraph(comp).edges()}

    # blocks, folded and collapsed
    for name, node in r.nodes.items():
        scope = node.scope
        collapsed = depth is not None and len(scope) > depth
        if collapsed:
            sname = scope[depth]
            key = canon(sname)
            parent = cluster_for(scope, depth)
            vn = nodes.get(key)
            if vn is None:
                info = r.scopes.get(sname)
                vn = nodes[key] = VNode(new_id("n"), key, "subpipeline", key.rsplit("/", 1)[-1],
                                        f"sub-pipeline {info.pipeline if info else ''}".strip(), "subpipeline",
                                        parent, count=canon.count(sname), blocks=0,
                                        description=info.description if info else "",
                                        location=(info.file if info else ""))
        else:
            key = canon(name)
            parent = cluster_for(scope, len(scope))
            vn = nodes.get(key)
            if vn is None:
                cls = type(node.block) if node.block is not None else registry.get(node.type)
                role = "port" if node.type == "_port" else ("group" if node.group else "block")
                shown = key.rsplit("/", 1)[-1] if scope else key
                vn = nodes[key] = VNode(
                    new_id("n"), key, role, shown, node.type or "?",
                    (cls.family if cls is not None else "unknown") if role != "port" else "port", parent,
                    key_params=node.block.key_params() if node.block is not None and role != "port" else {},
                    all_params=node.block.model_dump(mode="json") if node.block is not None and role != "port" else {},
                    count=node.group[2] if node.group else 1, description=node.description or "",
                    frozen=node.frozen, location=str(node.loc) if node.loc else "")
                if cls is not None:
                    vn.in_ports = {p: "?" for p in cls.inputs}
                    vn.stage = cls.stage
        owner[name] = key
        vn.members.append(name)
        if name in graph.params:
            vn.n_params = (vn.n_params or 0) + graph.params[name]
        if macs is not None and name in macs:
            vn.macs = (vn.macs or 0) + macs[name]
        if name not in graph.types and name not in graph.failed:
            vn.checked = False
        if name in graph.failed:
            upstream = name not in cyclic_nodes and any(
                u not in graph.types for u in graph.dag.predecessors(name))
            if upstream and node.block is not None and not node.bad_bindings:
                vn.checked = False  # its inputs are unknown because of an error further up
            else:
                vn.failed = True
        if not collapsed:
            ins = graph.in_types.get(name, {})
            for p, t in ins.items():
                if isinstance(t, list):
                    vn.in_ports[p] = ", ".join(str(x) for x in t)
                elif t is not None:
                    vn.in_ports[p] = str(t)
                elif p in vn.in_ports:
                    vn.in_ports[p] = "(not connected)"
            for p, t in graph.types.get(name, {}).items():
                vn.out_ports[p] = str(t)
    for vn in nodes.values():
        if vn.role == "subpipeline":
            vn.checked = True
            vn.blocks = len({canon(m) for m in vn.members if r.nodes[m].type != "_port"})
        if macs is None and vn.role != "input":
            vn.macs = None

    # outputs
    for oname, ref in r.outputs.items():
        key = f"out:{oname}"
        t = type_str(graph.output_type(ref))
        nodes[key] = VNode(new_id("n"), key, "output", oname, t or "?", "output",
                           in_ports={"in": t or "?"}, members=[oname])

    # edges (deduplicated after folding; edges inside one drawn node disappear)
    edges: dict[tuple, VEdge] = {}
    for u, v, data in graph.dag.edges(data=True):
        su, sv = owner.get(u), owner.get(v)
        if su is None or sv is None or su == sv:
            continue
        cu, cv = canon.copies(u), canon.copies(v)
        if any(g in cv and cv[g] != i for g, i in cu.items()):
            continue  # the chain between copies of a repeated sub-pipeline: the ×N says it
        ref = data.get("ref")
        t = graph.output_type(ref) if ref is not None else None
        sport = graph.port_of(ref) if ref is not None else data.get("src_port")
        show_sport = sport if (sport and (len(graph.types.get(u, {})) > 1 or sport != "out")) else None
        dport = data.get("dst_port")
        dst_node = r.nodes.get(v)
        if dst_node is not None and dst_node.type == "_port":
            dport = v.rsplit("/", 1)[-1] if nodes[sv].role == "subpipeline" else None
        else:
            cls = type(dst_node.block) if dst_node is not None and dst_node.block is not None else None
            if cls is None or len(cls.inputs) <= 1:
                dport = None
        if nodes[su].role == "subpipeline" and len(graph.types.get(u, {})) <= 1:
            show_sport = None
        ekey = (su, sv, show_sport, dport)
        e = edges.get(ekey)
        if e is None:
            ts = type_str(t)
            src_full = f"{u}.{sport}" if sport and sport != "out" else u
            e = edges[ekey] = VEdge(new_id("e"), su, sv, show_sport, dport, ts,
                                    tooltip=f"{src_full} → {v}.{data.get('dst_port')}: {ts or 'type unknown'}")
        if (u, v) in cyclic_edges and "cycle" not in e.errors:
            e.errors.append("cycle")
    for oname, ref in r.outputs.items():
        src = owner.get(ref.node)
        if src is None:
            continue
        sport = graph.port_of(ref)
        show = sport if sport and (len(graph.types.get(ref.node, {})) > 1 or sport != "out") else None
        ts = type_str(graph.output_type(ref))
        e = VEdge(new_id("e"), src, f"out:{oname}", show, None, ts, tooltip=f"{ref} → output {oname}: {ts or 'type unknown'}")
        edges[(src, f"out:{oname}", show, oname)] = e

    view = View(r.name, r.description, nodes, list(edges.values()), clusters, macs_at=dict(macs_at or {}))
    _attach_diagnostics(graph, view, owner)
    view.families = sorted({n.family for n in nodes.values() if n.role in ("block", "group")})
    return view


def _attach_diagnostics(graph: Graph, view: View, owner: dict[str, str]) -> None:
    """Put each diagnostic on the edge, input, output or block it is about; else on the graph."""
    r = graph.resolved
    by_loc: dict = {}
    by_ref_path: dict = {}
    for u, v, data in graph.dag.edges(data=True):
        ref = data.get("ref")
        if ref is not None:
            if ref.loc is not None:
                by_loc.setdefault(ref.loc, (u, v))
            if ref.path:
                by_ref_path.setdefault(ref.path, (u, v))
    edges: dict[tuple[str, str], VEdge] = {}
    for e in view.edges:
        edges.setdefault((e.src, e.dst), e)
    by_path: dict[str, list[tuple[Optional[str], str]]] = {}
    for name, n in r.nodes.items():
        if n.path:
            by_path.setdefault(n.path, []).append((_file_of(n), name))
    top_file = r.file

    def blocks_of(d) -> list[str]:
        segs = d.path.split(".") if d.path else []
        for k in range(len(segs), 0, -1):  # the longest written path that names a block
            found = [name for file, name in by_path.get(".".join(segs[:k]), []) if _same_file(d, file)]
            if found:
                return found
        return []

    for d in graph.diagnostics:
        text = diag_text(d)
        err = d.severity == "error"
        if err:
            view.n_errors += 1
        # an edge: the reference the diagnostic points at
        if err:
            pair = by_loc.get(d.loc) if d.loc is not None else by_ref_path.get(d.path)
            e = edges.get((owner.get(pair[0]), owner.get(pair[1]))) if pair else None
            if e is not None:
                if text not in e.errors:
                    e.errors.append(text)
                if pair[1] in r.nodes:
                    view.nodes[owner[pair[1]]].failed = True
                continue
        # an input or output of the pipeline
        head, _, rest = d.path.partition(".")
        name = rest.split(".", 1)[0]
        key = {"inputs": "in:", "outputs": "out:"}.get(head, "") + name
        if head in ("inputs", "outputs") and key in view.nodes and _same_file(d, top_file):
            vn = view.nodes[key]
            (vn.errors if err else vn.warnings).append(text)
            continue
        # a block (every drawn node holding it)
        targets = {owner[b] for b in blocks_of(d) if b in owner}
        for key in targets:
            vn = view.nodes[key]
            bucket = vn.errors if err else vn.warnings
            if text not in bucket:
                bucket.append(text)
        if not targets:
            view.errors.append((str(d.loc) if d.loc else "", ("" if err else "warning ") + text))

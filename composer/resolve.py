"""Resolve a parsed spec into one flat pipeline: sub-pipelines inlined, repeats expanded.

Names of inlined blocks are paths: block `conv1` of sub-pipeline `backbone` becomes
`backbone/conv1`; copy 3 of `layers` (repeat: 12) becomes `layers/3`. A sub-pipeline's
inputs become pass-through `_port` nodes (`backbone/image`) that check the incoming type
against the sub-pipeline's declaration. Every node keeps where it was written.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Union

from . import errors as E
from ._yaml import Doc, load_file
from .block import Block
from .dims import DimSyntaxError, parse_dim
from pydantic import ValidationError

from .errors import Diagnostic, Diagnostics, Location, SpecError, did_you_mean
from .labels import Labels, check_labels
from .overrides import Pending, apply_pending
from .registry import load_blocks
from .spec import IDENT_RE, BlockDecl, DimDecl, InputDecl, ParsedSpec, PipelineSpec, Ref, dotted, parse
from .types import PortType
from .weights import Rule, WeightsSource, check_rule

MAX_INCLUDE_DEPTH = 16
MAX_NODES = 1_000_000
_FAILED = "!failed"


@dataclass
class Node:
    """One block of the flat pipeline."""

    name: str
    type: str
    block: Optional[Block]                      # None when its params are invalid
    bindings: dict[str, Union[Ref, list[Ref]]]  # input port -> reference(s)
    frozen: bool = False
    description: str = ""
    loc: Optional[Location] = None
    doc: Optional[Doc] = None                   # the file it was written in, for param locations
    doc_path: tuple = ()                        # its path in that file: ("blocks", "conv1")
    scope: tuple[str, ...] = ()                 # enclosing sub-pipelines, outermost first
    group: Optional[tuple[str, int, int]] = None  # (repeat group, index, count)
    bad_bindings: bool = False

    @property
    def path(self) -> str:
        return dotted(self.doc_path)

    def param_loc(self, param: str) -> Optional[Location]:
        if self.doc is None:
            return self.loc
        return self.doc.loc(self.doc_path + (param,))

    def binding_loc(self, port: Optional[str] = None) -> Optional[Location]:
        b = self.bindings.get(port) if port else None
        if isinstance(b, Ref) and b.loc:
            return b.loc
        if isinstance(b, list) and b and b[0].loc:
            return b[0].loc
        if self.doc is None:
            return self.loc
        return self.doc.loc(self.doc_path + ("in",))


@dataclass
class Scope:
    """A sub-pipeline instance: its path, the spec it came from, its description."""

    name: str
    pipeline: str
    file: str
    description: str = ""


@dataclass
class Input:
    name: str
    decl: Optional[InputDecl]                   # None when its declaration is invalid
    type: Optional[PortType]
    loc: Optional[Location]


@dataclass
class Part:
    """A part of the pipeline (the spec's `parts:`): the outputs it computes, and the values it is
    given as inputs instead of computing them (another part's outputs)."""

    name: str
    outputs: list[str]
    given: dict[str, Ref]
    loc: Optional[Location] = None


@dataclass
class Resolved:
    """A flat pipeline: inputs, nodes in written order, outputs, and what was found wrong."""

    name: str
    description: str
    seed: int
    weights: Optional[WeightsSource]
    file: str
    dims: dict[str, DimDecl]
    inputs: dict[str, Input]
    nodes: dict[str, Node]
    outputs: dict[str, Ref]
    scopes: dict[str, Scope] = field(default_factory=dict)
    groups: dict[str, int] = field(default_factory=dict)   # repeat group -> count
    max_param_bytes: int = 16 * 1024**3
    diagnostics: list[Diagnostic] = field(default_factory=list)
    spec: Optional[PipelineSpec] = None
    labels: Optional[Labels] = None                        # class names (the top-level spec's `labels:`)
    train: Optional[Any] = None                            # the checked `train:` section (a TrainSection)
    parts: dict[str, "Part"] = field(default_factory=dict)  # the top-level spec's `parts:`
    diffusion: Optional[Any] = None                        # the top-level spec's `diffusion:` (a DiffusionDecl)

    @property
    def errors(self) -> list[Diagnostic]:
        return [d for d in self.diagnostics if d.severity == "error"]


def _referenced(bindings: Any) -> set[str]:
    """Names a block's written `in:` refers to."""
    if bindings is None:
        return set()
    if isinstance(bindings, dict):
        return set().union(*(_referenced(b) for b in bindings.values())) if bindings else set()
    refs = bindings if isinstance(bindings, list) else [bindings]
    return {r.node for r in refs}


def input_type(decl: InputDecl, dims: dict[str, DimDecl]) -> PortType:
    """The port type of a declared input; raises DimSyntaxError on a bad dim."""
    multiples = {n: d.multiple_of for n, d in dims.items()}
    shape = None if decl.shape is None else tuple(parse_dim(s, multiples) for s in decl.shape)
    dtype = "string" if decl.kind == "text" else decl.dtype   # text is strings, whatever the default dtype
    return PortType(decl.kind, shape, dtype)


class _Resolver:
    def __init__(self) -> None:
        self.diags = Diagnostics()
        self.nodes: dict[str, Node] = {}
        self.scopes: dict[str, Scope] = {}
        self.groups: dict[str, int] = {}
        self.too_big = False
        self.graph_inputs: set[str] = set()     # top-level graph inputs: `graph.x` is a field, not a port
        self.registry = load_blocks()
        self.top_exports: dict = {}
        self.reported: dict[int, ParsedSpec] = {}

    # -- one spec (top level or included) ------------------------------------------------
    def spec(self, parsed: ParsedSpec, prefix: str, scope: tuple[str, ...], stack: tuple[str, ...],
             input_refs: dict[str, Ref]) -> dict[str, Ref]:
        """Inline `parsed` under `prefix`; returns its outputs as resolved references."""
        if id(parsed) not in self.reported:  # a repeated sub-pipeline's own errors: once, not once per copy
            self.reported[id(parsed)] = parsed  # (held, so that no other spec gets its id)
            self.diags.extend(parsed.diagnostics)
        doc = parsed.doc
        # what each local name stands for once resolved: name -> (port -> Ref)
        exports: dict[str, dict[Optional[str], Ref]] = {}
        for name, ref in input_refs.items():
            exports[name] = {None: ref}
        pending: list[tuple[Node, Any]] = []
        for decl in parsed.blocks.values():
            if decl.spec is not None:
                continue
            full = prefix + decl.name
            copies = decl.repeat
            if not self._room(copies, decl):
                exports[decl.name] = {_FAILED: None}
                continue
            if copies > 1:
                self.groups[full] = copies
            chain = self._chain_port(decl) if copies > 1 else None
            params = self._paths(decl, doc)
            for i in range(copies):
                name = f"{full}/{i}" if copies > 1 else full
                node = Node(name, decl.type or "", params, {}, decl.frozen, decl.description, decl.loc, doc,
                            decl.path, scope, (full, i, copies) if copies > 1 else None)
                self.nodes[name] = node
                if i == 0:
                    pending.append((node, decl.bindings))
                elif chain is not None:
                    node.bindings = {chain: Ref(f"{full}/{i - 1}", None, decl.loc, dotted(decl.path + ("repeat",)))}
            last = f"{full}/{copies - 1}" if copies > 1 else full
            exports[decl.name] = {"*": Ref(last, None)}
        # sub-pipelines, each after the sub-pipelines that feed it (whatever order they are written in)
        subs = [d for d in parsed.blocks.values() if d.spec is not None]
        while subs:
            waiting = {d.name for d in subs}
            ready = [d for d in subs if not (_referenced(d.bindings) & (waiting - {d.name}))] or subs[:1]
            for decl in ready:
                full = prefix + decl.name
                exports[decl.name] = self.subpipeline(decl, doc, full, scope, stack, exports) or {_FAILED: None}
                subs.remove(decl)
        # now that every local name is known, rewrite the written references
        for node, raw in pending:
            node.bindings = self._bindings(node, raw, exports, doc)
            copies = node.group[2] if node.group else 1
            for i in range(1, copies):
                later = self.nodes[f"{node.group[0]}/{i}"]
                chained = {p: b for p, b in later.bindings.items()}
                extra = {p: b for p, b in node.bindings.items() if p not in chained}
                later.bindings = {**extra, **chained}
        outputs: dict[str, Ref] = {}
        for oname, ref in parsed.outputs.items():
            r = self._lookup(ref, exports, doc, output=True)
            if r is not None:
                outputs[oname] = r
        if not prefix:                                # the top level's names, for its `parts:`
            self.top_exports = exports
        return outputs

    def parts(self, parsed: ParsedSpec, spec: PipelineSpec, inputs: dict, outputs: dict[str, Ref]) -> dict[str, Part]:
        """The top-level `parts:`, their outputs and `given` references checked."""
        doc, found = parsed.doc, {}
        for pname, decl in spec.parts.items():
            for i, oname in enumerate(decl.outputs):
                if oname not in outputs:
                    self.diags.add(E.UNKNOWN_OUTPUT_REF, f"part `{pname}` names output `{oname}`, which the spec "
                                   "does not have", loc=doc.loc(("parts", pname, "outputs", i)),
                                   path=f"parts.{pname}.outputs[{i}]", expected="one of: " + ", ".join(outputs),
                                   found=oname, hint=did_you_mean(oname, outputs) or None)
            given = {}
            for gname, ref in parsed.parts.get(pname, {}).items():
                if gname in inputs:
                    self.diags.add(E.NAME_CLASH, f"given input `{gname}` of part `{pname}` has the name of a spec "
                                   "input", loc=ref.loc, path=ref.path, hint="give it another name")
                    continue
                r = self._lookup(ref, self.top_exports, doc, output=True)
                if r is not None:
                    given[gname] = r
            found[pname] = Part(pname, list(decl.outputs), given, doc.key_loc(("parts", pname)))
        return found

    def _paths(self, decl: BlockDecl, doc: Doc) -> Optional[Block]:
        """The block with its file params made absolute against the folder of the spec that
        names them; a file that does not exist is reported at its param."""
        block = decl.params
        if block is None or not type(block).path_params:
            return block
        changes, missing = {}, False
        for param in type(block).path_params:
            value = getattr(block, param)
            if not value:
                continue
            path = (Path(doc.file).resolve().parent / value).resolve()
            if not path.exists():
                self.diags.add(E.FILE_UNREADABLE, f"file `{value}` not found", loc=doc.loc(decl.path + (param,)),
                               path=dotted(decl.path + (param,)), found=str(path),
                               hint="the path is relative to this spec")
                missing = True
            changes[param] = str(path)
        if missing:
            return None     # like invalid params: the block is not checked further
        return block.model_copy(update=changes) if changes else block

    def _room(self, count: int, decl: BlockDecl) -> bool:
        """Stop expansion (repeats of repeated sub-pipelines…) before it exhausts memory."""
        if len(self.nodes) + count <= MAX_NODES:
            return True
        if not self.too_big:
            self.too_big = True
            self.diags.add(E.BAD_REPEAT, f"the pipeline expands to more than {MAX_NODES:,} blocks", loc=decl.loc,
                           path=dotted(decl.path), hint="lower `repeat` here or in the sub-pipelines it contains")
        return False

    def _chain_port(self, decl: BlockDecl) -> Optional[str]:
        cls = self.registry.get(decl.type or "")
        if cls is None:
            return None
        required = cls.required_ports()
        if len(required) != 1 or cls.inputs[required[0]].variadic:
            self.diags.add(E.BAD_REPEAT, f"`repeat` needs a block with exactly one input, `{decl.type}` has "
                           f"{len(required)} required inputs", loc=decl.loc, path=dotted(decl.path + ("repeat",)),
                           hint="wire the copies explicitly instead")
            return None
        return required[0]

    def _lookup(self, ref: Ref, exports: dict, doc: Doc, output: bool = False) -> Optional[Ref]:
        if ref.node not in exports:
            code = E.UNKNOWN_OUTPUT_REF if output else E.UNKNOWN_REF
            what = "output refers to" if output else "reference to"
            self.diags.add(code, f"{what} unknown block `{ref.node}`", loc=ref.loc, path=ref.path, found=ref.node,
                           hint=did_you_mean(ref.node, exports) or None)
            return None
        target = exports[ref.node]
        if _FAILED in target:  # a sub-pipeline that could not be loaded: already reported
            return None
        if "*" in target:  # a plain block: the port is checked once its outputs are inferred
            base = target["*"]
            return Ref(base.node, ref.port, ref.loc, ref.path, ref.field)
        if None in target and len(target) == 1:  # an input
            base = target[None]
            if ref.port is not None:
                if base.node != ref.node:  # a sub-pipeline input: what feeds it may have ports
                    return Ref(base.node, base.port, ref.loc, ref.path, ref.port)
                if ref.node in self.graph_inputs and ref.field is None:   # `graph.x`: a field of a graph input
                    return Ref(base.node, base.port, ref.loc, ref.path, ref.port)
                self.diags.add(E.UNKNOWN_PORT, f"input `{ref.node}` has no port `{ref.port}`", loc=ref.loc,
                               path=ref.path, hint=f"refer to it as `{ref.node}`")
                return None
            return Ref(base.node, base.port, ref.loc, ref.path)
        # a sub-pipeline: its outputs are its ports
        if ref.port is None:
            if len(target) == 1:
                (base,) = target.values()
                return Ref(base.node, base.port, ref.loc, ref.path, base.field)
            names = ", ".join(f"`{ref.node}.{p}`" for p in target)
            self.diags.add(E.UNKNOWN_PORT, f"sub-pipeline `{ref.node}` has several outputs; name one", loc=ref.loc,
                           path=ref.path, expected=names, found=f"`{ref.node}`")
            return None
        if ref.port not in target:
            self.diags.add(E.UNKNOWN_PORT, f"sub-pipeline `{ref.node}` has no output `{ref.port}`", loc=ref.loc,
                           path=ref.path, expected=", ".join(map(str, target)), found=ref.port,
                           hint=did_you_mean(ref.port, [str(p) for p in target]))
            return None
        base = target[ref.port]
        if base.field is not None and ref.field is not None:
            self.diags.add(E.UNKNOWN_PORT, f"`{ref}`: `{ref.node}.{ref.port}` is already a field", loc=ref.loc,
                           path=ref.path)
            return None
        return Ref(base.node, base.port, ref.loc, ref.path, base.field or ref.field)

    def _bindings(self, node: Node, raw: Any, exports: dict, doc: Doc) -> dict:
        cls = self.registry.get(node.type)
        if raw is None:
            if cls is not None and cls.required_ports():
                self.diags.add(E.BAD_BINDING, f"block `{node.name}` has no `in:`", loc=node.loc, path=node.path,
                               expected="inputs for port(s) " + ", ".join(f"`{p}`" for p in cls.required_ports()),
                               found="nothing", hint="add `in: <block>`")
                node.bad_bindings = True
            return {}
        if cls is None:
            ports = None
        else:
            ports = cls.inputs
        if isinstance(raw, dict):
            by_port = raw
        else:
            if ports is None:
                by_port = {"x": raw}
            else:
                required = cls.required_ports()
                names = list(ports)
                if isinstance(raw, list) and not any(ports[p].variadic for p in names) and len(raw) > 1:
                    by_port = dict(zip(names, raw)) if len(raw) <= len(names) else None
                    if by_port is None:
                        self.diags.add(E.BAD_BINDING, f"`{node.type}` takes {len(names)} inputs, got {len(raw)}",
                                       loc=node.binding_loc(), path=node.path + ".in",
                                       expected=", ".join(names), found=str(len(raw)))
                        node.bad_bindings = True
                        return {}
                else:
                    target = required[0] if len(required) == 1 else (names[0] if len(names) == 1 else None)
                    if target is None:
                        self.diags.add(E.BAD_BINDING, f"`{node.type}` has several inputs; bind them by name",
                                       loc=node.binding_loc(), path=node.path + ".in",
                                       expected="in: {" + ", ".join(f"{p}: ..." for p in names) + "}",
                                       found="a single reference")
                        node.bad_bindings = True
                        return {}
                    by_port = {target: raw}
        out: dict = {}
        for port, b in by_port.items():
            if ports is not None and port not in ports:
                self.diags.add(E.UNKNOWN_PORT, f"`{node.type}` has no input port `{port}`",
                               loc=(b[0].loc if isinstance(b, list) else b.loc), path=node.path + f".in.{port}",
                               expected=", ".join(ports), found=port, hint=did_you_mean(port, ports))
                node.bad_bindings = True
                continue
            variadic = ports is not None and ports[port].variadic
            refs = b if isinstance(b, list) else [b]
            if ports is not None and not variadic and len(refs) > 1:
                self.diags.add(E.BAD_BINDING, f"port `{port}` of `{node.type}` takes one input, got {len(refs)}",
                               loc=refs[0].loc, path=node.path + f".in.{port}")
                node.bad_bindings = True
                continue
            looked = [self._lookup(r, exports, doc) for r in refs]
            if any(r is None for r in looked):
                node.bad_bindings = True
                continue
            out[port] = looked if variadic else looked[0]
        if ports is not None and not node.bad_bindings:
            for port in cls.required_ports():
                if port not in by_port:
                    self.diags.add(E.BAD_BINDING, f"input port `{port}` of `{node.name}` is not connected",
                                   loc=node.binding_loc(), path=node.path + ".in", hint=f"add `{port}: <block>` to `in:`")
                    node.bad_bindings = True
        return out

    # -- sub-pipelines ---------------------------------------------------------------------
    def subpipeline(self, decl: BlockDecl, doc: Doc, full: str, scope: tuple[str, ...], stack: tuple[str, ...],
                    exports: dict) -> dict[Optional[str], Ref]:
        spec_loc = doc.loc(decl.path + ("spec",))
        base = Path(doc.file).resolve().parent
        target = (base / decl.spec)
        if not target.exists() and target.suffix == "":
            target = target.with_suffix(".yaml")
        target = target.resolve()
        if str(target) in stack:
            chain = " -> ".join(Path(p).name for p in stack + (str(target),))
            self.diags.add(E.SELF_INCLUDE, f"sub-pipeline `{decl.spec}` includes itself", loc=spec_loc,
                           path=dotted(decl.path + ("spec",)), found=chain,
                           hint="a spec cannot contain itself, directly or through other specs")
            return {}
        if len(stack) >= MAX_INCLUDE_DEPTH:
            self.diags.add(E.SELF_INCLUDE, "sub-pipelines nest too deeply", loc=spec_loc,
                           path=dotted(decl.path + ("spec",)), expected=f"at most {MAX_INCLUDE_DEPTH} levels")
            return {}
        if not target.is_file():
            self.diags.add(E.SUBPIPELINE_MISSING, f"sub-pipeline file `{decl.spec}` not found", loc=spec_loc,
                           path=dotted(decl.path + ("spec",)), found=str(target),
                           hint="paths are relative to the spec that includes them")
            return {}
        try:
            sub_doc = load_file(target)
        except SpecError as exc:
            self.diags.extend(exc.diagnostics)
            return {}
        sub_doc.data = copy.deepcopy(sub_doc.data)
        self._apply_overrides(decl, doc, sub_doc)
        parsed = parse(sub_doc)
        sub_inputs = list(parsed.spec.inputs) if parsed.spec else list(
            (sub_doc.data.get("inputs") or {}) if isinstance(sub_doc.data.get("inputs"), dict) else {})
        copies = decl.repeat
        if copies > 1:
            self.groups[full] = copies
        prev_outputs: Optional[dict[str, Ref]] = None
        for i in range(copies):
            if self.too_big:
                return {}
            name = f"{full}/{i}" if copies > 1 else full
            self.scopes[name] = Scope(name, parsed.spec.pipeline if parsed.spec else Path(decl.spec).stem,
                                      str(target), parsed.spec.description if parsed.spec else decl.description)
            input_refs: dict[str, Ref] = {}
            if i == 0:
                wired = self._sub_bindings(decl, sub_inputs, doc, exports)
            else:
                if len(sub_inputs) != 1 or not prev_outputs or len(prev_outputs) != 1:
                    self.diags.add(E.BAD_REPEAT, "`repeat` on a sub-pipeline needs one input and one output",
                                   loc=decl.loc, path=dotted(decl.path + ("repeat",)))
                    return {}
                (only,) = prev_outputs.values()
                wired = {sub_inputs[0]: only}
            for in_name in sub_inputs:
                port_name = f"{name}/{in_name}"
                ref = wired.get(in_name)
                decl_in = parsed.spec.inputs[in_name] if parsed.spec else None
                block = self.registry["_port"].model_validate({
                    "kind": decl_in.kind, "shape": decl_in.shape, "dtype": decl_in.dtype,
                    "multiples": {n: d.multiple_of for n, d in parsed.spec.dims.items()},
                }) if decl_in is not None else None
                node = Node(port_name, "_port", block, {"x": ref} if ref else {}, False, "", sub_doc.loc(("inputs", in_name)),
                            sub_doc, ("inputs", in_name), scope + (name,), None, bad_bindings=ref is None)
                self.nodes[port_name] = node
                input_refs[in_name] = Ref(port_name, None)
            prev_outputs = self.spec(parsed, name + "/", scope + (name,), stack + (str(target),), input_refs)
        return dict(prev_outputs or {})

    def _sub_bindings(self, decl: BlockDecl, sub_inputs: list[str], doc: Doc, exports: dict) -> dict[str, Ref]:
        raw = decl.bindings
        if raw is None:
            self.diags.add(E.BAD_BINDING, f"sub-pipeline `{decl.name}` has no `in:`", loc=decl.loc,
                           path=dotted(decl.path), expected="inputs for " + ", ".join(sub_inputs))
            return {}
        if not isinstance(raw, dict):
            if len(sub_inputs) != 1 or isinstance(raw, list):
                self.diags.add(E.BAD_BINDING, f"sub-pipeline `{decl.name}` has inputs {', '.join(sub_inputs)}; "
                               "bind them by name", loc=doc.loc(decl.path + ("in",)), path=dotted(decl.path + ("in",)),
                               expected="in: {" + ", ".join(f"{p}: ..." for p in sub_inputs) + "}")
                return {}
            raw = {sub_inputs[0]: raw}
        out: dict[str, Ref] = {}
        for port, ref in raw.items():
            if port not in sub_inputs:
                loc = ref[0].loc if isinstance(ref, list) else ref.loc
                self.diags.add(E.UNKNOWN_PORT, f"sub-pipeline `{decl.name}` has no input `{port}`", loc=loc,
                               path=dotted(decl.path + ("in", port)), expected=", ".join(sub_inputs), found=port,
                               hint=did_you_mean(port, sub_inputs))
                continue
            if isinstance(ref, list):
                self.diags.add(E.BAD_BINDING, f"input `{port}` of a sub-pipeline takes one reference",
                               loc=ref[0].loc, path=dotted(decl.path + ("in", port)))
                continue
            r = self._lookup(ref, exports, doc)
            if r is not None:
                out[port] = r
        for port in sub_inputs:
            if port not in raw:
                self.diags.add(E.BAD_BINDING, f"input `{port}` of sub-pipeline `{decl.name}` is not connected",
                               loc=doc.loc(decl.path + ("in",)), path=dotted(decl.path + ("in",)))
        return out

    def _apply_overrides(self, decl: BlockDecl, doc: Doc, sub_doc: Doc) -> None:
        blocks = sub_doc.data.get("blocks") if isinstance(sub_doc.data, dict) else None
        pending = [v for v in decl.overrides.values() if isinstance(v, Pending)]  # from `--set`: applied last
        for key, value in decl.overrides.items():
            if isinstance(value, Pending):
                continue
            opath = decl.path + ("overrides", key)
            loc = doc.loc(opath)
            bname, _, param = str(key).rpartition(".")
            if not bname or not param:
                self.diags.add(E.BAD_OVERRIDE, f"override `{key}` must be `block.param`", loc=doc.key_loc(opath),
                               path=dotted(opath), expected="`block.param: value`", found=str(key))
                continue
            if not isinstance(blocks, dict) or bname not in blocks or not isinstance(blocks[bname], dict):
                self.diags.add(E.BAD_OVERRIDE, f"override `{key}`: the sub-pipeline has no block `{bname}`",
                               loc=doc.key_loc(opath), path=dotted(opath),
                               hint=did_you_mean(bname, blocks or {}) if isinstance(blocks, dict) else None)
                continue
            if param in ("block", "spec", "in"):
                self.diags.add(E.BAD_OVERRIDE, f"override `{key}`: `{param}` cannot be overridden", loc=doc.key_loc(opath),
                               path=dotted(opath), hint="overrides change params, `repeat` and `frozen`")
                continue
            blocks[bname][param] = value
            sub_doc.locs[("blocks", bname, param)] = loc
            sub_doc.key_locs[("blocks", bname, param)] = doc.key_loc(opath)
            if doc.raw(opath) is not None:
                sub_doc.raws[("blocks", bname, param)] = doc.raw(opath)
        apply_pending(sub_doc, pending, self.diags.items)


def resolve(parsed: ParsedSpec) -> Resolved:
    """Flatten a parsed spec. Never raises for spec problems: see `Resolved.diagnostics`."""
    r = _Resolver()
    spec = parsed.spec
    doc = parsed.doc
    dims = dict(spec.dims) if spec else {}
    inputs: dict[str, Input] = {}
    if spec:
        raw_inputs = dict(spec.inputs)
    else:  # the spec as a whole is invalid (already reported): keep each input that is valid itself
        raw_inputs = {}
        data_inputs = doc.data.get("inputs") if isinstance(doc.data, dict) else None
        for name, raw in (data_inputs.items() if isinstance(data_inputs, dict) else []):
            try:
                raw_inputs[name] = InputDecl.model_validate(raw)
            except ValidationError:
                raw_inputs[name] = None
    raw_inputs = {n: d for n, d in raw_inputs.items() if isinstance(n, str) and IDENT_RE.match(n)}
    for name, decl in raw_inputs.items():
        if decl is None:
            inputs[name] = Input(name, None, None, doc.loc(("inputs", name)))
            continue
        if decl.kind == "graph":
            from .graph_data import declared_type
            inputs[name] = Input(name, decl, declared_type(name, decl, dims, doc, r.diags), doc.loc(("inputs", name)))
            continue
        if decl.fields is not None:
            r.diags.add(E.UNKNOWN_PARAM, f"input `{name}` is `{decl.kind}`, and only graph inputs have `fields`",
                        loc=doc.key_loc(("inputs", name, "fields")), path=f"inputs.{name}.fields",
                        hint="declare its `shape`, or make it `kind: graph`")
        try:
            t = input_type(decl, dims)
        except DimSyntaxError as exc:
            r.diags.add(E.BAD_DIM, str(exc), loc=doc.loc(("inputs", name, "shape")), path=f"inputs.{name}.shape",
                        expected="names, integers, + - * / // and floor()/ceil()", found=str(decl.shape))
            t = None
        inputs[name] = Input(name, decl, t, doc.loc(("inputs", name)))
    for name, inp in inputs.items():        # a graph input's fields are core inputs `name_field`
        for fld, _ in (inp.type.fields if inp.type is not None and inp.type.kind == "graph" else ()):
            if f"{name}_{fld}" in raw_inputs:
                r.diags.add(E.NAME_CLASH, f"input `{name}_{fld}` has the name of field `{fld}` of graph input `{name}`",
                            loc=doc.key_loc(("inputs", f"{name}_{fld}")), path=f"inputs.{name}_{fld}",
                            hint="the exported model takes the graph's fields as inputs named `GRAPH_FIELD`; "
                                 "rename one of them")
    input_refs = {name: Ref(name, None) for name in raw_inputs}
    r.graph_inputs = {name for name, inp in inputs.items() if inp.decl is not None and inp.decl.kind == "graph"}
    outputs = r.spec(parsed, "", (), (str(Path(doc.file).resolve()),), input_refs)
    weights = _weights_source(spec, doc, r.diags) if spec and spec.weights else None
    # class names come from the top-level spec only: a sub-pipeline's own `labels:` is not used
    raw_labels = doc.data.get("labels") if isinstance(doc.data, dict) else None
    labels = check_labels(raw_labels, doc, r.diags) if raw_labels is not None else None
    raw_train = doc.data.get("train") if isinstance(doc.data, dict) else None
    train = None
    if raw_train is not None:
        from .train.config import check_section, check_names
        train = check_section(raw_train, doc, r.diags)
        check_names(raw_train, doc, inputs, outputs, r.diags)
    parts = r.parts(parsed, spec, inputs, outputs) if spec and spec.parts else {}
    if spec is not None and spec.diffusion is not None:
        _check_diffusion(spec.diffusion, doc, inputs, outputs, r.diags)
    return Resolved(
        name=spec.pipeline if spec else Path(doc.file).stem,
        description=spec.description if spec else "",
        seed=spec.seed if spec else 0,
        weights=weights,
        file=doc.file, dims=dims, inputs=inputs, nodes=r.nodes, outputs=outputs, scopes=r.scopes,
        groups=r.groups, max_param_bytes=spec.limits.max_param_bytes if spec else 16 * 1024**3,
        diagnostics=r.diags.items, spec=spec, labels=labels, train=train, parts=parts,
        diffusion=spec.diffusion if spec else None)


def _check_diffusion(decl, doc: Doc, inputs: dict, outputs: dict, diags: Diagnostics) -> None:
    """The `diffusion:` section names the denoiser's inputs (the noisy sample, the timestep) and its
    prediction output: each must be one of the pipeline's."""
    for key, names, what in (("sample", inputs, "input"), ("timestep", inputs, "input"), ("output", outputs, "output")):
        name = getattr(decl, key)
        if key == "output" and name is None:
            if len(outputs) != 1:
                diags.add(E.MISSING_PARAM, f"`diffusion` needs an `output`: the pipeline has {len(outputs)} outputs",
                          loc=doc.key_loc(("diffusion",)), path="diffusion.output",
                          expected="the output holding the prediction: " + ", ".join(outputs))
            continue
        if name not in names:
            diags.add(E.UNKNOWN_REF, f"`diffusion.{key}`: the pipeline has no {what} `{name}`",
                      loc=doc.loc(("diffusion", key)),
                      path=f"diffusion.{key}", expected=f"one of its {what}s: " + ", ".join(names), found=str(name),
                      hint=did_you_mean(str(name), list(names)))


def _weights_source(spec: PipelineSpec, doc: Doc, diags: Diagnostics) -> Optional[WeightsSource]:
    """The spec's `weights:` (a path, or a section with rules): the path resolved against the
    spec's folder and checked now rather than at build time; each rule compiled, errors located."""
    decl = spec.weights
    section = isinstance(doc.data.get("weights"), dict)
    file = decl.file
    where = ("weights", "file") if section else ("weights",)
    path = (Path(doc.file).resolve().parent / file).resolve()
    if not path.exists():
        diags.add(E.FILE_UNREADABLE, f"weights file `{file}` not found", loc=doc.loc(where), path=".".join(where),
                  found=str(path), hint="the path is relative to this spec")
    rules: dict[str, list[Rule]] = {"rename": [], "ignore": [], "transpose": []}
    for what, items in (("rename", decl.rename), ("ignore", decl.ignore), ("transpose", decl.transpose)):
        for i, item in enumerate(items):
            pattern, repl = (item if what == "rename" else (item, None))
            rule = Rule(pattern, repl, f"weights.{what}[{i}]")
            problem = check_rule(pattern, repl)
            if problem:
                diags.add(E.BAD_PATTERN, f"{what} rule {rule.describe()}: {problem}", loc=doc.loc(("weights", what, i)),
                          path=f"weights.{what}[{i}]", found=pattern)
            rules[what].append(rule)
    return WeightsSource(str(path), tuple(rules["rename"]), tuple(rules["ignore"]), decl.strict, decl.cast,
                         tuple(rules["transpose"]))

"""Safe, positioned YAML loading.

Builds plain Python values straight from libyaml's event stream, iteratively, so that:
- every value and key keeps its `file:line:col` (`Doc.loc`, `Doc.key_loc`);
- explicit tags (`!!python/object`, `!foo`, even `!!str`) are rejected: nothing ever runs;
- duplicate keys are errors that name both places;
- nesting depth, file size and alias expansion are capped, so no input hangs or recurses;
- the source text of every scalar is kept (`Doc.raw`) to explain YAML 1.1 surprises.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from yaml.constructor import SafeConstructor
from yaml.nodes import ScalarNode
from yaml.resolver import Resolver

from . import errors as E
from .errors import Diagnostic, Location, SpecError

MAX_BYTES = 16 * 1024 * 1024
MAX_DEPTH = 64
MAX_ALIAS_NODES = 100_000

_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_resolver = Resolver()
_constructor = SafeConstructor()
_STR = "tag:yaml.org,2002:str"
_SCALAR_BUILDERS = {
    "tag:yaml.org,2002:null": lambda v: None,
    "tag:yaml.org,2002:bool": lambda v: _constructor.construct_yaml_bool(ScalarNode("", v)),
    "tag:yaml.org,2002:int": lambda v: _constructor.construct_yaml_int(ScalarNode("", v)),
    "tag:yaml.org,2002:float": lambda v: _constructor.construct_yaml_float(ScalarNode("", v)),
}

@dataclass
class Doc:
    """A loaded YAML document: its data plus a side table of source positions."""

    data: Any
    file: str
    locs: dict[tuple, Location] = field(default_factory=dict)
    key_locs: dict[tuple, Location] = field(default_factory=dict)
    raws: dict[tuple, str] = field(default_factory=dict)

    def loc(self, path: tuple) -> Location:
        """Location of the value at `path`, or of its nearest located ancestor."""
        path = tuple(path)
        while path:
            if path in self.locs:
                return self.locs[path]
            path = path[:-1]
        return self.locs.get((), Location(self.file, 1, 1))

    def key_loc(self, path: tuple) -> Location:
        """Location of the key that names `path` (falls back to the value's)."""
        path = tuple(path)
        return self.key_locs.get(path) or self.loc(path)

    def raw(self, path: tuple) -> str | None:
        """Source text of the scalar at `path`, if it was a plain (unquoted) scalar."""
        return self.raws.get(tuple(path))


def _loc(file: str, mark) -> Location:
    return Location(file, mark.line + 1, mark.column + 1)


def _err(code: str, msg: str, loc: Location, **kw) -> SpecError:
    return SpecError([Diagnostic(code, msg, loc=loc, **kw)])


def load_file(path: str | Path, *, max_bytes: int = MAX_BYTES) -> Doc:
    """Load a YAML file safely; raises SpecError with a location on any problem."""
    p = Path(path)
    name = str(path)
    try:
        size = p.stat().st_size
    except OSError as exc:
        raise _err(E.FILE_UNREADABLE, f"cannot read spec file: {exc.strerror or exc}", Location(name, 1, 1))
    if p.is_dir():
        raise _err(E.FILE_UNREADABLE, "expected a YAML file, found a directory", Location(name, 1, 1))
    if size > max_bytes:
        raise _err(E.FILE_TOO_LARGE, "spec file is too large", Location(name, 1, 1),
                   expected=f"at most {max_bytes} bytes", found=f"{size} bytes")
    try:
        with open(p, "rb") as f:  # read at most the limit: st_size is 0 for pipes and devices
            raw = f.read(max_bytes + 1)
        if len(raw) > max_bytes:
            raise _err(E.FILE_TOO_LARGE, "spec file is too large", Location(name, 1, 1),
                       expected=f"at most {max_bytes} bytes", found=f"more than {max_bytes} bytes")
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _err(E.FILE_UNREADABLE, f"spec file is not UTF-8 text ({exc.reason} at byte {exc.start})",
                   Location(name, 1, 1))
    except OSError as exc:
        raise _err(E.FILE_UNREADABLE, f"cannot read spec file: {exc.strerror or exc}", Location(name, 1, 1))
    return load_text(text, name, max_bytes=max_bytes)


def load_text(text: str, file: str = "<string>", *, max_bytes: int = MAX_BYTES,
              max_depth: int = MAX_DEPTH, max_alias_nodes: int = MAX_ALIAS_NODES) -> Doc:
    """Load YAML text into a `Doc`. The top level must be a mapping."""
    if len(text.encode("utf-8", "surrogatepass")) > max_bytes:
        raise _err(E.FILE_TOO_LARGE, "spec is too large", Location(file, 1, 1),
                   expected=f"at most {max_bytes} bytes", found=f"{len(text)} characters")
    doc = Doc(None, file)
    try:
        data = _build(text, doc, max_depth, max_alias_nodes)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        loc = _loc(file, mark) if mark else Location(file, 1, 1)
        problem = exc.problem or exc.context or "invalid YAML"
        raise _err(E.YAML_SYNTAX, f"YAML syntax error: {problem}", loc)
    except yaml.YAMLError as exc:
        raise _err(E.YAML_SYNTAX, f"YAML syntax error: {exc}", Location(file, 1, 1))
    if data is _EMPTY or data is None:
        raise _err(E.EMPTY_FILE, "spec is empty", Location(file, 1, 1),
                   expected="a mapping with `pipeline`, `inputs`, `blocks` and `outputs`", found="nothing")
    if not isinstance(data, dict):
        raise _err(E.NOT_A_MAPPING, "a spec must be a mapping at the top level", doc.loc(()),
                   expected="a mapping (`key: value` lines)", found=_describe(data))
    doc.data = data
    return doc


def load_value(text: str, file: str, *, col: int = 1, max_bytes: int = 64 * 1024) -> Doc:
    """Load one YAML value written outside a file (the VALUE of `--set BLOCK.PARAM=VALUE`):
    a scalar, `[1, 2]` or `{a: 1}`, read by the same safe rules as a spec (`0.3` a float,
    `true` a boolean, tags rejected). Positions are as if the text began at column `col` of
    line 1 of `file`; empty text is null."""
    if len(text.encode("utf-8", "surrogatepass")) > max_bytes:
        raise _err(E.FILE_TOO_LARGE, "value is too large", Location(file, 1, col),
                   expected=f"at most {max_bytes} bytes", found=f"{len(text)} characters")
    doc = Doc(None, file)
    try:  # leading spaces put every mark at its column in `file`
        data = _build(" " * (col - 1) + text, doc, MAX_DEPTH, MAX_ALIAS_NODES)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        loc = _loc(file, mark) if mark else Location(file, 1, col)
        lines = text.split("\n")
        if loc.line > len(lines):  # the end of the text, not a line after it
            loc = Location(file, len(lines), len(lines[-1]) + (col if len(lines) == 1 else 1))
        raise _err(E.YAML_SYNTAX, f"YAML syntax error: {exc.problem or exc.context or 'invalid YAML'}", loc)
    except yaml.YAMLError as exc:
        raise _err(E.YAML_SYNTAX, f"YAML syntax error: {exc}", Location(file, 1, col))
    doc.data = None if data is _EMPTY else data
    doc.locs.setdefault((), Location(file, 1, col))
    return doc


_EMPTY = object()


def _short_tag(tag: str) -> str:
    return "!!" + tag[len("tag:yaml.org,2002:"):] if tag.startswith("tag:yaml.org,2002:") else tag


def _describe(value: Any) -> str:
    if isinstance(value, list):
        return "a list"
    if isinstance(value, str):
        return f"a string {value!r}"
    return f"{type(value).__name__} {value!r}"


class _Frame:
    __slots__ = ("container", "path", "anchor", "pending_key", "pending_key_loc", "size", "is_map")

    def __init__(self, container, path, anchor, is_map):
        self.container = container
        self.path = path
        self.anchor = anchor
        self.pending_key = _EMPTY
        self.pending_key_loc = None
        self.size = 1
        self.is_map = is_map


def _scalar(ev) -> Any:
    if ev.implicit[0]:
        tag = _resolver.resolve(ScalarNode, ev.value, ev.implicit)
        build = _SCALAR_BUILDERS.get(tag)
        if build is not None:
            return build(ev.value)
    return ev.value  # quoted, or a plain scalar that YAML would read as a timestamp etc.


def _build(text: str, doc: Doc, max_depth: int, max_alias_nodes: int) -> Any:
    file = doc.file
    stack: list[_Frame] = []
    anchors: dict[str, tuple[Any, int]] = {}
    open_anchors: set[str] = set()
    alias_budget = max_alias_nodes
    result: Any = _EMPTY
    documents = 0

    def attach(value: Any, loc: Location, size: int, raw: str | None = None) -> None:
        nonlocal result
        if not stack:
            result = value
            doc.locs[()] = loc
            if raw is not None:
                doc.raws[()] = raw
            return
        top = stack[-1]
        top.size += size
        if top.is_map:
            if top.pending_key is _EMPTY:
                key = value
                if isinstance(key, (dict, list)):
                    raise _err(E.YAML_SYNTAX, "mapping keys must be plain scalars", loc)
                if key in top.container:
                    first = doc.key_locs.get(top.path + (key,))
                    raise SpecError([Diagnostic(
                        E.DUPLICATE_KEY, f"duplicate key `{key}`", loc=loc,
                        path=".".join(map(str, top.path + (key,))),
                        related=[("first defined", first)] if first else [],
                        hint="each key may appear once in a mapping; remove or rename one")])
                top.pending_key = key
                top.pending_key_loc = loc
                return
            key = top.pending_key
            path = top.path + (key,)
            top.container[key] = value
            top.pending_key = _EMPTY
            doc.key_locs[path] = top.pending_key_loc
        else:
            path = top.path + (len(top.container),)
            top.container.append(value)
        doc.locs[path] = loc
        if raw is not None:
            doc.raws[path] = raw

    def child_path() -> tuple:
        if not stack:
            return ()
        top = stack[-1]
        if top.is_map:
            return top.path + (top.pending_key,) if top.pending_key is not _EMPTY else top.path + ("<key>",)
        return top.path + (len(top.container),)

    for ev in yaml.parse(text, Loader=_Loader):
        kind = type(ev)
        if kind is yaml.ScalarEvent:
            loc = _loc(file, ev.start_mark)
            if ev.tag is not None:
                raise _err(E.TAG_REJECTED, f"YAML tag `{_short_tag(ev.tag)}` is not allowed", loc,
                           hint="specs are plain data; remove the tag")
            try:
                value = _scalar(ev)
            except ValueError:  # an integer longer than Python converts (4300 digits)
                raise _err(E.YAML_SYNTAX, "number is too long to read", loc, expected="at most 4300 digits",
                           found=f"{len(ev.value)} characters") from None
            if isinstance(value, (datetime.date, datetime.datetime)):
                value = ev.value
            if ev.anchor:
                anchors[ev.anchor] = (value, 1)
            attach(value, loc, 1, raw=ev.value if ev.implicit[0] else None)
        elif kind is yaml.MappingStartEvent or kind is yaml.SequenceStartEvent:
            loc = _loc(file, ev.start_mark)
            if ev.tag is not None:
                raise _err(E.TAG_REJECTED, f"YAML tag `{_short_tag(ev.tag)}` is not allowed", loc,
                           hint="specs are plain data; remove the tag")
            if len(stack) >= max_depth:
                raise _err(E.TOO_DEEP, "YAML nesting is too deep", loc,
                           expected=f"at most {max_depth} levels", found=f"more than {max_depth}")
            is_map = kind is yaml.MappingStartEvent
            container: Any = {} if is_map else []
            path = child_path()
            if stack and stack[-1].is_map and stack[-1].pending_key is _EMPTY:
                raise _err(E.YAML_SYNTAX, "mapping keys must be plain scalars", loc)
            doc.locs[path] = loc
            if ev.anchor:
                open_anchors.add(ev.anchor)
            stack.append(_Frame(container, path, ev.anchor, is_map))
        elif kind is yaml.MappingEndEvent or kind is yaml.SequenceEndEvent:
            frame = stack.pop()
            if frame.anchor:
                open_anchors.discard(frame.anchor)
                anchors[frame.anchor] = (frame.container, frame.size)
            attach(frame.container, doc.locs[frame.path], frame.size)
        elif kind is yaml.AliasEvent:
            loc = _loc(file, ev.start_mark)
            if ev.anchor in open_anchors:
                raise _err(E.ALIAS_LIMIT, f"alias `*{ev.anchor}` refers to itself", loc,
                           hint="a recursive alias would expand forever; remove it")
            if ev.anchor not in anchors:
                raise _err(E.YAML_SYNTAX, f"unknown alias `*{ev.anchor}`", loc)
            value, size = anchors[ev.anchor]
            alias_budget -= size
            if alias_budget < 0:
                raise _err(E.ALIAS_LIMIT, "aliases expand to too many values", loc,
                           expected=f"at most {max_alias_nodes} values from aliases",
                           found=f"more than {max_alias_nodes}", hint="aliases that nest aliases grow exponentially")
            attach(value, loc, size)
        elif kind is yaml.DocumentStartEvent:
            documents += 1
            if documents > 1:
                raise _err(E.YAML_SYNTAX, "a spec file holds one YAML document", _loc(file, ev.start_mark),
                           found="a second document (`---`)")
    return result

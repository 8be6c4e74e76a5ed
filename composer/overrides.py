"""Overrides from outside a spec: `--set BLOCK.PARAM=VALUE`, or `load(path, overrides={...})`.

An override names a block of the spec, or one inside a sub-pipeline by its path
(`backbone/conv1`), and what to change on it: a param (`out_channels`), a field of a param
group (`group.field`), `repeat` or `frozen`; or a key of the `train:` section
(`train.optimizer.lr`, `train.data.val_fraction`), unless the spec has a block named `train`. The value is written into the loaded document
before the spec is parsed, located at the flag (its "file" is the flag, `--set
roi.score_thresh=0.3`, line 1, columns counted in `roi.score_thresh=0.3`), so it is checked
exactly like a value written in the spec: strict params, type inference, and errors that
point at the flag. An override for a block inside a sub-pipeline travels as that
sub-pipeline block's `overrides:` entry, so it is applied as a written override would be,
after the spec's own (the flag wins).
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping, Optional, Union

from . import errors as E
from ._yaml import Doc, load_value
from .errors import Diagnostic, Location, SpecError, did_you_mean

# what an override may change on a block, and on a sub-pipeline block (`spec:`)
FIXED = ("block", "spec", "in", "overrides")
SUBPIPELINE_KEYS = ("repeat", "frozen", "description")
TRAIN = "train"   # `--set train.KEY=VALUE` sets a key of the `train:` section

Overrides = Union[Mapping[str, Any], Iterable[str], None]


@dataclass
class Override:
    """One override: `key` (`roi.score_thresh`, `backbone/conv1.out_channels`) and its value,
    with where it was written: `source` is shown as the file of its diagnostics."""

    key: str
    value: Any
    source: str
    key_col: int = 1                  # column of `key` in the text the columns count in
    value_doc: Optional[Doc] = None   # positions and plain-scalar text of the value, when parsed from text

    def loc(self, offset: int = 0) -> Location:
        """Where the key's character `offset` is (its block name, its param name)."""
        return Location(self.source, 1, self.key_col + offset)

    def value_loc(self) -> Location:
        return self.value_doc.loc(()) if self.value_doc is not None else self.loc()


@dataclass
class Pending:
    """An override still to apply inside a sub-pipeline: `rest` is the part of its key below
    the sub-pipeline blocks already entered (`conv1.out_channels` of `backbone/conv1.out_channels`)."""

    override: Override
    rest: str

    @property
    def offset(self) -> int:
        return len(self.override.key) - len(self.rest)


def _bad(message: str, loc: Location, **kw) -> Diagnostic:
    return Diagnostic(E.BAD_SET, message, loc=loc, **kw)


_FORM = "BLOCK.PARAM=VALUE (a block inside a sub-pipeline as SUB/BLOCK.PARAM=VALUE)"


def _check_key(key: str, source: str, col: int) -> Optional[Diagnostic]:
    """None when `key` has the form `block[/block...].param[.field...]`."""
    from .spec import IDENT_RE, NAME_RE

    where = Location(source, 1, col)
    name, dot, param = key.partition(".")
    if not dot:
        return _bad(f"`{key}` names no param", where, expected=f"`{_FORM}`", found=key,
                    hint=f"write `{key}.PARAM=VALUE`" if NAME_RE.match(key) else None)
    if not NAME_RE.match(name):
        return _bad(f"`{name}` is not a block name", where, expected="a block name, or a path `sub/block`",
                    found=name or "nothing")
    offset = len(name) + 1
    for part in param.split("."):
        if not IDENT_RE.match(part):
            return _bad(f"`{part}` is not a param name", Location(source, 1, col + offset),
                        expected="letters, digits and _, not starting with a digit", found=part or "nothing")
        offset += len(part) + 1
    return None


def parse_flag(text: str) -> tuple[Optional[Override], list[Diagnostic]]:
    """`BLOCK.PARAM=VALUE` as given to `--set`; VALUE is YAML (`0.3`, `true`, `[1, 2]`, `relu`)."""
    source = f"--set {text}"
    key, eq, value_text = text.partition("=")
    if not eq:
        return None, [_bad(f"`--set {text}` has no value", Location(source, 1, 1), expected=f"`--set {_FORM}`",
                           found=text, hint=f"write `--set {text}=VALUE`")]
    stripped = key.strip()
    col = 1 + len(key) - len(key.lstrip())
    bad = _check_key(stripped, source, col)
    if bad is not None:
        return None, [bad]
    try:
        value_doc = load_value(value_text, source, col=len(key) + 2)
    except SpecError as exc:
        return None, exc.diagnostics
    return Override(stripped, value_doc.data, source, col, value_doc), []


def _plain(value: Any) -> Any:
    """A Python value as YAML would give it: tuples become lists."""
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def parse_overrides(overrides: Overrides) -> tuple[list[Override], list[Diagnostic]]:
    """Overrides from a mapping `{"roi.score_thresh": 0.3}` (values as they are) or from
    `BLOCK.PARAM=VALUE` texts (values read as YAML); returns them and what is wrong with them."""
    found: list[Override] = []
    diags: list[Diagnostic] = []
    if overrides is None:
        return found, diags
    if isinstance(overrides, str):
        overrides = [overrides]
    if isinstance(overrides, Mapping):
        for key, value in overrides.items():
            source = f"overrides[{key!r}]"
            if not isinstance(key, str):
                diags.append(_bad(f"override key {key!r} is not a string", Location(source, 1, 1),
                                  expected=f"`{_FORM.split('=')[0]}`", found=type(key).__name__))
                continue
            bad = _check_key(key, source, 1)
            if bad is not None:
                diags.append(bad)
            else:
                found.append(Override(key, _plain(value), source))
    else:
        for text in overrides:
            o, problems = parse_flag(str(text))
            diags.extend(problems)
            if o is not None:
                found.append(o)
    first: dict[str, Override] = {}
    unique = []
    for o in found:
        if o.key in first:
            diags.append(_bad(f"`{o.key}` is set twice", o.loc(), related=[("first set", first[o.key].loc())],
                              hint="give each override once"))
            continue
        first[o.key] = o
        unique.append(o)
    return unique, diags


def apply_overrides(doc: Doc, overrides: list[Override]) -> tuple[Doc, list[Diagnostic]]:
    """A copy of `doc` with the overrides written in, and the problems found (wrong blocks,
    keys that cannot be set); the values themselves are checked when the copy is parsed."""
    doc = dataclasses.replace(doc, data=copy.deepcopy(doc.data), locs=dict(doc.locs), key_locs=dict(doc.key_locs),
                              raws=dict(doc.raws))
    diags: list[Diagnostic] = []
    apply_pending(doc, [Pending(o, o.key) for o in overrides], diags)
    return doc, diags


def _scope(p: Pending, doc: Doc) -> str:
    """` in sub-pipeline `backbone` (parts/x.yaml)` for a pending override below the top."""
    if not p.offset:
        return ""
    try:
        file = str(Path(doc.file).relative_to(Path.cwd()))
    except ValueError:
        file = doc.file
    return f" in sub-pipeline `{p.override.key[:p.offset - 1]}` ({file})"


def apply_pending(doc: Doc, pending: list[Pending], diags: list[Diagnostic]) -> None:
    """Write overrides into `doc` (a spec, or a sub-pipeline's copy): each names a block of
    this spec, or goes on to a sub-pipeline block's `overrides:`."""
    data = doc.data if isinstance(doc.data, dict) else {}
    blocks = data.get("blocks")
    if not isinstance(blocks, dict):
        return  # the spec has no `blocks:` mapping: that is reported as a spec error
    for p in pending:
        o = p.override
        path, _, param_path = p.rest.partition(".")
        head, slash, deeper = path.partition("/")
        at = p.offset
        if head == TRAIN and not slash and not at and head not in blocks:
            _set_train(doc, data, o, param_path, diags)
            continue
        if head not in blocks:
            names = [str(b) for b in blocks]
            listed = ", ".join(names) if len(names) <= 12 else ", ".join(names[:12]) + f", … ({len(names)} in all)"
            diags.append(_bad(f"`{o.key}`: no block `{head}`{_scope(p, doc)}", o.loc(at), found=head,
                              hint=did_you_mean(head, names) or f"the blocks are: {listed}"))
            continue
        body = blocks[head]
        if not isinstance(body, dict):
            continue  # reported when the spec is parsed
        is_sub = "spec" in body and "block" not in body
        name_loc = o.loc(at)
        if slash:
            inner = at + len(head) + 1
            first = deeper.split("/", 1)[0]
            if not is_sub:
                hint = (f"the copies of a repeated block share their params: set `{o.key[:at]}{head}.{param_path}`"
                        if first.isdigit() else None)
                diags.append(_bad(f"`{o.key}`: `{head}` is a block, not a sub-pipeline", name_loc,
                                  found=f"block: {body.get('block')}", hint=hint))
                continue
            if first.isdigit():
                rest = deeper.split("/", 1)[1] if "/" in deeper else ""
                diags.append(_bad(f"`{o.key}`: the copies of a repeated sub-pipeline share their params",
                                  o.loc(inner), found=first,
                                  hint=f"set `{o.key[:inner]}{rest}.{param_path}` for every copy" if rest else None))
                continue
            subs = body.get("overrides")
            if subs is None:
                subs = body["overrides"] = {}
            if isinstance(subs, dict):
                key = f"{deeper}.{param_path}"
                subs[key] = Pending(o, key)
                opath = ("blocks", head, "overrides", key)
                doc.locs[opath], doc.key_locs[opath] = o.value_loc(), o.loc(inner)
            continue
        param, _, fields = param_path.partition(".")
        param_loc = o.loc(at + len(path) + 1)
        if param in FIXED:
            diags.append(_bad(f"`{o.key}`: `{param}` cannot be set from outside the spec", param_loc, found=param,
                              hint="an override changes params, `repeat` and `frozen`; edit the spec to change "
                                   "what a block is or what feeds it"))
            continue
        if is_sub and param not in SUBPIPELINE_KEYS:
            diags.append(_bad(f"`{o.key}`: `{head}` is a sub-pipeline; set a param of one of its blocks",
                              param_loc, expected=f"`{o.key[:at]}{head}/BLOCK.{param_path}`, or one of: "
                              + ", ".join(SUBPIPELINE_KEYS), found=param))
            continue
        _write(doc, ("blocks", head), body, [param] + (fields.split(".") if fields else []), o, param_loc, diags)


def _set_train(doc: Doc, data: dict, o: Override, param_path: str, diags: list[Diagnostic]) -> None:
    """`--set train.optimizer.lr=1e-3`: a key of the spec's `train:` section (created if the spec
    has none); checked when the section is."""
    section = data.get(TRAIN)
    if section is None:
        section = data[TRAIN] = {}
    if not isinstance(section, dict):
        return  # reported when the spec is parsed
    _write(doc, (TRAIN,), section, param_path.split("."), o, o.loc(len(TRAIN) + 1), diags)


def _write(doc: Doc, base: tuple, body: dict, names: list[str], o: Override, key_loc: Location,
           diags: list[Diagnostic]) -> None:
    """Set body[names[0]][names[1]]... = the value, with its positions in place of the old ones."""
    target = body
    for i, name in enumerate(names[:-1]):
        nxt = target.get(name)
        if nxt is None:
            nxt = target[name] = {}
        if not isinstance(nxt, dict):
            diags.append(_bad(f"`{o.key}`: `{'.'.join(names[:i + 1])}` is not a group of params", key_loc,
                              found=repr(nxt)))
            return
        target = nxt
    target[names[-1]] = o.value
    path = base + tuple(names)
    for table in (doc.locs, doc.key_locs, doc.raws):
        for k in [k for k in table if k[:len(path)] == path]:
            del table[k]
    doc.key_locs[path] = key_loc
    if o.value_doc is None:
        doc.locs[path] = o.value_loc()
        return
    for sub, loc in o.value_doc.locs.items():
        doc.locs[path + sub] = loc
    for sub, loc in o.value_doc.key_locs.items():
        doc.key_locs[path + sub] = loc
    for sub, raw in o.value_doc.raws.items():
        doc.raws[path + sub] = raw

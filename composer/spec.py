"""The spec language: pydantic models of a pipeline spec and the parser from YAML to them.

Parsing is tolerant: it collects every error it finds (all blocks are checked) and keeps
invalid blocks as nodes without params, so later stages (and the diagram) can still show
where they sit. `parse` returns a `ParsedSpec`; its `diagnostics` say what is wrong.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from . import errors as E
from ._yaml import Doc
from .block import Block
from .diffusion import DiffusionDecl
from .errors import Diagnostic, Diagnostics, Location, did_you_mean
from .errors import found_text as _found
from .params import NonNegInt, PosFloat, PosInt
from .registry import load_blocks
from .types import DTYPES, KINDS

NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(/[A-Za-z0-9_]+)*$")
IDENT_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
RESERVED = ("block", "spec", "in", "repeat", "frozen", "overrides", "description")
DEFAULT_MAX_PARAM_BYTES = 16 * 1024**3
MAX_REPEAT = 10_000


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class DimDecl(_Model):
    """What is known about a symbolic dim: a divisor, and the sizes used to verify exports."""

    multiple_of: PosInt = 1
    sizes: Optional[list[PosInt]] = Field(default=None, min_length=2)
    example: Optional[PosInt] = None
    description: str = ""


_FRACTION = re.compile(r"^\s*(\d+(?:\.\d*)?)\s*/\s*(\d+(?:\.\d*)?)\s*$")


def _number_or_fraction(schema: dict) -> None:
    """JSON Schema of `scale`: a positive number, or a fraction written as text (`1/255`)."""
    schema.pop("type", None)
    schema.pop("exclusiveMinimum", None)
    schema["anyOf"] = [{"type": "number", "exclusiveMinimum": 0}, {"type": "string", "pattern": _FRACTION.pattern}]


class Preprocess(_Model):
    """How an image file becomes this input: resize (shorter side), center crop, scale, normalise."""

    resize: Optional[PosInt] = None
    crop: Optional[PosInt] = None
    scale: PosFloat = Field(default=1.0 / 255.0, json_schema_extra=_number_or_fraction)
    mean: Optional[list[float]] = None
    std: Optional[list[PosFloat]] = None
    channels: Literal["rgb", "bgr", "gray"] = "rgb"

    @field_validator("scale", mode="before")
    @classmethod
    def _fraction(cls, value: Any) -> Any:
        """`scale: 1/255` reads as the fraction it spells (YAML gives the string "1/255")."""
        m = _FRACTION.match(value) if isinstance(value, str) else None
        if m and float(m.group(2)) != 0:
            return float(m.group(1)) / float(m.group(2))
        return value


ColumnName = Annotated[str, Field(min_length=1)]


class GraphFieldDecl(_Model):
    """One field of a graph input, with its dtype written out."""

    shape: list[Union[int, str]]
    dtype: Literal[DTYPES] = "float32"  # type: ignore[valid-type]


class InputDecl(_Model):
    """A pipeline input: kind, symbolic shape and dtype (and optional preprocessing; for a
    `series` input, the CSV columns that are its features; for a `graph` input, the shapes of
    its fields)."""

    kind: str
    shape: Optional[list[Union[int, str]]] = None
    fields: Optional[dict[str, Union[list[Union[int, str]], GraphFieldDecl]]] = Field(
        default=None, description="graph inputs: the shape of each field, e.g. {x: [N, 34], edge_index: [2, E]} "
                                  "(optional: edge_weight [E], edge_attr [E, Fe], batch [N])")
    dtype: Literal[DTYPES] = "float32"  # type: ignore[valid-type]
    preprocess: Optional[Preprocess] = None
    columns: Optional[list[ColumnName]] = Field(
        default=None, min_length=1,
        description="series inputs: the CSV columns read as the F features, in this order (default: every column "
                    "of the file not in `ignore_columns`, in file order)")
    ignore_columns: list[ColumnName] = Field(
        default=[], description="series inputs: CSV columns that are not features (a timestamp, an id)")
    description: str = ""


class WeightsDecl(_Model):
    """The `weights:` section: a checkpoint (path relative to the spec, or a Hugging Face
    folder) and how its keys map (see `composer.weights`)."""

    file: str = Field(min_length=1)
    rename: list[Annotated[list[str], Field(min_length=2, max_length=2)]] = Field(
        default=[], description="[regex, replacement] pairs applied in order to the file's keys before matching")
    ignore: list[str] = Field(default=[], description="regexes of file keys to leave out")
    transpose: list[str] = Field(default=[], description="regexes of file keys of matrices stored [in, out] "
                                                         "(GPT-2's Conv1D), transposed as read")
    strict: bool = Field(default=True, description="every pipeline tensor must be filled")
    cast: bool = Field(default=False, description="allow dtype casts that change values")


class PartDecl(_Model):
    """A part of the pipeline that exports and runs on its own: an encoder-decoder's encoder (run once
    per prompt) and its decoder step (run once per token). See `composer.parts`."""

    outputs: list[str] = Field(min_length=1, description="the spec outputs the part computes")
    given: dict[str, str] = Field(default={}, description="extra inputs of the part: name -> the value it stands "
                                                          "for (`block.port`), computed by another part")


class Limits(_Model):
    max_param_bytes: PosInt = DEFAULT_MAX_PARAM_BYTES


class PipelineSpec(_Model):
    """A whole spec file. `blocks` values are validated per block type (see `parse`)."""

    pipeline: str
    description: str = ""
    seed: NonNegInt = 0
    weights: Optional[WeightsDecl] = Field(
        default=None, description="a checkpoint (path relative to the spec, or a Hugging Face folder), or a "
                                  "section with `file`, `rename`, `ignore`, `strict`, `cast`")
    dims: dict[str, DimDecl] = {}
    inputs: dict[str, InputDecl] = Field(min_length=1)
    blocks: dict[str, dict[str, Any]] = Field(min_length=1)
    outputs: dict[str, str] = Field(min_length=1)
    limits: Limits = Limits()
    parts: dict[str, PartDecl] = Field(default={}, description="parts exported and run on their own: "
                                                               "{name: {outputs: [...], given: {input: block.port}}}")
    diffusion: Optional[DiffusionDecl] = Field(
        default=None, description="a denoiser's noise schedule, prediction and default sampler: what `composer sample` "
                                  "and the `diffusion` objective run it with (docs/generative.md)")
    @field_validator("weights", mode="before")
    @classmethod
    def _weights_path(cls, value: Any) -> Any:
        """`weights: FILE` is short for `weights: {file: FILE}`."""
        return {"file": value} if isinstance(value, str) else value

    # validated by composer.train.config (located errors for each part of the section)
    train: Any = Field(default=None, json_schema_extra={
        "type": "object", "description": "how `composer train` trains this pipeline: data, augment, loss, metrics, "
                                         "optimizer, schedule, batch_size, epochs, … (docs/training.md)"})
    # validated by composer.labels (a built-in name, a list or a file next to the spec)
    labels: Any = Field(default=None, json_schema_extra={
        "anyOf": [{"type": "string"}, {"type": "array", "items": {"type": "string", "minLength": 1}, "minItems": 1}],
        "description": "class names, index = class id: `imagenet`, `coco`, a list of names, or a text file "
                       "(one name per line) next to the spec"})


@dataclass
class Ref:
    """A reference to a value: `node` (its only output), `node.port`, or a field of a
    structured port, `node.port.field` (one scale of a backbone's `features`)."""

    node: str
    port: Optional[str]
    loc: Optional[Location] = None
    path: str = ""
    field: Optional[str] = None

    def __str__(self) -> str:
        text = self.node if self.port is None else f"{self.node}.{self.port}"
        return text if self.field is None else f"{text}.{self.field}"


Binding = Union[Ref, list[Ref]]


@dataclass
class BlockDecl:
    """One entry of `blocks:` as written: a block type or a sub-pipeline, its wiring and params."""

    name: str
    type: Optional[str]              # registered block type, or None for a sub-pipeline
    spec: Optional[str]              # sub-pipeline file, relative to this spec
    params: Optional[Block]          # validated params; None when invalid or a sub-pipeline
    raw_params: dict[str, Any]
    bindings: Union[Binding, dict[str, Binding], None]
    repeat: int = 1
    frozen: bool = False
    overrides: dict[str, Any] = field(default_factory=dict)
    description: str = ""
    loc: Optional[Location] = None
    path: tuple = ()


@dataclass
class ParsedSpec:
    spec: Optional[PipelineSpec]
    blocks: dict[str, BlockDecl]
    doc: Doc
    diagnostics: list[Diagnostic]
    outputs: dict[str, Ref] = field(default_factory=dict)
    parts: dict[str, dict[str, Ref]] = field(default_factory=dict)   # part -> its `given` references

    @property
    def file(self) -> str:
        return self.doc.file


def dotted(path: tuple) -> str:
    return ".".join(str(p) for p in path)


_YAML11_BOOLS = {"yes", "no", "on", "off", "y", "n", "true", "false"}


def _hint(err: dict, raw: Optional[str], value: Any) -> Optional[str]:
    typ = err["type"]
    if isinstance(value, bool) and raw is not None and raw.lower() in _YAML11_BOOLS and raw.lower() not in ("true", "false"):
        return f'YAML 1.1 reads unquoted `{raw}` as {str(value).lower()}; write "{raw}" in quotes if you mean the text'
    if typ in ("string_type", "literal_error") and isinstance(value, float) and raw is not None:
        return f'YAML reads `{raw}` as the number {value}; write "{raw}" in quotes to keep it as text'
    if typ in ("int_type", "float_type") and isinstance(value, str):
        try:
            float(value)
        except ValueError:
            return None
        mantissa, e, exponent = value.partition("e") if "e" in value else value.partition("E")
        if e and ("." not in mantissa or exponent[:1] not in ("+", "-")):  # YAML 1.1 reads `1e-3` as text
            dotted_form = (mantissa + ("" if "." in mantissa else ".0") + e
                           + ("" if exponent[:1] in ("+", "-") else "+") + exponent)
            if raw is not None:
                return f"YAML 1.1 reads `{raw}` as text, not a number; write {dotted_form}"
            return f"write {dotted_form} without quotes (YAML 1.1 reads an exponent only after a dot, with a sign)"
        return f"write {value} without quotes"
    if typ == "int_type" and isinstance(value, bool):
        return "a boolean is not a number here"
    if typ == "literal_error" and isinstance(value, str):
        options = re.findall(r"'([^']*)'", str((err.get("ctx") or {}).get("expected", "")))
        return did_you_mean(value, options)
    return None


def _expected(err: dict) -> str:
    typ = err["type"]
    ctx = err.get("ctx") or {}
    if typ == "greater_than_equal":
        return f"a number >= {ctx.get('ge')}"
    if typ == "greater_than":
        return f"a number > {ctx.get('gt')}"
    if typ in ("less_than", "less_than_equal"):
        return f"a number {'<' if typ == 'less_than' else '<='} {ctx.get('lt', ctx.get('le'))}"
    if typ == "literal_error":
        return f"one of {ctx.get('expected')}"
    msg = err["msg"]
    return msg[len("Input should be "):] if msg.startswith("Input should be ") else msg


_UNION_TAG = re.compile(r"^(constrained-)?(int|str|float|bool|list|dict|none|tuple|function-[a-z-]+)(\[.*\])?$"
                        r"|^literal\[.*\]$|^union\[.*\]$|^function-")


def pydantic_diagnostics(exc: ValidationError, doc: Doc, base: tuple, fields: list[str],
                         what: str = "param", extra_names: tuple = (),
                         sections: Optional[dict[str, list[str]]] = None) -> list[Diagnostic]:
    """Turn pydantic's errors into located diagnostics under spec path `base`; `sections`
    names the fields of nested sections (`weights`), for did-you-mean on their keys.

    A union param (`kernel: 3 | [3, 3]`) fails once per member; those merge into one
    diagnostic whose `expected` lists every alternative.
    """
    out: list[Diagnostic] = []
    by_loc: dict[tuple, Diagnostic] = {}
    for err in exc.errors():
        loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and _UNION_TAG.match(p)))
        path = base + loc
        typ = err["type"]
        if typ == "extra_forbidden":
            key = loc[-1]
            parent_fields = fields if len(loc) == 1 else (sections or {}).get(loc[0], []) if len(loc) == 2 else []
            hint = did_you_mean(key, parent_fields + list(extra_names)) if parent_fields else None
            out.append(Diagnostic(E.UNKNOWN_PARAM, f"unknown {what} `{key}`", loc=doc.key_loc(path), path=dotted(path),
                                  expected=("one of: " + ", ".join(parent_fields)) if parent_fields else None,
                                  found=str(key) if parent_fields else None, hint=hint))
        elif typ == "missing":
            out.append(Diagnostic(E.MISSING_PARAM, f"missing required {what} `{loc[-1]}`", loc=doc.loc(path[:-1]),
                                  path=dotted(path), hint=f"add `{loc[-1]}: ...`"))
        else:
            value = err.get("input")
            if loc in by_loc:
                d = by_loc[loc]
                alt = _expected(err)
                if alt not in d.expected.split(" | "):
                    d.expected += f" | {alt}"
                d.hint = d.hint or _hint(err, doc.raw(path), value)
                continue
            d = Diagnostic(E.INVALID_VALUE, f"invalid value for `{dotted(loc)}`", loc=doc.loc(path),
                           path=dotted(path), expected=_expected(err), found=_found(value),
                           hint=_hint(err, doc.raw(path), value))
            by_loc[loc] = d
            out.append(d)
    return out


def parse_ref(text: Any, doc: Doc, path: tuple, diags: Diagnostics) -> Optional[Ref]:
    loc = doc.loc(path)
    if not isinstance(text, str):
        diags.add(E.INVALID_VALUE, "a reference must be a string `block` or `block.port`", loc=loc,
                  path=dotted(path), expected="`block` or `block.port`", found=_found(text))
        return None
    node, _, rest = text.strip().partition(".")
    port, _, fld = rest.partition(".")
    if not NAME_RE.match(node) or (rest and not IDENT_RE.match(port)) or (fld and not IDENT_RE.match(fld)):
        diags.add(E.INVALID_VALUE, f"`{text}` is not a reference", loc=loc, path=dotted(path),
                  expected="`block`, `block.port` or `block.port.field`", found=_found(text))
        return None
    return Ref(node, port or None, loc, dotted(path), fld or None)


def _parse_binding(value: Any, doc: Doc, path: tuple, diags: Diagnostics):
    if isinstance(value, list):
        if not value:
            diags.add(E.BAD_BINDING, "an input list must not be empty", loc=doc.loc(path), path=dotted(path))
            return None
        refs = [parse_ref(v, doc, path + (i,), diags) for i, v in enumerate(value)]
        return None if any(r is None for r in refs) else refs
    return parse_ref(value, doc, path, diags)


def parse_bindings(value: Any, doc: Doc, path: tuple, diags: Diagnostics):
    if isinstance(value, dict):
        out = {}
        for port, v in value.items():
            b = _parse_binding(v, doc, path + (port,), diags)
            if b is not None:
                out[str(port)] = b
        return out
    return _parse_binding(value, doc, path, diags)


def _check_name(name: Any, doc: Doc, path: tuple, diags: Diagnostics, what: str, ident: bool = False) -> bool:
    pattern = IDENT_RE if ident else NAME_RE
    if not isinstance(name, str) or not pattern.match(name):
        diags.add(E.BAD_NAME, f"`{name}` is not a valid {what} name", loc=doc.key_loc(path), path=dotted(path),
                  expected="letters, digits and _, not starting with a digit", found=_found(name))
        return False
    return True


def parse(doc: Doc) -> ParsedSpec:
    """Validate a loaded document as a pipeline spec; collects every error it can find."""
    registry = load_blocks()
    diags = Diagnostics()
    data = doc.data
    top_fields = list(PipelineSpec.model_fields)
    spec: Optional[PipelineSpec] = None
    try:
        spec = PipelineSpec.model_validate(data)
    except ValidationError as exc:
        sections = {"weights": list(WeightsDecl.model_fields), "limits": list(Limits.model_fields)}
        diags.extend(d for d in pydantic_diagnostics(exc, doc, (), top_fields, what="key", sections=sections)
                     if not (d.path.startswith("blocks.") and d.path.count(".") >= 2))
    for i, d in enumerate(diags.items):  # top-level unknown keys are structure errors
        if d.code == E.UNKNOWN_PARAM and "." not in d.path:
            d.code = E.UNKNOWN_FIELD
            d.message = d.message.replace("unknown key", "unknown top-level key")
        elif d.code == E.MISSING_PARAM and "." not in d.path:
            d.code = E.UNKNOWN_FIELD
            d.message = d.message.replace("missing required key", "missing required top-level key")

    inputs = data.get("inputs") if isinstance(data.get("inputs"), dict) else {}
    for name, decl in inputs.items():
        if _check_name(name, doc, ("inputs", name), diags, "input", ident=True) and isinstance(decl, dict):
            kind = decl.get("kind")
            if isinstance(kind, str) and kind not in KINDS:
                diags.add(E.INVALID_VALUE, f"unknown kind `{kind}`", loc=doc.loc(("inputs", name, "kind")),
                          path=f"inputs.{name}.kind", expected="one of: " + ", ".join(KINDS), found=kind,
                          hint=did_you_mean(kind, KINDS))
            _check_columns(name, decl, doc, diags)

    blocks: dict[str, BlockDecl] = {}
    raw_blocks = data.get("blocks") if isinstance(data.get("blocks"), dict) else {}
    for name, body in raw_blocks.items():
        path = ("blocks", name)
        if not _check_name(name, doc, path, diags, "block"):
            continue
        if name in inputs:
            diags.add(E.NAME_CLASH, f"block `{name}` has the same name as an input", loc=doc.key_loc(path),
                      path=dotted(path), related=[("the input is declared", doc.key_loc(("inputs", name)))],
                      hint="rename the block")
            continue
        if not isinstance(body, dict):
            continue  # reported by the PipelineSpec model
        decl = _parse_block(name, body, doc, path, registry, diags)
        if decl is not None:
            blocks[name] = decl

    outputs: dict[str, Ref] = {}
    raw_outputs = data.get("outputs") if isinstance(data.get("outputs"), dict) else {}
    for name, ref in raw_outputs.items():
        if _check_name(name, doc, ("outputs", name), diags, "output", ident=True):
            r = parse_ref(ref, doc, ("outputs", name), diags)
            if r is not None:
                outputs[name] = r

    for name, decl in (data.get("dims") or {}).items() if isinstance(data.get("dims"), dict) else []:
        _check_name(name, doc, ("dims", name), diags, "dim", ident=True)

    parts: dict[str, dict[str, Ref]] = {}
    raw_parts = data.get("parts") if isinstance(data.get("parts"), dict) else {}
    for pname, body in raw_parts.items():
        if not _check_name(pname, doc, ("parts", pname), diags, "part", ident=True) or not isinstance(body, dict):
            continue
        given = body.get("given") if isinstance(body.get("given"), dict) else {}
        parts[pname] = {}
        for gname, ref in given.items():
            if _check_name(gname, doc, ("parts", pname, "given", gname), diags, "input", ident=True):
                r = parse_ref(ref, doc, ("parts", pname, "given", gname), diags)
                if r is not None:
                    parts[pname][gname] = r

    return ParsedSpec(spec, blocks, doc, diags.items, outputs, parts)


def _names(value: Any) -> list[str]:
    """The names of a `columns`/`ignore_columns` list as written (malformed ones are pydantic's to report)."""
    return [v for v in value if isinstance(v, str) and v] if isinstance(value, list) else []


def _check_columns(name: str, decl: dict, doc: Doc, diags: Diagnostics) -> None:
    """`columns`/`ignore_columns` of an input: a `series` input's, each name once, as many
    columns as the features dim F when that is fixed."""
    kind, shape = decl.get("kind"), decl.get("shape")
    base = ("inputs", name)
    if kind == "series" and isinstance(shape, list) and len(shape) != 3:
        diags.add(E.SHAPE_MISMATCH, f"a `series` input is [B, T, F], but input `{name}` has rank {len(shape)}",
                  loc=doc.loc(base + ("shape",)), path=dotted(base + ("shape",)), expected="[B, T, F] (rank 3)",
                  found="[" + ", ".join(str(d) for d in shape) + "]",
                  hint="one row of F features per time step: e.g. `shape: [B, T, 3]`")
    for key in ("columns", "ignore_columns"):
        if key in decl and kind != "series" and isinstance(kind, str):
            diags.add(E.INVALID_VALUE, f"`{key}` applies to `series` inputs only, and input `{name}` is `{kind}`",
                      loc=doc.key_loc(base + (key,)), path=dotted(base + (key,)), expected="kind: series",
                      found=f"kind: {kind}",
                      hint="declare `kind: series` ([B, T, F], read from CSV files) or remove the key")
    if kind != "series":
        return
    columns, ignored = _names(decl.get("columns")), _names(decl.get("ignore_columns"))
    for key, names in (("columns", columns), ("ignore_columns", ignored)):
        first: dict[str, int] = {}
        for i, col in enumerate(decl.get(key) if isinstance(decl.get(key), list) else []):
            if not isinstance(col, str) or not col:
                continue
            if col in first:
                diags.add(E.INVALID_VALUE, f"column `{col}` is listed twice in `{key}`",
                          loc=doc.loc(base + (key, i)), path=dotted(base + (key, i)), expected="unique column names",
                          found=col, related=[("first listed", doc.loc(base + (key, first[col])))],
                          hint="remove the repeated name")
            else:
                first[col] = i
    raw_columns = decl.get("columns") if isinstance(decl.get("columns"), list) else []
    for i, col in enumerate(decl.get("ignore_columns") if isinstance(decl.get("ignore_columns"), list) else []):
        if isinstance(col, str) and col in columns:
            diags.add(E.INVALID_VALUE, f"column `{col}` is both a feature (`columns`) and in `ignore_columns`",
                      loc=doc.loc(base + ("ignore_columns", i)), path=dotted(base + ("ignore_columns", i)),
                      related=[("listed in `columns`", doc.loc(base + ("columns", raw_columns.index(col))))],
                      hint="keep it in one of the two lists")
    if columns and isinstance(shape, list) and len(shape) == 3:
        f = shape[-1]
        n = len(columns)
        if isinstance(f, int) and not isinstance(f, bool) and f != n:
            diags.add(E.SHAPE_MISMATCH, f"input `{name}` has {n} columns, but its features dim F is {f}",
                      loc=doc.loc(base + ("columns",)), path=dotted(base + ("columns",)),
                      expected=f"{f} column names (the last dim of `shape`)", found=f"{n}: {', '.join(columns)}",
                      related=[("the shape is declared", doc.loc(base + ("shape",)))],
                      hint=f"list {f} columns, or make the last dim of `shape` {n}")


def _parse_block(name: str, body: dict, doc: Doc, path: tuple, registry, diags: Diagnostics) -> Optional[BlockDecl]:
    btype, sub = body.get("block"), body.get("spec")
    loc = doc.loc(path)
    if btype is None and sub is None:
        diags.add(E.MISSING_PARAM, f"block `{name}` needs `block: <type>` (or `spec: <file>` for a sub-pipeline)",
                  loc=loc, path=dotted(path), hint="see `composer blocks` for the catalog")
        return None
    if btype is not None and sub is not None:
        diags.add(E.INVALID_VALUE, f"block `{name}` sets both `block` and `spec`", loc=doc.key_loc(path + ("spec",)),
                  path=dotted(path + ("spec",)), hint="use `block` for a block type, `spec` for a sub-pipeline file")
        return None
    for key, want in (("block", str), ("spec", str)):
        if key in body and not isinstance(body[key], want):
            diags.add(E.INVALID_VALUE, f"`{key}` must be a string", loc=doc.loc(path + (key,)),
                      path=dotted(path + (key,)), expected="a string", found=_found(body[key]))
            return None
    repeat = body.get("repeat", 1)
    if isinstance(repeat, bool) or not isinstance(repeat, int) or not 1 <= repeat <= MAX_REPEAT:
        diags.add(E.INVALID_VALUE, "`repeat` must be a positive integer", loc=doc.loc(path + ("repeat",)),
                  path=dotted(path + ("repeat",)), expected=f"an integer from 1 to {MAX_REPEAT}", found=_found(repeat),
                  hint=_hint({"type": "int_type"}, doc.raw(path + ("repeat",)), repeat))
        repeat = 1
    frozen = body.get("frozen", False)
    if not isinstance(frozen, bool):
        diags.add(E.INVALID_VALUE, "`frozen` must be true or false", loc=doc.loc(path + ("frozen",)),
                  path=dotted(path + ("frozen",)), expected="a boolean", found=_found(frozen))
        frozen = False
    overrides = body.get("overrides", {})
    if not isinstance(overrides, dict):
        diags.add(E.INVALID_VALUE, "`overrides` must be a mapping of `block.param: value`",
                  loc=doc.loc(path + ("overrides",)), path=dotted(path + ("overrides",)), found=_found(overrides))
        overrides = {}
    elif overrides and sub is None:
        diags.add(E.BAD_OVERRIDE, "`overrides` only applies to sub-pipelines (`spec:`)",
                  loc=doc.key_loc(path + ("overrides",)), path=dotted(path + ("overrides",)),
                  hint="set the params directly on the block")
    description = body.get("description", "")
    bindings = parse_bindings(body["in"], doc, path + ("in",), diags) if "in" in body else None
    raw_params = {k: v for k, v in body.items() if k not in RESERVED}
    params = None
    if btype is not None:
        cls = registry.get(btype)
        if cls is None:
            public = [n for n, c in registry.items() if not c.internal]
            diags.add(E.UNKNOWN_BLOCK, f"unknown block type `{btype}`", loc=doc.loc(path + ("block",)),
                      path=dotted(path + ("block",)), found=btype,
                      hint=did_you_mean(btype, public) or "run `composer blocks` to list the catalog")
        else:
            try:
                params = cls.model_validate(raw_params)
            except ValidationError as exc:
                fields = [f for f in cls.model_fields]
                diags.extend(pydantic_diagnostics(exc, doc, path, fields, extra_names=RESERVED))
    elif raw_params:
        for key in raw_params:
            diags.add(E.UNKNOWN_PARAM, f"unknown key `{key}` on sub-pipeline block `{name}`",
                      loc=doc.key_loc(path + (key,)), path=dotted(path + (key,)),
                      hint="set a sub-pipeline's params with `overrides: {block.param: value}`")
    return BlockDecl(name, btype, sub, params, raw_params, bindings, repeat, frozen, overrides,
                     description if isinstance(description, str) else "", loc, path)

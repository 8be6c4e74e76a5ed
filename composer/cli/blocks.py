"""`composer blocks [NAME]`: the block catalog, or one block in detail."""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Optional

import typer
from rich.markup import escape
from rich.table import Table

from ..errors import did_you_mean
from ..registry import catalog, plugin_errors
from ._common import err, fail, out


def _type_str(p: dict, defs: dict) -> str:
    """A compact type from a JSON Schema fragment: `int >= 1 | [int, int]`."""
    if "$ref" in p:
        return p["$ref"].rsplit("/", 1)[-1]
    if "anyOf" in p:
        return " | ".join(_type_str(x, defs) for x in p["anyOf"])
    if "enum" in p:
        return " | ".join(repr(v) for v in p["enum"])
    if "const" in p:
        return repr(p["const"])
    t = p.get("type", "any")
    if t == "array":
        item = _type_str(p.get("items", {}), defs)
        n = p.get("minItems")
        return f"[{', '.join([item] * n)}]" if n and n == p.get("maxItems") and n <= 3 else f"list[{item}]"
    if t == "object":
        return "mapping"
    bounds = []
    for key, op in (("minimum", ">="), ("exclusiveMinimum", ">"), ("maximum", "<="), ("exclusiveMaximum", "<")):
        if key in p:
            bounds.append(f"{op} {p[key]}")
    names = {"integer": "int", "number": "float", "string": "str", "boolean": "bool", "null": "null"}
    return " ".join([names.get(t, t), *bounds])


def _params_table(cls) -> Table:
    table = Table(title="params", show_edge=False)
    for col in ("name", "type", "default"):
        table.add_column(col)
    schema = cls.model_json_schema()
    props, defs = schema.get("properties", {}), schema.get("$defs", {})
    for name, field in cls.model_fields.items():
        default = "required" if field.is_required() else repr(field.default)
        table.add_row(name, escape(_type_str(props.get(name, {}), defs)), escape(default))
    return table


def blocks(name: Optional[str] = typer.Argument(None, help="Show one block in detail.")) -> None:
    """List every block with its ports and params, or show one in detail."""
    cat = catalog()
    for problem in plugin_errors():
        err.print(f"warning: {problem}", style="yellow", markup=False)
    if name is None:
        table = Table(title=f"{len(cat)} blocks")
        table.add_column("block", no_wrap=True)
        for col in ("family", "inputs", "params", "summary"):
            table.add_column(col)
        for n, cls in cat.items():
            ins = ", ".join(p + ("*" if spec.variadic else "") + ("?" if spec.optional else "")
                            for p, spec in cls.inputs.items())
            params = ", ".join(cls.model_fields)
            table.add_row(n, cls.family, escape(ins), escape(params), escape(cls.summary()))
        out.print(table)
        return
    cls = cat.get(name)
    if cls is None:
        hint = did_you_mean(name, cat)
        fail(f"unknown block `{name}`" + (f"; {hint}" if hint else "; run `composer blocks` for the list"))
    src = inspect.getsourcefile(cls)
    try:
        src = str(Path(src).relative_to(Path.cwd()))
    except (ValueError, TypeError):
        pass
    out.print(f"[bold]{name}[/bold]  ({cls.family})  {src}")
    doc = inspect.cleandoc(cls.__doc__ or "")
    if doc:
        out.print(doc, markup=False)
    out.print("\ninputs:")
    for p, spec in cls.inputs.items():
        flags = " ".join(f for f, on in (("variadic", spec.variadic), ("optional", spec.optional)) if on)
        out.print(f"  {p}: {' | '.join(spec.kinds)} {spec.doc} {flags}".rstrip(), markup=False)
    out.print("outputs: " + ", ".join(cls.outputs), markup=False)
    out.print(_params_table(cls))

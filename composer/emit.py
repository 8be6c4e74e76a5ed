"""Write a resolved pipeline back out as a flat spec (`composer resolve`).

The output has every sub-pipeline inlined, every repeat expanded and every param filled
with its default; it validates and builds the same model (same names, so the same weights).
"""

from __future__ import annotations

from typing import Any

import yaml

from .resolve import Resolved
from .spec import Ref


def _ref(ref: Ref) -> str:
    return str(ref)


def to_data(r: Resolved) -> dict[str, Any]:
    out: dict[str, Any] = {"pipeline": r.name}
    if r.description:
        out["description"] = r.description
    out["seed"] = r.seed
    if r.weights:
        w = r.weights
        section = {"file": w.file, "rename": [[x.pattern, x.repl] for x in w.rename],
                   "ignore": [x.pattern for x in w.ignore], "strict": w.strict, "cast": w.cast}
        section["transpose"] = [x.pattern for x in w.transpose]
        plain = not w.rename and not w.ignore and not w.transpose and w.strict and not w.cast
        out["weights"] = w.file if plain else {k: v for k, v in section.items() if v or k == "strict"}
    if r.dims:
        out["dims"] = {n: d.model_dump(exclude_defaults=True) for n, d in r.dims.items()}
    out["inputs"] = {n: i.decl.model_dump(exclude_defaults=True, mode="json") | {"kind": i.decl.kind}
                     for n, i in r.inputs.items()}
    blocks: dict[str, Any] = {}
    for name, node in r.nodes.items():
        entry: dict[str, Any] = {"block": node.type}
        bindings = {}
        for port, b in node.bindings.items():
            bindings[port] = [_ref(x) for x in b] if isinstance(b, list) else _ref(b)
        if bindings:
            entry["in"] = bindings
        if node.frozen:
            entry["frozen"] = True
        if node.description:
            entry["description"] = node.description
        if node.block is not None:
            entry.update(node.block.model_dump(mode="json"))
        blocks[name] = entry
    out["blocks"] = blocks
    out["outputs"] = {n: _ref(ref) for n, ref in r.outputs.items()}
    if r.max_param_bytes != 16 * 1024**3:
        out["limits"] = {"max_param_bytes": r.max_param_bytes}
    if r.labels is not None:  # a built-in list by its name; a file's or the spec's names written out
        out["labels"] = r.labels.builtin or list(r.labels.names)
    return out


class _Dumper(yaml.SafeDumper):
    pass


def _flow_short_lists(dumper, data):
    flow = all(not isinstance(x, (dict, list)) for x in data) and len(data) <= 8
    return dumper.represent_sequence("tag:yaml.org,2002:seq", data, flow_style=flow)


_Dumper.add_representer(list, _flow_short_lists)


def to_yaml(r: Resolved) -> str:
    header = f"# {r.name}: resolved from {r.file} (sub-pipelines inlined, repeats expanded, defaults filled)\n"
    return header + yaml.dump(to_data(r), Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=100)

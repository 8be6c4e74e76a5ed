"""JSON Schema of pipeline specs, generated from the params models of every block type."""

from __future__ import annotations

from typing import Any

from .registry import catalog
from .spec import PipelineSpec

_REF = {"type": "string", "pattern": r"^[A-Za-z_][A-Za-z0-9_]*(/[A-Za-z0-9_]+)*(\.[A-Za-z_][A-Za-z0-9_]*)?$",
        "description": "`block` or `block.port`"}


def _binding() -> dict:
    one = {"anyOf": [_REF, {"type": "array", "items": _REF, "minItems": 1}]}
    return {"anyOf": [one, {"type": "object", "additionalProperties": one}],
            "description": "the block's input(s): a reference, a list, or a mapping port -> reference"}


def _common() -> dict[str, Any]:
    return {
        "in": _binding(),
        "repeat": {"type": "integer", "minimum": 1, "description": "stack the block N times"},
        "frozen": {"type": "boolean", "description": "do not train this block's parameters"},
        "description": {"type": "string"},
    }


def spec_schema() -> dict[str, Any]:
    """The schema for editors (e.g. yaml-language-server's `# yaml-language-server: $schema=`)."""
    top = PipelineSpec.model_json_schema()
    defs = top.setdefault("$defs", {})
    variants = []
    for name, cls in catalog().items():
        params = cls.model_json_schema()
        for k, v in params.pop("$defs", {}).items():
            defs[k] = v
        props = {"block": {"const": name, "description": cls.summary()}, **_common(), **params.get("properties", {})}
        variants.append({
            "title": name, "type": "object", "properties": props,
            "required": ["block", *params.get("required", [])], "additionalProperties": False,
            "description": cls.summary(),
        })
    variants.append({
        "title": "sub-pipeline", "type": "object",
        "properties": {"spec": {"type": "string", "description": "path of another spec, relative to this one"},
                       "overrides": {"type": "object", "description": "`block.param: value` changes inside it"},
                       **_common()},
        "required": ["spec"], "additionalProperties": False,
    })
    weights = top["properties"]["weights"]   # `weights: FILE` is short for `weights: {file: FILE}`
    weights["anyOf"] = [{"type": "string"}, *(v for v in weights["anyOf"] if v.get("type") != "null")]
    top["properties"]["blocks"] = {"type": "object", "minProperties": 1,
                                   "additionalProperties": {"oneOf": variants}}
    from .train.config import TrainSpec
    train = TrainSpec.model_json_schema()
    for k, v in train.pop("$defs", {}).items():
        defs[k] = v
    train["description"] = top["properties"]["train"].get("description", "")
    top["properties"]["train"] = train
    top["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    top["title"] = "composer pipeline spec"
    return top

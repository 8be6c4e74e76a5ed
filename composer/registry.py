"""The closed block registry: a plain dict from type name to block class.

Built-in blocks register when the `blocks` package is imported; third-party blocks arrive
through the `composer.blocks` entry-point group (each entry point names a module that
registers its blocks on import). Nothing in a spec can add to it.
"""

from __future__ import annotations

import importlib
from importlib.metadata import entry_points
from typing import TypeVar

from .block import Block
from .errors import ComposerError

REGISTRY: dict[str, type[Block]] = {}
ENTRY_POINT_GROUP = "composer.blocks"
_loaded = False
_plugin_errors: list[str] = []

B = TypeVar("B", bound=type[Block])


class RegistryError(ComposerError):
    """A block type that cannot be registered (bad name, or a name taken twice)."""


def register(cls: B) -> B:
    """Class decorator: add a block type to the registry; duplicate names are rejected."""
    name = cls.name
    ok = bool(name) and name.replace("_", "a").isalnum() and name.lower() == name
    if not ok or not (name[0].isalpha() or (cls.internal and name[0] == "_")):
        raise RegistryError(f"block {cls.__qualname__} needs a lower_snake_case `name`, got {name!r}")
    if name in REGISTRY and REGISTRY[name] is not cls:
        other = REGISTRY[name]
        raise RegistryError(f"block type {name!r} is registered twice: {other.__module__}.{other.__qualname__} "
                            f"and {cls.__module__}.{cls.__qualname__}")
    REGISTRY[name] = cls
    return cls


def load_blocks() -> dict[str, type[Block]]:
    """Import the built-in catalog and installed plugins once; returns the registry."""
    global _loaded
    if not _loaded:
        _loaded = True
        importlib.import_module("composer._port")
        importlib.import_module("blocks")
        for ep in sorted(entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
            try:
                ep.load()
            except RegistryError:
                _loaded = False  # report it again on the next use, never run half-loaded
                raise
            except Exception as exc:  # a broken plugin must not break every spec
                _plugin_errors.append(f"plugin {ep.name!r} ({ep.value}) failed to load: {exc}")
    return REGISTRY


def plugin_errors() -> list[str]:
    load_blocks()
    return list(_plugin_errors)


def get(name: str) -> type[Block] | None:
    return load_blocks().get(name)


def catalog() -> dict[str, type[Block]]:
    """Public block types, sorted by family then name."""
    reg = load_blocks()
    items = [(n, c) for n, c in reg.items() if not c.internal]
    return dict(sorted(items, key=lambda nc: (nc[1].family, nc[0])))

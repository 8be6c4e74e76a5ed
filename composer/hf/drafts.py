"""What a generative family's spec writer makes of a folder (a `_Draft`), the writer's interface
(`_Writer`), and the config checks the writers share."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from .families import ENCODER_ACTIVATIONS, HFImportError
from .folder import _Config
from .spec import _Blocks


@dataclass
class _Draft:
    """A folder's spec before its weight rules: blocks and outputs (in `blocks`), the lines under
    `dims:` and `inputs:` (and `parts:`), and the candidate rules, (regex, replacement) renames and
    (regex, why) ignores and transposes; only those that match the folder's keys are written."""

    blocks: _Blocks
    dims: list[str]
    inputs: list[str]
    parts: list[str] = field(default_factory=list)
    rename: list[tuple[str, str]] = field(default_factory=list)
    ignore: list[tuple[str, str]] = field(default_factory=list)
    transpose: list[tuple[str, str]] = field(default_factory=list)


@dataclass(frozen=True)
class _Writer:
    """A family's spec writer: `limit(cfg, config)` the most tokens the tokenizer may give,
    `check(cfg, config, arch, keys)` raises for a config the blocks cannot reproduce,
    `draft(cfg, config, arch, tok, keys)` the spec, `rules(cfg, config, arch, keys)` its candidate
    (rename, ignore, transpose) rules alone (for `--weights DIR`)."""

    limit: Callable[[_Config, dict], int]
    check: Callable[[_Config, dict, str, list[str]], None]
    draft: Callable[[_Config, dict, str, dict, list[str]], _Draft]
    rules: Callable[[_Config, dict, str, list[str]], tuple[list, list, list]]


def _int_field(config: dict, key: str, default: Any, low: int = 1) -> int:
    v = config.get(key, default)
    if isinstance(v, bool) or not isinstance(v, int) or v < low:
        raise HFImportError(f"config.json `{key}` is {v!r}: expected an integer >= {low}")
    return v


def _activation(cfg: _Config, block: str) -> str:
    act = cfg["activation"]
    if act not in ENCODER_ACTIVATIONS:
        raise HFImportError(f"config.json `{cfg.keys['activation']}: {act}` is not supported: the {block} block's "
                            f"activations are {', '.join(ENCODER_ACTIVATIONS)}")
    return ENCODER_ACTIVATIONS[act]


def _heads_divide(cfg: _Config) -> None:
    if cfg["hidden"] % cfg["heads"]:
        raise HFImportError(f"config.json `{cfg.keys['heads']}: {cfg['heads']}` does not divide "
                            f"`{cfg.keys['hidden']}: {cfg['hidden']}`")


def _flags(config: dict, flags: dict[str, str]) -> None:
    """config.json switches the blocks do not have: an error naming the first one set."""
    for flag, why in flags.items():
        if config.get(flag):
            raise HFImportError(f"config.json `{flag}: true` is not supported: {why}")


def _length_dim(max_length: int, name: str = "T") -> str:
    """The dims line of the tokenizer's length: sizes 8 and 16 where they fit, as the encoders have."""
    small = [s for s in (8, 16) if s <= max_length]
    sizes = small if len(small) == 2 else sorted({max(1, max_length // 2), max_length})
    return f"  {name}: {{sizes: [{', '.join(map(str, sizes))}], example: {min(128, max_length)}}}"

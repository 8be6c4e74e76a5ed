"""The weight rules of an import: the family's renames that match the folder's keys, and what to
ignore."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Optional

from ..errors import ComposerError
from .families import DECODER_FAMILIES, FAMILIES, DecoderFamily, Family, Head, HFImportError
from .folder import _checkpoint_keys, _family, _read_config


def _prefix(family: Family, keys: list[str]) -> str:
    """`bert\\.` where the checkpoint nests the base model under the family's prefix, else ``
    (a family with no prefix: always ``)."""
    nested = family.prefix and any(k.startswith(family.prefix + ".") for k in keys)
    return re.escape(family.prefix + ".") if nested else ""


def _has_pooler(family: Family, keys: list[str]) -> bool:
    rx = re.compile(rf"^{_prefix(family, keys)}pooler\.")
    return bool(family.pooler) and any(rx.match(k) for k in keys)


def _inside(family: Family, keys: list[str], key: str) -> bool:
    """Whether a checkpoint key belongs to the base model (not to a head)."""
    if _prefix(family, keys):
        return key.startswith(family.prefix + ".")
    return key.split(".")[0] in family.modules


def _expand(rules, p: str) -> list[tuple[str, str]]:
    return [(pat.replace("{p}", p), repl) for pat, repl in rules]


def _renamed(rules: list[tuple[str, str]], key: str) -> tuple[str, list[int]]:
    """The key after the rules (in order, each on the result of the one before, as composer.weights
    applies them) and the rules that changed it."""
    hits = []
    for i, (pat, repl) in enumerate(rules):
        new = re.sub(pat, repl, key)
        if new != key:
            hits.append(i)
            key = new
    return key, hits


def _unused_module(key: str, used: list[str]) -> str:
    """The shortest module path of `key` under which no used key lies (`cls` for a head the spec
    lacks, `cls.seq_relationship` beside a used `cls.predictions`)."""
    parts = key.split(".")
    for n in range(1, len(parts)):
        module = ".".join(parts[:n])
        if not any(k.startswith(module + ".") for k in used):
            return module
    return ".".join(parts[:-1]) or key


def _weight_rules(family: Family, head: Head, keys: list[str], use_pooler: bool, arch: str,
                  own: Optional[set[str]] = None) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """The rename rules and (regex, why) ignore rules for this folder, only those that match its keys.

    With the pipeline's keys (`own`), keys no rule maps onto them are looked at too: those of a head
    the spec does not have are ignored by their top-level module; any in the base model is an error."""
    p = _prefix(family, keys)
    rename = _expand(family.rename, p) + (_expand(family.pooler, p) if use_pooler else []) + list(head.rename)
    ignore = [(pat, "a buffer, not a weight") for pat, _ in _expand([(x, "") for x in family.ignore], p)]
    ignore += [(pat, "tied to emb.word (the checkpoint holds a copy)") for pat in head.ignore]
    if _has_pooler(family, keys) and not use_pooler:
        ignore.append((rf"^{p}pooler\.", f"the pooler: {arch} does not use it"))
    rename, ignore, _ = fit_rules(family, arch, keys, own, rename, ignore)
    return rename, ignore


def fit_rules(family, arch: str, keys: list[str], own: Optional[set[str]], rename: list, ignore: list
              ) -> tuple[list, list, list[str]]:
    """The candidate rules that match the folder's keys, and the keys they keep. With the pipeline's
    keys (`own`), keys no rule maps onto them are ignored by their top-level module when a head the
    spec lacks holds them, an error when the base model does."""
    ignore = [(pat, why) for pat, why in ignore if any(re.search(pat, k) for k in keys)]
    kept = [k for k in keys if not any(re.search(pat, k) for pat, _ in ignore)]
    if own is not None:
        left = [k for k in kept if _renamed(rename, k)[0] not in own]
        inside = [k for k in left if _inside(family, keys, k)]
        if inside:
            shown = ", ".join(inside[:8]) + (f", … {len(inside) - 8} more" if len(inside) > 8 else "")
            raise HFImportError(f"the folder's {arch} has tensors the spec's blocks have no place for: {shown}")
        kept = [k for k in kept if k not in left]
        for module in dict.fromkeys(_unused_module(k, kept) for k in left):
            ignore.append((rf"^{re.escape(module)}\.", f"not part of {arch}"))
    used = {i for k in kept for i in _renamed(rename, k)[1]}
    return [r for i, r in enumerate(rename) if i in used], ignore, kept


def hf_family(folder: str | os.PathLike) -> Optional[str]:
    """The `model_type` of a Hugging Face folder when it is one of `FAMILIES` or `DECODER_FAMILIES`,
    else None (no error)."""
    path = Path(folder) / "config.json"
    try:
        model_type = json.loads(path.read_text(encoding="utf-8")).get("model_type")
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, AttributeError):
        return None
    return model_type if model_type in FAMILIES or model_type in DECODER_FAMILIES else None


def folder_rules(folder: str | os.PathLike,
                 own: set[str]) -> Optional[tuple[list[tuple[str, str]], list[str], list[str]]]:
    """For `--weights DIR`: the rename, ignore and transpose rules `import hf` writes for a Hugging
    Face folder of a supported family, when every tensor they rename lands on one of the pipeline
    keys `own` (a spec whose blocks are named as `import hf` names them: `emb`, `encoder`, `pooler`,
    `head`, as pipelines/bert_base.yaml does; `emb`, `decoder`, `lm_head` as pipelines/gpt2.yaml
    does); None otherwise, and for any other folder. Only GPT-2 has transpose rules."""
    folder = Path(folder)
    if hf_family(folder) is None:
        return None
    try:
        config = _read_config(folder)
        family = _family(config, folder)
        if isinstance(family, DecoderFamily):
            from .decoders import decoder_folder_rules
            return decoder_folder_rules(folder, config, family, own)
        archs = config.get("architectures")
        arch = archs[0] if isinstance(archs, list) and archs and archs[0] in family.heads else family.base
        keys = _checkpoint_keys(folder)
        rename, ignore = _weight_rules(family, family.heads[arch], keys, "pooler.weight" in own, arch, own)
    except ComposerError:
        return None
    if not all(_renamed(rename, k)[0] in own for k in keys if not any(re.search(p, k) for p, _ in ignore)):
        return None
    return rename, [pat for pat, _ in ignore], []

"""Weights: read safetensors (or `.pt`/`.pth` through `torch.load(weights_only=True)` only),
map a foreign state dict onto a compiled pipeline, and save weights as safetensors.

A state dict written by another program rarely has our keys. `map_state_dict` tries, in order:

1. **exact** — the file's keys are the pipeline's keys (`backbone.layer1.0.conv1.weight`);
2. **order** — the file has as many tensors as the pipeline and every shape agrees position
   by position (a torchvision checkpoint loaded into a pipeline built from `resnet_stem`,
   `bottleneck`, ... parts, or into `resnet` + `dense` head). Only for files that keep their
   order (`.pt`/`.pth`), never for safetensors, which stores keys sorted;
3. **block prefix** — the file's keys are one block's keys without the block's prefix, as a
   torchvision `resnet50` state dict is for a `resnet` block named `backbone`. The file's
   remaining tensors (torchvision's `fc`) then go to the pipeline's remaining blocks when
   that is unambiguous: a whole block at a time, by order (ordered files) or by shapes that
   occur once on each side. What stays unmatched is reported: file keys as ignored, blocks
   as keeping their initial weights.
4. **module paths** — each block's keys appear in the file under one other prefix, as in a
   torchvision detector checkpoint, where the `resnet` block named `backbone` is
   `backbone.body`, the `fpn` block `backbone.fpn` and `roi_heads` `roi_heads`. Every block
   must find exactly one such prefix (a block that could come from two places is an error
   naming both), and every file tensor must be used. `num_batches_tracked` counters that
   the file lacks (FrozenBatchNorm2d checkpoints) are left as they are.

When none fits, the error lists missing, unexpected and shape-mismatched keys by name, with
the expected and found shapes, against the closest candidate.
"""

from __future__ import annotations

import os
import pickle
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Optional

import torch
from torch import nn

from . import _io
from .errors import ComposerError

SHOW = 8  # keys listed per category in an error


class WeightsError(ComposerError):
    """A weights file cannot be read or does not fit the pipeline (exit code 1)."""


@dataclass
class LoadReport:
    """What `load_weights` did: the strategy, and keys it loaded, ignored or left initial."""

    file: str
    strategy: str                                   # exact | order | block-prefix | module-paths
    loaded: int
    block: Optional[str] = None                     # the block a block-prefix mapping went into
    ignored: list[str] = field(default_factory=list)        # file keys not used
    kept_initial: list[str] = field(default_factory=list)   # blocks whose weights were not in the file

    def to_dict(self) -> dict:
        return {"file": self.file, "strategy": self.strategy, "loaded": self.loaded, "block": self.block,
                "ignored": self.ignored, "kept_initial": self.kept_initial}

    def describe(self) -> str:
        what = {"exact": "by name", "block-prefix": f"into block `{self.block}`", "order": "by order",
                "module-paths": "by module paths"}[self.strategy]
        text = f"loaded {self.loaded} tensors from {self.file} {what}"
        if self.kept_initial:
            text += f"; initial weights kept for {', '.join(self.kept_initial)}"
        if self.ignored:
            text += f"; ignored {len(self.ignored)} file keys ({_names(self.ignored)})"
        return text


def _names(keys, n: int = SHOW) -> str:
    keys = list(keys)
    more = f", … {len(keys) - n} more" if len(keys) > n else ""
    return ", ".join(keys[:n]) + more


def _shape(t) -> str:
    return "[" + ", ".join(str(s) for s in t.shape) + "]"


# ---- reading -------------------------------------------------------------------------------


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Tensors of a weights file, in the file's order. Never unpickles arbitrary objects."""
    path = Path(path)
    if not path.exists():
        raise WeightsError(f"weights file {path} does not exist")
    if not path.is_file():
        raise WeightsError(f"weights path {path} is not a file")
    suffix = path.suffix.lower()
    if suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file
        try:
            return dict(load_file(str(path)))
        except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
            raise WeightsError(f"cannot read weights file {path}: {_first_line(exc)} "
                               "(truncated or not a safetensors file?)") from None
    if suffix in (".pt", ".pth", ".bin", ".ckpt"):
        try:
            obj = torch.load(str(path), map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as exc:
            raise WeightsError(f"refusing to load {path}: it holds objects other than tensors, which only an "
                               f"unrestricted unpickle could read ({_first_line(exc)}); save a plain state dict "
                               "or use safetensors") from None
        except (RuntimeError, OSError, EOFError, ValueError, zipfile.BadZipFile) as exc:
            raise WeightsError(f"cannot read weights file {path}: {_first_line(exc)} "
                               "(truncated or not a torch checkpoint?)") from None
        return _tensors_of(obj, path)
    raise WeightsError(f"weights file {path}: unknown format {suffix or '(no suffix)'}; "
                       "use .safetensors, .pt or .pth")


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0] if lines else ''}"


def _tensors_of(obj, path: Path) -> dict[str, torch.Tensor]:
    # common checkpoint wrappers: {"state_dict": {...}}, {"model": {...}}
    if isinstance(obj, Mapping) and not all(isinstance(v, torch.Tensor) for v in obj.values()):
        for key in ("state_dict", "model", "model_state_dict", "module"):
            if isinstance(obj.get(key), Mapping):
                obj = obj[key]
                break
    if not isinstance(obj, Mapping):
        raise WeightsError(f"weights file {path} holds a {type(obj).__name__}, not a state dict of tensors")
    out = {}
    for k, v in obj.items():
        if not isinstance(v, torch.Tensor):
            raise WeightsError(f"weights file {path}: entry `{k}` is a {type(v).__name__}, not a tensor")
        out[str(k)] = v
    if out and all(k.startswith("module.") for k in out):  # saved from DataParallel
        out = {k[len("module."):]: v for k, v in out.items()}
    return out


# ---- mapping -------------------------------------------------------------------------------


def _block_prefixes(model: nn.Module) -> list[str]:
    """Dotted prefixes of the pipeline's blocks (modules that are not scope dicts)."""
    out = []
    for name, mod in model.named_modules():
        if not name or isinstance(mod, nn.ModuleDict):
            continue
        parent = name.rpartition(".")[0]
        if parent and not isinstance(model.get_submodule(parent), nn.ModuleDict):
            continue
        out.append(name)
    return out


def _diff(expected: Mapping[str, torch.Tensor], found: Mapping[str, torch.Tensor]):
    missing = [k for k in expected if k not in found]
    unexpected = [k for k in found if k not in expected]
    mismatched = [k for k in expected if k in found and tuple(expected[k].shape) != tuple(found[k].shape)]
    return missing, unexpected, mismatched


def map_state_dict(model: nn.Module, tensors: Mapping[str, torch.Tensor], file: str = "<weights>",
                   *, ordered: bool = True) -> tuple[dict[str, torch.Tensor], LoadReport]:
    """Map `tensors` onto `model`'s state dict keys; raises WeightsError listing what differs.

    `ordered` says whether the file's key order is meaningful (False for safetensors)."""
    own = model.state_dict()
    if not tensors:
        raise WeightsError(f"weights file {file} holds no tensors")
    # 1. exact keys
    missing, unexpected, mismatched = _diff(own, tensors)
    if not missing and not unexpected and not mismatched:
        return dict(tensors), LoadReport(file, "exact", len(own))
    candidates = [("exact", None, missing, unexpected, mismatched)]
    # 2. by order, when the count and every shape agree
    own_items = list(own.items())
    file_items = list(tensors.items())
    if not ordered:
        order_note = "by order: not for this file (safetensors stores its keys sorted)"
    elif len(own_items) == len(file_items):
        bad = [(a, b) for (a, ta), (b, tb) in zip(own_items, file_items) if tuple(ta.shape) != tuple(tb.shape)]
        if not bad:
            return ({k: t for (k, _), (_, t) in zip(own_items, file_items)},
                    LoadReport(file, "order", len(own_items)))
        order_note = (f"by order: {len(bad)} of {len(own_items)} positions differ in shape, first "
                      f"`{bad[0][0]}` {_shape(own[bad[0][0]])} vs `{bad[0][1]}` {_shape(tensors[bad[0][1]])}")
    else:
        order_note = f"by order: the file has {len(file_items)} tensors, the pipeline {len(own_items)}"
    # 3. one block's keys without its prefix, then the rest where unambiguous
    prefixes = _block_prefixes(model)
    best_block = None
    for prefix in prefixes:
        sub = {k[len(prefix) + 1:]: v for k, v in own.items() if k.startswith(prefix + ".")}
        if not sub:
            continue
        m, u, mm = _diff(sub, tensors)
        score = len(sub) - len(m)
        if best_block is None or score > best_block[0]:
            best_block = (score, prefix, sub, m, u, mm)
    if best_block is not None and best_block[0] > 0:
        _, prefix, sub, m, u, mm = best_block
        if not m and not mm and len(u) < len(sub):   # the file is (mostly) this block's weights
            mapped = {f"{prefix}.{k}": tensors[k] for k in sub}
            rest = {k: v for k, v in own.items() if not k.startswith(prefix + ".")}
            extra = _match_rest(rest, {k: tensors[k] for k in u}, prefixes, ordered)
            mapped.update({own_key: tensors[file_key] for own_key, file_key in extra.items()})
            used = set(extra.values())
            others = sorted({_block_of(k, prefixes) for k in rest if k not in extra} - {None})
            return mapped, LoadReport(file, "block-prefix", len(mapped), block=prefix.replace(".", "/"),
                                      ignored=[k for k in u if k not in used], kept_initial=others)
        candidates.append((f"block `{prefix}`", prefix, m, u, mm))
    # 4. every block under one prefix of the file
    mapped = _by_module_paths(own, tensors, prefixes, file)
    if mapped is not None:
        return mapped, LoadReport(file, "module-paths", len(mapped))
    # nothing fits: explain against the closest candidate
    what, prefix, m, u, mm = min(candidates, key=lambda c: len(c[2]) + len(c[3]) + len(c[4]))
    pre = f"{prefix}." if prefix else ""
    lines = [f"weights file {file} does not fit pipeline `{getattr(model, 'pipeline_name', '?')}` "
             f"(closest match: {what})"]
    if m:
        lines.append(f"  missing keys ({len(m)}): {_names(pre + k for k in m)}")
    if u:
        lines.append(f"  unexpected keys ({len(u)}): {_names(u)}")
    if mm:
        lines.append(f"  shape mismatches ({len(mm)}):")
        for k in mm[:SHOW]:
            lines.append(f"    {pre}{k}: expected {_shape(own[pre + k])}, found {_shape(tensors[k])}")
        if len(mm) > SHOW:
            lines.append(f"    … {len(mm) - SHOW} more")
    lines.append(f"  also tried {order_note}")
    lines.append("  hint: is this file for another model, or another depth/width of this one?")
    raise WeightsError("\n".join(lines))


COUNTERS = ("num_batches_tracked",)


def _by_module_paths(own: Mapping[str, torch.Tensor], tensors: Mapping[str, torch.Tensor], prefixes: list[str],
                     file: str) -> Optional[dict[str, torch.Tensor]]:
    """Map each block's keys onto the one file prefix that holds them all with equal shapes;
    None when some block has no such prefix or file tensors are left over."""
    by_suffix: dict[str, list[str]] = {}
    for k in tensors:
        parts = k.split(".")
        for i in range(len(parts)):
            by_suffix.setdefault(".".join(parts[i:]), []).append(".".join(parts[:i]))
    mapped: dict[str, torch.Tensor] = {}
    used: set[str] = set()
    for block in sorted(prefixes, key=len, reverse=True):
        keys = [k for k in own if k.startswith(block + ".") and k not in mapped]
        needed = [k for k in keys if k.rpartition(".")[2] not in COUNTERS]
        if not needed:
            continue
        subs = [k[len(block) + 1:] for k in keys]
        heads = {sub.split(".", 1)[0] for sub in subs}
        # the block's own keys, or (when they all start with one module, as `features.`) without it
        for drop in ("", *(f"{h}." for h in heads if len(heads) == 1 and all("." in sub for sub in subs))):
            options: Optional[set[str]] = None
            for k, sub in zip(keys, subs):
                if k not in needed:
                    continue
                sub = sub[len(drop):]
                here = {q for q in by_suffix.get(sub, ())
                        if tuple(tensors[f"{q}.{sub}" if q else sub].shape) == tuple(own[k].shape)}
                options = here if options is None else options & here
                if not options:
                    break
            if options:
                break
        if not options:
            return None
        if len(options) > 1:
            raise WeightsError(f"weights file {file}: block `{block.replace('.', '/')}` fits the file under "
                               f"{len(options)} prefixes ({_names(sorted(f'`{q}`' for q in options))}); "
                               "the mapping is ambiguous")
        q = options.pop()
        for k, sub in zip(keys, subs):
            sub = sub[len(drop):]
            fk = f"{q}.{sub}" if q else sub
            if fk in tensors:
                mapped[k] = tensors[fk]
                used.add(fk)
    left = [k for k in tensors if k not in used and k.rpartition(".")[2] not in COUNTERS]
    missing = [k for k in own if k not in mapped and k.rpartition(".")[2] not in COUNTERS]
    if left or missing or not mapped:
        return None
    return mapped


def _match_rest(rest: Mapping[str, torch.Tensor], leftover: Mapping[str, torch.Tensor], prefixes: list[str],
                ordered: bool) -> dict[str, str]:
    """Pair the pipeline's remaining tensors with the file's leftover ones, a whole block at a
    time: by order when the file keeps it and everything agrees, else by shapes that occur
    exactly once on each side. Returns pipeline key -> file key."""
    if not rest or not leftover:
        return {}
    own_items, file_items = list(rest.items()), list(leftover.items())
    if ordered and len(own_items) == len(file_items) and all(
            tuple(a.shape) == tuple(b.shape) for (_, a), (_, b) in zip(own_items, file_items)):
        return {k: f for (k, _), (f, _) in zip(own_items, file_items)}
    def unique(items):
        count: dict[tuple, int] = {}
        for _, t in items:
            count[tuple(t.shape)] = count.get(tuple(t.shape), 0) + 1
        return {tuple(t.shape): k for k, t in items if count[tuple(t.shape)] == 1}
    own_u, file_u = unique(own_items), unique(file_items)
    pairs = {k: file_u[shape] for shape, k in own_u.items() if shape in file_u}
    by_block: dict[Optional[str], list[str]] = {}
    for k in rest:
        by_block.setdefault(_block_of(k, prefixes), []).append(k)
    return {k: pairs[k] for keys in by_block.values() if all(k in pairs for k in keys) for k in keys}


def _block_of(key: str, prefixes: list[str]) -> Optional[str]:
    for p in sorted(prefixes, key=len, reverse=True):
        if key.startswith(p + "."):
            return p.replace(".", "/")
    return None


def load_weights(model: nn.Module, path: str | os.PathLike) -> LoadReport:
    """Load a weights file into `model` in place (see `map_state_dict` for how keys map)."""
    tensors = read_state_dict(path)
    ordered = Path(path).suffix.lower() != ".safetensors"
    mapped, report = map_state_dict(model, tensors, str(path), ordered=ordered)
    own = model.state_dict()
    for k, v in mapped.items():  # check everything first: nothing is loaded unless all of it fits
        target = own[k]
        if v.dtype != target.dtype and (v.dtype.is_floating_point != target.dtype.is_floating_point):
            raise WeightsError(f"weights file {path}: `{k}` has dtype {str(v.dtype)[6:]}, the pipeline "
                               f"{str(target.dtype)[6:]}")
    with torch.no_grad():
        for k, v in mapped.items():
            own[k].copy_(v.to(own[k].dtype))
    return report


# ---- saving --------------------------------------------------------------------------------


def save_weights(model: nn.Module, path: str | os.PathLike, metadata: Optional[dict[str, str]] = None) -> Path:
    """Write `model`'s state dict as safetensors, atomically (temp file, then `os.replace`)."""
    from safetensors.torch import save_file

    path = Path(path)
    # shared storage (tied weights) must be cloned for safetensors; contiguous for its writer
    tensors = {k: v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items()}
    meta = {"format": "pt", **(metadata or {})}
    if getattr(model, "pipeline_name", ""):
        meta.setdefault("composer.pipeline", model.pipeline_name)
    try:
        with _io.atomic_path(path) as tmp:
            save_file(tensors, str(tmp), metadata=meta)
    except OSError as exc:
        raise WeightsError(f"cannot write weights to {path}: {exc.strerror or exc}") from None
    return path

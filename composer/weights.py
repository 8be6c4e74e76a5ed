"""Weights from anywhere: map someone else's checkpoint onto a compiled pipeline, report how,
and save weights as safetensors.

A checkpoint written by another program rarely has our keys. `plan` reads it (see
`composer._checkpoint`: safetensors, `.pt`/`.pth`/`.bin`, Hugging Face folders), then:

1. drops the file keys an **ignore** rule matches, and applies the **rename** rules (regex →
   replacement, in order) to the rest. A key a rule changed names the pipeline tensor it
   fills; a rule that does not compile, two file keys renamed onto one, a renamed key the
   pipeline lacks or holds with another shape: each an error naming the rule and the key.
   A rule that matches nothing is a warning. Keys no rule changed are matched by:
2. trying in order:
   - **exact** — every pipeline tensor is in the file under its own name;
   - **order** — the file has as many tensors as the pipeline and every shape agrees position
     by position (a torchvision `.pth` into a spec built from parts). Only for files that keep
     their order, never for safetensors, which stores keys sorted;
   - **structure** — the file's module tree against the pipeline's (`composer._structure`):
     a block, a repeat or a layer goes where its tensors appear under another prefix by the
     same names and shapes (torchvision's `conv1` for `stem.conv1`, `backbone.body` for a
     detector's backbone block); alike modules in the file's numeric order. Ambiguity is an
     error listing the modules, never a guess;
3. with `strict` (the default) every pipeline tensor must be filled; `strict=False` keeps the
   initial weights of what the file lacks (a new classification head) and says which.
   `num_batches_tracked` counters the file lacks (FrozenBatchNorm2d checkpoints) keep their
   value. A tensor whose dtype differs is cast only where that loses nothing (float16 into
   float32, or values that survive the round trip) unless `cast=True`.

Nothing is loaded unless all of it fits. `composer weights SPEC FILE` prints the plan.
"""

from __future__ import annotations

import difflib
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Mapping, Optional, Sequence, Union

import torch
from torch import nn

from . import _io
from ._checkpoint import WeightsError, read_checkpoint
from ._structure import is_counter, match_structure

__all__ = ["Rule", "WeightsSource", "Entry", "LoadReport", "WeightsError", "plan", "load_weights", "map_state_dict",
           "read_state_dict", "save_weights", "parse_rename", "check_rule"]

SHOW = 8  # keys listed per category in an error


# ---- rules and sources ---------------------------------------------------------------------


@dataclass(frozen=True)
class Rule:
    """A rename rule (`repl` set) or an ignore rule (`repl` None), and where it was written
    (`weights.rename[0]` in a spec, `--rename '^a\\.=b.'` on the command line)."""

    pattern: str
    repl: Optional[str] = None
    where: str = ""

    @property
    def regex(self) -> re.Pattern:
        return re.compile(self.pattern)

    def describe(self) -> str:
        text = f"`{self.pattern}`" + (f" → `{self.repl}`" if self.repl is not None else "")
        return f"{self.where} ({text})" if self.where else text


_GROUP_REF = re.compile(r"\\(\d+)|\\g<([^>]*)>")


def check_rule(pattern: str, repl: Optional[str] = None) -> Optional[str]:
    """Why a rule is unusable (its regex does not compile, its replacement names a group the
    regex lacks), or None."""
    try:
        rx = re.compile(pattern)
    except re.error as exc:
        return f"the regex does not compile: {exc}"
    for num, name in _GROUP_REF.findall(repl or ""):
        ref = num or name
        if ref.isdigit() and int(ref) > rx.groups:
            return f"the replacement refers to group {ref}; the regex has {rx.groups}"
        if not ref.isdigit() and ref not in rx.groupindex:
            return f"the replacement refers to group `{ref}`, which the regex does not name"
    return None


def parse_rename(text: str, where: str = "--rename") -> Rule:
    """`REGEX=REPL` from the command line; split at the last `=` (a regex may hold one)."""
    pattern, sep, repl = text.rpartition("=")
    if not sep or not pattern:
        raise WeightsError(f"{where} {text!r}: expected REGEX=REPLACEMENT, e.g. --rename '^module\\.='")
    return Rule(pattern, repl, f"{where} '{text}'")


@dataclass(frozen=True)
class WeightsSource:
    """A checkpoint and how to read it: the spec's `weights:` section or `--weights` and its options."""

    file: str
    rename: tuple[Rule, ...] = ()
    ignore: tuple[Rule, ...] = ()
    strict: bool = True
    cast: bool = False
    transpose: tuple[Rule, ...] = ()     # file keys of matrices stored [in, out] (GPT-2's Conv1D), transposed as read

    def with_options(self, rename: Iterable[Rule] = (), ignore: Iterable[Rule] = (), strict: Optional[bool] = None,
                     cast: Optional[bool] = None, transpose: Iterable[Rule] = ()) -> "WeightsSource":
        return WeightsSource(self.file, (*self.rename, *rename), (*self.ignore, *ignore),
                             self.strict if strict is None else strict, self.cast if cast is None else cast,
                             (*self.transpose, *transpose))


WeightsArg = Union[str, os.PathLike, WeightsSource]


def as_source(weights: WeightsArg, rename: Iterable[Union[Rule, str, Sequence[str]]] = (),
              ignore: Iterable[Union[Rule, str]] = (), strict: Optional[bool] = None,
              cast: Optional[bool] = None, transpose: Iterable[Union[Rule, str]] = ()) -> WeightsSource:
    """A `WeightsSource` from a path or a source, with more rules given as `Rule`s, `REGEX=REPL`
    texts or (regex, replacement) pairs; `transpose`: regexes of file keys whose matrices are
    stored transposed."""
    src = weights if isinstance(weights, WeightsSource) else WeightsSource(str(weights))
    rules = []
    for i, r in enumerate(rename):
        rule = r if isinstance(r, Rule) else parse_rename(r, f"rename[{i}]") if isinstance(r, str) \
            else Rule(r[0], r[1], f"rename[{i}]")
        rules.append(rule)
    ignores = [r if isinstance(r, Rule) else Rule(r, None, f"ignore[{i}]") for i, r in enumerate(ignore)]
    flips = [r if isinstance(r, Rule) else Rule(r, None, f"transpose[{i}]") for i, r in enumerate(transpose)]
    for what, group in (("rename", rules), ("ignore", ignores), ("transpose", flips)):
        for rule in group:
            problem = check_rule(rule.pattern, rule.repl)
            if problem:
                raise WeightsError(f"{what} rule {rule.describe()}: {problem}")
    return src.with_options(rules, ignores, strict, cast, flips)


# ---- the plan ------------------------------------------------------------------------------


@dataclass
class Entry:
    """One pipeline tensor and where it comes from."""

    key: str                 # pipeline key
    file_key: str            # the key as written in the file (before renaming)
    shape: tuple[int, ...]
    how: str                 # exact | renamed | order | structure
    detail: str = ""         # the rule, or the module and the file prefix it went to
    cast: str = ""           # "float16→float32" when the dtype changes


@dataclass
class LoadReport:
    """What a load does or did: the strategy, every tensor's source, and what is left over."""

    file: str
    strategy: str                                          # exact | order | structure
    loaded: int
    entries: list[Entry] = field(default_factory=list)
    unused: list[str] = field(default_factory=list)         # file keys that went nowhere
    ignored: list[str] = field(default_factory=list)        # file keys an ignore rule left out
    missing: list[str] = field(default_factory=list)        # pipeline keys kept initial (strict=False)
    kept_initial: list[str] = field(default_factory=list)   # blocks with tensors the file lacks
    renamed: int = 0
    warnings: list[str] = field(default_factory=list)
    _tensors: dict = field(default_factory=dict, repr=False)

    def to_dict(self) -> dict:
        return {"file": self.file, "strategy": self.strategy, "loaded": self.loaded, "renamed": self.renamed,
                "unused": self.unused, "ignored": self.ignored, "kept_initial": self.kept_initial,
                "missing": self.missing, "warnings": self.warnings, "summary": self.describe()}

    def describe(self) -> str:
        what = {"exact": "by name", "order": "by order", "structure": "by module structure"}[self.strategy]
        text = f"loaded {self.loaded} tensors from {self.file} {what}"
        if self.renamed:
            text += f" ({self.renamed} renamed)"
        if self.kept_initial:
            text += f"; initial weights kept for {', '.join(self.kept_initial)}"
        if self.unused:
            text += f"; {len(self.unused)} file keys not used ({_names(self.unused)})"
        if self.ignored:
            text += f"; {len(self.ignored)} ignored"
        return text


def _names(keys, n: int = SHOW) -> str:
    keys = list(keys)
    more = f", … {len(keys) - n} more" if len(keys) > n else ""
    return ", ".join(keys[:n]) + more


def _shape(t) -> str:
    return "[" + ", ".join(str(s) for s in tuple(t.shape if hasattr(t, "shape") else t)) + "]"


def _dtype(d: torch.dtype) -> str:
    return str(d).removeprefix("torch.")


def plan(model: nn.Module, weights: WeightsArg, *, rename=(), ignore=(), strict: Optional[bool] = None,
         cast: Optional[bool] = None) -> LoadReport:
    """How `weights` (a file, a Hugging Face folder or a `WeightsSource`) maps onto `model`'s
    state dict, without loading anything. `model` may live on the meta device. Raises
    WeightsError when it does not fit."""
    src = as_source(weights, rename, ignore, strict, cast)
    ck = read_checkpoint(src.file)
    return _plan(model.state_dict(), ck.tensors, ck.path, ck.ordered, src,
                 getattr(model, "pipeline_name", "?"), _blocks(model))


def map_state_dict(model: nn.Module, tensors: Mapping[str, torch.Tensor], file: str = "<weights>", *,
                   ordered: bool = True, **options) -> tuple[dict[str, torch.Tensor], LoadReport]:
    """Map in-memory `tensors` onto `model`'s keys: (pipeline key -> tensor, report).
    `ordered` says whether the tensors' order is meaningful (False for safetensors)."""
    src = as_source(file, options.pop("rename", ()), options.pop("ignore", ()), **options)
    report = _plan(model.state_dict(), dict(tensors), file, ordered, src,
                   getattr(model, "pipeline_name", "?"), _blocks(model))
    return dict(report._tensors), report


def load_weights(model: nn.Module, weights: WeightsArg, **options) -> LoadReport:
    """Load a checkpoint into `model` in place (see the module docstring for how keys map);
    nothing changes unless all of it fits."""
    report = plan(model, weights, **options)
    own = model.state_dict()
    with torch.no_grad():
        for k, v in report._tensors.items():
            own[k].copy_(v.to(own[k].dtype))
    return report


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Tensors of a weights file or Hugging Face folder, in the file's order."""
    return read_checkpoint(path).tensors


def _blocks(model: nn.Module) -> list[str]:
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


def _block_of(key: str, blocks: list[str]) -> str:
    for p in sorted(blocks, key=len, reverse=True):
        if key.startswith(p + "."):
            return p.replace(".", "/")
    return key


def _apply_rules(tensors: dict[str, torch.Tensor], src: WeightsSource, file: str):
    """Ignore, then rename: (tensors by new key, new key -> (file key, rules that changed it),
    ignored file keys, warnings)."""
    warnings = []
    kept, ignored = {}, []
    hits = [0] * len(src.ignore)
    for k, v in tensors.items():
        hit = [i for i, r in enumerate(src.ignore) if r.regex.search(k)]
        for i in hit:
            hits[i] += 1
        if hit:
            ignored.append(k)
        else:
            kept[k] = v
    warnings += [f"ignore rule {r.describe()} matches no file key" for r, n in zip(src.ignore, hits) if not n]
    flipped: dict[str, list[Rule]] = {}
    hits = [0] * len(src.transpose)
    for k, v in kept.items():
        hit = [i for i, r in enumerate(src.transpose) if r.regex.search(k)]
        if not hit:
            continue
        if v.dim() != 2:
            raise WeightsError(f"weights file {file}: transpose rule {src.transpose[hit[0]].describe()} matches "
                               f"`{k}`, which is {_shape(v)}, not a matrix")
        for i in hit:
            hits[i] += 1
        kept[k] = v.t()
        flipped[k] = [src.transpose[hit[0]]]
    warnings += [f"transpose rule {r.describe()} matches no file key" for r, n in zip(src.transpose, hits) if not n]
    out: dict[str, torch.Tensor] = {}
    origin: dict[str, tuple[str, list[Rule]]] = {}
    hits = [0] * len(src.rename)
    compiled = [r.regex for r in src.rename]
    for k, v in kept.items():
        new, used = k, list(flipped.get(k, ()))
        for i, (rule, rx) in enumerate(zip(src.rename, compiled)):
            try:
                changed = rx.sub(rule.repl, new)
            except (re.error, IndexError) as exc:
                raise WeightsError(f"rename rule {rule.describe()} fails on file key `{new}`: {exc}") from None
            if changed != new:
                hits[i] += 1
                used.append(rule)
                new = changed
        if new in out:
            first, rules = origin[new]
            by = ", ".join(r.describe() for r in dict.fromkeys([*rules, *used]))
            raise WeightsError(f"weights file {file}: rename rules map file keys `{first}` and `{k}` both onto "
                               f"`{new}` ({by})")
        out[new] = v
        origin[new] = (k, used)
    warnings += [f"rename rule {r.describe()} matches no file key" for r, n in zip(src.rename, hits) if not n]
    return out, origin, ignored, warnings


def _plan(own: Mapping[str, torch.Tensor], tensors: dict[str, torch.Tensor], file: str, ordered: bool,
          src: WeightsSource, pipeline: str, blocks: list[str]) -> LoadReport:
    if not tensors:
        raise WeightsError(f"weights file {file} holds no tensors")
    renamed, origin, ignored, warnings = _apply_rules(tensors, src, file)
    entries: dict[str, Entry] = {}
    source: dict[str, str] = {}          # pipeline key -> renamed file key

    def add(key: str, fkey: str, how: str, detail: str = "") -> None:
        entries[key] = Entry(key, origin[fkey][0], tuple(own[key].shape), how, detail)
        source[key] = fkey

    # 1. a renamed key names a pipeline tensor: it is pinned there
    lost = [(fkey, orig, rules) for fkey, (orig, rules) in origin.items() if rules and fkey not in own]
    if lost:
        lines = [f"weights file {file}: rename rules produce keys the pipeline lacks:"]
        for fkey, orig, rules in lost[:SHOW]:
            near = difflib.get_close_matches(fkey, list(own), 1)
            lines.append(f"  {rules[-1].describe()} turns `{orig}` into `{fkey}`"
                         + (f" (did you mean `{near[0]}`?)" if near else ""))
        if len(lost) > SHOW:
            lines.append(f"  … {len(lost) - SHOW} more")
        raise WeightsError("\n".join(lines))
    for fkey, (orig, rules) in origin.items():
        if not rules:
            continue
        if tuple(own[fkey].shape) != tuple(renamed[fkey].shape):
            raise WeightsError(f"weights file {file}: {rules[-1].describe()} turns file key `{orig}` "
                               f"{_shape(renamed[fkey])} into `{fkey}`, which is {_shape(own[fkey])} in the pipeline")
        add(fkey, fkey, "renamed", "; ".join(r.describe() for r in rules))
    rest_own = {k: v for k, v in own.items() if k not in entries}
    rest_file = {k: v for k, v in renamed.items() if k not in source.values()}
    strategy, notes = _map_rest(rest_own, rest_file, ordered, add)
    mapped_files = set(source.values())
    missing = [k for k in own if k not in entries and not is_counter(k)]
    left = [k for k in renamed if k not in mapped_files and not is_counter(k)]
    unused = [origin[k][0] for k in left]
    ambiguous = notes.get("ambiguous") or []
    if ambiguous and set(missing) <= {k for a in ambiguous for k in a.keys}:
        raise WeightsError(_ambiguity_text(file, ambiguous))   # all else fits: only the choice is open
    if missing and (src.strict or not entries or ambiguous):
        raise WeightsError(_misfit_text(file, pipeline, own, renamed, missing, left, src.strict, notes))
    tensors_out = {k: renamed[f] for k, f in source.items()}
    _check_dtypes(own, tensors_out, entries, src.cast, file)
    if unused:
        warnings.append(f"{len(unused)} file tensors not used: {_names(unused)}")
    ordered_entries = [entries[k] for k in own if k in entries]
    return LoadReport(file, strategy, len(entries), ordered_entries, unused, ignored, missing,
                      sorted({_block_of(k, blocks) for k in missing}),
                      sum(e.how == "renamed" for e in entries.values()), warnings, tensors_out)


def _map_rest(own: Mapping[str, torch.Tensor], file: Mapping[str, torch.Tensor], ordered: bool, add) -> tuple[str, dict]:
    """Map the pipeline keys not pinned by a rename: exact, order, then structure."""
    needed = [k for k in own if not is_counter(k)]
    if not needed:
        return "exact", {}
    if all(k in file and tuple(file[k].shape) == tuple(own[k].shape) for k in needed):
        for k in own:
            if k in file and tuple(file[k].shape) == tuple(own[k].shape):
                add(k, k, "exact")
        return "exact", {}
    notes: dict = {}
    own_items, file_items = list(own.items()), list(file.items())
    if not ordered:
        notes["order"] = "by order: not for this file (safetensors stores its keys sorted)"
    elif len(own_items) != len(file_items):
        notes["order"] = f"by order: the file has {len(file_items)} tensors, the pipeline {len(own_items)}"
    else:
        bad = [(a, b) for (a, ta), (b, tb) in zip(own_items, file_items) if tuple(ta.shape) != tuple(tb.shape)]
        if not bad:
            for (k, _), (f, _) in zip(own_items, file_items):
                add(k, f, "order")
            return "order", {}
        notes["order"] = (f"by order: {len(bad)} of {len(own_items)} positions differ in shape, first "
                          f"`{bad[0][0]}` {_shape(own[bad[0][0]])} vs `{bad[0][1]}` {_shape(file[bad[0][1]])}")
    result = match_structure({k: tuple(v.shape) for k, v in own.items()}, {k: tuple(v.shape) for k, v in file.items()})
    for k, f in result.mapping.items():
        unit, place = result.unit_of[k]
        add(k, f, "structure", f"{unit} ← {place}")
    notes["ambiguous"] = result.ambiguous
    return "structure", notes


def _ambiguity_text(file: str, ambiguous) -> str:
    lines = [f"weights file {file}: the mapping is ambiguous (rename rules can pin these):"]
    for a in ambiguous[:SHOW]:
        places = [f"`{p}`" if p else "the file's top level" for p in a.places]
        lines.append(f"  {_names(f'`{u}`' for u in a.units)} could come from any of {_names(places)} (ambiguous)")
    return "\n".join(lines)


def _misfit_text(file: str, pipeline: str, own, renamed, missing: list[str], unused: list[str], strict: bool,
                 notes: dict) -> str:
    lines = [f"weights file {file} does not fit pipeline `{pipeline}`: {len(missing)} pipeline tensors have no "
             "match in the file"]
    lines.append(f"  not in the file ({len(missing)}): {_names(f'{k} {_shape(own[k])}' for k in missing)}")
    if unused:
        lines.append(f"  file tensors not used ({len(unused)}): {_names(f'{k} {_shape(renamed[k])}' for k in unused)}")
    clash = [k for k in missing if k in renamed and tuple(renamed[k].shape) != tuple(own[k].shape)]
    if clash:
        lines.append(f"  shape mismatches ({len(clash)}):")
        lines += [f"    {k}: expected {_shape(own[k])}, found {_shape(renamed[k])}" for k in clash[:SHOW]]
        if len(clash) > SHOW:
            lines.append(f"    … {len(clash) - SHOW} more")
    if notes.get("ambiguous"):
        more = _ambiguity_text(file, notes["ambiguous"]).splitlines()[1:]
        lines += more[:3] + ([f"  … {len(more) - 3} more ambiguous groups"] if len(more) > 3 else [])
    if "order" in notes:
        lines.append(f"  also tried {notes['order']}")
    if strict:
        lines.append("  hint: another model or another depth/width of this one? To load what fits and keep the "
                     "initial weights of the rest, use `strict: false` (--no-strict); rename rules map other names")
    return "\n".join(lines)


def _lossless(v: torch.Tensor, dtype: torch.dtype) -> bool:
    if v.dtype == dtype:
        return True
    if v.dtype == torch.bool or dtype == torch.bool or v.dtype.is_complex or dtype.is_complex:
        return False
    if v.dtype.is_floating_point != dtype.is_floating_point:
        return False  # integers into float weights (or back) only when allowed
    if torch.promote_types(v.dtype, dtype) == dtype:
        return True   # float16 → float32, int32 → int64
    if v.device.type == "meta":
        return False
    back = v.to(dtype).to(v.dtype)
    return bool(torch.equal(back, v))


def _check_dtypes(own, tensors: Mapping[str, torch.Tensor], entries: dict[str, Entry], allow: bool, file: str) -> None:
    bad = []
    for k, v in tensors.items():
        target = own[k].dtype
        if v.dtype == target:
            continue
        entries[k].cast = f"{_dtype(v.dtype)}→{_dtype(target)}"
        if not allow and not _lossless(v, target):
            bad.append(f"{k} ({_dtype(v.dtype)} in the file, {_dtype(target)} in the pipeline)")
    if bad:
        raise WeightsError(f"weights file {file}: casting {len(bad)} tensors would change their values: "
                           f"{_names(bad)}; allow it with `cast: true` in the spec's weights section or --allow-cast")


# ---- saving --------------------------------------------------------------------------------


def save_weights(model: nn.Module, path: str | os.PathLike, metadata: Optional[dict[str, str]] = None) -> Path:
    """Write `model`'s state dict as safetensors, atomically (temp file, then `os.replace`)."""
    return save_tensors(model.state_dict(), path, metadata, getattr(model, "pipeline_name", ""))


def save_tensors(tensors: Mapping[str, torch.Tensor], path: str | os.PathLike,
                 metadata: Optional[dict[str, str]] = None, pipeline: str = "") -> Path:
    """Write tensors as safetensors, atomically."""
    from safetensors.torch import save_file

    path = Path(path)
    # shared storage (tied weights) must be cloned for safetensors; contiguous for its writer
    out = {k: v.detach().cpu().contiguous().clone() for k, v in tensors.items()}
    meta = {"format": "pt", **(metadata or {})}
    if pipeline:
        meta.setdefault("composer.pipeline", pipeline)
    try:
        with _io.atomic_path(path) as tmp:
            save_file(out, str(tmp), metadata=meta)
    except OSError as exc:
        raise WeightsError(f"cannot write weights to {path}: {exc.strerror or exc}") from None
    return path

"""Structural mapping of a checkpoint onto a pipeline whose names differ and whose order is
unknown (safetensors sorts its keys).

The pipeline's state dict is a module tree. Starting at the root, each *unit* (a subtree: the
whole model, a block, one repeat of a block, a layer, or the tensors a module holds itself)
looks for the file prefixes `q` under which every one of its tensors appears by the same
relative name and shape, taking whole file modules only (a unit never takes a conv's weight
and leaves its bias behind). A unit with no such prefix is split into its children; a leaf
with none stays unmatched. So module names may differ freely (`stem.conv1` ↔ `conv1`,
`encoder.3` ↔ `encoder.layers.encoder_layer_3`); tensor names within a module may not — those
are what rename rules are for.

Units that are alike (same relative names and shapes, such as the repeats of a bottleneck)
go to their places in the file's numeric order, when the places differ only in numbers
(`layer1.1` < `layer1.2` < `layer1.10`; `denselayer9` < `denselayer10`). Anything else with
more than one place is ambiguous and reported, never guessed. Units are settled in rounds,
largest first, so a small unit (a final LayerNorm) waits until the large ones have taken
their tensors and one place is left for it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Mapping, Optional, Sequence

Shape = tuple[int, ...]
COUNTERS = ("num_batches_tracked",)  # FrozenBatchNorm2d checkpoints have none; never required


def is_counter(key: str) -> bool:
    return key.rpartition(".")[2] in COUNTERS


def join(prefix: str, rel: str) -> str:
    return f"{prefix}.{rel}" if prefix and rel else prefix or rel


def natural_key(path: str) -> tuple:
    """Sort key that orders numbers by value: `layer1.9` before `layer1.10`."""
    return tuple(tuple((0, int(t), "") if t.isdigit() else (1, 0, t) for t in re.split(r"(\d+)", part) if t)
                 for part in path.split("."))


def _index_like(a: str, b: str) -> bool:
    """Do two sibling names differ only in their numbers (`3`/`4`, `denselayer9`/`denselayer10`)?"""
    return bool(re.search(r"\d", a)) and re.sub(r"\d+", "#", a) == re.sub(r"\d+", "#", b)


def ordered_places(places: Sequence[str]) -> Optional[list[str]]:
    """The places in numeric order, or None when two of them differ other than by a number."""
    ranked = sorted(places, key=natural_key)
    for a, b in zip(ranked, ranked[1:]):
        pa, pb = a.split("."), b.split(".")
        if len(pa) != len(pb):
            return None
        first = next(i for i, (x, y) in enumerate(zip(pa, pb)) if x != y)
        if not _index_like(pa[first], pb[first]):
            return None
    return ranked


@dataclass
class Unit:
    """A pipeline subtree at `prefix`: its tensors by relative name (counters apart)."""

    prefix: str
    rel: dict[str, Shape]            # relative name -> shape, pipeline order
    counters: list[str]              # relative names of num_batches_tracked buffers
    own_only: bool = False           # only the tensors the module at `prefix` holds itself

    def signature(self) -> tuple:
        return tuple(sorted(self.rel.items()))

    def label(self) -> str:
        return (self.prefix or "(whole model)") + (" (own tensors)" if self.own_only and self.prefix else "")


@dataclass
class Ambiguity:
    units: list[str]
    places: list[str]
    keys: list[str]          # the pipeline keys of the units


@dataclass
class StructureResult:
    mapping: dict[str, str] = field(default_factory=dict)         # pipeline key -> file key
    unit_of: dict[str, tuple[str, str]] = field(default_factory=dict)  # pipeline key -> (unit, place)
    ambiguous: list[Ambiguity] = field(default_factory=list)
    unmatched: list[str] = field(default_factory=list)          # pipeline keys (counters apart)


class _Index:
    """The file's unused tensors by every suffix they end in, and by the module that holds them."""

    def __init__(self, file: Mapping[str, Shape]):
        self.shape = dict(file)
        self.unused = set(file)
        self.by_suffix: dict[str, set[str]] = {}
        self.module_keys: dict[str, set[str]] = {}
        for k in file:
            parts = k.split(".")
            for i in range(len(parts)):
                self.by_suffix.setdefault(".".join(parts[i:]), set()).add(".".join(parts[:i]))
            if not is_counter(k):
                self.module_keys.setdefault(k.rpartition(".")[0], set()).add(k)

    def places(self, unit: Unit) -> list[str]:
        """File prefixes holding all of the unit's tensors, unused, by name and shape, as whole modules."""
        rels = sorted(unit.rel, key=lambda r: len(self.by_suffix.get(r, ())))
        options: Optional[set[str]] = None
        for r in rels:
            here = {q for q in self.by_suffix.get(r, ()) if (options is None or q in options)
                    and join(q, r) in self.unused and self.shape[join(q, r)] == unit.rel[r]}
            options = here
            if not options:
                return []
        out = []
        for q in sorted(options or (), key=natural_key):
            taken: dict[str, set[str]] = {}
            for r in unit.rel:
                f = join(q, r)
                taken.setdefault(f.rpartition(".")[0], set()).add(f)
            if all(keys == self.module_keys[m] & self.unused for m, keys in taken.items()):
                out.append(q)
        return out

    def take(self, unit: Unit, place: str, result: StructureResult) -> None:
        for r in [*unit.rel, *unit.counters]:
            f = join(place, r)
            if r in unit.counters and (f not in self.unused or self.shape[f] != ()):
                continue   # a counter the file lacks keeps its value
            key = join(unit.prefix, r)
            result.mapping[key] = f
            result.unit_of[key] = (unit.label(), place or "(top level)")
            self.unused.discard(f)


def _children(unit: Unit) -> list[Unit]:
    """A unit split one level down: its child modules, then the tensors it holds itself."""
    kids: dict[str, Unit] = {}
    own = Unit(unit.prefix, {}, [], own_only=True)
    for r, shape in [*unit.rel.items(), *((c, ()) for c in unit.counters)]:
        head, dot, rest = r.partition(".")
        target = own if not dot else kids.setdefault(head, Unit(join(unit.prefix, head), {}, []))
        name = r if not dot else rest
        if is_counter(name):
            target.counters.append(name)
        else:
            target.rel[name] = shape
    return [u for u in (*kids.values(), own) if u.rel]


def match_structure(own: Mapping[str, Shape], file: Mapping[str, Shape]) -> StructureResult:
    """Map pipeline keys (`own`, in pipeline order) onto file keys by module structure."""
    root = Unit("", {k: s for k, s in own.items() if not is_counter(k)}, [k for k in own if is_counter(k)])
    index = _Index(file)
    result = StructureResult()
    pending = [root] if root.rel else []
    order = {k: i for i, k in enumerate(own)}
    while pending:
        progress = False
        groups: dict[tuple, list[Unit]] = {}
        for u in pending:
            groups.setdefault(u.signature(), []).append(u)
        waiting: list[Unit] = []
        stuck: list[tuple[list[Unit], list[str]]] = []
        for members in sorted(groups.values(), key=lambda g: (-len(g[0].rel), order[join(g[0].prefix, next(iter(g[0].rel)))])):
            places = index.places(members[0])
            if not places:
                split = [c for u in members for c in _children(u)] if not members[0].own_only else []
                if split and not (len(split) == len(members) and split[0].own_only):
                    waiting.extend(split)
                    progress = True
                else:
                    result.unmatched.extend(join(u.prefix, r) for u in members for r in u.rel)
                continue
            ranked = places if len(places) == 1 else ordered_places(places)
            if len(places) == len(members) and ranked is not None:
                for u, q in zip(members, ranked):
                    index.take(u, q, result)
                progress = True
            else:
                waiting.extend(members)
                stuck.append((members, places))
        pending = sorted(waiting, key=lambda u: order[join(u.prefix, next(iter(u.rel)))])
        if not progress:
            result.ambiguous = [Ambiguity([u.label() for u in m], p, [join(u.prefix, r) for u in m for r in u.rel])
                                for m, p in stuck]
            result.unmatched.extend(join(u.prefix, r) for u in pending for r in u.rel)
            break
    return result

"""The data of `composer train` and `composer eval`: readers per `data.format`, and the loader.

    train, val = open_splits(plan, spec_dir, pipe.resolved.seed, **pipeline_context(pipe))
    loader = make_loader(train, plan, train=True, batch_size=64, seed=seed)

`open_splits` opens `data.train` and `data.val` (paths relative to the spec's folder), or
splits `data.val_fraction` of the training examples off, seeded (series: by time), and checks
every split before anything trains: bad data is a `DataError` naming the file and the row.
Graph data (`format: graph`) splits the graphs of a file, or the nodes of a file's one graph
(its masks, else `val_fraction` of its labelled nodes): see `graphs`.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

import numpy as np

from .base import DataError, Examples
from .loader import Loader, make_loader

__all__ = ["DataError", "Examples", "Loader", "Subset", "dim_examples", "make_loader", "open_data", "open_splits",
           "pipeline_context"]


class Subset(Examples):
    """Some examples of another split, in a given order (a seeded validation share)."""

    def __init__(self, base: Examples, indices: Sequence[int]):
        self.base = base
        self.indices = np.asarray(indices, dtype=np.int64)
        self.source = base.source
        self.fields = base.fields
        self.pending_normalize = getattr(base, "pending_normalize", {})

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return self.base[int(self.indices[i])]

    def where(self, i: int) -> str:
        return self.base.where(int(self.indices[i]))

    def check(self, plan) -> None:
        """The base split was checked."""


def dim_examples(pipe) -> dict[str, int]:
    """The `example` size of each dim of a pipeline's `dims` (a series' default window)."""
    return {name: d.example for name, d in pipe.resolved.dims.items() if getattr(d, "example", None)}


def pipeline_context(pipe) -> dict[str, Any]:
    """What the readers take from the pipeline beside the plan: `labels` (the spec's class
    names, an image folder's default class order) and `dims` (`dim_examples`)."""
    labels = pipe.resolved.labels
    return {"labels": list(labels.names) if labels is not None else None, "dims": dim_examples(pipe)}


def _from_spec(plan, labels: Optional[Sequence[str]], dims: Optional[Mapping[str, int]]
               ) -> tuple[Optional[Sequence[str]], Mapping[str, int]]:
    """Without them given, the labels and dim examples of the pipeline the plan was made from."""
    graph = plan.section.graph
    resolved = graph.resolved if graph is not None else None
    if labels is None and resolved is not None and resolved.labels is not None:
        labels = list(resolved.labels.names)
    if dims is None:
        dims = {n: d.example for n, d in resolved.dims.items() if getattr(d, "example", None)} if resolved else {}
    return labels, dims


def _open(plan, path: Path, spec_dir: Path, *, labels: Optional[Sequence[str]], dims: Mapping[str, int],
          train: bool) -> Examples:
    data = plan.spec.data
    fmt = data.format
    if not path.exists():
        raise DataError(f"{path}: no such {'folder' if fmt in ('image_folder', 'series') else 'file'} "
                        f"(`data.{'train' if train else 'val'}`, relative to the spec's folder {spec_dir})")
    detection = [t.output for t in plan.targets.values() if t.role == "detection"]
    if detection and fmt != "coco":
        raise DataError(f"{path}: output `{detection[0]}` learns detections, and `format: {fmt}` holds no boxes; "
                        "use `format: coco`")
    graphs = [n.name for n in plan.inputs.values() if n.kind == "graph"]
    if graphs and fmt != "graph":
        raise DataError(f"{path}: input `{graphs[0]}` is a graph, and `format: {fmt}` holds no graphs; use "
                        "`format: graph` (.json, .jsonl or .npz graph files)")
    if fmt == "image_folder":
        from ..augment import fixes_size
        from .image_folder import ImageFolder
        examples: Examples = ImageFolder(plan, path, labels, sized_by_augment=train and fixes_size(plan.spec.augment))
    elif fmt == "table":
        from .table import open_table
        examples = open_table(plan, path)
    elif fmt == "jsonl":
        from .jsonl import JsonlExamples
        examples = JsonlExamples(plan, path)
    elif fmt == "arrays":
        from .arrays import ArrayExamples
        examples = ArrayExamples(plan, path)
    elif fmt == "series":
        from .series import SeriesExamples
        examples = SeriesExamples(plan, path, dims)
    elif fmt == "graph":
        from .graphs import GraphExamples
        examples = GraphExamples(plan, path, train=train)
    elif fmt == "coco":
        from .coco import CocoExamples
        images = (spec_dir / data.images) if data.images else path.parent
        from ..plan import has_masks
        examples = CocoExamples(plan, path, images, masks=has_masks(plan))
    else:                                            # config.FORMATS and this list go together
        raise DataError(f"unknown data format `{fmt}`")
    examples.check(plan)
    return examples


def open_splits(plan, spec_dir: Path, seed: int, *, labels: Optional[Sequence[str]] = None,
                dims: Optional[Mapping[str, int]] = None) -> tuple[Examples, Optional[Examples]]:
    """The training split and the validation split (None without `val` or `val_fraction`).

    `seed` is the pipeline's seed, used for the `val_fraction` split when `train.seed` is not
    set; `labels` are the spec's class names (an image folder's default class order); `dims`
    the `example` size of each dim (a series' default window). Both default to what the
    pipeline of the plan has; `pipeline_context(pipe)` gives them from a loaded pipeline."""
    data = plan.spec.data
    seed = plan.spec.seed if plan.spec.seed is not None else seed
    labels, dims = _from_spec(plan, labels, dims)
    kw = dict(labels=labels, dims=dims)
    train = _open(plan, spec_dir / data.train, spec_dir, train=True, **kw)
    if data.val is not None:
        return train, _open(plan, spec_dir / data.val, spec_dir, train=False, **kw)
    frac = data.val_fraction
    if hasattr(train, "node_split"):                 # one graph with node labels: its nodes are split
        nodes = train.node_split(frac, seed)
        if nodes is not None:
            return nodes
    if frac is None:
        return train, None
    if hasattr(train, "check_sizes"):
        train.check_sizes()                          # validation examples are not augmented to one size
    if hasattr(train, "time_split"):
        keep, val = train.time_split(frac)
    else:
        n = len(train)
        order = np.random.default_rng([seed, 0x5EED]).permutation(n)
        n_val = max(1, math.ceil(n * frac))
        val, keep = sorted(order[:n_val].tolist()), sorted(order[n_val:].tolist())
    if not keep:
        raise DataError(f"{train.source}: `val_fraction: {frac}` of {len(train)} examples leaves none to train on")
    return Subset(train, keep), Subset(train, val)


def open_data(plan, path: Path, *, labels: Optional[Sequence[str]] = None,
              dims: Optional[Mapping[str, int]] = None, spec_dir: Optional[Path] = None) -> Examples:
    """One split from `path` in the spec's `data.format` (`composer eval --data PATH`)."""
    labels, dims = _from_spec(plan, labels, dims)
    return _open(plan, path, spec_dir or path.parent, labels=labels, dims=dims, train=False)

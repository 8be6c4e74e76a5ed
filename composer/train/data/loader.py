"""Batches for training: the order of each epoch, the split across processes, collation, and
the loader state a checkpoint keeps so a resumed run continues with exactly the next batch.

A batch is

    {"inputs":  {core input name: Tensor [B, ...]},
     "targets": {output: Tensor [B, ...]}   (detection: a list of {"boxes": [N, 4], "labels": [N]}),
     "index":   int64 Tensor [B]}           (the examples' indices in the split)

A batch of B graphs (`format: graph`) is one graph of B disjoint parts (`graph_data.join`: node
ids offset, `batch` made when the input has that field), given as one tensor per field
(`graph_x` [N, F], `graph_edge_index` [2, E], ...); a node-level target is the graphs' per-node
targets concatenated ([N, ...]), a graph-level one stacked ([B, ...]).

Order: epoch e of a training split is the permutation drawn from (seed, e); a validation split
is read in order. Batch k of the epoch is the same set of examples whatever the number of
processes: with `world` processes, rank r takes its `batch_size // world` share of it, so
DDP averages the gradient of the single-process batch. Training drops the last partial batch.
Validation keeps it: with world > 1 the split is padded (repeating its first examples) to a
multiple of `world` and each batch is shared equally, so every rank runs the same number of
steps; `Loader.padding` says how many examples are repeated (their `index` shows them).
Augmentation (`train.augment`) runs on training examples only, per example, before the
image normalisation a reader leaves to the loader (`Examples.pending_normalize`: field ->
(mean, std), the input's `preprocess`), so colour steps see [0, 1] images.

Resume: Lightning (2.6, `fit_loop.on_save_checkpoint` / `CombinedLoader._state_dicts`) calls
`state_dict()` on the train DataLoader itself when it writes a checkpoint, and, on resume,
`load_state_dict()` before it creates the iterator (`FitLoop.setup_data`); then it calls
`set_epoch(epoch)` on `loader.batch_sampler.sampler` (`_set_sampler_epoch`) before the first
batch. `Loader` counts the batches it has handed out and starts its next iteration after that
many when the epoch is the one the state was saved in; the iterator is created lazily (at the
first `next`), so the epoch Lightning sets is the one read, with or without worker processes.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Iterator, Optional

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from ...graph_data import GraphError, join
from ...inputs import TORCH_DTYPES
from ..augment import build_augment, check_augment_targets, example_seed
from .base import DataError, Examples
from .fields import example_dims, sequence_input

class EpochOrder(Sampler[int]):
    """The examples of one epoch in order: a permutation from (seed, epoch), or 0..n-1."""

    def __init__(self, n: int, shuffle: bool, seed: int):
        self.n, self.shuffle, self.seed = n, shuffle, seed
        self.epoch = 0
        self.epoch_set = False          # set_epoch was called since the last pass began

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)
        self.epoch_set = True

    def order(self) -> np.ndarray:
        if not self.shuffle:
            return np.arange(self.n)
        return np.random.default_rng([self.seed, self.epoch]).permutation(self.n)

    def __iter__(self) -> Iterator[int]:
        return iter(self.order().tolist())

    def __len__(self) -> int:
        return self.n


class StepSampler(Sampler[list]):
    """This rank's share of each global batch, as `(epoch, index)` keys (the epoch seeds the
    augmentation); `skip` global batches are left out at the start of the next pass."""

    def __init__(self, order: EpochOrder, batch_size: int, rank: int, world: int, drop_last: bool):
        self.sampler = order
        self.batch_size, self.rank, self.world, self.drop_last = batch_size, rank, world, drop_last
        self.skip = 0
        n = order.n
        self.total = n if drop_last or world == 1 else math.ceil(n / world) * world   # padded for val

    def __len__(self) -> int:
        if self.drop_last:
            return self.total // self.batch_size
        return math.ceil(self.total / self.batch_size)

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        epoch = self.sampler.epoch
        order = self.sampler.order()
        if self.total > len(order):
            order = np.concatenate([order, order[:self.total - len(order)]])
        skip, self.skip = self.skip, 0
        b = self.batch_size
        for k in range(skip, len(self)):
            batch = order[k * b:(k + 1) * b]           # the global batch k
            share = len(batch) // self.world
            mine = batch[self.rank * share:(self.rank + 1) * share]
            yield [(epoch, int(i)) for i in mine]


class Prepared(Dataset):
    """Examples as tensors of the plan's dtypes, augmented (training) and normalised."""

    def __init__(self, examples: Examples, plan, augment, seed: int):
        self.examples, self.plan, self.augment, self.seed = examples, plan, augment, seed
        fields = set(examples.fields)
        self.inputs = [n for n in plan.inputs.values() if n.field in fields]
        self.images = [n for n in self.inputs if n.kind == "image" and not n.raw]
        self.detection = [t for t in plan.targets.values() if t.role == "detection"]
        # a reader that leaves an input's `preprocess` mean/std to the loader (after augmentation)
        self.normalize = dict(getattr(examples, "pending_normalize", {}))

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, key: tuple[int, int]) -> tuple[int, dict[str, Any]]:
        epoch, i = key
        item = self.examples[i]
        out: dict[str, Any] = {}
        for n in self.inputs:
            v = item[n.field]
            if n.kind == "graph":
                out[n.field] = v                       # numpy fields, joined with the batch's other graphs
                continue
            out[n.field] = v if n.raw else torch.as_tensor(np.asarray(v)).to(TORCH_DTYPES.get(n.spec.dtype,
                                                                                               torch.float32))
        for t in self.plan.targets.values():
            v = item[t.field]
            if t.role == "detection":
                det = {k: torch.as_tensor(np.asarray(x)) for k, x in v.items()}
                det["boxes"] = det["boxes"].to(torch.float32).reshape(-1, 4)
                det["labels"] = det["labels"].to(torch.int64).reshape(-1)
                out[t.field] = det
            else:
                out[t.field] = torch.as_tensor(np.asarray(v)).to(torch.int64 if t.role == "class" else torch.float32)
        if self.augment is not None and self.images:
            det = self.detection[0].field if len(self.detection) == 1 else None
            imgs, boxes = self.augment({n.field: out[n.field] for n in self.images},
                                       out[det] if det else None, example_seed(self.seed, epoch, i))
            out.update(imgs)
            if det:
                out[det] = boxes
        for f, (mean, std) in self.normalize.items():
            x = out[f]
            c = x.shape[0]
            if mean is not None:
                x = x - torch.tensor(mean, dtype=x.dtype).reshape(-1, 1, 1).expand(c, 1, 1)
            if std is not None:
                x = x / torch.tensor(std, dtype=x.dtype).reshape(-1, 1, 1).expand(c, 1, 1)
            out[f] = x
        return i, out


def pad_stack(tensors: list[torch.Tensor], value: float, allowed: list[int], multiples: Optional[list[int]] = None,
              what: Callable[[], str] = lambda: "a field") -> tuple[torch.Tensor, list[int]]:
    """Stack per-example tensors, padding the `allowed` axes (per example) at their end to the
    batch's largest size (rounded up to `multiples[axis]`); also gives each example's size of
    axis 0. Any other axis that differs is a DataError."""
    first = tensors[0]
    lengths = [int(t.shape[0]) if t.dim() else 1 for t in tensors]
    if all(t.shape == first.shape for t in tensors) and not multiples:
        return torch.stack(tensors), lengths
    size = [max(int(t.shape[a]) for t in tensors) for a in range(first.dim())]
    for a in range(first.dim()):
        if any(int(t.shape[a]) != size[a] for t in tensors) and a not in allowed:
            sizes = sorted({int(t.shape[a]) for t in tensors})
            raise DataError(f"{what()} has sizes {sizes} at axis {a + 1} in one batch, and that dim is fixed")
        if multiples and a in allowed and multiples[a] > 1:
            size[a] = math.ceil(size[a] / multiples[a]) * multiples[a]
    out = torch.full((len(tensors), *size), value, dtype=first.dtype)
    for j, t in enumerate(tensors):
        out[(j, *(slice(0, int(d)) for d in t.shape))] = t
    return out, lengths


class Collate:
    """A list of prepared examples -> one batch (see the module docstring)."""

    def __init__(self, examples: Examples, plan):
        self.plan = plan
        self.examples = examples
        fields = set(examples.fields)
        self.raw = [n for n in plan.inputs.values() if n.raw]
        self.graphs = [n for n in plan.inputs.values() if n.kind == "graph" and n.field in fields]
        self.data = [n for n in plan.inputs.values() if not n.raw and n.field in fields and n.kind != "graph"]
        self.masks = [n for n in plan.inputs.values() if not n.raw and n.field not in fields]
        self.detection = any(t.role == "detection" for t in plan.targets.values())
        self.seq = sequence_input(plan, list(fields))
        for n in self.masks:
            if n.kind != "mask":
                raise DataError(f"{examples.source}: the data has no field `{n.field}` for input `{n.name}`; the "
                                f"fields are: {', '.join(examples.fields)}")
            if self._source_of(n) is None:
                raise DataError(f"{examples.source}: input `{n.name}` (a mask) has no field `{n.field}` in the data, "
                                "and no sequence input to take its length from; add the field")

    def _source_of(self, mask):
        """The data input whose steps a mask marks: one sharing its T, else the first sequence."""
        t = mask.spec.shape[1] if mask.spec is not None and mask.spec.shape and len(mask.spec.shape) > 1 else None
        for n in self.data:
            if n.spec is not None and n.spec.shape and len(n.spec.shape) > 1 and n.spec.shape[1] == t:
                return n
        return self.seq

    def _axes(self, n) -> tuple[list[int], Optional[list[int]]]:
        dims = example_dims(n)
        if dims is None:
            return [], None
        allowed = [a for a, d in enumerate(dims) if d is None]
        if n.kind == "image" and not self.detection:
            return [], None                          # classification images: checked to one size by the reader
        multiples = None
        if n.kind == "image":
            names = [str(d) for d in n.spec.shape[1:]]
            multiples = [n.spec.multiples.get(s, 1) for s in names]
        return allowed, multiples

    def _what(self, field: str, index: torch.Tensor) -> Callable[[], str]:
        """The message's subject, made only when there is an error (finding a line reads the file)."""
        return lambda: f"field `{field}` of {self.examples.where(int(index[0]))} and the others of its batch"

    def __call__(self, items: list[tuple[int, dict[str, Any]]]) -> dict[str, Any]:
        index = torch.tensor([i for i, _ in items], dtype=torch.int64)
        ex = [it for _, it in items]
        inputs: dict[str, torch.Tensor] = {}
        if self.raw:
            produced = self.plan.stage({n.name: [e[n.field] for e in ex] for n in self.raw})
            inputs.update({k: torch.as_tensor(np.asarray(v)) for k, v in produced.items()})
        for n in self.graphs:
            parts = n.graph or {}
            if len(ex) > 1 and "batch" not in parts:
                raise DataError(f"{self.examples.source}: input `{n.name}` takes one graph (it has no `batch` "
                                f"field), and a batch holds {len(ex)}; declare `batch: [N]` or set `batch_size: 1`")
            try:
                joined = join([e[n.field] for e in ex], list(parts))
            except GraphError as exc:
                raise DataError(f"{self.examples.where(int(index[0]))} and the others of its batch: {exc}") from None
            for fld, spec in parts.items():
                inputs[spec.name] = torch.as_tensor(joined[fld]).to(TORCH_DTYPES.get(spec.dtype, torch.float32))
        lengths: dict[str, list[int]] = {}
        for n in self.data:
            allowed, multiples = self._axes(n)
            inputs[n.name], lengths[n.name] = pad_stack([e[n.field] for e in ex], 0, allowed, multiples,
                                                        self._what(n.field, index))
        for n in self.masks:
            src = self._source_of(n)
            t = inputs[src.name].shape[1]
            steps = torch.tensor(lengths[src.name])
            mask = torch.arange(t)[None, :] < steps[:, None]                         # (B, T): True = real step
            inputs[n.name] = mask.to(TORCH_DTYPES.get(n.spec.dtype, torch.bool))
        targets: dict[str, Any] = {}
        for t in self.plan.targets.values():
            values = [e[t.field] for e in ex]
            if t.role == "detection":
                targets[t.output] = values
                continue
            if t.level == "node":                      # per node: the graphs' nodes, in the joined order
                targets[t.output] = torch.cat(values, 0)
                continue
            allowed = [a for a, d in enumerate(t.shape or ()) if d is None]
            pad = t.ignore_index if t.role == "class" and t.ignore_index is not None else 0
            targets[t.output], _ = pad_stack(values, pad, allowed, None, self._what(t.field, index))
        return {"inputs": inputs, "targets": targets, "index": index}


class Loader(DataLoader):
    """A DataLoader whose position in the epoch is saved in checkpoints (`state_dict`)."""

    def __init__(self, dataset: Prepared, steps: StepSampler, collate: Collate, workers: int):
        # its own generator: making an iterator draws a base seed, which must not come from the global RNG
        # (a resumed run makes one more iterator than an uninterrupted one; dropout reads the global RNG)
        super().__init__(dataset, batch_sampler=steps, collate_fn=collate, num_workers=workers,
                         generator=torch.Generator().manual_seed(steps.sampler.seed))
        self.steps = steps
        self.padding = steps.total - steps.sampler.n
        self._resume: Optional[tuple[int, int]] = None     # (epoch, batches) loaded, for the next pass
        self._epoch: Optional[int] = None                  # the epoch of the pass begun last
        self._batches, self._done = 0, False

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return self._iterate()

    def _iterate(self) -> Iterator[dict[str, Any]]:
        """Lazily begun (a generator), so an epoch set after `iter()` still counts."""
        order = self.steps.sampler
        skip = 0
        if self._resume is not None:
            epoch, batches = self._resume
            self._resume = None
            if order.epoch == epoch:
                skip = batches
        elif self._done and not order.epoch_set:
            order.epoch += 1                       # a plain loop without set_epoch: the next epoch
        order.epoch_set = False
        self.steps.skip = skip
        self._epoch, self._batches, self._done = order.epoch, skip, False
        for batch in super().__iter__():
            self._batches += 1
            yield batch
        self._done = True

    def state_dict(self) -> dict[str, Any]:
        """The epoch of the pass and the batches it has given (a loaded state not yet begun is kept)."""
        o = self.steps.sampler
        if self._resume is not None:
            epoch, batches = self._resume
        elif self._epoch is None:
            epoch, batches = o.epoch, 0
        else:
            epoch, batches = self._epoch, self._batches
        return {"epoch": epoch, "batches": batches, "examples": o.n, "seed": o.seed,
                "batch_size": self.steps.batch_size}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        o = self.steps.sampler
        for key, have in (("examples", o.n), ("seed", o.seed), ("batch_size", self.steps.batch_size)):
            if key in state and state[key] != have:
                raise DataError(f"the checkpoint was written with {key} = {state[key]}, and this run has {have}; "
                                "it cannot continue the same epoch (start a fresh run, or load only the weights)")
        o.epoch = int(state.get("epoch", 0))
        self._resume = (o.epoch, int(state.get("batches", 0)))


def make_loader(examples: Examples, plan, *, train: bool, batch_size: int, seed: int, rank: int = 0,
                world: int = 1, workers: int = 0) -> Loader:
    """The DataLoader of one split (see the module docstring); DataError when the split cannot
    make one batch or `batch_size` does not divide by `world`."""
    if batch_size % world:
        raise DataError(f"batch_size {batch_size} does not divide by the {world} processes; each takes an equal "
                        f"share of every batch (make it a multiple of {world})")
    if not 0 <= rank < world:
        raise ValueError(f"rank {rank} outside [0, {world})")
    n = len(examples)
    if train and n < batch_size:
        raise DataError(f"{examples.source}: {n} training examples, fewer than one batch of {batch_size}; lower "
                        "`batch_size`")
    if not train and n < world:
        raise DataError(f"{examples.source}: {n} validation examples for {world} processes; each needs one")
    for need in plan.inputs.values():
        if need.kind == "graph" and "batch" not in (need.graph or {}) and batch_size // world > 1 and n > 1:
            raise DataError(f"{examples.source}: input `{need.name}` takes one graph (it has no `batch` field), and "
                            f"`batch_size: {batch_size}` joins several into each batch; declare `batch: [N]` among "
                            "its fields (and pool each graph with graph_pool), or set `batch_size: 1`")
    if train:
        check_augment_targets(plan)
    augment = build_augment(list(plan.spec.augment)) if train else None
    order = EpochOrder(n, shuffle=train, seed=seed)
    steps = StepSampler(order, batch_size, rank, world, drop_last=train)
    return Loader(Prepared(examples, plan, augment, seed), steps, Collate(examples, plan), workers)

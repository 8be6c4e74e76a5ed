"""Graph data (`format: graph`): one example per graph of a JSON, JSON lines or `.npz` graph file
(read by `composer.graph_data.read_graph_file`), or, for one graph with node labels, that
graph with the labels of one split's nodes.

    {"x": [[...], ...], "edges": [[0, 1], ...], "undirected": true, "y": [0, 2, ...],
     "train_mask": [1, 0, ...], "val_mask": [0, 1, ...]}        # one graph: node classification
    {"x": [[...]], "edges": [[...]], "y": 1}                     # a line of a .jsonl: graph classification

The target of every output is the file's `y`: per node for a node-level output (first dim N),
per graph for a graph-level one (G after `graph_pool`, or 1). Several graphs: each is an
example (`val_fraction` splits the graphs). One graph with node labels (transductive node
classification): the training split is the graph with the labels of nodes outside
`train_mask` set to the loss's `ignore_index`, the validation split the same graph with the
labels outside `val_mask` ignored; without masks, `val_fraction` splits the labelled nodes
(seeded). Every graph is checked when the file is opened, before the first step: a
`DataError` names the file and the graph (`data/graphs.json: graphs[3]`, `data/m.jsonl:18`)
and the node.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Optional

import numpy as np

from ...graph_data import FIELD_LAYOUT, GraphError, read_graph_file
from ...inputs import NUMPY_DTYPES
from .base import DataError, Examples
from .fields import dims_text

MASKS = ("train_mask", "val_mask", "test_mask")


def _graph_need(plan, path: Path):
    graphs = [n for n in plan.inputs.values() if n.kind == "graph"]
    others = [n for n in plan.inputs.values() if n.kind != "graph"]
    if not graphs:
        raise DataError(f"{path}: `format: graph` feeds a graph input, and the pipeline has none (its inputs: "
                        f"{', '.join(f'`{n.name}` ({n.kind})' for n in plan.inputs.values()) or 'none'})")
    if len(graphs) > 1 or others:
        extra = graphs[1:] + others
        raise DataError(f"{path}: a graph file fills one graph input, and the pipeline also has input "
                        f"`{extra[0].name}` ({extra[0].kind}); `format: graph` reads pipelines whose only input is "
                        "a graph")
    return graphs[0]


def _wheres(path: Path, count: int) -> list[str]:
    """Where each graph of a file is, as messages name it: `FILE: graphs[i]`, `FILE:LINE` (JSON
    lines), `FILE` (a file of one graph)."""
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        with open(path, "rb") as f:
            lines = [i for i, raw in enumerate(f, 1) if raw.strip()]
        return [f"{path}:{i}" for i in lines]
    if count == 1:
        return [str(path)]
    return [f"{path}: graphs[{i}]" for i in range(count)]


class GraphExamples(Examples):
    """The graphs of one file; `keep` (one graph only): the nodes whose labels this split learns."""

    def __init__(self, plan, path: Path, *, train: bool):
        self.source, self.plan, self.train = path, plan, train
        self.need = _graph_need(plan, path)
        self.targets = [t for t in plan.targets.values() if t.role != "detection"]
        for t in self.targets:
            if t.field != "y":
                raise DataError(f"{path}: graph files carry their labels as `y`, and `data.targets` gives output "
                                f"`{t.output}` the field `{t.field}`; drop it (the default is `y`)")
            if t.level is None:
                raise DataError(f"{path}: output `{t.output}` is neither per node (first dim N of input "
                                f"`{self.need.name}`) nor per graph (first dim G, after graph_pool, or 1), so "
                                "graph data has no target for it")
        self.fields = (self.need.field, *dict.fromkeys(t.field for t in self.targets))
        try:
            self.graphs = read_graph_file(path, f"data `{path}`")
        except GraphError as exc:
            raise DataError(str(exc)) from None
        self.wheres = _wheres(path, len(self.graphs))
        self._labels: list[dict[str, np.ndarray]] = []
        for graph, where in zip(self.graphs, self.wheres):
            self._check_graph(graph, where)
            self._labels.append({t.output: self._target(graph, t, where) for t in self.targets})
        self.keep: Optional[np.ndarray] = None
        if self.transductive:
            self.keep = self._split_nodes(train)

    # ---- what the file is ------------------------------------------------------------------

    @property
    def transductive(self) -> bool:
        """One graph with node-level targets: its nodes are split, not its graphs."""
        return len(self.graphs) == 1 and any(t.level == "node" for t in self.targets)

    def __len__(self) -> int:
        return len(self.graphs)

    def where(self, i: int) -> str:
        return self.wheres[i]

    def __getitem__(self, i: int) -> dict[str, Any]:
        graph = self.graphs[i]
        specs = self.need.graph or {}
        item: dict[str, Any] = {self.need.field: {
            fld: np.asarray(graph[fld]).astype(NUMPY_DTYPES.get(spec.dtype, np.float32), copy=False)
            for fld, spec in specs.items() if fld != "batch"}}
        for t in self.targets:
            y = self._labels[i][t.output]
            if self.keep is not None and t.level == "node" and t.role == "class":
                y = np.where(self.keep, y, np.int64(t.ignore_index))
            item[t.field] = y
        return item

    def check(self, plan=None) -> None:
        """Every graph was checked when the file was read; here: graphs join into a batch only
        for an input with a `batch` field."""
        plan = plan or self.plan
        bs = plan.spec.batch_size
        if bs > 1 and len(self) > 1 and "batch" not in (self.need.graph or {}):
            raise DataError(f"{self.source}: input `{self.need.name}` takes one graph (it has no `batch` field), and "
                            f"`batch_size: {bs}` joins {bs} graphs into each batch; declare `batch: [N]` among its "
                            "fields (and pool each graph with graph_pool), or set `batch_size: 1`")

    # ---- one graph against the pipeline --------------------------------------------------

    def _check_graph(self, graph: dict[str, Any], where: str) -> None:
        name = self.need.name
        n = int(graph["x"].shape[0])
        for fld, spec in (self.need.graph or {}).items():
            if fld == "batch":
                continue
            if fld not in graph:
                raise DataError(f"{where}: the graph has no `{fld}`, and input `{name}` takes it "
                                f"({fld}: {FIELD_LAYOUT[fld]})")
            want = spec.shape[1] if spec.shape is not None and len(spec.shape) > 1 else None
            if fld in ("x", "edge_attr") and isinstance(want, int) and not isinstance(want, bool):
                got = int(graph[fld].shape[1])
                if got != want:
                    what = "node" if fld == "x" else "edge"
                    raise DataError(f"{where}: {fld} has {got} features per {what}, and input `{name}` takes {want} "
                                    f"({fld}: {dims_text(spec.shape, batch=False)})")
            if fld in ("x", "edge_weight", "edge_attr"):
                arr = np.asarray(graph[fld])
                if not np.isfinite(arr).all():
                    at = tuple(np.argwhere(~np.isfinite(arr))[0])
                    what = "node" if fld == "x" else "edge"
                    raise DataError(f"{where}: {fld} of {what} {at[0]} holds {arr[at]}, not a finite number")
        for key in MASKS:
            if key in graph:
                m = np.asarray(graph[key])
                if m.ndim != 1 or m.shape[0] != n:
                    size = f"{m.shape[0]} entries" if m.ndim == 1 else f"shape {list(m.shape)}"
                    raise DataError(f"{where}: {key} has {size} for {n} nodes; a mask has one true/false per node")
                if m.dtype.kind not in "biuf" or not np.isin(m, (0, 1)).all():
                    bad = int(np.argmax(~np.isin(m, (0, 1)))) if m.dtype.kind in "biuf" else 0
                    raise DataError(f"{where}: {key} of node {bad} is {m[bad]!r}; a mask holds true/false (or 1/0)")
                graph[key] = m.astype(bool)

    def _target(self, graph: dict[str, Any], t, where: str) -> np.ndarray:
        n = int(graph["x"].shape[0])
        shape = tuple(t.shape or ())
        out_text = dims_text((*shape, t.num_classes) if t.role == "class" else shape, batch=False)
        first = "N" if t.level == "node" else "G"
        out_text = f"[{first}, " + out_text[1:] if out_text != "[]" else f"[{first}]"
        if "y" not in graph:
            each = "a label per node" if t.level == "node" else "one label per graph"
            raise DataError(f"{where}: the graph has no `y`, and output `{t.output}` {out_text} learns {each}")
        y = np.asarray(graph["y"])
        if y.dtype.kind not in "biuf":
            raise DataError(f"{where}: `y` holds {y.dtype} values, expected numbers")
        if t.level == "node":
            if y.ndim == 0 or y.shape[0] != n:
                found = "one value" if y.ndim == 0 else f"{y.shape[0]} entries"
                raise DataError(f"{where}: `y` has {found} for {n} nodes, and output `{t.output}` {out_text} learns a "
                                "label per node")
            if t.role != "class" and y.ndim == 1 and shape == (1,):
                y = y.reshape(n, 1)                          # one value per node for an output of [N, 1]
            rest, want = y.shape[1:], shape
        else:
            if y.ndim and y.shape[0] == n and n > 1 and (not shape or shape[0] not in (None, n)):
                raise DataError(f"{where}: `y` has a label per node ({n}), and output `{t.output}` {out_text} learns "
                                "one label per graph (write the graph's `y`, or learn per node without graph_pool)")
            if y.shape == (1, *shape) and None not in shape:
                y = y.reshape(shape)
            elif t.role != "class" and y.ndim == 0 and shape == (1,):
                y = y.reshape(1)                             # one value for an output of [G, 1]
            rest, want = y.shape, shape
        if len(rest) != len(want) or any(w is not None and w != g for g, w in zip(rest, want)):
            unit = "node" if t.level == "node" else "graph"
            each = "a class id" if t.role == "class" and not want else dims_text(want, batch=False)
            raise DataError(f"{where}: `y` has shape {list(y.shape)}, and output `{t.output}` {out_text} needs "
                            f"{each} per {unit}")
        if t.role == "class":
            if y.dtype.kind == "f":
                frac = ~np.isfinite(y) | (y != np.round(np.nan_to_num(y)))
                if frac.any():
                    i = tuple(np.argwhere(frac)[0])
                    at = f"node {i[0]} has" if t.level == "node" else "the graph has"
                    raise DataError(f"{where}: {at} label {y[i]:g}, and class ids are whole numbers")
            y = y.astype(np.int64)
            c = t.num_classes or 0
            bad = ((y < 0) | (y >= c)) & (y != t.ignore_index)
            if bad.any():
                i = tuple(np.argwhere(bad)[0])
                at = f"node {i[0]} has" if t.level == "node" else "the graph has"
                raise DataError(f"{where}: {at} label {int(y[i])}, and output `{t.output}` has {c} classes (ids 0.."
                                f"{c - 1}, or {t.ignore_index} to ignore it)")
            return y
        y = y.astype(np.float32)
        if not np.isfinite(y).all():
            i = tuple(np.argwhere(~np.isfinite(y))[0])
            at = f"node {i[0]}" if t.level == "node" else "the graph"
            raise DataError(f"{where}: `y` of {at} is {y[i]}, not a finite number")
        if t.role == "binary" and ((y < 0) | (y > 1)).any():
            i = tuple(np.argwhere((y < 0) | (y > 1))[0])
            at = f"node {i[0]}" if t.level == "node" else "the graph"
            raise DataError(f"{where}: `y` of {at} is {y[i]:g}, and bce compares with targets in [0, 1]")
        return y

    # ---- one graph: splits of its nodes ----------------------------------------------------

    def _node_targets(self):
        node = [t for t in self.targets if t.level == "node"]
        values = [t for t in node if t.role != "class"]
        if values and any(k in self.graphs[0] for k in MASKS):
            raise DataError(f"{self.wheres[0]}: the graph's masks select the nodes whose labels a split learns, "
                            f"which works for class ids (the others are ignored), and output `{values[0].output}` "
                            f"learns values ({values[0].role}); give the splits as separate graph files")
        return node

    def _labelled(self) -> np.ndarray:
        """Nodes with a label (not ignore_index) for some node-level class target."""
        n = int(self.graphs[0]["x"].shape[0])
        mask = np.zeros(n, dtype=bool)
        for t in self._node_targets():
            y = self._labels[0][t.output]
            mask |= (y != t.ignore_index) if t.role == "class" else True
        return mask

    def _split_nodes(self, train: bool) -> Optional[np.ndarray]:
        """The nodes this split learns from, by the graph's masks (training: `train_mask`, else
        every node outside `val_mask` and `test_mask`; validation: `val_mask`), else all."""
        self._node_targets()
        graph = self.graphs[0]
        n = int(graph["x"].shape[0])
        if train:
            if "train_mask" in graph:
                keep = graph["train_mask"]
            else:
                keep = ~graph.get("val_mask", np.zeros(n, bool)) & ~graph.get("test_mask", np.zeros(n, bool))
        else:
            keep = graph["val_mask"] if "val_mask" in graph else np.ones(n, bool)
        keep = keep & self._labelled()
        if not keep.any():
            which = "train_mask" if train and "train_mask" in graph else "val_mask" if not train and \
                "val_mask" in graph else "the graph"
            raise DataError(f"{self.wheres[0]}: no labelled node in {which}, so the "
                            f"{'training' if train else 'validation'} split has nothing to learn from")
        return keep

    def with_nodes(self, keep: np.ndarray, train: bool) -> "GraphExamples":
        """The same graph learning the labels of the nodes in `keep`."""
        other = object.__new__(GraphExamples)
        other.__dict__.update(self.__dict__)
        other.keep, other.train = keep, train
        return other

    def node_split(self, fraction: Optional[float], seed: int
                   ) -> Optional[tuple["GraphExamples", Optional["GraphExamples"]]]:
        """The training and validation splits of one graph's nodes (None for a file of several
        graphs: those split by graph): by `val_mask` (or, with a `train_mask` only, the nodes
        outside it and `test_mask`), else `fraction` of the labelled nodes, seeded, else no
        validation split."""
        if not self.transductive:
            return None
        graph = self.graphs[0]
        n = int(graph["x"].shape[0])
        labelled = self._labelled()
        none = np.zeros(n, bool)
        if "val_mask" in graph or "train_mask" in graph:
            if "val_mask" in graph:
                val = graph["val_mask"]
            else:
                val = ~graph["train_mask"] & ~graph.get("test_mask", none)
            val = val & labelled
            return self, (self.with_nodes(val, False) if val.any() else None)
        if fraction is None:
            return self, None
        values = [t for t in self._node_targets() if t.role != "class"]
        if values:
            raise DataError(f"{self.source}: `val_fraction` splits the nodes of one graph by ignoring the labels of "
                            f"the other split's nodes, which works for class ids, and output `{values[0].output}` "
                            f"learns values ({values[0].role}); give the validation graph as `data.val`")
        nodes = np.flatnonzero(labelled)
        order = np.random.default_rng([seed, 0x5EED]).permutation(len(nodes))
        n_val = max(1, math.ceil(len(nodes) * fraction))
        if n_val >= len(nodes):
            raise DataError(f"{self.source}: `val_fraction: {fraction}` of the graph's {len(nodes)} labelled nodes "
                            "leaves none to train on")
        val = none.copy()
        val[nodes[order[:n_val]]] = True
        train = labelled & ~val
        return self.with_nodes(train, True), self.with_nodes(val, False)


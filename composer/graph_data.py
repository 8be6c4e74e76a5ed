"""Graph values: the `graph` port type, its declaration as a spec input, checks of real graphs,
seeded random graphs, graph files (JSON, `.npz`) and batches of graphs.

A graph is a dict of tensors, in PyTorch Geometric's layout (`Data`/`Batch`):

    x           [N, F]   float   node features
    edge_index  [2, E]   int64   (source, target) node of each edge; messages flow source -> target
    edge_weight [E]      float   optional: a weight per edge
    edge_attr   [E, Fe]  float   optional: features per edge
    batch       [N]      int64   optional: the graph of each node in a batch (sorted, 0..G-1)

A spec declares a graph input by its fields' shapes, with N and E symbolic:

    inputs:
      graph:
        kind: graph
        fields: {x: [N, 34], edge_index: [2, E]}

The tensor core (and its ONNX export) takes one tensor per field, named `graph_x`,
`graph_edge_index`, …; the compiled forward joins them into the dict after `check_graph`.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

import numpy as np
import torch

from . import errors as E
from .dims import DimLike, DimSyntaxError, format_dim, parse_dim, sym
from .errors import ComposerError, did_you_mean
from .types import FLOAT_DTYPES, PortType

GRAPH_FIELDS = ("x", "edge_index", "edge_weight", "edge_attr", "batch")
REQUIRED_FIELDS = ("x", "edge_index")
FIELD_KINDS = {"x": "nodes", "edge_index": "edge_index", "edge_weight": "edge_weight", "edge_attr": "edges",
               "batch": "graph_ids"}
FIELD_RANKS = {"x": 2, "edge_index": 2, "edge_weight": 1, "edge_attr": 2, "batch": 1}
FIELD_LAYOUT = {"x": "[N, F]", "edge_index": "[2, E]", "edge_weight": "[E]", "edge_attr": "[E, Fe]", "batch": "[N]"}
INDEX_FIELDS = ("edge_index", "batch")
GRAPH_COUNT = "G"          # the symbol of the number of graphs in a batch (a graph pool's output rows)


class GraphError(ComposerError):
    """A graph value (from a file or given to a compiled model) that is not a valid graph (exit code 1)."""


def core_name(input_name: str, field: str) -> str:
    """The tensor core's input for one field of a graph input: `graph_x`."""
    return f"{input_name}_{field}"


# ---- the port type ---------------------------------------------------------------------------


def nodes_type(n: DimLike, c: DimLike, dtype: str = "float32") -> PortType:
    """Node features: [N, C]."""
    return PortType("nodes", (n, c), dtype)


def graph_type(n: DimLike, e: DimLike, features: DimLike, dtype: str = "float32", *, edge_weight: bool = False,
               edge_dim: Optional[DimLike] = None, batched: bool = False) -> PortType:
    """The type of a graph of N nodes with `features` each and E edges (see the module docstring)."""
    fields = [("x", nodes_type(n, features, dtype)), ("edge_index", PortType("edge_index", (2, e), "int64"))]
    if edge_weight:
        fields.append(("edge_weight", PortType("edge_weight", (e,), dtype)))
    if edge_dim is not None:
        fields.append(("edge_attr", PortType("edges", (e, edge_dim), dtype)))
    if batched:
        fields.append(("batch", PortType("graph_ids", (n,), "int64")))
    graphs: DimLike = sym(GRAPH_COUNT) if batched else 1
    return PortType("graph", None, dtype, fields=tuple(fields), meta=(("graphs", graphs),))


def declared_type(name: str, decl, dims: Mapping[str, Any], doc, diags) -> Optional[PortType]:
    """The port type of a `kind: graph` input from its `fields:`; every problem is a located
    diagnostic (and the result None)."""
    where = ("inputs", name)
    path = f"inputs.{name}"
    if decl.shape is not None:
        diags.add(E.INVALID_VALUE, f"graph input `{name}` declares the shapes of its fields, not a `shape`",
                  loc=doc.key_loc(where + ("shape",)), path=path + ".shape",
                  hint="write `fields: {x: [N, F], edge_index: [2, E]}`")
        return None
    if decl.dtype not in FLOAT_DTYPES:
        diags.add(E.DTYPE_MISMATCH, f"the node features of graph input `{name}` are floats", loc=doc.loc(where + ("dtype",)),
                  path=path + ".dtype", expected="float32 (or another float dtype)", found=decl.dtype)
        return None
    if not decl.fields:
        diags.add(E.MISSING_PARAM, f"graph input `{name}` needs `fields`", loc=doc.key_loc(where), path=path,
                  expected="fields: {x: [N, F], edge_index: [2, E]} (optional: edge_weight [E], edge_attr [E, Fe], "
                           "batch [N])", found="no fields")
        return None
    multiples = {n: d.multiple_of for n, d in dims.items()}
    ok = True
    shapes: dict[str, tuple] = {}
    for fld, fdecl in decl.fields.items():
        floc = doc.loc(where + ("fields", fld))
        fpath = f"{path}.fields.{fld}"
        if fld not in GRAPH_FIELDS:
            diags.add(E.UNKNOWN_PARAM, f"graph input `{name}` has no field `{fld}`", loc=doc.key_loc(where + ("fields", fld)),
                      path=fpath, expected=", ".join(GRAPH_FIELDS), found=fld, hint=did_you_mean(fld, GRAPH_FIELDS))
            ok = False
            continue
        shape, dtype = (fdecl, None) if isinstance(fdecl, list) else (fdecl.shape, fdecl.dtype)
        if dtype is not None:
            want_int = fld in INDEX_FIELDS
            if want_int and dtype != "int64" or not want_int and dtype not in FLOAT_DTYPES:
                what = "node ids" if fld == "edge_index" else "graph ids" if fld == "batch" else "values"
                diags.add(E.DTYPE_MISMATCH, f"field `{fld}` of graph input `{name}` holds {what}",
                          loc=doc.loc(where + ("fields", fld, "dtype")), path=fpath + ".dtype",
                          expected="int64" if want_int else "a float dtype", found=dtype)
                ok = False
                continue
            if not want_int and dtype != decl.dtype:
                diags.add(E.DTYPE_MISMATCH, f"field `{fld}` of graph input `{name}` has another dtype than its "
                          "node features", loc=doc.loc(where + ("fields", fld, "dtype")), path=fpath + ".dtype",
                          expected=decl.dtype, found=dtype, hint="the float fields of a graph share one dtype")
                ok = False
                continue
        try:
            dims_ = tuple(parse_dim(s, multiples) for s in shape)
        except DimSyntaxError as exc:
            diags.add(E.BAD_DIM, str(exc), loc=floc, path=fpath, expected="names, integers, + - * / //",
                      found=str(shape))
            ok = False
            continue
        if len(dims_) != FIELD_RANKS[fld] or (fld == "edge_index" and dims_[0] != 2):
            diags.add(E.SHAPE_MISMATCH, f"field `{fld}` of graph input `{name}` is {FIELD_LAYOUT[fld]}", loc=floc,
                      path=fpath, expected=FIELD_LAYOUT[fld], found="[" + ", ".join(map(str, shape)) + "]")
            ok = False
            continue
        shapes[fld] = dims_
    for fld in REQUIRED_FIELDS:
        if fld not in decl.fields:
            diags.add(E.MISSING_PARAM, f"graph input `{name}` needs the field `{fld}` {FIELD_LAYOUT[fld]}",
                      loc=doc.key_loc(where + ("fields",)), path=f"{path}.fields", expected=FIELD_LAYOUT[fld],
                      found="no such field")
            ok = False
    if "x" not in shapes or "edge_index" not in shapes:
        return None
    n, e = shapes["x"][0], shapes["edge_index"][1]
    for fld, axis, want, what in (("edge_weight", 0, e, "E"), ("edge_attr", 0, e, "E"), ("batch", 0, n, "N")):
        if fld in shapes and shapes[fld][axis] != want:
            src = "edge_index" if what == "E" else "x"
            diags.add(E.SHAPE_MISMATCH, f"field `{fld}` of graph input `{name}` must have the {what} of `{src}`",
                      loc=doc.loc(where + ("fields", fld)), path=f"{path}.fields.{fld}",
                      expected=format_dim(want), found=format_dim(shapes[fld][axis]))
            ok = False
    if not ok:
        return None
    return graph_type(n, e, shapes["x"][1], decl.dtype, edge_weight="edge_weight" in shapes,
                      edge_dim=shapes["edge_attr"][1] if "edge_attr" in shapes else None, batched="batch" in shapes)


# ---- checks ------------------------------------------------------------------------------------


def check_graph(values: Mapping[str, Any], what: str, error: type = GraphError) -> None:
    """Raise `error` unless `values` (tensors or arrays by field) is a valid graph: at least one
    node, integer node ids in [0, N), a `batch` vector that is sorted, starts at 0 and skips no
    graph, and fields whose sizes agree. `what` names the graph in the message."""
    x = values.get("x")
    ei = values.get("edge_index")
    if x is None or ei is None:
        raise error(f"{what}: a graph needs `x` [N, F] and `edge_index` [2, E]")
    n = int(x.shape[0]) if len(x.shape) else 0
    if len(x.shape) != 2 or n == 0:
        raise error(f"{what}: the graph is empty (x has shape {list(x.shape)}); a graph needs at least one node")
    dt = _dtype(ei)
    if dt not in ("int64", "int32"):
        raise error(f"{what}: edge_index holds node ids, so it must be int64, not {dt}")
    if len(ei.shape) != 2 or ei.shape[0] != 2:
        raise error(f"{what}: edge_index must be [2, E], found shape {list(ei.shape)}"
                    + (" (transpose it: pairs go in columns)" if len(ei.shape) == 2 and ei.shape[1] == 2 else ""))
    e = int(ei.shape[1])
    if e:
        arr = _numpy(ei)
        low, high = int(arr.min()), int(arr.max())
        if low < 0:
            col = int(np.argmin(arr.min(axis=0)))
            raise error(f"{what}: edge {col} ({arr[0, col]} -> {arr[1, col]}) names a negative node id")
        if high >= n:
            col = int(np.argmax(arr.max(axis=0)))
            raise error(f"{what}: edge {col} ({arr[0, col]} -> {arr[1, col]}) names node {high}, and the graph has "
                        f"{n} nodes (ids 0..{n - 1})")
    for fld in ("edge_weight", "edge_attr"):
        v = values.get(fld)
        if v is not None and (len(v.shape) < 1 or int(v.shape[0]) != e):
            raise error(f"{what}: {fld} has {int(v.shape[0]) if len(v.shape) else 0} rows for {e} edges")
    b = values.get("batch")
    if b is not None:
        if _dtype(b) not in ("int64", "int32"):
            raise error(f"{what}: batch holds graph ids, so it must be int64, not {_dtype(b)}")
        arr = _numpy(b).reshape(-1)
        if arr.shape[0] != n:
            raise error(f"{what}: batch has {arr.shape[0]} entries for {n} nodes")
        if arr[0] != 0:
            raise error(f"{what}: batch must start at graph 0, found {arr[0]}")
        steps = np.diff(arr)
        if (steps < 0).any():
            i = int(np.argmax(steps < 0)) + 1
            raise error(f"{what}: batch is not sorted: node {i} is in graph {arr[i]} after a node of graph {arr[i - 1]} "
                        "(the nodes of each graph come together, graph after graph)")
        if (steps > 1).any():
            i = int(np.argmax(steps > 1)) + 1
            raise error(f"{what}: batch skips a graph: node {i} is in graph {arr[i]} right after graph {arr[i - 1]}")


def graph_value(name: str, **fields):
    """The graph dict of a compiled pipeline's forward, from graph input `name`'s field tensors:
    checked in eager mode (a bad graph is a GraphError, never a crash inside a scatter kernel);
    traced as it is when exporting."""
    values = {k: v for k, v in fields.items() if v is not None}
    if not _tracing(values.get("x")):
        check_graph(values, f"graph input `{name}`")
    return values


def _tracing(x) -> bool:
    """Whether the forward is being traced (exported, compiled): values are symbolic then."""
    from torch._subclasses.fake_tensor import FakeTensor
    return (torch.compiler.is_compiling() or torch.compiler.is_exporting() or torch.jit.is_tracing()
            or isinstance(x, FakeTensor))


def _dtype(v) -> str:
    return str(v.dtype).replace("torch.", "")


def _numpy(v) -> np.ndarray:
    return v.detach().cpu().numpy() if isinstance(v, torch.Tensor) else np.asarray(v)


# ---- random graphs ----------------------------------------------------------------------------


def graph_count(n: int) -> int:
    """How many graphs a random batch of n nodes holds: 2 to 5, varying with n (so two
    verification sizes give batches of different counts), at least 3 nodes each."""
    return max(1, min(n // 3, 2 + n % 4))


def random_graph(n: int, e: int, features: int, g: torch.Generator, *, dtype: torch.dtype = torch.float32,
                 edge_weight: bool = False, edge_dim: Optional[int] = None, batched: bool = False,
                 graphs: Optional[int] = None) -> dict[str, torch.Tensor]:
    """A seeded random graph (or batch of graphs) of n nodes and e edges. Its last node is
    isolated when there are at least 2 nodes; with `batched`, the nodes form `graphs` graphs of
    different sizes (default `graph_count(n)`), and edges stay within their graph."""
    if n < 1:
        raise GraphError("a random graph needs at least one node")
    count = min(n, graphs or graph_count(n)) if batched else 1
    # graph sizes: differ from each other, sum to n, each at least 1
    weights = torch.arange(1, count + 1, dtype=torch.float64)
    sizes = torch.floor(weights / weights.sum() * (n - count)).long() + 1
    sizes[-1] += n - int(sizes.sum())
    starts = torch.cumsum(sizes, 0) - sizes
    batch = torch.repeat_interleave(torch.arange(count), sizes)
    # edges: a random graph for each edge, then random endpoints inside it; the last node stays isolated
    usable = sizes.clone()
    if n >= 2 and sizes[-1] >= 2:
        usable[-1] -= 1
    owner = torch.randint(0, count, (e,), generator=g)
    owner = torch.where(usable[owner] > 0, owner, torch.zeros_like(owner))
    span = usable[owner].clamp(min=1)
    ends = (torch.rand((2, e), generator=g, dtype=torch.float64) * span).long().clamp(max=span - 1) + starts[owner]
    out = {"x": torch.randn((n, features), generator=g, dtype=torch.float32).to(dtype), "edge_index": ends}
    if edge_weight:
        out["edge_weight"] = torch.rand((e,), generator=g, dtype=torch.float32).to(dtype) + 0.5
    if edge_dim is not None:
        out["edge_attr"] = torch.randn((e, edge_dim), generator=g, dtype=torch.float32).to(dtype)
    if batched:
        out["batch"] = batch
    return out


def random_for_type(t: PortType, g: torch.Generator, dtype: torch.dtype = torch.float32) -> dict[str, torch.Tensor]:
    """A random graph of a graph port type with fixed (integer) dims."""
    f = dict(t.fields)
    n, e = f["x"].shape[0], f["edge_index"].shape[1]
    return random_graph(int(n), int(e), int(f["x"].shape[1]), g, dtype=dtype, edge_weight="edge_weight" in f,
                        edge_dim=int(f["edge_attr"].shape[1]) if "edge_attr" in f else None, batched="batch" in f)


# ---- graph files -----------------------------------------------------------------------------


def read_graph_file(path: Path, what: str) -> list[dict[str, Any]]:
    """The graphs of a JSON or `.npz` file, each a dict of numpy arrays by field (and the
    labels and splits the file carries: `y`, `train_mask`, `val_mask`, `test_mask`).

    JSON: one graph `{"x": [[...], ...], "edges": [[s, t], ...] | "edge_index": [[...], [...]],
    "edge_weight": [...], "edge_attr": [[...]], "y": ..., "undirected": false}` (nodes may instead
    be `"nodes": [{"x": [...], "y": 0}, ...]`), or `{"graphs": [graph, ...]}`; JSON lines (one
    graph per line) in a `.jsonl` file. `.npz`: arrays named by field (node ids global), with a
    `batch` array when it holds several graphs, and `y` per node or per graph."""
    if not path.exists():
        raise GraphError(f"{what}: file {path} does not exist")
    suffix = path.suffix.lower()
    if suffix == ".npz":
        return _read_npz(path, what)
    if suffix not in (".json", ".jsonl"):
        raise GraphError(f"{what}: {path} is not a graph file (composer reads graphs from .json, .jsonl and .npz)")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise GraphError(f"{what}: cannot read {path}: {exc}") from None
    items: list[tuple[str, Any]] = []
    if suffix == ".jsonl":
        for i, line in enumerate(text.splitlines(), 1):
            if line.strip():
                items.append((f"{path}:{i}", _json(line, f"{path}:{i}")))
    else:
        data = _json(text, str(path))
        if isinstance(data, dict) and "graphs" in data:
            if not isinstance(data["graphs"], list):
                raise GraphError(f"{path}: `graphs` must be a list of graphs")
            items = [(f"{path}: graphs[{i}]", gr) for i, gr in enumerate(data["graphs"])]
        else:
            items = [(str(path), data)]
    if not items:
        raise GraphError(f"{path}: the file holds no graph")
    return [_graph_from_json(obj, where) for where, obj in items]


def _json(text: str, where: str):
    try:
        return json.loads(text)
    except ValueError as exc:
        line = f" (line {exc.lineno}, column {exc.colno})" if hasattr(exc, "lineno") else ""
        raise GraphError(f"{where}: not valid JSON{line}: {getattr(exc, 'msg', exc)}") from None


def _array(value, where: str, key: str, dtype, rank: Optional[int] = None) -> np.ndarray:
    try:
        arr = np.asarray(value)
    except (ValueError, TypeError):
        raise GraphError(f"{where}: `{key}` is not a rectangular array of numbers") from None
    if arr.dtype == object or arr.dtype.kind not in "biuf":
        raise GraphError(f"{where}: `{key}` is not a rectangular array of numbers")
    if dtype == np.int64 and arr.dtype.kind == "f" and arr.size:
        flat = arr.reshape(-1)
        bad = ~np.isfinite(flat) | (flat != np.round(flat))
        first = float(flat[int(np.argmax(bad))] if bad.any() else flat[0])
        raise GraphError(f"{where}: `{key}` holds node ids, which are integers, and it has floats (found {first:g})")
    if rank is not None and arr.ndim != rank and arr.size:
        raise GraphError(f"{where}: `{key}` must be rank {rank}, found shape {list(arr.shape)}")
    return arr.astype(dtype)


def _graph_from_json(obj: Any, where: str) -> dict[str, Any]:
    if not isinstance(obj, dict):
        raise GraphError(f"{where}: a graph is a JSON object with `x` (or `nodes`) and `edges` (or `edge_index`)")
    out: dict[str, Any] = {}
    if "nodes" in obj:
        nodes = obj["nodes"]
        if not isinstance(nodes, list) or not all(isinstance(v, dict) and "x" in v for v in nodes):
            raise GraphError(f"{where}: `nodes` must be a list of objects, each with `x` (its features)")
        out["x"] = _array([v["x"] for v in nodes], where, "nodes[].x", np.float32, 2)
        if any("y" in v for v in nodes):
            if not all("y" in v for v in nodes):
                i = next(i for i, v in enumerate(nodes) if "y" not in v)
                raise GraphError(f"{where}: nodes[{i}] has no `y`, and other nodes have one")
            out["y"] = np.asarray([v["y"] for v in nodes])
    elif "x" in obj:
        out["x"] = _array(obj["x"], where, "x", np.float32, 2)
    else:
        raise GraphError(f"{where}: the graph has no node features (`x`, or `nodes` with `x` each)")
    if "edge_index" in obj:
        ei = _array(obj["edge_index"], where, "edge_index", np.int64)
        ei = ei.reshape(2, 0) if ei.size == 0 else ei
    elif "edges" in obj:
        ei = _array(obj["edges"], where, "edges", np.int64)
        if ei.size and (ei.ndim != 2 or ei.shape[1] != 2):
            raise GraphError(f"{where}: `edges` is a list of [source, target] pairs")
        ei = ei.reshape(-1, 2).T.copy()
    else:
        raise GraphError(f"{where}: the graph has no `edges` (a list of [source, target] pairs) or `edge_index`")
    out["edge_index"] = ei
    for key, rank in (("edge_weight", 1), ("edge_attr", 2)):
        if key in obj:
            out[key] = _array(obj[key], where, key, np.float32, rank)
    for key in ("y", "train_mask", "val_mask", "test_mask"):
        if key in obj:
            out[key] = np.asarray(obj[key])
    if obj.get("undirected"):
        out = undirected(out)
    check_graph(out, where)
    return out


def undirected(graph: dict[str, Any]) -> dict[str, Any]:
    """Each edge also in the other direction (self-loops once), with its weight and features."""
    ei = graph["edge_index"]
    keep = ei[0] != ei[1]
    out = dict(graph)
    out["edge_index"] = np.concatenate([ei, ei[::-1][:, keep]], axis=1)
    for key in ("edge_weight", "edge_attr"):
        if key in graph:
            out[key] = np.concatenate([graph[key], graph[key][keep]], axis=0)
    return out


def _read_npz(path: Path, what: str) -> list[dict[str, Any]]:
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as exc:
        raise GraphError(f"{what}: cannot read {path}: {exc}") from None
    for key in ("x", "edge_index"):
        if key not in arrays:
            raise GraphError(f"{path}: no array `{key}` (it holds {', '.join(sorted(arrays)) or 'nothing'})")
    ei = arrays["edge_index"]
    if ei.dtype.kind == "f":
        raise GraphError(f"{path}: edge_index holds node ids, so it must be integers, not {ei.dtype}")
    arrays["edge_index"] = ei.astype(np.int64)
    if arrays["x"].dtype.kind not in "biuf":
        raise GraphError(f"{path}: x must be numbers, not {arrays['x'].dtype}")
    arrays["x"] = arrays["x"].astype(np.float32)
    for key in ("edge_weight", "edge_attr"):
        if key in arrays:
            arrays[key] = arrays[key].astype(np.float32)
    if "batch" in arrays:
        arrays["batch"] = arrays["batch"].astype(np.int64)
    check_graph(arrays, str(path))
    if "batch" not in arrays:
        return [arrays]
    return split_batch(arrays)


def split_batch(arrays: Mapping[str, np.ndarray]) -> list[dict[str, np.ndarray]]:
    """The graphs of a batch (node ids made local to each graph); per-node arrays are split
    by node, per-edge arrays by edge, and a `y` with one entry per graph by graph."""
    batch = arrays["batch"]
    n, g = batch.shape[0], int(batch[-1]) + 1
    ei = arrays["edge_index"]
    node_starts = np.searchsorted(batch, np.arange(g + 1))
    owner = batch[ei[0]] if ei.size else np.zeros(0, np.int64)
    if ei.size and (batch[ei[1]] != owner).any():
        k = int(np.argmax(batch[ei[1]] != owner))
        raise GraphError(f"edge {k} ({ei[0, k]} -> {ei[1, k]}) joins two graphs of the batch")
    order = np.argsort(owner, kind="stable")
    edge_starts = np.searchsorted(owner[order], np.arange(g + 1))
    out = []
    for i in range(g):
        a, b = node_starts[i], node_starts[i + 1]
        edges = order[edge_starts[i]:edge_starts[i + 1]]
        item: dict[str, np.ndarray] = {"x": arrays["x"][a:b], "edge_index": ei[:, edges] - a}
        for key, v in arrays.items():
            if key in ("x", "edge_index", "batch"):
                continue
            if key in ("edge_weight", "edge_attr"):
                item[key] = v[edges]
            elif v.shape[:1] == (n,):
                item[key] = v[a:b]
            elif v.shape[:1] == (g,):
                item[key] = v[i]
            else:
                item[key] = v
        out.append(item)
    return out


def join(graphs: Sequence[Mapping[str, Any]], fields: Sequence[str]) -> dict[str, np.ndarray]:
    """A batch of graphs as one graph of disjoint parts: node ids offset, `batch` made, the
    `fields` wanted (those of the graph input) concatenated."""
    offsets = np.cumsum([0] + [int(gr["x"].shape[0]) for gr in graphs])
    out: dict[str, np.ndarray] = {}
    for fld in fields:
        if fld == "batch":
            out[fld] = np.repeat(np.arange(len(graphs), dtype=np.int64), np.diff(offsets))
        elif fld == "edge_index":
            out[fld] = np.concatenate([np.asarray(gr["edge_index"], np.int64) + off
                                       for gr, off in zip(graphs, offsets)], axis=1)
        else:
            missing = next((i for i, gr in enumerate(graphs) if fld not in gr), None)
            if missing is not None:
                raise GraphError(f"graph {missing} has no `{fld}`, which the graph input takes")
            parts = [np.asarray(gr[fld]) for gr in graphs]
            odd = next((i for i, p in enumerate(parts) if p.shape[1:] != parts[0].shape[1:]), None)
            if odd is not None:
                raise GraphError(f"graph {odd} has `{fld}` of shape {list(parts[odd].shape)}, and graph 0 of shape "
                                 f"{list(parts[0].shape)}: the graphs of a batch share their feature widths")
            out[fld] = np.concatenate(parts, axis=0)
    return out

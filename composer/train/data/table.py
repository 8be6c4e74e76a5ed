"""Tables: `.csv` (rows found by byte offset in one pass, read on demand) and `.parquet` (read
by row group), one example per row.

Which columns fill what:

- a vector input [B, F] takes the columns `data.columns[input]` lists, in that order, or by
  default every column that is not a target's, not another input's and not in
  `data.ignore_columns`, in file order (at most one input can take this default); the count
  must be F. An input [B] takes the one column named by its field; a text input, the column
  of its field (its cells are the texts).
- a target of one value per example (a class id, a value: output [B, C] for cross-entropy,
  [B] or [B, 1] otherwise) is the column named by its field; a target of k > 1 values per
  example (output [B, k]) is the k columns `FIELD_0` … `FIELD_{k-1}`. (`data.columns` names
  inputs only.)

Every cell the pipeline reads is checked before the first step: a missing column (with a near
miss), a cell that is not a number (`file:line`), a class id outside [0, num_classes).
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np

from ...inputs import NUMPY_DTYPES
from .base import DataError, Examples
from .csvrows import CsvRows, floats
from .fields import check_item, dims_text, example_dims


@dataclass(frozen=True)
class Column:
    """Where one field of an example comes from: its columns, and how they become its value."""

    field: str
    columns: tuple[str, ...]
    dtype: str
    shape: tuple[int, ...]          # per example
    text: bool = False
    classes: Optional[int] = None   # class targets: ids in [0, classes)
    ignore: Optional[int] = None


def layout(plan, header: list[str], where: str) -> list[Column]:
    """The columns of every input and target the plan reads (see the module docstring)."""
    data = plan.spec.data
    out: list[Column] = []
    targets: list[Column] = []
    for t in plan.targets.values():
        if t.role == "detection":
            raise DataError(f"{where}: output `{t.output}` learns detections, which table data cannot hold; use "
                            "`format: coco`")
        shape = t.shape or ()
        if len(shape) > 1 or (t.role == "class" and shape):
            raise DataError(f"{where}: output `{t.output}` needs a target of shape {dims_text(shape, False)} per "
                            "example; a table row holds class ids or values one per example (use `format: jsonl` or "
                            "`arrays` for sequences and grids)")
        k = shape[0] if shape else 1
        if k is None:
            raise DataError(f"{where}: output `{t.output}` has a symbolic size, which one table row cannot fill")
        cols = (t.field,) if k == 1 else tuple(f"{t.field}_{j}" for j in range(k))
        dtype = "int64" if t.role == "class" else "float32"
        targets.append(Column(t.field, cols, dtype, tuple(shape), classes=t.num_classes, ignore=t.ignore_index))
    for col, t in zip(targets, plan.targets.values()):
        for c in col.columns:
            if c not in header:                          # named before the default columns are counted
                raise _missing(where, c, f"the target of output `{t.output}`", header)
    taken = {c for col in targets for c in col.columns} | set(data.ignore_columns)
    default = None
    for need in plan.inputs.values():
        dims = example_dims(need)
        if need.raw:
            col = Column(need.field, (need.field,), "str", (), text=True)
        elif need.columns:
            col = Column(need.field, tuple(need.columns), need.spec.dtype, (len(need.columns),) if dims else ())
        elif need.kind == "mask":
            continue                                     # no column: the loader makes it from padding
        elif dims == ():
            col = Column(need.field, (need.field,), need.spec.dtype, ())
        elif dims is not None and len(dims) == 1:
            if default is not None:
                raise DataError(f"{where}: inputs `{default.name}` and `{need.name}` both take the default columns; "
                                f"list the columns of one in `data.columns: {{{need.name}: [...]}}`")
            default = need
            continue
        else:
            raise DataError(f"{where}: input `{need.name}` is {need.spec.shape_text()}; table data fills inputs of "
                            "[B] or [B, F] (use `format: arrays` or `jsonl` for others)")
        taken |= set(col.columns)
        out.append(col)
    if default is not None:
        cols = tuple(h for h in header if h not in taken)
        f = example_dims(default)[0]
        if f is not None and len(cols) != f:
            raise DataError(f"{where}: input `{default.name}` takes F = {f} columns ({default.spec.shape_text()}), "
                            f"and {len(cols)} columns are left for it ({', '.join(cols) or 'none'}); list its "
                            f"columns in `data.columns: {{{default.name}: [...]}}`, or the others in "
                            "`data.ignore_columns`")
        out.append(Column(default.field, cols, default.spec.dtype, (len(cols),)))
    return out + targets


def _missing(where: str, col: str, whose: str, header: list[str]) -> DataError:
    m = difflib.get_close_matches(col, header, n=1)
    hint = f" (did you mean `{m[0]}`?)" if m else ""
    return DataError(f"{where}: no column `{col}` ({whose}) in the header{hint}; the file's columns are: "
                     f"{', '.join(header)}")


def _whose(plan, field: str) -> str:
    for n in plan.inputs.values():
        if n.field == field:
            return f"input `{n.name}`"
    for t in plan.targets.values():
        if t.field == field:
            return f"output `{t.output}`"
    return f"field `{field}`"


def _convert(col: Column, values, where: str, whose: str) -> np.ndarray:
    """A field's cell values as its dtype and per-example shape; whole numbers for integer
    fields, class ids in range for class targets."""
    arr = np.asarray(values, dtype=np.float64)
    if not np.isfinite(arr).all():
        j = int(np.argmax(~np.isfinite(arr)))
        raise DataError(f"{where}: column `{col.columns[j]}` holds {arr[j]}, not a finite number; fill or drop "
                        "the row")
    if col.dtype.startswith(("int", "uint", "bool")):
        frac = arr != np.round(arr)
        if frac.any():
            j = int(np.argmax(frac))
            raise DataError(f"{where}: column `{col.columns[j]}` holds {arr[j]:g}, and {whose} takes whole numbers "
                            f"({'class ids' if col.classes is not None else col.dtype})")
    if col.classes is not None:
        bad = (arr < 0) | (arr >= col.classes)
        if col.ignore is not None:
            bad &= arr != col.ignore
        if bad.any():
            j = int(np.argmax(bad))
            raise DataError(f"{where}: column `{col.columns[j]}` holds class {int(arr[j])}, and {whose} has "
                            f"{col.classes} classes: ids in [0, {col.classes})")
    return arr.astype(NUMPY_DTYPES.get(col.dtype, np.float32)).reshape(col.shape)


class _Fields:
    """The plan's fields over one file's columns: the layout, checked against the header, and
    how a row of cells becomes an example."""

    def __init__(self, plan, header: list[str], where: str):
        self.where = where
        self.cols = layout(plan, header, where)
        index = {h: j for j, h in enumerate(header)}
        for col in self.cols:
            for c in col.columns:
                if c not in index:
                    raise _missing(where, c, _whose(plan, col.field), header)
        self.header = header
        self.idx = [[index[c] for c in col.columns] for col in self.cols]
        self.whose = [_whose(plan, col.field) for col in self.cols]

    def item(self, row: list[str], where: str, line: int) -> dict[str, Any]:
        item: dict[str, Any] = {}
        for col, idx, whose in zip(self.cols, self.idx, self.whose):
            if col.text:
                item[col.field] = row[idx[0]]
            else:
                values = floats(row, idx, self.header, where, line)
                item[col.field] = _convert(col, values, f"{where}:{line}", whose)
        return item


class CsvTable(Examples):
    """A `.csv` table: a header row naming the columns, then one row per example; every row is
    checked in the indexing pass. The examples that pass are kept while they take less than
    `KEEP_BYTES` (a table that fits stays parsed in memory); a larger table is read row by row
    from its byte offsets."""

    KEEP_BYTES = 64 * 1024**2

    def __init__(self, plan, path: Path):
        self.source = path
        self._f: Optional[_Fields] = None
        self._kept: Optional[list[dict[str, Any]]] = []
        size = 0

        def header(names: list[str], line: int) -> None:
            self._f = _Fields(plan, names, f"{path}:{line}")

        def row(cells: list[str], line: int) -> None:
            nonlocal size
            item = self._f.item(cells, str(path), line)      # type: ignore[union-attr]
            if self._kept is not None:
                size += sum(v.nbytes if isinstance(v, np.ndarray) else len(v) for v in item.values())
                if size > self.KEEP_BYTES:
                    self._kept = None
                else:
                    self._kept.append(item)

        self.rows = CsvRows(path, on_row=row, on_header=header, what="a CSV table", rows_are="one row per example")
        self.fields = tuple(c.field for c in self._f.cols)     # type: ignore[union-attr]

    def __len__(self) -> int:
        return len(self.rows)

    def where(self, i: int) -> str:
        return f"{self.source}:{self.rows.line_of(i)}"

    def __getitem__(self, i: int) -> dict[str, Any]:
        if self._kept is not None:
            return dict(self._kept[i])
        return self._f.item(self.rows.rows(i, 1)[0], str(self.source), 0)   # type: ignore[union-attr]

    def check(self, plan) -> None:
        check_item(self[0], plan, self.where(0), self.fields)


class ParquetTable(Examples):
    """A `.parquet` table, read by row group (the last few groups read are kept per process)."""

    CACHE = 2

    def __init__(self, plan, path: Path):
        import pyarrow.parquet as pq
        self.source = path
        try:
            meta = pq.ParquetFile(path).metadata
            schema = pq.read_schema(path)
        except Exception as exc:  # pyarrow raises ArrowInvalid, OSError and others
            raise DataError(f"{path}: cannot read it as Parquet: {str(exc).splitlines()[0]}") from None
        header = list(schema.names)
        self._f = _Fields(plan, header, str(path))
        self.fields = tuple(c.field for c in self._f.cols)
        self._columns = list(dict.fromkeys(c for col in self._f.cols for c in col.columns))
        sizes = [meta.row_group(g).num_rows for g in range(meta.num_row_groups)]
        self._starts = np.cumsum([0] + sizes)
        if self._starts[-1] == 0:
            raise DataError(f"{path}: the table has no rows")
        self._cache: dict[int, dict[str, np.ndarray]] = {}
        for col in self._f.cols:
            for c in col.columns:
                typ = schema.field(c).type
                self._check_type(c, typ, col)
        for g in range(len(sizes)):
            self._check_group(g)

    def __getstate__(self):
        return {**self.__dict__, "_cache": {}}

    def _check_type(self, name: str, typ, col: Column) -> None:
        import pyarrow as pa
        ok = (pa.types.is_string(typ) or pa.types.is_large_string(typ)) if col.text else (
            pa.types.is_integer(typ) or pa.types.is_floating(typ) or pa.types.is_boolean(typ))
        if not ok:
            raise DataError(f"{self.source}: column `{name}` has type {typ}, and {_whose_col(self._f, col)} takes "
                            f"{'text' if col.text else 'numbers'}")

    def _group(self, g: int) -> dict[str, np.ndarray]:
        if g not in self._cache:
            import pyarrow.parquet as pq
            if len(self._cache) >= self.CACHE:
                self._cache.pop(next(iter(self._cache)))
            table = pq.ParquetFile(self.source).read_row_group(g, columns=self._columns)
            self._cache[g] = {c: table.column(c).to_numpy(zero_copy_only=False) for c in self._columns}
        return self._cache[g]

    def _check_group(self, g: int) -> None:
        import pyarrow.parquet as pq
        table = pq.ParquetFile(self.source).read_row_group(g, columns=self._columns)
        for c in self._columns:
            column = table.column(c)
            if column.null_count:
                import pyarrow.compute as pc
                j = int(pc.index(pc.is_null(column), True).as_py())
                raise DataError(f"{self.where(int(self._starts[g]) + j)}: column `{c}` is missing a value (null); "
                                "fill or drop the row")
        values = {c: table.column(c).to_numpy(zero_copy_only=False) for c in self._columns}
        for col, whose in zip(self._f.cols, self._f.whose):
            if col.text:
                continue
            block = np.stack([values[c].astype(np.float64) for c in col.columns], axis=1)   # (rows, k)
            bad = ~np.isfinite(block).all(axis=1)
            if col.dtype.startswith(("int", "uint", "bool")):
                bad |= (block != np.round(block)).any(axis=1)
            if col.classes is not None:
                out = (block < 0) | (block >= col.classes)
                if col.ignore is not None:
                    out &= block != col.ignore
                bad |= out.any(axis=1)
            if bad.any():
                j = int(np.argmax(bad))
                _convert(col, block[j], self.where(int(self._starts[g]) + j), whose)   # raises the located error

    def __len__(self) -> int:
        return int(self._starts[-1])

    def where(self, i: int) -> str:
        return f"{self.source}, row {i + 1}"

    def __getitem__(self, i: int) -> dict[str, Any]:
        g = int(np.searchsorted(self._starts, i, side="right")) - 1
        values = self._group(g)
        j = i - int(self._starts[g])
        item: dict[str, Any] = {}
        for col in self._f.cols:
            if col.text:
                item[col.field] = str(values[col.columns[0]][j])
            else:
                arr = np.asarray([values[c][j] for c in col.columns], dtype=np.float64)
                item[col.field] = arr.astype(NUMPY_DTYPES.get(col.dtype, np.float32)).reshape(col.shape)
        return item

    def check(self, plan) -> None:
        check_item(self[0], plan, self.where(0), self.fields)


def _whose_col(f: _Fields, col: Column) -> str:
    return f.whose[f.cols.index(col)]


def open_table(plan, path: Path) -> Examples:
    """A table by its suffix: `.csv` or `.parquet`."""
    suffix = path.suffix.lower()
    if suffix == ".csv":
        return CsvTable(plan, path)
    if suffix in (".parquet", ".pq"):
        return ParquetTable(plan, path)
    raise DataError(f"{path}: `format: table` reads .csv and .parquet files, not {suffix or 'files without suffix'}")

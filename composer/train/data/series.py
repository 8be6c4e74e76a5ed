"""Time series: a CSV file (a header row, one row per time step), or a folder of such files
(each its own series), cut into windows.

An example is a window of `data.window` consecutive steps (default: the `example` size of the
input's T in `dims`) of the series input's feature columns: the input's `columns`, else every
column that is not in its or `data`'s `ignore_columns`, in file order (a target's column
included: its past is a feature). Windows start every `data.stride` steps and never cross
files. The target of an output [B, h] is the next h values of its field's column after the
window (an output [B] or [B, 1]: the next value); `data.horizon`, when written, must be h.
Each file is read the way `composer run` reads a series CSV (composer._csv), lazily: one pass
finds and checks every row, windows are read on demand.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any, Mapping, Optional

import numpy as np

from ..._csv import CSV_DTYPES, _csv_features
from ...dims import Dim
from .base import DataError, Examples
from .csvrows import CsvRows, data_errors, floats
from .fields import target_value


def _series_input(plan, where: str):
    found = [n for n in plan.inputs.values() if n.kind != "mask"]
    if len(found) != 1 or found[0].raw or found[0].spec is None or found[0].spec.shape is None or \
            len(found[0].spec.shape) != 3:
        names = ", ".join(f"`{n.name}`" for n in found)
        raise DataError(f"{where}: `format: series` fills one input of [B, T, F] (and masks); this pipeline has "
                        f"{names or 'none'}")
    need = found[0]
    if need.spec.dtype not in CSV_DTYPES:
        raise DataError(f"{where}: input `{need.name}` has dtype {need.spec.dtype}, and series CSV cells are read as "
                        f"floats ({', '.join(CSV_DTYPES)})")
    return need


def window_size(need, data, dims: Mapping[str, int], where: str) -> int:
    """`data.window`, else the input's T: a fixed size, or the `example` of its dim."""
    t = need.spec.shape[1]
    fixed = t if isinstance(t, int) else None
    if data.window is not None:
        if fixed is not None and data.window != fixed:
            raise DataError(f"{where}: `data.window` is {data.window}, and input `{need.name}` takes T = {fixed} steps")
        return data.window
    if fixed is not None:
        return fixed
    name = next(iter(sorted(t.symbols())), None) if isinstance(t, Dim) else (t if isinstance(t, str) else None)
    if name is not None and dims.get(name):
        return int(dims[name])
    raise DataError(f"{where}: how many steps make one example? Set `data.window`, or `example:` of dim "
                    f"`{name or 'T'}` in `dims`")


def _horizons(plan, data, where: str) -> dict[str, int]:
    out = {}
    for t in plan.targets.values():
        shape = t.shape if t.shape is not None else ()
        if len(shape) > 1 or (shape and shape[0] is None) or t.role == "detection":
            raise DataError(f"{where}: output `{t.output}` needs targets of shape {list(shape)} per example; a series "
                            "target is the next h values of one column (an output [B, h], [B, 1] or [B])")
        h = shape[0] if shape else 1
        if "horizon" in data.model_fields_set and data.horizon != h:
            raise DataError(f"{where}: `data.horizon` is {data.horizon}, and output `{t.output}` predicts {h} steps "
                            f"({list((None, *shape))[1:] or 'one value'} per example); make them equal")
        out[t.output] = h
    return out


class _File:
    """One series CSV: its rows (lazily read), the feature and target column indices."""

    def __init__(self, path: Path, spec, targets: dict[str, str]):
        self.path = path
        self.features: list[int] = []
        self.targets: dict[str, int] = {}

        def header(names: list[str], line: int) -> None:
            with data_errors():
                self.features = _csv_features(names, line, spec, str(path))
            self.targets = {o: self.rows_header_index(names, f, o, line) for o, f in targets.items()}
            self._cols = self.features + [j for j in self.targets.values() if j not in self.features]
            self._header = names

        def row(cells: list[str], line: int) -> None:
            floats(cells, self._cols, self._header, str(path), line)

        self.rows = CsvRows(path, on_row=row, on_header=header, what="a CSV for a series input",
                            rows_are="one row per time step")

    def rows_header_index(self, names: list[str], field: str, output: str, line: int) -> int:
        if field in names:
            return names.index(field)
        import difflib
        m = difflib.get_close_matches(field, names, n=1)
        hint = f" (did you mean `{m[0]}`?)" if m else ""
        raise DataError(f"{self.path}:{line}: no column `{field}` (the target of output `{output}`) in the header"
                        f"{hint}; the file's columns are: {', '.join(names)}")


class SeriesExamples(Examples):
    def __init__(self, plan, path: Path, dims: Optional[Mapping[str, int]] = None):
        self.source = path
        data = plan.spec.data
        self.need = _series_input(plan, str(path))
        self.window = window_size(self.need, data, dims or {}, str(path))
        self.stride = data.stride
        self.horizons = _horizons(plan, data, str(path))
        self.span = self.window + max(self.horizons.values(), default=0)
        self.plan = plan
        fields = {o: t.field for o, t in plan.targets.items()}
        spec = self.need.spec
        ignore = list(spec.ignore_columns) + list(data.ignore_columns)
        if spec.columns:                                  # a target column that is not a feature is no extra column
            ignore += [f for f in fields.values() if f not in spec.columns]
        spec = dataclasses.replace(spec, ignore_columns=tuple(ignore))
        files = sorted(p for p in path.iterdir() if p.suffix.lower() == ".csv") if path.is_dir() else [path]
        if not files:
            raise DataError(f"{path}: the folder holds no .csv files")
        self.files = [_File(f, spec, fields) for f in files]
        counts = []
        for f in self.files:
            n = len(f.rows)
            if n < self.span:
                raise DataError(f"{f.path}: {n} time steps, fewer than one window of {self.window} steps and the "
                                f"{self.span - self.window} after it that are the target")
            counts.append((n - self.span) // self.stride + 1)
        self.counts = counts
        self.starts = np.cumsum([0] + counts)
        self.fields = (self.need.field, *fields.values())

    def __len__(self) -> int:
        return int(self.starts[-1])

    def _locate(self, i: int) -> tuple[_File, int]:
        k = int(np.searchsorted(self.starts, i, side="right")) - 1
        return self.files[k], (i - int(self.starts[k])) * self.stride

    def where(self, i: int) -> str:
        f, start = self._locate(i)
        return f"{f.path}:{f.rows.line_of(start)}"

    def __getitem__(self, i: int) -> dict[str, Any]:
        f, start = self._locate(i)
        rows = f.rows.rows(start, self.span)
        values = np.asarray([[float(r[j]) for j in f._cols] for r in rows], dtype=np.float64)   # (span, cols)
        col = {j: k for k, j in enumerate(f._cols)}
        item: dict[str, Any] = {self.need.field: values[:self.window, :len(f.features)].astype(
            np.dtype(self.need.spec.dtype))}                                                      # (T, F)
        for out, t in self.plan.targets.items():
            h = self.horizons[out]
            v = values[self.window:self.window + h, col[f.targets[out]]]
            item[t.field] = target_value(v if t.shape else v[0], t, str(f.path))     # checked in the pass
        return item

    def check(self, plan) -> None:
        """Every row was checked by the indexing pass; the first window's targets are checked here."""
        self[0]

    def time_split(self, fraction: float) -> tuple[list[int], list[int]]:
        """Train and validation windows by time: the last `fraction` of each file's windows
        validate, and training windows that would share a step with them are left out."""
        gap = math.ceil(self.span / self.stride) - 1
        train: list[int] = []
        val: list[int] = []
        for k, n in enumerate(self.counts):
            s = int(self.starts[k])
            n_val = max(1, math.ceil(n * fraction))
            val += range(s + n - n_val, s + n)
            train += range(s, s + max(0, n - n_val - gap))
        return train, val

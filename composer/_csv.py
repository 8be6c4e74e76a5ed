"""CSV files of `series` inputs: a header row naming the columns, then one row per time step.

Every problem is an `InputError` naming the file, the line and the column; the file is streamed
and never modified.
"""

from __future__ import annotations

import csv
import math
from array import array
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from .inputs import NUMPY_DTYPES, InputError, InputSpec, _looks_like

CSV_DTYPES = ("float32", "float64", "float16")


def _utf8_lines(f, path: Path, where: str, pos: Optional[list[int]] = None):
    """The lines of a binary file as text, each checked as UTF-8 on its own (so an error
    names its line); a byte-order mark at the start is dropped. `pos[0]`, when given, is
    kept at the byte offset after the last line given (where the next row starts)."""
    for number, raw in enumerate(f, 1):
        if pos is not None:
            pos[0] += len(raw)
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            if number == 1:
                what = _looks_like(path)
                seems = f"; it looks like {what}" if what not in ("text", "an empty file") else ""
            else:
                seems = ""
            raise InputError(f"{where}:{number}: not UTF-8 text (byte 0x{raw[exc.start]:02x} at "
                             f"column {exc.start + 1}){seems}; save the CSV as UTF-8") from None
        yield text.removeprefix("\ufeff") if number == 1 else text


def _looks_numeric(cells: Sequence[str]) -> bool:
    try:
        [float(c) for c in cells]
    except ValueError:
        return False
    return True


def load_csv(path: Path, spec: InputSpec) -> np.ndarray:
    """A series from a CSV file: a header row naming the columns, then one row per time step.

    The features are the spec's `columns`, in that order, or else every column not in
    `ignore_columns`, in file order; the result is [1, T, F] of the input's dtype. Every
    problem (a missing, unexpected or duplicate column, a ragged row, a cell that is not a
    finite number, no data rows, a file that is not UTF-8) is an InputError naming the file,
    the line and the column. The file is streamed, never modified."""
    where = f"input `{spec.name}`: {path}"
    if spec.dtype not in CSV_DTYPES:
        raise InputError(f"{where}: CSV cells are read as floats, and `{spec.name}` has dtype {spec.dtype}; "
                         f"declare a float dtype ({', '.join(CSV_DTYPES)}), or give a .npy array")
    try:
        f = open(path, "rb")
    except OSError as exc:
        raise InputError(f"{where}: cannot read it: {exc.strerror or exc}") from None
    with f:
        reader = csv.reader(_utf8_lines(f, path, where))
        try:
            header, header_line = _csv_header(reader, where)
            features = _csv_features(header, header_line, spec, where)
            values, lines = _csv_rows(reader, header, features, where)
        except csv.Error as exc:
            raise InputError(f"{where}:{reader.line_num}: not a readable CSV row ({exc})") from None
    if not lines:
        raise InputError(f"{where}: the header (line {header_line}) is followed by no data rows; a series needs "
                         "one row per time step")
    f_count = len(features)
    arr = np.frombuffer(values, dtype=np.float64).reshape(1, len(lines), f_count)   # (1, T, F)
    with np.errstate(over="ignore"):                 # a value out of the dtype's range is reported below
        out = arr.astype(NUMPY_DTYPES[spec.dtype])
    bad = np.argwhere(~np.isfinite(out[0]))
    if len(bad):                                     # finite as float64, not in the input's dtype
        t, j = (int(i) for i in bad[0])
        raise InputError(f"{where}:{lines[t]}: column `{header[features[j]]}` (column {features[j] + 1}): "
                         f"{arr[0, t, j]:g} is out of the range of {spec.dtype}")
    return out


def _csv_header(reader, where: str, what: str = "a CSV for a series input",
                rows: str = "one row per time step") -> tuple[list[str], int]:
    """The first non-blank row, checked: named, unique columns that are not numbers."""
    for row in reader:
        if not row or all(not c.strip() for c in row):
            continue
        line = reader.line_num
        names = [c.strip() for c in row]
        if _looks_numeric(names):
            raise InputError(f"{where}:{line}: the first row holds numbers ({', '.join(names[:4])}"
                             f"{', ...' if len(names) > 4 else ''}), not column names; {what} "
                             "starts with a header row naming its columns")
        for i, n in enumerate(names):
            if not n:
                raise InputError(f"{where}:{line}: column {i + 1} of the header has no name; name every column "
                                 "(a pandas index? write the file with `index=False`, or name it and add it to "
                                 "`ignore_columns`)")
        seen: dict[str, int] = {}
        for i, n in enumerate(names):
            if n in seen:
                raise InputError(f"{where}:{line}: the header names column `{n}` twice (columns {seen[n] + 1} and "
                                 f"{i + 1}); every column needs its own name")
            seen[n] = i
        return names, line
    raise InputError(f"{where}: the file is empty; {what} has a header row naming its columns, "
                     f"then {rows}")


def _csv_features(header: list[str], line: int, spec: InputSpec, where: str) -> list[int]:
    """Indices of the feature columns in the header, in feature order."""
    import difflib

    index = {n: i for i, n in enumerate(header)}
    ignored = set(spec.ignore_columns)
    listing = f"the file's columns are: {', '.join(header)}"
    if spec.columns:
        missing = [c for c in spec.columns if c not in index]
        if missing:
            parts = []
            for c in missing:
                m = difflib.get_close_matches(c, [h for h in header if h not in spec.columns], n=1)
                parts.append(f"`{c}`" + (f" (did you mean `{m[0]}`?)" if m else ""))
            raise InputError(f"{where}:{line}: no column {', '.join(parts)} in the header; {listing}")
        extra = [h for h in header if h not in spec.columns and h not in ignored]
        if extra:
            names = ", ".join(f"`{h}`" for h in extra)
            raise InputError(f"{where}:{line}: the file has column{'s' if len(extra) > 1 else ''} {names} that "
                             f"`{spec.name}` does not take (its features are: {', '.join(spec.columns)}); add "
                             f"{'them' if len(extra) > 1 else 'it'} to the input's `ignore_columns` (not features) "
                             "or to its `columns`")
        return [index[c] for c in spec.columns]
    features = [i for i, h in enumerate(header) if h not in ignored]
    want = spec.shape[-1] if spec.shape is not None and len(spec.shape) == 3 else None
    if not features:
        raise InputError(f"{where}:{line}: every column is in `ignore_columns`, so there are no features; "
                         f"{listing}")
    if isinstance(want, int) and len(features) != want:
        names = ", ".join(header[i] for i in features)
        raise InputError(f"{where}:{line}: {len(features)} feature columns ({names}), but `{spec.name}` takes "
                         f"F = {want} ({spec.shape_text()}); list the {want} features in the input's `columns`, "
                         "or add the others to its `ignore_columns`")
    return features


def data_rows(reader, header: list[str], where: str, error: type = InputError, pos: Optional[list[int]] = None):
    """The data rows of a CSV reader past its header as (cells, line, start): blank lines skipped,
    every row as wide as the header (else `error` naming the line); `start` is `pos[0]` before the
    row was read (the byte offset `_utf8_lines` keeps there), or 0."""
    width = len(header)
    while True:
        start = pos[0] if pos is not None else 0
        row = next(reader, None)
        if row is None:
            return
        if not row or (len(row) == 1 and not row[0].strip()):
            continue                                 # blank lines
        line = reader.line_num
        if len(row) != width:
            raise error(f"{where}:{line}: the row has {len(row)} cells, the header has {width} ({', '.join(header)})")
        yield row, line, start


def _csv_rows(reader, header: list[str], features: list[int], where: str) -> tuple[array, array]:
    """The feature values of every data row (float64, row after row) and each row's line."""
    values = array("d")
    lines = array("q")
    for row, line, _ in data_rows(reader, header, where):
        try:
            step = [float(row[j]) for j in features]
        except ValueError:
            step = None
        if step is None or not all(map(math.isfinite, step)):
            _bad_cell(row, header, features, where, line)
        values.extend(step)
        lines.append(line)
    return values, lines


def _bad_cell(row: list[str], header: list[str], features: list[int], where: str, line: int) -> None:
    """Raise the error for the first cell of a row that is not a finite number."""
    for j in features:
        cell = row[j].strip()
        at = f"{where}:{line}: column `{header[j]}` (column {j + 1})"
        if not cell:
            raise InputError(f"{at}: missing value (an empty cell); fill or drop the step before running")
        try:
            value = float(cell)
        except ValueError:
            shown = cell if cell.isprintable() else cell.encode("unicode_escape").decode("ascii")
            shown = shown if len(shown) <= 40 else shown[:37] + "..."
            raise InputError(f"{at}: `{shown}` is not a number") from None
        if not math.isfinite(value):
            raise InputError(f"{at}: `{cell}` is not a finite number; fill or drop the step before running "
                             "(a model fed NaN or infinity gives NaN)")

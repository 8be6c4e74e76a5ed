"""A CSV file read lazily: one streamed pass finds the header and the byte offset of every data
row (and lets the reader check each row as it goes); rows are then read on demand by seeking.

Only the offsets stay in memory (8 bytes a row), so tables and series larger than memory
train. The pass uses composer._csv's line decoding and header checks, so a file is judged the
same way by `composer run` and `composer train`.
"""

from __future__ import annotations

import csv
import difflib
import os
from array import array
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO, Callable, Iterator, Optional, Sequence

import numpy as np

from ..._csv import _bad_cell, _csv_header, _utf8_lines, data_rows
from ...inputs import InputError
from .base import DataError


@contextmanager
def data_errors() -> Iterator[None]:
    """InputErrors of the shared readers (composer._csv, composer.inputs) as DataErrors."""
    try:
        yield
    except InputError as exc:
        raise DataError(str(exc)) from None


class CsvRows:
    """The header and the data rows' byte offsets of one CSV file.

    `on_header(header, line)` is called once the header is read, then `on_row(row, line)` for
    every data row of the pass (the cells as text and the row's first line number), so a
    reader checks every cell before the first step."""

    def __init__(self, path: Path, on_row: Optional[Callable[[list[str], int], None]] = None,
                 on_header: Optional[Callable[[list[str], int], None]] = None,
                 what: str = "a CSV table", rows_are: str = "one row per example"):
        self.path = path
        self.where = str(path)
        self.header: list[str] = []
        self.header_line = 0
        self._scan(on_row, on_header, what, rows_are)

    def _scan(self, on_row, on_header, what: str, rows_are: str) -> None:
        try:
            f = open(self.path, "rb")
        except OSError as exc:
            raise DataError(f"{self.where}: cannot read it: {exc.strerror or exc}") from None
        offsets = array("q")
        pos = [0]
        with f, data_errors():
            reader = csv.reader(_utf8_lines(f, self.path, self.where, pos))
            try:
                self.header, self.header_line = _csv_header(reader, self.where, what, rows_are)
                if on_header is not None:
                    on_header(self.header, self.header_line)
                for row, line, start in data_rows(reader, self.header, self.where, DataError, pos):
                    offsets.append(start)
                    if on_row is not None:
                        on_row(row, line)
            except csv.Error as exc:
                raise DataError(f"{self.where}:{reader.line_num}: not a readable CSV row ({exc})") from None
        if not offsets:
            raise DataError(f"{self.where}: the header (line {self.header_line}) is followed by no data rows")
        self.offsets = np.frombuffer(offsets, dtype=np.int64) if len(offsets) else np.zeros(0, np.int64)

    def __len__(self) -> int:
        return len(self.offsets)

    def column(self, name: str, whose: str) -> int:
        """The index of a column, or a DataError naming the file, the column and a near miss."""
        if name in self.header:
            return self.header.index(name)
        m = difflib.get_close_matches(name, self.header, n=1)
        hint = f" (did you mean `{m[0]}`?)" if m else ""
        raise DataError(f"{self.where}:{self.header_line}: no column `{name}` ({whose}) in the header{hint}; the "
                        f"file's columns are: {', '.join(self.header)}")

    def rows(self, start: int, count: int = 1) -> list[list[str]]:
        """`count` data rows from row `start` on (0-based, blank lines not counted)."""
        out: list[list[str]] = []
        f = reader_file(self)
        f.seek(int(self.offsets[start]))
        for row in csv.reader(_utf8_lines(f, self.path, self.where)):
            if not row or (len(row) == 1 and not row[0].strip()):
                continue
            out.append(row)
            if len(out) == count:
                break
        return out

    def __getstate__(self):
        return {k: v for k, v in self.__dict__.items() if k != "_file"}

    def line_of(self, i: int) -> int:
        """The line number of data row i (counted when a message needs it)."""
        return line_number(self.path, int(self.offsets[i]))


def reader_file(owner) -> BinaryIO:
    """`owner.path` open for reading, once per process: a forked loader worker opens its own
    file, since a shared one would share the read position too."""
    held = owner.__dict__.get("_file")
    if held is None or held[0] != os.getpid():
        held = (os.getpid(), open(owner.path, "rb"))
        owner.__dict__["_file"] = held
    return held[1]


def line_number(path: Path, offset: int) -> int:
    """The 1-based line that starts at byte `offset` of a file (counted, for messages only)."""
    n = 0
    with open(path, "rb") as f:
        while f.tell() < offset:
            n += f.read(min(1 << 20, offset - f.tell())).count(b"\n")
    return n + 1


def floats(row: list[str], cols: Sequence[int], header: list[str], where: str, line: int) -> list[float]:
    """The cells of `cols` as finite floats, or the DataError for the first cell that is not one."""
    import math
    try:
        values = [float(row[j]) for j in cols]
    except ValueError:
        values = None
    if values is None or not all(map(math.isfinite, values)):
        with data_errors():
            _bad_cell(row, header, list(cols), where, line)
    return values   # type: ignore[return-value]

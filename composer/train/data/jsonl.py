"""JSON Lines: one JSON object per line, one example per object.

    {"text": "a fine film", "label": 1}
    {"tokens": [12, 7, 431], "tags": [0, 3, 4]}

A field is a number, a (nested) list of numbers (an array; sequences may differ in length
between lines, the loader pads them), or a string (the text of a text input). One streamed
pass records the byte offset of every line and checks every object against the pipeline's
inputs and targets; examples are then read on demand, so files larger than memory train.
"""

from __future__ import annotations

import json
from array import array
from pathlib import Path
from typing import Any, Optional

import numpy as np

from .base import DataError, Examples
from .csvrows import line_number, reader_file
from .fields import check_item, input_value, missing_fields, target_value


class JsonlExamples(Examples):
    def __init__(self, plan, path: Path):
        self.source = path
        self.plan = plan
        self.fields: tuple[str, ...] = ()
        offsets = array("q")
        try:
            f = open(path, "rb")
        except OSError as exc:
            raise DataError(f"{path}: cannot read it: {exc.strerror or exc}") from None
        with f:
            pos = 0
            for number, raw in enumerate(f, 1):
                start, pos = pos, pos + len(raw)
                if not raw.strip():
                    continue
                obj = self._parse(raw, f"{path}:{number}")
                if not self.fields:
                    self.fields = tuple(obj)
                    missing_fields(plan, self.fields, f"{path}:{number}",
                                   "; name fields with `data.inputs: {FIELD: INPUT}` and `data.targets: "
                                   "{OUTPUT: FIELD}`")
                check_item(obj, plan, f"{path}:{number}", self.fields)
                offsets.append(start)
        if not offsets:
            raise DataError(f"{path}: the file has no JSON lines; write one object per example")
        self.offsets = np.frombuffer(offsets, dtype=np.int64)

    @staticmethod
    def _parse(raw: bytes, where: str) -> dict[str, Any]:
        try:
            obj = json.loads(raw)
        except UnicodeDecodeError as exc:
            raise DataError(f"{where}: not UTF-8 text (byte {exc.start + 1})") from None
        except ValueError as exc:
            raise DataError(f"{where}: not a JSON line ({getattr(exc, 'msg', exc)}, column "
                            f"{getattr(exc, 'colno', '?')})") from None
        if not isinstance(obj, dict):
            raise DataError(f"{where}: a line holds one example as a JSON object ({{\"field\": value, ...}}), "
                            f"found a {type(obj).__name__}")
        return obj

    def __len__(self) -> int:
        return len(self.offsets)

    @property
    def path(self) -> Path:
        return self.source

    def __getstate__(self):
        return {k: v for k, v in self.__dict__.items() if k != "_file"}

    def where(self, i: int) -> str:
        return f"{self.source}:{line_number(self.source, int(self.offsets[i]))}"

    def __getitem__(self, i: int) -> dict[str, Any]:
        f = reader_file(self)
        f.seek(int(self.offsets[i]))
        obj = self._parse(f.readline(), str(self.source))
        item: dict[str, Any] = {}
        for need in self.plan.inputs.values():
            if need.field in obj:
                item[need.field] = obj[need.field] if need.raw else input_value(obj[need.field], need, "")
        for t in self.plan.targets.values():
            item[t.field] = target_value(obj[t.field], t, "")
        return item

    def check(self, plan: Optional[Any] = None) -> None:
        """Every line was checked by the indexing pass."""

"""What every data reader gives: `Examples`, a lazily read, indexable set of examples whose
items are dicts of data fields, and `DataError` for data that cannot train."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch.utils.data import Dataset

from ...errors import ComposerError


class DataError(ComposerError):
    """Data that does not fit the pipeline or cannot be read; the message names the file and
    the row (or image) first, as `data/train.csv:18: ...`."""


class Examples(Dataset):
    """One split of a data set. `__getitem__(i)` reads example i (lazily, from disk) as a dict
    of data fields: numpy arrays, strings (text), or for detection a dict
    `{"boxes": float32 [N, 4] x1 y1 x2 y2 in pixels, "labels": int64 [N]}`."""

    source: Path            # the file or folder the split was read from
    fields: tuple[str, ...] = ()   # the fields each example has

    def __len__(self) -> int:
        raise NotImplementedError

    def __getitem__(self, i: int) -> dict[str, Any]:
        raise NotImplementedError

    def where(self, i: int) -> str:
        """Where example i lives, for messages: `data/train/cat/003.png`, `data/train.csv:18`."""
        return f"{self.source}[{i}]"

    def check(self, plan) -> None:
        """Everything that can be checked before the first step without reading all of the data
        twice (headers, label ranges, columns, the first example's shapes); raises DataError."""

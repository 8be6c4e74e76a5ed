"""Arrays: `.npz` (numpy) and `.safetensors` files, one array per field, example i at index i
of each array's first dim.

Reading stays lazy: a `.safetensors` tensor is sliced per example (`safe_open(...).get_slice`),
and an uncompressed `.npz` member (`np.savez`) is memory-mapped where it lies in the zip; only a
compressed member (`np.savez_compressed`) is decompressed whole, once per process, so for data
larger than memory save with `np.savez`. Every field the pipeline reads is checked before the
first step: the same example count in all, per-example shapes, dtypes, class ids, vocabulary ids.
"""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Any, Callable

import numpy as np
import numpy.lib.format as fmt

from .base import DataError, Examples
from .fields import check_lengths, check_many, input_value, missing_fields, target_value


def _npz_member(path: Path, zf: zipfile.ZipFile, name: str) -> np.ndarray:
    """An `.npz` member as a read-only memory map when stored uncompressed, else loaded."""
    info = zf.getinfo(name + ".npy")
    if info.compress_type == zipfile.ZIP_STORED:
        with open(path, "rb") as f:
            f.seek(info.header_offset)
            local = f.read(30)                           # the zip local file header
            start = info.header_offset + 30 + int.from_bytes(local[26:28], "little") + \
                int.from_bytes(local[28:30], "little")
            f.seek(start)
            version = fmt.read_magic(f)
            header = {(1, 0): fmt.read_array_header_1_0, (2, 0): fmt.read_array_header_2_0}.get(version)
            shape, fortran, dtype = header(f) if header else ((), False, np.dtype(object))
            offset = f.tell()
        if not dtype.hasobject:
            return np.memmap(path, dtype=dtype, mode="r", offset=offset, shape=shape, order="F" if fortran else "C")
    with zf.open(info) as m:
        return fmt.read_array(m, allow_pickle=False)


def _npz_shape(zf: zipfile.ZipFile, name: str) -> tuple:
    """A member's shape from its .npy header (nothing is decompressed beyond it)."""
    with zf.open(name + ".npy") as m:
        version = fmt.read_magic(m)
        header = {(1, 0): fmt.read_array_header_1_0, (2, 0): fmt.read_array_header_2_0}.get(version)
        if header is None:
            raise DataError(f"member `{name}` has .npy format version {version}, which cannot be read lazily")
        return tuple(header(m)[0])


class ArrayExamples(Examples):
    """The fields of one `.npz` or `.safetensors` file."""

    def __init__(self, plan, path: Path):
        self.source = path
        self.plan = plan
        self.kind = path.suffix.lower()
        if self.kind not in (".npz", ".safetensors"):
            raise DataError(f"{path}: `format: arrays` reads .npz and .safetensors files, not "
                            f"{self.kind or 'files without suffix'}")
        self._open: dict[str, Any] = {}
        names, shapes = self._names()
        self.fields = tuple(names)
        missing_fields(plan, self.fields, str(path))
        used = [n.field for n in plan.inputs.values() if n.field in names] + [t.field for t in plan.targets.values()]
        counts = {f: shapes[f][0] if shapes[f] else None for f in used}
        for f, n in counts.items():
            if n is None:
                raise DataError(f"{path}: field `{f}` is a scalar; each field holds one entry per example along "
                                "its first dim")
        first = used[0]
        for f, n in counts.items():
            if n != counts[first]:
                raise DataError(f"{path}: field `{f}` holds {n} examples and field `{first}` holds {counts[first]}; "
                                "every field needs one entry per example (the first dim)")
        self.n = counts[first]
        if not self.n:
            raise DataError(f"{path}: the fields hold no examples")
        self.check(plan)

    def _names(self) -> tuple[list[str], dict[str, tuple]]:
        try:
            if self.kind == ".npz":
                with zipfile.ZipFile(self.source) as zf:
                    names = [n[:-4] for n in zf.namelist() if n.endswith(".npy")]
                    shapes = {n: _npz_shape(zf, n) for n in names}
                return names, shapes
            h = self._handle()
            names = list(h.keys())
            return names, {n: tuple(h.get_slice(n).get_shape()) for n in names}
        except DataError:
            raise
        except Exception as exc:  # zipfile, numpy and safetensors raise their own types
            raise DataError(f"{self.source}: cannot read it as {self.kind}: {str(exc).splitlines()[0]}") from None

    def _handle(self):
        if "_st" not in self._open:
            from safetensors import safe_open
            self._open["_st"] = safe_open(str(self.source), framework="pt")
        return self._open["_st"]

    def _array(self, name: str) -> np.ndarray:
        if name not in self._open:
            with zipfile.ZipFile(self.source) as zf:
                self._open[name] = _npz_member(self.source, zf, name)
        return self._open[name]

    def __getstate__(self):
        return {**self.__dict__, "_open": {}}      # worker processes open the file themselves

    def _rows(self, name: str) -> Callable[[int, int], np.ndarray]:
        def get(a: int, b: int) -> np.ndarray:
            if self.kind == ".npz":
                return np.asarray(self._array(name)[a:b])
            import torch
            t = self._handle().get_slice(name)[a:b]
            return (t.float() if t.dtype == torch.bfloat16 else t).numpy()
        return get

    def __len__(self) -> int:
        return self.n

    def where(self, i: int) -> str:
        return f"{self.source}[{i}]"

    def __getitem__(self, i: int) -> dict[str, Any]:
        item: dict[str, Any] = {}
        for need in self.plan.inputs.values():
            if need.field in self.fields:
                item[need.field] = input_value(self._rows(need.field)(i, i + 1)[0], need, "")
        for t in self.plan.targets.values():
            item[t.field] = target_value(self._rows(t.field)(i, i + 1)[0], t, "")
        return item

    def check(self, plan) -> None:
        """Every example of every field the pipeline reads, chunk by chunk (once)."""
        if self.__dict__.get("_checked") is plan:
            return
        for need in list(plan.inputs.values()) + list(plan.targets.values()):
            if need.field not in self.fields:
                continue
            if getattr(need, "raw", False):
                raise DataError(f"{self.source}: input `{need.name}` takes text, which {self.kind} arrays cannot "
                                "hold; use `format: jsonl` or `table`")
            check_many(self._rows(need.field), self.n, need, self.where)
        check_lengths(self[0], plan, self.where(0))
        self._checked = plan

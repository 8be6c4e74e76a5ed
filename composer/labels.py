"""Class names for a pipeline's outputs: the spec's `labels:` key.

    labels: imagenet                 # a built-in list (torchvision's weight metadata)
    labels: coco                     # 91 ids of torchvision's COCO detectors, "__background__" and "N/A" included
    labels: [cat, dog, bird]         # written in the spec
    labels: classes.txt              # one name per line, next to the spec

Index i of the list names class id i. The built-in lists come from the `meta` of
torchvision's weight enums, which reading downloads nothing. `check_labels` validates the
key where it is written (located errors, "did you mean" for a misspelt built-in name);
`class_count_diagnostics` checks the names against the number of classes of the outputs
once their types are inferred.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

import numpy as np

from . import errors as E
from .errors import Diagnostic, Diagnostics, Location, did_you_mean
from .errors import found_text as _found
from .types import PortType

BUILTINS = ("imagenet", "coco")
MAX_FILE_BYTES = 16 * 1024**2
CLASS_KINDS = ("logits", "probs")          # [..., C] scores: C must be the number of names


@dataclass(frozen=True)
class Labels:
    """The class names of a pipeline, and where they came from (`imagenet`, `coco`, a file, `list`)."""

    names: tuple[str, ...]
    source: str
    builtin: Optional[str] = None
    loc: Optional[Location] = None

    def __len__(self) -> int:
        return len(self.names)

    def name(self, index: int) -> str:
        """The name of class `index`, or the index itself where the list has no such entry."""
        return name_of(index, self.names)


def name_of(index: int, names: Optional[Sequence[str]]) -> str:
    i = int(index)
    if names is not None and 0 <= i < len(names):
        return names[i]
    return str(i)


@lru_cache(maxsize=None)
def builtin(name: str) -> tuple[str, ...]:
    """A built-in name list, from torchvision's weight metadata (nothing is downloaded)."""
    import torchvision
    if name == "imagenet":
        return tuple(torchvision.models.ResNet50_Weights.IMAGENET1K_V1.meta["categories"])
    if name == "coco":
        return tuple(torchvision.models.detection.FasterRCNN_ResNet50_FPN_Weights.COCO_V1.meta["categories"])
    raise KeyError(name)


_EXPECTED = "a built-in list (imagenet, coco), a list of names, or a text file next to the spec"


def check_labels(value: Any, doc, diags: Diagnostics) -> Optional[Labels]:
    """Validate the `labels:` value of the spec in `doc`; reports into `diags`, None when invalid."""
    loc = doc.loc(("labels",))
    if isinstance(value, list):
        return _from_list(value, doc, loc, diags)
    if not isinstance(value, str):
        diags.add(E.INVALID_VALUE, "invalid value for `labels`", loc=loc, path="labels", expected=_EXPECTED,
                  found=_found(value))
        return None
    text = value.strip()
    if not text:
        diags.add(E.INVALID_VALUE, "`labels` is empty", loc=loc, path="labels", expected=_EXPECTED,
                  found='"" (string)')
        return None
    if text in BUILTINS:
        return Labels(builtin(text), text, text, loc)
    path = (Path(doc.file).resolve().parent / text)
    if path.exists():
        return _from_file(text, path, loc, diags)
    if "/" not in text and "\\" not in text and not Path(text).suffix:
        diags.add(E.INVALID_VALUE, f"unknown label list `{text}`", loc=loc, path="labels",
                  expected=_EXPECTED, found=text,
                  hint=did_you_mean(text, BUILTINS) or f"a file needs its suffix (`{text}.txt`), relative to the spec")
        return None
    diags.add(E.FILE_UNREADABLE, f"labels file `{text}` not found", loc=loc, path="labels", found=str(path),
              hint="the path is relative to this spec")
    return None


def _from_list(value: list, doc, loc: Location, diags: Diagnostics) -> Optional[Labels]:
    if not value:
        diags.add(E.INVALID_VALUE, "`labels` is an empty list", loc=loc, path="labels",
                  expected="at least one name", found="[]")
        return None
    ok = True
    for i, item in enumerate(value):
        if not isinstance(item, str) or not item.strip():
            diags.add(E.INVALID_VALUE, f"label {i} is not a name", loc=doc.loc(("labels", i)), path=f"labels.{i}",
                      expected="a non-empty string", found=_found(item),
                      hint='write it in quotes ("1", "yes") to keep it as text' if isinstance(item, (bool, int, float))
                      else None)
            ok = False
    return Labels(tuple(s.strip() for s in value), "list", None, loc) if ok else None


def _from_file(text: str, path: Path, loc: Location, diags: Diagnostics) -> Optional[Labels]:
    def bad(message: str, code: str = E.FILE_UNREADABLE, **kw) -> None:
        diags.add(code, message, loc=loc, path="labels", **kw)

    if not path.is_file():
        bad(f"labels file `{text}` is not a file", found=str(path))
        return None
    try:
        size = path.stat().st_size
        if size > MAX_FILE_BYTES:
            bad(f"labels file `{text}` is larger than {MAX_FILE_BYTES // 1024**2} MiB", found=f"{size:,} bytes")
            return None
        raw = path.read_bytes()
    except OSError as exc:
        bad(f"cannot read labels file `{text}`: {exc.strerror or exc}", found=str(path))
        return None
    try:
        content = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        bad(f"labels file `{text}` is not UTF-8 text", found=f"byte {exc.start}: {raw[exc.start:exc.start + 1]!r}")
        return None
    lines = [line.strip() for line in content.splitlines()]
    while lines and not lines[-1]:
        lines.pop()
    if not lines:
        bad(f"labels file `{text}` is empty", code=E.INVALID_VALUE, expected="one class name per line",
            found="an empty file")
        return None
    blank = [i + 1 for i, line in enumerate(lines) if not line]
    if blank:
        bad(f"labels file `{text}` has an empty line (line {blank[0]})", code=E.INVALID_VALUE,
            expected="one class name per line (line i + 1 names class i)", found=f"{len(blank)} empty line(s)",
            hint="write a placeholder such as N/A for an unused class id")
        return None
    return Labels(tuple(lines), text, None, loc)


def class_counts(output_types: Mapping[str, Optional[PortType]]) -> dict[str, tuple[int, PortType]]:
    """Outputs whose number of classes is known from their type: logits/probs with a fixed last
    dim (a `vector` output counts when its name says logits or probs, as `composer run` reads
    it), and detection `labels` whose type says `num_classes`."""
    out = {}
    for name, t in output_types.items():
        if t is None:
            continue
        scores = t.kind in CLASS_KINDS or (t.kind == "vector" and any(w in name.lower() for w in ("logit", "prob")))
        if scores and t.shape and isinstance(t.shape[-1], int) and len(t.shape) >= 2:
            out[name] = (t.shape[-1], t)
        elif t.kind == "labels" and isinstance(t.get("num_classes"), int):
            out[name] = (t.get("num_classes"), t)
    return out


def class_count_diagnostics(labels: Optional[Labels], output_types: Mapping[str, Optional[PortType]]
                            ) -> list[Diagnostic]:
    """An error when the names do not number the classes of an output (one error, naming both)."""
    if labels is None:
        return []
    for name, (count, t) in class_counts(output_types).items():
        if count != len(labels):
            others = [n for n, (c, _) in class_counts(output_types).items() if n != name and c == count]
            also = f" (as does `{'`, `'.join(others)}`)" if others else ""
            source = f"`{labels.source}`" if labels.source != "list" else "the list"
            return [Diagnostic(E.SHAPE_MISMATCH,
                               f"`labels` has {len(labels)} names, but output `{name}` ({t}) has {count} classes"
                               + also, loc=labels.loc, path="labels",
                               expected=f"{count} names, one per class of output `{name}`",
                               found=f"{len(labels)} names from {source}",
                               hint="name every class id once (index i names class i)")]
    return []


def top_k_text(scores: np.ndarray, probs: np.ndarray, k: int, names: Optional[Sequence[str]]) -> str:
    """One row's best `k` classes: `Egyptian cat 0.710, tabby 0.120` with names, else `285: 0.710, ...`."""
    idx = np.argsort(-scores, kind="stable")[:k]
    if names is None:
        return ", ".join(f"{i}: {probs[i]:.3f}" for i in idx)
    return ", ".join(f"{name_of(i, names)} {probs[i]:.3f}" for i in idx)

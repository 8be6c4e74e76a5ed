"""Diagnostics: located, coded, collected errors and warnings.

Every stage reports problems as `Diagnostic`s. A stage collects all it finds and raises one
`SpecError` holding them, so a user sees every problem of a spec in one pass. Codes are
stable; `docs/errors.md` lists them.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from typing import Any, Iterable, Literal

# Stable codes. Loading (E0xx), structure and params (E1xx), references and graph (E2xx),
# types (E3xx), sub-pipelines (E4xx), build and artifacts (E5xx).
YAML_SYNTAX = "E001"
EMPTY_FILE = "E002"
NOT_A_MAPPING = "E003"
DUPLICATE_KEY = "E004"
TAG_REJECTED = "E005"
ALIAS_LIMIT = "E006"
TOO_DEEP = "E007"
FILE_TOO_LARGE = "E008"
FILE_UNREADABLE = "E009"
UNKNOWN_FIELD = "E101"
UNKNOWN_BLOCK = "E102"
UNKNOWN_PARAM = "E103"
MISSING_PARAM = "E104"
INVALID_VALUE = "E105"
BAD_NAME = "E106"
BAD_PATTERN = "E107"
UNKNOWN_REF = "E201"
UNKNOWN_PORT = "E202"
CYCLE = "E203"
UNKNOWN_OUTPUT_REF = "E204"
UNUSED_BLOCK = "W205"
NAME_CLASH = "E206"
BAD_BINDING = "E207"
KIND_MISMATCH = "E301"
SHAPE_MISMATCH = "E302"
DTYPE_MISMATCH = "E303"
PARAM_MEMORY = "E304"
TYPE_ERROR = "E305"
BAD_DIM = "E306"
SELF_INCLUDE = "E401"
SUBPIPELINE_MISSING = "E402"
BAD_OVERRIDE = "E403"
BAD_REPEAT = "E404"
BAD_SET = "E405"

Severity = Literal["error", "warning"]


@dataclass(frozen=True, slots=True)
class Location:
    """A position in a source file; line and col are 1-based."""

    file: str
    line: int
    col: int

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.col}"


@dataclass(slots=True)
class Diagnostic:
    """One problem: where, what, expected vs found, and a hint."""

    code: str
    message: str
    loc: Location | None = None
    path: str = ""
    expected: str | None = None
    found: str | None = None
    hint: str | None = None
    severity: Severity = "error"
    related: list[tuple[str, Location]] = field(default_factory=list)

    def format(self) -> str:
        where = f"{self.loc}: " if self.loc else ""
        at = f" {self.path}:" if self.path else ""
        lines = [f"{where}{self.severity}[{self.code}]{at} {self.message}"]
        if self.expected is not None:
            lines.append(f"  expected: {self.expected}")
        if self.found is not None:
            lines.append(f"  found:    {self.found}")
        for note, loc in self.related:
            lines.append(f"  note: {note} at {loc}")
        if self.hint:
            lines.append(f"  hint: {self.hint}")
        return "\n".join(lines)

    def to_dict(self) -> dict:
        return {
            "code": self.code,
            "severity": self.severity,
            "message": self.message,
            "file": self.loc.file if self.loc else None,
            "line": self.loc.line if self.loc else None,
            "col": self.loc.col if self.loc else None,
            "path": self.path,
            "expected": self.expected,
            "found": self.found,
            "hint": self.hint,
        }

    def __str__(self) -> str:
        return self.format()


class ComposerError(Exception):
    """Base of every error composer raises on purpose (bad spec, bad file, failed export)."""

    exit_code = 1


class SpecError(ComposerError):
    """A spec has one or more errors; carries all of them (and any warnings)."""

    exit_code = 2

    def __init__(self, diagnostics: Iterable[Diagnostic]):
        self.diagnostics = list(diagnostics)
        super().__init__(self.format())

    @property
    def errors(self) -> list[Diagnostic]:
        return [d for d in self.diagnostics if d.severity == "error"]

    def format(self) -> str:
        return "\n".join(d.format() for d in self.diagnostics)

    def codes(self) -> list[str]:
        return [d.code for d in self.errors]


class Diagnostics:
    """A collector that stages append to; `raise_if_errors` ends the stage."""

    def __init__(self) -> None:
        self.items: list[Diagnostic] = []

    def add(self, code: str, message: str, **kw) -> Diagnostic:
        d = Diagnostic(code, message, **kw)
        self.items.append(d)
        return d

    def extend(self, items: Iterable[Diagnostic]) -> None:
        self.items.extend(items)

    @property
    def errors(self) -> list[Diagnostic]:
        return [d for d in self.items if d.severity == "error"]

    @property
    def warnings(self) -> list[Diagnostic]:
        return [d for d in self.items if d.severity == "warning"]

    def raise_if_errors(self) -> None:
        if self.errors:
            raise SpecError(self.items)


def did_you_mean(word: str, options: Iterable[str]) -> str | None:
    """A difflib suggestion, phrased for a hint, or None."""
    match = difflib.get_close_matches(str(word), [str(o) for o in options], n=1, cutoff=0.6)
    return f"did you mean `{match[0]}`?" if match else None


def found_text(value: Any) -> str:
    """How a found value reads in a diagnostic: `"3" (string)`, `true (boolean)`, `a mapping`."""
    if isinstance(value, bool):
        return f"{str(value).lower()} (boolean)"
    if isinstance(value, str):
        return f'"{value}" (string)'
    if isinstance(value, (int, float)):
        return f"{value} ({type(value).__name__})"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    if value is None:
        return "null"
    return repr(value)

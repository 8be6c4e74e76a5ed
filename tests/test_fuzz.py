"""Property test: mutated specs give located `SpecError`s, never another exception.

Valid specs (`pipelines/cnn_classifier.yaml`, `pipelines/tabular_mlp.yaml`, and small generated
ones) are mutated, either as data and written back out as YAML (drop, rename or retype a key
or value, break a reference, add a cycle, duplicate a key, insert a tag, YAML 1.1 words,
deep nesting, self-referencing aliases) or as text (duplicate, drop or truncate lines, insert
a tag or a stray character, append an alias bomb). `composer.loads` must then either
succeed or raise `composer.SpecError` whose every diagnostic has a stable code and a
`file:line:col` inside the text.
"""

from __future__ import annotations

import functools
import json
import math
import re
import signal
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import composer
from composer import SpecError

ROOT = Path(__file__).resolve().parents[1]
BASE_FILES = [ROOT / "pipelines" / "cnn_classifier.yaml", ROOT / "pipelines" / "tabular_mlp.yaml"]
FILE = "fuzz.yaml"
CODE_RE = re.compile(r"^[EW]\d{3}$")
WHOLE_FILE = {"E002", "E008", "E009"}  # empty, too large, unreadable: no position to point at
PER_EXAMPLE_TIMEOUT_S = 10
YAML_LINE_BREAK = re.compile("\r\n|[\r\n\x85\u2028\u2029]")  # what YAML counts as a new line


# ---------------------------------------------------------------------------------------------
# a tiny YAML writer that can also write what yaml.safe_dump never would


class Raw:
    """Text written verbatim as a value: YAML 1.1 words, tags, aliases, deep flow nesting."""

    def __init__(self, text: str):
        self.text = text

    def __repr__(self) -> str:
        return f"Raw({self.text!r})"


class Dup:
    """A mapping key written with the same text as another key of that mapping."""

    def __init__(self, key: Any):
        self.key = key

    def __repr__(self) -> str:
        return f"Dup({self.key!r})"


PLAIN_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_./-]*")


def _scalar(v: Any) -> str:
    if isinstance(v, Raw):
        return v.text
    if isinstance(v, Dup):
        return _scalar(v.key)
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if math.isnan(v):
            return ".nan"
        if math.isinf(v):
            return ".inf" if v > 0 else "-.inf"
        return repr(v)
    if PLAIN_RE.fullmatch(v) and yaml.safe_load(v) == v:
        return v  # plain, as a person would write it (and as composer sees YAML 1.1 words)
    return json.dumps(v)  # a JSON string is a valid double-quoted YAML scalar


def dump(value: Any, indent: int = 0) -> list[str]:
    pad = " " * indent
    if isinstance(value, dict) and value:
        lines = []
        for k, v in value.items():
            key = _scalar(k)
            if isinstance(v, (dict, list)) and v:
                lines.append(f"{pad}{key}:")
                lines += dump(v, indent + 2)
            else:
                lines.append(f"{pad}{key}: {_inline(v)}")
        return lines
    if isinstance(value, list) and value:
        lines = []
        for v in value:
            if isinstance(v, (dict, list)) and v:
                lines.append(f"{pad}-")
                lines += dump(v, indent + 2)
            else:
                lines.append(f"{pad}- {_inline(v)}")
        return lines
    return [pad + _inline(value)]


def _inline(v: Any) -> str:
    if isinstance(v, dict):
        return "{}"
    if isinstance(v, list):
        return "[]"
    return _scalar(v)


def to_yaml(data: Any) -> str:
    return "\n".join(dump(data)) + "\n"


# ---------------------------------------------------------------------------------------------
# base specs


@functools.lru_cache(maxsize=None)
def _base_texts() -> tuple[str, ...]:
    return tuple(p.read_text(encoding="utf-8") for p in BASE_FILES)


VECTOR_BLOCKS = ["dense", "relu", "gelu", "tanh", "sigmoid", "layernorm", "dropout", "residual", "mlp", "batchnorm"]
IMAGE_BLOCKS = ["conv2d", "relu", "batchnorm", "maxpool", "avgpool", "residual", "identity", "silu"]


@st.composite
def generated_specs(draw) -> dict:
    """A small valid spec: an image trunk or a vector tower, with residual adds and repeats."""
    image = draw(st.booleans())
    n = draw(st.integers(1, 6))
    blocks: dict[str, dict] = {}
    prev = "x"
    if image:
        inputs = {"x": {"kind": "image", "shape": ["B", 3, "H", "W"], "dtype": "float32"}}
        blocks["stem"] = {"block": "conv2d", "in": "x", "out_channels": 8, "kernel": 3, "padding": 1}
        prev = "stem"
        menu = IMAGE_BLOCKS
    else:
        inputs = {"x": {"kind": "vector", "shape": ["B", 16]}}
        menu = VECTOR_BLOCKS
    anchor = prev  # the start of the current run of same-shaped values, for residual adds
    for i in range(n):
        kind = draw(st.sampled_from(menu))
        name = f"b{i}"
        if kind == "residual":
            pair = [anchor, prev]
            blocks[name] = {"block": "add", "in": pair if draw(st.booleans()) else {"xs": pair}}
        elif kind == "conv2d":
            blocks[name] = {"block": "conv2d", "in": prev, "out_channels": 8, "kernel": 3, "padding": 1}
        elif kind in ("maxpool", "avgpool"):
            blocks[name] = {"block": kind, "in": prev, "kernel": 2}
            anchor = name
        elif kind == "dense":
            blocks[name] = {"block": "dense", "in": prev, "out_features": 16}
        elif kind == "mlp":
            blocks[name] = {"block": "mlp", "in": prev, "hidden": [32], "out_features": 16}
        elif kind == "dropout":
            blocks[name] = {"block": "dropout", "in": prev, "p": 0.1}
        else:
            blocks[name] = {"block": kind, "in": prev}
        if kind in ("relu", "gelu", "tanh", "identity", "silu") and draw(st.booleans()):
            blocks[name]["repeat"] = 2
        prev = name
    if image:
        blocks["gap"] = {"block": "global_avg_pool", "in": prev}
        prev = "gap"
    blocks["head"] = {"block": "dense", "in": prev, "out_features": 4, "frozen": draw(st.booleans())}
    blocks["probs"] = {"block": "softmax", "in": "head"}
    spec = {"pipeline": "generated", "seed": 0, "inputs": inputs, "blocks": blocks,
            "outputs": {"logits": "head", "probs": "probs"}}
    if image:
        spec["dims"] = {"H": {"multiple_of": 4, "sizes": [32, 64]}}
    return spec


# ---------------------------------------------------------------------------------------------
# mutations


OTHER_VALUES = [
    "string", "", "3", True, False, -1, -7, 0, 1.5, -0.5, [1, 2], [], {"a": 1}, {}, None, 10**30, -(10**30),
    Raw("no"), Raw("on"), Raw("off"), Raw("yes"), Raw("y"), Raw("1.10"), Raw("0x1F"), Raw("1e3"), Raw("0o17"),
    Raw("~"), Raw(".inf"), Raw("-.inf"), Raw(".nan"), Raw("2001-12-14"), Raw("12:30:00"), Raw("1_000"),
    Raw("!!python/object/apply:os.system [\"true\"]"), Raw("!foo 3"), Raw("!!str 3"), Raw("!!int '3'"),
    Raw("!!binary aGVsbG8="), Raw("&a [1, *a]"), Raw("*nowhere"), Raw("[" * 80 + "]" * 80),
    Raw("{a: {b: {c: [1, {d: 2}]}}}"), Raw("'unterminated"), Raw("[1, 2"), Raw("a: b: c"),
]
KEY_NAMES = ["block", "spec", "in", "repeat", "frozen", "overrides", "description", "kind", "shape", "dtype",
             "pipeline", "inputs", "blocks", "outputs", "dims", "seed", "weights", "limits", "out_features",
             "kernel", "xs", "x", "1abc", "a-b", "a.b", "a/b", "", "x y", "Conv1", "_"]
BAD_KEYS = [1, True, None, 1.5, Raw("? [a, b]"), Raw("!foo k")]
BAD_REFS = ["nowhere", "conv1.nope", "head.out.extra", "x..y", ".", "", "1abc", "probs.", "image.out",
            "a/b", "blocks", ["nowhere", "head"], {"x": "nowhere"}, {"nope": "head"}]


def _paths(data: Any, prefix: tuple = ()) -> list[tuple]:
    out = [prefix] if prefix else []
    if isinstance(data, dict):
        for k, v in data.items():
            out += _paths(v, prefix + (k,))
    elif isinstance(data, list):
        for i, v in enumerate(data):
            out += _paths(v, prefix + (i,))
    return out


def _parent(data: Any, path: tuple) -> Any:
    for p in path[:-1]:
        data = data[p]
    return data


def _copy(data: Any) -> Any:
    if isinstance(data, dict):
        return {k: _copy(v) for k, v in data.items()}
    if isinstance(data, list):
        return [_copy(v) for v in data]
    return data


def _rename(d: dict, old: Any, new: Any) -> dict:
    """The same mapping (same order) with key `old` renamed to `new`."""
    return {(new if k == old else k): v for k, v in d.items()}


def mutate_data(draw, data: dict) -> tuple[dict, str]:
    op = draw(st.sampled_from(["drop", "rename", "retype", "retype", "break_ref", "cycle", "dup_key",
                               "add_key", "retype_param"]))
    paths = _paths(data)
    if op == "cycle":
        blocks = data.get("blocks")
        if isinstance(blocks, dict) and len(blocks) >= 2:
            names = list(blocks)
            i = draw(st.integers(0, len(names) - 1))
            j = draw(st.integers(i, len(names) - 1))
            if isinstance(blocks[names[i]], dict):
                blocks[names[i]]["in"] = names[j]  # j >= i: a self-loop or a loop through later blocks
            return data, f"cycle {names[i]} <- {names[j]}"
        op = "retype"
    if op == "break_ref":
        refs = [p for p in paths if (len(p) >= 3 and p[0] == "blocks" and "in" in p[2:3])
                or (len(p) == 2 and p[0] == "outputs")]
        if refs:
            path = draw(st.sampled_from(refs))
            _parent(data, path)[path[-1]] = _copy(draw(st.sampled_from(BAD_REFS)))
            return data, f"break_ref {path}"
        op = "retype"
    if op == "retype_param":
        params = [p for p in paths if len(p) == 3 and p[0] == "blocks"]
        if params:
            path = draw(st.sampled_from(params))
            _parent(data, path)[path[-1]] = _copy(draw(st.sampled_from(OTHER_VALUES)))
            return data, f"retype_param {path}"
        op = "retype"
    path = draw(st.sampled_from(paths))
    parent = _parent(data, path)
    key = path[-1]
    if op == "drop":
        if isinstance(parent, dict):
            del parent[key]
        else:
            parent.pop(key)
    elif op == "retype":
        parent[key] = _copy(draw(st.sampled_from(OTHER_VALUES)))
    elif op in ("rename", "dup_key", "add_key"):
        if not isinstance(parent, dict):
            parent[key] = _copy(draw(st.sampled_from(OTHER_VALUES)))
            return data, f"retype {path}"
        if op == "rename":
            new = draw(st.sampled_from(KEY_NAMES + BAD_KEYS + [str(key)[:-1] or "k", str(key) + "s"]))
            if new in parent and new != key:
                new = Dup(new)  # renaming onto an existing key writes a duplicate
        elif op == "dup_key":
            new = Dup(key)
        else:
            new = draw(st.sampled_from(KEY_NAMES))
            new = Dup(new) if new in parent else new
        value = parent[key] if op != "add_key" else _copy(draw(st.sampled_from(OTHER_VALUES)))
        if op == "rename":
            replaced = _rename(parent, key, new)
        else:
            replaced = dict(parent)
            replaced[new] = value
        if len(path) == 1:
            data = replaced
        else:
            grand = _parent(data, path[:-1])
            grand[path[-2]] = replaced
    return data, f"{op} {path}"


LINE_OPS = ["dup_line", "drop_line", "tag", "stray", "truncate", "bomb", "indent"]
STRAY = ["{", "}", "[", "]", ":", "'", '"', "\t", "&x ", "*y ", "%", "@", "`", "- ", "? ", "#", "!", "|", ">",
         "\x00", "\ufeff", "\x85", "\u2028", "---\n", "...\n", "\\", ",", "\r"]
TAGS = ["!!python/object/apply:os.system ", "!foo ", "!!str ", "!!map ", "!<tag:yaml.org,2002:int> ",
        "!!python/name:builtins.eval "]


def mutate_text(draw, text: str) -> tuple[str, str]:
    lines = text.split("\n")
    op = draw(st.sampled_from(LINE_OPS))
    i = draw(st.integers(0, max(0, len(lines) - 1)))
    if op == "dup_line":
        lines.insert(i, lines[i])
    elif op == "drop_line":
        del lines[i]
    elif op == "indent":
        lines[i] = " " * draw(st.integers(1, 3)) + lines[i]
    elif op == "tag":
        line = lines[i]
        cols = [m.end() for m in re.finditer(r": |\{|\[|, |- ", line)]
        col = draw(st.sampled_from(cols)) if cols else len(line)
        lines[i] = line[:col] + draw(st.sampled_from(TAGS)) + line[col:]
    elif op == "stray":
        line = lines[i]
        col = draw(st.integers(0, len(line)))
        lines[i] = line[:col] + draw(st.sampled_from(STRAY)) + line[col:]
    elif op == "truncate":
        cut = draw(st.integers(0, len(text)))
        return text[:cut], f"truncate {cut}"
    elif op == "bomb":
        lines += ["a: &a [x, x, x, x, x, x, x, x, x, x]",
                  "b: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a, *a]",
                  "c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b, *b]",
                  "d: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c, *c]",
                  "e: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d, *d]",
                  "f: &f [*e, *e, *e, *e, *e, *e, *e, *e, *e, *e]"]
    return "\n".join(lines), f"{op} line {i + 1}"


@st.composite
def mutated_specs(draw) -> tuple[str, list[str]]:
    """(YAML text, the mutations applied)."""
    if draw(st.integers(0, 2)) == 0:
        data = draw(generated_specs())
        text = to_yaml(data)
    else:
        text = draw(st.sampled_from(_base_texts()))
        data = yaml.safe_load(text)
    log = []
    if draw(st.booleans()):  # mutate the data, then write it out
        for _ in range(draw(st.integers(1, 3))):
            data, what = mutate_data(draw, data)
            log.append(what)
            if not isinstance(data, dict) or not data:
                break
        text = to_yaml(data)
    if not log or draw(st.integers(0, 3)) == 0:  # mutate the text
        for _ in range(draw(st.integers(1, 2))):
            text, what = mutate_text(draw, text)
            log.append(what)
    return text, log


# ---------------------------------------------------------------------------------------------
# the property


@contextmanager
def time_limit(seconds: float):
    """Turn a hang into a failure (SIGALRM: pytest runs tests on the main thread). An outer
    timer (pytest-timeout's signal method) is put back with the time it had left."""
    def on_alarm(signum, frame):
        raise TimeoutError(f"composer.loads did not finish in {seconds} s")

    old_handler = signal.signal(signal.SIGALRM, on_alarm)
    outer_delay, outer_interval = signal.setitimer(signal.ITIMER_REAL, seconds)
    start = time.monotonic()
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old_handler)
        if outer_delay:
            left = max(0.001, outer_delay - (time.monotonic() - start))
            signal.setitimer(signal.ITIMER_REAL, left, outer_interval)


def check_diagnostic(d: composer.Diagnostic, text: str) -> None:
    assert d.code and CODE_RE.match(d.code), f"bad code {d.code!r}: {d.format()}"
    assert d.message, d.format()
    if d.loc is None:
        assert d.code in WHOLE_FILE, f"diagnostic without a location: {d.format()}"
        return
    n_lines = len(YAML_LINE_BREAK.split(text))
    assert d.loc.file == FILE, d.format()
    assert 1 <= d.loc.line <= n_lines + 1, f"line out of range ({n_lines} lines): {d.format()}"
    assert d.loc.col >= 1, d.format()
    assert f"{FILE}:{d.loc.line}:{d.loc.col}" in d.format()
    for note, loc in d.related:
        assert loc.file == FILE and 1 <= loc.line <= n_lines + 1 and loc.col >= 1, f"bad related location: {d.format()}"


def check_loads(text: str) -> None:
    try:
        with time_limit(PER_EXAMPLE_TIMEOUT_S):
            pipe = composer.loads(text, FILE)
    except SpecError as exc:
        assert exc.errors, "SpecError without any error"
        for d in exc.diagnostics:
            check_diagnostic(d, text)
        return
    for d in pipe.warnings:
        check_diagnostic(d, text)


@settings(max_examples=200, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(mutated_specs())
def test_mutated_specs_raise_only_spec_errors(case):
    text, log = case
    check_loads(text)


@pytest.mark.parametrize("path", BASE_FILES, ids=lambda p: p.name)
def test_base_specs_are_valid(path):
    """The unmutated bases load cleanly (so the mutations are what the property exercises)."""
    pipe = composer.loads(path.read_text(encoding="utf-8"), FILE)
    assert not pipe.warnings


@settings(max_examples=20, deadline=None, derandomize=True, database=None)
@given(generated_specs())
def test_generated_specs_are_valid(spec):
    pipe = composer.loads(to_yaml(spec), FILE)
    assert not pipe.warnings, [d.format() for d in pipe.warnings]


# ---------------------------------------------------------------------------------------------
# crashes the fuzzer found in composer/, pinned until they are fixed


NULL_INPUT_NAME = """\
pipeline: p
inputs:
  ~: {kind: vector, shape: [B, 4]}
blocks:
  fc: {block: dense, in: x, out_features: 2}
outputs:
  y: fc
"""


def test_null_input_name_is_a_spec_error():
    with pytest.raises(SpecError) as info:
        composer.loads(NULL_INPUT_NAME, FILE)
    assert "E106" in info.value.codes()
    for d in info.value.diagnostics:
        check_diagnostic(d, NULL_INPUT_NAME)


HUGE_REPEAT = """\
pipeline: p
inputs:
  x: {kind: vector, shape: [B, 4]}
blocks:
  act: {block: relu, in: x, repeat: 1000000000000}
outputs:
  y: act
"""


@pytest.mark.timeout(60)  # a hang guard: the cap must stop expansion before any work
def test_huge_repeat_is_rejected_quickly():
    with pytest.raises(SpecError) as info:
        composer.loads(HUGE_REPEAT, FILE)
    errors = info.value.errors
    assert errors and all(d.loc is not None for d in errors)
    assert any(d.path == "blocks.act.repeat" and d.loc.line == 5 for d in errors), info.value.format()

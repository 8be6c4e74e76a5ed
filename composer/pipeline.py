"""The public entry: `composer.load(path)` gives a validated `Pipeline` ready to build."""

from __future__ import annotations

import gc
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import torch

from ._yaml import Doc, load_file, load_text
from .compile import CompiledPipeline, compile_graph
from .errors import Diagnostic, SpecError
from .graph import Graph, analyze, param_memory_error
from .overrides import Override, Overrides, apply_overrides, parse_overrides
from .resolve import Resolved, resolve
from .spec import ParsedSpec, parse


@contextmanager
def _gc_paused():
    """Analysis allocates many small, long-lived objects; cyclic GC passes only slow it down."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


@dataclass
class Pipeline:
    """A validated pipeline: its resolved spec and typed graph; `build` makes the module."""

    graph: Graph
    warnings: list[Diagnostic] = field(default_factory=list)

    @property
    def resolved(self) -> Resolved:
        return self.graph.resolved

    @property
    def name(self) -> str:
        return self.resolved.name

    @property
    def file(self) -> str:
        return self.resolved.file

    def build(self, seed: Optional[int] = None, device: Optional[torch.device | str] = None,
              spec_weights: bool = True) -> CompiledPipeline:
        """A fresh `nn.Module`; the same spec and seed always give the same weights, and the
        spec's `weights:` file, if it names one, is loaded into it (unless `spec_weights=False`).
        `model.pipeline` refers back to this pipeline (its input types, for export).

        On a real device the parameters must fit the memory limit first (`check_memory`, E304);
        `device="meta"` builds the module at any size without allocating."""
        if device is None or torch.device(device).type != "meta":
            self.check_memory()
        model = compile_graph(self.graph, seed=seed, device=device)
        model.pipeline = self
        if spec_weights and self.resolved.weights and str(device) != "meta":
            from .weights import load_weights
            model.weights_report = load_weights(model, self.resolved.weights)
        return model

    def check_memory(self) -> None:
        """Raise SpecError (E304, at the largest block) when the float32 parameters would exceed
        the memory limit (`limits.max_param_bytes`, or `max_param_bytes=` of `load`)."""
        diag = param_memory_error(self.graph)
        if diag is not None:
            raise SpecError([diag])


def analyze_doc(doc: Doc, *, max_param_bytes: Optional[int] = None, overrides: Overrides = None) -> Graph:
    """Parse, resolve and type a loaded document; never raises for spec errors.

    `overrides` change params from outside the spec: a mapping `{"roi.score_thresh": 0.3}`
    (values as given) or `BLOCK.PARAM=VALUE` texts as `--set` takes them (values read as
    YAML); they are checked like the spec, and their errors are located at the override."""
    with _gc_paused():
        found, problems = parse_overrides(overrides)
        return _analyze(doc, found, problems, max_param_bytes)


def _analyze(doc: Doc, found: list[Override], problems: list[Diagnostic], max_param_bytes: Optional[int]) -> Graph:
    if found:
        doc, more = apply_overrides(doc, found)
        problems = problems + more
    parsed: ParsedSpec = parse(doc)
    parsed.diagnostics[:0] = problems
    return analyze(resolve(parsed), max_param_bytes=max_param_bytes)


def analyze_file(path: str | Path, *, max_param_bytes: Optional[int] = None, overrides: Overrides = None) -> Graph:
    """Like `load`, but returns the graph with its diagnostics instead of raising for them
    (so an invalid spec can still be drawn). Raises SpecError only when the file cannot be
    read as YAML at all (with any problems of the overrides' own form beside it)."""
    with _gc_paused():
        found, problems = parse_overrides(overrides)
        try:
            doc = load_file(path)
        except SpecError as exc:
            raise SpecError(problems + exc.diagnostics) from None
        return _analyze(doc, found, problems, max_param_bytes)


def _checked(graph: Graph) -> Pipeline:
    if graph.errors:
        raise SpecError(graph.diagnostics)
    return Pipeline(graph, graph.warnings)


def load(path: str | Path, *, max_param_bytes: Optional[int] = None, overrides: Overrides = None) -> Pipeline:
    """Load, validate, resolve and type-check a spec file; raises SpecError with every error.

    `overrides={"roi.score_thresh": 0.3}` changes params as `--set roi.score_thresh=0.3` does."""
    return _checked(analyze_file(path, max_param_bytes=max_param_bytes, overrides=overrides))


def loads(text: str, file: str = "<string>", *, max_param_bytes: Optional[int] = None,
          overrides: Overrides = None) -> Pipeline:
    """Like `load`, from YAML text (sub-pipeline paths resolve from the current folder)."""
    found, problems = parse_overrides(overrides)
    try:
        doc = load_text(text, file)
    except SpecError as exc:
        raise SpecError(problems + exc.diagnostics) from None
    with _gc_paused():
        return _checked(_analyze(doc, found, problems, max_param_bytes))

"""`composer build`: validate, compile, summarise and write every artifact of a pipeline.

Artifacts go to `<out>/<pipeline>/`, each written atomically:
  summary.md                 blocks, output types, params, MACs
  <pipeline>.svg             the typed graph (`composer render`), embedded in summary.md
  <pipeline>.resolved.yaml   the flat spec (`composer resolve`)
  report.json                figures, machine-readable
plus `<pipeline>.onnx` (verified) and, asked for, `<pipeline>.safetensors`.

A real build needs the parameters to fit the memory limit (E304, `Pipeline.check_memory`).
`no_weights=True` (`composer build --no-weights`) allocates no tensor at any size: MACs are
counted on the meta device, nothing is compiled for real, loaded, saved or exported, and the
artifacts above (summary.md, the diagram, the resolved spec, report.json) are written as usual.
"""

from __future__ import annotations

import json
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import torch

from . import _io, emit, summary
from .errors import ComposerError
from .pipeline import Pipeline
from .weights import WeightsArg


@dataclass
class BuildResult:
    folder: Path
    artifacts: dict[str, Path] = field(default_factory=dict)
    report: dict = field(default_factory=dict)
    rows: list = field(default_factory=list)
    per_token: Optional[summary.PerToken] = None     # a decoder's MACs per token (`summary.macs_per_token`)


Progress = Callable[[str], None]


def build(pipe: Pipeline, out_dir: str | Path = "build", *, seed: Optional[int] = None,
          progress: Optional[Progress] = None, weights: Optional[WeightsArg] = None, save_weights: bool = False,
          onnx: bool = True, verify: bool = True, no_weights: bool = False) -> BuildResult:
    """Compile `pipe` and write its artifacts; returns where they are and the report.
    `weights` (a path or a `WeightsSource`) replaces the spec's own `weights:`. `no_weights=True`
    writes the summary artifacts only, allocating nothing (see the module docstring)."""
    if no_weights and (weights is not None or save_weights or onnx):
        raise ComposerError("a build without weights cannot load, save or export weights: "
                            "drop `--weights`, `--save-weights` and `--onnx`")
    if not no_weights:
        pipe.check_memory()     # before any folder or tensor exists
    step = progress or (lambda msg: None)
    folder = _io.ensure_dir(Path(out_dir) / pipe.name)
    result = BuildResult(folder)
    g = pipe.graph
    times: dict[str, float] = {}

    model, weights_step = None, {}
    if not no_weights:
        step("compiling")
        t0 = time.perf_counter()
        model = pipe.build(seed=seed, spec_weights=weights is None)
        times["compile_s"] = time.perf_counter() - t0
        weights_step = _weights_step(pipe, model, folder, result, step, weights, save_weights)

    step("counting MACs")
    t0 = time.perf_counter()
    env = summary.example_env(g)
    result.rows = summary.rows(g)
    times["summary_s"] = time.perf_counter() - t0

    params = g.total_params()
    per_token = result.per_token = summary.macs_per_token(g, result.rows, env)
    report = result.report
    report.update({
        "pipeline": pipe.name,
        "spec": str(pipe.file),
        "seed": g.resolved.seed if seed is None else seed,
        "inputs": {n: i.type.to_dict() for n, i in g.resolved.inputs.items()},
        "outputs": {n: g.output_type(ref).to_dict() for n, ref in g.resolved.outputs.items()},
        "blocks": len(result.rows),
        "no_weights": no_weights,
        "params": params,
        "param_bytes": summary.param_memory(params),
        "frozen_params": sum(r.params for r in result.rows if r.frozen),
        "frozen_blocks": [r.block for r in result.rows if r.frozen],
        "macs": sum(r.macs or 0 for r in result.rows),
        "macs_at": env,
        "macs_per_token": per_token.macs if per_token else None,
        "warnings": [d.to_dict() for d in pipe.warnings],
        "versions": {"python": platform.python_version(), "torch": torch.__version__},
        "timings": times,
    })

    if weights_step:
        report["weights"] = weights_step
    if onnx:
        _export_step(pipe, model, folder, result, step, seed, verify)

    step("writing artifacts")
    resolved_path = folder / f"{pipe.name}.resolved.yaml"
    _io.write_text(resolved_path, emit.to_yaml(g.resolved))
    result.artifacts["resolved"] = resolved_path

    _diagram_step(pipe, folder, result, step)

    summary_path = folder / "summary.md"
    svg_name = result.artifacts["svg"].name if "svg" in result.artifacts else None
    _io.write_text(summary_path, summary.markdown(g, result.rows, env, svg_name))
    result.artifacts["summary"] = summary_path

    report["artifacts"] = {k: p.name for k, p in result.artifacts.items()} | {"report": "report.json"}
    report_path = folder / "report.json"
    _io.write_text(report_path, json.dumps(report, indent=2, default=str) + "\n")
    result.artifacts["report"] = report_path
    del model
    return result


def _weights_step(pipe: Pipeline, model, folder: Path, result: BuildResult, step: Progress,
                  weights: Optional[WeightsArg], save_weights: bool) -> dict:
    """`--weights` (load into the model) and `--save-weights` (write them as safetensors)."""
    from .weights import load_weights, save_weights as save
    info: dict = {}
    if weights is not None:
        step("loading weights")
        info["loaded"] = load_weights(model, weights).to_dict()
    elif model.weights_report is not None:   # the spec's own `weights:`
        info["loaded"] = model.weights_report.to_dict()
    if save_weights:
        step("saving weights")
        path = save(model, folder / f"{pipe.name}.safetensors")
        result.artifacts["weights"] = path
        info["saved"] = path.name
    return info


def _export_step(pipe: Pipeline, model, folder: Path, result: BuildResult, step: Progress,
                 seed: Optional[int], verify: bool) -> None:
    """Export `<pipeline>.onnx`, verified against torch; its figures go into report.json."""
    from .export import export
    path = folder / f"{pipe.name}.onnx"
    rep = export(model, path, pipeline=pipe, seed=seed, verify=verify, progress=step)
    result.artifacts["onnx"] = path
    result.report["export"] = rep
    result.report.setdefault("timings", {})["export_s"] = rep["total_seconds"]


def _diagram_step(pipe: Pipeline, folder: Path, result: BuildResult, step: Progress) -> None:
    """`<pipeline>.svg`, the typed graph (summary.md embeds it); skipped with a note without Graphviz."""
    from .render import GraphvizNotFound, write
    step("drawing the diagram")
    macs = {r.block: r.macs for r in result.rows if r.macs is not None}
    path = folder / f"{pipe.name}.svg"
    try:
        write(pipe.graph, path, "svg", macs=macs or False)
    except GraphvizNotFound as exc:
        result.report["diagram"] = {"skipped": str(exc)}
        return
    result.artifacts["svg"] = path

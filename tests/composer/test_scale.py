"""Scale before a weight exists: a 175B-parameter spec validates, summarises and builds on the
meta device; a real build refuses it (E304) unless the memory limit is raised. Nothing here
allocates more than a few small tensors."""

from __future__ import annotations

import json
import os
import re
import resource
import subprocess
import time

import pytest
from typer.testing import CliRunner

import composer
from composer import SpecError, summary
from composer.build import build as build_artifacts
from composer.cli import app
from composer.errors import ComposerError
from tests.conftest import COMPOSER, ROOT

GPT3 = ROOT / "pipelines" / "gpt3_175b.yaml"
GPT2 = ROOT / "pipelines" / "gpt2.yaml"
GPT3_PARAMS = 174_604_259_328
GPT2_PARAMS = 124_439_808
GiB = 1024**3

TINY = """\
pipeline: tiny_limit
{limits}
inputs:
  x: {{kind: vector, shape: [B, 4]}}
blocks:
  head: {{block: dense, in: x, out_features: 8}}
outputs:
  y: head
"""


def invoke(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


@pytest.fixture
def no_compile(monkeypatch):
    """A real build that got past the memory check raises `Compiling` instead of allocating."""

    class Compiling(Exception):
        pass

    def refuse(*args, **kwargs):
        raise Compiling

    monkeypatch.setattr(composer.pipeline, "compile_graph", refuse)
    return Compiling


def test_gpt3_175b_validates_with_its_exact_parameter_count():
    graph = composer.analyze_file(GPT3)
    assert not graph.diagnostics, [d.format() for d in graph.diagnostics]
    assert graph.total_params() == GPT3_PARAMS
    d, layers, vocab, context = 12288, 96, 50257, 2048
    assert graph.params == {"tok": 0, "emb": (vocab + context) * d, "decoder": layers * (12 * d * d + 13 * d) + 2 * d,
                            "lm_head": 0}
    assert f"{GPT3_PARAMS:,}" in graph.resolved.description.replace("\n", " ")
    r = invoke("validate", GPT3)
    assert r.exit_code == 0 and "gpt3_175b.yaml: ok" in r.output, r.output
    assert "over the limit of 16.0 GiB" in r.output and "`composer build` refuses it (E304)" in r.output


def test_gpt2_has_exactly_124_439_808_parameters_by_its_summary(tmp_path):
    pipe = composer.load(GPT2)
    result = build_artifacts(pipe, tmp_path, onnx=False, no_weights=True)
    assert result.report["params"] == sum(row.params for row in result.rows) == GPT2_PARAMS
    assert result.report["param_bytes"] == {"float32": 4 * GPT2_PARAMS, "float16/bfloat16": 2 * GPT2_PARAMS,
                                            "int8": GPT2_PARAMS}
    meta = pipe.build(device="meta")
    assert sum(p.numel() for p in meta.parameters()) == GPT2_PARAMS
    assert {p.device.type for p in meta.parameters()} == {"meta"}
    # one decoding step (B=1, T=1) with 127 tokens cached: about one MAC per parameter
    assert result.report["macs_at"] == {"B": 1, "P": 127, "T": 1}
    assert result.per_token is not None and result.per_token.macs == result.report["macs_per_token"]
    assert 0.9 * GPT2_PARAMS < result.per_token.macs < 1.1 * GPT2_PARAMS


def _run_measured(args: list[str], cwd) -> tuple[subprocess.CompletedProcess, float, int]:
    """Run a command; its exit, wall seconds and peak RSS in bytes (of that child alone, via wait4).
    Its address space is capped, so a build that allocated for real would fail instead of swapping."""
    def cap():
        resource.setrlimit(resource.RLIMIT_AS, (16 * GiB, 16 * GiB))

    t0 = time.perf_counter()
    with open(cwd / "stdout", "w+") as out, open(cwd / "stderr", "w+") as err:
        proc = subprocess.Popen(args, stdout=out, stderr=err, cwd=ROOT, preexec_fn=cap,
                                env={**os.environ, "COLUMNS": "200"})
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
        out.seek(0), err.seek(0)
        done = subprocess.CompletedProcess(args, os.waitstatus_to_exitcode(status), out.read(), err.read())
    return done, wall, usage.ru_maxrss * 1024


@pytest.mark.timeout(300)
def test_build_no_weights_summarises_175b_in_seconds_allocating_nothing(tmp_path):
    proc, wall, peak = _run_measured([COMPOSER, "build", "--no-weights", str(GPT3), "-o", str(tmp_path)], tmp_path)
    assert proc.returncode == 0, proc.stderr
    text = proc.stdout
    assert "174,604,259,328" in text and "(174.6B)" in text
    assert "float32 650.5 GiB" in text and "float16/bfloat16 325.2 GiB" in text and "int8 162.6 GiB" in text
    assert re.search(r"MACs per token 179\.40G \(at B=1, T=1, with P=2047 tokens cached\)", text), text
    assert "MACs at B=1, P=2047, T=1" in text and "178.78G" in text     # the decoder's row
    assert "Traceback" not in proc.stdout + proc.stderr
    # nothing was allocated: the peak is the interpreter with torch imported, not 650 GiB (nor 1)
    assert peak < 3 * GiB, f"peak RSS {peak / GiB:.2f} GiB"
    folder = tmp_path / "gpt3_175b"
    report = json.loads((folder / "report.json").read_text())
    assert report["no_weights"] and report["params"] == GPT3_PARAMS
    assert report["param_bytes"]["float32"] == 4 * GPT3_PARAMS
    assert report["macs_per_token"] == report["macs"] > GPT3_PARAMS
    # the summary itself takes seconds; the wall time is mostly importing torch on a busy CPU
    assert report["timings"]["summary_s"] < 30, report["timings"]
    assert wall < 240
    md = (folder / "summary.md").read_text()
    assert "174,604,259,328 parameters" in md and "float32 650.5 GiB" in md and "**MACs per token:** 179.40G" in md
    assert (folder / "gpt3_175b.resolved.yaml").is_file()
    assert not list(folder.glob("*.onnx")) and not list(folder.glob("*.safetensors"))


def test_build_refuses_175b_at_the_largest_block(tmp_path, no_compile):
    r = invoke("build", GPT3, "-o", tmp_path)
    assert r.exit_code == 2, r.output
    assert not isinstance(r.exception, no_compile) and "Traceback" not in r.output
    m = re.search(r"gpt3_175b\.yaml:(\d+):(\d+): error\[E304\] blocks\.decoder: the parameters of this pipeline "
                  r"would not fit the memory limit", r.output)
    assert m, r.output
    line = GPT3.read_text().splitlines()[int(m.group(1)) - 1]
    assert "block: transformer_decoder" in line
    assert "174,604,259,328 parameters = 650.5 GiB" in r.output and "at most 16.0 GiB" in r.output
    assert "--no-weights" in r.output
    assert not (tmp_path / "gpt3_175b").exists()      # refused before any artifact


def test_python_build_refuses_175b_but_not_on_meta(no_compile):
    pipe = composer.load(GPT3)
    with pytest.raises(SpecError) as info:
        pipe.build()
    (d,) = info.value.diagnostics
    assert d.code == "E304" and d.path == "blocks.decoder" and d.loc.file == str(GPT3)
    with pytest.raises(no_compile):     # the meta device is never refused
        pipe.build(device="meta")


def test_a_raised_limit_accepts_175b(tmp_path, no_compile):
    limit = 700 * GiB
    composer.load(GPT3, max_param_bytes=limit).check_memory()
    r = invoke("build", GPT3, "--max-param-memory", limit, "-o", tmp_path, "--no-onnx")
    assert isinstance(r.exception, no_compile), r.output      # past the limit, on to compiling
    # `limits.max_param_bytes` in the spec does the same (a copy beside the BPE files it reads)
    spec = tmp_path / "gpt3_limit.yaml"
    (tmp_path / "data").symlink_to(ROOT / "pipelines" / "data")
    spec.write_text(GPT3.read_text() + f"limits: {{max_param_bytes: {limit}}}\n")
    composer.load(spec).check_memory()
    assert composer.load(spec, max_param_bytes=16 * GiB).graph.max_param_bytes == 16 * GiB


def test_the_limit_of_a_small_spec_is_checked_when_built(write_spec, tmp_path):
    spec = write_spec(TINY.format(limits="limits: {max_param_bytes: 64}"))      # 40 float32 params: 160 bytes
    assert invoke("validate", spec).exit_code == 0
    r = invoke("build", spec, "-o", tmp_path / "out", "--no-onnx")
    assert r.exit_code == 2 and f"{spec}:6:9: error[E304] blocks.head" in r.output, r.output
    assert "40 parameters = 0.0 GiB" in r.output
    r = invoke("build", spec, "-o", tmp_path / "out", "--no-onnx", "--max-param-memory", 1024)
    assert r.exit_code == 0, r.output
    r = invoke("build", spec, "-o", tmp_path / "meta", "--no-weights")
    assert r.exit_code == 0 and "float32 160 B" in r.output and "int8 40 B" in r.output, r.output
    assert "MACs per token" not in r.output     # not a decoder
    assert (tmp_path / "meta" / "tiny_limit" / "summary.md").is_file()


def test_no_weights_refuses_flags_that_need_weights(write_spec, tmp_path):
    spec = write_spec(TINY.format(limits=""))
    for flag in ("--onnx", "--save-weights"):
        r = invoke("build", spec, "--no-weights", flag, "-o", tmp_path)
        assert r.exit_code == 2 and flag in r.output, r.output
    with pytest.raises(ComposerError):
        build_artifacts(composer.load(spec), tmp_path, onnx=True, no_weights=True)


def test_meta_mac_count_runs_a_stack_of_equal_layers_once():
    graph = composer.analyze_file(GPT2)
    cls_name, counts, reused = summary._count(graph, None, "meta")
    layers = [t for t, _ in reused if re.search(r"\.decoder\.layers\.\d+$", t)]
    assert len(layers) == 11       # 12 equal layers: the first runs, the others reuse it
    macs = summary.macs_per_block(graph)
    # 12 layers of 12 d^2 MACs, the attention over 128 keys, and the tied LM head
    d = 768
    assert macs["decoder"] == 12 * (12 * d * d + 2 * 128 * d)
    assert macs["lm_head"] == 50257 * d

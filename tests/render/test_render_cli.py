"""`composer render`, `composer validate --render` and the SVG step of `composer build`."""

from __future__ import annotations

import subprocess
import xml.etree.ElementTree as ET

import pytest
from typer.testing import CliRunner

import composer
from composer.cli import app
from composer.render import dot as dot_mod
from tests.conftest import COMPOSER, ROOT
from tests.render.conftest import SPECS, needs_dot

CNN = ROOT / "pipelines" / "cnn_classifier.yaml"
INVALID = SPECS / "invalid.yaml"


@pytest.fixture
def run(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    runner = CliRunner()

    def invoke(*args: str):
        return runner.invoke(app, [str(a) for a in args])

    return invoke


@pytest.fixture
def no_dot(monkeypatch):
    monkeypatch.setattr(dot_mod.shutil, "which", lambda name, *a, **k: None if name == "dot" else "/usr/bin/" + name)


@needs_dot
def test_default_output_is_build_pipeline_svg(run, tmp_path):
    res = run("render", CNN)
    assert res.exit_code == 0, res.output
    out = tmp_path / "build" / "cnn_classifier" / "cnn_classifier.svg"
    assert "wrote build/cnn_classifier/cnn_classifier.svg" in res.output
    ET.parse(out)
    assert [p.name for p in out.parent.iterdir()] == ["cnn_classifier.svg"]  # no temp file left behind


@needs_dot
@pytest.mark.parametrize("name,magic", [("model.png", b"\x89PNG"), ("model.pdf", b"%PDF"), ("m.svg", b"<?xml")])
def test_format_from_suffix(run, tmp_path, name, magic):
    res = run("render", CNN, "-o", tmp_path / "out" / name, "--rankdir", "LR", "--depth", "1")
    assert res.exit_code == 0, res.output
    assert (tmp_path / "out" / name).read_bytes().startswith(magic)


def test_text_formats_and_stdout(run, tmp_path):
    res = run("render", CNN, "--format", "mermaid", "-o", "-")
    assert res.exit_code == 0 and res.stdout.startswith("%% cnn_classifier") and "flowchart TB" in res.stdout
    res = run("render", CNN, "--format", "dot")
    assert res.exit_code == 0
    assert (tmp_path / "build" / "cnn_classifier" / "cnn_classifier.dot").read_text().startswith("digraph composer {")
    res = run("render", CNN, "-o", "page.html")
    assert res.exit_code == 0 and (tmp_path / "page.html").read_text().startswith("<!DOCTYPE html>")
    res = run("render", CNN, "-f", "mermaid")
    assert res.exit_code == 0 and (tmp_path / "build" / "cnn_classifier" / "cnn_classifier.mmd").exists()


def test_invalid_spec_is_drawn_and_exits_2(run, tmp_path):
    res = run("render", INVALID, "-f", "dot", "-o", "bad.dot")
    assert res.exit_code == 2
    assert "error[E301]" in res.output and "2 errors: drawn in red in bad.dot" in res.output
    assert "Traceback" not in res.output
    assert 'color="#d32f2f"' in (tmp_path / "bad.dot").read_text()


def test_bad_arguments(run, tmp_path):
    assert run("render", CNN, "--format", "jpeg").exit_code == 2
    assert run("render", CNN, "--rankdir", "XY").exit_code == 2
    assert run("render", CNN, "--depth", "-1").exit_code == 2
    res = run("render", tmp_path / "missing.yaml", "-f", "dot")
    assert res.exit_code in (1, 2) and "Traceback" not in res.output


def test_missing_dot_exit_1_with_install_hint(run, no_dot, tmp_path):
    res = run("render", CNN)
    assert res.exit_code == 1
    assert "apt-get install graphviz" in res.output
    assert not (tmp_path / "build").exists()
    assert run("render", CNN, "-f", "html").exit_code == 0  # html still works, with its own layout


@needs_dot
def test_validate_render_draws_the_invalid_spec(run, tmp_path):
    res = run("validate", "--render", INVALID)
    assert res.exit_code == 2
    svg = tmp_path / "build" / "invalid" / "invalid.svg"
    assert "errors drawn in red in build/invalid/invalid.svg" in res.output
    assert "#d32f2f" in svg.read_text()
    # a valid spec is not drawn
    assert run("validate", "--render", CNN).exit_code == 0
    assert not (tmp_path / "build" / "cnn_classifier").exists()


def test_validate_render_without_dot_writes_html(run, no_dot, tmp_path):
    res = run("validate", "--render", INVALID)
    assert res.exit_code == 2
    assert (tmp_path / "build" / "invalid" / "invalid.html").exists()
    assert "HTML page" in res.output


@needs_dot
def test_build_writes_svg_and_summary_embeds_it(tmp_path):
    from composer import build as build_lib

    result = build_lib.build(composer.load(CNN), tmp_path, onnx=False)
    svg = result.artifacts["svg"]
    assert svg == tmp_path / "cnn_classifier" / "cnn_classifier.svg"
    text = svg.read_text()
    ET.fromstring(text)
    assert "MACs 3.54M" in text  # the MACs of the summary rows are reused
    assert "![cnn_classifier](cnn_classifier.svg)" in (tmp_path / "cnn_classifier" / "summary.md").read_text()


@needs_dot
def test_console_script(tmp_path):
    out = tmp_path / "x.svg"
    proc = subprocess.run([COMPOSER, "render", str(CNN), "-o", str(out)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    ET.parse(out)

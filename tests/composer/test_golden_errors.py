"""Golden tests: every bad spec in tests/golden/errors gives exactly the pinned diagnostics
(code, file:line:col, spec path, expected/found, hint); every spec in tests/golden/build_errors validates
and gives its pinned diagnostics when built for real (before anything is allocated). Regenerate
deliberately with COMPOSER_UPDATE_GOLDEN=1 and review the diff."""

from __future__ import annotations

import os
import re
import subprocess

import pytest

import composer
from composer import SpecError
from composer._yaml import load_text
from tests.conftest import COMPOSER, ROOT

GOLDEN = ROOT / "tests" / "golden" / "errors"
CASES = sorted(GOLDEN.glob("*.yaml"))

# The code and location each case must report first: the heart of the golden files.
FIRST = {
    "alias_bomb": ("E006", 6, 45), "channel_mismatch_add": ("E302", 7, 25), "custom_tag": ("E005", 5, 18),
    "cycle": ("E203", 5, 23), "dense_on_symbolic_features": ("E302", 6, 28), "dtype_mismatch": ("E303", 6, 25),
    "duplicate_key": ("E004", 6, 3), "empty_file": ("E002", 1, 1), "kind_mismatch_tokens_into_conv": ("E301", 5, 30),
    "kind_mismatch_vector_into_conv": ("E301", 6, 30), "many_errors_one_pass": ("E105", 5, 51),
    "missing_param": ("E104", 5, 10), "not_a_mapping": ("E003", 1, 1), "output_missing_block": ("E204", 7, 6),
    "param_bool_for_int": ("E105", 5, 62), "param_negative": ("E105", 5, 51),
    "param_string_for_int": ("E105", 5, 62), "param_zero": ("E105", 5, 62), "python_tag": ("E005", 5, 10),
    "self_alias": ("E006", 3, 9), "self_include": ("E401", 5, 17), "spatial_mismatch_add": ("E302", 7, 25),
    "too_deep": ("E007", 2, 70), "unknown_block_type": ("E102", 5, 18), "unknown_input_port": ("E202", 5, 38),
    "unknown_param": ("E103", 5, 54), "unknown_port": ("E202", 6, 26), "unknown_ref": ("E201", 5, 30),
    "unknown_top_level_key": ("E101", 1, 1), "yaml11_no": ("E105", 5, 46), "yaml11_on": ("E105", 5, 46),
    "yaml11_version_string": ("E105", 1, 11), "yaml_syntax": ("E001", 4, 1), "unused_block": ("W205", 6, 10),
    "labels_count_mismatch": ("E302", 2, 9), "labels_unknown_builtin": ("E105", 2, 9),
    "train_section": ("E103", 10, 39), "graph_input": ("E303", 7, 42),
}

# Specs that validate (and summarise, and build on the meta device) but are refused by a real build.
BUILD_GOLDEN = ROOT / "tests" / "golden" / "build_errors"
BUILD_CASES = sorted(BUILD_GOLDEN.glob("*.yaml"))
BUILD_FIRST = {"param_memory": ("E304", 6, 9)}


def diagnostics_of(rel):
    try:
        pipe = composer.load(rel)
        return pipe.warnings, False
    except SpecError as exc:
        return exc.diagnostics, True


@pytest.mark.parametrize("spec", CASES, ids=lambda p: p.stem)
def test_golden(spec, monkeypatch):
    monkeypatch.chdir(ROOT)
    rel = spec.relative_to(ROOT)
    diags, failed = diagnostics_of(rel)
    text = "\n".join(d.format() for d in diags) + "\n"
    expected_file = spec.with_suffix(".txt")
    if os.environ.get("COMPOSER_UPDATE_GOLDEN"):
        expected_file.write_text(text)
    assert text == expected_file.read_text()
    code, line, col = FIRST[spec.stem]
    first = diags[0]
    assert (first.code, first.loc.line, first.loc.col) == (code, line, col)
    assert first.loc.file == str(rel)
    assert failed == code.startswith("E")


def test_every_golden_case_is_pinned():
    assert {p.stem for p in CASES} == set(FIRST)
    assert {p.stem for p in BUILD_CASES} == set(BUILD_FIRST)


def _no_compile(*args, **kwargs):
    raise AssertionError("a refused build must not compile (nor allocate) anything")


@pytest.mark.parametrize("spec", BUILD_CASES, ids=lambda p: p.stem)
def test_golden_build(spec, monkeypatch):
    monkeypatch.chdir(ROOT)
    rel = spec.relative_to(ROOT)
    pipe = composer.load(rel)      # validates: the refusal belongs to the build
    assert not pipe.warnings
    pipe.build(device="meta")      # and a meta build allocates nothing, at any size
    monkeypatch.setattr(composer.pipeline, "compile_graph", _no_compile)
    with pytest.raises(SpecError) as info:
        pipe.build()
    diags = info.value.diagnostics
    text = "\n".join(d.format() for d in diags) + "\n"
    expected_file = spec.with_suffix(".txt")
    if os.environ.get("COMPOSER_UPDATE_GOLDEN"):
        expected_file.write_text(text)
    assert text == expected_file.read_text()
    code, line, col = BUILD_FIRST[spec.stem]
    first = diags[0]
    assert (first.code, first.loc.line, first.loc.col, first.loc.file) == (code, line, col, str(rel))


def test_build_cli_refuses_with_exit_code_2_and_no_traceback(monkeypatch, tmp_path):
    from typer.testing import CliRunner
    from composer.cli import app
    monkeypatch.chdir(ROOT)
    monkeypatch.setattr(composer.pipeline, "compile_graph", _no_compile)
    for spec in BUILD_CASES:
        rel = str(spec.relative_to(ROOT))
        ok = CliRunner().invoke(app, ["validate", rel])
        assert ok.exit_code == 0, ok.output
        r = CliRunner().invoke(app, ["build", rel, "-o", str(tmp_path)])
        assert r.exit_code == 2, r.output
        assert "Traceback" not in r.output and not isinstance(r.exception, AssertionError)
        code, line, col = BUILD_FIRST[spec.stem]
        assert f"{rel}:{line}:{col}: error[{code}]" in r.output
        assert not (tmp_path / "golden").exists()    # refused before any artifact folder


def test_cli_exit_code_2_and_no_traceback(monkeypatch):
    monkeypatch.chdir(ROOT)
    bad = [str(p.relative_to(ROOT)) for p in CASES if FIRST[p.stem][0].startswith("E")]
    proc = subprocess.run([COMPOSER, "validate", *bad], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stdout + proc.stderr
    for path in bad:  # every file is reported, with its own location
        assert re.search(re.escape(path) + r":\d+:\d+: error\[E\d{3}\]", proc.stderr), path


def test_cli_ok_exit_code_0(monkeypatch):
    monkeypatch.chdir(ROOT)
    proc = subprocess.run([COMPOSER, "validate", "pipelines/cnn_classifier.yaml", "tests/golden/errors/unused_block.yaml"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "pipelines/cnn_classifier.yaml: ok" in proc.stdout
    assert "W205" in proc.stderr


def test_file_larger_than_limit(tmp_path):
    big = tmp_path / "big.yaml"
    big.write_text("pipeline: big\n" + "# padding\n" * (17 * 1024 * 1024 // 10))
    with pytest.raises(SpecError) as info:
        composer.load(big)
    (d,) = info.value.diagnostics
    assert d.code == "E008" and d.loc.line == 1


@pytest.mark.timeout(60)
def test_alias_bomb_is_capped_not_expanded():
    with pytest.raises(SpecError) as info:
        composer.load(GOLDEN / "alias_bomb.yaml")
    assert info.value.codes() == ["E006"]


def test_deep_nesting_has_no_recursion_error():
    text = "pipeline: x\nblocks: " + "{a: " * 100_000 + "1" + "}" * 100_000 + "\n"
    with pytest.raises(SpecError) as info:
        load_text(text, "deep.yaml")
    assert info.value.diagnostics[0].code == "E007"


def test_nothing_runs_from_a_tag(tmp_path):
    marker = tmp_path / "pwned"
    spec = tmp_path / "tag.yaml"
    spec.write_text(f'pipeline: !!python/object/apply:os.system ["touch {marker}"]\n')
    with pytest.raises(SpecError):
        composer.load(spec)
    assert not marker.exists()

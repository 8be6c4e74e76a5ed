"""`series` inputs ([B, T, F]) and reading them from files: `composer run SPEC --input series=data.csv`
(a header row, one row per time step; the spec's `columns` pick and order the features,
`ignore_columns` leaves some out), `.npy` [T, F] arrays, the same through an exported .onnx
file, and every bad file as one clear error naming the file, the line and the column."""

from __future__ import annotations

import re
import subprocess

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

import composer
from composer import SpecError
from composer.cli import app
from composer.inputs import InputError, InputSpec, read_input, specs_from_pipeline
from tests.conftest import COMPOSER

runner = CliRunner()

SERIES = """\
pipeline: forecaster
seed: 0
dims: {{B: {{sizes: [1, 3]}}, T: {{sizes: [7, 50]}}}}
inputs:
  series: {{kind: series, shape: [B, T, 3]{extra}}}
blocks:
  head: {{block: dense, in: series, out_features: 2}}
outputs:
  y: head
"""
WITH_COLUMNS = ", columns: [temperature, humidity, load], ignore_columns: [time]"

# file order differs from the spec's `columns` order, and `time` is no feature
CSV = """\
time,load,temperature,humidity
2024-01-01T00:00,1.5,20.0,0.30
2024-01-01T01:00,1.7,21.5,0.35
2024-01-01T02:00,-0.25,19.0,0.5
2024-01-01T03:00,2,18.25,1e-1
"""
# the same numbers as [T, F] in the spec's order (temperature, humidity, load)
VALUES = np.array([[20.0, 0.30, 1.5], [21.5, 0.35, 1.7], [19.0, 0.5, -0.25], [18.25, 0.1, 2.0]], np.float32)


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


@pytest.fixture
def series_spec(write_spec):
    return write_spec(SERIES.format(extra=WITH_COLUMNS), "forecaster.yaml")


def reference(spec, x: np.ndarray) -> np.ndarray:
    """What the dense head computes, in plain torch, from the weights the spec builds (its seed)."""
    state = composer.load(spec).build().state_dict()
    return (torch.from_numpy(x) @ state["head.weight"].T + state["head.bias"]).numpy()


def run_saved(spec, file, tmp_path, *extra) -> np.ndarray:
    save = tmp_path / "out.npz"
    r = invoke("run", spec, "--input", f"series={file}", "--save", save, *extra)
    assert r.exit_code == 0, r.output
    return np.load(save)["y"]


def test_csv_runs_with_columns_in_spec_order(series_spec, tmp_path):
    data = tmp_path / "data.csv"
    data.write_text(CSV)
    before = data.read_bytes()
    y = run_saved(series_spec, data, tmp_path)
    assert y.shape == (1, 4, 2)
    np.testing.assert_allclose(y, reference(series_spec, VALUES[None]), rtol=1e-6, atol=1e-6)
    assert data.read_bytes() == before                  # reading changes nothing on disk


def test_read_input_gives_one_float_sequence(series_spec, tmp_path):
    (tmp_path / "d.csv").write_text("\ufeff" + CSV.replace("\n", "\r\n"))      # Excel: a BOM and CRLF lines
    spec = specs_from_pipeline(composer.load(series_spec))["series"]
    assert spec.columns == ("temperature", "humidity", "load") and spec.ignore_columns == ("time",)
    x = read_input(tmp_path / "d.csv", spec)
    assert x.shape == (1, 4, 3) and x.dtype == np.float32
    np.testing.assert_array_equal(x[0], VALUES)


def test_npy_of_one_sequence_and_a_batch(series_spec, tmp_path):
    np.save(tmp_path / "tf.npy", VALUES)                 # [T, F] is one sequence
    y = run_saved(series_spec, tmp_path / "tf.npy", tmp_path)
    np.testing.assert_allclose(y, reference(series_spec, VALUES[None]), rtol=1e-6, atol=1e-6)
    batch = np.random.default_rng(0).standard_normal((2, 5, 3)).astype(np.float32)
    np.save(tmp_path / "btf.npy", batch)                 # [B, T, F] as it is
    y = run_saved(series_spec, tmp_path / "btf.npy", tmp_path)
    np.testing.assert_allclose(y, reference(series_spec, batch), rtol=1e-6, atol=1e-6)


def test_without_columns_every_other_column_in_file_order(write_spec, tmp_path):
    spec = write_spec(SERIES.format(extra=", ignore_columns: [time]"))
    (tmp_path / "d.csv").write_text(CSV)
    y = run_saved(spec, tmp_path / "d.csv", tmp_path)
    in_file_order = VALUES[:, [2, 0, 1]]                 # load, temperature, humidity
    np.testing.assert_allclose(y, reference(spec, in_file_order[None]), rtol=1e-6, atol=1e-6)


def test_onnx_file_reads_columns_from_its_metadata(series_spec, tmp_path):
    model = tmp_path / "forecaster.onnx"
    r = invoke("export", series_spec, "-o", model)
    assert r.exit_code == 0, r.output
    import onnx

    from composer.inputs import specs_from_onnx
    spec = specs_from_onnx(onnx.load(str(model)))["series"]
    assert spec.kind == "series" and spec.columns == ("temperature", "humidity", "load")
    assert spec.ignore_columns == ("time",)
    (tmp_path / "d.csv").write_text(CSV)
    y = run_saved(model, tmp_path / "d.csv", tmp_path, "--device", "cpu")
    np.testing.assert_allclose(y, reference(series_spec, VALUES[None]), rtol=1e-5, atol=1e-5)
    (tmp_path / "bad.csv").write_text("time,load,Temperature,humidity\nx,1,2,3\n")
    r = invoke("run", model, "--input", f"series={tmp_path / 'bad.csv'}", "--device", "cpu")
    assert r.exit_code == 1 and "no column `temperature` (did you mean `Temperature`?)" in r.output


# ---- bad files: (file text or bytes, what the message says); {f} is the file's path ----------

HEADER = "time,load,temperature,humidity\n"
BAD = {
    "missing_column": (HEADER.replace("temperature", "temprature") + "t,1,2,3\n",
                       r"{f}:1: no column `temperature` \(did you mean `temprature`\?\) in the header; "
                       r"the file's columns are: time, load, temprature, humidity"),
    "ragged_row": (HEADER + "t,1,2,3\nt,1,2\n", r"{f}:3: the row has 3 cells, the header has 4"),
    "not_a_number": (HEADER + "t,1,2,3\nt,1,warm,3\n", r"{f}:3: column `temperature` \(column 3\): `warm` is not a "
                                                        r"number"),
    "missing_value": (HEADER + "t,1,2,3\n\nt,1,2,\n", r"{f}:4: column `humidity` \(column 4\): missing value"),
    "nan": (HEADER + "t,1,nan,3\n", r"{f}:2: column `temperature` \(column 3\): `nan` is not a finite number"),
    "infinity": (HEADER + "t,-inf,2,3\n", r"{f}:2: column `load` \(column 2\): `-inf` is not a finite number"),
    "extra_columns": ("time,load,temperature,humidity,wind,rain\nt,1,2,3,4,5\n",
                      r"{f}:1: the file has columns `wind`, `rain` that `series` does not take \(its features are: "
                      r"temperature, humidity, load\); add them to the input's `ignore_columns` \(not features\) "
                      r"or to its `columns`"),
    "empty_file": ("", r"{f}: the file is empty"),
    "blank_lines_only": ("\n\n  \n", r"{f}: the file is empty"),
    "header_only": (HEADER, r"{f}: the header \(line 1\) is followed by no data rows"),
    "not_utf8": (HEADER.encode() + b"t,1,2,3\nt\xe9,1,2,3\n", r"{f}:3: not UTF-8 text \(byte 0xe9 at column 2\)"),
    "binary_file": (b"\x93NUMPY\x01\x00v\x00{'descr': '<f4'}\xff\xfe", r"{f}:1: not UTF-8 text .*looks like a .npy "
                                                                       r"array"),
    "duplicate_header": ("time,load,temperature,load,humidity\nt,1,2,3,4\n",
                         r"{f}:1: the header names column `load` twice \(columns 2 and 4\)"),
    "no_header": ("1,2,3,4\n5,6,7,8\n", r"{f}:1: the first row holds numbers \(1, 2, 3, 4\), not column names"),
    "unnamed_column": (",load,temperature,humidity\n0,1,2,3\n", r"{f}:1: column 1 of the header has no name"),
    "nul_byte": (HEADER + "t,1,2\x00,3\n", r"{f}:2: column `temperature` \(column 3\): `2\\x00` is not a number"),
}


def _write(path, content):
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_csv_is_one_clear_error(series_spec, tmp_path, case):
    content, message = BAD[case]
    path = tmp_path / f"{case}.csv"
    _write(path, content)
    r = invoke("run", series_spec, "--input", f"series={path}")
    assert r.exit_code == 1, r.output
    assert r.exception is None or isinstance(r.exception, SystemExit), r.exception   # handled, no traceback
    assert "Traceback" not in r.output
    assert re.search(message.format(f=re.escape(str(path))), r.output), r.output
    assert f"input `series`: {path}" in r.output


def test_feature_count_without_columns(write_spec, tmp_path):
    spec = write_spec(SERIES.format(extra=""))
    (tmp_path / "d.csv").write_text(CSV)
    with pytest.raises(InputError, match=r"d.csv:1: 4 feature columns \(time, load, temperature, humidity\), but "
                                         r"`series` takes F = 3 \(\[B, T, 3\]\); list the 3 features in the input's "
                                         r"`columns`, or add the others to its `ignore_columns`"):
        read_input(tmp_path / "d.csv", specs_from_pipeline(composer.load(spec))["series"])


def test_float16_range_and_non_float_dtypes(tmp_path):
    (tmp_path / "d.csv").write_text("a,b\n1,2\n3,1e6\n")
    half = InputSpec("s", ("B", "T", 2), "float16", "series")
    with pytest.raises(InputError, match=r"d.csv:3: column `b` \(column 2\): 1e\+06 is out of the range of float16"):
        read_input(tmp_path / "d.csv", half)
    ints = InputSpec("s", ("B", "T", 2), "int64", "series")
    with pytest.raises(InputError, match=r"CSV cells are read as floats, and `s` has dtype int64"):
        read_input(tmp_path / "d.csv", ints)
    image = InputSpec("x", ("B", 3, "H", "W"), "float32", "image")
    with pytest.raises(InputError, match=r"cannot read .csv files \(CSV files are read for `series` inputs only\)"):
        read_input(tmp_path / "d.csv", image)


def test_series_of_another_length_is_checked_by_type(series_spec, tmp_path):
    np.save(tmp_path / "wide.npy", np.zeros((4, 5), np.float32))
    r = invoke("run", series_spec, "--input", f"series={tmp_path / 'wide.npy'}")
    assert r.exit_code == 1 and "axis 2 must be 3, found 5" in r.output


def test_bad_csv_from_the_installed_command_has_no_traceback(series_spec, tmp_path):
    (tmp_path / "d.csv").write_text(HEADER + "t,1,2,3\nt,1,,3\n")
    done = subprocess.run([COMPOSER, "run", str(series_spec), "--input", f"series={tmp_path / 'd.csv'}"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 1, done.stderr
    assert "d.csv:3: column `temperature` (column 3): missing value" in done.stderr
    assert "Traceback" not in done.stderr + done.stdout


# ---- the spec: `columns` and `ignore_columns` are checked when it loads ---------------------


def spec_errors(write_spec, extra: str, shape: str = "[B, T, 3]", kind: str = "series"):
    text = SERIES.format(extra=extra).replace("kind: series, shape: [B, T, 3]", f"kind: {kind}, shape: {shape}")
    path = write_spec(text, "bad.yaml")
    with pytest.raises(SpecError) as info:
        composer.load(path)
    return info.value.errors


def test_spec_columns_count_must_match_a_fixed_f(write_spec):
    (d,) = spec_errors(write_spec, ", columns: [temperature, humidity]")
    assert d.code == "E302" and d.path == "inputs.series.columns" and (d.loc.line, d.loc.col) == (5, 53)
    assert d.message == "input `series` has 2 columns, but its features dim F is 3"
    assert d.related[0][0] == "the shape is declared"


def test_spec_duplicate_and_overlapping_columns(write_spec):
    errors = spec_errors(write_spec, ", columns: [a, b, a], ignore_columns: [t, b, t]")
    by_path = {d.path: d for d in errors}
    assert by_path["inputs.series.columns.2"].message == "column `a` is listed twice in `columns`"
    assert by_path["inputs.series.columns.2"].related[0][0] == "first listed"
    assert by_path["inputs.series.ignore_columns.2"].message == "column `t` is listed twice in `ignore_columns`"
    assert by_path["inputs.series.ignore_columns.1"].message == ("column `b` is both a feature (`columns`) and in "
                                                                "`ignore_columns`")
    assert all(d.code == "E105" for d in errors)


def test_spec_columns_only_for_series(write_spec):
    (d,) = spec_errors(write_spec, ", columns: [a, b, c]", kind="sequence")
    assert d.code == "E105" and d.path == "inputs.series.columns"
    assert d.message == "`columns` applies to `series` inputs only, and input `series` is `sequence`"
    assert "kind: series" in d.hint


def test_spec_series_is_rank_3_and_names_are_not_empty(write_spec):
    errors = spec_errors(write_spec, ', columns: [""]', shape="[B, 3]")
    assert {(d.code, d.path) for d in errors} >= {("E302", "inputs.series.shape"),
                                                   ("E105", "inputs.series.columns.0")}


def test_schema_has_the_new_keys():
    from composer.schema import spec_schema
    decl = spec_schema()["$defs"]["InputDecl"]["properties"]
    assert "columns" in decl and "ignore_columns" in decl

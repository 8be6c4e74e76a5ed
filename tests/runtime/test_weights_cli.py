"""`composer weights` (the plan as a table, `--save`) and the checkpoint options of build/export/run."""

from __future__ import annotations

import json

import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from composer.cli import app
from tests.runtime.test_weights_rules import MLP, _pyg_style

runner = CliRunner()
RULES = ["--rename", r"^convs\.0\.(lin\.)?=conv1.", "--rename", r"^convs\.1\.(lin\.)?=conv2.",
         "--ignore", "^similarity_"]


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def _setup(tmp_path):
    spec = tmp_path / "mlp.yaml"
    spec.write_text(MLP)
    path, sd = _pyg_style(tmp_path)
    return spec, path, sd


def test_weights_prints_the_plan_and_writes_nothing(tmp_path):
    spec, path, _ = _setup(tmp_path)
    before = sorted(p.name for p in tmp_path.iterdir())
    r = invoke("weights", spec, path, *RULES)
    assert r.exit_code == 0, r.output
    lines = r.output.splitlines()
    assert lines[0].split() == ["pipeline", "key", "file", "key", "shape", "how"]
    row = next(line for line in lines if line.startswith("conv2.weight"))
    assert row.split()[:4] == ["conv2.weight", "convs.1.lin.weight", "[3,", "16]"]
    assert "renamed: --rename '^convs\\.1\\.(lin\\.)?=conv2.'" in row
    assert "file keys ignored (1): similarity_head.weight" in r.output
    assert "loaded 4 tensors from" in r.output and "(4 renamed)" in r.output
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_weights_save_writes_pipeline_keys_for_an_exact_next_load(tmp_path):
    spec, path, sd = _setup(tmp_path)
    out = tmp_path / "mapped.safetensors"
    r = invoke("weights", spec, path, *RULES, "--save", out)
    assert r.exit_code == 0, r.output
    saved = load_file(str(out))
    assert set(saved) == {"conv1.weight", "conv1.bias", "conv2.weight", "conv2.bias"}
    assert torch.equal(saved["conv2.weight"], sd["convs.1.lin.weight"])
    r = invoke("weights", spec, out, "--json")
    assert r.exit_code == 0, r.output
    plan = json.loads(r.output)
    assert plan["strategy"] == "exact" and {e["how"] for e in plan["entries"]} == {"exact"}


def test_a_failing_plan_exits_1_and_keeps_an_existing_save_target(tmp_path):
    spec, path, _ = _setup(tmp_path)
    out = tmp_path / "mapped.safetensors"
    out.write_bytes(b"previous contents")
    r = invoke("weights", spec, path, "--save", out)      # no rules: the names do not fit
    assert r.exit_code == 1 and "Traceback" not in r.output
    assert "does not fit pipeline `node_mlp`" in r.output and "convs.0.lin.weight" in r.output
    assert out.read_bytes() == b"previous contents"


def test_bad_options_are_errors_naming_them(tmp_path):
    spec, path, _ = _setup(tmp_path)
    for args, message in [
        (["--rename", "(=x"], "rename rule --rename '(=x' (`(` → `x`): the regex does not compile"),
        (["--rename", "noequals"], "--rename 'noequals': expected REGEX=REPLACEMENT"),
        (["--ignore", "[x"], "ignore rule --ignore '[x' (`[x`): the regex does not compile"),
        (["--save", tmp_path / "out.pt"], "the mapped weights are written as .safetensors"),
    ]:
        r = invoke("weights", spec, path, *args)
        assert r.exit_code == 1, (args, r.output)
        assert message in r.output and "Traceback" not in r.output, r.output
    r = invoke("weights", spec, tmp_path / "nowhere")
    assert r.exit_code == 1 and "does not exist" in r.output


def test_build_and_run_take_the_checkpoint_options(tmp_path):
    spec, path, sd = _setup(tmp_path)
    x = tmp_path / "x.npy"
    import numpy as np
    np.save(x, np.ones((2, 8), dtype=np.float32))
    r = invoke("run", spec, "--weights", path, *RULES, "--input", f"x={x}", "--save", tmp_path / "y.npz")
    assert r.exit_code == 0, r.output
    assert "loaded 4 tensors" in r.output
    expected = torch.relu(torch.ones(2, 8) @ sd["convs.0.lin.weight"].T + sd["convs.0.bias"]) \
        @ sd["convs.1.lin.weight"].T + sd["convs.1.bias"]
    got = np.load(tmp_path / "y.npz")["y"]
    np.testing.assert_allclose(got, expected.numpy(), rtol=1e-5, atol=1e-6)
    r = invoke("build", spec, "--weights", path, *RULES[:2], "-o", tmp_path / "build", "--no-onnx")
    assert r.exit_code == 1 and "produce keys the pipeline lacks" not in r.output
    assert "does not fit" in r.output and "Traceback" not in r.output
    r = invoke("build", spec, "--weights", path, *RULES, "-o", tmp_path / "build", "--no-onnx")
    assert r.exit_code == 0, r.output
    report = json.loads((tmp_path / "build" / "node_mlp" / "report.json").read_text())
    assert report["weights"]["loaded"]["renamed"] == 4
    r = invoke("build", spec, *RULES, "-o", tmp_path / "build", "--no-onnx")
    assert r.exit_code == 1 and "give --weights, or a spec with a `weights:` section" in r.output


def test_no_strict_and_rules_extend_the_specs_own_weights(tmp_path):
    from safetensors.torch import save_file
    spec, _, sd = _setup(tmp_path)
    path = tmp_path / "gnn.safetensors"      # sorted keys: no mapping by order to fall back on
    save_file(sd, str(path))
    spec.write_text(MLP + f"weights:\n  file: {path.name}\n  ignore: ['^similarity_']\n"
                          "  rename: [['^convs\\.0\\.(lin\\.)?', 'conv1.']]\n")
    r = invoke("weights", spec, path, "--rename", r"^convs\.0\.(lin\.)?=conv1.", "--ignore", "^(similarity_|convs\\.1)")
    assert r.exit_code == 1 and "2 pipeline tensors have no match" in r.output
    r = invoke("export", spec, "-o", tmp_path / "m.onnx")     # the spec's rules leave conv2 unmatched: strict fails
    assert r.exit_code == 1 and "conv2.weight" in r.output and not (tmp_path / "m.onnx").exists()
    r = invoke("export", spec, "-o", tmp_path / "m.onnx", "--no-strict")
    assert r.exit_code == 0, r.output
    assert "initial weights kept for conv2" in r.output and (tmp_path / "m.onnx").is_file()
    r = invoke("export", spec, "-o", tmp_path / "m2.onnx", "--rename", r"^convs\.1\.(lin\.)?=conv2.")
    assert r.exit_code == 0, r.output
    assert "loaded 4 tensors" in r.output

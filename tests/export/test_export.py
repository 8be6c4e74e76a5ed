"""composer.export: verification, determinism, atomic writes, external data, failures."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import numpy as np
import onnx
import pytest
import torch

import composer
from composer.errors import ComposerError
from composer.runtime import Session

export_mod = sys.modules["composer.export"]   # `composer.export` is the function
export = export_mod.export
ExportError = export_mod.ExportError


def _leftovers(folder):
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def test_export_report_and_parity(tiny_pipe, tmp_path):
    target = tmp_path / "out" / "tiny.onnx"            # the folder is created
    rep = export(tiny_pipe, target)
    assert target.is_file()
    assert rep["exporter"] == "dynamo" and rep["checker"] == "full" and rep["opset"] >= 18
    assert rep["inputs"] == [{"name": "image", "dtype": "float32", "shape": ["B", 3, "H", "W"]}]
    assert [o["name"] for o in rep["outputs"]] == ["logits", "probs"]
    assert rep["outputs"][0]["shape"] == ["B", 5]
    ver = rep["verification"]
    assert ver["provider"] == "CPUExecutionProvider" and ver["passed"]
    assert [r["sizes"] for r in ver["runs"]] == [{"B": 1, "H": 16, "W": 16}, {"B": 3, "H": 24, "W": 24}]
    assert ver["max_abs"] < 1e-4
    for run in ver["runs"]:
        assert set(run["outputs"]) == {"logits", "probs"}
        assert run["outputs"]["logits"]["shape"][0] == run["sizes"]["B"]
    assert rep["dims"]["B"]["trace"] > 1                     # never traced at 1 (torch.export fixes it)
    assert rep["file_bytes"] == target.stat().st_size
    assert _leftovers(target.parent) == []
    meta = {p.key: p.value for p in onnx.load(str(target)).metadata_props}
    assert meta["composer.pipeline"] == "tiny_cnn"
    # and it runs at a size neither traced nor verified
    sess = Session(target, device="cpu")
    out = sess.run({"image": np.zeros((2, 3, 32, 40), np.float32)})
    assert out["logits"].shape == (2, 5)


def test_same_spec_seed_gives_identical_bytes(tiny_pipe, tiny_spec, tmp_path):
    a = export(tiny_pipe, tmp_path / "a.onnx")
    b = export(composer.load(tiny_spec), tmp_path / "b.onnx")
    assert (tmp_path / "a.onnx").read_bytes() == (tmp_path / "b.onnx").read_bytes()
    assert a["sha256"] == b["sha256"]
    c = export(tiny_pipe, tmp_path / "c.onnx", seed=1)
    assert c["sha256"] != a["sha256"]


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_identical_bytes_across_processes(tiny_spec, tmp_path):
    code = textwrap.dedent(f"""
        import composer
        composer.export(composer.load({str(tiny_spec)!r}), {str(tmp_path / 'p.onnx')!r}, verify=False)
    """)
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, timeout=300)
    export(composer.load(tiny_spec), tmp_path / "q.onnx", verify=False)
    assert (tmp_path / "p.onnx").read_bytes() == (tmp_path / "q.onnx").read_bytes()


def test_fp16_halves_the_weights(tiny_pipe, tmp_path):
    full = export(tiny_pipe, tmp_path / "f32.onnx")
    half = export(tiny_pipe, tmp_path / "f16.onnx", fp16=True)
    assert half["fp16"] and half["verification"]["passed"]
    assert half["verification"]["atol"] > full["verification"]["atol"]
    assert half["inputs"][0]["dtype"] == "float32" and half["outputs"][0]["dtype"] == "float32"
    types = {t.data_type for t in onnx.load(str(tmp_path / "f16.onnx")).graph.initializer if len(t.dims) > 1}
    assert types == {onnx.TensorProto.FLOAT16}


def test_static_fixes_every_dim(tiny_pipe, tmp_path):
    rep = export(tiny_pipe, tmp_path / "s.onnx", static=True)
    assert rep["inputs"][0]["shape"] == [1, 3, 16, 16]
    assert [r["sizes"] for r in rep["verification"]["runs"]] == [{"B": 1, "H": 16, "W": 16}]


def test_built_model_with_weights(tiny_pipe, tmp_path):
    model = tiny_pipe.build(seed=3)
    with pytest.raises(ExportError, match="pipeline="):  # a plain module has no input types
        export(torch.nn.Linear(2, 2), tmp_path / "m.onnx")
    model.train()
    rep = export(model, tmp_path / "m.onnx")  # a built model knows its pipeline
    assert rep["verification"]["passed"]
    assert model.training, "export restores the module's mode"
    composer.save_weights(model, tmp_path / "w.safetensors")
    rep2 = export(tiny_pipe, tmp_path / "w.onnx", weights=tmp_path / "w.safetensors")
    assert rep2["weights"]["strategy"] == "exact"
    assert rep2["sha256"] == rep["sha256"]


def test_mismatch_fails_and_keeps_the_earlier_file(tiny_pipe, tmp_path, monkeypatch):
    target = tmp_path / "model.onnx"
    target.write_bytes(b"earlier export")
    real_run = Session.run

    def off_by_one(self, inputs, output_names=None):
        out = real_run(self, inputs, output_names)
        return {k: v + 1.0 for k, v in out.items()}

    monkeypatch.setattr(Session, "run", off_by_one)
    with pytest.raises(ExportError) as exc:
        export(tiny_pipe, target)
    text = str(exc.value)
    assert "does not match torch" in text and "logits at B=1" in text and "max abs diff 1" in text
    assert exc.value.exit_code == 1
    assert target.read_bytes() == b"earlier export"
    assert _leftovers(tmp_path) == []


def test_exporter_failure_is_a_clear_error(tiny_pipe, tmp_path, monkeypatch):
    def boom(*a, **k):
        raise RuntimeError("Could not guard on data-dependent expression u0 > 0\nmore detail")

    monkeypatch.setattr(torch.onnx, "export", boom)
    with pytest.raises(ExportError, match="dynamo ONNX exporter failed: RuntimeError: Could not guard"):
        export(tiny_pipe, tmp_path / "out" / "x.onnx")
    assert list((tmp_path / "out").iterdir()) == []


def test_legacy_exporter_only_when_a_block_asks(tiny_pipe, tmp_path, monkeypatch):
    monkeypatch.setattr(export_mod, "_legacy_blocks", lambda pipe: [("conv", "test: needs the legacy exporter")])
    rep = export(tiny_pipe, tmp_path / "legacy.onnx")
    assert rep["exporter"] == "legacy" and "conv: test" in rep["exporter_reason"]
    assert rep["verification"]["passed"]
    assert rep["inputs"][0]["shape"] == ["B", 3, "H", "W"]


def test_external_data_beside_the_model(root, tmp_path, monkeypatch):
    tmp_path = tmp_path / "out"
    pipe = composer.load(root / "pipelines" / "cnn_classifier.yaml")   # tensors over 1 KiB go external
    rep = export(pipe, tmp_path / "big.onnx", external_data_threshold=0)
    assert rep["external_data"] == "big.onnx.data"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["big.onnx", "big.onnx.data"]
    model = onnx.load(str(tmp_path / "big.onnx"), load_external_data=False)
    locations = {kv.value for t in model.graph.initializer for kv in t.external_data if kv.key == "location"}
    assert locations == {"big.onnx.data"}            # a plain name: no folder, no ".."
    monkeypatch.chdir("/")
    out = Session(tmp_path / "big.onnx", device="cpu").run({"image": np.zeros((1, 3, 16, 16), np.float32)})
    assert out["probs"].shape == (1, 10)


def test_non_tensor_output_is_an_error(write_spec, tmp_path):
    spec = write_spec(textwrap.dedent("""\
        pipeline: feats
        dims:
          B: {sizes: [1, 2], example: 1}
          H: {multiple_of: 32, sizes: [32, 64], example: 32}
          W: {multiple_of: 32, sizes: [32, 64], example: 32}
        inputs:
          image: {kind: image, shape: [B, 3, H, W]}
        blocks:
          backbone: {block: resnet, in: image, depth: 18}
        outputs:
          pooled: backbone.pooled
          features: backbone.features
        """))
    with pytest.raises(ExportError, match=r"output `features` is a dict of 4 tensors \(c2, c3, c4, c5\), not a tensor"):
        export(composer.load(spec), tmp_path / "f.onnx")
    assert not (tmp_path / "f.onnx").exists()


def test_unwritable_output_folder(tiny_pipe, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(ExportError, match="cannot create output folder .*file"):
        export(tiny_pipe, blocker / "model.onnx")
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        if not os.access(ro, os.W_OK):  # as root, permissions stop nothing: the case above covers it
            with pytest.raises(ExportError, match="cannot write to output folder"):
                export(tiny_pipe, ro / "model.onnx")
    finally:
        ro.chmod(0o700)


def test_target_is_a_folder(tiny_pipe, tmp_path):
    (tmp_path / "m.onnx").mkdir()
    with pytest.raises(ExportError, match="it is a folder"):
        export(tiny_pipe, tmp_path / "m.onnx")


def test_compare_semantics():
    cmp = export_mod.compare
    ref = np.array([1.0, -2.0, 0.0], np.float32)
    assert cmp(ref + 5e-5, ref, 1e-4, 1e-3)["ok"]
    bad = cmp(ref + np.float32(0.01), ref, 1e-4, 1e-3)
    assert not bad["ok"] and bad["max_abs"] == pytest.approx(0.01, rel=1e-3)
    assert not cmp(np.array([np.nan]), np.array([1.0]), 1e-4, 1e-3)["ok"]
    assert not cmp(np.zeros((2, 3)), np.zeros((3, 2)), 1e-4, 1e-3)["ok"]
    # a huge-magnitude output scales atol: 1e9 logits agree to fp32 rounding
    big = np.array([1e9, 3.0], np.float64)
    assert cmp(big + np.array([50.0, 20.0]), big, 1e-4, 1e-3)["ok"]


def test_not_a_pipeline(tmp_path):
    with pytest.raises(ComposerError, match="takes a Pipeline"):
        export("spec.yaml", tmp_path / "x.onnx")


def test_an_output_named_like_an_inner_value_keeps_the_graph_in_ssa_form(tmp_path):
    """The exporter names the lookup of an embedding `embedding`; an output of that name must
    not make two values of one name (onnx.checker rejects that)."""
    pipe = composer.loads(textwrap.dedent("""\
        pipeline: named
        dims:
          B: {sizes: [1, 2]}
          T: {sizes: [4, 7]}
        inputs:
          tokens: {kind: tokens, shape: [B, T], dtype: int64}
        blocks:
          emb: {block: embedding, in: {tokens: tokens}, vocab_size: 30, dim: 8, max_positions: 16}
          pool: {block: pooling, in: emb.sequence, mode: mean}
        outputs:
          embedding: pool
        """))
    path = tmp_path / "named.onnx"
    rep = composer.export(pipe, path)
    assert rep["verification"]["passed"]
    model = onnx.load(str(path))
    onnx.checker.check_model(model, full_check=True)
    produced = [o for node in model.graph.node for o in node.output]
    assert produced.count("embedding") == 1 and [o.name for o in model.graph.output] == ["embedding"]


def test_computations_on_weights_alone_are_folded_into_the_file():
    """What a graph computes from its initializers only (here a transposed, scaled 200x200 matrix,
    over the exporter's own 8192-element folding limit) is computed once at export; values stay."""
    import importlib

    from onnx import helper, numpy_helper

    export_mod = importlib.import_module("composer.export")
    w = np.random.default_rng(0).standard_normal((200, 200)).astype(np.float32)
    nodes = [helper.make_node("Transpose", ["w"], ["wt"], perm=[1, 0]),
             helper.make_node("Mul", ["wt", "two"], ["w2"]),
             helper.make_node("MatMul", ["x", "w2"], ["y"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["B", 200])],
                              [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, ["B", 200])],
                              [numpy_helper.from_array(w, "w"), numpy_helper.from_array(np.float32(2.0), "two")])
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=10)
    before = onnx.load_from_string(proto.SerializeToString())
    assert export_mod._fold_weights(proto) == 2
    assert [n.op_type for n in proto.graph.node] == ["MatMul"]
    assert [i.name for i in proto.graph.initializer] == ["w2"]
    x = np.random.default_rng(1).standard_normal((3, 200)).astype(np.float32)
    import onnxruntime as ort
    got = [ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
           for m in (before, proto)]
    assert np.array_equal(got[0], got[1])

"""`composer export`, `composer run` and the export step of `composer build`, in process."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from composer.cli import app

runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def test_export_command(tiny_spec, tmp_path):
    target = tmp_path / "out" / "m.onnx"
    r = invoke("export", tiny_spec, "-o", target, "--report", tmp_path / "out" / "r.json")
    assert r.exit_code == 0, r.output
    assert target.is_file() and "verified: onnxruntime matches torch" in r.output
    assert "image [B, 3, H, W] float32" in r.output and "B=3, H=24, W=24" in r.output
    rep = json.loads((tmp_path / "out" / "r.json").read_text())
    assert rep["verification"]["passed"]


def test_export_bad_spec_exits_2(write_spec, tmp_path):
    spec = write_spec("pipeline: x\ninputs: {a: {kind: vector, shape: [B, 4]}}\nblocks: {d: {block: dense, in: a}}\n"
                      "outputs: {y: d}\n", "bad.yaml")
    r = invoke("export", spec, "-o", tmp_path / "x.onnx")
    assert r.exit_code == 2 and "out_features" in r.output
    assert not (tmp_path / "x.onnx").exists()


def test_export_unwritable_folder_exits_1(tiny_spec, tmp_path):
    (tmp_path / "f").write_text("a file")
    r = invoke("export", tiny_spec, "-o", tmp_path / "f" / "m.onnx")
    assert r.exit_code == 1 and "cannot create output folder" in r.output and "Traceback" not in r.output


def test_run_onnx_file(tiny_onnx, tmp_path):
    x = np.random.default_rng(0).standard_normal((2, 3, 16, 16)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    r = invoke("run", tiny_onnx, "--input", f"image={tmp_path / 'x.npy'}", "--device", "cpu", "--top-k", "2",
               "--save", tmp_path / "o.npz")
    assert r.exit_code == 0, r.output
    assert "logits  [2, 5] float32" in r.output and "[1] top-2" in r.output
    saved = np.load(tmp_path / "o.npz")
    assert saved["probs"].shape == (2, 5)


def test_run_spec_torch_and_onnx_agree(tiny_spec, tmp_path):
    x = np.random.default_rng(1).standard_normal((1, 3, 16, 16)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    outs = {}
    for backend in ("torch", "onnx"):
        save = tmp_path / f"{backend}.safetensors"
        r = invoke("run", tiny_spec, "-i", f"image={tmp_path / 'x.npy'}", "--backend", backend, "--save", save)
        assert r.exit_code == 0, r.output
        from safetensors.numpy import load_file
        outs[backend] = load_file(str(save))
    np.testing.assert_allclose(outs["torch"]["logits"], outs["onnx"]["logits"], atol=1e-5)


def test_run_image_file(tiny_spec, tmp_path):
    from PIL import Image
    Image.fromarray(np.full((24, 32, 3), 128, np.uint8)).save(tmp_path / "cat.jpg")
    r = invoke("run", tiny_spec, "--input", f"image={tmp_path / 'cat.jpg'}")
    assert r.exit_code == 0, r.output
    assert "logits  [1, 5]" in r.output and "top-5" in r.output


@pytest.mark.parametrize("args, message", [
    (["--input", "image={npy_bad}"], "input `image` from .*bad.npy has shape \\[1, 3, 15, 16\\]"),
    (["--input", "image={npy_f64}"], "has dtype float64, expected float32"),
    ([], "missing input `image`"),
    (["--input", "image={npy_good}", "--device", "cuda"], "device 'cuda' is not usable here"),
    (["--input", "image={npy_good}", "--device", "tensorrt"], "device 'tensorrt' is not usable here"),
    (["--input", "image={npy_good}", "--device", "quantum"], "unknown device 'quantum'"),
    (["--input", "image={npy_good}", "--backend", "torch"], "runs with --backend onnx only"),
])
def test_run_errors(tiny_onnx, tmp_path, args, message):
    import re
    if torch.cuda.is_available() and "cuda" in " ".join(args):
        pytest.skip("a GPU is present")
    np.save(tmp_path / "bad.npy", np.zeros((1, 3, 15, 16), np.float32))
    np.save(tmp_path / "f64.npy", np.zeros((1, 3, 16, 16), np.float64))
    np.save(tmp_path / "good.npy", np.zeros((1, 3, 16, 16), np.float32))
    files = {"npy_bad": tmp_path / "bad.npy", "npy_f64": tmp_path / "f64.npy", "npy_good": tmp_path / "good.npy"}
    r = invoke("run", tiny_onnx, *[a.format(**files) for a in args])
    assert r.exit_code == 1, r.output
    assert re.search(message, r.output), r.output
    assert "Traceback" not in r.output


def test_run_corrupted_onnx(tmp_path):
    (tmp_path / "m.onnx").write_bytes(b"truncated")
    r = invoke("run", tmp_path / "m.onnx", "--random", "--device", "cpu")
    assert r.exit_code == 1 and "m.onnx" in r.output and "corrupted or truncated" in r.output


def test_build_exports_and_saves_weights(tiny_spec, tmp_path):
    r = invoke("build", tiny_spec, "-o", tmp_path / "b", "--save-weights")
    assert r.exit_code == 0, r.output
    folder = tmp_path / "b" / "tiny_cnn"
    assert (folder / "tiny_cnn.onnx").is_file() and (folder / "tiny_cnn.safetensors").is_file()
    rep = json.loads((folder / "report.json").read_text())
    assert rep["export"]["verification"]["passed"] and rep["weights"]["saved"] == "tiny_cnn.safetensors"
    # and the saved weights load back, by exact keys
    r = invoke("build", tiny_spec, "-o", tmp_path / "c", "--weights", folder / "tiny_cnn.safetensors")
    assert r.exit_code == 0, r.output
    rep2 = json.loads((tmp_path / "c" / "tiny_cnn" / "report.json").read_text())
    assert rep2["weights"]["loaded"]["strategy"] == "exact"
    assert rep2["export"]["sha256"] == rep["export"]["sha256"]


def test_build_with_weights_for_another_model(tiny_spec, tmp_path, root):
    r = invoke("build", root / "pipelines" / "cnn_classifier.yaml", "-o", tmp_path / "b", "--save-weights", "--no-onnx")
    assert r.exit_code == 0, r.output
    w = tmp_path / "b" / "cnn_classifier" / "cnn_classifier.safetensors"
    r = invoke("build", tiny_spec, "-o", tmp_path / "c", "--weights", w)
    assert r.exit_code == 1 and "does not fit pipeline `tiny_cnn`" in r.output
    assert not (tmp_path / "c" / "tiny_cnn" / "tiny_cnn.onnx").exists()


def test_run_structured_output_with_torch(write_spec):
    spec = write_spec(
        "pipeline: feats\n"
        "dims:\n  B: {sizes: [1, 2], example: 1}\n"
        "  H: {multiple_of: 32, sizes: [32, 64], example: 32}\n  W: {multiple_of: 32, sizes: [32, 64], example: 32}\n"
        "inputs:\n  image: {kind: image, shape: [B, 3, H, W]}\n"
        "blocks:\n  backbone: {block: resnet, in: image, depth: 18}\n"
        "outputs:\n  pooled: backbone.pooled\n  features: backbone.features\n", "feats.yaml")
    r = invoke("run", spec, "--random")
    assert r.exit_code == 0, r.output
    assert "pooled  [1, 512]" in r.output and "features.c5  [1, 512, 1, 1]" in r.output

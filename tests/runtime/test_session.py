"""composer.runtime.Session: explicit providers, checked devices, clear errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from composer.errors import ComposerError
from composer.runtime import Session, SessionError, provider_chain

NO_CUDA = not torch.cuda.is_available()
X = {"image": np.zeros((2, 3, 16, 16), np.float32)}


def test_cpu_session(tiny_onnx):
    sess = Session(tiny_onnx, device="cpu", graph_optimization="basic", threads=1)
    assert sess.providers == ["CPUExecutionProvider"] and sess.device == "cpu"
    assert sess.input_names == ["image"] and sess.output_names == ["logits", "probs"]
    out = sess.run(X)
    assert out["logits"].shape == (2, 5)
    np.testing.assert_allclose(out["probs"].sum(axis=1), 1.0, rtol=1e-5)
    assert sess.run({"image": torch.zeros(1, 3, 16, 16)})["logits"].shape == (1, 5)


@pytest.mark.skipif(not NO_CUDA, reason="a GPU is present")
def test_auto_says_what_it_took(tiny_onnx):
    sess = Session(tiny_onnx, device="auto")
    assert sess.device == "cpu"
    assert "GPU providers skipped" in sess.note and "cpu" in sess.describe()


@pytest.mark.skipif(not NO_CUDA, reason="a GPU is present")
@pytest.mark.parametrize("device", ["cuda", "tensorrt"])
def test_gpu_device_without_gpu_is_an_error_not_a_cpu_fallback(tiny_onnx, device):
    with pytest.raises(SessionError, match=f"device '{device}' is not usable here") as exc:
        Session(tiny_onnx, device=device)
    assert str(tiny_onnx) in str(exc.value) and exc.value.exit_code == 1


def test_unknown_device(tiny_onnx):
    with pytest.raises(SessionError, match=r"unknown device 'gpu'.*did you mean"):
        Session(tiny_onnx, device="gpu")
    with pytest.raises(SessionError, match="graph optimisation level"):
        Session(tiny_onnx, device="cpu", graph_optimization="max")


def test_provider_chains():
    avail = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
    assert provider_chain("cpu", avail) == ["CPUExecutionProvider"]
    assert provider_chain("cuda", avail) == ["CUDAExecutionProvider", "CPUExecutionProvider"]
    assert provider_chain("auto", avail) == avail
    assert provider_chain("auto", ["CPUExecutionProvider"]) == ["CPUExecutionProvider"]


def test_corrupted_and_truncated_models(tiny_onnx, tmp_path):
    data = tiny_onnx.read_bytes()
    truncated = tmp_path / "truncated.onnx"
    truncated.write_bytes(data[: len(data) // 2])
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"\x00\xffnot a model" * 10)
    for bad in (truncated, garbage):
        with pytest.raises(SessionError, match=r"cannot load .*\(corrupted or truncated") as exc:
            Session(bad, device="cpu")
        assert str(bad) in str(exc.value)
    with pytest.raises(SessionError, match="does not exist"):
        Session(tmp_path / "nope.onnx", device="cpu")
    assert tiny_onnx.read_bytes() == data


def test_bad_inputs(tiny_onnx):
    sess = Session(tiny_onnx, device="cpu")
    with pytest.raises(SessionError, match="missing input `image`"):
        sess.run({})
    with pytest.raises(SessionError, match="unknown input `img`"):
        sess.run({"image": X["image"], "img": X["image"]})
    with pytest.raises(ComposerError, match="failed to run"):
        sess.run({"image": np.zeros((1, 4, 16, 16), np.float32)})
    with pytest.raises(ComposerError, match="failed to run"):
        sess.run({"image": np.zeros((1, 3, 16, 16), np.float64)})

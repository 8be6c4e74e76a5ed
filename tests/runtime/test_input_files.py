"""composer.inputs: reading image/.npy/.npz/.safetensors inputs and checking them."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from composer.inputs import (InputError, check_inputs, parse_assignments, random_inputs, read_inputs,
                             specs_from_pipeline)


@pytest.fixture
def specs(tiny_pipe):
    return specs_from_pipeline(tiny_pipe)


def test_image_is_resized_cropped_and_normalised(specs, tmp_path):
    img = np.zeros((30, 40, 3), np.uint8)
    img[..., 0] = 255                                    # pure red
    path = tmp_path / "red.png"
    Image.fromarray(img).save(path)
    arrays = read_inputs({"image": path}, specs)
    x = arrays["image"]
    assert x.shape == (1, 3, 16, 16) and x.dtype == np.float32   # shorter side 20, centre crop 16
    np.testing.assert_allclose(x[0, 0], (1.0 - 0.5) / 0.25)
    np.testing.assert_allclose(x[0, 1], (0.0 - 0.5) / 0.25)


def test_arrays(specs, tmp_path):
    x = np.random.default_rng(0).standard_normal((2, 3, 18, 20)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    np.savez(tmp_path / "x.npz", image=x, other=x[:1])
    from safetensors.torch import save_file
    save_file({"whatever": torch.from_numpy(x)}, str(tmp_path / "x.safetensors"))
    for name in ("x.npy", "x.npz", "x.safetensors"):
        got = read_inputs({"image": tmp_path / name}, specs)["image"]
        np.testing.assert_array_equal(got, x)


def test_wrong_shape_dtype_and_multiples(specs):
    with pytest.raises(InputError, match=r"input `image` has shape \[1, 4, 16, 16\], expected \[B, 3, H, W\]: "
                                         r"axis 1 must be 3, found 4"):
        check_inputs({"image": np.zeros((1, 4, 16, 16), np.float32)}, specs)
    with pytest.raises(InputError, match=r"rank 3"):
        check_inputs({"image": np.zeros((3, 16, 16), np.float32)}, specs)
    with pytest.raises(InputError, match=r"has dtype float64, expected float32; convert it"):
        check_inputs({"image": np.zeros((1, 3, 16, 16))}, specs)
    with pytest.raises(InputError, match=r"axis 2 \(H\) is 15, which is not a multiple of 2"):
        check_inputs({"image": np.zeros((1, 3, 15, 16), np.float32)}, specs)
    assert check_inputs({"image": np.zeros((2, 3, 8, 12), np.float32)}, specs) == {"B": 2, "H": 8, "W": 12}


def test_missing_unknown_and_bad_files(specs, tmp_path):
    with pytest.raises(InputError, match=r"missing input `image` \(\[B, 3, H, W\] float32\): pass it with --input"):
        read_inputs({}, specs)
    with pytest.raises(InputError, match=r"unknown input `imag` \(did you mean `image`\?\)"):
        read_inputs({"imag": tmp_path / "x.npy"}, specs)
    with pytest.raises(InputError, match=r"input `image`: file .*nope.npy does not exist"):
        read_inputs({"image": tmp_path / "nope.npy"}, specs)
    np.save(tmp_path / "t.npy", np.zeros((1, 3, 16, 16), np.float32))
    data = (tmp_path / "t.npy").read_bytes()
    (tmp_path / "t.npy").write_bytes(data[:100])
    with pytest.raises(InputError, match=r"input `image`: cannot read .*t.npy"):
        read_inputs({"image": tmp_path / "t.npy"}, specs)
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    with pytest.raises(InputError, match=r"cannot decode image .*broken.png"):
        read_inputs({"image": tmp_path / "broken.png"}, specs)
    (tmp_path / "x.csv").write_text("1,2")
    with pytest.raises(InputError, match=r"cannot read .csv files"):
        read_inputs({"image": tmp_path / "x.csv"}, specs)


def test_assignments():
    assert parse_assignments(["a=x.npy", "b=dir/y.png"]) == {"a": __import__("pathlib").Path("x.npy"),
                                                             "b": __import__("pathlib").Path("dir/y.png")}
    with pytest.raises(InputError, match="expected NAME=FILE"):
        parse_assignments(["x.npy"])


def test_random_inputs_are_seeded(specs):
    a = random_inputs(specs, {"B": 2, "H": 8, "W": 8}, seed=1)
    b = random_inputs(specs, {"B": 2, "H": 8, "W": 8}, seed=1)
    assert a["image"].shape == (2, 3, 8, 8) and torch.equal(a["image"], b["image"])


def test_onnx_metadata_restores_preprocess_and_multiples(tiny_onnx):
    import onnx

    from composer.inputs import specs_from_onnx
    spec = specs_from_onnx(onnx.load(str(tiny_onnx)))["image"]
    assert spec.shape == ("B", 3, "H", "W") and spec.dtype == "float32" and spec.kind == "image"
    assert spec.preprocess.resize == 20 and spec.preprocess.crop == 16 and spec.multiples == {"B": 1, "H": 2, "W": 2}
    with pytest.raises(InputError, match=r"axis 3 \(W\) is 15, which is not a multiple of 2"):
        check_inputs({"image": np.zeros((1, 3, 16, 15), np.float32)}, {"image": spec})


def test_random_integer_bool_and_byte_inputs():
    from composer.dims import sym
    from composer.inputs import InputSpec
    specs = {"ids": InputSpec("ids", (sym("B"), sym("T")), "int64", "tokens", int_high=7),
             "mask": InputSpec("mask", (sym("B"), sym("T")), "bool", "mask"),
             "raw": InputSpec("raw", (sym("B"), 3, 4, 4), "uint8", "image")}
    out = random_inputs(specs, {"B": 2, "T": 50}, seed=0)
    assert out["ids"].dtype == torch.int64 and 0 <= int(out["ids"].min()) and int(out["ids"].max()) < 7
    assert out["mask"].dtype == torch.bool and bool(out["mask"].all())
    assert out["raw"].dtype == torch.uint8 and out["raw"].shape == (2, 3, 4, 4)

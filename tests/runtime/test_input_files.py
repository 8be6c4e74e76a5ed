"""composer.inputs: reading image/.npy/.npz/.safetensors inputs and checking them; image files
that are not what the input takes (not an image, grayscale, transparent, too small, too big)."""

from __future__ import annotations

import re
import struct
import warnings
import zlib

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from composer import inputs as inputs_mod
from composer.cli import app
from composer.dims import sym
from composer.inputs import (InputError, InputSpec, check_inputs, load_image, parse_assignments, random_inputs,
                             read_inputs, specs_from_pipeline)
from composer.spec import Preprocess


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
    mask = out["mask"]       # [B, T] padding masks: a prefix of real steps per row, the first row full
    assert mask.dtype == torch.bool and bool(mask[0].all()) and bool(mask[:, 0].all())
    lengths = mask.sum(1)
    assert torch.equal(mask, torch.arange(50)[None, :] < lengths[:, None])
    assert out["raw"].dtype == torch.uint8 and out["raw"].shape == (2, 3, 4, 4)


# ---- image files that are not what the input takes -----------------------------------------------

GRAY = {"image": InputSpec("image", (sym("B"), 1, sym("H"), sym("W")), "float32", "image",
                           Preprocess(channels="gray"))}
PLAIN = {"image": InputSpec("image", (sym("B"), 3, sym("H"), sym("W")), "float32", "image", Preprocess())}


def save(tmp_path, name, mode, size=(24, 20), **kw):
    """An image of `mode` written by PIL: a gradient, so every channel has content."""
    w, h = size
    rgb = np.zeros((h, w, 3), np.uint8)
    rgb[..., 0] = np.linspace(0, 255, w, dtype=np.uint8)[None]
    rgb[..., 1] = np.linspace(0, 255, h, dtype=np.uint8)[:, None]
    img = Image.fromarray(rgb)
    if mode == "P-gray":
        img = img.convert("L").convert("P")
    elif mode == "P-alpha":
        img = img.convert("P")
        kw["transparency"] = 0
    elif mode != "RGB":
        img = img.convert(mode)
    path = tmp_path / name
    img.save(path, **kw)
    return path


def png_header(path, w, h):
    """A PNG that declares w x h pixels in a few bytes: what a decompression bomb looks like."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(b"\x00" * 16)) + chunk(b"IEND", b""))
    return path


@pytest.mark.parametrize("content,looks", [
    (b"", "an empty file"), (b"id,label\n1,cat\n", "text"), (b"<!DOCTYPE html><html><body>404</body></html>",
                                                            "an HTML page"),
    (b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg"/>', "an SVG drawing"),
    (b"%PDF-1.7\n...", "a PDF document"), (bytes(range(256)) * 4, "binary data of an unknown format"),
])
def test_a_file_that_is_not_an_image(specs, tmp_path, content, looks):
    path = tmp_path / "photo.jpg"
    path.write_bytes(content)
    with pytest.raises(InputError) as info:
        read_inputs({"image": path}, specs)
    msg = str(info.value)
    assert msg.startswith(f"input `image`: cannot decode image {path}: it is not an image, it looks like {looks}")
    assert "PNG, JPEG" in msg


def test_npy_named_like_an_image_and_damaged_images(specs, tmp_path):
    np.save(tmp_path / "x.npy", np.zeros((1, 3, 16, 16), np.float32))
    (tmp_path / "x.png").write_bytes((tmp_path / "x.npy").read_bytes())
    with pytest.raises(InputError, match=r"x\.png: it is not an image, it looks like a \.npy array"):
        read_inputs({"image": tmp_path / "x.png"}, specs)
    good = save(tmp_path, "good.png", "RGB", (64, 64))
    data = good.read_bytes()
    cut = tmp_path / "cut.png"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match=r"cannot decode image .*cut\.png: it looks like a PNG image, but damaged or "
                                         r"truncated \(OSError: image file is truncated"):
        read_inputs({"image": cut}, specs)
    jpg = save(tmp_path, "good.jpg", "RGB", (64, 64))
    (tmp_path / "cut.jpg").write_bytes(jpg.read_bytes()[:200])
    with pytest.raises(InputError, match=r"cut\.jpg: it looks like a JPEG image, but damaged or truncated"):
        read_inputs({"image": tmp_path / "cut.jpg"}, specs)


@pytest.mark.parametrize("mode,what", [("L", "L image (grayscale)"), ("1", "1 image (grayscale)"),
                                       ("I", "I image (grayscale)"), ("I;16", "I;16 image (grayscale)"),
                                       ("F", "F image (grayscale)"), ("P-gray", "P image (grayscale)")])
def test_a_grayscale_image_for_an_rgb_input(specs, tmp_path, mode, what):
    path = save(tmp_path, "gray.tif" if mode in ("F", "I") else "gray.png", mode)
    with pytest.raises(InputError) as info:
        read_inputs({"image": path}, specs)
    assert str(info.value) == (
        f"input `image`: {path} is a {what}, and the input takes 3-channel RGB; convert it first, e.g. "
        "`Image.open(f).convert('RGB').save('rgb.png')` with PIL (the gray value in all three channels), or declare "
        "the input with `preprocess: {channels: gray}` and 1 channel")


@pytest.mark.parametrize("mode,what", [("RGBA", "RGBA image that has an alpha channel"),
                                       ("LA", "LA image that has an alpha channel"),
                                       ("P-alpha", "P image that has a transparent colour")])
def test_an_image_with_transparency(specs, tmp_path, mode, what):
    path = save(tmp_path, "alpha.png", mode)
    with pytest.raises(InputError) as info:
        read_inputs({"image": path}, specs)
    assert str(info.value) == (
        f"input `image`: {path} is a {what}, and the input takes RGB without transparency; flatten it first, e.g. "
        "`Image.open(f).convert('RGB').save('flat.png')` with PIL (transparent pixels keep their stored colour)")
    with pytest.raises(InputError, match=r"the input takes grayscale without transparency; .*convert\('L'\)"):
        read_inputs({"image": path}, GRAY)


def test_colour_images_that_are_read_as_rgb(specs, tmp_path):
    ref = read_inputs({"image": save(tmp_path, "rgb.png", "RGB")}, PLAIN)["image"]
    assert ref.shape == (1, 3, 20, 24)
    four = np.zeros((20, 24, 3), np.uint8)
    four[:10, :12], four[:10, 12:], four[10:, :12], four[10:, 12:] = (255, 0, 0), (0, 255, 0), (0, 0, 255), (9, 99, 199)
    Image.fromarray(four).convert("P", palette=Image.Palette.ADAPTIVE, colors=4).save(tmp_path / "pal.png")
    palette = read_inputs({"image": tmp_path / "pal.png"}, PLAIN)["image"]  # a palette of colours
    np.testing.assert_allclose(palette[0], four.transpose(2, 0, 1) / 255, atol=1e-6)
    cmyk = read_inputs({"image": save(tmp_path, "cmyk.jpg", "CMYK", quality=95)}, PLAIN)["image"]
    assert cmyk.shape == ref.shape and np.abs(cmyk - ref).mean() < 0.05
    assert read_inputs({"image": save(tmp_path, "rgb.bmp", "RGB", (30, 40))}, specs)["image"].shape == (1, 3, 16, 16)


def test_the_gray_path(tmp_path):
    x = read_inputs({"image": save(tmp_path, "g.png", "L")}, GRAY)["image"]
    assert x.shape == (1, 1, 20, 24) and x.dtype == np.float32 and 0 <= x.min() and x.max() <= 1.0
    expected = np.asarray(Image.open(tmp_path / "g.png"), np.float32) / 255
    np.testing.assert_allclose(x[0, 0], expected, rtol=1e-6)
    assert read_inputs({"image": save(tmp_path, "b.png", "1")}, GRAY)["image"].shape == (1, 1, 20, 24)
    assert read_inputs({"image": save(tmp_path, "p.png", "P-gray")}, GRAY)["image"].shape == (1, 1, 20, 24)
    with pytest.raises(InputError, match=r"is a RGB image \(colour\), and the input takes 1-channel grayscale "
                                         r"\(`channels: gray`\); convert it first, e\.g\. `Image\.open\(f\)\.convert\('L'\)"):
        read_inputs({"image": save(tmp_path, "c.png", "RGB")}, GRAY)
    with pytest.raises(InputError, match=r"is a I;16 image \(more than 8 bits per pixel\), and the input takes 8-bit"):
        read_inputs({"image": save(tmp_path, "deep.png", "I;16")}, GRAY)


@pytest.mark.parametrize("size", [(1, 1), (1, 40), (40, 1)])
def test_images_too_small(specs, tmp_path, size):
    path = save(tmp_path, "tiny.png", "RGB", size)
    with pytest.raises(InputError) as info:
        read_inputs({"image": path}, specs)
    assert str(info.value) == (f"input `image`: image {path} is {size[0]}x{size[1]}; an image must be at least 2x2 "
                               "pixels")
    assert read_inputs({"image": save(tmp_path, "two.png", "RGB", (2, 2))}, PLAIN)["image"].shape == (1, 3, 2, 2)


def test_an_image_smaller_than_the_crop(tmp_path):
    spec = {"image": InputSpec("image", (sym("B"), 3, 16, 16), "float32", "image", Preprocess(crop=16))}
    path = save(tmp_path, "small.png", "RGB", (20, 12))
    with pytest.raises(InputError, match=r"image .*small\.png is 20x12, smaller than the crop 16x16"):
        read_inputs({"image": path}, spec)
    spec["image"].preprocess = Preprocess(resize=10, crop=16)
    with pytest.raises(InputError, match=r"is 20x12 \(17x10 after `resize: 10`\), smaller than the crop 16x16"):
        read_inputs({"image": path}, spec)


@pytest.mark.parametrize("w,h,mp", [(8200, 8200, "67.2"), (10_000, 10_000, "100.0"), (20_000, 20_000, "400.0"),
                                    (64_000_001, 1, "64.0")])
def test_images_over_the_pixel_limit_are_refused_before_decoding(specs, tmp_path, w, h, mp):
    """Below PIL's own limit, between its warning and its error, and above it: our error each time, no warning."""
    path = png_header(tmp_path / "bomb.png", w, h)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(InputError) as info:
            read_inputs({"image": path}, specs)
    assert not [c for c in caught if "ecompression" in str(c.category.__name__)]
    msg = str(info.value)
    assert re.match(rf"input `image`: image .*bomb\.png is (\d+x\d+ = )?{mp} megapixels, more than the limit of 64 "
                    r"megapixels \(a guard against decompression bombs\); scale it down first$", msg), msg


def test_the_pixel_limit_is_ours_to_set(specs, tmp_path, monkeypatch):
    path = save(tmp_path, "rgb.png", "RGB", (30, 40))
    monkeypatch.setattr(inputs_mod, "MAX_IMAGE_PIXELS", 1000)
    with pytest.raises(InputError, match=r"is 30x40 = 0\.0 megapixels, more than the limit of 0\.001 megapixels"):
        load_image(path, specs["image"])
    monkeypatch.setattr(inputs_mod, "MAX_IMAGE_PIXELS", 1200)
    assert load_image(path, specs["image"]).shape == (1, 3, 16, 16)


def test_run_with_a_bad_image_exits_1_and_writes_nothing(tiny_spec, tmp_path):
    gray = save(tmp_path, "gray.png", "L")
    kept = tmp_path / "out.npz"
    kept.write_bytes(b"earlier results")
    r = CliRunner().invoke(app, ["run", str(tiny_spec), "--input", f"image={gray}", "--save", str(kept)])
    assert r.exit_code == 1
    assert f"error: input `image`: {gray} is a L image (grayscale), and the input takes 3-channel RGB" in r.output
    assert "Traceback" not in r.output and kept.read_bytes() == b"earlier results"
    bomb = png_header(tmp_path / "bomb.png", 30_000, 30_000)
    r = CliRunner().invoke(app, ["run", str(tiny_spec), "--input", f"image={bomb}"])
    assert r.exit_code == 1 and "more than the limit of 64 megapixels" in r.output and "Traceback" not in r.output

"""`composer sample` on a latent generator: the images are the model's on latents drawn from the
seed, mapped from the tanh range to [0, 1]; onnxruntime gives the same images; the grid and the
tensors are written; bad requests are clear errors (exit 2, no traceback)."""

from __future__ import annotations

import subprocess

import numpy as np
import pytest
import torch
from PIL import Image

import composer
from composer.sample import MAX_SAMPLES, ImageSampler, SampleError, find_scheme, grid
from tests.conftest import COMPOSER

GEN = """\
pipeline: tiny_gen
seed: 3
dims:
  B: {sizes: [1, 2], example: 2}
inputs:
  z: {kind: latent, shape: [B, 8, 1, 1]}
blocks:
  up: {block: conv_transpose2d, in: z, out_channels: 3, kernel: 4}
  act: {block: tanh, in: up}
outputs:
  image: act
"""

NOT_GENERATIVE = """\
pipeline: classifier
dims:
  B: {sizes: [1, 2], example: 1}
inputs:
  x: {kind: vector, shape: [B, 4]}
blocks:
  head: {block: dense, in: x, out_features: 2}
outputs:
  logits: head
"""


def _expected(model, n: int, seed: int) -> torch.Tensor:
    z = torch.randn((n, 8, 1, 1), generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        return ((model(z=z)["image"] + 1) / 2).clamp(0, 1)


def test_latent_scheme_images_are_the_model_on_seeded_latents(write_spec):
    pipe = composer.load(write_spec(GEN))
    scheme = find_scheme(pipe)
    assert (scheme.kind, scheme.part, scheme.inputs, scheme.output, scheme.value_range) == \
        ("latent", None, {"z": (8, 1, 1)}, "image", (-1.0, 1.0))
    model = pipe.build()
    got = ImageSampler(model).sample(5, seed=7)
    assert got.images.shape == (5, 3, 4, 4)
    torch.testing.assert_close(got.images, _expected(model, 5, 7), rtol=0, atol=1e-6)
    again = ImageSampler(model).sample(5, seed=7).images
    assert torch.equal(again, got.images)
    assert not torch.equal(ImageSampler(model).sample(5, seed=8).images, got.images)


def test_onnx_backend_gives_the_torch_images(write_spec):
    pipe = composer.load(write_spec(GEN))
    model = pipe.build()
    want = ImageSampler(model).sample(3, seed=1).images
    onnx = ImageSampler(model, backend="onnx")
    try:
        got = onnx.sample(3, seed=1).images
    finally:
        onnx.close()
    torch.testing.assert_close(got, want, rtol=0, atol=1e-5)


def test_grid_places_each_image():
    images = torch.zeros(3, 3, 2, 2)
    images[1] = 1.0
    out = grid(images, nrow=2, pad=1)
    assert out.shape == (2 * 3 + 1, 2 * 3 + 1, 3)
    assert (out[1:3, 1:3] == 0).all() and (out[1:3, 4:6] == 255).all() and (out[4:6, 1:3] == 0).all()
    assert (out[0] == 255).all()                                          # padding is white


def test_cli_writes_the_grid_and_the_tensors(write_spec, tmp_path):
    spec = write_spec(GEN)
    png, saved = tmp_path / "grid.png", tmp_path / "s.npz"
    proc = subprocess.run([COMPOSER, "sample", str(spec), "-n", "4", "-o", str(png), "--save", str(saved),
                           "--seed", "2"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    picture = np.asarray(Image.open(png))
    assert picture.shape == (2 * (4 + 2) + 2, 2 * (4 + 2) + 2, 3)
    tensors = np.load(saved)
    want = _expected(composer.load(spec).build(), 4, 2)
    np.testing.assert_allclose(tensors["images"], want.numpy(), atol=1e-6)
    assert tensors["raw"].shape == (4, 3, 4, 4)
    top_left = (want[0].permute(1, 2, 0).numpy() * 255 + 0.5).astype(np.uint8)
    assert (picture[2:6, 2:6] == top_left).all()


@pytest.mark.parametrize("args, message", [
    (["-n", "0"], "-n must be 1 or more"),
    (["-n", str(MAX_SAMPLES + 1)], f"beyond the limit of {MAX_SAMPLES}"),
    (["--steps", "0"], "samples in one pass"),
    (["--sampler", "ddim"], "DDPM and DDIM samplers are for diffusion specs"),
    (["--backend", "tvm"], "unknown backend"),
    (["-o", "grid.txt"], "give a .png or .jpg"),
    (["--save", "s.csv"], "give a .safetensors, .npz or .pt"),
])
def test_cli_bad_requests_are_clear_errors(write_spec, tmp_path, args, message):
    spec = write_spec(GEN)
    existing = tmp_path / "grid.png"
    existing.write_bytes(b"keep")
    full = [COMPOSER, "sample", str(spec)] + (args if "-o" in args else args + ["-o", str(existing)])
    proc = subprocess.run(full, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert message in proc.stderr and "Traceback" not in proc.stderr
    assert existing.read_bytes() == b"keep"


def test_a_spec_that_is_not_generative_says_what_it_needs(write_spec):
    with pytest.raises(SampleError, match="inputs of kind `latent` only"):
        ImageSampler(composer.load(write_spec(NOT_GENERATIVE)))


DENOISER = """\
pipeline: tiny_ddpm
dims:
  B: {sizes: [1, 2], example: 2}
  H: {multiple_of: 2, sizes: [8, 12], example: 8}
  W: {multiple_of: 2, sizes: [8, 12], example: 8}
inputs:
  sample: {kind: image, shape: [B, 3, H, W]}
  timestep: {kind: tensor, shape: [B], dtype: int64}
blocks:
  unet:
    block: unet2d
    in: {sample: sample, timestep: timestep}
    channels: [8, 16]
    layers_per_block: 1
    attention: [false, true]
    attention_head_dim: 8
    norm: {groups: 4}
outputs:
  noise: unet
diffusion:
  schedule: {type: linear, timesteps: 100}
  sampler: {type: ddim, steps: 4}
"""


def test_diffusion_images_are_the_sampling_loop_on_the_denoiser_and_onnx_gives_them_too(write_spec):
    from composer.diffusion import sample_loop
    pipe = composer.load(write_spec(DENOISER))
    model = pipe.build().eval()
    scheme = find_scheme(pipe)
    assert (scheme.kind, scheme.inputs, scheme.output, scheme.value_range) == \
        ("diffusion", {"sample": (3, 8, 8)}, "noise", (-1.0, 1.0))
    with torch.no_grad():
        x0 = sample_loop(lambda x, t: model(sample=x, timestep=t)["noise"], (3, 3, 8, 8), pipe.resolved.diffusion,
                         kind="ddpm", steps=5, generator=torch.Generator().manual_seed(4))
    seen = []
    got = ImageSampler(model).sample(3, seed=4, sampler="ddpm", steps=5, progress=lambda d, n: seen.append((d, n)))
    torch.testing.assert_close(got.images, ((x0 + 1) / 2).clamp(0, 1), rtol=0, atol=1e-6)
    assert seen == [(i, 5) for i in range(1, 6)] and got.steps == 5
    ddim = ImageSampler(model).sample(2, seed=0)                        # the spec's sampler: 4 DDIM steps
    onnx = ImageSampler(model, backend="onnx")
    try:
        torch.testing.assert_close(onnx.sample(2, seed=0).images, ddim.images, rtol=0, atol=1e-4)
    finally:
        onnx.close()


@pytest.mark.parametrize("kwargs, message", [
    ({"steps": 0}, "--steps must be 1 or more"),
    ({"steps": 101}, "more than the schedule's 100 timesteps"),
    ({"sampler": "ddin"}, "did you mean 'ddim'"),
])
def test_diffusion_bad_requests(write_spec, kwargs, message):
    sampler = ImageSampler(composer.load(write_spec(DENOISER)))
    with pytest.raises(SampleError, match=message):
        sampler.sample(2, **kwargs)

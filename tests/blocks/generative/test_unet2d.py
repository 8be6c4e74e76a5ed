"""unet2d against `diffusers.UNet2DModel` with the same (random) weights: with and without attention,
int, float and scalar timesteps; loading a diffusers state dict into a compiled pipeline with
`diffusers_rules`; the ONNX export of a small pipeline in onnxruntime against diffusers; and the
type errors (an image size the levels cannot divide, groups, heads, timestep shapes) located in the spec
before any weight exists."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch

import composer
from blocks.generative.unet import DIFFUSERS_RULES, UNet2DBlock, diffusers_rules
from composer.dims import sym
from composer.runtime import Session
from composer.types import InferError, PortType
from composer.weights import map_state_dict

diffusers = pytest.importorskip("diffusers")

ATOL = 1e-4
B, SIZE = 2, 16

# (our params, diffusers' UNet2DModel kwargs): the same architecture
CONFIGS = {
    "attention": ({"channels": [16, 32, 32], "layers_per_block": 2, "attention": [False, True, True],
                   "attention_head_dim": 8, "norm": {"groups": 8, "eps": 1e-6},
                   "time_embedding": {"flip_sin_to_cos": False, "freq_shift": 1}},
                  dict(block_out_channels=(16, 32, 32), layers_per_block=2,
                       down_block_types=("DownBlock2D", "AttnDownBlock2D", "AttnDownBlock2D"),
                       up_block_types=("AttnUpBlock2D", "AttnUpBlock2D", "UpBlock2D"), attention_head_dim=8,
                       norm_num_groups=8, norm_eps=1e-6, flip_sin_to_cos=False, freq_shift=1)),
    "plain": ({"channels": [8, 16], "layers_per_block": 1, "out_channels": 4, "norm": {"groups": 4},
               "mid": {"attention": False}, "time_embedding": {"dim": 48}},
              dict(block_out_channels=(8, 16), layers_per_block=1, out_channels=4,
                   down_block_types=("DownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "UpBlock2D"),
                   norm_num_groups=4, add_attention=False, time_embedding_dim=48)),
}

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def randomize(module: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Every tensor random, norm weights around 1 and biases nonzero, so that a tensor loaded into
    the wrong place, a wrong eps or a missing bias shows in the outputs."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in module.state_dict().items():
            noise = torch.randn(t.shape, generator=g) * 0.15
            is_norm_weight = name.endswith(".weight") and t.dim() == 1 and "norm" in name
            t.copy_(1 + noise if is_norm_weight else noise)
    return module.eval()


def reference(kind: str) -> "diffusers.UNet2DModel":
    torch.manual_seed(0)
    return randomize(diffusers.UNet2DModel(in_channels=3, **CONFIGS[kind][1]))


def renamed(state: dict[str, torch.Tensor], rules) -> dict[str, torch.Tensor]:
    out = {}
    for key, value in state.items():
        for pattern, repl in rules:
            key = re.sub(pattern, repl, key)
        out[key] = value
    return out


def types(h=SIZE, w=SIZE, t_shape=(B,), t_dtype="int64"):
    return PortType("image", (B, 3, h, w)), PortType("tensor", t_shape, t_dtype)


@pytest.mark.parametrize("kind", sorted(CONFIGS))
def test_unet2d_equals_diffusers(kind):
    ref = reference(kind)
    block = UNet2DBlock.model_validate(CONFIGS[kind][0])
    sample, timestep = types()
    ours = block.build(sample=sample, timestep=timestep).eval()
    state = renamed(ref.state_dict(), DIFFUSERS_RULES)
    assert list(state) == list(ours.state_dict())                      # same names, same order
    ours.load_state_dict(state, strict=True)
    n = sum(p.numel() for p in ours.parameters())
    assert n == sum(p.numel() for p in ref.parameters()) == block.param_count(sample, timestep)
    assert block.infer(sample, timestep).shape == (B, CONFIGS[kind][1].get("out_channels", 3), SIZE, SIZE)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(B, 3, SIZE, SIZE, generator=g)
    for t in (torch.tensor([0, 999]), torch.tensor([17, 17]), torch.tensor([3.5, 640.25]), torch.tensor(250)):
        with torch.no_grad():
            want = ref(x, t).sample
            got = ours(x, t)
        diff = (got - want).abs().max().item()
        assert want.abs().max() > 0.5 and diff <= ATOL, (kind, t, diff)


def test_attention_is_the_catalog_layer():
    from blocks.core.attention import MultiHeadAttention
    ours = UNet2DBlock.model_validate(CONFIGS["attention"][0]).build(*types())
    attn = [m for m in ours.modules() if isinstance(m, MultiHeadAttention)]
    assert len(attn) == 2 * 2 + 2 * 3 + 1 and all(m.num_heads == 4 and m.head_dim == 8 for m in attn)


SPEC = """\
pipeline: tiny_ddpm
dims:
  B: {sizes: [1, 2], example: 2}
  H: {multiple_of: 4, sizes: [16, 24], example: 16}
  W: {multiple_of: 4, sizes: [16, 8], example: 16}
inputs:
  sample: {kind: image, shape: [B, 3, H, W]}
  timestep: {kind: tensor, shape: [B], dtype: int64}
blocks:
  unet:
    block: unet2d
    in: {sample: sample, timestep: timestep}
    channels: [16, 32, 32]
    attention: [false, true, true]
    norm: {groups: 8, eps: 1.0e-6}
    time_embedding: {flip_sin_to_cos: false, freq_shift: 1}
outputs:
  noise: unet
"""


def test_diffusers_weights_load_into_a_pipeline_and_its_onnx_export_matches(tmp_path):
    ref = reference("attention")
    pipe = composer.loads(SPEC, "tiny_ddpm.yaml")
    model = pipe.build(seed=0).eval()
    tensors, report = map_state_dict(model, ref.state_dict(), rename=diffusers_rules("unet"))
    assert report.strategy and len(tensors) == len(model.state_dict())
    model.load_state_dict(tensors, strict=True)
    g = torch.Generator().manual_seed(2)
    x, t = torch.randn(2, 3, 16, 24, generator=g), torch.tensor([5, 901])
    with torch.no_grad():
        want = ref(x, t).sample
        got = model(sample=x, timestep=t)
    got = got["noise"] if isinstance(got, dict) else got
    assert (got - want).abs().max().item() <= ATOL

    rep = composer.export(model, tmp_path / "tiny_ddpm.onnx")
    ver = rep["verification"]
    assert ver["passed"] and ver["max_abs"] < ATOL
    assert {r["sizes"]["H"] for r in ver["runs"]} >= {16, 24}
    sess = Session(tmp_path / "tiny_ddpm.onnx", device="cpu")
    for b, h, w in ((3, 8, 12), (1, 32, 16)):
        x = torch.randn(b, 3, h, w, generator=g)
        t = torch.randint(0, 1000, (b,), generator=g)
        with torch.no_grad():
            want = ref(x, t).sample
        out = sess.run({"sample": x.numpy(), "timestep": t.numpy()})["noise"]
        assert np.abs(out - want.numpy()).max() <= ATOL, (b, h, w)


# ---- errors from the types ---------------------------------------------------------------------


def _first_error(text: str):
    with pytest.raises(composer.SpecError) as exc:
        composer.loads(text, "bad.yaml")
    return exc.value.diagnostics[0]


def test_a_static_size_the_levels_cannot_divide_is_a_located_error():
    d = _first_error(SPEC.replace("shape: [B, 3, H, W]", "shape: [B, 3, 18, W]"))
    assert d.code == "E302" and d.loc.line == 12                        # the `in:` binding of the unet
    assert "divisible by 4" in d.message and d.expected == "a multiple of 4" and d.found == "18"


def test_a_symbolic_dim_not_declared_a_multiple_is_a_located_error():
    d = _first_error(SPEC.replace("H: {multiple_of: 4,", "H: {multiple_of: 2,"))
    assert d.code == "E302" and d.loc.line == 12
    assert "not declared a multiple of 4" in d.found and "multiple_of: 4" in d.hint
    # one level more needs multiples of 8
    d = _first_error(SPEC.replace("channels: [16, 32, 32]", "channels: [16, 32, 32, 32]")
                     .replace("attention: [false, true, true]", "attention: [false, true, true, false]"))
    assert "divisible by 8" in d.message
    # a size that is a multiple through its expression (2 x a multiple of 2) is accepted
    block = UNet2DBlock.model_validate({"channels": [8, 8, 8], "norm": {"groups": 4}, "attention_head_dim": 4})
    out = block.infer(PortType("image", (B, 3, 2 * sym("H", 2), sym("W", 4))), PortType("tensor", (B,), "int64"))
    assert out.shape[2] == 2 * sym("H", 2)


def test_param_errors_name_the_param():
    sample, timestep = types()
    with pytest.raises(InferError) as exc:
        UNet2DBlock.model_validate({"channels": [12, 16], "norm": {"groups": 8}}).infer(sample, timestep)
    assert exc.value.param == "norm" and exc.value.found == "8"
    with pytest.raises(InferError) as exc:
        UNet2DBlock.model_validate({"channels": [8, 12], "norm": {"groups": 4},
                                    "attention_head_dim": 8}).infer(sample, timestep)
    assert exc.value.param == "attention_head_dim"                     # the mid block attends at 12 channels
    d = _first_error(SPEC.replace("attention: [false, true, true]", "attention: [false, true]"))
    assert d.code == "E105" and "one bool per level" in f"{d.message} {d.expected}"
    d = _first_error(SPEC.replace("shape: [B], dtype: int64", "shape: [B, 2], dtype: int64"))
    assert d.code == "E302" and "timestep" in d.message
    with pytest.raises(InferError, match="batch sizes"):
        UNet2DBlock.model_validate({"channels": [8], "norm": {"groups": 4}}).infer(sample, PortType("tensor", (3,)))
    with pytest.raises(InferError, match="integer or float"):
        UNet2DBlock.model_validate({"channels": [8], "norm": {"groups": 4}}).infer(sample,
                                                                                    PortType("tensor", (B,), "bool"))

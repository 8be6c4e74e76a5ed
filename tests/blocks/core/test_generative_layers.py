"""The core layers of generative models against torch with the same weights: `conv_transpose2d` (every
param, output_padding, exact symbolic output sizes), `spectral_norm` on conv2d / conv_transpose2d / dense
(torch's parametrization, state-dict names, ONNX export in eval mode), `leaky_relu`, `group_norm` and
`reshape`; bad params give located errors."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from pydantic import ValidationError
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

import composer
from blocks.core.activations import LeakyReLU
from blocks.core.conv import Conv2d, ConvTranspose2d
from blocks.core.linear import Dense
from blocks.core.norm import GroupNorm
from blocks.core.shape import ReshapeBlock
from composer.dims import evaluate, shape_str, sym
from composer.errors import SpecError
from composer.types import InferError, PortType

B, H, W = sym("B"), sym("H"), sym("W")


def fmap(c: int, h=H, w=W, kind: str = "feature_map") -> PortType:
    return PortType(kind, (B, c, h, w))


def _eval(module: nn.Module, *args):
    module.eval()
    with torch.no_grad():
        return module(*args)


# ---- conv_transpose2d -------------------------------------------------------------------------------


CT_CASES = [
    dict(kernel=4, stride=2, padding=1),                                  # doubling (DCGAN)
    dict(kernel=4, stride=1, padding=0),                                  # 1x1 -> 4x4 from a latent
    dict(kernel=3, stride=2, padding=1, output_padding=1),                # the exact inverse of a stride-2 "same" conv
    dict(kernel=[3, 5], stride=[2, 3], padding=[0, 2], output_padding=[1, 2]),
    dict(kernel=3, stride=1, padding=2, dilation=2),
    dict(kernel=3, stride=2, dilation=2, output_padding=1),               # output_padding below the dilation
    dict(kernel=2, stride=2, groups=2, bias=False),
]


@pytest.mark.parametrize("kw", CT_CASES)
def test_conv_transpose2d_matches_torch_and_its_inferred_shape(kw):
    block = ConvTranspose2d(out_channels=6, **kw)
    t = block.infer(x=fmap(4))
    ref_kw = {k: kw.get(k, d) for k, d in (("stride", 1), ("padding", 0), ("output_padding", 0), ("groups", 1),
                                             ("bias", True), ("dilation", 1))}
    ref = nn.ConvTranspose2d(4, 6, kw["kernel"], **ref_kw)
    module = block.build(x=fmap(4))
    module.load_state_dict(ref.state_dict())
    assert block.param_count(x=fmap(4)) == sum(p.numel() for p in ref.parameters())
    for h, w in ((5, 7), (8, 3)):                    # one module, built for symbolic sizes, at two sizes
        x = torch.randn(2, 4, h, w)
        got = _eval(module, x)
        torch.testing.assert_close(got, _eval(ref, x), rtol=0, atol=0)
        assert tuple(got.shape) == tuple(evaluate(d, {"B": 2, "H": h, "W": w}) for d in t.shape)
        static = block.infer(x=fmap(4, h, w)).shape
        assert tuple(got.shape)[1:] == static[1:]


def test_conv_transpose2d_shapes_symbolic_and_from_a_latent():
    up = ConvTranspose2d(out_channels=8, kernel=4, stride=2, padding=1)
    assert shape_str(up.infer(x=fmap(4)).shape) == "[B, 8, 2*H, 2*W]"
    t = ConvTranspose2d(out_channels=8, kernel=3, stride=2, padding=1, output_padding=1).infer(x=fmap(4))
    assert shape_str(t.shape) == "[B, 8, 2*H, 2*W]"                    # 2H - 2 - 2 + 2 + 1 + 1
    t = ConvTranspose2d(out_channels=8, kernel=3, stride=2).infer(x=fmap(4))
    assert shape_str(t.shape) == "[B, 8, 2*H+1, 2*W+1]"
    z = ConvTranspose2d(out_channels=16, kernel=4).infer(x=PortType("latent", (B, 100, 1, 1)))
    assert z.kind == "feature_map" and z.shape == (B, 16, 4, 4)


def test_conv_transpose2d_errors_are_located():
    with pytest.raises(InferError) as e:
        ConvTranspose2d(out_channels=4, kernel=3, stride=2, output_padding=2).infer(x=fmap(4))
    assert e.value.param == "output_padding" and e.value.expected == "below 2" and e.value.found == "2"
    with pytest.raises(InferError) as e:
        ConvTranspose2d(out_channels=4, kernel=1, padding=1).infer(x=fmap(4, 1, 1))
    assert e.value.param == "padding" and e.value.found == "-1x-1"
    with pytest.raises(InferError) as e:
        ConvTranspose2d(out_channels=4, groups=3).infer(x=fmap(4))
    assert e.value.param == "groups"
    with pytest.raises(InferError) as e:                              # a flat code needs a reshape first
        ConvTranspose2d(out_channels=4).infer(x=PortType("latent", (B, 100)))
    assert e.value.port == "x" and "reshape" in e.value.message
    with pytest.raises(InferError) as e:
        ConvTranspose2d(out_channels=4).infer(x=PortType("feature_map", (B, sym("C"), 4, 4)))
    assert e.value.port == "x"
    with pytest.raises(ValidationError):
        ConvTranspose2d(out_channels=4, output_padding=-1)


SPEC = """\
pipeline: bad
inputs:
  z: {{kind: latent, shape: [B, 8, 1, 1]}}
blocks:
  up: {{block: conv_transpose2d, in: z, out_channels: 4, kernel: 3, stride: 2, output_padding: {op}}}
outputs:
  y: up
"""


def test_a_bad_output_padding_in_a_spec_names_the_param_and_line():
    with pytest.raises(SpecError) as exc:
        composer.loads(SPEC.format(op=3), "spec.yaml")
    (d,) = exc.value.diagnostics
    assert d.path == "blocks.up.output_padding" and d.loc.line == 5 and d.expected == "below 2"
    pipe = composer.loads(SPEC.format(op=1), "spec.yaml")
    assert pipe.graph.output_type(pipe.resolved.outputs["y"]).shape == (B, 4, 4, 4)


# ---- spectral norm --------------------------------------------------------------------------------


def _copy_sn(dst: nn.Module, src: nn.Module) -> None:
    """Load src's state dict (weights and power-iteration vectors) into dst by name."""
    dst.load_state_dict(src.state_dict())


@pytest.mark.parametrize("make_block, make_ref, shape", [
    (lambda: Conv2d(out_channels=6, kernel=3, padding=1, spectral_norm=True), lambda: nn.Conv2d(4, 6, 3, 1, 1),
     (2, 4, 9, 9)),
    (lambda: ConvTranspose2d(out_channels=6, kernel=4, stride=2, padding=1, spectral_norm=True),
     lambda: nn.ConvTranspose2d(4, 6, 4, 2, 1), (2, 4, 5, 5)),
    (lambda: Dense(out_features=6, spectral_norm=True), lambda: nn.Linear(4, 6), (2, 4)),
])
def test_spectral_norm_is_torchs_parametrization(make_block, make_ref, shape):
    block = make_block()
    t = PortType("vector", shape) if len(shape) == 2 else PortType("feature_map", shape)
    torch.manual_seed(0)
    module = block.build(x=t)
    ref = spectral_norm(make_ref())
    assert sorted(module.state_dict()) == sorted(ref.state_dict())
    assert "parametrizations.weight.original" in module.state_dict()
    assert block.param_count(x=t) == sum(p.numel() for p in ref.parameters())
    _copy_sn(module, ref)
    x = torch.randn(shape)
    module.train(), ref.train()                       # one power iteration each, from the same vectors
    torch.testing.assert_close(module(x), ref(x))
    torch.testing.assert_close(_eval(module, x), _eval(ref, x), rtol=0, atol=0)
    # the normalised weight has spectral norm ~1 (after some power iterations)
    module.train()
    for _ in range(100):
        module(x)
    w = module.weight.detach()
    w = w.transpose(0, 1) if isinstance(module, nn.ConvTranspose2d) else w
    assert abs(torch.linalg.matrix_norm(w.reshape(w.shape[0], -1), ord=2).item() - 1.0) < 1e-2


SN_SPEC = """\
pipeline: sn
dims:
  B: {sizes: [1, 3], example: 2}
inputs:
  x: {kind: image, shape: [B, 3, 16, 16]}
blocks:
  c1: {block: conv2d, in: x, out_channels: 8, kernel: 4, stride: 2, padding: 1, spectral_norm: true}
  a1: {block: leaky_relu, in: c1}
  up: {block: conv_transpose2d, in: a1, out_channels: 4, kernel: 4, stride: 2, padding: 1, spectral_norm: true}
  flat: {block: flatten, in: up}
  head: {block: dense, in: flat, out_features: 1, spectral_norm: true}
outputs:
  y: head
"""


def test_spectral_norm_exports_to_onnx_and_matches_torch(tmp_path):
    from composer.runtime import Session
    pipe = composer.loads(SN_SPEC)
    model = pipe.build(seed=0)
    model.train()
    for _ in range(3):                                   # move u, v away from their initial draw
        model(x=torch.randn(2, 3, 16, 16))
    model.eval()
    report = composer.export(model, tmp_path / "sn.onnx")
    assert report["verification"]["passed"]
    x = torch.randn(3, 3, 16, 16)
    got = Session(tmp_path / "sn.onnx", device="cpu").run({"x": x.numpy()})["y"]
    with torch.no_grad():
        want = model(x=x)["y"]
    assert (torch.as_tensor(got) - want).abs().max().item() < 1e-5


# ---- leaky_relu, group_norm --------------------------------------------------------------------------


def test_leaky_relu_matches_torch():
    x = torch.randn(2, 3, 4, 4)
    assert LeakyReLU().negative_slope == 0.2
    for slope in (0.2, 0.01, 0.0):
        block = LeakyReLU(negative_slope=slope)
        assert block.infer(x=fmap(3)) == fmap(3) and block.param_count() == 0
        torch.testing.assert_close(_eval(block.build(x=fmap(3)), x), F.leaky_relu(x, slope), rtol=0, atol=0)
    with pytest.raises(ValidationError):
        LeakyReLU(negative_slope=-0.1)


@pytest.mark.parametrize("groups, affine", [(1, True), (2, True), (6, False), (3, True)])
def test_group_norm_matches_torch(groups, affine):
    block = GroupNorm(groups=groups, affine=affine, eps=1e-6)
    ref = nn.GroupNorm(groups, 6, eps=1e-6, affine=affine)
    if affine:
        with torch.no_grad():
            ref.weight.uniform_(0.5, 1.5), ref.bias.uniform_(-0.5, 0.5)
    for t, x in ((fmap(6), torch.randn(2, 6, 5, 4)), (PortType("signal", (B, 6, sym("T"))), torch.randn(2, 6, 7))):
        module = block.build(x=t)
        module.load_state_dict(ref.state_dict())
        assert block.infer(x=t) == t
        assert block.param_count(x=t) == sum(p.numel() for p in ref.parameters())
        torch.testing.assert_close(_eval(module, x), _eval(ref, x), rtol=0, atol=0)


def test_group_norm_errors_are_located():
    with pytest.raises(InferError) as e:
        GroupNorm(groups=4).infer(x=fmap(6))
    assert e.value.param == "groups" and e.value.expected == "a divisor of 6" and e.value.found == "4"
    with pytest.raises(InferError) as e:
        GroupNorm(groups=2).infer(x=PortType("feature_map", (B, sym("C"), 4, 4)))
    assert e.value.port == "x"


# ---- reshape ------------------------------------------------------------------------------------------


def test_reshape_shapes_kinds_and_values():
    x = torch.randn(2, 4096)
    block = ReshapeBlock(shape=[256, 4, 4])
    t = block.infer(x=PortType("vector", (B, 4096)))
    assert t.kind == "feature_map" and t.shape == (B, 256, 4, 4)
    torch.testing.assert_close(_eval(block.build(x=PortType("vector", (B, 4096))), x), x.reshape(2, 256, 4, 4))
    lat = ReshapeBlock(shape=[100, 1, 1], kind="latent").infer(x=PortType("vector", (B, 100)))
    assert lat.kind == "latent" and lat.shape == (B, 100, 1, 1)
    assert ReshapeBlock(shape=[-1]).infer(x=fmap(3, 4, 4)) == PortType("vector", (B, 48))
    assert ReshapeBlock(shape=[2, 24]).infer(x=fmap(3, 4, 4)).kind == "tensor"
    # -1 takes a symbolic size when the other sizes divide it
    sym_t = ReshapeBlock(shape=[4, -1]).infer(x=fmap(8, H, W))
    assert shape_str(sym_t.shape) == "[B, 4, 2*H*W]"
    m = ReshapeBlock(shape=[4, -1]).build(x=fmap(8, H, W))
    y = torch.randn(2, 8, 3, 5)
    torch.testing.assert_close(_eval(m, y), y.reshape(2, 4, -1))
    assert tuple(_eval(m, y).shape) == tuple(evaluate(d, {"B": 2, "H": 3, "W": 5}) for d in sym_t.shape)


@pytest.mark.parametrize("kw, x, param, found", [
    (dict(shape=[256, 4, 3]), PortType("vector", (B, 4096)), "shape", "[256, 4, 3]"),
    (dict(shape=[7, -1]), PortType("vector", (B, 4096)), "shape", "[7, -1]"),
    (dict(shape=[-1, -1]), PortType("vector", (B, 16)), "shape", "[-1, -1]"),
    (dict(shape=[0, 16]), PortType("vector", (B, 16)), "shape", "[0, 16]"),
    (dict(shape=[8, 4, 4]), fmap(8, H, W), "shape", "[8, 4, 4]"),           # static sizes of a symbolic input
    (dict(shape=[3, -1]), fmap(8, H, W), "shape", "[3, -1]"),               # 3 need not divide 8*H*W
    (dict(shape=[16], kind="featuremap"), PortType("vector", (B, 16)), "kind", "featuremap"),
    (dict(shape=[16], kind="text"), PortType("vector", (B, 16)), "kind", "text"),
])
def test_reshape_errors_are_located(kw, x, param, found):
    with pytest.raises(InferError) as e:
        ReshapeBlock(**kw).infer(x=x)
    assert e.value.param == param and e.value.found == found
    if kw.get("kind") == "featuremap":
        assert e.value.hint == "did you mean `feature_map`?"


def test_a_bad_reshape_in_a_spec_is_located():
    text = SPEC.replace("kind: latent, shape: [B, 8, 1, 1]", "kind: vector, shape: [B, 4096]").format(op=0).replace(
        "{block: conv_transpose2d, in: z, out_channels: 4, kernel: 3, stride: 2, output_padding: 0}",
        "{block: reshape, in: z, shape: [256, 4, 3]}")
    with pytest.raises(SpecError) as exc:
        composer.loads(text, "spec.yaml")
    (d,) = exc.value.diagnostics
    assert d.path == "blocks.up.shape" and d.loc.line == 5 and "3072 elements" in d.message and "4096" in d.message

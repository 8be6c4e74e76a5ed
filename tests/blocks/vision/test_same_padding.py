"""TensorFlow "same" padding (`padding: same`) on conv2d, conv_bn_act, inverted_residual and mbconv:
outputs equal an explicit F.pad + conv reference for every kernel, stride, dilation and input
parity; the padding is constant where the dims fix it and computed from the runtime shape where
they do not (also in ONNX); state-dict keys are those of the default padding; mbconv without SE."""

from __future__ import annotations

import math
import sys
from functools import partial

import onnx
import pytest
import torch
import torch.nn.functional as F
from pydantic import ValidationError
from torch import nn
from torchvision.models.efficientnet import MBConv as TVMBConv, MBConvConfig
from torchvision.models.mobilenetv2 import InvertedResidual as TVInvertedResidualV2
from torchvision.models.mobilenetv3 import InvertedResidual as TVInvertedResidualV3, InvertedResidualConfig
from torchvision.ops import Conv2dNormActivation

import composer
from blocks.core.conv import Conv2d, Conv2dSame
from blocks.vision.efficientnet import MBConv
from blocks.vision.layers import ConvBNActBlock, SqueezeExcitation
from blocks.vision.mobilenet import InvertedResidual
from composer import SpecError
from composer.dims import evaluate, format_dim, sym
from composer.runtime import Session
from composer.types import PortType
from tests.blocks.vision._support import n_params, randomize

export = sys.modules["composer.export"].export

B = sym("B")
pytestmark = pytest.mark.usefixtures("one_thread")


# ---- the reference: TensorFlow's rule, written out ------------------------------------------


def tf_pads(h: int, w: int, kernel, stride, dilation) -> tuple[int, int, int, int]:
    """(left, right, top, bottom) of TF "same": total max((ceil(n/s) - 1)*s + (k-1)*d + 1 - n, 0), the
    smaller half first."""
    out = []
    for n, k, s, d in ((w, kernel[1], stride[1], dilation[1]), (h, kernel[0], stride[0], dilation[0])):
        total = max((math.ceil(n / s) - 1) * s + (k - 1) * d + 1 - n, 0)
        out += [total // 2, total - total // 2]
    return tuple(out)


def tf_same(conv: nn.Conv2d) -> nn.Conv2d:
    """Make a reference's conv pad as TF "same": no padding of its own, an explicit F.pad before it."""
    conv.padding = (0, 0)
    conv.register_forward_pre_hook(lambda m, args: (F.pad(args[0], tf_pads(*args[0].shape[-2:], m.kernel_size,
                                                                          m.stride, m.dilation)),))
    return conv


def port(c: int, how: str, h: int, w: int) -> PortType:
    """The input type a block is built for: symbolic dims (padding computed at run time), the static
    size, or dims known to be even (constant padding at stride 2)."""
    if how == "static":
        return PortType("feature_map", (2, c, h, w))
    m = 2 if how == "multiple" else 1
    return PortType("feature_map", (B, c, sym("H", m), sym("W", m)))


def inferred(block, x: PortType, h: int, w: int) -> tuple[int, ...]:
    return tuple(evaluate(d, {"B": 2, "H": h, "W": w}) for d in block.infer(x=x).shape)


def same_convs(module: nn.Module) -> list[Conv2dSame]:
    return [m for m in module.modules() if isinstance(m, Conv2dSame)]


# ---- conv2d -----------------------------------------------------------------------------------


@pytest.mark.parametrize("how", ["runtime", "static"])
@pytest.mark.parametrize("dilation", [1, 2])
@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("kernel", [1, 2, 3, 4, 5])
def test_conv2d_matches_explicit_pad(kernel, stride, dilation, how):
    block = Conv2d(out_channels=8, kernel=kernel, stride=stride, dilation=dilation, padding="same")
    torch.manual_seed(0)
    for h, w in [(15, 16), (16, 13)]:
        x = port(4, how, h, w)
        conv = block.build(x=x).eval()
        inp = torch.randn(2, 4, h, w)
        k, s, d = (kernel, kernel), (stride, stride), (dilation, dilation)
        ref = F.conv2d(F.pad(inp, tf_pads(h, w, k, s, d)), conv.weight, conv.bias, s, 0, d)
        with torch.no_grad():
            out = conv(inp)
        assert out.shape[-2:] == (math.ceil(h / stride), math.ceil(w / stride))
        assert tuple(out.shape) == inferred(block, x, h, w)
        torch.testing.assert_close(out, ref, atol=1e-6, rtol=0)
        assert block.param_count(x=x) == n_params(conv)
        assert list(conv.state_dict()) == ["weight", "bias"]           # the keys of any conv2d


@pytest.mark.parametrize("kernel", [2, 3, 5])
def test_conv2d_on_even_dims_pads_a_constant(kernel):
    """With H and W known to be even, stride 2 pads max(k - 2, 0) in total, fixed when the module is built."""
    block = Conv2d(out_channels=8, kernel=kernel, stride=2, padding="same")
    x = port(4, "multiple", 0, 0)
    conv = block.build(x=x).eval()
    total = max(kernel - 2, 0)
    if total == 0:                                          # nothing to pad: a plain conv
        assert type(conv) is nn.Conv2d and conv.padding == (0, 0)
    else:
        assert isinstance(conv, Conv2dSame) and conv.pad_h == conv.pad_w == (total // 2, total - total // 2)
    for h, w in [(16, 14), (10, 20)]:
        inp = torch.randn(2, 4, h, w)
        ref = F.conv2d(F.pad(inp, tf_pads(h, w, (kernel,) * 2, (2, 2), (1, 1))), conv.weight, conv.bias, 2)
        with torch.no_grad():
            torch.testing.assert_close(conv(inp), ref, atol=1e-6, rtol=0)


def test_conv2d_mixed_strides_and_plain_conv_where_symmetric():
    block = Conv2d(out_channels=8, kernel=[3, 5], stride=[2, 1], dilation=[1, 2], padding="same")
    x = PortType("feature_map", (B, 4, sym("H"), 21))
    conv = block.build(x=x).eval()
    assert isinstance(conv, Conv2dSame) and conv.pad_h is None and conv.pad_w == (4, 4)
    inp = torch.randn(2, 4, 11, 21)
    ref = F.conv2d(F.pad(inp, tf_pads(11, 21, (3, 5), (2, 1), (1, 2))), conv.weight, conv.bias, (2, 1), 0, (1, 2))
    with torch.no_grad():
        torch.testing.assert_close(conv(inp), ref, atol=1e-6, rtol=0)
    assert [format_dim(d) for d in block.infer(x=x).shape] == ["B", "8", "ceil(H/2)", "21"]
    # stride 1, odd kernel: symmetric, so a plain conv padding (k - 1) // 2 (as `padding: 1`)
    plain = Conv2d(out_channels=8, padding="same").build(x=x)
    assert type(plain) is nn.Conv2d and plain.padding == (1, 1)
    # a 1x1 kernel never pads, whatever the size
    assert type(Conv2d(out_channels=8, kernel=1, stride=2, padding="same").build(x=x)) is nn.Conv2d


# ---- conv_bn_act, inverted_residual, mbconv at stride 2 --------------------------------------


def _check_block(block, ref: nn.Module, cin: int, how: str, sizes):
    default = block.model_copy(update={"padding": "symmetric"})
    for h, w in sizes:
        x = port(cin, how, h, w)
        ours = block.build(x=x)
        expect = {k: v.shape for k, v in default.build(x=x).state_dict().items()}
        assert {k: v.shape for k, v in ours.state_dict().items()} == expect    # same keys as the default
        assert list(ours.state_dict()) == list(ref.state_dict())
        ours.load_state_dict(ref.state_dict())                                 # copied in by key
        ours.eval()
        (conv,) = same_convs(ours)                                              # the stride-2 (depthwise) conv
        assert (conv.pad_h is not None and conv.pad_w is not None) == (how != "runtime")
        inp = torch.randn(2, cin, h, w)
        with torch.no_grad():
            out = ours(inp)
            torch.testing.assert_close(out, ref(inp), atol=1e-6, rtol=0)
        assert out.shape[-2:] == (math.ceil(h / 2), math.ceil(w / 2))
        assert tuple(out.shape) == inferred(block, x, h, w)
        if block.param_count(x=x) is not None:
            assert block.param_count(x=x) == n_params(ours)


HOWS = [("runtime", [(15, 16), (16, 13)]), ("static", [(15, 16), (16, 13)]), ("multiple", [(16, 14)])]


@pytest.mark.parametrize("how,sizes", HOWS, ids=[h for h, _ in HOWS])
@pytest.mark.parametrize("kernel", [3, 5])
def test_conv_bn_act(kernel, how, sizes):
    block = ConvBNActBlock(out_channels=8, kernel=kernel, stride=2, padding="same", activation="silu")
    ref = randomize(Conv2dNormActivation(4, 8, kernel, 2, activation_layer=nn.SiLU))
    tf_same(ref[0])
    _check_block(block, ref, 4, how, sizes)


@pytest.mark.parametrize("how,sizes", HOWS, ids=[h for h, _ in HOWS])
@pytest.mark.parametrize("style", ["v2", "v3"])
def test_inverted_residual(style, how, sizes):
    if style == "v2":
        block = InvertedResidual(out_channels=16, stride=2, expand_ratio=2.0, padding="same")
        ref = TVInvertedResidualV2(8, 16, 2, expand_ratio=2)
        dw = ref.conv[1][0]
    else:
        block = InvertedResidual(out_channels=16, kernel=5, stride=2, expanded_channels=24, se=True,
                                 activation="hardswish", style="v3", padding="same")
        ref = TVInvertedResidualV3(InvertedResidualConfig(8, 5, 24, 16, True, "HS", 2, 1, 1.0),
                                   partial(nn.BatchNorm2d, eps=0.001, momentum=0.01))
        dw = ref.block[1][0]
    tf_same(dw)
    _check_block(block, randomize(ref), 8, how, sizes)


@pytest.mark.parametrize("how,sizes", HOWS, ids=[h for h, _ in HOWS])
@pytest.mark.parametrize("kernel", [3, 5])
def test_mbconv(kernel, how, sizes):
    block = MBConv(out_channels=16, kernel=kernel, stride=2, expand_ratio=2.0, padding="same")
    ref = TVMBConv(MBConvConfig(2, kernel, 2, 8, 16, 1), 0.0, nn.BatchNorm2d)
    tf_same(ref.block[1][0])
    _check_block(block, randomize(ref), 8, how, sizes)


def test_symbolic_shapes_unify():
    """ceil(H/2) in general; on a multiple of 32 it is H/2, so a chain of same-padded blocks types as
    the symmetric ones do."""
    x32 = PortType("feature_map", (B, 8, sym("H", 32), sym("W")))
    for block in (ConvBNActBlock(out_channels=8, stride=2, padding="same"),
                  InvertedResidual(out_channels=8, stride=2, padding="same"),
                  MBConv(out_channels=8, kernel=5, stride=2, padding="same"),
                  Conv2d(out_channels=8, kernel=4, stride=2, padding="same")):
        t = block.infer(x=x32)
        assert [format_dim(d) for d in t.shape] == ["B", "8", "H/2", "ceil(W/2)"]
        if block.name != "conv2d":
            assert t == block.model_copy(update={"padding": "symmetric"}).infer(x=x32)
        t = block.infer(x=t)
        assert [format_dim(d) for d in t.shape] == ["B", "8", "H/4", "ceil(W/4)"]


def test_bad_padding_is_rejected():
    for cls in (ConvBNActBlock, InvertedResidual, MBConv):
        for bad in ("valid", "SAME", 1, None):
            with pytest.raises(ValidationError):
                cls.model_validate({"out_channels": 8, "padding": bad})
    with pytest.raises(ValidationError):
        Conv2d.model_validate({"out_channels": 8, "padding": "valid"})
    cba = "block: conv_bn_act, in: stem, out_channels: 8, kernel: 5, stride: 2, padding: "
    text = SPEC.format(h="{sizes: [63, 64]}", w="{sizes: [47, 50]}").replace(cba + "same", cba + "sme")
    with pytest.raises(SpecError) as exc:
        composer.loads(text, "spec.yaml")
    (d,) = exc.value.diagnostics
    assert d.code == "E105" and d.path == "blocks.cba.padding" and d.loc.line == 11
    assert "'symmetric'" in d.expected and "'same'" in d.expected and '"sme"' in d.found


# ---- mbconv without squeeze-excite ----------------------------------------------------------


def test_mbconv_without_squeeze_excite():
    x = PortType("feature_map", (B, 16, sym("H"), sym("W")))
    block = MBConv(out_channels=16, se_reduction=None)
    m = block.build(x=x).eval()
    assert not any(isinstance(mod, SqueezeExcitation) for mod in m.modules())
    assert not any(".fc1." in k or ".fc2." in k for k in m.state_dict())
    hidden, squeeze = 96, 4                                    # make_divisible(16 * 6, 8), 16 // 4
    se = 2 * hidden * squeeze + hidden + squeeze
    assert block.param_count(x=x) == n_params(m) == MBConv(out_channels=16).param_count(x=x) - se
    assert MBConv.model_validate({"out_channels": 16, "se_reduction": None}) == block
    inp = torch.randn(2, 16, 9, 9)
    with torch.no_grad():
        assert torch.equal(m(inp), m.block(inp) + inp)         # the residual stays (stride 1, same channels)


# ---- ONNX -------------------------------------------------------------------------------------

SPEC = """\
pipeline: tf_same
seed: 0
dims:
  B: {{sizes: [1, 2], example: 2}}
  H: {h}
  W: {w}
inputs:
  image: {{kind: image, shape: [B, 3, H, W]}}
blocks:
  stem: {{block: conv2d, in: image, out_channels: 8, kernel: 3, stride: 2, padding: same}}
  cba: {{block: conv_bn_act, in: stem, out_channels: 8, kernel: 5, stride: 2, padding: same}}
  ir: {{block: inverted_residual, in: cba, out_channels: 16, stride: 2, expand_ratio: 2.0, padding: same}}
  mb: {{block: mbconv, in: ir, out_channels: 16, kernel: 5, stride: 2, padding: same, se_reduction: null}}
outputs:
  features: mb
"""


def _pad_inputs_from_shapes(path) -> list[bool]:
    """For each Pad node of the graph: whether its pads input is computed from a Shape op."""
    graph = onnx.load(str(path)).graph
    producer = {o: n for n in graph.node for o in n.output}

    def from_shape(name: str, seen: set) -> bool:
        n = producer.get(name)
        if n is None or name in seen:
            return False
        seen.add(name)
        return n.op_type == "Shape" or any(from_shape(i, seen) for i in n.input if i)

    return [from_shape(n.input[1], set()) for n in graph.node if n.op_type == "Pad"]


def test_onnx_runtime_padding(tmp_path):
    """Odd and even sizes with no multiple_of: the padding is shape arithmetic in the graph, and
    onnxruntime matches torch at every size, including sizes neither traced nor verified."""
    pipe = composer.loads(SPEC.format(h="{sizes: [63, 64]}", w="{sizes: [47, 50]}"), "spec.yaml")
    t = pipe.graph.types["mb"]["out"]
    assert [format_dim(d) for d in t.shape] == ["B", "16", "ceil(H/16)", "ceil(W/16)"]
    model = pipe.build(seed=0)
    assert all(c.pad_h is None and c.pad_w is None for c in same_convs(model)) and len(same_convs(model)) == 4
    rep = export(model, tmp_path / "m.onnx")
    ver = rep["verification"]
    assert ver["passed"] and ver["max_abs"] < 1e-4
    assert [r["sizes"] for r in ver["runs"]] == [{"B": 1, "H": 63, "W": 47}, {"B": 2, "H": 64, "W": 50}]
    assert all(isinstance(d, str) for d in rep["outputs"][0]["shape"][2:])     # still dynamic
    pads = _pad_inputs_from_shapes(tmp_path / "m.onnx")
    assert len(pads) == 4 and all(pads)
    sess = Session(tmp_path / "m.onnx", device="cpu")
    model.eval()
    for h, w in [(61, 45), (33, 32)]:
        image = torch.randn(2, 3, h, w)
        with torch.no_grad():
            expected = model(image=image)["features"]
        got = torch.from_numpy(sess.run({"image": image.numpy()})["features"])
        assert got.shape[-2:] == (math.ceil(h / 16), math.ceil(w / 16))
        torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)


def test_onnx_constant_padding(tmp_path):
    """With H and W multiples of 32, every stride-2 pad is a constant: no shape math in the graph."""
    pipe = composer.loads(SPEC.format(h="{multiple_of: 32, sizes: [32, 64]}", w="{multiple_of: 32, sizes: [64, 32]}"),
                          "spec.yaml")
    t = pipe.graph.types["mb"]["out"]
    assert [format_dim(d) for d in t.shape] == ["B", "16", "H/16", "W/16"]
    model = pipe.build(seed=0)
    convs = same_convs(model)
    assert len(convs) == 4
    assert [(c.pad_h, c.pad_w) for c in convs] == [((0, 1), (0, 1)), ((1, 2), (1, 2)), ((0, 1), (0, 1)),
                                                   ((1, 2), (1, 2))]
    rep = export(model, tmp_path / "c.onnx")
    assert rep["verification"]["passed"] and rep["verification"]["max_abs"] < 1e-4
    assert "Shape" not in {n.op_type for n in onnx.load(str(tmp_path / "c.onnx")).graph.node}
    assert not any(_pad_inputs_from_shapes(tmp_path / "c.onnx"))   # constant (the exporter may fold them into Conv)

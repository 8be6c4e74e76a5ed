"""Generic vision parts: conv_bn_act, squeeze_excite, classifier (shapes, layouts, parity, bad params)."""

from __future__ import annotations

import pytest
import torch
from pydantic import ValidationError
from torch import nn
from torchvision.ops.misc import Conv2dNormActivation, SqueezeExcitation

from blocks.vision.layers import Classifier, ConvBNActBlock, SqueezeExcite, make_divisible
from composer.dims import evaluate, format_dim, sym
from composer.types import InferError, PortType
from tests.blocks.vision._support import n_params, randomize

B, H, W = sym("B"), sym("H"), sym("W")
H32, W32 = sym("H", 32), sym("W", 32)

pytestmark = pytest.mark.usefixtures("one_thread")


def fmap(c, h=H, w=W, kind="feature_map") -> PortType:
    return PortType(kind, (B, c, h, w))


def shape_str(t: PortType) -> list[str]:
    return [format_dim(d) for d in t.shape]


# ---- conv_bn_act ----------------------------------------------------------------------------


def test_conv_bn_act_symbolic_shapes():
    assert shape_str(ConvBNActBlock(out_channels=16, stride=2).infer(x=fmap(3, H32, W32, "image"))) == \
        ["B", "16", "H/2", "W/2"]
    t = ConvBNActBlock(out_channels=16, stride=2).infer(x=fmap(3))
    assert t.kind == "feature_map" and shape_str(t) == ["B", "16", "ceil(H/2)", "ceil(W/2)"]
    t = ConvBNActBlock(out_channels=8, kernel=5, stride=2, dilation=2).infer(x=fmap(8))
    for h in (31, 32, 33, 64):
        ref = nn.Conv2d(8, 8, 5, 2, padding=4, dilation=2)(torch.zeros(1, 8, h, h))
        assert evaluate(t.shape[2], {"H": h}) == ref.shape[2]
    assert ConvBNActBlock(out_channels=8, kernel=1).infer(x=fmap(4, 7, 9)).shape == (B, 8, 7, 9)


@pytest.mark.parametrize("activation,groups", [("relu", 1), ("hardswish", "depthwise"), ("none", 1)])
def test_conv_bn_act_matches_torchvision(activation, groups):
    x = PortType("feature_map", (2, 8, 12, 12))
    block = ConvBNActBlock(out_channels=8, kernel=3, stride=2, groups=groups, activation=activation, eps=1e-3)
    ours = block.build(x=x)
    act = {"relu": nn.ReLU, "hardswish": nn.Hardswish, "none": None}[activation]
    ref = randomize(Conv2dNormActivation(8, 8, 3, 2, groups=8 if groups == "depthwise" else 1,
                                         norm_layer=lambda c: nn.BatchNorm2d(c, eps=1e-3), activation_layer=act),
                    std=0.3)
    assert list(ours.state_dict()) == list(ref.state_dict())
    ours.load_state_dict(ref.state_dict())
    inp = torch.randn(2, 8, 12, 12)
    with torch.no_grad():
        out = ours.eval()(inp)
    torch.testing.assert_close(out, ref(inp), atol=1e-5, rtol=0)
    assert tuple(out.shape) == block.infer(x=x).shape
    assert block.param_count(x=x) == n_params(ours)
    assert len(ours) == (2 if activation == "none" else 3)


def test_conv_bn_act_rejects_bad_input_and_params():
    with pytest.raises(InferError, match="groups=3"):
        ConvBNActBlock(out_channels=8, groups=3).infer(x=fmap(8))
    with pytest.raises(InferError) as e:
        ConvBNActBlock(out_channels=8).infer(x=PortType("feature_map", (B, sym("C"), H, W)))
    assert e.value.code == "E302"
    with pytest.raises(InferError, match="larger than"):
        ConvBNActBlock(out_channels=8, kernel=[2, 2]).infer(x=fmap(3, 1, 1))
    with pytest.raises(InferError, match="rank-4"):
        ConvBNActBlock(out_channels=8).infer(x=PortType("sequence", (B, 4, 8)))
    for bad in ({"out_channels": 0}, {"out_channels": "8"}, {"out_channels": 8, "stride": 0},
                {"out_channels": 8, "activation": "swish"}, {"out_channels": 8, "padding": 1},
                {"out_channels": 8, "groups": "pointwise"}, {}):
        with pytest.raises(ValidationError):
            ConvBNActBlock.model_validate(bad)


def test_conv_bn_act_builds_on_meta():
    with torch.device("meta"):
        m = ConvBNActBlock(out_channels=64, stride=2).build(x=PortType("image", (1, 3, 224, 224)))
    assert m[0].weight.is_meta and n_params(m) == 64 * 27 + 128


# ---- squeeze_excite -------------------------------------------------------------------------


def test_squeeze_excite_matches_torchvision():
    x = fmap(32)
    block = SqueezeExcite(squeeze_channels=8, activation="silu")
    assert block.infer(x=x) == x
    ours = block.build(x=x)
    ref = randomize(SqueezeExcitation(32, 8, activation=nn.SiLU), std=0.3)
    assert list(ours.state_dict()) == list(ref.state_dict())
    ours.load_state_dict(ref.state_dict())
    inp = torch.randn(2, 32, 5, 7)
    torch.testing.assert_close(ours.eval()(inp), ref(inp), atol=1e-5, rtol=0)
    assert block.param_count(x=x) == n_params(ours) == 2 * 32 * 8 + 40


def test_squeeze_excite_channel_rules():
    assert SqueezeExcite().build(x=fmap(32)).fc1.out_channels == 8               # C // 4
    assert SqueezeExcite().build(x=fmap(3)).fc1.out_channels == 1                # at least 1
    assert SqueezeExcite(round_to=8).build(x=fmap(72)).fc1.out_channels == make_divisible(18, 8) == 24
    assert SqueezeExcite().infer(x=fmap(3, kind="image")).kind == "feature_map"
    with pytest.raises(ValidationError):
        SqueezeExcite(reduction=0)
    with pytest.raises(InferError):
        SqueezeExcite().infer(x=PortType("vector", (B, 8)))


def test_make_divisible():
    assert [make_divisible(v, 8) for v in (16, 17.6, 32 * 0.5, 3, 35.2, 1280 * 1.1)] == [16, 16, 16, 8, 32, 1408]


# ---- classifier -----------------------------------------------------------------------------


def test_classifier_on_vector_has_torchvision_layouts():
    x = PortType("vector", (B, 1280))
    block = Classifier(num_classes=1000, dropout=0.2)
    assert block.infer(x=x) == PortType("logits", (B, 1000))
    m = block.build(x=x)
    assert list(m.state_dict()) == ["1.weight", "1.bias"]                      # Sequential(Dropout, Linear)
    assert block.param_count(x=x) == n_params(m) == 1281000
    v3 = Classifier(num_classes=1000, hidden=1280, activation="hardswish", dropout=0.2)
    m = v3.build(x=PortType("vector", (B, 960)))
    assert list(m.state_dict()) == ["0.weight", "0.bias", "3.weight", "3.bias"]  # Linear, act, Dropout, Linear
    assert isinstance(m[1], nn.Hardswish) and m[2].p == 0.2
    assert v3.param_count(x=PortType("vector", (B, 960))) == n_params(m)
    assert m.eval()(torch.randn(3, 960)).shape == (3, 1000)


@pytest.mark.parametrize("pool", ["first", "mean"])
def test_classifier_pools_a_sequence(pool):
    x = PortType("sequence", (B, sym("T"), 16))
    block = Classifier(num_classes=5, pool=pool)
    assert block.infer(x=x) == PortType("logits", (B, 5))
    m = block.build(x=x).eval()
    seq = torch.randn(2, 7, 16)
    vec = seq[:, 0] if pool == "first" else seq.mean(1)
    torch.testing.assert_close(m(seq), m[1](vec))


def test_classifier_rejects_bad_input_and_params():
    with pytest.raises(InferError, match="rank-2 or 3"):
        Classifier(num_classes=10).infer(x=fmap(8))
    with pytest.raises(InferError, match="fixed size"):
        Classifier(num_classes=10).infer(x=PortType("vector", (B, sym("C"))))
    with pytest.raises(InferError):
        Classifier(num_classes=10).infer(x=PortType("vector", (B, 8), "int64"))
    for bad in ({}, {"num_classes": 0}, {"num_classes": 10, "dropout": 1.0}, {"num_classes": 10, "pool": "max"},
                {"num_classes": 10, "hidden": 0}, {"num_classes": 10, "out_features": 3}):
        with pytest.raises(ValidationError):
            Classifier.model_validate(bad)

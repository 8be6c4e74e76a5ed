"""EfficientNet B0-B7: torchvision parity (identical keys, logits), exact param counts, shapes, mbconv, pipeline."""

from __future__ import annotations

import pytest
import torch
import torchvision
from pydantic import ValidationError
from torch import nn
from torchvision.models.efficientnet import MBConv as TVMBConv, MBConvConfig

import composer
from blocks.vision.efficientnet import EfficientNet, MBConv
from composer.dims import evaluate, format_dim, sym
from composer.types import InferError, PortType
from composer.weights import map_state_dict
from tests.blocks.vision._support import n_params, randomize
from tests.conftest import ROOT

B, H, W = sym("B"), sym("H"), sym("W")
IMAGE32 = PortType("image", (B, 3, sym("H", 32), sym("W", 32)))
VARIANTS = ["b0", "b1", "b2", "b3", "b4", "b5", "b6", "b7"]

pytestmark = pytest.mark.usefixtures("one_thread")


# ---- the backbone ---------------------------------------------------------------------------


@pytest.mark.parametrize("variant", ["b0", "b2"])
def test_matches_torchvision(variant, image):
    ref = randomize(getattr(torchvision.models, f"efficientnet_{variant}")(weights=None, num_classes=10))
    ours = EfficientNet(variant=variant, num_classes=10).build(x=PortType("image", (2, 3, 64, 64)))
    assert list(ours.state_dict()) == list(ref.state_dict())
    ours.load_state_dict(ref.state_dict())      # strict: identical keys and shapes
    ours.eval()
    with torch.no_grad():
        pooled, features, logits = ours(image)
        expected_logits = ref(image)
        expected_map = ref.features(image)
    assert (logits - expected_logits).abs().max().item() <= 1e-4
    torch.testing.assert_close(features["c5"], expected_map, atol=1e-4, rtol=0)
    torch.testing.assert_close(pooled, expected_map.mean((2, 3)), atol=1e-4, rtol=0)


@pytest.mark.parametrize("variant", VARIANTS)
def test_layout_matches_torchvision_on_meta(variant):
    """Every depth: identical keys and shapes, norm eps/momentum and head dropout as torchvision."""
    with torch.device("meta"):
        ref = getattr(torchvision.models, f"efficientnet_{variant}")(weights=None)
        ours = EfficientNet(variant=variant, num_classes=1000).build(x=PortType("image", (1, 3, 224, 224)))
    assert {k: v.shape for k, v in ours.state_dict().items()} == {k: v.shape for k, v in ref.state_dict().items()}
    assert list(ours.state_dict()) == list(ref.state_dict())
    norms = lambda m: [(x.eps, x.momentum) for x in m.modules() if isinstance(x, nn.BatchNorm2d)]  # noqa: E731
    assert norms(ours) == norms(ref)
    assert ours.classifier[0].p == ref.classifier[0].p
    sd = lambda m: [x.p for x in m.modules() if type(x).__name__ == "StochasticDepth"]  # noqa: E731
    assert sd(ours) == pytest.approx(sd(ref))


@pytest.mark.parametrize("variant,count", [("b0", 5_288_548), ("b7", 66_347_960)])
def test_param_counts(variant, count):
    with torch.device("meta"):
        m = EfficientNet(variant=variant, num_classes=1000).build(x=PortType("image", (1, 3, 224, 224)))
    assert all(p.is_meta for p in m.parameters())
    assert n_params(m) == count


def test_symbolic_outputs():
    out = EfficientNet(variant="b0", num_classes=1000).infer(x=IMAGE32)
    assert list(out) == ["pooled", "features", "logits"]
    assert out["pooled"] == PortType("vector", (B, 1280)) and out["logits"] == PortType("logits", (B, 1000))
    feats = out["features"]
    assert {n: [format_dim(d) for d in t.shape] for n, t in feats.fields} == {
        "c2": ["B", "24", "H/4", "W/4"], "c3": ["B", "40", "H/8", "W/8"],
        "c4": ["B", "112", "H/16", "W/16"], "c5": ["B", "1280", "H/32", "W/32"]}
    assert feats.get("strides") == (4, 8, 16, 32) and feats.get("channels") == (24, 40, 112, 1280)
    b7 = EfficientNet(variant="b7").infer(x=IMAGE32)
    assert list(b7) == ["pooled", "features"] and b7["pooled"].shape == (B, 2560)
    assert b7["features"].get("channels") == (48, 80, 224, 2560)


def test_runtime_shapes_match_inference():
    x = PortType("image", (B, 3, H, W))
    block = EfficientNet(variant="b0")
    out = block.infer(x=x)
    m = block.build(x=x).eval()
    with torch.no_grad():
        pooled, features = m(torch.randn(1, 3, 50, 71))
    env = {"B": 1, "H": 50, "W": 71}
    assert tuple(pooled.shape) == tuple(evaluate(d, env) for d in out["pooled"].shape)
    for name, t in out["features"].fields:
        assert tuple(features[name].shape) == tuple(evaluate(d, env) for d in t.shape), name


def test_rejects_bad_params_and_inputs():
    for bad in ({"variant": "b8"}, {"variant": "v2_s"}, {"num_classes": 0}, {"dropout": -0.1},
                {"stochastic_depth_prob": 1.0}, {"width_mult": 1.0}):
        with pytest.raises(ValidationError):
            EfficientNet.model_validate(bad)
    with pytest.raises(InferError, match="rank-4"):
        EfficientNet().infer(x=PortType("vector", (B, 3)))
    with pytest.raises(InferError, match="fixed size"):
        EfficientNet().infer(x=PortType("image", (B, sym("C"), H, W)))


# ---- the mbconv part ------------------------------------------------------------------------


@pytest.mark.parametrize("t,k,s,cin,cout", [(1, 3, 1, 32, 16), (6, 5, 2, 24, 40), (6, 3, 1, 40, 40)])
def test_mbconv_matches_torchvision(t, k, s, cin, cout):
    x = PortType("feature_map", (B, cin, H, W))
    block = MBConv(out_channels=cout, kernel=k, stride=s, expand_ratio=float(t), stochastic_depth_prob=0.1)
    ours = block.build(x=x)
    ref = randomize(TVMBConv(MBConvConfig(t, k, s, cin, cout, 1), 0.1, nn.BatchNorm2d))
    assert list(ours.state_dict()) == list(ref.state_dict())
    ours.load_state_dict(ref.state_dict())
    inp = torch.randn(2, cin, 9, 9)
    with torch.no_grad():
        out = ours.eval()(inp)
    torch.testing.assert_close(out, ref(inp), atol=1e-5, rtol=0)
    assert tuple(out.shape) == tuple(evaluate(d, {"B": 2, "H": 9, "W": 9}) for d in block.infer(x=x).shape)
    assert block.param_count(x=x) == n_params(ours)


def test_mbconv_stochastic_depth():
    x = PortType("feature_map", (B, 16, H, W))
    m = MBConv(out_channels=16, stochastic_depth_prob=0.5).build(x=x)
    inp = torch.randn(64, 16, 4, 4)
    torch.manual_seed(0)
    with torch.no_grad():
        m.train()
        branch = m.block(inp)
        dropped = m(inp) - inp
        m.eval()
        assert torch.equal(m(inp), m.block(inp) + inp)             # identity in eval
    # in training each sample's branch is dropped (0) or scaled by 1 / (1 - p) = 2
    zero = dropped.flatten(1).abs().amax(1) == 0
    assert 0 < zero.sum() < 64
    torch.testing.assert_close(dropped[~zero], 2 * branch[~zero])


def test_mbconv_symbolic_and_bad_params():
    t = MBConv(out_channels=40, kernel=5, stride=2).infer(x=PortType("feature_map", (B, 24, sym("H", 32), W)))
    assert [format_dim(d) for d in t.shape] == ["B", "40", "H/2", "ceil(W/2)"]
    for bad in ({"out_channels": 8, "stride": 3}, {"out_channels": 8, "kernel": 2}, {"out_channels": 8, "se_reduction": 0},
                {"out_channels": 8, "stochastic_depth_prob": 1.5}, {"out_channels": 8, "expand_ratio": "6"}):
        with pytest.raises(ValidationError):
            MBConv.model_validate(bad)
    with pytest.raises(InferError):
        MBConv(out_channels=8).infer(x=PortType("sequence", (B, 3, 8)))


# ---- the pipeline ---------------------------------------------------------------------------


def test_pipeline_matches_torchvision(image):
    pipe = composer.load(ROOT / "pipelines" / "efficientnet_b0.yaml")
    model = pipe.build(seed=0)
    ref = randomize(torchvision.models.efficientnet_b0(weights=None))
    assert n_params(model) == n_params(ref) == 5_288_548
    mapped, report = map_state_dict(model, ref.state_dict())  # a torchvision checkpoint, by order
    assert report.strategy == "order"
    model.load_state_dict(mapped)
    model.eval()
    with torch.no_grad():
        out = model(image=image)
        expected = ref(image)
    assert (out["logits"] - expected).abs().max().item() <= 1e-4
    torch.testing.assert_close(out["probs"], expected.softmax(-1), atol=1e-5, rtol=0)


def test_pipeline_takes_a_torchvision_checkpoint():
    """composer.weights maps a torchvision state dict onto the pipeline: at least the whole backbone
    (by block prefix: `features.*` into `backbone`), or everything (by order)."""
    model = composer.load(ROOT / "pipelines" / "efficientnet_b0.yaml").build(seed=0)
    ref = randomize(torchvision.models.efficientnet_b0(weights=None))
    mapped, report = map_state_dict(model, ref.state_dict())
    model.load_state_dict(mapped, strict=False)
    assert report.strategy == "order"
    own = model.state_dict()
    for key, tensor in ref.state_dict().items():
        if key.startswith("features."):
            assert torch.equal(own["backbone." + key], tensor), key

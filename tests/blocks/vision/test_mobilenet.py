"""MobileNet V2/V3: torchvision parity (identical keys, logits), exact param counts, shapes, parts, pipeline."""

from __future__ import annotations

from functools import partial
import pytest
import torch
import torchvision
from pydantic import ValidationError
from torch import nn
from torchvision.models.mobilenetv2 import InvertedResidual as TVInvertedResidualV2
from torchvision.models.mobilenetv3 import InvertedResidual as TVInvertedResidualV3, InvertedResidualConfig

import composer
from blocks.vision.mobilenet import InvertedResidual, MobileNet
from composer.dims import evaluate, format_dim, sym
from composer.types import InferError, PortType
from composer.weights import map_state_dict
from tests.blocks.vision._support import n_params, randomize
from tests.conftest import ROOT

B, H, W = sym("B"), sym("H"), sym("W")
IMAGE32 = PortType("image", (B, 3, sym("H", 32), sym("W", 32)))
TORCHVISION = {"v2": torchvision.models.mobilenet_v2, "v3_small": torchvision.models.mobilenet_v3_small,
               "v3_large": torchvision.models.mobilenet_v3_large}

pytestmark = pytest.mark.usefixtures("one_thread")


# ---- the backbone ---------------------------------------------------------------------------


@pytest.mark.parametrize("variant", ["v2", "v3_small", "v3_large"])
def test_matches_torchvision(variant, image):
    ref = randomize(TORCHVISION[variant](weights=None, num_classes=10))
    block = MobileNet(variant=variant, num_classes=10)
    ours = block.build(x=PortType("image", (2, 3, 64, 64)))
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


@pytest.mark.parametrize("variant,width", [("v2", 0.5), ("v2", 1.4), ("v3_large", 0.75)])
def test_width_mult_matches_torchvision(variant, width, image):
    ref = randomize(TORCHVISION[variant](weights=None, width_mult=width, num_classes=10))
    ours = MobileNet(variant=variant, width_mult=width, num_classes=10).build(x=PortType("image", (2, 3, 64, 64)))
    ours.load_state_dict(ref.state_dict())
    with torch.no_grad():
        assert (ours.eval()(image)[2] - ref(image)).abs().max().item() <= 1e-4


@pytest.mark.parametrize("variant,count", [("v2", 3_504_872), ("v3_small", 2_542_856), ("v3_large", 5_483_032)])
def test_param_counts(variant, count):
    with torch.device("meta"):
        m = MobileNet(variant=variant, num_classes=1000).build(x=PortType("image", (1, 3, 224, 224)))
    assert all(p.is_meta for p in m.parameters())
    assert n_params(m) == count


def test_symbolic_outputs():
    out = MobileNet(variant="v3_large", num_classes=1000).infer(x=IMAGE32)
    assert list(out) == ["pooled", "features", "logits"]
    assert out["pooled"] == PortType("vector", (B, 960))
    assert out["logits"] == PortType("logits", (B, 1000))
    feats = out["features"]
    assert feats.kind == "features"
    assert {n: [format_dim(d) for d in t.shape] for n, t in feats.fields} == {
        "c2": ["B", "24", "H/4", "W/4"], "c3": ["B", "40", "H/8", "W/8"],
        "c4": ["B", "112", "H/16", "W/16"], "c5": ["B", "960", "H/32", "W/32"]}
    assert all(t.kind == "feature_map" for _, t in feats.fields)
    assert feats.get("strides") == (4, 8, 16, 32) and feats.get("channels") == (24, 40, 112, 960)
    v2 = MobileNet(variant="v2").infer(x=IMAGE32)
    assert list(v2) == ["pooled", "features"]                 # no head without num_classes
    assert v2["features"].get("channels") == (24, 32, 96, 1280)


@pytest.mark.parametrize("size", [64, 70])
def test_runtime_shapes_match_inference(size):
    """Also at a size that is not a multiple of 32: ceil-division shapes evaluate to torch's."""
    x = PortType("image", (B, 3, H, W))
    block = MobileNet(variant="v3_small")
    out = block.infer(x=x)
    m = block.build(x=x).eval()
    with torch.no_grad():
        result = m(torch.randn(1, 3, size, size + 8))
    assert len(result) == 2
    pooled, features = result
    env = {"B": 1, "H": size, "W": size + 8}
    assert tuple(pooled.shape) == tuple(evaluate(d, env) for d in out["pooled"].shape)
    assert list(features) == ["c2", "c3", "c4", "c5"]
    for name, t in out["features"].fields:
        assert tuple(features[name].shape) == tuple(evaluate(d, env) for d in t.shape), name


def test_train_mode_keeps_output_structure():
    m = MobileNet(variant="v3_small", num_classes=4).build(x=IMAGE32).train()
    pooled, features, logits = m(torch.randn(2, 3, 32, 32))
    assert logits.shape == (2, 4) and set(features) == {"c2", "c3", "c4", "c5"}


def test_rejects_bad_params_and_inputs():
    for bad in ({"variant": "v4"}, {"variant": "v3_large", "num_classes": 0}, {"width_mult": 0.0},
                {"dropout": 1.5}, {"depth": 50}, {"variant": 2}):
        with pytest.raises(ValidationError):
            MobileNet.model_validate(bad)
    with pytest.raises(InferError, match="rank-4"):
        MobileNet().infer(x=PortType("sequence", (B, 10, 3)))
    with pytest.raises(InferError, match="fixed size"):
        MobileNet().infer(x=PortType("image", (B, sym("C"), H, W)))
    with pytest.raises(InferError):
        MobileNet().infer(x=PortType("image", (B, 3, H, W), "int64"))


# ---- the inverted_residual part -------------------------------------------------------------


def test_inverted_residual_v2_matches_torchvision():
    x = PortType("feature_map", (B, 24, H, W))
    block = InvertedResidual(out_channels=32, stride=2)
    assert [format_dim(d) for d in block.infer(x=x).shape] == ["B", "32", "ceil(H/2)", "ceil(W/2)"]
    ours = block.build(x=x)
    ref = randomize(TVInvertedResidualV2(24, 32, 2, expand_ratio=6))
    assert list(ours.state_dict()) == list(ref.state_dict())
    ours.load_state_dict(ref.state_dict())
    inp = torch.randn(2, 24, 9, 9)
    with torch.no_grad():
        torch.testing.assert_close(ours.eval()(inp), ref(inp), atol=1e-5, rtol=0)


@pytest.mark.parametrize("cin,k,exp,cout,se,act,stride", [(40, 5, 120, 40, True, "HS", 1), (16, 3, 16, 16, True, "RE", 2),
                                                           (24, 3, 72, 24, False, "RE", 1)])
def test_inverted_residual_v3_matches_torchvision(cin, k, exp, cout, se, act, stride):
    x = PortType("feature_map", (B, cin, H, W))
    block = InvertedResidual(out_channels=cout, kernel=k, stride=stride, expanded_channels=exp, se=se,
                             activation="hardswish" if act == "HS" else "relu", style="v3")
    ours = block.build(x=x)
    cnf = InvertedResidualConfig(cin, k, exp, cout, se, act, stride, 1, 1.0)
    ref = randomize(TVInvertedResidualV3(cnf, partial(nn.BatchNorm2d, eps=0.001, momentum=0.01)))
    assert list(ours.state_dict()) == list(ref.state_dict())
    ours.load_state_dict(ref.state_dict())
    inp = torch.randn(2, cin, 8, 8)
    with torch.no_grad():
        out = ours.eval()(inp)
    torch.testing.assert_close(out, ref(inp), atol=1e-5, rtol=0)
    assert tuple(out.shape) == tuple(evaluate(d, {"B": 2, "H": 8, "W": 8}) for d in block.infer(x=x).shape)


def test_inverted_residual_rejects_bad_params():
    with pytest.raises(InferError, match="v3 block layout"):
        InvertedResidual(out_channels=8, se=True).infer(x=PortType("feature_map", (B, 8, H, W)))
    for bad in ({"out_channels": 8, "stride": 3}, {"out_channels": 8, "kernel": 4}, {"out_channels": 8, "style": "v1"},
                {"out_channels": 8, "expand_ratio": 0.0}, {"kernel": 3}):
        with pytest.raises(ValidationError):
            InvertedResidual.model_validate(bad)


# ---- the pipeline ---------------------------------------------------------------------------


def test_pipeline_matches_torchvision(image):
    pipe = composer.load(ROOT / "pipelines" / "mobilenet_v3.yaml")
    model = pipe.build(seed=0)
    ref = randomize(torchvision.models.mobilenet_v3_large(weights=None))
    assert n_params(model) == n_params(ref) == 5_483_032
    mapped, report = map_state_dict(model, ref.state_dict())  # a torchvision checkpoint, by order
    assert report.strategy == "order"
    model.load_state_dict(mapped)
    model.eval()
    with torch.no_grad():
        out = model(image=image)
        expected = ref(image)
    assert set(out) == {"logits", "probs"}
    assert (out["logits"] - expected).abs().max().item() <= 1e-4
    torch.testing.assert_close(out["probs"], expected.softmax(-1), atol=1e-5, rtol=0)


def test_pipeline_takes_a_torchvision_checkpoint():
    """composer.weights maps a torchvision state dict onto the pipeline: at least the whole backbone
    (by block prefix: `features.*` into `backbone`), or everything (by order)."""
    model = composer.load(ROOT / "pipelines" / "mobilenet_v3.yaml").build(seed=0)
    ref = randomize(torchvision.models.mobilenet_v3_large(weights=None))
    mapped, report = map_state_dict(model, ref.state_dict())
    model.load_state_dict(mapped, strict=False)
    assert report.strategy == "order"
    own = model.state_dict()
    for key, tensor in ref.state_dict().items():
        if key.startswith("features."):
            assert torch.equal(own["backbone." + key], tensor), key

"""DenseNet blocks: exact torchvision parity (keys, parameter counts, outputs), symbolic shapes
of the backbone and its parts, param validation, and the parts-built `pipelines/densenet121.yaml`."""

from __future__ import annotations

import pytest
import torch
import torchvision
from pydantic import ValidationError

import composer
from blocks.vision.densenet import DenseBlockPart, DenseNetBackbone, TransitionPart
from composer.dims import sym
from composer.registry import get
from composer.types import InferError, PortType
from composer.weights import load_weights
from tests.blocks.vision._support import n_params, shape_of
from tests.conftest import ROOT

B, H, W = sym("B"), sym("H", 32), sym("W", 32)
IMAGE = PortType("image", (B, 3, H, W))


def test_registered():
    assert get("densenet") is DenseNetBackbone
    assert get("dense_block") is DenseBlockPart
    assert get("transition") is TransitionPart


@pytest.mark.parametrize("depth,count", [(121, 7_978_856), (161, 28_681_000), (169, 14_149_480),
                                         (201, 20_013_928)])
def test_keys_shapes_and_param_count_match_torchvision(depth, count):
    with torch.device("meta"):
        ours = DenseNetBackbone(depth=depth, num_classes=1000).build(IMAGE)
        ref = getattr(torchvision.models, f"densenet{depth}")(weights=None)
    assert n_params(ours) == count == n_params(ref)
    assert [(k, v.shape) for k, v in ours.state_dict().items()] == \
           [(k, v.shape) for k, v in ref.state_dict().items()]


def test_parity_with_torchvision():
    torch.manual_seed(0)
    ref = torchvision.models.densenet121(weights=None).eval()
    ours = DenseNetBackbone(depth=121, num_classes=1000).build(IMAGE).eval()
    ours.load_state_dict(ref.state_dict())  # identical keys, strict
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        pooled, features, logits = ours(x)
        expected = ref(x)
        final = torch.relu(ref.features(x))
    assert (logits - expected).abs().max().item() <= 1e-4
    assert torch.equal(features["c5"], final)
    assert (pooled - final.mean((2, 3))).abs().max().item() <= 1e-5


def test_output_types_match_tensors():
    block = DenseNetBackbone(depth=121, num_classes=10)
    types = block.infer(IMAGE)
    assert list(types) == ["pooled", "features", "logits"]
    ours = block.build(IMAGE).eval()
    env = {"B": 1, "H": 64, "W": 96}
    with torch.no_grad():
        outs = ours(torch.randn(1, 3, 64, 96))
    for (port, t), value in zip(types.items(), outs):
        if port == "features":
            for name, ft in t.fields:
                assert tuple(value[name].shape) == shape_of(ft, env), name
        else:
            assert tuple(value.shape) == shape_of(t, env), port


def test_features_port_symbolic_shapes():
    types = DenseNetBackbone(depth=121).infer(IMAGE)
    assert list(types) == ["pooled", "features"]
    feats = types["features"]
    expected = {"c2": (256, 4), "c3": (512, 8), "c4": (1024, 16), "c5": (1024, 32)}
    assert [n for n, _ in feats.fields] == list(expected)
    for name, (channels, stride) in expected.items():
        assert feats.field(name) == PortType("feature_map", (B, channels, H / stride, W / stride))
    assert feats.get("strides") == (4, 8, 16, 32)
    assert feats.get("channels") == (256, 512, 1024, 1024)
    assert types["pooled"] == PortType("vector", (B, 1024))
    assert DenseNetBackbone(depth=161).infer(IMAGE)["pooled"].shape == (B, 2208)


def test_bad_params_are_rejected():
    with pytest.raises(ValidationError):
        DenseNetBackbone(depth=120)
    with pytest.raises(ValidationError):
        DenseNetBackbone(depth=121, drop_rate=1.5)
    with pytest.raises(ValidationError):
        DenseBlockPart(num_layers=0)
    with pytest.raises(ValidationError):
        DenseBlockPart(num_layers=6, growth=32)  # unknown key (growth_rate)


def test_dense_block_shape_and_parity():
    x = PortType("feature_map", (B, 128, H / 8, W / 8))
    block = DenseBlockPart(num_layers=12)
    assert block.infer(x) == PortType("feature_map", (B, 128 + 12 * 32, H / 8, W / 8))
    ref = torchvision.models.densenet121(weights=None).eval()
    m = block.build(x).eval()
    m.load_state_dict(ref.features.denseblock2.state_dict())
    t = torch.randn(1, 128, 8, 8)
    with torch.no_grad():
        assert torch.equal(m(t), ref.features.denseblock2(t))


def test_transition_shapes():
    x = PortType("feature_map", (B, 256, H / 4, W / 4))
    assert TransitionPart().infer(x) == PortType("feature_map", (B, 128, H / 8, W / 8))
    assert TransitionPart(out_channels=64).infer(x).shape[1] == 64
    odd = PortType("feature_map", (2, 256, sym("H"), 9))
    t = TransitionPart().infer(odd)
    m = TransitionPart().build(odd)
    with torch.no_grad():
        y = m(torch.randn(2, 256, 13, 9))
    assert tuple(y.shape) == shape_of(t, {"H": 13}) == (2, 128, 6, 4)
    with pytest.raises(InferError):
        TransitionPart().infer(PortType("feature_map", (B, 256, 1, 1)))


def test_parts_build_on_meta_device():
    x = PortType("feature_map", (B, 64, H / 4, W / 4))
    with torch.device("meta"):
        for m in (DenseBlockPart(num_layers=6).build(x), TransitionPart().build(x)):
            assert all(p.device.type == "meta" for p in m.parameters())


def test_densenet121_pipeline_from_parts_matches_torchvision(tmp_path):
    pipe = composer.load(ROOT / "pipelines/densenet121.yaml")
    assert pipe.graph.total_params() == 7_978_856
    model = pipe.build(seed=0).eval()
    torch.manual_seed(0)
    ref = torchvision.models.densenet121(weights=None).eval()
    torch.save(ref.state_dict(), tmp_path / "densenet121.pth")
    assert load_weights(model, tmp_path / "densenet121.pth").strategy == "order"
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        out = model(image=x)
        assert (out["logits"] - ref(x)).abs().max().item() <= 1e-4
    assert torch.allclose(out["probs"].sum(-1), torch.ones(1))

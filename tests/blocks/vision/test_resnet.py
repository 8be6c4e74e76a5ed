"""ResNet blocks: exact torchvision parity (keys, parameter counts, outputs), symbolic shapes
of the backbone and its parts, param validation, and the parts-built `pipelines/resnet50.yaml`."""

from __future__ import annotations

import pytest
import torch
import torchvision
from pydantic import ValidationError

import composer
from blocks.vision.resnet import BasicBlockPart, BottleneckPart, ResNetBackbone, ResNetStemBlock
from composer.dims import sym
from composer.registry import get
from composer.types import InferError, PortType
from composer.weights import load_weights
from tests.blocks.vision._support import meta_build, n_params, shape_of
from tests.conftest import ROOT

B, H, W = sym("B"), sym("H", 32), sym("W", 32)
IMAGE = PortType("image", (B, 3, H, W))


# ---- the backbone ---------------------------------------------------------------------------


def test_registered():
    assert get("resnet") is ResNetBackbone
    assert get("bottleneck") is BottleneckPart
    assert get("basic_block") is BasicBlockPart
    assert get("resnet_stem") is ResNetStemBlock


@pytest.mark.parametrize("depth,count", [(18, 11_689_512), (34, 21_797_672), (50, 25_557_032),
                                         (101, 44_549_160), (152, 60_192_808)])
def test_keys_shapes_and_param_count_match_torchvision(depth, count):
    ours = meta_build(ResNetBackbone(depth=depth, num_classes=1000), IMAGE)
    with torch.device("meta"):
        ref = getattr(torchvision.models, f"resnet{depth}")(weights=None)
    assert n_params(ours) == count == n_params(ref)
    assert [(k, v.shape) for k, v in ours.state_dict().items()] == \
           [(k, v.shape) for k, v in ref.state_dict().items()]


def test_resnext_widths_match_torchvision():
    ours = meta_build(ResNetBackbone(depth=50, num_classes=1000, groups=32, width_per_group=4), IMAGE)
    with torch.device("meta"):
        ref = torchvision.models.resnext50_32x4d(weights=None)
    assert n_params(ours) == n_params(ref) == 25_028_904


def test_no_head_without_num_classes():
    m = meta_build(ResNetBackbone(depth=50), IMAGE)
    assert m.fc is None
    assert n_params(m) == 25_557_032 - (2048 * 1000 + 1000)
    assert list(ResNetBackbone(depth=50).infer(IMAGE)) == ["pooled", "features"]


@pytest.mark.parametrize("depth", [18, 50])
def test_parity_with_torchvision(depth):
    torch.manual_seed(0)
    ref = getattr(torchvision.models, f"resnet{depth}")(weights=None).eval()
    block = ResNetBackbone(depth=depth, num_classes=1000)
    ours = block.build(IMAGE).eval()
    ours.load_state_dict(ref.state_dict())  # identical keys, strict
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        pooled, features, logits = ours(x)
        expected = ref(x)
        c = ref.maxpool(ref.relu(ref.bn1(ref.conv1(x))))
        taps = {}
        for i, layer in enumerate((ref.layer1, ref.layer2, ref.layer3, ref.layer4)):
            c = layer(c)
            taps[f"c{i + 2}"] = c
    assert (logits - expected).abs().max().item() <= 1e-4
    assert (pooled - torch.flatten(ref.avgpool(taps["c5"]), 1)).abs().max().item() <= 1e-5
    for name, t in taps.items():
        assert torch.equal(features[name], t), name


def test_output_types_match_tensors():
    block = ResNetBackbone(depth=18, num_classes=10)
    types = block.infer(IMAGE)
    assert list(types) == ["pooled", "features", "logits"]
    ours = block.build(IMAGE).eval()
    env = {"B": 1, "H": 64, "W": 96}
    with torch.no_grad():
        outs = ours(torch.randn(1, 3, 64, 96))
    assert len(outs) == 3
    for (port, t), value in zip(types.items(), outs):
        if port == "features":
            assert list(value) == [n for n, _ in t.fields]
            for name, ft in t.fields:
                assert tuple(value[name].shape) == shape_of(ft, env), name
        else:
            assert tuple(value.shape) == shape_of(t, env), port


def test_features_port_symbolic_shapes():
    types = ResNetBackbone(depth=50).infer(IMAGE)
    feats = types["features"]
    assert feats.kind == "features"
    assert [n for n, _ in feats.fields] == ["c2", "c3", "c4", "c5"]
    for (name, t), stride, channels in zip(feats.fields, (4, 8, 16, 32), (256, 512, 1024, 2048)):
        assert t.kind == "feature_map"
        assert t.shape == (B, channels, H / stride, W / stride), name
    assert feats.get("strides") == (4, 8, 16, 32)
    assert feats.get("channels") == (256, 512, 1024, 2048)
    assert types["pooled"] == PortType("vector", (B, 2048))
    assert str(feats.field("c5").shape[2]) == "H/32"
    # resnet18 has basic blocks: 64..512 channels
    assert ResNetBackbone(depth=18).infer(IMAGE)["features"].get("channels") == (64, 128, 256, 512)


def test_odd_sizes_stay_exact():
    """Without a multiple_of, sizes are floor expressions that evaluate to torch's sizes."""
    x = PortType("image", (1, 3, sym("H"), 50))
    types = ResNetBackbone(depth=18).infer(x)
    m = ResNetBackbone(depth=18).build(x).eval()
    with torch.no_grad():
        _, feats = m(torch.randn(1, 3, 77, 50))
    for name, t in types["features"].fields:
        assert tuple(feats[name].shape) == shape_of(t, {"H": 77}), name


def test_bad_params_are_rejected():
    with pytest.raises(ValidationError):
        ResNetBackbone(depth=42)
    with pytest.raises(ValidationError):
        ResNetBackbone(depth="50")  # strict: no string coercion
    with pytest.raises(ValidationError):
        ResNetBackbone(depth=50, num_classes=0)
    with pytest.raises(ValidationError):
        ResNetBackbone(depth=50, pretrained=True)  # unknown key
    with pytest.raises(InferError) as err:
        ResNetBackbone(depth=18, groups=32).infer(IMAGE)
    assert err.value.param == "groups"


def test_rejects_non_image_inputs():
    with pytest.raises(InferError):
        ResNetBackbone(depth=18).infer(PortType("vector", (B, 3)))
    with pytest.raises(InferError):
        ResNetBackbone(depth=18).infer(PortType("image", (B, 3, H, W), "int64"))
    with pytest.raises(InferError):  # channels must be known
        ResNetBackbone(depth=18).infer(PortType("image", (B, sym("C"), H, W)))


# ---- parts -----------------------------------------------------------------------------------


def test_stem_shape():
    t = ResNetStemBlock().infer(IMAGE)
    assert t == PortType("feature_map", (B, 64, H / 4, W / 4))


def test_stride2_bottleneck_shape_and_module():
    x = PortType("feature_map", (B, 256, H / 4, W / 4))
    block = BottleneckPart(planes=128, stride=2)
    assert block.infer(x) == PortType("feature_map", (B, 512, H / 8, W / 8))
    m = block.build(x).eval()
    assert m.downsample is not None and m.conv2.stride == (2, 2)
    with torch.no_grad():
        y = m(torch.randn(2, 256, 16, 24))
    assert tuple(y.shape) == shape_of(block.infer(x), {"B": 2, "H": 64, "W": 96})


def test_bottleneck_parts_match_torchvision_blocks():
    ref = torchvision.models.resnet50(weights=None).eval()
    x = PortType("feature_map", (B, 256, H / 4, W / 4))
    first_block = BottleneckPart(planes=128, stride=2)
    y = first_block.infer(x)
    first, rest = first_block.build(x).eval(), BottleneckPart(planes=128).build(y).eval()
    first.load_state_dict(ref.layer2[0].state_dict())  # identical keys, downsample included
    rest.load_state_dict(ref.layer2[1].state_dict())
    assert rest.downsample is None
    t = torch.randn(1, 256, 16, 16)
    with torch.no_grad():
        assert torch.allclose(rest(first(t)), ref.layer2[1](ref.layer2[0](t)), atol=1e-5)


def test_bottleneck_shortcut_rules():
    x = PortType("feature_map", (B, 256, H / 4, W / 4))
    assert BottleneckPart(planes=64).infer(x) == x  # identity shortcut
    assert BottleneckPart(planes=64).build(x).downsample is None
    assert BottleneckPart(planes=64, downsample=True).build(x).downsample is not None
    with pytest.raises(InferError) as err:
        BottleneckPart(planes=128, stride=2, downsample=False).infer(x)
    assert err.value.param == "downsample"


def test_grouped_bottleneck_matches_resnext():
    ref = torchvision.models.resnext50_32x4d(weights=None)
    x = PortType("feature_map", (B, 64, H / 4, W / 4))
    m = BottleneckPart(planes=64, groups=32, base_width=4).build(x)
    m.load_state_dict(ref.layer1[0].state_dict())
    assert m.conv2.groups == 32 and m.conv2.out_channels == 128


def test_basic_block_shapes():
    x = PortType("feature_map", (B, 64, H / 4, W / 4))
    assert BasicBlockPart(planes=64).infer(x) == x
    assert BasicBlockPart(planes=128, stride=2).infer(x) == PortType("feature_map", (B, 128, H / 8, W / 8))
    ref = torchvision.models.resnet18(weights=None)
    BasicBlockPart(planes=128, stride=2).build(x).load_state_dict(ref.layer2[0].state_dict())
    BasicBlockPart(planes=64).build(x).load_state_dict(ref.layer1[1].state_dict())
    with pytest.raises(ValidationError):
        BasicBlockPart(planes=0)
    with pytest.raises(ValidationError):
        BasicBlockPart(planes=64, groups=2)  # basic blocks have no groups param


@pytest.mark.parametrize("block", [ResNetStemBlock(), BasicBlockPart(planes=64, stride=2),
                                   BottleneckPart(planes=64, stride=2, groups=2, base_width=32)])
def test_parts_build_on_meta_device(block):
    x = PortType("feature_map", (B, 64, H / 4, W / 4)) if block.name != "resnet_stem" else IMAGE
    m = meta_build(block, x)
    assert n_params(m) > 0
    assert all(p.device.type == "meta" for p in m.parameters())


# ---- pipelines ---------------------------------------------------------------------------------


def test_classification_pipeline(tmp_path):
    pipe = composer.load(ROOT / "pipelines/classification.yaml")
    assert pipe.graph.total_params() == 25_557_032
    model = pipe.build(seed=0).eval()
    torch.manual_seed(0)
    ref = torchvision.models.resnet50(weights=None).eval()
    torch.save(ref.state_dict(), tmp_path / "resnet50.pth")
    report = load_weights(model, tmp_path / "resnet50.pth")  # torchvision's checkpoint: fc goes to `head`
    assert report.strategy == "order" and report.loaded == len(ref.state_dict())
    with torch.no_grad():
        x = torch.randn(1, 3, 64, 64)
        out = model(image=x)
        expected = ref(x)
    assert set(out) == {"logits", "probs"}
    assert (out["logits"] - expected).abs().max().item() <= 1e-4
    assert torch.allclose(out["probs"].sum(-1), torch.ones(1))


def test_resnet50_pipeline_from_parts_matches_block_and_torchvision(tmp_path):
    pipe = composer.load(ROOT / "pipelines/resnet50.yaml")
    assert pipe.graph.total_params() == 25_557_032
    model = pipe.build(seed=0).eval()
    torch.manual_seed(0)
    ref = torchvision.models.resnet50(weights=None).eval()
    torch.save(ref.state_dict(), tmp_path / "resnet50.pth")
    assert load_weights(model, tmp_path / "resnet50.pth").strategy == "order"
    block = ResNetBackbone(depth=50, num_classes=1000).build(IMAGE).eval()
    block.load_state_dict(ref.state_dict())
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        got = model(image=x)["logits"]
        assert (got - ref(x)).abs().max().item() <= 1e-4
        assert (got - block(x)[2]).abs().max().item() <= 1e-4

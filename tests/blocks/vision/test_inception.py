"""Inception v3 blocks: exact torchvision parity (keys, parameter count with the aux head,
outputs), the aux head as an always-computed port, symbolic shapes, the `inception_module`
variants, param validation, and `pipelines/inception_v3.yaml`."""

from __future__ import annotations

import pytest
import torch
import torchvision
from pydantic import ValidationError

import composer
from blocks.vision.inception import InceptionBackbone, InceptionModule
from composer.dims import evaluate, sym
from composer.registry import get
from composer.types import InferError, PortType
from composer.weights import load_weights
from tests.blocks.vision._support import meta_build, n_params, shape_of
from tests.conftest import ROOT

B, H, W = sym("B"), sym("H"), sym("W")
IMAGE = PortType("image", (B, 3, H, W))


def reference(**kw) -> torch.nn.Module:
    """torchvision's inception_v3 with random weights (PyTorch's default init: much faster than
    its truncated-normal init, and as good for parity)."""
    return torchvision.models.inception_v3(weights=None, init_weights=False, **kw)


@pytest.fixture(scope="module")
def tv_inception() -> torch.nn.Module:
    torch.manual_seed(0)
    return reference().eval()


def test_registered():
    assert get("inception") is InceptionBackbone
    assert get("inception_module") is InceptionModule


@pytest.mark.parametrize("aux,count", [(True, 27_161_264), (False, 23_834_568)])
def test_keys_shapes_and_param_count_match_torchvision(aux, count):
    with torch.device("meta"):
        ours = InceptionBackbone(num_classes=1000, aux_logits=aux).build(IMAGE)
        ref = reference(aux_logits=aux)
    assert n_params(ours) == count == n_params(ref)
    assert [(k, v.shape) for k, v in ours.state_dict().items()] == \
           [(k, v.shape) for k, v in ref.state_dict().items()]


def test_no_head_without_num_classes():
    with torch.device("meta"):
        m = InceptionBackbone().build(IMAGE)
    assert m.fc is None and m.AuxLogits is None
    assert list(InceptionBackbone().infer(IMAGE)) == ["pooled", "features"]


@pytest.mark.parametrize("transform_input", [False, True])
def test_parity_with_torchvision(tv_inception, transform_input):
    ours = meta_build(InceptionBackbone(num_classes=1000, transform_input=transform_input), IMAGE).eval()
    ours.load_state_dict(tv_inception.state_dict(), assign=True)  # identical keys, strict
    x = torch.randn(2, 3, 75, 75)  # torchvision's minimum size
    tv_inception.transform_input = transform_input
    try:
        with torch.no_grad():
            outs = ours(x)
            expected = tv_inception(x)
    finally:
        tv_inception.transform_input = False
    assert len(outs) == 3  # pooled, features, logits: the aux head is not run by default
    assert (outs[2] - expected).abs().max().item() <= 1e-4


@pytest.mark.slow  # 299x299 in training mode: ~1 s idle, >10 s on a busy 2-core machine
def test_aux_output_matches_torchvision_training_aux():
    """With aux_output the aux logits are an output in every mode; in training mode they equal
    torchvision's (which computes them only then), and the output tuple is the same in eval."""
    torch.manual_seed(0)
    ref = reference(num_classes=10).train()
    block = InceptionBackbone(num_classes=10, aux_output=True)
    x_type = PortType("image", (B, 3, 299, 299))
    assert list(block.infer(x_type)) == ["pooled", "features", "logits", "aux_logits"]
    ours = meta_build(block, x_type)
    ours.load_state_dict(ref.state_dict(), assign=True)
    ours.train()
    x = torch.randn(2, 3, 299, 299)
    with torch.no_grad():
        expected = ref(x)
        got = ours(x)
    assert (got[3] - expected.aux_logits).abs().max().item() <= 1e-4
    ours.eval()
    with torch.no_grad():
        got_eval = ours(x[:1])
    assert len(got_eval) == 4 and got_eval[3].shape == (1, 10)


def test_aux_output_rules():
    with pytest.raises(InferError) as err:
        InceptionBackbone(aux_output=True).infer(IMAGE)  # no classes, no aux head
    assert err.value.param == "aux_output"
    with pytest.raises(InferError):
        InceptionBackbone(num_classes=10, aux_logits=False, aux_output=True).infer(IMAGE)
    small = PortType("image", (B, 3, 298, 298))
    with pytest.raises(InferError) as err:  # the aux head's 5x5 conv needs the 17x17 map
        InceptionBackbone(num_classes=10, aux_output=True).infer(small)
    assert err.value.param == "aux_output"
    assert "logits" in InceptionBackbone(num_classes=10).infer(small)


def test_minimum_input_size():
    InceptionBackbone().infer(PortType("image", (B, 3, 75, 75)))
    with pytest.raises(InferError):
        InceptionBackbone().infer(PortType("image", (B, 3, 74, 200)))


def test_features_port_symbolic_shapes_evaluate_to_torch():
    block = InceptionBackbone(num_classes=5)
    types = block.infer(IMAGE)
    feats = types["features"]
    assert [n for n, _ in feats.fields] == ["c2", "c3", "c4", "c5"]
    assert feats.get("channels") == (192, 288, 768, 2048)
    assert feats.get("strides") == (4, 8, 16, 32)
    m = block.build(IMAGE).eval()
    env = {"B": 1, "H": 107, "W": 80}
    with torch.no_grad():
        outs = m(torch.randn(1, 3, 107, 80))
    for name, t in feats.fields:
        assert tuple(outs[1][name].shape) == shape_of(t, env), name
    assert tuple(outs[0].shape) == shape_of(types["pooled"], env) == (1, 2048)
    assert tuple(outs[2].shape) == shape_of(types["logits"], env) == (1, 5)
    # at 299x299: the classic 71, 35, 17 and 8 grids
    fixed = block.infer(PortType("image", (1, 3, 299, 299)))["features"]
    assert [t.shape[2] for _, t in fixed.fields] == [71, 35, 17, 8]


def test_multiple_of_32_simplifies():
    x = PortType("image", (B, 3, sym("H", 32), sym("W", 32)))
    c5 = InceptionBackbone().infer(x)["features"].field("c5")
    assert str(c5.shape[2]) == "H/32-2"


def test_bad_params_are_rejected():
    with pytest.raises(ValidationError):
        InceptionBackbone(variant="v4")
    with pytest.raises(ValidationError):
        InceptionBackbone(dropout=1.0)
    with pytest.raises(ValidationError):
        InceptionModule(variant="f")


# ---- inception_module --------------------------------------------------------------------------

MODULES = [  # (params, torchvision module of inception_v3, input channels, grid, output channels, output grid)
    (dict(variant="a", pool_features=32), "Mixed_5b", 192, 35, 256, 35),
    (dict(variant="b"), "Mixed_6a", 288, 35, 768, 17),
    (dict(variant="c", channels_7x7=128), "Mixed_6b", 768, 17, 768, 17),
    (dict(variant="d"), "Mixed_7a", 768, 17, 1280, 8),
    (dict(variant="e"), "Mixed_7b", 1280, 8, 2048, 8),
]


@pytest.mark.parametrize("params,ref_name,cin,grid,cout,out_grid", MODULES, ids=[m[1] for m in MODULES])
def test_inception_module_variants(tv_inception, params, ref_name, cin, grid, cout, out_grid):
    block = InceptionModule(**params)
    x = PortType("feature_map", (B, cin, H, W))
    t = block.infer(x)
    assert t.shape[:2] == (B, cout)
    assert evaluate(t.shape[2], {"H": grid}) == out_grid
    ref_module = getattr(tv_inception, ref_name)
    m = block.build(x).eval()
    m.load_state_dict(ref_module.state_dict())  # identical keys
    z = torch.randn(1, cin, 9, 9)
    with torch.no_grad():
        y = m(z)
        assert torch.equal(y, ref_module(z))
    assert tuple(y.shape) == shape_of(t, {"B": 1, "H": 9, "W": 9})


def test_inception_module_param_rules():
    x = PortType("feature_map", (B, 192, H, W))
    with pytest.raises(InferError) as err:
        InceptionModule(variant="a").infer(x)
    assert err.value.param == "pool_features"
    with pytest.raises(InferError) as err:
        InceptionModule(variant="c").infer(x)
    assert err.value.param == "channels_7x7"
    with pytest.raises(InferError) as err:
        InceptionModule(variant="e", pool_features=32).infer(x)
    assert err.value.param == "pool_features"
    with pytest.raises(InferError):  # a 3x3/2 reduction of a 2x2 map
        InceptionModule(variant="b").infer(PortType("feature_map", (B, 288, 2, 2)))


def test_inception_pipeline(tv_inception, tmp_path):
    pipe = composer.load(ROOT / "pipelines/inception_v3.yaml")
    assert pipe.graph.total_params() == 27_161_264
    model = pipe.build(seed=0).eval()
    ref = tv_inception
    torch.save(ref.state_dict(), tmp_path / "inception_v3.pth")
    report = load_weights(model, tmp_path / "inception_v3.pth")
    assert report.strategy == "order" and report.loaded == len(ref.state_dict())
    x = torch.randn(1, 3, 96, 96)
    with torch.no_grad():
        out = model(image=x)
        assert (out["logits"] - ref(x)).abs().max().item() <= 1e-4
    assert set(out) == {"logits", "probs"}

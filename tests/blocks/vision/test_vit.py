"""Vision Transformer: torchvision parity (identical keys, logits), param counts, fixed-size input checks,
the patch_embed and transformer_encoder_layer parts, and the vit_b16 pipeline composed from them."""

from __future__ import annotations

import pytest
import torch
import torchvision
from pydantic import ValidationError
from torchvision.models.vision_transformer import EncoderBlock

import composer
from blocks.vision.vit import PatchEmbed, TransformerEncoderLayer, ViT
from composer.dims import sym
from composer.types import InferError, PortType
from composer.weights import map_state_dict
from tests.blocks.vision._support import image_batch, n_params, randomize
from tests.conftest import ROOT

B = sym("B")
TORCHVISION = {"b16": torchvision.models.vit_b_16, "b32": torchvision.models.vit_b_32,
               "l16": torchvision.models.vit_l_16, "l32": torchvision.models.vit_l_32,
               "h14": torchvision.models.vit_h_14}

pytestmark = pytest.mark.usefixtures("one_thread")


def check_parity(variant: str, size: int, num_classes: int, batch: int = 2) -> None:
    # built on the meta device and materialised uninitialised: every tensor is overwritten anyway
    with torch.device("meta"):
        ref = TORCHVISION[variant](weights=None, image_size=size, num_classes=num_classes)
        ours = ViT(variant=variant, image_size=size, num_classes=num_classes).build(
            x=PortType("image", (B, 3, size, size)))
    ref = randomize(ref.to_empty(device="cpu"), std=0.1)
    ours = ours.to_empty(device="cpu")
    assert list(ours.state_dict()) == list(ref.state_dict())
    ours.load_state_dict(ref.state_dict())      # strict: identical keys and shapes
    ours.eval()
    x = image_batch(size, batch)
    with torch.no_grad():
        pooled, features, logits = ours(x)
        expected = ref(x)
        tokens = ref.encoder(torch.cat([ref.class_token.expand(batch, -1, -1),
                                        ref._process_input(x)], dim=1))
    assert (logits - expected).abs().max().item() <= 1e-4
    torch.testing.assert_close(features["tokens"], tokens, atol=1e-4, rtol=0)
    torch.testing.assert_close(pooled, tokens[:, 0], atol=1e-4, rtol=0)
    g = size // ref.patch_size
    torch.testing.assert_close(features["grid"], tokens[:, 1:].reshape(batch, g, g, -1).permute(0, 3, 1, 2))


# ---- the vit block --------------------------------------------------------------------------


@pytest.mark.parametrize("size", [32, 64])
def test_b16_matches_torchvision_small(size):
    check_parity("b16", size, num_classes=10)


def test_b32_matches_torchvision_small():
    check_parity("b32", 64, num_classes=10, batch=1)


@pytest.mark.slow
def test_b16_matches_torchvision_full_size():
    check_parity("b16", 224, num_classes=1000, batch=1)


@pytest.mark.parametrize("variant", list(TORCHVISION))
def test_layout_matches_torchvision_on_meta(variant):
    with torch.device("meta"):
        ref = TORCHVISION[variant](weights=None)
        ours = ViT(variant=variant, num_classes=1000).build(x=PortType("image", (1, 3, 224, 224)))
    assert {k: v.shape for k, v in ours.state_dict().items()} == {k: v.shape for k, v in ref.state_dict().items()}
    assert list(ours.state_dict()) == list(ref.state_dict())
    assert n_params(ours) == n_params(ref)


def test_b16_param_count():
    with torch.device("meta"):
        m = ViT(variant="b16", num_classes=1000).build(x=PortType("image", (1, 3, 224, 224)))
    assert all(p.is_meta for p in m.parameters())
    assert n_params(m) == 86_567_656


def test_symbolic_outputs():
    out = ViT(variant="b16", num_classes=1000).infer(x=PortType("image", (B, 3, 224, 224)))
    assert list(out) == ["pooled", "features", "logits"]
    assert out["pooled"] == PortType("vector", (B, 768)) and out["logits"] == PortType("logits", (B, 1000))
    feats = out["features"]
    assert feats.kind == "features"
    assert dict(feats.fields) == {"grid": PortType("feature_map", (B, 768, 14, 14)),
                                  "tokens": PortType("sequence", (B, 197, 768))}
    assert feats.get("strides") == (16, 16) and feats.get("channels") == (768, 768)
    headless = ViT(variant="l32", image_size=64).infer(x=PortType("image", (B, 3, 64, 64)))
    assert list(headless) == ["pooled", "features"] and headless["pooled"].shape == (B, 1024)


def test_headless_module_returns_two_outputs():
    m = ViT(variant="b32", image_size=32).build(x=PortType("image", (B, 3, 32, 32))).eval()
    with torch.no_grad():
        out = m(image_batch(32, 1))
    assert len(out) == 2 and out[0].shape == (1, 768) and out[1]["grid"].shape == (1, 768, 1, 1)


def test_input_size_must_be_image_size():
    with pytest.raises(InferError, match="H must be exactly image_size=224") as e:
        ViT().infer(x=PortType("image", (B, 3, sym("H", 32), sym("W", 32))))
    assert e.value.code == "E302" and e.value.port == "x" and "224" in e.value.hint
    with pytest.raises(InferError, match="W must be exactly image_size=64"):
        ViT(image_size=64).infer(x=PortType("image", (B, 3, 64, 96)))
    with pytest.raises(InferError, match="not a multiple of the patch size 16") as e:
        ViT(image_size=40).infer(x=PortType("image", (B, 3, 40, 40)))
    assert e.value.param == "image_size"
    with pytest.raises(InferError, match="rank-4"):
        ViT().infer(x=PortType("sequence", (B, 197, 768)))


def test_rejects_bad_params():
    for bad in ({"variant": "s16"}, {"variant": "b16", "image_size": 0}, {"num_classes": 0}, {"image_size": "224"},
                {"dropout": 1.0}, {"patch_size": 16}):
        with pytest.raises(ValidationError):
            ViT.model_validate(bad)


# ---- the parts ------------------------------------------------------------------------------


def test_patch_embed_shapes_and_errors():
    pe = PatchEmbed(patch_size=16, hidden_dim=768)
    x = PortType("image", (B, 3, 224, 224))
    assert pe.infer(x=x) == PortType("sequence", (B, 197, 768))
    assert pe.infer(x=PortType("image", (B, 3, 64, 128))) == PortType("sequence", (B, 33, 768))
    assert pe.param_count(x=x) == n_params(pe.build(x=x)) == 768 + 768 * 3 * 256 + 768 + 197 * 768
    m = pe.build(x=PortType("image", (B, 3, 32, 48)))
    assert m(torch.randn(2, 3, 32, 48)).shape == (2, 7, 768)
    assert list(m.state_dict()) == ["class_token", "conv_proj.weight", "conv_proj.bias", "position.pos_embedding"]
    with pytest.raises(InferError, match="fixed integer|fixed size"):
        pe.infer(x=PortType("image", (B, 3, sym("H", 32), 224)))
    with pytest.raises(InferError, match="not a multiple of patch_size 16") as e:
        pe.infer(x=PortType("image", (B, 3, 200, 224)))
    assert e.value.param == "patch_size"
    for bad in ({"patch_size": 0}, {"hidden_dim": "768"}, {"dropout": 2.0}, {"stride": 16}):
        with pytest.raises(ValidationError):
            PatchEmbed.model_validate(bad)


def test_encoder_layer_matches_torchvision():
    x = PortType("sequence", (B, sym("T"), 64))
    block = TransformerEncoderLayer(num_heads=4, mlp_dim=128)
    assert block.infer(x=x) == x
    ours = block.build(x=x)
    ref = randomize(EncoderBlock(4, 64, 128, 0.0, 0.0), std=0.1)
    assert list(ours.state_dict()) == list(ref.state_dict())
    ours.load_state_dict(ref.state_dict())
    seq = torch.randn(2, 9, 64)
    with torch.no_grad():
        torch.testing.assert_close(ours.eval()(seq), ref(seq), atol=1e-5, rtol=0)
    assert block.param_count(x=x) == n_params(ours)


def test_encoder_layer_loads_old_mlp_key_names():
    ours = TransformerEncoderLayer(num_heads=2, mlp_dim=16).build(x=PortType("sequence", (B, 4, 8)))
    state = {k.replace("mlp.0.", "mlp.linear_1.").replace("mlp.3.", "mlp.linear_2."): v.clone() + 1
             for k, v in ours.state_dict().items()}
    ours.load_state_dict(state)
    assert torch.equal(ours.mlp[3].bias, state["mlp.linear_2.bias"])


def test_encoder_layer_rejects_bad_inputs_and_params():
    with pytest.raises(InferError, match="num_heads=5 must divide the feature size 64"):
        TransformerEncoderLayer(num_heads=5, mlp_dim=128).infer(x=PortType("sequence", (B, 10, 64)))
    with pytest.raises(InferError, match="rank-3"):
        TransformerEncoderLayer(num_heads=4, mlp_dim=128).infer(x=PortType("vector", (B, 64)))
    with pytest.raises(InferError, match="fixed size"):
        TransformerEncoderLayer(num_heads=4, mlp_dim=128).infer(x=PortType("sequence", (B, 10, sym("C"))))
    for bad in ({"num_heads": 4}, {"mlp_dim": 8}, {"num_heads": 0, "mlp_dim": 8}, {"num_heads": 4, "mlp_dim": 8, "eps": 0.0}):
        with pytest.raises(ValidationError):
            TransformerEncoderLayer.model_validate(bad)


# ---- the pipeline ---------------------------------------------------------------------------


def _pipeline_parity(size: int, batch: int) -> None:
    text = (ROOT / "pipelines" / "vit_b16.yaml").read_text()
    if size != 224:
        assert "[B, 3, 224, 224]" in text
        text = text.replace("[B, 3, 224, 224]", f"[B, 3, {size}, {size}]")
    model = composer.loads(text, "vit_b16.yaml").build(seed=0)
    ref = randomize(torchvision.models.vit_b_16(weights=None, image_size=size), std=0.1)
    block = ViT(variant="b16", image_size=size, num_classes=1000)
    with torch.device("meta"):
        assert n_params(model) == n_params(ref) == n_params(block.build(x=PortType("image", (B, 3, size, size))))
    mapped, report = map_state_dict(model, ref.state_dict())
    assert report.strategy == "order" and report.loaded == len(model.state_dict())
    model.load_state_dict(mapped)
    model.eval()
    x = image_batch(size, batch)
    with torch.no_grad():
        out = model(image=x)
        expected = ref(x)
    assert (out["logits"] - expected).abs().max().item() <= 1e-4
    torch.testing.assert_close(out["probs"], expected.softmax(-1), atol=1e-5, rtol=0)


def test_pipeline_matches_torchvision_small():
    _pipeline_parity(32, batch=2)


@pytest.mark.slow
def test_pipeline_matches_torchvision_full_size():
    pipe = composer.load(ROOT / "pipelines" / "vit_b16.yaml")
    with torch.device("meta"):
        assert n_params(pipe.build(seed=0)) == 86_567_656
    _pipeline_parity(224, batch=1)

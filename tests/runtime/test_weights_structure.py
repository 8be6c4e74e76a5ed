"""Structural mapping: checkpoints whose names differ and whose order is lost (safetensors)
load into specs built from parts, in numeric order, and ambiguity is an error, never a guess."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torchvision
from safetensors.torch import save_file

import composer
from composer._structure import match_structure, natural_key, ordered_places
from composer.weights import WeightsError, load_weights, plan

ROOT = Path(__file__).resolve().parents[2]


def _randomized(model: torch.nn.Module) -> torch.nn.Module:
    """Non-trivial BatchNorm statistics, so a tensor in the wrong place shows in the outputs."""
    torch.manual_seed(0)
    with torch.no_grad():
        for mod in model.modules():
            if isinstance(mod, torch.nn.BatchNorm2d):
                mod.running_mean.uniform_(-0.1, 0.1)
                mod.running_var.uniform_(0.5, 1.5)
    return model.eval()


def _safetensors(model: torch.nn.Module, path: Path) -> Path:
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return path


# ---- the ecosystem's safetensors into the parts specs ---------------------------------------


@pytest.mark.parametrize("spec, reference, size", [
    ("resnet50", torchvision.models.resnet50, 64),
    ("densenet121", torchvision.models.densenet121, 64),
    ("vit_b16", torchvision.models.vit_b_16, 224),
])
def test_torchvision_safetensors_into_parts_specs(spec, reference, size, tmp_path):
    torch.manual_seed(0)
    ref = _randomized(reference(weights=None))
    ckpt = _safetensors(ref, tmp_path / f"{spec}.safetensors")
    model = composer.load(ROOT / "pipelines" / f"{spec}.yaml").build(seed=1).eval()
    rep = load_weights(model, ckpt)
    assert rep.strategy == "structure" and rep.loaded == len(model.state_dict()) == len(ref.state_dict())
    assert rep.unused == [] and rep.missing == []
    x = torch.randn(2, 3, size, size)
    with torch.no_grad():
        torch.testing.assert_close(model(image=x)["logits"], ref(x), rtol=1e-4, atol=1e-4)


def test_resnet50_mapping_follows_the_stages(tmp_path):
    """The repeats of `layer1` are torchvision's layer1.1 and layer1.2 (layer1.0 is `layer1_0`)."""
    ckpt = _safetensors(torchvision.models.resnet50(weights=None), tmp_path / "r50.safetensors")
    rep = plan(composer.load(ROOT / "pipelines" / "resnet50.yaml").build(device="meta"), ckpt)
    source = {e.key: e.file_key for e in rep.entries}
    assert source["stem.conv1.weight"] == "conv1.weight"
    assert source["layer1_0.downsample.0.weight"] == "layer1.0.downsample.0.weight"
    assert source["layer1.0.conv1.weight"] == "layer1.1.conv1.weight"
    assert source["layer1.1.bn3.running_var"] == "layer1.2.bn3.running_var"
    assert source["layer3.4.conv2.weight"] == "layer3.5.conv2.weight"
    assert source["fc.bias"] == "fc.bias"


# ---- numeric order, whole modules, ambiguity -------------------------------------------------


STACK = """\
pipeline: stack
inputs:
  x: {kind: vector, shape: [B, 4]}
blocks:
  first: {block: dense, in: x, out_features: 4}
  body: {block: dense, in: first, out_features: 4, repeat: 11}
outputs:
  y: body
"""


def test_alike_modules_follow_numeric_order_not_sorted_text(tmp_path):
    """Twelve alike layers saved as `layers.layer_0` .. `layers.layer_11`: safetensors sorts
    them as text (layer_10 before layer_2); they load by number."""
    torch.manual_seed(0)
    layers = [torch.nn.Linear(4, 4) for _ in range(12)]
    tensors = {}
    for i, lin in enumerate(layers):
        tensors[f"layers.layer_{i}.weight"] = lin.weight.detach().clone()
        tensors[f"layers.layer_{i}.bias"] = lin.bias.detach().clone()
    ckpt = tmp_path / "stack.safetensors"
    save_file(tensors, str(ckpt))
    model = composer.loads(STACK).build().eval()
    rep = load_weights(model, ckpt)
    assert rep.strategy == "structure"
    source = {e.key: e.file_key for e in rep.entries}
    assert source["first.weight"] == "layers.layer_0.weight"
    assert source["body.9.weight"] == "layers.layer_10.weight"
    x = torch.randn(3, 4)
    expected = x
    for lin in layers:
        expected = lin(expected)
    with torch.no_grad():
        torch.testing.assert_close(model(x=x)["y"], expected)


def test_natural_order_and_orderable_places():
    assert sorted(["a.10", "a.9", "a.1"], key=natural_key) == ["a.1", "a.9", "a.10"]
    assert ordered_places(["f.denselayer10", "f.denselayer9"]) == ["f.denselayer9", "f.denselayer10"]
    assert ordered_places(["enc.x", "dec.x"]) is None            # names, not numbers: no order known
    assert ordered_places(["a.1.b", "a.2"]) is None


PAIR = """\
pipeline: pair
inputs:
  x: {kind: vector, shape: [B, 4]}
blocks:
  left: {block: dense, in: x, out_features: 4}
  right: {block: dense, in: left, out_features: 4}
outputs:
  y: right
"""


def test_ambiguity_is_an_error_naming_the_modules(tmp_path):
    tensors = {f"{name}.{p}": torch.randn(4, 4) if p == "weight" else torch.randn(4)
               for name in ("encoder", "decoder") for p in ("weight", "bias")}
    ckpt = tmp_path / "pair.safetensors"
    save_file(tensors, str(ckpt))
    model = composer.loads(PAIR).build()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(WeightsError) as exc:
        load_weights(model, ckpt)
    text = str(exc.value)
    assert "ambiguous" in text and "`left`, `right`" in text and "`decoder`, `encoder`" in text
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    # a rename rule pins one of them; the other then has one place left
    rep = load_weights(model, ckpt, rename=[(r"^encoder\.", "left.")])
    source = {e.key: (e.file_key, e.how) for e in rep.entries}
    assert source["left.weight"] == ("encoder.weight", "renamed")
    assert source["right.weight"] == ("decoder.weight", "structure")


def test_a_unit_takes_whole_file_modules():
    """A bias-free layer never takes the weight of a module that also has a bias."""
    own = {"a.weight": (4, 4)}
    file = {"m.weight": (4, 4), "m.bias": (4,)}
    result = match_structure(own, file)
    assert result.mapping == {} and result.unmatched == ["a.weight"]
    assert match_structure(own, {"n.weight": (4, 4), **file}).mapping == {"a.weight": "n.weight"}


def test_wrong_depth_lists_what_is_missing_and_left_over(tmp_path):
    ckpt = _safetensors(torchvision.models.resnet18(weights=None), tmp_path / "r18.safetensors")
    model = composer.load(ROOT / "pipelines" / "resnet50.yaml").build(device="meta")
    with pytest.raises(WeightsError) as exc:
        plan(model, ckpt)
    text = str(exc.value)
    assert "does not fit pipeline `resnet50`" in text and "not in the file" in text
    assert "file tensors not used" in text and "strict: false" in text

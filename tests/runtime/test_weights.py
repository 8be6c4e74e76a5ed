"""composer.weights: safe loading, key mapping (exact, order, structure), strictness, clear mismatches."""

from __future__ import annotations

import textwrap

import pytest
import torch
import torchvision

import composer
from composer.weights import WeightsError, WeightsSource, load_weights, read_state_dict, save_weights

RESNET18_BLOCK = """\
pipeline: r18_block
dims:
  B: {sizes: [1, 2], example: 1}
  H: {multiple_of: 32, sizes: [32, 64], example: 32}
  W: {multiple_of: 32, sizes: [32, 64], example: 32}
inputs:
  image: {kind: image, shape: [B, 3, H, W]}
blocks:
  backbone: {block: resnet, in: image, depth: 18}
  head: {block: dense, in: backbone.pooled, out_features: 5}
outputs:
  pooled: backbone.pooled
  logits: head
"""

RESNET18_PARTS = """\
pipeline: r18_parts
dims:
  B: {sizes: [1, 2], example: 1}
  H: {multiple_of: 32, sizes: [32, 64], example: 32}
  W: {multiple_of: 32, sizes: [32, 64], example: 32}
inputs:
  image: {kind: image, shape: [B, 3, H, W]}
blocks:
  stem: {block: resnet_stem, in: image}
  layer1: {block: basic_block, in: stem, planes: 64, repeat: 2}
  layer2_0: {block: basic_block, in: layer1, planes: 128, stride: 2}
  layer2_1: {block: basic_block, in: layer2_0, planes: 128}
  layer3_0: {block: basic_block, in: layer2_1, planes: 256, stride: 2}
  layer3_1: {block: basic_block, in: layer3_0, planes: 256}
  layer4_0: {block: basic_block, in: layer3_1, planes: 512, stride: 2}
  layer4_1: {block: basic_block, in: layer4_0, planes: 512}
  pool: {block: global_avg_pool, in: layer4_1}
  fc: {block: dense, in: pool, out_features: 1000}
outputs:
  logits: fc
"""


def _tv_resnet18():
    torch.manual_seed(0)
    m = torchvision.models.resnet18(weights=None).eval()
    with torch.no_grad():  # non-trivial BatchNorm statistics, so a wrong mapping shows
        for mod in m.modules():
            if isinstance(mod, torch.nn.BatchNorm2d):
                mod.running_mean.uniform_(-0.1, 0.1)
                mod.running_var.uniform_(0.5, 1.5)
    return m


def test_roundtrip_exact(tiny_pipe, tmp_path):
    a = tiny_pipe.build(seed=1)
    b = tiny_pipe.build(seed=2)
    path = save_weights(a, tmp_path / "w" / "a.safetensors")
    rep = load_weights(b, path)
    assert rep.strategy == "exact" and rep.loaded == len(a.state_dict())
    for k, v in a.state_dict().items():
        assert torch.equal(v, b.state_dict()[k])


def test_torchvision_checkpoint_into_a_backbone_block(write_spec, tmp_path):
    tv = _tv_resnet18()
    ckpt = tmp_path / "resnet18.pth"
    torch.save(tv.state_dict(), ckpt)
    pipe = composer.load(write_spec(RESNET18_BLOCK))
    model = pipe.build().eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(WeightsError, match=r"(?s)2 pipeline tensors have no match.*head.weight \[5, 512\].*"
                                           r"fc.weight \[1000, 512\].*strict: false"):
        load_weights(model, ckpt)      # strict by default: the 5-way head is not in the file
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())   # nothing loaded
    rep = load_weights(model, ckpt, strict=False)
    assert rep.strategy == "structure" and rep.missing == ["head.weight", "head.bias"]
    assert rep.unused == ["fc.weight", "fc.bias"] and rep.kept_initial == ["head"]
    assert torch.equal(model.state_dict()["head.weight"], before["head.weight"])
    x = torch.randn(2, 3, 64, 64)
    tv.fc = torch.nn.Identity()
    with torch.no_grad():
        torch.testing.assert_close(model(image=x)["pooled"], tv(x), rtol=1e-4, atol=1e-5)


def test_safetensors_checkpoint_fills_backbone_then_head_by_shape(write_spec, tmp_path):
    """safetensors sorts its keys, so no order: the backbone block by its structure at the
    file's top level, torchvision's `fc` into the 1000-way `head` as a whole module."""
    from safetensors.torch import save_file
    tv = _tv_resnet18()
    ckpt = tmp_path / "resnet18.safetensors"
    save_file(tv.state_dict(), ckpt)
    model = composer.load(write_spec(RESNET18_BLOCK.replace("out_features: 5", "out_features: 1000"))).build().eval()
    rep = load_weights(model, ckpt)
    assert (rep.strategy, rep.unused, rep.kept_initial) == ("structure", [], [])
    assert {e.key: e.file_key for e in rep.entries}["head.weight"] == "fc.weight"
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(model(image=x)["logits"], tv(x), rtol=1e-4, atol=1e-5)


def test_torchvision_checkpoint_by_order_into_parts(write_spec, tmp_path):
    tv = _tv_resnet18()
    ckpt = tmp_path / "resnet18.pth"
    torch.save(tv.state_dict(), ckpt)
    model = composer.load(write_spec(RESNET18_PARTS)).build().eval()
    rep = load_weights(model, ckpt)
    assert rep.strategy == "order" and rep.loaded == len(tv.state_dict())
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(model(image=x)["logits"], tv(x), rtol=1e-4, atol=1e-5)


def test_weights_for_another_model(tiny_pipe, write_spec, tmp_path, root):
    other = composer.load(root / "pipelines" / "cnn_classifier.yaml").build()
    path = save_weights(other, tmp_path / "other.safetensors")
    with pytest.raises(WeightsError) as exc:
        load_weights(tiny_pipe.build(), path)
    text = str(exc.value)
    assert str(path) in text and "does not fit pipeline `tiny_cnn`" in text
    assert "conv.weight" in text and "conv1.weight" in text      # missing and unexpected, by name
    assert exc.value.exit_code == 1


def test_shape_mismatch_lists_expected_and_found(tiny_pipe, tmp_path):
    model = tiny_pipe.build()
    sd = dict(model.state_dict())
    sd["head.weight"] = torch.zeros(7, 4)
    sd["head.bias"] = torch.zeros(7)
    path = tmp_path / "bad.safetensors"
    from safetensors.torch import save_file
    save_file(sd, str(path))
    with pytest.raises(WeightsError) as exc:
        load_weights(model, path)
    assert "head.weight: expected [5, 4], found [7, 4]" in str(exc.value)
    assert "head.bias: expected [5], found [7]" in str(exc.value)


def test_truncated_and_corrupt_files(tiny_pipe, tmp_path):
    model = tiny_pipe.build()
    good = save_weights(model, tmp_path / "good.safetensors")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    data = good.read_bytes()
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(data[: len(data) - 40])
    pt = tmp_path / "cut.pt"
    torch.save(model.state_dict(), pt)
    pt.write_bytes(pt.read_bytes()[:200])
    for bad in (cut, pt):
        with pytest.raises(WeightsError, match=r"cannot read weights file .*\(truncated") as exc:
            load_weights(model, bad)
        assert str(bad) in str(exc.value)
    with pytest.raises(WeightsError, match="does not exist"):
        load_weights(model, tmp_path / "missing.safetensors")
    (tmp_path / "w.txt").write_text("x")
    with pytest.raises(WeightsError, match="unknown format"):
        load_weights(model, tmp_path / "w.txt")
    for k, v in model.state_dict().items():   # nothing changed
        assert torch.equal(v, before[k])


class Evil:
    def __reduce__(self):
        return (print, ("pwned",))


def test_pt_files_never_unpickle_objects(tiny_pipe, tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"state_dict": tiny_pipe.build().state_dict(), "hook": Evil()}, path)
    with pytest.raises(WeightsError, match="refusing to load .*evil.pt"):
        read_state_dict(path)


def test_checkpoint_wrappers(tiny_pipe, tmp_path):
    model = tiny_pipe.build(seed=4)
    path = tmp_path / "ckpt.pt"
    torch.save({"state_dict": {f"module.{k}": v for k, v in model.state_dict().items()}, "epoch": 3}, path)
    other = tiny_pipe.build(seed=5)
    assert load_weights(other, path).strategy == "exact"
    assert torch.equal(other.state_dict()["conv.weight"], model.state_dict()["conv.weight"])


def test_export_with_foreign_weights(write_spec, tmp_path):
    tv = _tv_resnet18()
    ckpt = tmp_path / "resnet18.pth"
    torch.save(tv.state_dict(), ckpt)
    spec = write_spec(textwrap.dedent(RESNET18_BLOCK))
    rep = composer.export(composer.load(spec), tmp_path / "out" / "r18.onnx",
                          weights=WeightsSource(str(ckpt), strict=False))
    assert rep["weights"]["strategy"] == "structure" and rep["verification"]["passed"]
    assert rep["weights"]["kept_initial"] == ["head"]

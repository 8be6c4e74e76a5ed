"""Hugging Face model folders as `--weights`: `model.safetensors`, sharded indexes and
`pytorch_model.bin`, written by `transformers` itself; broken folders are clear errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torchvision
from safetensors.torch import save_file

import composer
from composer.weights import WeightsError, load_weights, read_state_dict

ROOT = Path(__file__).resolve().parents[2]


def _tiny_bert():
    import transformers
    torch.manual_seed(0)
    config = transformers.BertConfig(vocab_size=99, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                     intermediate_size=37, max_position_embeddings=64)
    return transformers.BertModel(config).eval()


@pytest.mark.parametrize("options", [{}, {"max_shard_size": "40KB"}])
def test_reads_what_transformers_writes(tmp_path, options):
    model = _tiny_bert()
    model.save_pretrained(tmp_path / "bert", **options)
    files = {p.name for p in (tmp_path / "bert").iterdir()}
    assert "config.json" in files
    if "max_shard_size" in options:
        assert "model.safetensors.index.json" in files and len([f for f in files if f.endswith(".safetensors")]) > 1
    tensors = read_state_dict(tmp_path / "bert")
    expected = model.state_dict()
    assert set(tensors) == set(expected)
    for k, v in expected.items():
        assert torch.equal(tensors[k], v), k


def _hf_folder(tmp_path: Path, tensors: dict, shards: int = 1) -> Path:
    """A folder laid out like `save_pretrained`'s: config.json and (sharded) safetensors."""
    folder = tmp_path / "hf"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"architectures": ["ResNetForImageClassification"]}))
    if shards == 1:
        save_file(tensors, str(folder / "model.safetensors"))
        return folder
    keys = sorted(tensors)
    weight_map = {}
    for i in range(shards):
        name = f"model-{i + 1:05d}-of-{shards:05d}.safetensors"
        part = keys[i::shards]
        save_file({k: tensors[k] for k in part}, str(folder / name))
        weight_map.update({k: name for k in part})
    (folder / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    return folder


def _r18_parts_spec(write_spec) -> Path:
    import tests.runtime.test_weights as tw
    return write_spec(tw.RESNET18_PARTS)


@pytest.mark.parametrize("shards", [1, 3])
def test_folder_loads_into_a_pipeline(tmp_path, write_spec, shards):
    """torchvision's resnet18 under a `resnet.` prefix, as a wrapper model saves it."""
    torch.manual_seed(0)
    tv = torchvision.models.resnet18(weights=None).eval()
    folder = _hf_folder(tmp_path, {f"resnet.{k}": v.contiguous() for k, v in tv.state_dict().items()}, shards)
    model = composer.load(_r18_parts_spec(write_spec)).build().eval()
    rep = load_weights(model, folder)
    assert rep.strategy == "structure" and rep.loaded == len(tv.state_dict())
    assert rep.file.endswith("model.safetensors" if shards == 1 else "model.safetensors.index.json")
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(model(image=x)["logits"], tv(x), rtol=1e-4, atol=1e-5)


def test_pytorch_model_bin_is_read_without_unpickling_objects(tmp_path, write_spec):
    torch.manual_seed(0)
    tv = torchvision.models.resnet18(weights=None).eval()
    folder = tmp_path / "bin"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    torch.save(tv.state_dict(), folder / "pytorch_model.bin")
    model = composer.load(_r18_parts_spec(write_spec)).build().eval()
    assert load_weights(model, folder).strategy == "order"      # a torch pickle keeps the order
    evil = tmp_path / "evil"
    evil.mkdir()
    torch.save({"w": torch.zeros(1), "hook": Evil()}, evil / "pytorch_model.bin")
    with pytest.raises(WeightsError, match="refusing to load"):
        read_state_dict(evil)


class Evil:
    def __reduce__(self):
        return (print, ("pwned",))


def test_broken_folders_are_clear_errors(tmp_path, write_spec):
    model = composer.load(_r18_parts_spec(write_spec)).build()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "config.json").write_text("{}")
    with pytest.raises(WeightsError, match=r"folder .*empty holds no weights: looked for model.safetensors, "
                                           r"model.safetensors.index.json, pytorch_model.bin.*; it has config.json"):
        load_weights(model, empty)
    tv = torchvision.models.resnet18(weights=None)
    folder = _hf_folder(tmp_path, {k: v.contiguous() for k, v in tv.state_dict().items()}, shards=3)
    (folder / "model-00002-of-00003.safetensors").unlink()
    with pytest.raises(WeightsError, match=r"1 of 3 shards are missing: model-00002-of-00003.safetensors"):
        load_weights(model, folder)
    index = folder / "model.safetensors.index.json"
    data = json.loads(index.read_text())
    data["weight_map"]["fc.extra"] = "model-00001-of-00003.safetensors"
    data["weight_map"] = {k: v for k, v in data["weight_map"].items() if v != "model-00002-of-00003.safetensors"}
    index.write_text(json.dumps(data))
    with pytest.raises(WeightsError, match=r"shard .*model-00001-of-00003.safetensors lacks 1 tensors its index "
                                           r"model.safetensors.index.json puts there: fc.extra"):
        load_weights(model, folder)
    data["weight_map"]["fc.extra"] = "../outside.safetensors"
    index.write_text(json.dumps(data))
    with pytest.raises(WeightsError, match=r"names shards outside its folder: \.\./outside.safetensors"):
        load_weights(model, folder)
    index.write_text("{not json")
    with pytest.raises(WeightsError, match=r"cannot read shard index .*JSONDecodeError"):
        load_weights(model, folder)
    index.write_text(json.dumps({"metadata": {}}))
    with pytest.raises(WeightsError, match=r"has no `weight_map`"):
        load_weights(model, folder)
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())

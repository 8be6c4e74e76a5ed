"""Reading checkpoints: safetensors, `.pt`/`.pth`/`.bin` through `torch.load(weights_only=True)`
only (never an arbitrary unpickle), and Hugging Face model folders (`config.json` beside
`model.safetensors`, a sharded `model.safetensors.index.json` with its shards, or
`pytorch_model.bin`, sharded or not).

A checkpoint is read whole before anything is loaded: a missing shard or a tensor the index
names but its shard lacks is an error naming the file, and nothing is loaded partially.
"""

from __future__ import annotations

import json
import os
import pickle
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

import torch

from .errors import ComposerError


class WeightsError(ComposerError):
    """A weights file cannot be read or does not fit the pipeline (exit code 1)."""


# a Hugging Face folder's weights, in the order they are looked for
HF_WEIGHTS = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json")
TORCH_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt")


@dataclass
class Checkpoint:
    """The tensors of a weights file or folder, and whether their order means anything
    (a `.pt` keeps the order the model registered them in; safetensors sorts its keys)."""

    path: str
    tensors: dict[str, torch.Tensor]
    ordered: bool


def read_checkpoint(path: str | os.PathLike) -> Checkpoint:
    """Read a weights file or a Hugging Face model folder."""
    path = Path(path)
    if not path.exists():
        raise WeightsError(f"weights file {path} does not exist")
    if path.is_dir():
        return _read_folder(path)
    if not path.is_file():
        raise WeightsError(f"weights path {path} is not a file")
    suffix = path.suffix.lower()
    if suffix == ".safetensors":
        return Checkpoint(str(path), _read_safetensors(path), ordered=False)
    if suffix in TORCH_SUFFIXES:
        return Checkpoint(str(path), _read_torch(path), ordered=True)
    if path.name.endswith(".index.json"):
        return _read_index(path)
    raise WeightsError(f"weights file {path}: unknown format {suffix or '(no suffix)'}; use .safetensors, .pt, "
                       ".pth or a Hugging Face model folder")


def _read_folder(folder: Path) -> Checkpoint:
    for name in HF_WEIGHTS:
        if (folder / name).is_file():
            return read_checkpoint(folder / name)
    found = sorted(p.name for p in folder.iterdir())[:8]
    raise WeightsError(f"folder {folder} holds no weights: looked for {', '.join(HF_WEIGHTS)}"
                       + (f"; it has {', '.join(found)}" if found else "; it is empty"))


def _read_index(index: Path) -> Checkpoint:
    """A sharded checkpoint: `weight_map` names the shard of every tensor."""
    try:
        data = json.loads(index.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise WeightsError(f"cannot read shard index {index}: {_first_line(exc)}") from None
    weight_map = data.get("weight_map") if isinstance(data, dict) else None
    if not isinstance(weight_map, dict) or not weight_map or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in weight_map.items()):
        raise WeightsError(f"shard index {index} has no `weight_map` of tensor names to shard files")
    folder = index.parent.resolve()
    shards: dict[str, list[str]] = {}
    for key, shard in weight_map.items():
        shards.setdefault(shard, []).append(key)
    outside = [s for s in shards if (folder / s).resolve().parent != folder]
    if outside:
        raise WeightsError(f"shard index {index} names shards outside its folder: {', '.join(outside)}")
    missing = [s for s in shards if not (folder / s).is_file()]
    if missing:
        raise WeightsError(f"shard index {index}: {len(missing)} of {len(shards)} shards are missing: "
                           f"{', '.join(missing)}")
    tensors: dict[str, torch.Tensor] = {}
    for shard, keys in shards.items():
        part = read_checkpoint(folder / shard).tensors
        absent = [k for k in keys if k not in part]
        if absent:
            raise WeightsError(f"shard {folder / shard} lacks {len(absent)} tensors its index {index.name} puts "
                               f"there: {', '.join(absent[:8])}")
        tensors.update({k: part[k] for k in keys})
    return Checkpoint(str(index), tensors, ordered=False)


def _read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file
    try:
        return dict(load_file(str(path)))
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise WeightsError(f"cannot read weights file {path}: {_first_line(exc)} "
                           "(truncated or not a safetensors file?)") from None


def _read_torch(path: Path) -> dict[str, torch.Tensor]:
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise WeightsError(f"refusing to load {path}: it holds objects other than tensors, which only an "
                           f"unrestricted unpickle could read ({_first_line(exc)}); save a plain state dict "
                           "or use safetensors") from None
    except (RuntimeError, OSError, EOFError, ValueError, zipfile.BadZipFile) as exc:
        raise WeightsError(f"cannot read weights file {path}: {_first_line(exc)} "
                           "(truncated or not a torch checkpoint?)") from None
    return _tensors_of(obj, path)


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0] if lines else ''}"


def _tensors_of(obj, path: Path) -> dict[str, torch.Tensor]:
    # common checkpoint wrappers: {"state_dict": {...}}, {"model": {...}}
    if isinstance(obj, Mapping) and not all(isinstance(v, torch.Tensor) for v in obj.values()):
        for key in ("state_dict", "model", "model_state_dict", "module"):
            if isinstance(obj.get(key), Mapping):
                obj = obj[key]
                break
    if not isinstance(obj, Mapping):
        raise WeightsError(f"weights file {path} holds a {type(obj).__name__}, not a state dict of tensors")
    out = {}
    for k, v in obj.items():
        if not isinstance(v, torch.Tensor):
            raise WeightsError(f"weights file {path}: entry `{k}` is a {type(v).__name__}, not a tensor")
        out[str(k)] = v
    if out and all(k.startswith("module.") for k in out):  # saved from DataParallel
        out = {k[len("module."):]: v for k, v in out.items()}
    return out

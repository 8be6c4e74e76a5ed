"""Reading a Hugging Face folder: config.json, the architecture, the fields the blocks take, the
tokenizer files and the checkpoint's keys."""

from __future__ import annotations

import json
import os
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from ..params import Activation
from .families import (DECODER_FAMILIES, ENCODER_ACTIVATIONS, FAMILIES, HEAD_ACTIVATIONS, TOKENIZER_FILES,
                       DecoderFamily, Family, Head, HFImportError)


def _read_json(path: Path, what: str) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise HFImportError(f"cannot read {what} {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise HFImportError(f"{what} {path} is not UTF-8 text (byte {exc.start})") from None
    except json.JSONDecodeError as exc:
        raise HFImportError(f"{what} {path} is not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})") \
            from None
    if not isinstance(data, dict):
        raise HFImportError(f"{what} {path} holds a JSON {type(data).__name__}, not an object")
    return data


def _read_config(folder: Path) -> dict:
    if not folder.exists():
        raise HFImportError(f"folder {folder} does not exist")
    if not folder.is_dir():
        raise HFImportError(f"{folder} is not a folder: give the folder `save_pretrained` wrote (config.json, "
                            "weights, tokenizer files)")
    path = folder / "config.json"
    if not path.is_file():
        raise HFImportError(f"folder {folder} has no config.json: is it a Hugging Face model folder (what "
                            "`save_pretrained` writes)?")
    return _read_json(path, "model config")


def _family(config: dict, folder: Path) -> Family | DecoderFamily:
    """The folder's family: an encoder's (`Family`) or a generative one's (`DecoderFamily`)."""
    model_type = config.get("model_type")
    supported = ", ".join([*FAMILIES, *DECODER_FAMILIES])
    if not isinstance(model_type, str) or not model_type:
        raise HFImportError(f"{folder / 'config.json'} has no `model_type`; composer imports {supported}")
    if model_type in DECODER_FAMILIES:
        return DECODER_FAMILIES[model_type]
    if model_type not in FAMILIES:
        raise HFImportError(f"model_type `{model_type}` ({folder / 'config.json'}) is not supported: composer "
                            f"imports {supported}")
    return FAMILIES[model_type]


def _architecture(family: Family | DecoderFamily, config: dict, chosen: Optional[str]) -> str:
    archs = config.get("architectures")
    name = chosen or (archs[0] if isinstance(archs, list) and archs and isinstance(archs[0], str) else family.base)
    if name not in family.heads:
        origin = "--architecture" if chosen else "config.json `architectures`"
        raise HFImportError(f"architecture {name} ({origin}) is not supported for {family.model_type}: composer "
                            f"imports {', '.join(family.heads)}; `--architecture {family.base}` imports the base "
                            "model alone")
    return name


@dataclass
class _Config:
    """config.json in the family-independent names of `Family.fields` (`keys`: where each came from)."""

    values: dict[str, Any]
    keys: dict[str, str]

    def __getitem__(self, name: str) -> Any:
        return self.values[name]

    def get(self, name: str, default: Any = None) -> Any:
        v = self.values.get(name)
        return default if v is None else v


_INTS = ("vocab_size", "hidden", "layers", "heads", "mlp", "max_positions", "type_vocab_size", "embedding_size",
         "groups", "inner_groups", "head_dim", "num_buckets", "max_distance")
_PROBS = ("dropout", "attention_dropout", "classifier_dropout", "embedding_dropout")


def _read_fields(family: Family | DecoderFamily, config: dict) -> _Config:
    values, keys = dict(family.fixed), {}
    for ours, key in family.fields.items():
        values[ours], keys[ours] = config.get(key, family.defaults.get(key)), key
    for name in _INTS:
        v = values.get(name, 1)
        low = 0 if name == "type_vocab_size" else 1
        if isinstance(v, bool) or not isinstance(v, int) or v < low:
            raise HFImportError(f"config.json `{keys[name]}` is {v!r}: expected "
                                + ("an integer >= 0" if low == 0 else "a positive integer"))
    pad = values.get("pad_token_id")
    if pad is not None and (isinstance(pad, bool) or not isinstance(pad, int) or pad < 0):
        raise HFImportError(f"config.json `pad_token_id` is {pad!r}: expected an integer id >= 0 (or null)")
    for name in (*_PROBS, "eps"):
        v = values.get(name)
        number = not isinstance(v, bool) and isinstance(v, (int, float))
        if (v is not None or name == "eps") and not (number and (0 < v <= 1 if name == "eps" else 0 <= v < 1)):
            raise HFImportError(f"config.json `{keys.get(name, name)}` is {v!r}: expected a number in "
                                + ("(0, 1]" if name == "eps" else "[0, 1)"))
    return _Config(values, keys)


def _unsupported(family: Family, cfg: _Config, config: dict, head: Head) -> None:
    """Config fields the blocks cannot reproduce: errors naming the field."""
    pet = config.get("position_embedding_type", "absolute")
    if pet != "absolute":
        raise HFImportError(f"config.json `position_embedding_type: {pet}` is not supported: the embedding block "
                            "adds absolute positions only")
    for flag in ("is_decoder", "add_cross_attention"):
        if config.get(flag):
            raise HFImportError(f"config.json `{flag}: true` is not supported: composer imports bidirectional "
                                "encoders (no causal mask, no cross-attention)")
    act = cfg["activation"]
    if act not in ENCODER_ACTIVATIONS:
        raise HFImportError(f"config.json `{cfg.keys['activation']}: {act}` is not supported: the encoder's "
                            f"activations are {', '.join(ENCODER_ACTIVATIONS)}")
    if cfg["hidden"] % cfg["heads"]:
        raise HFImportError(f"config.json `{cfg.keys['heads']}: {cfg['heads']}` does not divide "
                            f"`{cfg.keys['hidden']}: {cfg['hidden']}`")
    if "groups" in cfg.values:
        if cfg["inner_groups"] != 1:
            raise HFImportError(f"config.json `inner_group_num: {cfg['inner_groups']}` is not supported: the "
                                "encoder holds one layer per group (inner_group_num 1)")
        if cfg["groups"] not in (1, cfg["layers"]):
            raise HFImportError(f"config.json `num_hidden_groups: {cfg['groups']}` is not supported: the encoder "
                                f"shares one layer (1) or has one per layer ({cfg['layers']})")
    if head.kind == "mlm" and config.get("tie_word_embeddings", True) is False:
        raise HFImportError("config.json `tie_word_embeddings: false` is not supported: the mlm_head block decodes "
                            "with the embedding's word table")
    if family.positions == "padding_offset" and cfg.get("pad_token_id") is None:
        raise HFImportError(f"{family.title} numbers positions after the padding id, but config.json has no "
                            "`pad_token_id`")


def _head_activation(cfg: _Config, head: Head, block: str) -> str:
    act = head.activation or cfg["activation"]
    if act not in HEAD_ACTIVATIONS:
        where = f"config.json `{cfg.keys['activation']}: {act}`" if head.activation is None else f"activation {act}"
        raise HFImportError(f"{where} is used by the {block} head, and that block has no such activation (it has "
                            f"{', '.join(typing.get_args(Activation))})")
    return HEAD_ACTIVATIONS[act]


def _rel(path: Path, base: Path) -> str:
    return Path(os.path.relpath(path.resolve(), base.resolve())).as_posix()


def _tokenizer(folder: Path, spec_dir: Path, family: Family | DecoderFamily, max_length: int) -> tuple[dict, str]:
    """The tokenizer block's params for the folder's files (relative to the spec), and what they are."""
    tconf = folder / "tokenizer_config.json"
    tc = _read_json(tconf, "tokenizer config") if tconf.is_file() else {}
    if (folder / "tokenizer.json").is_file():
        params: dict[str, Any] = {"file": _rel(folder / "tokenizer.json", spec_dir)}
        what = "tokenizer.json"
    elif (folder / "vocab.txt").is_file():
        params = {"vocab": _rel(folder / "vocab.txt", spec_dir), "lowercase": tc.get("do_lower_case", True) is True}
        what = "WordPiece vocab.txt"
    elif (folder / "vocab.json").is_file() and (folder / "merges.txt").is_file():
        params = {"vocab": _rel(folder / "vocab.json", spec_dir), "merges": _rel(folder / "merges.txt", spec_dir)}
        what = "byte-level BPE vocab.json + merges.txt"
    elif (folder / "spiece.model").is_file():
        raise HFImportError(f"folder {folder} has a SentencePiece model (spiece.model) but no tokenizer.json; "
                            f"composer reads {', '.join(TOKENIZER_FILES)}: save the fast tokenizer into the folder "
                            "(its `save_pretrained` writes tokenizer.json)")
    else:
        raise HFImportError(f"folder {folder} has no tokenizer files: composer reads {', '.join(TOKENIZER_FILES)} "
                            "(save the tokenizer into the folder with its `save_pretrained`)")
    limit = tc.get("model_max_length")
    if isinstance(limit, int) and not isinstance(limit, bool) and 0 < limit < max_length:
        max_length = limit
    params["max_length"] = max_length
    if not family.token_types:
        params["token_types"] = False
    return params, what


def _checkpoint_keys(folder: Path) -> list[str]:
    from .._checkpoint import read_checkpoint
    return list(read_checkpoint(folder).tensors)

"""The spec text of an import, and the entry points `spec_text` and `import_hf`."""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Optional

from .. import _io
from ..errors import ComposerError, SpecError
from .families import ENCODER_ACTIVATIONS, DecoderFamily, Family, Head, HFImportError
from .folder import (_architecture, _checkpoint_keys, _Config, _family, _head_activation, _read_config, _read_fields, _rel,
                     _tokenizer, _unsupported)
from .rules import _has_pooler, _weight_rules


_PLAIN = re.compile(r"^[A-Za-z_.][A-Za-z0-9_./-]*$")
_YAML_WORDS = {"true", "false", "yes", "no", "on", "off", "null", "y", "n", ".inf", ".nan"}


def _quoted(s: str) -> str:
    return "'" + s.replace("'", "''") + "'"


def _value(v: Any) -> str:
    """A YAML flow value; strings plain where they read back as the same string, else single-quoted."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        mant, e, exp = repr(v).partition("e")
        return f"{mant}.0e{exp}" if e and "." not in mant else repr(v)   # YAML 1.1 floats need a dot
    if isinstance(v, str):
        return v if _PLAIN.match(v) and v.lower() not in _YAML_WORDS else _quoted(v)
    if isinstance(v, dict):
        return "{" + ", ".join(f"{k}: {_value(x)}" for k, x in v.items()) + "}"
    return "[" + ", ".join(_value(x) for x in v) + "]"


def _block(name: str, params: dict[str, Any], comments: Mapping[str, str] = {}) -> list[str]:
    """A block entry: one flow line when short and uncommented, else one param per line."""
    flow = f"  {name}: {_value(params)}"
    if len(flow) <= 110 and not comments:
        return [flow]
    lines = [f"  {name}:"]
    for k, v in params.items():
        line = f"    {k}: {_value(v)}"
        lines.append(f"{line:<36} # {comments[k]}" if k in comments else line)
    return lines


def _drop(p: Optional[float]) -> dict[str, float]:
    return {"dropout": float(p)} if p else {}


def _name(folder: Path, architecture: str) -> str:
    name = re.sub(r"\W+", "_", folder.resolve().name).strip("_").lower()
    name = name or re.sub(r"(?<!^)(?=[A-Z])", "_", architecture).lower()
    return name if re.match(r"^[A-Za-z_]", name) else f"m_{name}"


def _labels(config: dict, n: int) -> Optional[list[str]]:
    """Class names from id2label, unless they are transformers' placeholders (LABEL_0, …)."""
    raw = config.get("id2label")
    if not isinstance(raw, dict) or len(raw) != n:
        return None
    try:
        names = [str(raw[k]) for k in sorted(raw, key=int)]
    except (ValueError, TypeError):
        return None
    if all(re.fullmatch(r"LABEL_\d+", s) for s in names) or any(not s.strip() for s in names):
        return None
    return names


def _num_labels(config: dict) -> int:
    raw = config.get("id2label")
    n = len(raw) if isinstance(raw, dict) and raw else config.get("num_labels", 2)
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise HFImportError(f"config.json `num_labels` is {n!r}: expected a positive integer")
    return n


@dataclass
class _Blocks:
    lines: list[str] = field(default_factory=list)
    outputs: dict[str, str] = field(default_factory=dict)
    summary: list[str] = field(default_factory=list)
    labels: Optional[list[str]] = None

    def add(self, name: str, params: dict, comments: Mapping[str, str] = {}) -> None:
        self.lines += _block(name, params, comments)


def _base_blocks(b: _Blocks, family: Family, cfg: _Config, tok: dict, use_pooler: bool) -> None:
    """tok, emb, encoder (and the pooler: cls, pooler, pooled)."""
    b.add("tok", tok)
    hidden = cfg["hidden"]
    emb_dim = hidden if family.projection == "never" else cfg.get("embedding_size", hidden)
    projection = hidden if family.projection == "always" or emb_dim != hidden else None
    pad, types = cfg.get("pad_token_id"), cfg.get("type_vocab_size", 0)
    offset = family.positions == "padding_offset"
    emb_in = {"tokens": "tok.tokens"}
    if family.token_types and types:
        emb_in["token_types"] = "tok.token_types"
    if offset:
        emb_in["mask"] = "tok.mask"
    emb: dict[str, Any] = {"block": "embedding", "in": emb_in, "vocab_size": cfg["vocab_size"], "dim": emb_dim,
                           "max_positions": cfg["max_positions"]}
    notes = {}
    if cfg.get("sinusoidal"):    # transformers keeps the sinusoids in the checkpoint, as a parameter
        notes["max_positions"] = "sinusoidal_pos_embds: the checkpoint's table, loaded as it is"
    if offset:
        emb |= {"position_ids": "padding_offset", "padding_idx": pad}
        notes["position_ids"] = f"{family.title}: real tokens count from padding_idx + 1"
    if pad is not None and pad < cfg["vocab_size"]:
        emb["pad_token_id"] = pad
    if types:
        emb["type_vocab_size"] = types
    emb |= {"eps": float(cfg["eps"]), **_drop(cfg.get("dropout"))}
    if projection:
        emb["projection"] = projection
        notes["projection"] = f"embedding_size {emb_dim} -> hidden {hidden}"
    b.add("emb", emb, notes)
    b.summary.append("word + position" + (" + token-type" if types else "") + " embeddings"
                     + (f" ({emb_dim} wide, projected to {hidden})" if projection else ""))

    shared = cfg.get("groups") == 1
    act = ENCODER_ACTIVATIONS[cfg["activation"]]
    enc: dict[str, Any] = {"block": "transformer_encoder", "in": {"x": "emb.sequence", "mask": "tok.mask"},
                           "num_layers": cfg["layers"], "num_heads": cfg["heads"], "mlp_dim": cfg["mlp"],
                           "norm": "post", "qkv": "separate", "activation": act, "eps": float(cfg["eps"]),
                           **_drop(cfg.get("dropout"))}
    if cfg.get("attention_dropout"):
        enc["attention_dropout"] = float(cfg["attention_dropout"])
    notes = {"norm": f"{family.title}: LayerNorm after each residual",
             "qkv": "query/key/value as three projections, as the checkpoint holds them"}
    if act != cfg["activation"]:
        notes["activation"] = f"{cfg.keys['activation']}: {cfg['activation']}"
    if shared:
        enc["share_weights"] = True
        notes["share_weights"] = "ALBERT: one layer applied num_layers times"
    b.add("encoder", enc, notes)
    b.outputs["hidden"] = "encoder"
    b.summary.append(f"{cfg['layers']} post-norm encoder layers{' sharing one set of weights' if shared else ''} "
                     f"({hidden} wide, {cfg['heads']} heads, {act.replace('_', '-')} MLP of {cfg['mlp']})")
    if use_pooler:
        b.add("cls", {"block": "pooling", "in": "encoder", "mode": "cls"})
        b.add("pooler", {"block": "dense", "in": "cls", "out_features": hidden})
        b.add("pooled", {"block": "tanh", "in": "pooler"})
        b.outputs["pooled"] = "pooled"
        b.summary.append("the pooler ([CLS] state through dense + tanh)")


def _head_blocks(b: _Blocks, family: Family, cfg: _Config, config: dict, head: Head) -> None:
    """The architecture's head, as block `head` and output `logits`."""
    if head.kind == "base":
        return
    clf_drop = cfg.get("classifier_dropout", cfg.get("dropout"))
    if head.kind in ("pooled_classifier", "classifier", "tokens"):
        n = _num_labels(config)
        b.labels = _labels(config, n)
    if head.kind == "pooled_classifier":
        b.add("head", {"block": "sequence_classifier", "in": "pooled", "num_classes": n, **_drop(clf_drop)})
        b.summary.append(f"a {n}-class classifier on the pooled state")
    elif head.kind == "classifier":
        act = _head_activation(cfg, head, "sequence_classifier")
        b.add("head", {"block": "sequence_classifier", "in": "encoder", "num_classes": n, "hidden": cfg["hidden"],
                       "activation": act, **_drop(clf_drop)})
        b.summary.append(f"a {n}-class classifier on the first token (dense, {act}, out)")
    elif head.kind == "tokens":
        drop = cfg.get("dropout") if family.model_type == "distilbert" else clf_drop
        b.add("head", {"block": "token_classifier", "in": "encoder", "num_classes": n, **_drop(drop)})
        b.summary.append(f"a {n}-class classifier per token")
    elif head.kind == "mlm":
        act = _head_activation(cfg, head, "mlm_head")
        b.add("head", {"block": "mlm_head", "in": {"x": "encoder", "table": "emb.table"}, "activation": act,
                       "eps": float(cfg["eps"])}, {"in": "the decoder is the word table (tied)"})
        b.summary.append("the masked-LM head, its decoder tied to the word table")
    else:
        act = _head_activation(cfg, head, "electra_discriminator_head")
        b.add("head", {"block": "electra_discriminator_head", "in": "encoder", "activation": act})
        b.summary.append("the replaced-token discriminator (one logit per token)")
    b.outputs["logits"] = "head"


def _description(text: str) -> list[str]:
    """`description: >` and `text` folded into lines of at most 96 characters."""
    lines, line = ["description: >"], ""
    for w in text.split():
        if line and len(line) + 1 + len(w) > 96:
            lines.append("  " + line)
            line = w
        else:
            line = f"{line} {w}" if line else w
    return lines + ["  " + line]


def _weights_lines(folder_rel: str, rename: list[tuple[str, str]], ignore: list[tuple[str, str]],
                   transpose: list[str] = ()) -> list[str]:
    """The `weights:` section: the folder, the rename rules, the (regex, why) ignores and the transposes."""
    lines = ["weights:", f"{'  file: ' + _value(folder_rel):<37} # the Hugging Face folder, relative to this spec"]
    if rename:
        lines.append("  rename:                             # [regex, replacement], applied in order")
        lines += [f"    - [{_quoted(pat)}, {_quoted(repl)}]" for pat, repl in rename]
    if ignore:
        lines.append("  ignore:                             # file keys the spec leaves out")
        lines += [f"    - {_quoted(pat):<40} # {why}" for pat, why in ignore]
    if transpose:
        lines.append("  transpose:                          # file keys of matrices stored [in, out]")
        lines += [f"    - {_quoted(pat)}" for pat in transpose]
    lines.append("  strict: true                        # every tensor of the spec comes from the folder")
    return lines


def _layout(name: str, source: str, arch: str, family: Family, folder_rel: str, b: _Blocks,
            rename: list[tuple[str, str]], ignore: list[tuple[str, str]], pair: bool, max_length: int) -> str:
    lines = [f"# Written by `composer import hf {source}` from its config.json ({arch}).",
             "# The folder's weights load on every build; the rename rules map transformers' names onto the blocks.",
             f"pipeline: {name}"]
    text = f"{arch} ({family.title}) from {source}: {b.summary[0]}, " + ", ".join(b.summary[1:-1]) \
        + f" and {b.summary[-1]}."
    lines += _description(text) + _weights_lines(folder_rel, rename, ignore)
    small = [s for s in (8, 16) if s <= max_length]
    sizes = small if len(small) == 2 else sorted({max(1, max_length // 2), max_length})
    lines += ["dims:", "  B: {sizes: [1, 2], example: 1}",
              f"  T: {{sizes: {_value(sizes)}, example: {min(128, max_length)}}}",
              "inputs:", "  text: {kind: text, shape: [B]}"]
    if pair:
        lines.append("  pair: {kind: text, shape: [B]}     # the second segments of sentence pairs")
    lines += ["blocks:", *b.lines]
    if b.labels:
        lines.append("labels: [" + ", ".join(json.dumps(s, ensure_ascii=False) for s in b.labels) + "]")
    lines += ["outputs:", *(f"  {k}: {v}" for k, v in b.outputs.items())]
    return "\n".join(lines) + "\n"


# ---- the entry points ----------------------------------------------------------------------


@dataclass
class Imported:
    """A spec made for a Hugging Face folder, and how its weights map."""

    text: str
    path: Path
    family: str
    architecture: str
    outputs: list[str]
    tensors: int                                        # tensors the spec loads from the folder
    rename: int                                         # rename rules written
    ignored: list[str] = field(default_factory=list)    # file keys the spec leaves out
    notes: list[str] = field(default_factory=list)


def spec_text(folder: str | os.PathLike, spec_path: str | os.PathLike, *, architecture: Optional[str] = None,
              pair: bool = False, name: Optional[str] = None) -> Imported:
    """The spec for the Hugging Face folder `folder`, to be written at `spec_path` (its paths are
    relative to it), checked: it validates, and the folder fills every tensor of it with none of
    the folder's left unaccounted for. Nothing is written. `architecture` replaces config.json's
    (`BertModel`: the base model alone of a task folder); `pair` adds a second text input (the
    encoder families). GPT-2, T5 and XLNet folders are written by composer.hf.decoders."""
    folder, spec_path = Path(folder), Path(spec_path)
    config = _read_config(folder)
    family = _family(config, folder)
    if isinstance(family, DecoderFamily):
        from .decoders import decoder_spec_text
        return decoder_spec_text(folder, spec_path, config, family, architecture=architecture, pair=pair, name=name)
    arch = _architecture(family, config, architecture)
    head = family.heads[arch]
    cfg = _read_fields(family, config)
    _unsupported(family, cfg, config, head)
    spec_dir = spec_path.resolve().parent
    limit = cfg["max_positions"] - (cfg["pad_token_id"] + 1 if family.positions == "padding_offset" else 0)
    if limit < 2:
        raise HFImportError(f"config.json `{cfg.keys['max_positions']}: {cfg['max_positions']}` leaves no room "
                            "for a sequence")
    tok, tok_what = _tokenizer(folder, spec_dir, family, limit)
    tok = {"block": "tokenizer", "in": {"text": "text", "pair": "pair"} if pair else "text", **tok}
    keys = _checkpoint_keys(folder)
    use_pooler = head.kind == "pooled_classifier" or (head.kind == "base" and _has_pooler(family, keys))
    if head.kind == "pooled_classifier" and not _has_pooler(family, keys):
        raise HFImportError(f"{arch} classifies the pooled [CLS] state, but the weights of {folder} have no pooler")
    b = _Blocks(summary=[f"{tok_what} tokenizer"])
    _base_blocks(b, family, cfg, tok, use_pooler)
    _head_blocks(b, family, cfg, config, head)
    source = str(folder) if folder.is_absolute() else folder.as_posix()

    def text_of(rename, ignore) -> str:
        return _layout(name or _name(folder, arch), source, arch, family, _rel(folder, spec_dir), b, rename, ignore,
                       pair, tok["max_length"])

    own = set(_validated(text_of([], []), spec_path, folder).build(device="meta", spec_weights=False).state_dict())
    rename, ignore = _weight_rules(family, head, keys, use_pooler, arch, own)
    text = text_of(rename, ignore)
    report = _check_weights(_validated(text, spec_path, folder), folder)
    notes = []
    for pat, why in ignore:
        if why.startswith("not part of"):
            top = pat[1:-2].replace("\\", "")
            n = sum(1 for k in keys if re.search(pat, k))
            notes.append(f"the folder's {top}.* ({n} tensors) is {why}: ignored")
    return Imported(text, spec_path, family.model_type, arch, list(b.outputs), report.loaded, len(rename),
                    report.ignored, notes + list(report.warnings))


def _validated(text: str, spec_path: Path, folder: Path):
    from ..pipeline import loads
    try:
        return loads(text, file=str(spec_path.resolve()))
    except SpecError as exc:
        raise HFImportError(f"the spec made for {folder} does not validate:\n{exc.format()}") from None


def _check_weights(pipe, folder: Path):
    from ..weights import plan
    try:
        report = plan(pipe.build(device="meta", spec_weights=False), pipe.resolved.weights)
    except ComposerError as exc:
        raise HFImportError(f"the weights of {folder} do not load into the spec made for them:\n{exc}") from None
    if report.unused:
        raise HFImportError(f"the spec made for {folder} leaves {len(report.unused)} of its tensors unused: "
                            + ", ".join(report.unused[:8]))
    return report


def import_hf(folder: str | os.PathLike, output: str | os.PathLike, *, force: bool = False,
              architecture: Optional[str] = None, pair: bool = False, name: Optional[str] = None) -> Imported:
    """Write the spec for a Hugging Face folder at `output`, atomically (a failure leaves no file,
    or the previous one); an existing file is replaced only with `force`."""
    output = Path(output)
    if output.is_dir():
        raise HFImportError(f"{output} is a folder: give the path of the spec file to write")
    if output.exists() and not force:
        raise HFImportError(f"{output} exists: pass --force to replace it")
    result = spec_text(folder, output, architecture=architecture, pair=pair, name=name)
    _io.write_text(output, result.text)
    return result

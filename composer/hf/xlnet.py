"""XLNet folders (`XLNetModel`, `XLNetLMHeadModel`) as specs: the word table `emb`, `xlnet_encoder`
on it with the tokenizer's mask, and for the LM the head tied to the word table with its bias
(`lm_loss.bias`). No segment ids are bound, as transformers 5's XLNet tokenizer returns none by
default (so there is no segment term); a spec that wants them binds `token_types: tok.token_types`
(the tokenizer gives XLNet's 0 / 1 / 2 from tokenizer.json when its `token_types` is on). The
rename rules are blocks.text.xlnet's."""

from __future__ import annotations

from .drafts import _activation, _Draft, _length_dim, _heads_divide, _Writer
from .rules import _prefix
from .families import HFImportError
from .folder import _Config
from .spec import _Blocks, _drop

_DEFAULT_LENGTH = 512      # relative positions set no limit; the tokenizer's model_max_length may


def _kind(arch: str) -> str:
    from .families import DECODER_FAMILIES
    return DECODER_FAMILIES["xlnet"].heads[arch]


def _limit(cfg: _Config, config: dict) -> int:
    return _DEFAULT_LENGTH


def _check(cfg: _Config, config: dict, arch: str, keys: list[str]) -> None:
    for key, want in (("attn_type", "bi"), ("bi_data", False), ("same_length", False)):
        got = config.get(key, want)
        if got != want:
            shown = str(got).lower() if isinstance(got, bool) else got
            raise HFImportError(f"config.json `{key}: {shown}` is not supported: it is a pretraining setting of the "
                                f"original XLNet that the xlnet_encoder block does not implement (every released "
                                f"checkpoint has {str(want).lower()})")
    clamp = config.get("clamp_len", -1)
    if isinstance(clamp, bool) or not isinstance(clamp, int):
        raise HFImportError(f"config.json `clamp_len` is {clamp!r}: expected an integer (-1: no clamping)")
    _activation(cfg, "xlnet_encoder")
    _heads_divide(cfg)


def _rules(cfg: _Config, config: dict, arch: str, keys: list[str]) -> tuple[list, list, list]:
    from blocks.text.xlnet import HF_RULES
    from .families import DECODER_FAMILIES
    p = _prefix(DECODER_FAMILIES["xlnet"], keys)
    rename = [(pat.replace(r"(?:transformer\.)?", p), repl) for pat, repl in HF_RULES]
    ignore = []
    if _kind(arch) == "lm":
        rename.append((r"^lm_loss\.bias$", "lm_head.bias"))
        ignore.append((r"^lm_loss\.weight$", "tied to emb.word (the checkpoint holds a copy)"))
    return rename, ignore, []


def _draft(cfg: _Config, config: dict, arch: str, tok: dict, keys: list[str]) -> _Draft:
    d, heads, act = cfg["hidden"], cfg["heads"], _activation(cfg, "xlnet_encoder")
    b = _Blocks(summary=[])
    b.add("tok", {"block": "tokenizer", "in": "text", **tok})
    b.add("emb", {"block": "embedding", "in": {"tokens": "tok.tokens"}, "vocab_size": cfg["vocab_size"], "dim": d,
                  "positions": "none", "norm": False},
          {"positions": "XLNet: relative positions in the attention, no table"})
    enc = {"block": "xlnet_encoder", "in": {"x": "emb.sequence", "mask": "tok.mask"},
           "num_layers": cfg["layers"], "num_heads": heads, "d_inner": cfg["mlp"], "activation": act,
           "eps": float(cfg["eps"]), **_drop(cfg.get("dropout"))}
    if config.get("clamp_len", -1) > 0:
        enc["clamp_len"] = config["clamp_len"]
    notes = {"in": "no segment ids: transformers' XLNet tokenizer gives none by default"}
    if act != cfg["activation"]:
        notes["activation"] = f"ff_activation: {cfg['activation']}"
    b.add("encoder", enc, notes)
    b.summary += ["the word table (no position table)",
                  f"{cfg['layers']} two-stream relative-attention layers ({d} wide, {heads} heads, "
                  f"{act.replace('_', '-')} feed-forward of {cfg['mlp']})"]
    b.outputs["hidden"] = "encoder.sequence"
    if _kind(arch) == "lm":
        b.add("lm_head", {"block": "lm_head", "in": {"x": "encoder.sequence", "table": "emb.table"}, "bias": True},
              {"bias": "lm_loss.bias; its matrix is the word table (tied)"})
        b.outputs["logits"] = "lm_head"
        b.summary.append("the LM head tied to the word table, with a bias")
    b.summary.append("the hidden states are the content stream (no target_mapping)")
    dims = ["  B: {sizes: [1, 2], example: 1}", _length_dim(tok["max_length"])]
    rename, ignore, transpose = _rules(cfg, config, arch, keys)
    return _Draft(b, dims, ["  text: {kind: text, shape: [B]}"], rename=rename, ignore=ignore, transpose=transpose)


WRITER = _Writer(_limit, _check, _draft, _rules)

"""T5 folders (`T5ForConditionalGeneration`, `T5Model`, `T5EncoderModel`) as specs: the shared word
table `emb`, `t5_encoder`, the decoder's tokens looked up in the same table, `t5_decoder` with its
KV cache, and the LM head; `parts:` splits the spec into the encoder (run once per prompt) and the
decoder step (run once per token). The rename rules are blocks.text.t5's."""

from __future__ import annotations

from typing import Any

from .drafts import _Draft, _length_dim, _flags, _int_field, _Writer
from .families import HFImportError
from .folder import _Config
from .spec import _Blocks, _drop, _value

FEED_FORWARD = {"relu": "relu", "gated-gelu": "gated_gelu"}    # feed_forward_proj -> t5_*.feed_forward
_DEFAULT_LENGTH = 512      # relative positions set no limit; the tokenizer's model_max_length may
_CROSS_BIAS = r"^decoder\.block\.0\.layer\.1\.EncDecAttention\.relative_attention_bias\."


def _kind(arch: str) -> str:
    from .families import DECODER_FAMILIES
    return DECODER_FAMILIES["t5"].heads[arch]


def _decoder_layers(cfg: _Config, config: dict) -> int:
    if config.get("num_decoder_layers") is None:
        return cfg["layers"]
    return _int_field(config, "num_decoder_layers", None)


def _scaled(config: dict) -> bool:
    """Whether the decoder output is scaled by d_model**-0.5 before the LM head: T5 v1.0 (tied
    embeddings). transformers 5 writes `scale_decoder_outputs`; older configs say it with
    `tie_word_embeddings`."""
    if "scale_decoder_outputs" in config:
        return config["scale_decoder_outputs"] is not False
    return config.get("tie_word_embeddings", True) is not False


def _untied(config: dict, keys: list[str]) -> bool:
    """An LM head of its own: `tie_word_embeddings: false` (T5 v1.1 checkpoints of transformers 4) with
    the matrix in the folder."""
    return config.get("tie_word_embeddings", True) is False and "lm_head.weight" in keys


def _limit(cfg: _Config, config: dict) -> int:
    n = config.get("n_positions")
    return n if isinstance(n, int) and not isinstance(n, bool) and n > 1 else _DEFAULT_LENGTH


def _check(cfg: _Config, config: dict, arch: str, keys: list[str]) -> None:
    _flags(config, {"is_decoder": "composer imports T5 as an encoder-decoder (or its encoder alone)"})
    if config.get("is_encoder_decoder", True) is False:
        raise HFImportError("config.json `is_encoder_decoder: false` is not supported: composer imports T5 as an "
                            "encoder-decoder (or its encoder alone)")
    ff = cfg["activation"]
    if ff not in FEED_FORWARD:
        raise HFImportError(f"config.json `feed_forward_proj: {ff}` is not supported: the T5 blocks have "
                            f"{', '.join(FEED_FORWARD)} (T5 v1.0 and v1.1)")
    _decoder_layers(cfg, config)


def _rules(cfg: _Config, config: dict, arch: str, keys: list[str]) -> tuple[list, list, list]:
    from blocks.text.t5 import HF_DECODER_RULES, HF_ENCODER_RULES, HF_IGNORE, HF_SHARED_RULES
    kind = _kind(arch)
    # an encoder alone keeps the table in its embedding (emb.word); with a decoder, the `shared`
    # word_table block holds it under the checkpoint's own name
    rename = list(HF_SHARED_RULES + HF_ENCODER_RULES) if kind == "encoder" else list(HF_ENCODER_RULES)
    ignore = [(pat, "tied to the shared word table (the checkpoint holds a copy)") for pat in HF_IGNORE]
    if kind == "encoder":
        ignore += [(r"^decoder\.", "not part of T5EncoderModel"), (r"^lm_head\.", "not part of T5EncoderModel")]
    else:
        rename += HF_DECODER_RULES
        ignore.append((_CROSS_BIAS, "a cross-attention bias table of older checkpoints, never used"))
    if kind == "lm" and not _untied(config, keys):
        ignore.append((r"^lm_head\.weight$", "tied to the shared word table (the checkpoint holds a copy)"))
    return rename, ignore, []


def _stack(cfg: _Config, layers: int) -> dict[str, Any]:
    return {"num_layers": layers, "num_heads": cfg["heads"], "d_kv": cfg["head_dim"], "d_ff": cfg["mlp"],
            "feed_forward": FEED_FORWARD[cfg["activation"]], "num_buckets": cfg["num_buckets"],
            "max_distance": cfg["max_distance"], "eps": float(cfg["eps"]), **_drop(cfg.get("dropout"))}


def _draft(cfg: _Config, config: dict, arch: str, tok: dict, keys: list[str]) -> _Draft:
    kind = _kind(arch)
    d, v, heads, d_kv = cfg["hidden"], cfg["vocab_size"], cfg["heads"], cfg["head_dim"]
    dec_layers = _decoder_layers(cfg, config)
    ff = FEED_FORWARD[cfg["activation"]]
    b = _Blocks(summary=[])
    b.add("tok", {"block": "tokenizer", "in": "text", **tok})
    table = {"vocab_size": v, "dim": d, "positions": "none", "norm": False}
    shared = "emb.table" if kind == "encoder" else "shared"
    emb_in: dict[str, Any] = {"tokens": "tok.tokens"}
    if kind != "encoder":       # one table for both embeddings and the head, needing no tokens of its own
        b.add("shared", {"block": "word_table", "vocab_size": v, "dim": d},
              {"vocab_size": "the word table the encoder, the decoder and the LM head read"})
        emb_in["table"] = "shared"
    b.add("emb", {"block": "embedding", "in": emb_in, **table},
          {"positions": "T5: relative position biases in the attention, no table"})
    b.add("encoder", {"block": "t5_encoder", "in": {"x": "emb.sequence", "mask": "tok.mask"},
                      **_stack(cfg, cfg["layers"])},
          {"feed_forward": f"feed_forward_proj: {cfg['activation']}"} if ff != cfg["activation"] else {})
    what = "ReLU" if ff == "relu" else "gated-GELU"
    b.summary += ["the word table the encoder, the decoder and the LM head share",
                  f"{cfg['layers']} encoder layers ({d} wide, {heads} heads of {d_kv}, {what} feed-forward of "
                  f"{cfg['mlp']}, relative position biases)"]
    dims = ["  B: {sizes: [1, 2], example: 1}", _length_dim(tok["max_length"])]
    inputs = ["  text: {kind: text, shape: [B]}"]
    draft = _Draft(b, dims, inputs)
    draft.rename, draft.ignore, draft.transpose = _rules(cfg, config, arch, keys)
    if kind == "encoder":
        b.outputs["hidden"] = "encoder"
        b.summary.append("no decoder (T5EncoderModel)")
        return draft

    start = next((config[k] for k in ("decoder_start_token_id", "pad_token_id") if isinstance(config.get(k), int)), 0)
    dims += ["  U: {sizes: [1, 3], example: 1}", "  P: {sizes: [2, 5], example: 16}"]
    inputs += [f"  decoder_tokens: {{kind: tokens, shape: [B, U], dtype: int64}}   # the first step starts with "
               f"id {_value(start)}",
               "  decoder_mask: {kind: mask, shape: [B, U], dtype: int64}",
               f"  past: {{kind: kv_cache, shape: [{dec_layers}, 2, B, {heads}, P, {d_kv}]}}",
               "  past_mask: {kind: mask, shape: [B, P], dtype: int64}"]
    b.add("decoder_emb", {"block": "embedding", "in": {"tokens": "decoder_tokens", "table": shared}, **table},
          {"in": "looked up in the shared word table"})
    b.add("decoder", {"block": "t5_decoder",
                      "in": {"x": "decoder_emb.sequence", "mask": "decoder_mask", "encoder": "encoder",
                             "encoder_mask": "tok.mask", "past": "past", "past_mask": "past_mask"},
                      **_stack(cfg, dec_layers)})
    b.summary.append(f"{dec_layers} decoder layers with cross-attention and a KV cache")
    b.outputs["encoder_states"] = "encoder"
    if kind == "lm":
        if _untied(config, keys):
            b.add("lm_head", {"block": "lm_head", "in": "decoder.sequence", "vocab_size": v},
                  {"vocab_size": "tie_word_embeddings: false, a matrix of its own (T5 v1.1)"})
            b.summary.append("an LM head of its own (untied)")
        elif _scaled(config):
            b.add("lm_head", {"block": "lm_head", "in": {"x": "decoder.sequence", "table": shared},
                              "scale": d ** -0.5}, {"scale": f"d_model ** -0.5 (tied embeddings, d_model {d})"})
            b.summary.append("the LM head tied to the word table")
        else:
            b.add("lm_head", {"block": "lm_head", "in": {"x": "decoder.sequence", "table": shared}})
            b.summary.append("the LM head tied to the word table (scale_decoder_outputs: false)")
        b.outputs["logits"] = "lm_head"
        step = "logits"
    else:
        b.outputs["hidden"] = "decoder.sequence"
        step = "hidden"
    b.outputs["present"] = "decoder.present"
    b.summary.append("`parts:` runs the encoder once per prompt and the decoder once per step")
    draft.parts = ["  encoder: {outputs: [encoder_states]}",
                   f"  decoder: {{given: {{encoder_states: encoder, mask: tok.mask}}, outputs: [{step}, present]}}"]
    return draft


WRITER = _Writer(_limit, _check, _draft, _rules)

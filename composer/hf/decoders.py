"""The generative families of `composer import hf`: GPT-2, T5 and XLNet folders to specs.

Each family has a writer that turns a folder's config.json into the blocks of its spec (what
differs between them is more than field names: GPT-2 is one causal stack with a KV cache, T5 an
encoder and a cached decoder exported as two parts, XLNet a relative-position encoder) and the
candidate weight rules of its checkpoints. What they share is here: the architecture, the
tokenizer, the spec's layout, and the check that the folder fills every tensor of the spec with
none of its own left unaccounted for, as for the encoder families (composer.hf.spec).

Rename rules come from the blocks' modules where those define them (`blocks.text.t5`,
`blocks.text.xlnet`); GPT-2's are below (its Conv1D layers store matrices [in, out], so GPT-2
also has transpose rules).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Optional

from . import t5, xlnet
from .drafts import _activation, _Draft, _flags, _heads_divide, _int_field, _Writer
from .families import DECODER_FAMILIES, DecoderFamily, HFImportError
from .folder import _architecture, _checkpoint_keys, _Config, _read_fields, _rel, _tokenizer
from .rules import _prefix, _renamed
from .spec import Imported, _Blocks, _check_weights, _description, _drop, _name, _validated, _value, _weights_lines

_H = r"^(?:transformer\.)?h\.(\d+)\."

# GPT2Model / GPT2LMHeadModel keys -> emb, decoder (the LM head is tied to emb's word table)
GPT2_RENAME: tuple[tuple[str, str], ...] = (
    (r"^(?:transformer\.)?wte\.", "emb.word."),
    (r"^(?:transformer\.)?wpe\.", "emb.position."),
    (_H + r"ln_(1|2)\.", r"decoder.layers.\1.ln_\2."),
    (_H + r"attn\.c_attn\.weight$", r"decoder.layers.\1.self_attention.in_proj_weight"),
    (_H + r"attn\.c_attn\.bias$", r"decoder.layers.\1.self_attention.in_proj_bias"),
    (_H + r"attn\.c_proj\.", r"decoder.layers.\1.self_attention.out_proj."),
    (_H + r"mlp\.c_fc\.", r"decoder.layers.\1.mlp.0."),
    (_H + r"mlp\.c_proj\.", r"decoder.layers.\1.mlp.3."),
    (r"^(?:transformer\.)?ln_f\.", "decoder.ln_f."),
)
# GPT-2's Conv1D layers store their weights [in, out]
GPT2_TRANSPOSE: tuple[str, ...] = (_H + r"(attn\.c_attn|attn\.c_proj|mlp\.c_fc|mlp\.c_proj)\.weight$",)
# the tied LM head's copy of the word table, and the causal-mask buffers of old checkpoints
GPT2_IGNORE: tuple[str, ...] = (r"^lm_head\.weight$", _H + r"attn\.(bias|masked_bias)$")


# ---- GPT-2 -------------------------------------------------------------------------------------


def _gpt2_limit(cfg: _Config, config: dict) -> int:
    return cfg["max_positions"]


def _gpt2_check(cfg: _Config, config: dict, arch: str, keys: list[str]) -> None:
    _flags(config, {
        "add_cross_attention": "the transformer_decoder block has no cross-attention",
        "scale_attn_by_inverse_layer_idx": "the decoder scales attention scores by 1/sqrt(head size) alone",
        "reorder_and_upcast_attn": "the decoder's attention runs in the model's dtype "
                                   "(F.scaled_dot_product_attention), not upcast per layer",
    })
    if config.get("scale_attn_weights", True) is False:
        raise HFImportError("config.json `scale_attn_weights: false` is not supported: the decoder scales attention "
                            "scores by 1/sqrt(head size)")
    _activation(cfg, "transformer_decoder")
    _heads_divide(cfg)
    if config.get("n_inner") is not None:
        _int_field(config, "n_inner", None)
    if cfg["max_positions"] < 4:
        raise HFImportError(f"config.json `n_positions: {cfg['max_positions']}` leaves no room for a prompt and "
                            "cached steps")
    if DECODER_FAMILIES["gpt2"].heads[arch] == "lm" and config.get("tie_word_embeddings", True) is False \
            and "lm_head.weight" not in keys:
        raise HFImportError(f"config.json `tie_word_embeddings: false` gives {arch} an LM head of its own, but the "
                            "folder's weights have no lm_head.weight")


def _gpt2_rules(cfg: _Config, config: dict, arch: str, keys: list[str]) -> tuple[list, list, list]:
    p = _prefix(DECODER_FAMILIES["gpt2"], keys)
    rename = [(pat.replace(r"(?:transformer\.)?", p), repl) for pat, repl in GPT2_RENAME]
    transpose = [(pat.replace(r"(?:transformer\.)?", p), "GPT-2's Conv1D layers store [in, out]")
                 for pat in GPT2_TRANSPOSE]
    ignore = [(GPT2_IGNORE[1].replace(r"(?:transformer\.)?", p), "the causal-mask buffer of older checkpoints")]
    if config.get("tie_word_embeddings", True) is not False:
        ignore.insert(0, (GPT2_IGNORE[0], "tied to emb.word (the checkpoint holds a copy)"))
    return rename, ignore, transpose


def _gpt2_draft(cfg: _Config, config: dict, arch: str, tok: dict, keys: list[str]) -> _Draft:
    d, layers, heads, n = cfg["hidden"], cfg["layers"], cfg["heads"], cfg["max_positions"]
    mlp = config.get("n_inner") or 4 * d
    act = _activation(cfg, "transformer_decoder")
    lm = DECODER_FAMILIES["gpt2"].heads[arch] == "lm"
    tied = config.get("tie_word_embeddings", True) is not False
    b = _Blocks(summary=[])
    b.add("tok", {"block": "tokenizer", "in": "text", **tok})
    b.add("emb", {"block": "embedding", "in": {"tokens": "tok.tokens", "mask": "tok.mask", "past_mask": "past_mask"},
                  "vocab_size": cfg["vocab_size"], "dim": d, "max_positions": n, "position_ids": "from_mask",
                  "norm": False, **_drop(cfg.get("embedding_dropout"))},
          {"position_ids": "positions count the real tokens before each one, cached ones included"})
    dec: dict[str, Any] = {"block": "transformer_decoder",
                           "in": {"x": "emb.sequence", "mask": "tok.mask", "past": "past", "past_mask": "past_mask"},
                           "num_layers": layers, "num_heads": heads, "mlp_dim": mlp, "activation": act,
                           "eps": float(cfg["eps"]), **_drop(cfg.get("dropout"))}
    if cfg.get("attention_dropout"):
        dec["attention_dropout"] = float(cfg["attention_dropout"])
    notes = {"activation": f"activation_function: {cfg['activation']}"} if act != cfg["activation"] else {}
    b.add("decoder", dec, notes)
    b.summary += ["word + learned position embeddings (positions count the real tokens, cached ones included)",
                  f"{layers} pre-norm causal decoder layers ({d} wide, {heads} heads, {act.replace('_', '-')} MLP of "
                  f"{mlp}) with a final LayerNorm"]
    if lm:
        if tied:
            b.add("lm_head", {"block": "lm_head", "in": {"x": "decoder.sequence", "table": "emb.table"}})
            b.summary.append("the LM head tied to the word table")
        else:
            b.add("lm_head", {"block": "lm_head", "in": "decoder.sequence", "vocab_size": cfg["vocab_size"]},
                  {"vocab_size": "tie_word_embeddings: false, a matrix of its own"})
            b.summary.append("an LM head of its own (untied)")
        b.outputs["logits"] = "lm_head"
    else:
        b.outputs["hidden"] = "decoder.sequence"
    b.outputs["present"] = "decoder.present"
    b.summary.append("`past` holds the keys and values of the P earlier steps, `present` gives them back with "
                     "this call's appended")
    t_sizes, p_sizes = ([3, 6], [2, 5]) if n >= 12 else ([1, 2], [1, 2])
    dims = ["  B: {sizes: [1, 2], example: 1}", f"  T: {{sizes: {_value(t_sizes)}, example: 1}}",
            f"  P: {{sizes: {_value(p_sizes)}, example: {min(127, n - t_sizes[-1])}}}"]   # P + T within n_positions
    inputs = ["  text: {kind: text, shape: [B]}",
              f"  past: {{kind: kv_cache, shape: [{layers}, 2, B, {heads}, P, {d // heads}]}}",
              "  past_mask: {kind: mask, shape: [B, P], dtype: int64}"]
    rename, ignore, transpose = _gpt2_rules(cfg, config, arch, keys)
    return _Draft(b, dims, inputs, rename=rename, ignore=ignore, transpose=transpose)


WRITERS: dict[str, _Writer] = {
    "gpt2": _Writer(_gpt2_limit, _gpt2_check, _gpt2_draft, _gpt2_rules),
    "t5": t5.WRITER,
    "xlnet": xlnet.WRITER,
}


# ---- the rules that match a folder ---------------------------------------------------------------


def _fit(family: DecoderFamily, arch: str, keys: list[str], own: set[str], rename: list, ignore: list,
         transpose: list) -> tuple[list, list, list]:
    """The candidate rules that match the folder's keys; keys no rule maps onto the spec's (`own`) are
    ignored by their top-level module when they are a head's the spec lacks, an error when they are
    the base model's."""
    from .rules import fit_rules
    rename, ignore, kept = fit_rules(family, arch, keys, own, rename, ignore)
    transpose = [(pat, why) for pat, why in transpose if any(re.search(pat, k) for k in kept)]
    return rename, ignore, transpose


# ---- the spec --------------------------------------------------------------------------------


def _layout(name: str, source: str, arch: str, family: DecoderFamily, folder_rel: str, draft: _Draft,
            rename: list, ignore: list, transpose: list) -> str:
    b = draft.blocks
    lines = [f"# Written by `composer import hf {source}` from its config.json ({arch}).",
             "# The folder's weights load on every build; the rename rules map transformers' names onto the blocks.",
             f"pipeline: {name}"]
    lines += _description(f"{arch} ({family.title}) from {source}: " + ", ".join(b.summary[:-1])
                          + f"; {b.summary[-1]}.")
    lines += _weights_lines(folder_rel, rename, ignore, [pat for pat, _ in transpose])
    lines += ["dims:", *draft.dims, "inputs:", *draft.inputs, "blocks:", *b.lines,
              "outputs:", *(f"  {k}: {v}" for k, v in b.outputs.items())]
    if draft.parts:
        lines += ["parts:", *draft.parts]
    return "\n".join(lines) + "\n"


def decoder_spec_text(folder: Path, spec_path: Path, config: dict, family: DecoderFamily, *,
                      architecture: Optional[str] = None, pair: bool = False, name: Optional[str] = None) -> Imported:
    """`composer.hf.spec_text` for a folder of a generative family."""
    if pair:
        raise HFImportError(f"--pair is for the encoder families (sentence pairs); {family.title} takes one text")
    writer = WRITERS[family.model_type]
    arch = _architecture(family, config, architecture)
    cfg = _read_fields(family, config)
    keys = _checkpoint_keys(folder)
    writer.check(cfg, config, arch, keys)
    spec_dir = spec_path.resolve().parent
    tok, tok_what = _tokenizer(folder, spec_dir, family, writer.limit(cfg, config))
    draft = writer.draft(cfg, config, arch, tok, keys)
    draft.blocks.summary.insert(0, f"{tok_what} tokenizer")
    source = str(folder) if folder.is_absolute() else folder.as_posix()

    def text_of(rename, ignore, transpose) -> str:
        return _layout(name or _name(folder, arch), source, arch, family, _rel(folder, spec_dir), draft, rename,
                       ignore, transpose)

    own = set(_validated(text_of([], [], []), spec_path, folder).build(device="meta", spec_weights=False)
              .state_dict())
    rename, ignore, transpose = _fit(family, arch, keys, own, draft.rename, draft.ignore, draft.transpose)
    text = text_of(rename, ignore, transpose)
    report = _check_weights(_validated(text, spec_path, folder), folder)
    notes = []
    for pat, why in ignore:
        if why.startswith("not part of"):
            top = pat[1:-2].replace("\\", "")
            n = sum(1 for k in keys if re.search(pat, k))
            notes.append(f"the folder's {top}.* ({n} tensors) is {why}: ignored")
    return Imported(text, spec_path, family.model_type, arch, list(draft.blocks.outputs), report.loaded,
                    len(rename), report.ignored, notes + list(report.warnings))


def decoder_folder_rules(folder: Path, config: dict, family: DecoderFamily,
                         own: set[str]) -> Optional[tuple[list[tuple[str, str]], list[str], list[str]]]:
    """`composer.hf.folder_rules` for a folder of a generative family: (rename, ignore, transpose)
    when every tensor the rules keep lands on one of the pipeline keys `own`, else None."""
    writer = WRITERS[family.model_type]
    archs = config.get("architectures")
    arch = archs[0] if isinstance(archs, list) and archs and archs[0] in family.heads else family.base
    cfg = _read_fields(family, config)
    keys = _checkpoint_keys(folder)
    rename, ignore, transpose = _fit(family, arch, keys, own, *writer.rules(cfg, config, arch, keys))
    kept = [k for k in keys if not any(re.search(p, k) for p, _ in ignore)]
    if not all(_renamed(rename, k)[0] in own for k in kept):
        return None
    return rename, [p for p, _ in ignore], [p for p, _ in transpose]

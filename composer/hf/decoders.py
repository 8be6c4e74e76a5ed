"""Checkpoint layouts of the decoder families: how transformers' GPT-2 keys map onto the blocks of a
composer decoder spec (blocks `emb`, `decoder`, `lm_head`)."""

from __future__ import annotations

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

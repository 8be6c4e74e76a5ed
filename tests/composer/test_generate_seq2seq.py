"""`composer generate` on an encoder-decoder (T5): the encoder part once on the prompt, the decoder part
per token; greedy tokens equal transformers' T5ForConditionalGeneration.generate, in torch and in
onnxruntime."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

import composer
from blocks.text.t5 import HF_DECODER_RULES, HF_ENCODER_RULES, HF_IGNORE
from composer.generate import EncoderDecoder, TextGenerator, find_scheme
from composer.weights import save_tensors

transformers = pytest.importorskip("transformers")

ROOT = Path(__file__).resolve().parents[2]
L, H, D, KV, FF, V = 2, 4, 32, 8, 64, 291          # V: the ids of pipelines/data/t5/tokenizer.json


def spec(weights: str) -> str:
    return f"""
pipeline: tiny_t5
dims:
  B: {{sizes: [1, 2]}}
  T: {{sizes: [5, 9]}}
  U: {{sizes: [1, 3]}}
  P: {{sizes: [2, 4]}}
inputs:
  text: {{kind: text, shape: [B]}}
  decoder_tokens: {{kind: tokens, shape: [B, U], dtype: int64}}
  past: {{kind: kv_cache, shape: [{L}, 2, B, {H}, P, {KV}]}}
  past_mask: {{kind: mask, shape: [B, P], dtype: int64}}
weights:
  file: {weights}
  rename: {json.dumps([list(r) for r in HF_ENCODER_RULES + HF_DECODER_RULES])}
  ignore: {json.dumps(list(HF_IGNORE))}
blocks:
  tok: {{block: tokenizer, in: text, file: tokenizer.json, max_length: 64}}
  shared: {{block: word_table, vocab_size: {V}, dim: {D}}}
  emb: {{block: embedding, in: {{tokens: tok.tokens, table: shared}}, vocab_size: {V}, dim: {D}, positions: none,
         norm: false}}
  encoder: {{block: t5_encoder, in: {{x: emb.sequence, mask: tok.mask}}, num_layers: {L}, num_heads: {H},
             d_kv: {KV}, d_ff: {FF}}}
  dec_emb: {{block: embedding, in: {{tokens: decoder_tokens, table: shared}}, vocab_size: {V}, dim: {D},
             positions: none, norm: false}}
  decoder: {{block: t5_decoder, in: {{x: dec_emb.sequence, encoder: encoder, encoder_mask: tok.mask, past: past,
             past_mask: past_mask}}, num_layers: {L}, num_heads: {H}, d_kv: {KV}, d_ff: {FF}}}
  lm_head: {{block: lm_head, in: {{x: decoder.sequence, table: shared}}, scale: {D ** -0.5}}}
outputs:
  encoder_states: encoder
  logits: lm_head
  present: decoder.present
parts:
  encoder: {{outputs: [encoder_states]}}
  decoder: {{given: {{encoder_states: encoder, mask: tok.mask}}, outputs: [logits, present]}}
"""


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    folder = tmp_path_factory.mktemp("t5")
    torch.manual_seed(0)
    cfg = transformers.T5Config(vocab_size=V, d_model=D, d_kv=KV, d_ff=FF, num_layers=L, num_heads=H,
                                feed_forward_proj="relu", dropout_rate=0.0, pad_token_id=0, eos_token_id=1,
                                decoder_start_token_id=0)
    ref = transformers.T5ForConditionalGeneration(cfg).eval()
    with torch.no_grad():                       # spread the scores so argmax ties cannot happen
        ref.shared.weight.mul_(20.0)
    save_tensors({k: v.contiguous() for k, v in ref.state_dict().items()}, folder / "t5.safetensors")
    shutil.copy(ROOT / "pipelines/data/t5/tokenizer.json", folder / "tokenizer.json")
    path = folder / "tiny_t5.yaml"
    path.write_text(spec("t5.safetensors"))
    return composer.load(path), ref


def hf_greedy(ref, gen: TextGenerator, prompts: list[str], n: int) -> list[list[int]]:
    enc = [gen.tok.encode(p).ids for p in prompts]
    width = max(map(len, enc))
    ids = torch.tensor([e + [0] * (width - len(e)) for e in enc])
    mask = torch.tensor([[1] * len(e) + [0] * (width - len(e)) for e in enc])
    out = ref.generate(input_ids=ids, attention_mask=mask, do_sample=False, max_new_tokens=n, min_new_tokens=n)
    return [row[1:].tolist() for row in out]                 # after the decoder start token


def test_the_spec_is_recognised_as_an_encoder_decoder(setup):
    pipe, _ = setup
    scheme, roles = find_scheme(pipe.graph)
    assert scheme is EncoderDecoder
    assert (roles.encoder, roles.decoder, roles.decoder_tokens, roles.past) == ("encoder", "decoder",
                                                                               "decoder_tokens", "past")
    assert dict(roles.given) == {"encoder_states": "encoder_states", "mask": "mask"}


@pytest.mark.parametrize("backend", ["torch", "onnx"])
def test_greedy_tokens_equal_transformers(setup, backend):
    pipe, ref = setup
    prompts = ["A man is eating food.", "The girl is carrying a baby across the busy street."]
    gen = TextGenerator(pipe, backend=backend)
    try:
        got = gen(prompts, max_new_tokens=6, stop=[])
    finally:
        gen.close()
    assert got.ids == hf_greedy(ref, gen, prompts, 6)

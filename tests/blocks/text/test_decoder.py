"""transformer_decoder + embedding (from_mask positions) + lm_head equal transformers' GPT-2 with the
same weights: a left-padded batch, and cached steps against the full sequence."""

from __future__ import annotations

import pytest
import torch

import composer
from composer.hf.decoders import GPT2_IGNORE, GPT2_RENAME, GPT2_TRANSPOSE
from composer.weights import map_state_dict

transformers = pytest.importorskip("transformers")

L, H, D, V, HD = 2, 4, 32, 64, 8

SPEC = f"""
pipeline: tiny_gpt2
dims:
  B: {{sizes: [1, 2]}}
  T: {{sizes: [3, 5]}}
  P: {{sizes: [2, 4]}}
inputs:
  tokens: {{kind: tokens, shape: [B, T], dtype: int64}}
  mask: {{kind: mask, shape: [B, T], dtype: int64}}
  past: {{kind: kv_cache, shape: [{L}, 2, B, {H}, P, {HD}]}}
  past_mask: {{kind: mask, shape: [B, P], dtype: int64}}
blocks:
  emb:
    block: embedding
    in: {{tokens: tokens, mask: mask, past_mask: past_mask}}
    vocab_size: {V}
    dim: {D}
    max_positions: 32
    position_ids: from_mask
    norm: false
  decoder:
    block: transformer_decoder
    in: {{x: emb.sequence, mask: mask, past: past, past_mask: past_mask}}
    num_layers: {L}
    num_heads: {H}
    mlp_dim: {4 * D}
  lm_head: {{block: lm_head, in: {{x: decoder.sequence, table: emb.table}}}}
outputs:
  logits: lm_head
  present: decoder.present
"""


@pytest.fixture(scope="module")
def pair():
    torch.manual_seed(0)
    cfg = transformers.GPT2Config(vocab_size=V, n_positions=32, n_embd=D, n_layer=L, n_head=H,
                                  resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    ref = transformers.GPT2LMHeadModel(cfg).eval()
    model = composer.loads(SPEC).build(seed=0).eval()
    tensors, report = map_state_dict(model, ref.state_dict(), rename=[list(r) for r in GPT2_RENAME],
                                     ignore=list(GPT2_IGNORE), transpose=list(GPT2_TRANSPOSE))
    model.load_state_dict(tensors)
    return model, ref


def empty_past(b: int):
    return torch.zeros(L, 2, b, H, 0, HD), torch.zeros(b, 0, dtype=torch.int64)


def test_left_padded_prompt_logits_equal_gpt2(pair):
    model, ref = pair
    tokens = torch.randint(0, V, (2, 6), generator=torch.Generator().manual_seed(1))
    mask = torch.tensor([[0, 0, 1, 1, 1, 1], [1, 1, 1, 1, 1, 1]])
    position_ids = (mask.cumsum(-1) - 1).masked_fill(mask == 0, 1)          # as GPT-2's generate numbers them
    with torch.no_grad():
        want = ref(input_ids=tokens, attention_mask=mask, position_ids=position_ids).logits
        past, past_mask = empty_past(2)
        got = model(tokens=tokens, mask=mask, past=past, past_mask=past_mask)
    real = mask.bool()
    torch.testing.assert_close(got["logits"][real], want[real], atol=1e-5, rtol=1e-5)
    assert got["present"].shape == (L, 2, 2, H, 6, HD)


def test_cached_steps_equal_the_full_sequence(pair):
    model, ref = pair
    tokens = torch.randint(0, V, (2, 7), generator=torch.Generator().manual_seed(2))
    mask = torch.tensor([[0, 1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 1, 1, 1]])
    with torch.no_grad():
        position_ids = (mask.cumsum(-1) - 1).masked_fill(mask == 0, 1)
        want = ref(input_ids=tokens, attention_mask=mask, position_ids=position_ids).logits
        past, past_mask = empty_past(2)
        out = model(tokens=tokens[:, :4], mask=mask[:, :4], past=past, past_mask=past_mask)
        steps = [out["logits"]]
        past, past_mask = out["present"], mask[:, :4]
        for t in range(4, 7):
            out = model(tokens=tokens[:, t:t + 1], mask=mask[:, t:t + 1], past=past, past_mask=past_mask)
            steps.append(out["logits"])
            past, past_mask = out["present"], mask[:, :t + 1]
    got = torch.cat(steps, dim=1)
    real = mask.bool()
    torch.testing.assert_close(got[real], want[real], atol=1e-5, rtol=1e-5)
    assert past.shape == (L, 2, 2, H, 7, HD)


@pytest.fixture(scope="module")
def exported(pair, tmp_path_factory):
    model, _ = pair
    path = tmp_path_factory.mktemp("gpt2") / "tiny_gpt2.onnx"
    report = composer.export(model, path)
    assert report["verification"]["passed"]
    assert [i["shape"] for i in report["inputs"]] == [["B", "T"], ["B", "T"], [L, 2, "B", H, "P", HD], ["B", "P"]]
    return path


@pytest.mark.parametrize("b,t", [(1, 4), (3, 7)])
def test_onnxruntime_decodes_left_padded_prompts_as_torch(pair, exported, b, t):
    """The prompt pass (an empty cache, P = 0) and two cached steps, at two batch sizes and lengths."""
    from composer.runtime import Session
    model, _ = pair
    sess = Session(exported, device="cpu")
    g = torch.Generator().manual_seed(b)
    tokens = torch.randint(0, V, (b, t + 2), generator=g)
    mask = torch.ones(b, t + 2, dtype=torch.int64)
    mask[-1, : t // 2] = 0                                              # the last prompt is left-padded
    past, past_mask = empty_past(b)
    for start, stop in ((0, t), (t, t + 1), (t + 1, t + 2)):
        feed = {"tokens": tokens[:, start:stop], "mask": mask[:, start:stop], "past": past, "past_mask": past_mask}
        with torch.no_grad():
            want = model(**feed)
        got = sess.run({k: v.numpy() for k, v in feed.items()})
        real = mask[:, start:stop].bool()
        torch.testing.assert_close(torch.from_numpy(got["logits"])[real], want["logits"][real], atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(torch.from_numpy(got["present"]), want["present"], atol=1e-4, rtol=1e-4)
        past, past_mask = want["present"], mask[:, :stop]

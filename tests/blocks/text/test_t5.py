"""T5: rms_norm against T5LayerNorm, the relative position buckets against Hugging Face's, t5_encoder
and t5_decoder against Hugging Face T5 (v1.0 ReLU and v1.1 gated GELU, random weights loaded by the
rename rules), cached decoding against the full sequence, type errors, and ONNX exports of both
stacks verified in onnxruntime at several sizes."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
from torch import nn

import composer
from blocks.core.norm import RMSNorm
from blocks.text.t5 import (HF_DECODER_RULES, HF_ENCODER_RULES, HF_IGNORE, HF_RULES, T5Decoder, T5Encoder,
                            bucket_table, relative_buckets)
from composer.dims import sym
from composer.runtime import Session
from composer.types import InferError, PortType

transformers = pytest.importorskip("transformers")
from transformers.models.t5.modeling_t5 import T5Attention, T5LayerNorm  # noqa: E402

D, DKV, HEADS, DFF, LAYERS, VOCAB = 32, 8, 4, 64, 2, 64
FEED_FORWARD = {"relu": "relu", "gated-gelu": "gated_gelu"}
ATOL = 2e-6

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def config(ff: str) -> "transformers.T5Config":
    return transformers.T5Config(vocab_size=VOCAB, d_model=D, d_kv=DKV, num_heads=HEADS, d_ff=DFF, num_layers=LAYERS,
                                 num_decoder_layers=LAYERS, feed_forward_proj=ff, dropout_rate=0.0,
                                 decoder_start_token_id=0, pad_token_id=0)


def randomize(module: nn.Module, seed: int = 0, std: float = 0.2) -> nn.Module:
    """Random weights everywhere; norm weights around 1 (so a wrong eps or norm placement shows)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in module.state_dict().items():
            if t.is_floating_point():
                noise = torch.randn(t.shape, generator=g) * std
                t.copy_(1 + noise if name.endswith("layer_norm.weight") else noise)
    return module.eval()


@pytest.fixture(scope="module", params=sorted(FEED_FORWARD))
def hf(request) -> "transformers.T5ForConditionalGeneration":
    torch.manual_seed(0)
    return randomize(transformers.T5ForConditionalGeneration(config(request.param)))


def renamed(state: dict[str, torch.Tensor], block: str) -> dict[str, torch.Tensor]:
    """The Hugging Face tensors renamed by HF_RULES, ignored keys dropped, those of block `block`
    without its prefix."""
    out = {}
    for key, value in state.items():
        if any(re.search(p, key) for p in HF_IGNORE):
            continue
        new = key
        for pattern, repl in HF_RULES:
            new = re.sub(pattern, repl, new)
        assert new != key or key == "lm_head.weight", f"no rule renames {key}"
        if new.startswith(f"{block}."):
            out[new[len(block) + 1:]] = value
    return out


def params(hf) -> dict:
    c = hf.config
    return dict(num_layers=c.num_layers, num_heads=c.num_heads, d_kv=c.d_kv, d_ff=c.d_ff,
                feed_forward=FEED_FORWARD[c.feed_forward_proj])


def ours(hf, which: str) -> nn.Module:
    """Our encoder or decoder with the weights of `hf`, every key filled."""
    if which == "encoder":
        module = T5Encoder(**params(hf)).build(PortType("sequence", (sym("B"), sym("S"), D)))
    else:
        module = T5Decoder(**params(hf)).build(PortType("sequence", (sym("B"), sym("T"), D)), None,
                                               PortType("sequence", (sym("B"), sym("S"), D)))
    module.load_state_dict(renamed(hf.state_dict(), which), strict=True)
    return module.eval()


def source(b: int = 3, s: int = 9, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """Token ids and a mask with padding at the end of the middle row (id 0 = pad)."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, VOCAB, (b, s), generator=g)
    ids[b // 2, s - 3:] = 0
    return ids, (ids != 0).long()


def close(got: torch.Tensor, want: torch.Tensor, mask: torch.Tensor | None = None, atol: float = ATOL) -> float:
    """Equal (at the real positions of `mask`, if given); returns the largest difference."""
    if mask is not None:
        got, want = got[mask.bool()], want[mask.bool()]
    torch.testing.assert_close(got, want, atol=atol, rtol=1e-5)
    return (got - want).abs().max().item()


# ---- rms_norm and buckets -------------------------------------------------------------------


def test_rms_norm_is_t5_layer_norm():
    ref = T5LayerNorm(D, eps=1e-6)
    ours_ = RMSNorm(D, eps=1e-6)
    assert list(ours_.state_dict()) == ["weight"] == list(ref.state_dict())
    with torch.no_grad():
        ref.weight.copy_(torch.randn(D))
    ours_.load_state_dict(ref.state_dict())
    x = torch.randn(2, 5, D) * 3 + 1                      # a mean far from 0: no mean subtraction
    torch.testing.assert_close(ours_(x), ref(x), atol=0, rtol=0)
    half = x.to(torch.bfloat16)
    ref.to(torch.bfloat16), ours_.to(torch.bfloat16)
    assert ours_(half).dtype == torch.bfloat16
    torch.testing.assert_close(ours_(half), ref(half), atol=0, rtol=0)


@pytest.mark.parametrize("bidirectional", [True, False])
@pytest.mark.parametrize("num_buckets,max_distance", [(32, 128), (8, 16), (16, 20)])
def test_buckets_are_hugging_faces(bidirectional, num_buckets, max_distance):
    relative = torch.arange(-300, 301)[None, :] - torch.arange(3)[:, None]          # (3, 601)
    want = T5Attention._relative_position_bucket(relative, bidirectional=bidirectional, num_buckets=num_buckets,
                                                 max_distance=max_distance)
    table = bucket_table(bidirectional, num_buckets, max_distance)
    assert torch.equal(relative_buckets(relative, table, bidirectional, num_buckets), want)


# ---- against Hugging Face -------------------------------------------------------------------


def test_rules_cover_every_key_and_names_are_ours(hf):
    state = hf.state_dict()
    enc, dec = renamed(state, "encoder"), renamed(state, "decoder")
    assert set(enc) == set(ours(hf, "encoder").state_dict()) and set(dec) == set(ours(hf, "decoder").state_dict())
    assert renamed(state, "emb") == {"word.weight": state["shared.weight"]}
    assert "relative_bias.weight" in enc and "layers.1.ln_cross.weight" in dec and "final_norm.weight" in dec
    for rules, prefix in ((HF_ENCODER_RULES, "encoder."), (HF_DECODER_RULES, "decoder.")):
        assert all(p.startswith(f"^{prefix[:-1]}") and r.startswith(prefix) for p, r in rules)


def test_encoder_matches_hugging_face(hf):
    ids, mask = source()
    enc = ours(hf, "encoder")
    ref = transformers.T5EncoderModel(hf.config).eval()
    ref.load_state_dict({k: v for k, v in hf.state_dict().items() if not k.startswith(("decoder.", "lm_head."))})
    with torch.no_grad():
        want = ref(input_ids=ids, attention_mask=mask).last_hidden_state
        torch.testing.assert_close(hf.encoder(input_ids=ids, attention_mask=mask).last_hidden_state, want)
        close(enc(hf.shared(ids), mask), want, mask)
        # without a mask: every token real
        close(enc(hf.shared(ids)), ref(input_ids=ids).last_hidden_state)


def test_decoder_matches_hugging_face_and_cached_steps_match_the_full_sequence(hf):
    ids, mask = source()
    tgt = torch.randint(1, VOCAB, (3, 6), generator=torch.Generator().manual_seed(2))
    dec = ours(hf, "decoder")
    with torch.no_grad():
        memory = hf.encoder(input_ids=ids, attention_mask=mask).last_hidden_state
        out = hf.decoder(input_ids=tgt, encoder_hidden_states=memory, encoder_attention_mask=mask, use_cache=True)
        want = out.last_hidden_state                                               # (B, 6, D)
        full, present = dec(hf.shared(tgt), None, memory, mask)
        close(full, want)
        assert present.shape == (LAYERS, 2, 3, HEADS, 6, DKV)
        cache = out.cache.self_attention_cache                                    # HF's (B, H, T, d_kv) per layer
        for i in range(LAYERS):
            close(present[i, 0], cache.layers[i].keys)
            close(present[i, 1], cache.layers[i].values)
        # a prompt of 4, then 2 single-token steps, each with the previous step's present
        seq, past = dec(hf.shared(tgt[:, :4]), None, memory, mask)
        close(seq, full[:, :4])
        ones = torch.ones(3, 1, dtype=torch.long)
        for t in (4, 5):
            seq, past = dec(hf.shared(tgt[:, t:t + 1]), ones, memory, mask, past, torch.ones(3, t, dtype=torch.long))
            assert past.shape == (LAYERS, 2, 3, HEADS, t + 1, DKV)
            close(seq, full[:, t:t + 1])
        close(past, present)


def test_decoder_padding_mask_matches_hugging_face(hf):
    """A padded target row (pads at the end) and the mask split between past and the new step."""
    ids, mask = source()
    tgt, tmask = source(3, 6, seed=3)
    dec = ours(hf, "decoder")
    with torch.no_grad():
        memory = hf.encoder(input_ids=ids, attention_mask=mask).last_hidden_state
        want = hf.decoder(input_ids=tgt, attention_mask=tmask, encoder_hidden_states=memory,
                          encoder_attention_mask=mask).last_hidden_state
        full, _ = dec(hf.shared(tgt), tmask, memory, mask)
        close(full, want, tmask)
        seq, past = dec(hf.shared(tgt[:, :5]), tmask[:, :5], memory, mask)
        seq, _ = dec(hf.shared(tgt[:, 5:]), tmask[:, 5:], memory, mask, past, tmask[:, :5])
        close(seq, full[:, 5:], tmask[:, 5:])


LOAD_SPEC = """\
pipeline: t5_from_hugging_face
dims:
  B: {sizes: [1, 3], example: 3}
  S: {sizes: [5, 9], example: 9}
  T: {sizes: [1, 4], example: 6}
inputs:
  source: {kind: tokens, shape: [B, S], dtype: int64}
  source_mask: {kind: mask, shape: [B, S], dtype: int64}
  target: {kind: tokens, shape: [B, T], dtype: int64}
blocks:
  emb: {block: embedding, in: {tokens: source}, vocab_size: 64, dim: 32, positions: none, norm: false}
  encoder: {block: t5_encoder, in: {x: emb.sequence, mask: source_mask}, STACK}
  target_emb: {block: embedding, in: {tokens: target, table: emb.table}, vocab_size: 64, dim: 32, positions: none,
               norm: false}
  decoder: {block: t5_decoder, in: {x: target_emb.sequence, encoder: encoder, encoder_mask: source_mask}, STACK}
outputs:
  memory: encoder
  hidden: decoder.sequence
"""


def test_hugging_face_checkpoint_loads_through_composer_weights(hf, tmp_path):
    """A saved Hugging Face T5 state dict fills a pipeline (the decoder's tokens looked up in the
    encoder's word table) through `composer.load_weights` with HF_RULES and HF_IGNORE (the LM head
    belongs to another block), and the pipeline gives HF's outputs."""
    from safetensors.torch import save_file
    path = tmp_path / "t5.safetensors"
    save_file({k: v.detach().clone().contiguous() for k, v in hf.state_dict().items()}, str(path))
    stack = ", ".join(f"{k}: {v}" for k, v in params(hf).items())
    model = composer.loads(LOAD_SPEC.replace("STACK", stack), "t5.yaml").build(seed=0).eval()
    report = composer.load_weights(model, path, rename=HF_RULES, ignore=(*HF_IGNORE, r"^lm_head\."))
    assert report.loaded == len(model.state_dict()) and not report.unused and not report.warnings
    assert sorted(report.ignored) == ["decoder.embed_tokens.weight", "encoder.embed_tokens.weight", "lm_head.weight"]
    ids, mask = source()
    tgt = torch.randint(1, VOCAB, (3, 6), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        out = model(source=ids, source_mask=mask, target=tgt)
        memory = hf.encoder(input_ids=ids, attention_mask=mask).last_hidden_state
        want = hf.decoder(input_ids=tgt, encoder_hidden_states=memory, encoder_attention_mask=mask).last_hidden_state
    close(out["memory"], memory, mask)
    close(out["hidden"], want, atol=1e-5)             # our decoder on our encoder's memory: differences add up


# ---- types, counts, init ----------------------------------------------------------------------


B, S, T, P = sym("B"), sym("S"), sym("T"), sym("P")
X, ENC = PortType("sequence", (B, T, D)), PortType("sequence", (B, S, D))
PAST = PortType("kv_cache", (LAYERS, 2, B, HEADS, P, DKV))
PARAMS = dict(num_layers=LAYERS, num_heads=HEADS, d_kv=DKV, d_ff=DFF)


def test_types_and_param_counts(hf):
    dec = T5Decoder(**PARAMS)
    out = dec.infer(X, PortType("mask", (B, T), "int64"), ENC, None, PAST, PortType("mask", (B, P), "int64"))
    assert out["sequence"] == X and out["present"] == PortType("kv_cache", (LAYERS, 2, B, HEADS, P + T, DKV))
    assert dec.infer(X, None, ENC)["present"].shape == (LAYERS, 2, B, HEADS, T, DKV)
    assert T5Encoder(**PARAMS).infer(ENC) == {"sequence": ENC}
    for which, block, args in (("encoder", T5Encoder, (ENC,)), ("decoder", T5Decoder, (X, None, ENC))):
        for ff in ("relu", "gated_gelu"):
            b = block(**PARAMS, feed_forward=ff)
            assert b.param_count(*args) == sum(p.numel() for p in b.build(*args).parameters())
    n_hf = sum(p.numel() for k, p in hf.named_parameters() if k.startswith("encoder.block"))
    assert n_hf == sum(p.numel() for k, p in ours(hf, "encoder").named_parameters() if k.startswith(
        ("layers", "relative_bias")))


def test_type_errors():
    dec = T5Decoder(**PARAMS)
    with pytest.raises(InferError, match="past_mask"):
        dec.infer(X, None, ENC, None, None, PortType("mask", (B, P), "int64"))
    with pytest.raises(InferError, match="num_layers, 2, B, num_heads, P, d_kv"):
        dec.infer(X, None, ENC, None, PortType("kv_cache", (LAYERS, 2, B, HEADS + 1, P, DKV)))
    with pytest.raises(InferError, match="batch and feature size"):
        dec.infer(X, None, PortType("sequence", (B, S, D + 1)))
    with pytest.raises(InferError, match="mask"):
        T5Encoder(**PARAMS).infer(ENC, PortType("mask", (B, T), "int64"))
    with pytest.raises(InferError, match="max_distance"):
        T5Encoder(**PARAMS, num_buckets=32, max_distance=16).infer(ENC)


def test_init_is_seeded_and_like_hugging_face():
    torch.manual_seed(0)
    a = T5Decoder(**PARAMS).build(X, None, ENC)
    torch.manual_seed(0)
    b = T5Decoder(**PARAMS).build(X, None, ENC)
    for (k, x), y in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(x, y), k
    w = a.state_dict()
    assert torch.equal(w["layers.0.ln_1.weight"], torch.ones(D))
    assert abs(w["layers.0.self_attention.query.weight"].std().item() - (D * DKV) ** -0.5) < 0.2 * (D * DKV) ** -0.5
    assert abs(w["layers.0.mlp.wo.weight"].std().item() - DFF ** -0.5) < 0.2 * DFF ** -0.5


# ---- ONNX -----------------------------------------------------------------------------------------

SPEC = """\
pipeline: tiny_t5
seed: 0
dims:
  B: {sizes: [1, 3], example: 2}
  S: {sizes: [5, 9], example: 7}
  T: {sizes: [1, 4], example: 3}
  P: {sizes: [2, 6], example: 4}
inputs:
  source: {kind: tokens, shape: [B, S], dtype: int64}
  source_mask: {kind: mask, shape: [B, S], dtype: int64}
  target: {kind: tokens, shape: [B, T], dtype: int64}
  target_mask: {kind: mask, shape: [B, T], dtype: int64}
  past: {kind: kv_cache, shape: [2, 2, B, 4, P, 8]}
  past_mask: {kind: mask, shape: [B, P], dtype: int64}
blocks:
  emb: {block: embedding, in: {tokens: source}, vocab_size: 64, dim: 32, positions: none, norm: false}
  encoder: {block: t5_encoder, in: {x: emb.sequence, mask: source_mask}, num_layers: 1, num_heads: 4, d_kv: 8,
            d_ff: 64, feed_forward: gated_gelu}
  target_emb: {block: embedding, in: {tokens: target}, vocab_size: 64, dim: 32, positions: none, norm: false}
  decoder:
    block: t5_decoder
    in: {x: target_emb.sequence, mask: target_mask, encoder: encoder, encoder_mask: source_mask, past: past,
         past_mask: past_mask}
    num_layers: 2
    num_heads: 4
    d_kv: 8
    d_ff: 64
outputs:
  memory: encoder
  hidden: decoder.sequence
  present: decoder.present
"""


def test_encoder_and_decoder_export_and_match_onnxruntime(tmp_path):
    """One export of both stacks (a one-layer encoder to keep the trace short; dynamic B, S, T and P),
    verified by composer at two sizes of each, then run at other sizes, with padded rows and an empty
    cache (P = 0, the first step)."""
    pipe = composer.loads(SPEC, "tiny_t5.yaml")
    report = composer.export(pipe, tmp_path / "t5.onnx")
    ver = report["verification"]
    assert ver["passed"] and ver["max_abs"] < 1e-4
    assert {r["sizes"]["P"] for r in ver["runs"]} == {2, 6} and {r["sizes"]["B"] for r in ver["runs"]} == {1, 3}
    model = pipe.build(seed=0).eval()
    sess = Session(tmp_path / "t5.onnx", device="cpu")
    g = torch.Generator().manual_seed(5)
    for b, s, t, p in [(2, 6, 1, 0), (4, 11, 3, 5), (3, 3, 2, 9)]:
        ids, mask = source(b, s, seed=s)
        target, target_mask = source(b, t + 3, seed=t)
        feeds = {"source": ids, "source_mask": mask, "target": target[:, :t], "target_mask": target_mask[:, :t],
                 "past": torch.randn(LAYERS, 2, b, HEADS, p, DKV, generator=g),
                 "past_mask": torch.ones(b, p, dtype=torch.long)}
        got = sess.run({k: v.numpy() for k, v in feeds.items()})
        with torch.no_grad():
            want = model(**feeds)
        assert got["present"].shape == (LAYERS, 2, b, HEADS, p + t, DKV)
        for name, real in (("memory", mask), ("hidden", target_mask[:, :t]), ("present", None)):
            g_, w_ = torch.from_numpy(got[name]), want[name]
            if real is not None:
                g_, w_ = g_[real.bool()], w_[real.bool()]
            np.testing.assert_allclose(g_.numpy(), w_.numpy(), atol=1e-5, rtol=1e-5)

"""xlnet_encoder against Hugging Face's XLNetModel (random weights, built locally): the content stream
with padding and two segments, the query stream with a permutation mask and a target mapping, the
memory of earlier segments, its keys and types, and ONNX export of a spec verified in onnxruntime."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
from pydantic import ValidationError

import composer
from blocks.text.xlnet import HF_RULES, XLNetEncoder
from composer.dims import sym
from composer.runtime import Session
from composer.types import InferError, PortType
from composer.weights import map_state_dict

transformers = pytest.importorskip("transformers")

B, T = sym("B"), sym("T")
D, HEADS, INNER, LAYERS, VOCAB = 32, 4, 64, 2, 50
X = PortType("sequence", (B, T, D))
ATOL = 1e-5

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def reference(seed: int = 0, **config) -> torch.nn.Module:
    """A small XLNetModel with random weights (layer-norm weights around 1)."""
    cfg = dict(vocab_size=VOCAB, d_model=D, n_layer=LAYERS, n_head=HEADS, d_inner=INNER, dropout=0.0, mem_len=None)
    ref = transformers.XLNetModel(transformers.XLNetConfig(**{**cfg, **config}))
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in ref.state_dict().items():
            noise = torch.randn(t.shape, generator=g) * 0.2
            t.copy_(1 + noise if name.endswith("layer_norm.weight") else noise)
    return ref.eval()


def renamed(state: dict) -> dict:
    """A Hugging Face state dict under our spec's keys, through HF_RULES."""
    out = {}
    for key, value in state.items():
        for pattern, repl in HF_RULES:
            key = re.sub(pattern, repl, key)
        out[key] = value
    return out


def ours_from(ref: torch.nn.Module, **params) -> tuple[torch.nn.Module, torch.Tensor]:
    """Our encoder with the reference's weights (every key filled), and the word table."""
    block = XLNetEncoder(num_layers=LAYERS, num_heads=HEADS, d_inner=INNER, **params)
    module = block.build(x=X).eval()
    state = renamed(ref.state_dict())
    assert set(state) == {"emb.word.weight"} | {f"encoder.{k}" for k in module.state_dict()}
    module.load_state_dict({k[len("encoder."):]: v for k, v in state.items() if k.startswith("encoder.")})
    return module, state["emb.word.weight"]


def batch(b: int = 3, t: int = 8, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Token ids, a right-padded mask (row i has t - 2*i real tokens, at least 1) and two segments."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, VOCAB, (b, t), generator=g)
    lengths = torch.tensor([max(1, t - 2 * i) for i in range(b)])
    mask = (torch.arange(t)[None, :] < lengths[:, None]).long()                  # (B, T), 1 = real
    token_types = (torch.arange(t)[None, :] >= (lengths[:, None] + 1) // 2).long()   # A then B
    return ids, mask, token_types


def close(got: torch.Tensor, want: torch.Tensor, atol: float = ATOL) -> float:
    torch.testing.assert_close(got, want, atol=atol, rtol=0)
    return (got - want).abs().max().item()


def hf_mems(mems) -> torch.Tensor:
    """XLNetModel's mems ([M, B, D] per layer) as our new_mems [L, B, M, D]."""
    return torch.stack([m.transpose(0, 1) for m in mems])


# ---- parity --------------------------------------------------------------------------------


@pytest.mark.parametrize("ff_activation, activation", [("gelu", "gelu"), ("relu", "relu"), ("gelu_new", "gelu_tanh")])
def test_content_stream_matches_xlnet(ff_activation, activation):
    ref = reference(ff_activation=ff_activation)
    ours, word = ours_from(ref, activation=activation)
    ids, mask, token_types = batch()
    with torch.no_grad():
        want = ref(ids, attention_mask=mask, token_type_ids=token_types, use_mems=True)
        seq, query, new_mems = ours(word[ids], mask, token_types)
        close(seq, want.last_hidden_state)
        close(new_mems, hf_mems(want.mems))
        assert query.shape == seq.shape
        # no mask and no segments at all
        close(ours(word[ids])[0], ref(ids).last_hidden_state)


def test_query_stream_matches_xlnet():
    ref = reference(seed=2)
    ours, word = ours_from(ref)
    ids, mask, token_types = batch(3, 8)
    g = torch.Generator().manual_seed(3)
    perm_mask = (torch.rand(3, 8, 8, generator=g) > 0.5).float()
    targets = torch.tensor([[1, 4, 6], [0, 2, 5], [3, 1, 2]])
    target_mapping = torch.nn.functional.one_hot(targets, 8).float()                # (B, Q = 3, T)
    with torch.no_grad():
        want = ref(ids, attention_mask=mask, token_type_ids=token_types, perm_mask=perm_mask,
                   target_mapping=target_mapping, output_hidden_states=True)
        seq, query, _ = ours(word[ids], mask, token_types, perm_mask, target_mapping)
        close(query, want.last_hidden_state)                      # XLNetModel returns the query stream
        close(seq, want.hidden_states[-2])                        # and the content stream beside it
        # unbound, target_mapping is the identity: a query at every position
        eye = torch.eye(8).expand(3, 8, 8)
        want = ref(ids, attention_mask=mask, token_type_ids=token_types, perm_mask=perm_mask, target_mapping=eye)
        close(ours(word[ids], mask, token_types, perm_mask)[1], want.last_hidden_state)
        # a perm_mask without padding, as integers
        want = ref(ids, perm_mask=perm_mask, target_mapping=target_mapping)
        close(ours(word[ids], None, None, perm_mask.long(), target_mapping)[1], want.last_hidden_state)


def test_memory_matches_xlnet():
    ref = reference(seed=4, mem_len=7, clamp_len=5)
    ours, word = ours_from(ref, mem_len=7, clamp_len=5)
    ids, mask, token_types = batch(2, 6, seed=5)
    ids2, mask2, types2 = batch(2, 5, seed=6)
    with torch.no_grad():
        want = ref(ids, use_mems=True)
        seq, _, mems = ours(word[ids])
        close(seq, want.last_hidden_state)
        close(mems, hf_mems(want.mems))
        assert mems.shape == (LAYERS, 2, 6, D)
        # the next segment sees the memory; mem_len keeps the last 7 of 6 + 5
        want = ref(ids2, attention_mask=mask2, token_type_ids=types2, mems=want.mems, use_mems=True)
        seq, _, mems2 = ours(word[ids2], mask2, types2, None, None, mems)
        close(seq, want.last_hidden_state)
        close(mems2, hf_mems(want.mems), atol=ATOL)
        assert mems2.shape == (LAYERS, 2, 7, D)
        # and the query stream with memory and a permutation
        perm = torch.triu(torch.ones(5, 5), diagonal=0).expand(2, 5, 5)             # i sees only j < i
        tm = torch.nn.functional.one_hot(torch.tensor([[4, 2], [1, 3]]), 5).float()
        want = ref(ids2, attention_mask=mask2, perm_mask=perm, target_mapping=tm, mems=want.mems)
        close(ours(word[ids2], mask2, None, perm, tm, mems2)[1], want.last_hidden_state)


def test_reuse_len_keeps_the_first_tokens():
    ref = reference(seed=7, mem_len=4, reuse_len=3)
    ours, word = ours_from(ref, mem_len=4, reuse_len=3)
    ids, _, _ = batch(2, 6, seed=8)
    with torch.no_grad():
        want = ref(ids, use_mems=True)
        mems = ours(word[ids])[2]
        close(mems, hf_mems(want.mems))
        assert mems.shape == (LAYERS, 2, 3, D)
        want = ref(ids, mems=want.mems, use_mems=True)
        close(ours(word[ids], None, None, None, None, mems)[2], hf_mems(want.mems), atol=ATOL)


# ---- keys and types ------------------------------------------------------------------------


def test_keys_param_count_and_rules():
    ref = reference()
    block = XLNetEncoder(num_layers=LAYERS, num_heads=HEADS, d_inner=INNER)
    module = block.build(x=X)
    want = {k: tuple(v.shape) for k, v in ref.state_dict().items() if k != "word_embedding.weight"}
    assert {k: tuple(v.shape) for k, v in module.state_dict().items()} == want
    assert block.param_count(x=X) == sum(p.numel() for p in module.parameters())
    wide = XLNetEncoder(num_layers=1, num_heads=3, d_head=5, d_inner=INNER)
    assert wide.param_count(x=X) == sum(p.numel() for p in wide.build(x=X).parameters())
    # task checkpoints nest the base model under `transformer.`
    prefixed = renamed({f"transformer.{k}": v for k, v in ref.state_dict().items()})
    assert set(prefixed) == set(renamed(ref.state_dict()))
    assert "encoder.layer.1.rel_attn.seg_embed" in prefixed and "encoder.mask_emb" in prefixed


def test_infer_and_errors():
    block = XLNetEncoder(num_layers=2, num_heads=HEADS, d_inner=INNER)
    Q, M = sym("Q"), sym("M")
    outs = block.infer(x=X)
    assert outs == {"sequence": X, "query": X, "new_mems": PortType("tensor", (2, B, T, D))}
    outs = block.infer(x=X, mask=PortType("mask", (B, T), "int64"), token_types=PortType("tokens", (B, T), "int64"),
                       perm_mask=PortType("mask", (B, T, T)), target_mapping=PortType("tensor", (B, Q, T)),
                       mems=PortType("tensor", (2, B, M, D)))
    assert outs["query"].shape == (B, Q, D) and outs["new_mems"].shape == (2, B, M + T, D)
    static = PortType("sequence", (2, 6, D))

    def mem_shape(x: PortType, **params) -> tuple:
        return XLNetEncoder(num_layers=2, num_heads=4, d_inner=8, **params).infer(x=x)["new_mems"].shape

    assert mem_shape(static, mem_len=4) == (2, 2, 4, D) and mem_shape(static, reuse_len=3) == (2, 2, 3, D)
    assert not isinstance(mem_shape(X, mem_len=4)[2], int)          # min(T, mem_len): a new dim
    for param, value in (("bi_data", True), ("attn_type", "uni"), ("same_length", True)):
        with pytest.raises(InferError, match="pretraining setting") as e:
            XLNetEncoder(num_layers=2, num_heads=HEADS, d_inner=INNER, **{param: value}).infer(x=X)
        assert e.value.param == param
    with pytest.raises(InferError, match="num_heads=5 must divide"):
        XLNetEncoder(num_layers=2, num_heads=5, d_inner=INNER).infer(x=X)
    bad_ports = [("mask", PortType("mask", (B, sym("S")), "int64")), ("token_types", PortType("tokens", (B, T))),
                 ("perm_mask", PortType("mask", (B, T))), ("target_mapping", PortType("tensor", (B, 3, T), "int64")),
                 ("mems", PortType("tensor", (3, B, M, D))), ("mems", PortType("tensor", (2, B, M, D), "float16"))]
    for port, t in bad_ports:
        with pytest.raises(InferError) as e:
            block.infer(x=X, **{port: t})
        assert e.value.port == port, (port, e.value.message)
    base = {"num_layers": 2, "num_heads": 4, "d_inner": 8}
    for bad in ({"num_layers": 2, "num_heads": 4}, {**base, "activation": "silu"}, {**base, "attn_type": "both"},
                {**base, "mem_len": 0}):
        with pytest.raises(ValidationError):
            XLNetEncoder.model_validate(bad)


# ---- a spec: weights through HF_RULES, ONNX ----------------------------------------------------


SPEC = """\
pipeline: tiny_xlnet
seed: 0
dims:
  B: {sizes: [1, 3], example: 2}
  T: {sizes: [5, 9], example: 7}
inputs:
  tokens: {kind: tokens, shape: [B, T], dtype: int64}
  mask: {kind: mask, shape: [B, T], dtype: int64}
  token_types: {kind: tokens, shape: [B, T], dtype: int64}
blocks:
  emb: {block: embedding, in: tokens, vocab_size: 50, dim: 32, positions: none, norm: false}
  encoder:
    block: xlnet_encoder
    in: {x: emb.sequence, mask: mask, token_types: token_types}
    num_layers: 1                  # one layer keeps the export quick; the parity tests above run two
    num_heads: 4
    d_inner: 64
outputs:
  hidden: encoder.sequence
  mems: encoder.new_mems
"""


def test_spec_loads_xlnet_weights_and_exports(tmp_path):
    ref = reference(seed=9, n_layer=1)
    pipe = composer.loads(SPEC, "tiny_xlnet.yaml")
    model = pipe.build(seed=0).eval()
    tensors, _ = map_state_dict(model, ref.state_dict(), rename=HF_RULES)
    assert set(tensors) == set(model.state_dict())
    model.load_state_dict(tensors)
    ids, mask, token_types = batch(3, 9, seed=10)
    with torch.no_grad():
        want = ref(ids, attention_mask=mask, token_type_ids=token_types, use_mems=True)
        got = model(tokens=ids, mask=mask, token_types=token_types)
    close(got["hidden"], want.last_hidden_state)
    close(got["mems"], hf_mems(want.mems))

    report = composer.export(model, tmp_path / "xlnet.onnx", pipeline=pipe)
    ver = report["verification"]
    assert ver["passed"] and ver["max_abs"] < 1e-4, ver
    assert [r["sizes"] for r in ver["runs"]] == [{"B": 1, "T": 5}, {"B": 3, "T": 9}]
    sess = Session(tmp_path / "xlnet.onnx", device="cpu")
    for b, t in [(2, 7), (4, 12)]:                  # padded batches at sizes neither traced nor verified
        ids, mask, token_types = batch(b, t, seed=t)
        got = sess.run({"tokens": ids.numpy(), "mask": mask.numpy(), "token_types": token_types.numpy()})
        with torch.no_grad():
            want = model(tokens=ids, mask=mask, token_types=token_types)
        np.testing.assert_allclose(got["hidden"], want["hidden"].numpy(), atol=ATOL, rtol=0)
        np.testing.assert_allclose(got["mems"], want["mems"].numpy(), atol=ATOL, rtol=0)

"""`attention` (additive, dot, scaled_dot, multihead) and `attention_pool`: against formulas written
out here, multihead against `nn.MultiheadAttention`, masked rows against the same rows cut to their
true length, an ONNX round trip of a small series pipeline, and located errors."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import composer
from blocks.sequence.attention import Attention, AttentionPoolBlock
from composer.dims import sym
from composer.types import InferError, PortType

B, T, TQ = sym("B"), sym("T"), sym("TQ")
D, DQ = 8, 6
LENGTHS = [7, 3, 1, 0]          # the last row is all padding


def batch(seed: int = 0, d: int = D):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(len(LENGTHS), 7, d, generator=g)
    mask = (torch.arange(7)[None] < torch.tensor(LENGTHS)[:, None]).long()      # (B, T)
    return x, mask


def queries(kind: str, dq: int, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    if kind == "vector":
        return torch.randn(len(LENGTHS), dq, generator=g), PortType("vector", (B, dq))
    if kind == "sequence":
        return torch.randn(len(LENGTHS), 4, dq, generator=g), PortType("sequence", (B, TQ, dq))
    return None, None


def build(block, query_type=None, mask=True, d: int = D):
    torch.manual_seed(0)
    x_type = PortType("sequence", (B, T, d))
    mask_type = PortType("mask", (B, T), "int64") if mask else None
    module = block.build(x=x_type, query=query_type, mask=mask_type).eval()
    assert block.param_count(x=x_type, query=query_type, mask=mask_type) == sum(p.numel() for p in module.parameters())
    return module


def masked_softmax_ref(scores: torch.Tensor, n: int) -> torch.Tensor:
    """Softmax over the first n of T scores, zeros after (all zeros when n = 0), written out."""
    w = torch.zeros_like(scores)
    if n:
        e = torch.exp(scores[:n] - scores[:n].max())
        w[:n] = e / e.sum()
    return w


def test_additive_matches_bahdanaus_formula():
    """score(q, k_t) = vᵀ tanh(W_q q + W_k k_t + b); weights a softmax over the real steps; out = Σ w_t k_t."""
    x, mask = batch()
    q, qt = queries("vector", DQ)
    module = build(Attention(mode="additive", hidden=5), qt)
    assert list(module.state_dict()) == ["score.query_proj.weight", "score.key_proj.weight", "score.key_proj.bias",
                                         "score.v.weight"]
    wq, wk, bk, v = (p.detach().double() for p in module.state_dict().values())
    with torch.no_grad():
        out, weights = module(x, q, mask)
    assert out.shape == (4, D) and weights.shape == (4, 7)
    for i, n in enumerate(LENGTHS):
        scores = torch.stack([v[0] @ torch.tanh(wq @ q[i].double() + wk @ x[i, t].double() + bk) for t in range(7)])
        w = masked_softmax_ref(scores, n)
        torch.testing.assert_close(weights[i], w.float(), atol=1e-6, rtol=0)
        torch.testing.assert_close(out[i], (w[:, None] * x[i].double()).sum(0).float(), atol=1e-6, rtol=0)
        assert torch.equal(weights[i, n:], torch.zeros(7 - n))            # padded keys: exactly 0
    assert torch.equal(out[3], torch.zeros(D)) and torch.equal(weights[3], torch.zeros(7))


@pytest.mark.parametrize("mode, project", [("dot", False), ("scaled_dot", False), ("dot", True), ("scaled_dot", True)])
def test_dot_modes_match_luongs_formulas(mode, project):
    x, mask = batch()
    dq = DQ if project else D
    q, qt = queries("sequence", dq)
    module = build(Attention(mode=mode, project_query=project) if project else Attention(mode=mode), qt)
    with torch.no_grad():
        out, weights = module(x, q, mask)
        proj = module.query_proj(q) if project else q                      # Luong's general: (W q) · k
    assert out.shape == (4, 4, D) and weights.shape == (4, 4, 7)
    scale = 1 / math.sqrt(D) if mode == "scaled_dot" else 1.0
    for i, n in enumerate(LENGTHS):
        for j in range(4):
            w = masked_softmax_ref((x[i] @ proj[i, j]) * scale, n)
            torch.testing.assert_close(weights[i, j], w, atol=1e-6, rtol=0)
            torch.testing.assert_close(out[i, j], (w[:, None] * x[i]).sum(0), atol=1e-5, rtol=0)


def test_self_attention_without_a_query():
    """Each real step queries every real step; padded steps are padded queries too: weights and output 0."""
    x, mask = batch()
    module = build(Attention(mode="scaled_dot"))
    with torch.no_grad():
        out, weights = module(x, None, mask)
    assert out.shape == (4, 7, D) and weights.shape == (4, 7, 7)
    for i, n in enumerate(LENGTHS):
        for t in range(7):
            w = masked_softmax_ref(x[i] @ x[i, t] / math.sqrt(D), n) if t < n else torch.zeros(7)
            torch.testing.assert_close(weights[i, t], w, atol=1e-6, rtol=0)
        assert torch.equal(out[i, n:], torch.zeros(7 - n, D))
    assert Attention().infer(x=PortType("series", (B, T, D)))["weights"] == PortType("attention", (B, T, T))


def _reference_mha(module):
    ref = torch.nn.MultiheadAttention(D, 2, batch_first=True).eval()
    ref.load_state_dict(module.state_dict())                               # the same names: loads unchanged
    return ref


def test_multihead_equals_torch_multihead_attention():
    x, mask = batch()
    pad = mask == 0                                                        # torch's key_padding_mask: True = ignore
    real = torch.tensor(LENGTHS) > 0
    # self-attention: the real steps of the rows with any
    module = build(Attention(mode="multihead", num_heads=2))
    assert list(module.state_dict()) == ["in_proj_weight", "in_proj_bias", "out_proj.weight", "out_proj.bias"]
    ref = _reference_mha(module)
    with torch.no_grad():
        got = module(x, None, mask)
        want = ref(x[real], x[real], x[real], key_padding_mask=pad[real])[0]
    assert got.shape == (4, 7, D)
    for i, n in enumerate(LENGTHS[:3]):
        torch.testing.assert_close(got[i, :n], want[i, :n], atol=1e-6, rtol=0)
    assert torch.equal(got[3], torch.zeros(7, D))
    # cross-attention with a sequence and with a vector query
    for kind in ("sequence", "vector"):
        q, qt = queries(kind, D)
        module = build(Attention(mode="multihead", num_heads=2), qt)
        ref = _reference_mha(module)
        q3 = q if kind == "sequence" else q[:, None]
        with torch.no_grad():
            got = module(x, q, mask)
            want = ref(q3[real], x[real], x[real], key_padding_mask=pad[real])[0]
        want = want if kind == "sequence" else want[:, 0]
        assert got.shape == ((4, 4, D) if kind == "sequence" else (4, D))
        torch.testing.assert_close(got[real], want, atol=1e-6, rtol=0)
        assert torch.equal(got[3], torch.zeros_like(got[3]))               # no real key: 0
    assert isinstance(Attention(mode="multihead", num_heads=2).infer(x=PortType("sequence", (B, T, D))), PortType)


CASES = [(m, k) for m in ("additive", "dot", "scaled_dot", "multihead") for k in (None, "vector", "sequence")]


def _tuple(value) -> tuple:
    return value if isinstance(value, tuple) else (value,)


@pytest.mark.parametrize("mode, kind", CASES)
def test_masked_steps_change_nothing(mode, kind):
    """Each row of a padded batch equals that row run alone, cut to its true length, without a mask."""
    x, mask = batch()
    q, qt = queries(kind, D)
    params = {"mode": mode, **({"num_heads": 2} if mode == "multihead" else {})}
    module = build(Attention(**params), qt)
    with torch.no_grad():
        full = _tuple(module(x, q, mask))
        poisoned = _tuple(module(x.masked_fill(mask[..., None] == 0, 1e4), q, mask))
        for i, n in enumerate(LENGTHS[:3]):
            alone = _tuple(module(x[i:i + 1, :n], None if q is None else q[i:i + 1], None))
            out = full[0][i][:n] if kind is None else full[0][i]          # self-attention: the real steps
            torch.testing.assert_close(out, alone[0][0], atol=1e-5, rtol=0)
            if len(full) == 2:                                             # weights (T,) | (Tq, T) | (T, T)
                w = full[1][i][:n] if kind is None else full[1][i]
                assert torch.equal(w[..., n:], torch.zeros_like(w[..., n:]))   # padded keys: exactly 0
                torch.testing.assert_close(w[..., :n], alone[1][0], atol=1e-6, rtol=0)
    for a, b in zip(full, poisoned):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=0)               # what sits in the pads: nothing
        assert torch.equal(a[3], torch.zeros_like(a[3]))                   # no real key: 0, never NaN


def test_attention_pool_is_additive_attention_with_a_learned_query():
    x, mask = batch()
    block = AttentionPoolBlock(hidden=5)
    torch.manual_seed(0)
    module = block.build(x=PortType("sequence", (B, T, D)), mask=PortType("mask", (B, T), "bool")).eval()
    assert list(module.state_dict()) == ["score.key_proj.weight", "score.key_proj.bias", "score.v.weight"]
    assert block.param_count(x=PortType("sequence", (B, T, D))) == D * 5 + 5 + 5
    wk, bk, v = (p.detach().double() for p in module.state_dict().values())
    with torch.no_grad():
        out, weights = module(x, mask.bool())
        for i, n in enumerate(LENGTHS):
            scores = torch.stack([v[0] @ torch.tanh(wk @ x[i, t].double() + bk) for t in range(7)])
            w = masked_softmax_ref(scores, n)
            torch.testing.assert_close(weights[i], w.float(), atol=1e-6, rtol=0)
            torch.testing.assert_close(out[i], (w[:, None] * x[i].double()).sum(0).float(), atol=1e-6, rtol=0)
            if n:
                alone, w_alone = module(x[i:i + 1, :n])
                torch.testing.assert_close(out[i], alone[0], atol=1e-6, rtol=0)
                torch.testing.assert_close(weights[i, :n], w_alone[0], atol=1e-6, rtol=0)
    assert torch.equal(out[3], torch.zeros(D)) and torch.equal(weights[3], torch.zeros(7))
    assert block.infer(x=PortType("series", (B, T, D))) == {"out": PortType("vector", (B, D)),
                                                            "weights": PortType("attention", (B, T))}


SPEC = """\
pipeline: series_attention
seed: 0
dims: {T: {sizes: [5, 9]}}
inputs:
  series: {kind: series, shape: [B, T, 8]}
  mask: {kind: mask, shape: [B, T], dtype: bool}
blocks:
  pe: {block: positional_encoding, in: series, scale_input: true}
  pool: {block: attention_pool, in: {x: pe, mask: mask}, hidden: 8}
  att: {block: attention, in: {x: pe, query: pool.out, mask: mask}, mode: additive, hidden: 8}
  head: {block: dense, in: att.out, out_features: 3}
outputs:
  y: head
  weights: att.weights
"""


def test_series_pipeline_exports_at_two_lengths(tmp_path):
    pipe = composer.loads(SPEC)
    report = composer.export(pipe, tmp_path / "att.onnx")
    ver = report["verification"]
    assert ver["passed"] and sorted({r["sizes"]["T"] for r in ver["runs"]}) == [5, 9]
    from composer.runtime import Session
    sess = Session(tmp_path / "att.onnx", device="cpu")
    model = pipe.build().eval()
    x, mask = batch(2)                                                     # T = 7: neither traced nor verified
    got = sess.run({"series": x.numpy(), "mask": mask.bool().numpy()})
    with torch.no_grad():
        want = model(series=x, mask=mask.bool())
    for name in ("y", "weights"):
        np.testing.assert_allclose(got[name], want[name].numpy(), atol=1e-5, rtol=0)
    assert np.array_equal(got["weights"][3], np.zeros(7, np.float32))     # the all-padded row, in onnxruntime too


def test_self_attention_in_a_spec_leaves_query_unbound():
    pipe = composer.loads("""\
pipeline: self
inputs:
  x: {kind: sequence, shape: [B, T, 8]}
  mask: {kind: mask, shape: [B, T], dtype: int64}
blocks:
  att: {block: attention, in: {x: x, mask: mask}, mode: multihead, num_heads: 2}
  dot: {block: attention, in: {x: att, mask: mask}, mode: dot}
outputs:
  out: dot.out
""")
    x, mask = batch()
    with torch.no_grad():
        out = pipe.build().eval()(x=x, mask=mask)["out"]
    assert out.shape == (4, 7, D) and torch.equal(out[3], torch.zeros(7, D))


def test_bad_params_and_ports_are_errors():
    x = PortType("sequence", (B, T, D))
    with pytest.raises(InferError, match="feature size of `x`") as exc:
        Attention(mode="dot").infer(x=x, query=PortType("vector", (B, DQ)))
    assert "project_query" in exc.value.hint
    Attention(mode="dot", project_query=True).infer(x=x, query=PortType("vector", (B, DQ)))
    with pytest.raises(InferError, match="feature size of `x`"):
        Attention(mode="multihead", num_heads=2).infer(x=x, query=PortType("vector", (B, DQ)))
    with pytest.raises(InferError, match="needs `num_heads`"):
        Attention(mode="multihead").infer(x=x)
    with pytest.raises(InferError, match="must divide") as exc:
        Attention(mode="multihead", num_heads=3).infer(x=x)
    assert exc.value.param == "num_heads"
    with pytest.raises(InferError, match="does not apply") as exc:
        Attention(mode="dot", hidden=4).infer(x=x)
    assert exc.value.param == "hidden"
    with pytest.raises(InferError, match="does not apply"):
        Attention(num_heads=2).infer(x=x)
    with pytest.raises(InferError, match=r"\[B, T\] of `x`"):
        Attention().infer(x=x, mask=PortType("mask", (B, 4), "int64"))
    with pytest.raises(InferError, match="bool or integer"):
        AttentionPoolBlock().infer(x=x, mask=PortType("mask", (B, T)))
    with pytest.raises(InferError, match="batch sizes"):
        Attention().infer(x=x, query=PortType("vector", (2, DQ)))
    with pytest.raises(InferError, match="fixed size"):
        AttentionPoolBlock().infer(x=PortType("sequence", (B, T, sym("D"))))
    with pytest.raises(composer.SpecError) as exc:
        composer.loads("""\
pipeline: bad
inputs:
  x: {kind: sequence, shape: [B, T, 8]}
  q: {kind: vector, shape: [B, 6]}
blocks:
  att: {block: attention, in: {x: x, query: q}, mode: scaled_dot}
outputs:
  y: att.out
""", file="bad.yaml")
    first = exc.value.diagnostics[0]
    assert first.loc.line == 6 and "project_query" in (first.hint or "")

"""`pooling` (cls, masked mean and max, attention) against manual computations on a padded batch,
BERT's pooler as a composition, `l2_normalize`, the ONNX export of masked pooling, and bad inputs."""

from __future__ import annotations

import pytest
import torch
from pydantic import ValidationError

import composer
from blocks.text.pooling import L2NormalizeBlock, Pooling
from composer.dims import sym
from composer.types import InferError, PortType

B, T = sym("B"), sym("T")
D = 32
LENGTHS = [7, 3, 1, 0]          # the last row is all padding


def batch(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(len(LENGTHS), 7, D, generator=g)
    mask = (torch.arange(7)[None] < torch.tensor(LENGTHS)[:, None]).long()
    return x, mask


def seq(d=D) -> PortType:
    return PortType("sequence", (B, T, d))


MASK = PortType("mask", (B, T), "int64")


def pool(mode: str, x, mask=None):
    block = Pooling(mode=mode)
    module = block.build(x=seq(), mask=MASK if mask is not None else None).eval()
    with torch.no_grad():
        return module(x, mask), module


def test_mean_and_max_ignore_padded_steps_exactly():
    x, mask = batch()
    mean, _ = pool("mean", x, mask)
    mx, _ = pool("max", x, mask)
    for i, n in enumerate(LENGTHS):
        if n:
            torch.testing.assert_close(mean[i], x[i, :n].mean(0), atol=1e-6, rtol=0)
            assert torch.equal(mx[i], x[i, :n].amax(0))
        else:   # nothing to pool: zeros, never NaN or -inf
            assert torch.equal(mean[i], torch.zeros(D)) and torch.equal(mx[i], torch.zeros(D))
    poisoned = x.masked_fill(mask[..., None] == 0, 1e4)     # what sits in the pads changes nothing
    assert torch.equal(pool("mean", poisoned, mask)[0], mean) and torch.equal(pool("max", poisoned, mask)[0], mx)
    assert torch.equal(pool("mean", x, mask.bool())[0], mean)
    torch.testing.assert_close(pool("mean", x)[0], x.mean(1), atol=1e-6, rtol=0)
    assert torch.equal(pool("max", x)[0], x.amax(1))


def test_cls_takes_the_first_step():
    x, mask = batch()
    assert torch.equal(pool("cls", x, mask)[0], x[:, 0]) and torch.equal(pool("cls", x)[0], x[:, 0])


def test_attention_pooling_weights_are_a_masked_softmax_of_the_score():
    x, mask = batch()
    out, module = pool("attention", x, mask)
    assert list(module.state_dict()) == ["score.weight", "score.bias"]
    with torch.no_grad():
        scores = module.score(x).squeeze(-1)                    # (B, T)
    for i, n in enumerate(LENGTHS):
        if not n:
            assert torch.equal(out[i], torch.zeros(D))
            continue
        w = torch.softmax(scores[i, :n], dim=0)
        torch.testing.assert_close(w.sum(), torch.tensor(1.0))
        torch.testing.assert_close(out[i], (w[:, None] * x[i, :n]).sum(0), atol=1e-6, rtol=0)
    poisoned = x.masked_fill(mask[..., None] == 0, 1e4)
    with torch.no_grad():
        torch.testing.assert_close(module(poisoned, mask), out, atol=1e-6, rtol=0)
        torch.testing.assert_close(module(x), (torch.softmax(scores, 1)[..., None] * x).sum(1), atol=1e-6, rtol=0)
    assert Pooling(mode="attention").param_count(x=seq()) == D + 1 == sum(p.numel() for p in module.parameters())


def test_bert_pooler_is_cls_pooling_dense_and_tanh():
    from transformers import BertConfig
    from transformers.models.bert.modeling_bert import BertPooler

    ref = BertPooler(BertConfig(hidden_size=D)).eval()
    pipe = composer.loads(f"""\
pipeline: pooler
inputs:
  hidden: {{kind: sequence, shape: [B, T, {D}]}}
blocks:
  cls: {{block: pooling, in: hidden, mode: cls}}
  dense: {{block: dense, in: cls, out_features: {D}}}
  act: {{block: tanh, in: dense}}
outputs:
  pooled: act
""")
    model = pipe.build().eval()
    model.load_state_dict({"dense.weight": ref.dense.weight, "dense.bias": ref.dense.bias})
    x, _ = batch()
    with torch.no_grad():
        assert (model(hidden=x)["pooled"] - ref(x)).abs().max().item() <= 1e-5


def test_l2_normalize_gives_unit_vectors():
    x = torch.randn(5, D) * 10
    x[2] = 0
    module = L2NormalizeBlock().build(x=PortType("vector", (B, D)))
    y = module(x)
    norms = y.norm(dim=-1)
    torch.testing.assert_close(norms[[0, 1, 3, 4]], torch.ones(4))
    assert torch.equal(y[2], torch.zeros(D))                     # eps keeps a zero vector finite
    torch.testing.assert_close(y, torch.nn.functional.normalize(x, dim=-1))
    assert L2NormalizeBlock().infer(x=PortType("vector", (B, D))) == PortType("vector", (B, D))
    with pytest.raises(InferError, match="out of range"):
        L2NormalizeBlock(dim=2).infer(x=PortType("vector", (B, D)))


def test_masked_pooling_exports_at_dynamic_batch_and_length(tmp_path):
    pipe = composer.loads("""\
pipeline: pools
dims: {T: {sizes: [5, 9]}}
inputs:
  hidden: {kind: sequence, shape: [B, T, 8]}
  mask: {kind: mask, shape: [B, T], dtype: bool}
blocks:
  mean: {block: pooling, in: {x: hidden, mask: mask}, mode: mean}
  max: {block: pooling, in: {x: hidden, mask: mask}, mode: max}
  att: {block: pooling, in: {x: hidden, mask: mask}, mode: attention}
  unit: {block: l2_normalize, in: att}
outputs:
  mean_out: mean
  max_out: max
  att_out: unit
""")
    report = composer.export(pipe, tmp_path / "pools.onnx")
    assert report["verification"]["passed"]
    from composer.runtime import Session
    sess = Session(tmp_path / "pools.onnx", device="cpu")
    model = pipe.build().eval()
    x, mask = batch(1)
    x = x[..., :8].contiguous()
    got = sess.run({"hidden": x.numpy(), "mask": mask.bool().numpy()})
    with torch.no_grad():
        want = model(hidden=x, mask=mask.bool())
    for name in ("mean_out", "max_out", "att_out"):
        assert abs(torch.as_tensor(got[name]) - want[name]).max().item() <= 1e-5, name


def test_bad_inputs_are_errors():
    with pytest.raises(InferError, match="rank-3"):
        Pooling().infer(x=PortType("sequence", (B, D)))
    with pytest.raises(InferError, match="floating-point"):
        Pooling().infer(x=PortType("sequence", (B, T, D), "int64"))
    with pytest.raises(InferError, match="differ"):
        Pooling().infer(x=seq(), mask=PortType("mask", (B, 4), "int64"))
    with pytest.raises(InferError, match="fixed size"):
        Pooling(mode="attention").infer(x=seq(sym("D")))
    Pooling(mode="mean").infer(x=seq(sym("D")))                  # no weights: any feature size
    with pytest.raises(ValidationError):
        Pooling(mode="sum")
    with pytest.raises(composer.SpecError) as exc:
        composer.loads("""\
pipeline: bad
inputs:
  v: {kind: vector, shape: [B, 8]}
blocks:
  p: {block: pooling, in: v}
outputs:
  y: p
""", file="bad.yaml")
    first = exc.value.diagnostics[0]
    assert (first.code, first.loc.line, first.loc.col) == ("E301", 5, 27) and "port `x`" in first.message

"""Attention and the transformer encoders: MultiHeadAttention against nn.MultiheadAttention (both
layouts, masks, causal, cross-attention), transformer_encoder against Hugging Face BERT (post-norm)
and ALBERT (shared weights) and against torch's pre-norm nn.TransformerEncoder, their key layouts,
type errors, and ONNX export of a masked encoder verified in onnxruntime."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from pydantic import ValidationError
from torch import nn

import composer
from blocks.core.attention import MultiHeadAttention, key_padding_mask
from blocks.text.encoder import TransformerEncoder, TransformerEncoderLayer
from composer.dims import sym
from composer.runtime import Session
from composer.types import InferError, PortType

transformers = pytest.importorskip("transformers")

B, T = sym("B"), sym("T")
X = PortType("sequence", (B, T, 32))
MASK = PortType("mask", (B, T), "int64")
D, HEADS, MLP = 32, 4, 37

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def randomize(module: nn.Module, seed: int = 0, std: float = 0.2) -> nn.Module:
    """Random weights everywhere; layer-norm weights around 1 (so a wrong eps or norm placement shows)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in module.state_dict().items():
            if t.is_floating_point():
                noise = torch.randn(t.shape, generator=g) * std
                is_norm_weight = name.endswith("weight") and t.dim() == 1
                t.copy_(1 + noise if is_norm_weight else noise)
    return module.eval()


def batch(b: int = 3, t: int = 7, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """Random tokens and a right-padded mask: row i has t - 2*i real tokens (at least 1)."""
    x = torch.randn(b, t, D, generator=torch.Generator().manual_seed(seed))
    lengths = torch.tensor([max(1, t - 2 * i) for i in range(b)])
    mask = (torch.arange(t)[None, :] < lengths[:, None]).long()      # (B, T), 1 = real
    return x, mask


def assert_real_close(got: torch.Tensor, want: torch.Tensor, mask: torch.Tensor, atol: float = 1e-5) -> None:
    """Equal at the real (unpadded) positions."""
    real = mask.bool()
    diff = (got[real] - want[real]).abs().max().item()
    assert diff <= atol, diff


def copy_mapped(ours: nn.Module, ref_state: dict, key_map: dict[str, str]) -> None:
    """Load `ours` from a reference state dict through an explicit {our key: reference key} map that
    covers every key of ours."""
    assert set(key_map) == set(ours.state_dict())
    ours.load_state_dict({k: ref_state[v] for k, v in key_map.items()})


# ---- MultiHeadAttention ---------------------------------------------------------------------


def fused_to_separate(fused: MultiHeadAttention) -> MultiHeadAttention:
    sep = MultiHeadAttention(fused.dim, fused.num_heads, bias=fused.in_proj_bias is not None, layout="separate")
    state = {"out_proj.weight": fused.out_proj.weight}
    for name, w in zip(("query", "key", "value"), fused.in_proj_weight.chunk(3)):
        state[f"{name}.weight"] = w
    if fused.in_proj_bias is not None:
        state["out_proj.bias"] = fused.out_proj.bias
        for name, b in zip(("query", "key", "value"), fused.in_proj_bias.chunk(3)):
            state[f"{name}.bias"] = b
    sep.load_state_dict(state)
    return sep.eval()


def test_attention_key_layouts():
    fused = MultiHeadAttention(D, HEADS, layout="fused")
    assert {k: tuple(v.shape) for k, v in fused.state_dict().items()} == {
        "in_proj_weight": (3 * D, D), "in_proj_bias": (3 * D,), "out_proj.weight": (D, D), "out_proj.bias": (D,)}
    assert list(fused.state_dict()) == list(nn.MultiheadAttention(D, HEADS, batch_first=True).state_dict())
    sep = MultiHeadAttention(D, HEADS, layout="separate")
    assert list(sep.state_dict()) == [f"{m}.{p}" for m in ("query", "key", "value", "out_proj") for p in ("weight", "bias")]
    assert list(MultiHeadAttention(D, HEADS, bias=False, layout="separate").state_dict()) == [
        "query.weight", "key.weight", "value.weight", "out_proj.weight"]
    assert list(MultiHeadAttention(D, HEADS, bias=False).state_dict()) == ["in_proj_weight", "out_proj.weight"]
    with pytest.raises(ValueError, match="must divide"):
        MultiHeadAttention(30, 4)
    with pytest.raises(ValueError, match="layout"):
        MultiHeadAttention(D, HEADS, layout="split")


def test_fused_init_is_nn_multiheadattention_init():
    torch.manual_seed(0)
    ref = nn.MultiheadAttention(D, HEADS, batch_first=True)
    torch.manual_seed(0)
    ours = MultiHeadAttention(D, HEADS)
    for (k, a), (_, b) in zip(ours.state_dict().items(), ref.state_dict().items()):
        assert torch.equal(a, b), k


@pytest.mark.parametrize("bias", [True, False])
def test_fused_matches_nn_multiheadattention(bias):
    ref = randomize(nn.MultiheadAttention(D, HEADS, bias=bias, batch_first=True))
    ours = MultiHeadAttention(D, HEADS, bias=bias, layout="fused")
    ours.load_state_dict(ref.state_dict())
    ours.eval()
    x, mask = batch()
    kv = torch.randn(3, 5, D, generator=torch.Generator().manual_seed(2))
    kv_mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0], [1, 0, 0, 0, 0]])
    causal = torch.ones(7, 7, dtype=torch.bool).triu(1)                      # True = not allowed (nn convention)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), ref(x, x, x, need_weights=False)[0], atol=1e-5, rtol=0)
        want = ref(x, x, x, key_padding_mask=mask == 0, need_weights=False)[0]
        assert_real_close(ours(x, mask), want, mask)
        torch.testing.assert_close(ours(x, causal=True), ref(x, x, x, attn_mask=causal, need_weights=False)[0],
                                   atol=1e-5, rtol=0)
        want = ref(x, x, x, attn_mask=causal, key_padding_mask=mask == 0, need_weights=False)[0]
        assert_real_close(ours(x, mask, causal=True), want, mask)
        want = ref(x, kv, kv, key_padding_mask=kv_mask == 0, need_weights=False)[0]
        torch.testing.assert_close(ours(x, kv_mask, kv=kv), want, atol=1e-5, rtol=0)


def test_fused_and_separate_layouts_agree():
    fused = randomize(MultiHeadAttention(D, HEADS, layout="fused"))
    sep = fused_to_separate(fused)
    x, mask = batch()
    kv = torch.randn(3, 4, D)
    with torch.no_grad():
        for kw in ({}, {"mask": mask}, {"causal": True}, {"mask": mask, "causal": True},
                   {"kv": kv, "mask": torch.ones(3, 4, dtype=torch.long)}):
            torch.testing.assert_close(sep(x, **kw), fused(x, **kw), atol=1e-6, rtol=0)
    nobias = randomize(MultiHeadAttention(D, HEADS, bias=False))
    with torch.no_grad():
        torch.testing.assert_close(fused_to_separate(nobias)(x, mask), nobias(x, mask), atol=1e-6, rtol=0)


def test_mask_semantics():
    attn = randomize(MultiHeadAttention(D, HEADS))
    x, mask = batch()
    with torch.no_grad():
        ref = attn(x, mask)
        # bool and integer masks mean the same; an all-ones mask is no mask
        torch.testing.assert_close(attn(x, mask.bool()), ref, atol=0, rtol=0)
        torch.testing.assert_close(attn(x, mask.int()), ref, atol=0, rtol=0)
        torch.testing.assert_close(attn(x, torch.ones_like(mask)), attn(x), atol=1e-6, rtol=0)
        # what sits at padded positions cannot reach the real ones
        noisy = torch.where(mask.bool()[..., None], x, torch.randn_like(x) * 100)
        assert_real_close(attn(noisy, mask), ref, mask, atol=1e-5)
        # a row with no real token attends everywhere instead of returning NaN (torch and onnxruntime agree)
        empty = mask.clone()
        empty[2] = 0
        out = attn(x, empty)
        assert torch.isfinite(out).all()
        torch.testing.assert_close(out[2], attn(x[2:3])[0], atol=1e-6, rtol=0)
    assert key_padding_mask(mask).shape == (3, 1, 1, 7) and key_padding_mask(mask).dtype == torch.bool


def test_attention_dropout_only_in_training():
    attn = randomize(MultiHeadAttention(D, HEADS, dropout=0.5))
    x, mask = batch()
    with torch.no_grad():
        torch.testing.assert_close(attn.eval()(x, mask), attn(x, mask), atol=0, rtol=0)
        torch.manual_seed(0)
        assert not torch.allclose(attn.train()(x, mask), attn.eval()(x, mask), atol=1e-3)


@pytest.mark.parametrize("causal", [False, True])
def test_attention_exports_at_dynamic_batch_and_length(causal, tmp_path):
    import onnxruntime as ort

    class Wrapped(nn.Module):
        def __init__(self):
            super().__init__()
            self.attn = randomize(MultiHeadAttention(D, HEADS, layout="separate"))

        def forward(self, x, mask):
            return self.attn(x, mask, causal=causal)

    model = Wrapped().eval()
    x, mask = batch(2, 6)
    b, t = torch.export.Dim("B", min=1), torch.export.Dim("T", min=1)
    torch.onnx.export(model, (x, mask), str(tmp_path / "attn.onnx"), dynamo=True, verbose=False,
                      input_names=["x", "mask"], dynamic_shapes=({0: b, 1: t}, {0: b, 1: t}))
    sess = ort.InferenceSession(str(tmp_path / "attn.onnx"), providers=["CPUExecutionProvider"])
    for bb, tt in [(1, 3), (4, 11)]:
        x, mask = batch(bb, tt, seed=bb)
        mask[-1] = 0                                   # and one row with no real token
        got = sess.run(None, {"x": x.numpy(), "mask": mask.numpy()})[0]
        with torch.no_grad():
            np.testing.assert_allclose(got, model(x, mask).numpy(), atol=1e-5, rtol=0)


# ---- key layouts and types ------------------------------------------------------------------


LAYER_KEYS = ["ln_1.weight", "ln_1.bias", "self_attention.{attn}", "ln_2.weight", "ln_2.bias",
              "mlp.0.weight", "mlp.0.bias", "mlp.3.weight", "mlp.3.bias"]
ATTN = {"fused": ["in_proj_weight", "in_proj_bias", "out_proj.weight", "out_proj.bias"],
        "separate": [f"{m}.{p}" for m in ("query", "key", "value", "out_proj") for p in ("weight", "bias")]}


def layer_keys(qkv: str, prefix: str = "") -> list[str]:
    keys = []
    for k in LAYER_KEYS:
        keys += [k.format(attn=a) for a in ATTN[qkv]] if "{attn}" in k else [k]
    return [prefix + k for k in keys]


@pytest.mark.parametrize("qkv", ["fused", "separate"])
@pytest.mark.parametrize("norm", ["pre", "post"])
def test_key_layouts_and_param_counts(qkv, norm):
    layer = TransformerEncoderLayer(num_heads=HEADS, mlp_dim=MLP, qkv=qkv, norm=norm)
    m = layer.build(x=X, mask=MASK)
    assert list(m.state_dict()) == layer_keys(qkv)
    assert layer.param_count(x=X, mask=MASK) == sum(p.numel() for p in m.parameters())
    stack = TransformerEncoder(num_layers=3, num_heads=HEADS, mlp_dim=MLP, qkv=qkv, norm=norm)
    m = stack.build(x=X, mask=MASK)
    assert list(m.state_dict()) == [k for i in range(3) for k in layer_keys(qkv, f"layers.{i}.")]
    assert stack.param_count(x=X) == sum(p.numel() for p in m.parameters())
    shared = TransformerEncoder(num_layers=3, num_heads=HEADS, mlp_dim=MLP, qkv=qkv, norm=norm, share_weights=True)
    m = shared.build(x=X)
    assert list(m.state_dict()) == layer_keys(qkv, "layers.0.")
    assert shared.param_count(x=X, mask=MASK) == sum(p.numel() for p in m.parameters()) == layer.param_count(x=X)
    nobias = TransformerEncoder(num_layers=2, num_heads=HEADS, mlp_dim=MLP, qkv=qkv, bias=False)
    m = nobias.build(x=X)
    assert not [k for k in m.state_dict() if k.endswith("bias") and ".ln_" not in k]
    assert nobias.param_count(x=X) == sum(p.numel() for p in m.parameters())


def test_infer_and_type_errors():
    layer = TransformerEncoderLayer(num_heads=HEADS, mlp_dim=MLP)
    assert layer.infer(x=X) == X and layer.infer(x=X, mask=MASK) == X
    assert layer.infer(x=X, mask=PortType("mask", (B, T), "bool")) == X
    half = PortType("sequence", (B, T, 32), "float16")
    assert TransformerEncoder(num_layers=2, num_heads=HEADS, mlp_dim=MLP).infer(x=half, mask=MASK) == half
    with pytest.raises(InferError, match="bool or integer") as e:
        layer.infer(x=X, mask=PortType("mask", (B, T)))
    assert e.value.port == "mask" and e.value.code == "E303"
    with pytest.raises(InferError, match=r"\[B, T\] of `x`") as e:
        layer.infer(x=X, mask=PortType("mask", (B, sym("S")), "int64"))
    assert e.value.port == "mask" and e.value.expected == "[B, T]"
    with pytest.raises(InferError, match="rank-2") as e:
        layer.infer(x=X, mask=PortType("mask", (B, 1, T), "int64"))
    assert e.value.port == "mask"
    with pytest.raises(InferError, match="floating-point") as e:
        layer.infer(x=PortType("sequence", (B, T, 32), "int64"))
    assert e.value.port == "x"
    with pytest.raises(InferError, match="num_heads=5 must divide"):
        TransformerEncoder(num_layers=2, num_heads=5, mlp_dim=MLP).infer(x=X)
    for bad in ({"num_heads": 4, "mlp_dim": 8}, {"num_layers": 0, "num_heads": 4, "mlp_dim": 8},
                {"num_layers": 2, "num_heads": 4, "mlp_dim": 8, "norm": "sandwich"},
                {"num_layers": 2, "num_heads": 4, "mlp_dim": 8, "activation": "silu"},
                {"num_layers": 2, "num_heads": 4, "mlp_dim": 8, "qkv": "split"},
                {"num_layers": 2, "num_heads": 4, "mlp_dim": 8, "share_weights": "yes"}):
        with pytest.raises(ValidationError):
            TransformerEncoder.model_validate(bad)


SPEC = """\
pipeline: tiny_encoder
seed: 0
dims:
  B: {sizes: [1, 3], example: 2}
  T: {sizes: [5, 9], example: 7}
inputs:
  x: {kind: sequence, shape: [B, T, 32]}
  mask: {kind: mask, shape: [B, T], dtype: int64}
blocks:
  encoder: {block: transformer_encoder, in: {x: x, mask: mask}, ENCODER}
outputs:
  hidden: encoder
"""
BERT_LIKE = "num_layers: 2, num_heads: 4, mlp_dim: 37, norm: post, qkv: separate, eps: 1.0e-12"


def test_a_feature_map_cannot_feed_the_mask():
    text = SPEC.replace("ENCODER", BERT_LIKE).replace(
        "mask: {kind: mask, shape: [B, T], dtype: int64}", "mask: {kind: feature_map, shape: [B, 1, T, T]}")
    with pytest.raises(composer.SpecError) as exc:
        composer.loads(text, "tiny_encoder.yaml")
    (d,) = exc.value.diagnostics
    assert d.code == "E301" and "port `mask`" in d.message and d.loc.line == 10
    text = SPEC.replace("ENCODER", BERT_LIKE).replace("dtype: int64", "dtype: float32")
    with pytest.raises(composer.SpecError) as exc:
        composer.loads(text, "tiny_encoder.yaml")
    (d,) = exc.value.diagnostics
    assert d.code == "E303" and "port `mask`" in d.message


def test_repeated_layer_shares_the_mask():
    text = SPEC.replace("{block: transformer_encoder, in: {x: x, mask: mask}, ENCODER}",
                        "{block: transformer_encoder_layer, in: {x: x, mask: mask}, num_heads: 4, mlp_dim: 37, "
                        "repeat: 2}")
    model = composer.loads(text, "tiny_encoder.yaml").build(seed=0).eval()
    stack = TransformerEncoder(num_layers=2, num_heads=HEADS, mlp_dim=MLP).build(x=X, mask=MASK).eval()
    assert "encoder.1.self_attention.in_proj_weight" in model.state_dict()
    stack.load_state_dict({k.replace("encoder.", "layers."): v for k, v in model.state_dict().items()})
    x, mask = batch()
    with torch.no_grad():
        assert_real_close(model(x=x, mask=mask)["hidden"], stack(x, mask), mask, atol=1e-6)


# ---- parity with the references -------------------------------------------------------------


def bert_key_map(num_layers: int) -> dict[str, str]:
    parts = {"self_attention.query": "attention.self.query", "self_attention.key": "attention.self.key",
             "self_attention.value": "attention.self.value", "self_attention.out_proj": "attention.output.dense",
             "ln_1": "attention.output.LayerNorm", "mlp.0": "intermediate.dense", "mlp.3": "output.dense",
             "ln_2": "output.LayerNorm"}
    return {f"layers.{i}.{ours}.{p}": f"encoder.layer.{i}.{ref}.{p}"
            for i in range(num_layers) for ours, ref in parts.items() for p in ("weight", "bias")}


def hidden_into(module: nn.Module) -> tuple[dict, object]:
    """Capture the output of `module` (the encoder's input) with a forward hook."""
    seen: dict = {}
    handle = module.register_forward_hook(lambda m, args, out: seen.__setitem__("out", out))
    return seen, handle


@pytest.mark.parametrize("attn_implementation", ["eager", "sdpa"])
def test_post_norm_matches_bert(attn_implementation):
    cfg = transformers.BertConfig(hidden_size=D, num_hidden_layers=2, num_attention_heads=HEADS, intermediate_size=MLP,
                                  vocab_size=50, max_position_embeddings=32, hidden_dropout_prob=0.0,
                                  attention_probs_dropout_prob=0.0, attn_implementation=attn_implementation)
    ref = randomize(transformers.BertModel(cfg, add_pooling_layer=False))
    block = TransformerEncoder(num_layers=2, num_heads=HEADS, mlp_dim=MLP, norm="post", qkv="separate",
                               activation="gelu", eps=1e-12)
    ours = block.build(x=X, mask=MASK).eval()
    copy_mapped(ours, ref.state_dict(), bert_key_map(2))
    x, mask = batch(3, 9)
    seen, handle = hidden_into(ref.embeddings)      # the encoder's input: embeddings of inputs_embeds
    with torch.no_grad():
        want = ref(inputs_embeds=x, attention_mask=mask).last_hidden_state
        handle.remove()
        got = ours(seen["out"], mask)
        assert_real_close(got, want, mask)
        # the real positions do not depend on how much padding follows them
        longer = torch.cat([seen["out"], torch.randn(3, 4, D)], dim=1)
        more_padding = torch.cat([mask, torch.zeros(3, 4, dtype=mask.dtype)], dim=1)
        assert_real_close(ours(longer, more_padding)[:, :9], got, mask)
        shorter = mask.sum(1).max().item()
        assert_real_close(ours(seen["out"][:, :shorter], mask[:, :shorter]), got[:, :shorter], mask[:, :shorter])


def test_shared_weights_match_albert():
    cfg = transformers.AlbertConfig(embedding_size=16, hidden_size=D, num_hidden_layers=3, num_attention_heads=HEADS,
                                    intermediate_size=MLP, vocab_size=50, max_position_embeddings=32,
                                    hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, classifier_dropout_prob=0.0)
    assert cfg.hidden_act == "gelu_new" and cfg.num_hidden_groups == 1 and cfg.inner_group_num == 1
    ref = randomize(transformers.AlbertModel(cfg, add_pooling_layer=False))
    block = TransformerEncoder(num_layers=3, share_weights=True, num_heads=HEADS, mlp_dim=MLP, norm="post",
                               qkv="separate", activation="gelu_tanh", eps=1e-12)
    ours = block.build(x=X, mask=MASK).eval()
    parts = {"self_attention.query": "attention.query", "self_attention.key": "attention.key",
             "self_attention.value": "attention.value", "self_attention.out_proj": "attention.dense",
             "ln_1": "attention.LayerNorm", "mlp.0": "ffn", "mlp.3": "ffn_output", "ln_2": "full_layer_layer_norm"}
    copy_mapped(ours, ref.state_dict(), {f"layers.0.{o}.{p}": f"encoder.albert_layer_groups.0.albert_layers.0.{r}.{p}"
                                         for o, r in parts.items() for p in ("weight", "bias")})
    x = torch.randn(3, 9, 16, generator=torch.Generator().manual_seed(4))
    _, mask = batch(3, 9)
    seen, handle = hidden_into(ref.encoder.embedding_hidden_mapping_in)   # (B, T, 16) -> (B, T, 32)
    with torch.no_grad():
        want = ref(inputs_embeds=x, attention_mask=mask).last_hidden_state
        handle.remove()
        assert_real_close(ours(seen["out"], mask), want, mask)
        # three applications of one layer, not one
        once = TransformerEncoder(num_layers=1, num_heads=HEADS, mlp_dim=MLP, norm="post", qkv="separate",
                                  activation="gelu_tanh", eps=1e-12).build(x=X).eval()
        once.load_state_dict(ours.state_dict())
        h = seen["out"]
        for _ in range(3):
            h = once(h, mask)
        assert_real_close(h, want, mask)


def test_pre_norm_relu_matches_torch_transformer_encoder():
    layer = nn.TransformerEncoderLayer(D, HEADS, MLP, dropout=0.0, activation="relu", norm_first=True,
                                       batch_first=True, layer_norm_eps=1e-5)
    ref = randomize(nn.TransformerEncoder(layer, num_layers=2, enable_nested_tensor=False))
    block = TransformerEncoder(num_layers=2, num_heads=HEADS, mlp_dim=MLP, norm="pre", activation="relu", eps=1e-5)
    ours = block.build(x=X, mask=MASK).eval()
    parts = {"self_attention.in_proj_weight": "self_attn.in_proj_weight",
             "self_attention.in_proj_bias": "self_attn.in_proj_bias",
             "self_attention.out_proj.weight": "self_attn.out_proj.weight",
             "self_attention.out_proj.bias": "self_attn.out_proj.bias"}
    for o, r in {"ln_1": "norm1", "ln_2": "norm2", "mlp.0": "linear1", "mlp.3": "linear2"}.items():
        parts.update({f"{o}.weight": f"{r}.weight", f"{o}.bias": f"{r}.bias"})
    copy_mapped(ours, ref.state_dict(), {f"layers.{i}.{o}": f"layers.{i}.{r}" for i in range(2) for o, r in parts.items()})
    x, mask = batch(3, 9)
    with torch.no_grad():
        assert_real_close(ours(x, mask), ref(x, src_key_padding_mask=mask == 0), mask)
        torch.testing.assert_close(ours(x), ref(x), atol=1e-5, rtol=0)
    # and one layer block alone is the torch layer
    single = TransformerEncoderLayer(num_heads=HEADS, mlp_dim=MLP, activation="relu", eps=1e-5).build(x=X).eval()
    single.load_state_dict({k[len("layers.0."):]: v for k, v in ours.state_dict().items() if k.startswith("layers.0.")})
    with torch.no_grad():
        assert_real_close(single(x, mask), ref.layers[0](x, src_key_padding_mask=mask == 0), mask)


# ---- ONNX -----------------------------------------------------------------------------------


@pytest.mark.parametrize("encoder", [
    BERT_LIKE,
    "num_layers: 3, share_weights: true, num_heads: 4, mlp_dim: 37, activation: relu",
])
def test_masked_encoder_exports_and_matches_onnxruntime(encoder, tmp_path):
    pipe = composer.loads(SPEC.replace("ENCODER", encoder), "tiny_encoder.yaml")
    report = composer.export(pipe, tmp_path / "encoder.onnx")
    ver = report["verification"]
    assert ver["passed"] and ver["max_abs"] < 1e-4
    assert [r["sizes"] for r in ver["runs"]] == [{"B": 1, "T": 5}, {"B": 3, "T": 9}]
    assert [i["shape"] for i in report["inputs"]] == [["B", "T", 32], ["B", "T"]]
    model = pipe.build(seed=0).eval()
    sess = Session(tmp_path / "encoder.onnx", device="cpu")
    for b, t in [(3, 7), (2, 12)]:                   # padded batches, at sizes neither traced nor verified
        x, mask = batch(b, t, seed=t)
        got = sess.run({"x": x.numpy(), "mask": mask.numpy()})["hidden"]
        with torch.no_grad():
            want = model(x=x, mask=mask)["hidden"].numpy()
        np.testing.assert_allclose(got, want, atol=1e-5, rtol=0)

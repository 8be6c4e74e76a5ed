"""The `embedding` block: parity with BERT, RoBERTa, ALBERT (with its projection) and DistilBERT
embeddings from `transformers` (random weights, copied by explicit key maps), sinusoidal positions,
shape inference and located errors for bad inputs."""

from __future__ import annotations

import math

import pytest
import torch
from pydantic import ValidationError

import composer
from blocks.text.embedding import Embedding, sinusoid_table
from composer.dims import sym
from composer.types import InferError, PortType

B, T = sym("B"), sym("T")
V, D = 97, 32


def ids(b, t, dtype="int64"):
    return PortType("tokens", (b, t), dtype)


def randomize(module: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Every parameter random (LayerNorm included), so a key mapped to the wrong tensor shows."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.5)
    return module.eval()


def load(block: Embedding, inputs: dict, ref_state: dict, key_map: dict[str, str]) -> torch.nn.Module:
    """Build the block and copy the reference tensors in by an explicit {ours: theirs} map."""
    ours = block.build(**inputs)
    assert set(ours.state_dict()) == set(key_map), sorted(ours.state_dict())
    ours.load_state_dict({k: ref_state[v] for k, v in key_map.items()})
    return ours.eval()


def max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    assert a.shape == b.shape, (a.shape, b.shape)
    return (a - b).abs().max().item()


BERT_KEYS = {"word.weight": "word_embeddings.weight", "position.weight": "position_embeddings.weight",
             "token_type.weight": "token_type_embeddings.weight", "norm.weight": "LayerNorm.weight",
             "norm.bias": "LayerNorm.bias"}


def test_matches_bert_embeddings_with_token_types():
    from transformers import BertConfig
    from transformers.models.bert.modeling_bert import BertEmbeddings

    cfg = BertConfig(vocab_size=V, hidden_size=D, max_position_embeddings=24, type_vocab_size=2,
                     hidden_dropout_prob=0.0, pad_token_id=0)
    ref = randomize(BertEmbeddings(cfg))
    block = Embedding(vocab_size=V, dim=D, max_positions=24, type_vocab_size=2, pad_token_id=0)
    tok = torch.randint(0, V, (3, 11))
    types = torch.randint(0, 2, (3, 11))
    ours = load(block, {"tokens": ids(B, T), "token_types": ids(B, T)}, ref.state_dict(), BERT_KEYS)
    with torch.no_grad():
        seq, table = ours(tok, types)
        assert max_diff(seq, ref(input_ids=tok, token_type_ids=types)) <= 1e-5
        # unbound token types are segment 0, as in BERT
        assert max_diff(ours(tok)[0], ref(input_ids=tok)) <= 1e-5
    assert table is ours.word.weight and tuple(table.shape) == (V, D)
    assert block.param_count(tokens=ids(B, T)) == sum(p.numel() for p in ours.parameters())


def test_matches_roberta_embeddings_on_a_padded_batch():
    from transformers import RobertaConfig
    from transformers.models.roberta.modeling_roberta import RobertaEmbeddings

    pad = 1
    cfg = RobertaConfig(vocab_size=V, hidden_size=D, max_position_embeddings=20, type_vocab_size=1,
                        hidden_dropout_prob=0.0, pad_token_id=pad, layer_norm_eps=1e-5)
    ref = randomize(RobertaEmbeddings(cfg))
    block = Embedding(vocab_size=V, dim=D, max_positions=20, type_vocab_size=1, position_ids="padding_offset",
                      padding_idx=pad, pad_token_id=pad, eps=1e-5)
    tok = torch.randint(3, V, (3, 9))
    lengths = [9, 6, 2]
    for row, n in enumerate(lengths):
        tok[row, n:] = pad
    mask = (torch.arange(9)[None] < torch.tensor(lengths)[:, None]).long()
    ours = load(block, {"tokens": ids(B, T), "mask": PortType("mask", (B, T), "int64")}, ref.state_dict(),
                BERT_KEYS)
    with torch.no_grad():
        want = ref(input_ids=tok)
        assert max_diff(ours(tok, None, mask)[0], want) <= 1e-5
        assert max_diff(ours(tok, None, mask.bool())[0], want) <= 1e-5
        # without a mask the pads come from the ids, as RoBERTa does
        assert max_diff(ours(tok)[0], want) <= 1e-5
    ours(tok, None, mask)[0].sum().backward()        # as in RoBERTa, the pad rows learn nothing
    assert (ours.position.weight.grad[pad] == 0).all() and (ours.word.weight.grad[pad] == 0).all()
    # the longest sequence is max_positions - padding_idx - 1 tokens
    block.infer(tokens=ids(2, 18))
    with pytest.raises(InferError, match="longer than the 18 positions") as e:
        block.infer(tokens=ids(2, 19))
    assert e.value.param == "max_positions"


def test_matches_albert_embeddings_and_hidden_mapping_projection():
    from transformers import AlbertConfig
    from transformers.models.albert.modeling_albert import AlbertModel

    cfg = AlbertConfig(vocab_size=V, embedding_size=16, hidden_size=D, num_hidden_layers=1, num_attention_heads=4,
                       intermediate_size=37, max_position_embeddings=24, type_vocab_size=2, hidden_dropout_prob=0.0)
    model = randomize(AlbertModel(cfg, add_pooling_layer=False))
    state = {f"embeddings.{k}": v for k, v in model.embeddings.state_dict().items()}
    state.update({f"mapping.{k}": v for k, v in model.encoder.embedding_hidden_mapping_in.state_dict().items()})
    keys = {k: f"embeddings.{v}" for k, v in BERT_KEYS.items()}
    keys.update({"projection.weight": "mapping.weight", "projection.bias": "mapping.bias"})
    block = Embedding(vocab_size=V, dim=16, max_positions=24, type_vocab_size=2, projection=D)
    x = {"tokens": ids(B, T), "token_types": ids(B, T)}
    out = block.infer(**x)
    assert out["sequence"].shape == (B, T, D) and out["table"] == PortType("weight", (V, 16))
    ours = load(block, x, state, keys)
    tok, types = torch.randint(0, V, (2, 7)), torch.randint(0, 2, (2, 7))
    with torch.no_grad():
        want = model.encoder.embedding_hidden_mapping_in(model.embeddings(input_ids=tok, token_type_ids=types))
        seq, table = ours(tok, types)
    assert max_diff(seq, want) <= 1e-5 and tuple(table.shape) == (V, 16)
    assert block.param_count(**x) == sum(p.numel() for p in ours.parameters())


def test_matches_distilbert_embeddings_without_token_types():
    from transformers import DistilBertConfig
    from transformers.models.distilbert.modeling_distilbert import Embeddings as DistilBertEmbeddings

    cfg = DistilBertConfig(vocab_size=V, dim=D, max_position_embeddings=24, dropout=0.0, n_heads=4)
    ref = randomize(DistilBertEmbeddings(cfg))
    block = Embedding(vocab_size=V, dim=D, max_positions=24, pad_token_id=0)
    keys = {k: v for k, v in BERT_KEYS.items() if not k.startswith("token_type")}
    ours = load(block, {"tokens": ids(B, T)}, ref.state_dict(), keys)
    tok = torch.randint(0, V, (2, 13))
    with torch.no_grad():
        assert max_diff(ours(tok)[0], ref(tok)) <= 1e-5


@pytest.mark.parametrize("dim", [32, 7])
def test_sinusoidal_positions_are_the_classic_formula(dim):
    positions = 12
    want = torch.zeros(positions, dim, dtype=torch.float64)
    for p in range(positions):
        for i in range(0, dim, 2):
            angle = p / 10000 ** (i / dim)
            want[p, i] = math.sin(angle)
            if i + 1 < dim:
                want[p, i + 1] = math.cos(angle)
    assert max_diff(sinusoid_table(positions, dim).double(), want) <= 1e-6
    if dim % 2 == 0:   # DistilBERT's sinusoidal_pos_embds table is the same
        from transformers.models.distilbert.modeling_distilbert import _create_sinusoidal_embeddings
        theirs = _create_sinusoidal_embeddings(positions, dim, torch.empty(positions, dim))
        assert max_diff(sinusoid_table(positions, dim), theirs) <= 1e-6
    block = Embedding(vocab_size=V, dim=dim, max_positions=positions, positions="sinusoidal", norm=False)
    module = block.build(tokens=ids(B, T)).eval()
    assert list(module.state_dict()) == ["word.weight"]        # the table is fixed, not a weight
    tok = torch.randint(0, V, (2, 9))
    with torch.no_grad():
        got = module(tok)[0] - module.word(tok)
    assert max_diff(got, want[:9].float().expand(2, 9, dim)) <= 1e-5
    assert block.param_count(tokens=ids(B, T)) == V * dim


def test_shapes_state_dict_layout_and_param_count():
    block = Embedding(vocab_size=V, dim=D, positions="none", norm=False)
    module = block.build(tokens=ids(B, T))
    assert list(module.state_dict()) == ["word.weight"] and block.param_count(tokens=ids(B, T)) == V * D
    full = Embedding(vocab_size=V, dim=16, type_vocab_size=2, projection=D)
    assert list(full.build(tokens=ids(B, T)).state_dict()) == [
        "word.weight", "position.weight", "token_type.weight", "norm.weight", "norm.bias",
        "projection.weight", "projection.bias"]
    out = full.infer(tokens=ids(B, T))
    assert list(out) == ["sequence", "table"]
    assert out["sequence"] == PortType("sequence", (B, T, D)) and out["table"].kind == "weight"
    # BERT's initialisation: small normal weights, a zero padding row
    m = Embedding(vocab_size=V, dim=D, pad_token_id=0).build(tokens=ids(B, T))
    assert m.word.weight.std().item() < 0.05 and (m.word.weight[0] == 0).all()


def test_bad_inputs_and_params_are_located_errors():
    with pytest.raises(InferError, match="integer ids") as e:
        Embedding(vocab_size=V, dim=D).infer(tokens=PortType("tokens", (B, T), "float32"))
    assert (e.value.port, e.value.code, e.value.found) == ("tokens", "E303", "float32")
    with pytest.raises(InferError, match="rank-2"):
        Embedding(vocab_size=V, dim=D).infer(tokens=PortType("tokens", (B, T, 3), "int64"))
    with pytest.raises(InferError, match="no token-type table") as e:
        Embedding(vocab_size=V, dim=D).infer(tokens=ids(B, T), token_types=ids(B, T))
    assert e.value.port == "token_types"
    with pytest.raises(InferError, match="integer ids") as e:
        Embedding(vocab_size=V, dim=D, type_vocab_size=2).infer(tokens=ids(B, T),
                                                                token_types=PortType("tokens", (B, T)))
    assert e.value.port == "token_types"
    with pytest.raises(InferError, match="differ"):
        Embedding(vocab_size=V, dim=D).infer(tokens=ids(B, T), mask=PortType("mask", (B, 7), "int64"))
    with pytest.raises(InferError, match="longer than the 8 positions") as e:
        Embedding(vocab_size=V, dim=D, max_positions=8).infer(tokens=ids(B, 9))
    assert e.value.param == "max_positions"
    Embedding(vocab_size=V, dim=D, max_positions=8, positions="none").infer(tokens=ids(B, 9))
    with pytest.raises(InferError, match="need `padding_idx`"):
        Embedding(vocab_size=V, dim=D, position_ids="padding_offset").infer(tokens=ids(B, T))
    with pytest.raises(InferError, match="pad_token_id"):
        Embedding(vocab_size=V, dim=D, pad_token_id=V).infer(tokens=ids(B, T))
    for bad in ({"vocab_size": 0, "dim": D}, {"vocab_size": V}, {"vocab_size": V, "dim": D, "positions": "rope"},
                {"vocab_size": V, "dim": D, "projection": 0}, {"vocab_size": V, "dim": "32"}):
        with pytest.raises(ValidationError):
            Embedding.model_validate(bad)


SPEC = """\
pipeline: emb
inputs:
  ids: {kind: tokens, shape: [B, T], dtype: int64}
  %s
blocks:
  emb: {block: embedding, in: %s, vocab_size: 50, dim: 8}
outputs:
  x: emb.sequence
"""


@pytest.mark.parametrize("extra, binding, code, line, col, text", [
    ("feats: {kind: tokens, shape: [B, T], dtype: float32}", "feats", "E303", 6, 31, "integer ids"),
    ("m: {kind: tokens, shape: [B, T], dtype: int64}", "{tokens: ids, mask: m}", "E301", 6, 51, "port `mask`"),
    ("img: {kind: image, shape: [B, 3, 8, 8]}", "{tokens: ids, mask: img}", "E301", 6, 51, "port `mask`"),
])
def test_spec_errors_name_the_port_and_the_place(extra, binding, code, line, col, text):
    with pytest.raises(composer.SpecError) as exc:
        composer.loads(SPEC % (extra, binding), file="emb.yaml")
    first = exc.value.diagnostics[0]
    assert (first.code, first.loc.line, first.loc.col) == (code, line, col), first.format()
    assert text in first.message and first.path.startswith("blocks.emb.in")


def test_an_embedding_can_look_up_in_another_ones_table():
    """T5's decoder embeds with its encoder's word table: one matrix in the state dict."""
    spec = """
pipeline: shared_table
inputs:
  a: {kind: tokens, shape: [2, 5], dtype: int64}
  b: {kind: tokens, shape: [2, 3], dtype: int64}
blocks:
  enc: {block: embedding, in: a, vocab_size: 11, dim: 8, positions: none, norm: false}
  dec: {block: embedding, in: {tokens: b, table: enc.table}, vocab_size: 11, dim: 8, positions: none, norm: false}
outputs:
  x: enc.sequence
  y: dec.sequence
"""
    import composer
    model = composer.loads(spec).build(seed=0)
    assert [k for k in model.state_dict() if "word" in k] == ["enc.word.weight"]
    b = torch.tensor([[1, 2, 3], [4, 5, 6]])
    out = model(a=torch.zeros(2, 5, dtype=torch.int64), b=b)
    assert torch.equal(out["y"], model.enc.word.weight[b])
    with pytest.raises(composer.SpecError, match="shared word table does not have this embedding's size"):
        composer.loads(spec.replace("in: {tokens: b, table: enc.table}, vocab_size: 11", "in: {tokens: b, table: enc.table}, vocab_size: 12"))

"""Text heads against `transformers` (random weights, explicit key maps): BERT's MLM head tied to
the word table, ELECTRA's generator and discriminator heads, RoBERTa's and ELECTRA's
classification heads; the token classifier; a spec whose MLM head ties to `emb.table` keeps one
copy of the word matrix and exports; bad inputs are located errors."""

from __future__ import annotations

import pytest
import torch
from pydantic import ValidationError

import composer
from blocks.text.heads import ElectraDiscriminatorHead, MaskedLMHead, SequenceClassifier, TokenClassifier
from composer.dims import sym
from composer.types import InferError, PortType

B, T = sym("B"), sym("T")
V, D = 97, 32


def randomize(module: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.5)
    return module.eval()


def load(module: torch.nn.Module, ref_state: dict, key_map: dict[str, str]) -> torch.nn.Module:
    assert set(module.state_dict()) == set(key_map), sorted(module.state_dict())
    module.load_state_dict({k: ref_state[v] for k, v in key_map.items()})
    return module.eval()


def n_params(m: torch.nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


def max_diff(a, b) -> float:
    assert a.shape == b.shape, (a.shape, b.shape)
    return (a - b).abs().max().item()


def seq(d=D) -> PortType:
    return PortType("sequence", (B, T, d))


def hidden(d=D, seed=1):
    return torch.randn(2, 6, d, generator=torch.Generator().manual_seed(seed))


MLM_KEYS = {"transform.dense.weight": "transform.dense.weight", "transform.dense.bias": "transform.dense.bias",
            "transform.norm.weight": "transform.LayerNorm.weight", "transform.norm.bias": "transform.LayerNorm.bias",
            "bias": "bias"}


def test_mlm_head_matches_bert_with_the_decoder_tied_to_the_word_table():
    from transformers import BertConfig
    from transformers.models.bert.modeling_bert import BertEmbeddings, BertOnlyMLMHead

    cfg = BertConfig(vocab_size=V, hidden_size=D, hidden_act="gelu", layer_norm_eps=1e-12)
    emb = randomize(BertEmbeddings(cfg), seed=3)
    ref = randomize(BertOnlyMLMHead(cfg))
    ref.predictions.decoder.weight = emb.word_embeddings.weight            # BertForMaskedLM's tie
    ref.predictions.decoder.bias = ref.predictions.bias
    block = MaskedLMHead()
    types = {"x": seq(), "table": PortType("weight", (V, D))}
    assert block.infer(**types) == PortType("logits", (B, T, V))
    ours = load(block.build(**types), ref.predictions.state_dict(), MLM_KEYS)
    assert block.param_count(**types) == n_params(ours) == D * D + D + 2 * D + V   # the table is not the head's
    x = hidden()
    with torch.no_grad():
        assert max_diff(ours(x, emb.word_embeddings.weight), ref(x)) <= 1e-5


def test_mlm_head_matches_electra_generator_with_a_smaller_embedding():
    from transformers import ElectraConfig
    from transformers.models.electra.modeling_electra import ElectraGeneratorPredictions

    e = 16
    cfg = ElectraConfig(vocab_size=V, embedding_size=e, hidden_size=D)
    ref = randomize(ElectraGeneratorPredictions(cfg))
    table, bias = torch.randn(V, e), torch.randn(V)         # generator_lm_head is tied to the (V, 16) table
    keys = {"transform.dense.weight": "dense.weight", "transform.dense.bias": "dense.bias",
            "transform.norm.weight": "LayerNorm.weight", "transform.norm.bias": "LayerNorm.bias", "bias": "bias"}
    types = {"x": seq(), "table": PortType("weight", (V, e))}
    ours = load(MaskedLMHead().build(**types), {**ref.state_dict(), "bias": bias}, keys)
    x = hidden()
    with torch.no_grad():
        assert max_diff(ours(x, table), torch.nn.functional.linear(ref(x), table, bias)) <= 1e-5
    assert MaskedLMHead().param_count(**types) == n_params(ours)


def test_electra_discriminator_head_matches():
    from transformers import ElectraConfig
    from transformers.models.electra.modeling_electra import ElectraDiscriminatorPredictions

    ref = randomize(ElectraDiscriminatorPredictions(ElectraConfig(hidden_size=D, hidden_act="gelu")))
    block = ElectraDiscriminatorHead()
    assert block.infer(x=seq()) == PortType("logits", (B, T))
    ours = load(block.build(x=seq()), ref.state_dict(), {k: k for k in ref.state_dict()})
    x = hidden()
    with torch.no_grad():
        assert max_diff(ours(x), ref(x)) <= 1e-5
    assert block.param_count(x=seq()) == n_params(ours)


@pytest.mark.parametrize("family, activation", [("roberta", "tanh"), ("electra", "gelu")])
def test_sequence_classifier_matches_the_classification_heads(family, activation):
    from transformers import ElectraConfig, RobertaConfig
    from transformers.models.electra.modeling_electra import ElectraClassificationHead
    from transformers.models.roberta.modeling_roberta import RobertaClassificationHead

    config, head = {"roberta": (RobertaConfig, RobertaClassificationHead),
                    "electra": (ElectraConfig, ElectraClassificationHead)}[family]
    ref = randomize(head(config(hidden_size=D, num_labels=3)))
    block = SequenceClassifier(num_classes=3, hidden=D, activation=activation, dropout=0.1)
    assert block.infer(x=seq()) == PortType("logits", (B, 3))
    ours = load(block.build(x=seq()), ref.state_dict(), {k: k for k in ref.state_dict()})
    assert sorted(ours.state_dict()) == ["dense.bias", "dense.weight", "out_proj.bias", "out_proj.weight"]
    x = hidden()
    with torch.no_grad():
        assert max_diff(ours(x), ref(x)) <= 1e-5
    assert block.param_count(x=seq()) == n_params(ours)


def test_sequence_classifier_on_a_pooled_vector_and_token_classifier():
    vec = PortType("vector", (B, D))
    block = SequenceClassifier(num_classes=4)
    module = block.build(x=vec).eval()
    assert list(module.state_dict()) == ["out.weight", "out.bias"] and block.param_count(x=vec) == n_params(module)
    v = torch.randn(3, D)
    with torch.no_grad():
        assert torch.equal(module(v), module.out(v))
    assert block.infer(x=vec) == PortType("logits", (B, 4))

    tok = TokenClassifier(num_classes=5, dropout=0.1)
    assert tok.infer(x=seq()) == PortType("logits", (B, T, 5))
    m = tok.build(x=seq()).eval()
    assert list(m.state_dict()) == ["out.weight", "out.bias"] and tok.param_count(x=seq()) == n_params(m)
    x = hidden()
    with torch.no_grad():
        torch.testing.assert_close(m(x), x @ m.out.weight.T + m.out.bias)


TIED = """\
pipeline: tied_mlm
dims: {T: {sizes: [5, 9]}}
inputs:
  ids: {kind: tokens, shape: [B, T], dtype: int64}
  mask: {kind: mask, shape: [B, T], dtype: int64}
blocks:
  emb:
    block: embedding
    in: {tokens: ids, mask: mask}
    vocab_size: 50
    dim: 16
    max_positions: 16
    type_vocab_size: 2
    position_ids: padding_offset
    padding_idx: 1
  enc: {block: dense, in: emb.sequence, out_features: 16}
  mlm: {block: mlm_head, in: {x: enc, table: emb.table}}
outputs:
  logits: mlm
"""


def test_a_spec_ties_the_mlm_decoder_to_the_embedding_table_and_exports(tmp_path):
    pipe = composer.loads(TIED)
    model = pipe.build().eval()
    state = model.state_dict()
    assert [k for k in state if k.startswith("mlm.")] == [
        "mlm.bias", "mlm.transform.dense.weight", "mlm.transform.dense.bias", "mlm.transform.norm.weight",
        "mlm.transform.norm.bias"]
    assert [k for k, v in state.items() if v.shape == (50, 16)] == ["emb.word.weight"]   # one word matrix
    assert pipe.graph.params["mlm"] == 16 * 16 + 16 + 2 * 16 + 50
    assert pipe.graph.total_params() == sum(p.numel() for p in model.parameters())
    tokens = torch.randint(0, 50, (2, 7))
    mask = torch.ones(2, 7, dtype=torch.int64)
    with torch.no_grad():
        logits = model(ids=tokens, mask=mask)["logits"]
        want = torch.nn.functional.linear(model.mlm.transform(model.enc(model.emb(tokens, None, mask)[0])),
                                          model.emb.word.weight, model.mlm.bias)
    assert logits.shape == (2, 7, 50) and torch.equal(logits, want)
    with torch.no_grad():                            # the tie is live: the head reads the embedding's tensor
        model.emb.word.weight[3] += 1.0
        assert not torch.equal(model(ids=tokens, mask=mask)["logits"], logits)

    report = composer.export(composer.loads(TIED), tmp_path / "mlm.onnx")
    assert report["verification"]["passed"]
    dims = {(i["name"], tuple(i["shape"])) for i in report["inputs"]}
    assert ("ids", ("B", "T")) in dims and ("mask", ("B", "T")) in dims
    import onnx
    graph = onnx.load(str(tmp_path / "mlm.onnx")).graph
    tables = [i.name for i in graph.initializer if sorted(i.dims) == [16, 50]]
    assert tables == ["emb.word.weight"]            # the file holds the tied table once, not a transposed copy


def test_bad_inputs_are_located_errors():
    with pytest.raises(InferError, match="rank-3"):
        MaskedLMHead().infer(x=PortType("vector", (B, D)), table=PortType("weight", (V, D)))
    with pytest.raises(InferError, match=r"\[V, E\]") as e:
        MaskedLMHead().infer(x=seq(), table=PortType("weight", (V, D, 2)))
    assert e.value.port == "table"
    with pytest.raises(InferError, match="fixed size"):
        TokenClassifier(num_classes=2).infer(x=seq(sym("D")))
    with pytest.raises(InferError, match="floating-point"):
        ElectraDiscriminatorHead().infer(x=PortType("sequence", (B, T, D), "int64"))
    for cls, bad in ((SequenceClassifier, {}), (SequenceClassifier, {"num_classes": 0}),
                     (SequenceClassifier, {"num_classes": 2, "activation": "swish"}),
                     (TokenClassifier, {"num_classes": 2, "dropout": 1.0}), (MaskedLMHead, {"eps": 0.0})):
        with pytest.raises(ValidationError):
            cls.model_validate(bad)
    # a sequence where the table belongs: the kinds do not match, at the binding
    bad = TIED.replace("table: emb.table", "table: emb.sequence")
    with pytest.raises(composer.SpecError) as exc:
        composer.loads(bad, file="tied.yaml")
    first = exc.value.diagnostics[0]
    assert first.code == "E301" and first.loc.line == 17 and "port `table`" in first.message
    assert first.path == "blocks.mlm.in.table"

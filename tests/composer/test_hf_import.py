"""`composer import hf DIR -o spec.yaml`: Hugging Face folders of the five encoder families
become specs whose outputs equal `transformers`' on the same texts, in torch and in onnxruntime;
bad folders are clear errors. Every model here is built locally with random weights and a
tokenizer trained on a few sentences; nothing is downloaded."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

import composer
from composer.cli import app

transformers = pytest.importorskip("transformers")

CORPUS = """\
A man is eating food.
A man is eating a piece of bread.
The girl is carrying a baby.
A man is riding a horse.
A woman is playing violin.
Two men pushed carts through the woods.
A man is riding a white horse on an enclosed ground.
A monkey is playing drums.
Someone in a gorilla costume is playing a set of drums.
"""
TEXTS = ["A man is eating bread on a white horse in the woods.", "The girl plays drums.", "A monkey!"]
PAIRS = ["Two men.", "Someone is riding a horse through the woods today.", "violin"]
TOL = 1e-4
runner = CliRunner()


# ---- tokenizers, trained here ----------------------------------------------------------------


@pytest.fixture(scope="module")
def tokenizers_(tmp_path_factory):
    """One fast tokenizer per family: WordPiece (BERT, ELECTRA, DistilBERT), byte-level BPE
    (RoBERTa), Unigram (ALBERT: transformers 5's AlbertTokenizer takes a vocabulary with scores,
    so no SentencePiece model is needed)."""
    from tokenizers import ByteLevelBPETokenizer, Tokenizer, models, normalizers, pre_tokenizers, trainers
    folder = tmp_path_factory.mktemp("tokenizers")
    corpus = folder / "corpus.txt"
    corpus.write_text(CORPUS, encoding="utf-8")

    wp = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    wp.normalizer = normalizers.BertNormalizer(lowercase=True)
    wp.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    wp.train([str(corpus)], trainers.WordPieceTrainer(vocab_size=150, show_progress=False,
                                                      special_tokens=["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]))
    (folder / "wordpiece").mkdir()
    vocab = folder / "wordpiece" / "vocab.txt"
    vocab.write_text("".join(t + "\n" for t, _ in sorted(wp.get_vocab().items(), key=lambda kv: kv[1])),
                     encoding="utf-8")

    bpe = ByteLevelBPETokenizer()
    bpe.train([str(corpus)], vocab_size=300, show_progress=False,
              special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"])
    (folder / "bpe").mkdir()
    bpe.save_model(str(folder / "bpe"))

    uni = Tokenizer(models.Unigram())
    uni.normalizer = normalizers.Lowercase()
    uni.pre_tokenizer = pre_tokenizers.Metaspace()
    uni.train([str(corpus)], trainers.UnigramTrainer(vocab_size=120, unk_token="<unk>", show_progress=False,
                                                      special_tokens=["<pad>", "<unk>", "[CLS]", "[SEP]", "[MASK]"]))
    uni.save(str(folder / "unigram.json"))
    scores = [tuple(v) for v in json.loads((folder / "unigram.json").read_text())["model"]["vocab"]]
    return {
        "bert": transformers.BertTokenizerFast.from_pretrained(str(vocab.parent)),
        "electra": transformers.ElectraTokenizerFast.from_pretrained(str(vocab.parent)),
        "distilbert": transformers.DistilBertTokenizerFast.from_pretrained(str(vocab.parent)),
        "roberta": transformers.RobertaTokenizerFast.from_pretrained(str(folder / "bpe")),
        "albert": transformers.AlbertTokenizerFast(vocab=scores),
    }


# ---- models with random weights --------------------------------------------------------------


SMALL = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37,
             max_position_embeddings=40)
LABELS = {0: "negative", 1: "neutral", 2: "positive"}


def _config(family: str, vocab: int, **extra):
    if family == "bert":
        return transformers.BertConfig(vocab_size=vocab, **SMALL, **extra)
    if family == "roberta":
        return transformers.RobertaConfig(vocab_size=vocab, **{**SMALL, "max_position_embeddings": 42},
                                          type_vocab_size=1, pad_token_id=1, bos_token_id=0, eos_token_id=2,
                                          layer_norm_eps=1e-5, **extra)
    if family == "albert":
        return transformers.AlbertConfig(vocab_size=vocab, **{**SMALL, "embedding_size": 16, **extra})
    if family == "electra":
        return transformers.ElectraConfig(vocab_size=vocab, **{**SMALL, "embedding_size": 16, **extra})
    return transformers.DistilBertConfig(vocab_size=vocab, dim=32, n_layers=2, n_heads=4, hidden_dim=37,
                                         max_position_embeddings=40, **extra)


def _randomize(model, seed: int = 0):
    """Weights far from transformers' init (LayerNorms not 1/0, biases not 0), so every tensor's
    place in the mapping matters."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=g)
            is_norm = "norm" in name.lower()
            p.copy_(1 + 0.1 * noise if is_norm and name.endswith("weight") else 0.1 * noise)
    return model.eval()


def _folder(tmp_path: Path, tokenizers_, family: str, arch: str, **extra):
    """A folder as `save_pretrained` writes it: config.json, model.safetensors, tokenizer files."""
    tok = tokenizers_[family]
    if arch.endswith(("SequenceClassification", "TokenClassification")):
        extra = {"num_labels": 3, **extra}
    torch.manual_seed(0)
    model = _randomize(getattr(transformers, arch)(_config(family, len(tok), **extra)))
    folder = tmp_path / arch.lower()
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    return model, tok, folder


def _import(folder: Path, spec: Path, *args: str):
    r = runner.invoke(app, ["import", "hf", str(folder), "-o", str(spec), *args])
    assert r.exit_code == 0, r.output
    return r


def _reference(model, tok, texts, pairs=None):
    enc = tok(texts, pairs, padding=True, return_tensors="pt")
    with torch.no_grad():
        base = model.base_model(**enc)
        ref = {"hidden": base.last_hidden_state}
        if getattr(base, "pooler_output", None) is not None:
            ref["pooled"] = base.pooler_output
        if model is not model.base_model:
            ref["logits"] = model(**enc).logits
    return enc, ref


def _max_diff(name: str, got, want, mask) -> float:
    got, want = torch.as_tensor(np.asarray(got)), torch.as_tensor(np.asarray(want))
    assert got.shape == want.shape, (name, got.shape, want.shape)
    if name != "pooled" and got.dim() >= 2 and got.shape[:2] == mask.shape:   # per-token outputs: real tokens
        got, want = got[mask], want[mask]
    return (got - want).abs().max().item()


def _compare(outputs: dict, ref: dict, mask: torch.Tensor) -> dict[str, float]:
    assert set(outputs) == set(ref), (set(outputs), set(ref))
    diffs = {k: _max_diff(k, outputs[k], ref[k], mask) for k in ref}
    assert all(d <= TOL for d in diffs.values()), diffs
    return diffs


# architecture, family, extra config, outputs, options of the import
CASES = [
    ("BertModel", "bert", {}, {"hidden", "pooled"}, ()),
    ("BertForSequenceClassification", "bert", {"id2label": LABELS}, {"hidden", "pooled", "logits"}, ("--pair",)),
    ("BertForMaskedLM", "bert", {}, {"hidden", "logits"}, ()),
    ("BertForTokenClassification", "bert", {"hidden_act": "relu"}, {"hidden", "logits"}, ()),
    ("RobertaModel", "roberta", {}, {"hidden", "pooled"}, ()),
    ("RobertaForSequenceClassification", "roberta", {}, {"hidden", "logits"}, ()),
    ("RobertaForMaskedLM", "roberta", {}, {"hidden", "logits"}, ()),
    ("AlbertModel", "albert", {}, {"hidden", "pooled"}, ()),            # gelu_new: the encoder's gelu_tanh
    ("AlbertForSequenceClassification", "albert", {"num_hidden_groups": 2}, {"hidden", "pooled", "logits"}, ()),
    ("AlbertForMaskedLM", "albert", {}, {"hidden", "logits"}, ()),
    ("ElectraModel", "electra", {}, {"hidden"}, ()),
    ("ElectraForPreTraining", "electra", {}, {"hidden", "logits"}, ()),
    ("ElectraForSequenceClassification", "electra", {"embedding_size": 32}, {"hidden", "logits"}, ()),
    ("ElectraForMaskedLM", "electra", {}, {"hidden", "logits"}, ()),
    ("DistilBertModel", "distilbert", {"sinusoidal_pos_embds": True}, {"hidden"}, ()),
    ("DistilBertForSequenceClassification", "distilbert", {}, {"hidden", "logits"}, ()),
    ("DistilBertForMaskedLM", "distilbert", {"activation": "relu"}, {"hidden", "logits"}, ()),
]


@pytest.mark.parametrize("arch, family, extra, outputs, options", CASES, ids=[c[0] for c in CASES])
def test_imported_spec_equals_transformers(tmp_path, tokenizers_, arch, family, extra, outputs, options):
    model, tok, folder = _folder(tmp_path, tokenizers_, family, arch, **extra)
    spec = tmp_path / "specs" / "model.yaml"                  # paths in the spec are relative to it
    _import(folder, spec, *options)
    pipe = composer.load(spec)
    assert set(pipe.resolved.outputs) == outputs
    ours = pipe.build().eval()
    report = ours.weights_report
    assert report.loaded == len(ours.state_dict()) and not report.warnings and not report.unused, report.describe()
    pairs = PAIRS if "--pair" in options else None
    enc, ref = _reference(model, tok, TEXTS, pairs)
    inputs = ours.preprocess(text=TEXTS, **({"pair": pairs} if pairs else {}))
    np.testing.assert_array_equal(inputs["tokens"], enc["input_ids"].numpy())
    np.testing.assert_array_equal(inputs["mask"], enc["attention_mask"].numpy())
    assert (inputs["tokens"] == tok.unk_token_id).sum() <= 1 and len(np.unique(inputs["tokens"])) > 10
    if "token_type_ids" in enc and "token_types" in inputs:
        np.testing.assert_array_equal(inputs["token_types"], enc["token_type_ids"].numpy())
        assert pairs is None or inputs["token_types"].max() == 1
    with torch.no_grad():
        got = ours(**{k: torch.from_numpy(v) for k, v in inputs.items()})
    _compare(dict(got), ref, enc["attention_mask"].bool())       # hidden, pooled, logits: as transformers has them
    if extra.get("id2label"):                                 # class names come along
        assert pipe.resolved.labels.names == tuple(LABELS.values())


@pytest.mark.parametrize("arch, family, options", [
    ("BertForSequenceClassification", "bert", ("--pair",)),
    ("RobertaForMaskedLM", "roberta", ()),
    ("AlbertModel", "albert", ()),
    ("ElectraForPreTraining", "electra", ()),
    ("DistilBertForSequenceClassification", "distilbert", ()),
], ids=["bert-pair", "roberta-mlm", "albert-shared", "electra-discriminator", "distilbert-classifier"])
def test_exported_onnx_equals_transformers(tmp_path, tokenizers_, arch, family, options):
    import onnxruntime as ort
    model, tok, folder = _folder(tmp_path, tokenizers_, family, arch)
    spec = tmp_path / "model.yaml"
    _import(folder, spec, *options)
    pipe = composer.load(spec)
    path = tmp_path / "model.onnx"
    report = composer.export(pipe, path)
    assert report["verification"]["passed"] and report["weights"]["loaded"] > 0
    pairs = PAIRS if options else None
    enc, ref = _reference(model, tok, TEXTS, pairs)
    feeds = pipe.build(spec_weights=False).preprocess(text=TEXTS, **({"pair": pairs} if pairs else {}))
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    got = dict(zip(names, session.run(None, {i.name: feeds[i.name] for i in session.get_inputs()})))
    _compare(got, {k: ref[k] for k in names}, enc["attention_mask"].bool())


def test_spec_reads_well_validates_renders_and_loads_by_cli(tmp_path, tokenizers_):
    _, _, folder = _folder(tmp_path, tokenizers_, "bert", "BertForMaskedLM")
    spec = tmp_path / "bert.yaml"
    r = _import(folder, spec)
    assert "BertForMaskedLM (bert), outputs hidden, logits" in r.output
    text = spec.read_text()
    assert "file: bertformaskedlm " in text and "file: bertformaskedlm/tokenizer.json" in text
    assert r"['^bert\.encoder\.layer\.(\d+)\.attention\.self\.(query|key|value)\.', " \
           r"'encoder.layers.\1.self_attention.\2.']" in text
    assert "in: {x: encoder, table: emb.table}" in text
    r = runner.invoke(app, ["validate", str(spec)])
    assert r.exit_code == 0 and "ok" in r.output, r.output
    r = runner.invoke(app, ["render", str(spec), "-o", str(tmp_path / "bert.dot")])
    assert r.exit_code == 0, r.output
    assert "encoder" in (tmp_path / "bert.dot").read_text()
    r = runner.invoke(app, ["weights", str(spec), str(folder)])     # a folder given again: the family's rules
    assert r.exit_code == 0, r.output
    assert "renamed: bert rule" in r.output and "loaded 42 tensors" in r.output and "(42 renamed)" in r.output


HAND_WRITTEN = """\
pipeline: bert_by_hand
dims:
  B: {sizes: [1, 2], example: 1}
  T: {sizes: [8, 16], example: 16}
inputs:
  text: {kind: text, shape: [B]}
blocks:
  tok: {block: tokenizer, in: text, train: corpus.txt, vocab_size: 100}
  emb:
    block: embedding
    in: {tokens: tok.tokens, token_types: tok.token_types}
    vocab_size: VOCAB
    dim: 32
    max_positions: 40
    type_vocab_size: 2
  encoder: {block: transformer_encoder, in: {x: emb.sequence, mask: tok.mask}, num_layers: 2, num_heads: 4,
            mlp_dim: 37, norm: post, qkv: separate, eps: 1.0e-12}
  cls: {block: pooling, in: encoder, mode: cls}
  pooler: {block: dense, in: cls, out_features: 32}
  pooled: {block: tanh, in: pooler}
outputs:
  hidden: encoder
  pooled: pooled
"""


def test_weights_dir_loads_a_folder_into_a_spec_named_like_the_import(tmp_path, tokenizers_):
    """`--weights DIR` of a folder of a known family brings that family's rules (as pipelines/bert_base.yaml
    names its blocks as the import does), so a hand-written BERT spec takes a BertForSequenceClassification
    folder: the classifier is left out, the rest gives transformers' hidden states and pooled output."""
    model, tok, folder = _folder(tmp_path, tokenizers_, "bert", "BertForSequenceClassification")
    (tmp_path / "corpus.txt").write_text(CORPUS, encoding="utf-8")
    spec = tmp_path / "hand.yaml"
    spec.write_text(HAND_WRITTEN.replace("VOCAB", str(len(tok))))
    saved = tmp_path / "mapped.safetensors"
    r = runner.invoke(app, ["weights", str(spec), str(folder), "--save", str(saved)])
    assert r.exit_code == 0, r.output
    assert "loaded 39 tensors" in r.output and "2 ignored" in r.output       # classifier.weight, classifier.bias
    ours = composer.load(spec).build(spec_weights=False).eval()
    composer.load_weights(ours, saved)
    enc, ref = _reference(model, tok, TEXTS)
    with torch.no_grad():
        got = ours(tokens=enc["input_ids"], mask=enc["attention_mask"], token_types=enc["token_type_ids"])
    _compare(dict(got), {k: ref[k] for k in got}, enc["attention_mask"].bool())


def test_base_model_of_a_task_folder_ignores_the_head(tmp_path, tokenizers_):
    model, tok, folder = _folder(tmp_path, tokenizers_, "bert", "BertForMaskedLM")
    spec = tmp_path / "base.yaml"
    r = _import(folder, spec, "--architecture", "BertModel")
    assert "note: the folder's cls.* (5 tensors) is not part of BertModel: ignored" in r.output
    assert "'^cls\\.'" in spec.read_text()
    ours = composer.load(spec).build().eval()
    assert set(ours.output_names) == {"hidden"}          # BertForMaskedLM has no pooler
    enc, ref = _reference(model, tok, TEXTS)
    with torch.no_grad():
        got = ours(**{k: torch.from_numpy(v) for k, v in ours.preprocess(text=TEXTS).items()})
    _compare(dict(got), {"hidden": ref["hidden"]}, enc["attention_mask"].bool())


def test_a_pretraining_checkpoint_imports_as_its_masked_lm(tmp_path, tokenizers_):
    """A BertForPreTraining checkpoint (what bert-base-uncased holds: the MLM head beside the
    next-sentence head under `cls.`, and the pooler) as BertForMaskedLM: the next-sentence head
    and the pooler are ignored, nothing else under `cls.`."""
    model, tok, folder = _folder(tmp_path, tokenizers_, "bert", "BertForPreTraining")
    spec = tmp_path / "mlm.yaml"
    r = _import(folder, spec, "--architecture", "BertForMaskedLM")
    assert "the folder's cls.seq_relationship.* (2 tensors) is not part of BertForMaskedLM" in r.output
    text = spec.read_text()
    assert "'^cls\\.seq_relationship\\.'" in text and "'^bert\\.pooler\\.'" in text
    ours = composer.load(spec).build().eval()
    assert len(ours.weights_report.ignored) == 4
    enc = tok(TEXTS, padding=True, return_tensors="pt")
    with torch.no_grad():
        want = model(**enc).prediction_logits
        got = ours(**{k: torch.from_numpy(v) for k, v in ours.preprocess(text=TEXTS).items()})["logits"]
    assert _max_diff("logits", got, want, enc["attention_mask"].bool()) <= TOL


def test_older_checkpoints_with_buffers_and_tied_copies(tmp_path, tokenizers_):
    """Checkpoints written by older transformers hold `position_ids` buffers and the tied decoder
    twice: the spec ignores them, naming why."""
    from safetensors.torch import load_file, save_file
    model, tok, folder = _folder(tmp_path, tokenizers_, "roberta", "RobertaForMaskedLM")
    tensors = load_file(str(folder / "model.safetensors"))
    tensors["roberta.embeddings.position_ids"] = torch.arange(42)[None]
    tensors["lm_head.decoder.weight"] = tensors["roberta.embeddings.word_embeddings.weight"].clone()
    tensors["lm_head.decoder.bias"] = tensors["lm_head.bias"].clone()
    save_file(tensors, str(folder / "model.safetensors"))
    spec = tmp_path / "r.yaml"
    _import(folder, spec)
    text = spec.read_text()
    assert "'^roberta\\.embeddings\\.position_ids$'" in text and "'^lm_head\\.decoder\\.'" in text
    ours = composer.load(spec).build().eval()
    assert len(ours.weights_report.ignored) == 3 and not ours.weights_report.warnings
    enc, ref = _reference(model, tok, TEXTS)
    with torch.no_grad():
        got = ours(**{k: torch.from_numpy(v) for k, v in ours.preprocess(text=TEXTS).items()})
    _compare(dict(got), {k: ref[k] for k in got}, enc["attention_mask"].bool())


def test_sharded_folder(tmp_path, tokenizers_):
    model, tok, folder = _folder(tmp_path, tokenizers_, "electra", "ElectraModel")
    shutil.rmtree(folder)
    model.save_pretrained(folder, max_shard_size="20KB")
    tok.save_pretrained(folder)
    assert (folder / "model.safetensors.index.json").is_file()
    spec = tmp_path / "e.yaml"
    _import(folder, spec)
    ours = composer.load(spec).build().eval()
    enc, ref = _reference(model, tok, TEXTS)
    with torch.no_grad():
        got = ours(**{k: torch.from_numpy(v) for k, v in ours.preprocess(text=TEXTS).items()})
    _compare(dict(got), ref, enc["attention_mask"].bool())


# ---- errors ----------------------------------------------------------------------------------


def _fails(args, *messages: str, code: int = 1) -> str:
    r = runner.invoke(app, ["import", "hf", *map(str, args)])
    assert r.exit_code == code, r.output
    assert "Traceback" not in r.output
    for m in messages:
        assert m in r.output, r.output
    return r.output


def test_bad_folders_are_clear_errors(tmp_path, tokenizers_):
    out = tmp_path / "spec.yaml"
    _fails([tmp_path / "nowhere", "-o", out], "does not exist")
    empty = tmp_path / "empty"
    empty.mkdir()
    _fails([empty, "-o", out], "has no config.json")
    (empty / "config.json").write_text("{not json")
    _fails([empty, "-o", out], "is not valid JSON")
    (empty / "config.json").write_text(json.dumps({"model_type": "bart", "architectures": ["BartModel"]}))
    _fails([empty, "-o", out], "model_type `bart`", "is not supported",
           "composer imports bert, roberta, albert, electra, distilbert, gpt2, t5, xlnet")
    _, _, folder = _folder(tmp_path, tokenizers_, "bert", "BertModel")
    config = json.loads((folder / "config.json").read_text())

    def with_config(**changes) -> Path:
        (folder / "config.json").write_text(json.dumps({**config, **changes}))
        return folder

    _fails([with_config(architectures=["BertForQuestionAnswering"]), "-o", out],
           "architecture BertForQuestionAnswering", "BertForSequenceClassification", "--architecture BertModel")
    _fails([with_config(), "-o", out, "--architecture", "RobertaModel"], "architecture RobertaModel (--architecture)")
    _fails([with_config(position_embedding_type="relative_key"), "-o", out], "position_embedding_type: relative_key")
    _fails([with_config(hidden_act="silu"), "-o", out], "hidden_act: silu", "gelu, relu, gelu_new")
    _fails([with_config(is_decoder=True), "-o", out], "is_decoder: true")
    _fails([with_config(num_hidden_layers="2"), "-o", out], "num_hidden_layers", "positive integer")
    with_config()
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.move(folder / name, tmp_path / name)
    _fails([folder, "-o", out], "has no tokenizer files", "tokenizer.json, vocab.txt, vocab.json + merges.txt")
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.move(tmp_path / name, folder / name)
    (folder / "model.safetensors").rename(tmp_path / "weights.safetensors")
    _fails([folder, "-o", out], "holds no weights")
    (tmp_path / "weights.safetensors").rename(folder / "model.safetensors")
    assert not out.exists()                        # nothing written by any failure


def test_output_is_never_overwritten_without_force(tmp_path, tokenizers_):
    _, _, folder = _folder(tmp_path, tokenizers_, "distilbert", "DistilBertModel")
    out = tmp_path / "spec.yaml"
    out.write_text("mine\n")
    _fails([folder, "-o", out], "exists: pass --force")
    assert out.read_text() == "mine\n"
    (folder / "config.json").write_text("{}")
    _fails([folder, "-o", out, "--force"], "has no `model_type`")
    assert out.read_text() == "mine\n"              # a failed import leaves the old file
    _fails([folder, "-o", tmp_path, "--force"], "is a folder")


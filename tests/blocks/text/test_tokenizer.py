"""The tokenizer block: the same ids as `transformers`' fast tokenizers for the same files,
a pre-processing stage before the exported core, and clear errors for bad text and files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

import composer
from composer.errors import SpecError
from composer.cli import app

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
Café naïve résumé — déjà vu, 北京 and ümlauts!
"""
TEXTS = ["A man is eating.", "Someone eats a MONKEY's drums, naïvely!", "北京 [MASK] horse"]
PAIRS = ["The girl rides.", "Two men.", "violin violin"]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A WordPiece vocab.txt, a byte-level BPE vocab.json + merges.txt and a tokenizer.json, trained here."""
    from tokenizers import ByteLevelBPETokenizer, Tokenizer, models, normalizers, pre_tokenizers, trainers
    folder = tmp_path_factory.mktemp("tok")
    corpus = folder / "corpus.txt"
    corpus.write_text(CORPUS, encoding="utf-8")
    wp = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    wp.normalizer = normalizers.BertNormalizer(lowercase=True)
    wp.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    wp.train([str(corpus)], trainers.WordPieceTrainer(vocab_size=150, show_progress=False,
                                                      special_tokens=["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]))
    bert = folder / "bert"
    bert.mkdir()
    vocab = sorted(wp.get_vocab().items(), key=lambda kv: kv[1])
    (bert / "vocab.txt").write_text("".join(t + "\n" for t, _ in vocab), encoding="utf-8")
    bpe = ByteLevelBPETokenizer()
    bpe.train([str(corpus)], vocab_size=300, show_progress=False,
              special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"])
    roberta = folder / "roberta"
    roberta.mkdir()
    bpe.save_model(str(roberta))
    wp.save(str(folder / "tokenizer.json"))
    return {"folder": folder, "corpus": corpus, "bert": bert, "roberta": roberta, "json": folder / "tokenizer.json"}


def _spec(tmp_path, params: str, pair: bool = False, extra: str = "") -> Path:
    spec = tmp_path / "tok.yaml"
    spec.write_text(f"""\
pipeline: tok
dims:
  B: {{sizes: [1, 2], example: 2}}
  T: {{sizes: [8, 16], example: 8}}
inputs:
  text: {{kind: text, shape: [B]}}
{"  pair: {kind: text, shape: [B]}" if pair else ""}
blocks:
  tok: {{block: tokenizer, in: {{text: text{", pair: pair" if pair else ""}}}, {params}}}
  ids: {{block: identity, in: tok.tokens}}
{extra}outputs:
  ids: ids
""")
    return spec


def _ours(spec, texts, pairs=None):
    """Every output of the spec's tokenizer for these texts."""
    from composer.stages import PreStage
    return PreStage(composer.load(spec).graph).runtime("tok")(texts, pairs)


def test_wordpiece_vocab_equals_bert_fast_tokenizer(files, tmp_path):
    from transformers import BertTokenizerFast
    ref = BertTokenizerFast.from_pretrained(str(files["bert"]))
    for pairs in (None, PAIRS):
        spec = _spec(tmp_path, f"vocab: {files['bert'] / 'vocab.txt'}", pair=pairs is not None)
        got = _ours(spec, TEXTS, pairs)
        want = ref(TEXTS, pairs, padding=True, return_tensors="np")
        np.testing.assert_array_equal(got["tokens"], want["input_ids"])
        np.testing.assert_array_equal(got["mask"], want["attention_mask"])
        np.testing.assert_array_equal(got["token_types"], want["token_type_ids"])
        assert got["tokens"].dtype == np.int64
    assert "[UNK]" not in ref.convert_ids_to_tokens(got["tokens"][0])


def test_bpe_vocab_and_merges_equal_roberta_fast_tokenizer(files, tmp_path):
    from transformers import RobertaTokenizerFast
    ref = RobertaTokenizerFast.from_pretrained(str(files["roberta"]))
    for pairs in (None, PAIRS):
        spec = _spec(tmp_path, f"vocab: {files['roberta'] / 'vocab.json'}, merges: {files['roberta'] / 'merges.txt'}",
                     pair=pairs is not None)
        got = _ours(spec, TEXTS, pairs)
        want = ref(TEXTS, pairs, padding=True, return_tensors="np")
        np.testing.assert_array_equal(got["tokens"], want["input_ids"])
        np.testing.assert_array_equal(got["mask"], want["attention_mask"])
    assert got["tokens"][0, 0] == ref.cls_token_id and ref.pad_token_id in got["tokens"]


def test_tokenizer_json_equals_the_fast_tokenizer_of_the_same_file(files, tmp_path):
    from transformers import PreTrainedTokenizerFast
    ref = PreTrainedTokenizerFast(tokenizer_file=str(files["json"]))
    spec = _spec(tmp_path, f"file: {files['json']}, special_tokens: false")
    got = _ours(spec, TEXTS)
    for i, text in enumerate(TEXTS):
        ids = ref(text, add_special_tokens=False)["input_ids"]
        np.testing.assert_array_equal(got["tokens"][i, :len(ids)], ids)
        assert got["mask"][i].sum() == len(ids)


def test_training_at_build_time_from_a_file_next_to_the_spec(files, tmp_path):
    (tmp_path / "corpus.txt").write_text(CORPUS, encoding="utf-8")
    spec = _spec(tmp_path, "train: corpus.txt, vocab_size: 120")
    got = _ours(spec, TEXTS)
    from composer.stages import PreStage
    tok = PreStage(composer.load(spec).graph).runtime("tok").tok
    assert [tok.id_to_token(int(i)) for i in got["tokens"][0, :2]] == ["[CLS]", "a"]     # lowercased, wrapped
    assert tok.id_to_token(int(got["tokens"][0, got["mask"][0].sum() - 1])) == "[SEP]"
    assert tok.token_to_id("[UNK]") not in got["tokens"][0]      # every word of the first text is in the corpus
    pipe = composer.load(spec)
    types = pipe.graph.types["tok"]
    assert types["tokens"].get("vocab") <= 120 and str(types["tokens"].shape[1]) == "T"
    assert composer.load(spec).build().input_names == ("tokens",)   # the core takes ids, never text


def test_padding_to_max_length_and_truncation(files, tmp_path):
    vocab = files["bert"] / "vocab.txt"
    got = _ours(_spec(tmp_path, f"vocab: {vocab}, padding: max_length, max_length: 24"), TEXTS[:2])
    assert got["tokens"].shape == (2, 24) and got["mask"][:, -1].sum() == 0
    core = composer.load(_spec(tmp_path, f"vocab: {vocab}, padding: max_length, max_length: 24")).build()
    assert core.preprocess(text=TEXTS[:2])["tokens"].shape == (2, 24)     # what the module takes: ids only
    long = "a man is riding a horse " * 10
    with pytest.raises(composer.ComposerError, match=r"text 1 of input `text` is \d+ tokens long, more than "
                                                     r"max_length 12; set `truncation: true`"):
        _ours(_spec(tmp_path, f"vocab: {vocab}, max_length: 12"), ["short", long])
    cut = _ours(_spec(tmp_path, f"vocab: {vocab}, max_length: 12, truncation: true"), ["short", long])
    assert cut["tokens"].shape == (2, 12) and cut["tokens"][1, -1] == 3      # ends with [SEP]


@pytest.mark.parametrize("texts, message", [
    ([""], "text 0 of input `text` is empty"),
    (["fine", "   "], "text 1 of input `text` is empty"),
    ([b"bytes"], "text 0 of input `text` is a bytes, not a string"),
    (["bad \udcff surrogate"], "text 0 of input `text` is not valid UTF-8"),
    ([], "input `text` needs at least one text"),
])
def test_bad_text_is_a_clear_error(files, tmp_path, texts, message):
    spec = _spec(tmp_path, f"vocab: {files['bert'] / 'vocab.txt'}")
    with pytest.raises(composer.ComposerError, match=message):
        _ours(spec, texts)


def test_bad_tokenizer_files_are_located_errors(files, tmp_path):
    spec = _spec(tmp_path, "vocab: nowhere/vocab.txt")
    with pytest.raises(SpecError) as exc:
        composer.load(spec)
    (d,) = exc.value.errors
    line = next(i for i, text in enumerate(spec.read_text().splitlines(), 1) if "nowhere" in text)
    assert (d.code, d.path, d.loc.line) == ("E009", "blocks.tok.vocab", line) and "nowhere/vocab.txt" in d.message
    (tmp_path / "broken.json").write_text('{"version": "1.0", "model": {"type": "Nope"}}')
    with pytest.raises(SpecError) as exc:
        composer.load(_spec(tmp_path, "file: broken.json"))
    (d,) = exc.value.errors
    assert d.path == "blocks.tok.file" and "cannot read tokenizer file" in d.message
    with pytest.raises(SpecError, match="give exactly one of `file`"):
        composer.load(_spec(tmp_path, f"file: {files['json']}, vocab: {files['bert'] / 'vocab.txt'}"))
    with pytest.raises(SpecError, match="needs its `merges: merges.txt`"):
        composer.load(_spec(tmp_path, f"vocab: {files['roberta'] / 'vocab.json'}"))
    (tmp_path / "latin1.txt").write_bytes("caf\xe9 au lait\n".encode("latin-1"))
    with pytest.raises(SpecError, match=r"training text .*latin1.txt is not valid UTF-8"):
        composer.load(_spec(tmp_path, "train: latin1.txt"))


def test_a_tokenizer_reading_the_core_is_an_error(files, tmp_path):
    spec = tmp_path / "bad.yaml"
    spec.write_text(f"""\
pipeline: bad
inputs:
  x: {{kind: vector, shape: [B, 4]}}
blocks:
  d: {{block: dense, in: x, out_features: 4}}
  tok: {{block: tokenizer, in: d, vocab: {files['bert'] / 'vocab.txt'}}}
outputs:
  ids: tok.tokens
""")
    with pytest.raises(SpecError) as exc:
        composer.load(spec)
    assert any("port `text` takes text" in d.message or "pre-processing block `tok` reads `d`" in d.message
               for d in exc.value.errors)


def test_composer_run_tokenizes_for_torch_and_onnx_alike(files, tmp_path):
    spec = _spec(tmp_path, f"vocab: {files['bert'] / 'vocab.txt'}")
    texts = tmp_path / "texts.jsonl"
    texts.write_text(json.dumps({"text": TEXTS[0]}) + "\n" + json.dumps(TEXTS[1]) + "\n")
    runner = CliRunner()
    saved = {}
    for backend in ("torch", "onnx"):
        out = tmp_path / f"{backend}.npz"
        r = runner.invoke(app, ["run", str(spec), "--input", f"text={texts}", "--input", f"text={TEXTS[2]}",
                                "--backend", backend, "--save", str(out)])
        assert r.exit_code == 0, r.output
        saved[backend] = np.load(out)["ids"]
    np.testing.assert_array_equal(saved["torch"], saved["onnx"])
    assert saved["torch"].shape[0] == 3
    r = runner.invoke(app, ["run", str(spec)])
    assert r.exit_code == 1 and 'give --input text="…"' in r.output

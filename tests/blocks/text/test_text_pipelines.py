"""The text pipelines end to end: text in, the tokenizer before the core, padding that changes
nothing for the real tokens (torch and onnxruntime), and what `composer run` prints."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

import composer
from composer.cli import app
from composer.errors import SpecError

ROOT = Path(__file__).resolve().parents[3]
SHORT, LONG = "A man is eating.", "Two men pushed carts through the woods after the long storm."


@pytest.fixture(scope="module")
def classifier():
    pipe = composer.load(ROOT / "pipelines" / "text_classifier.yaml")
    return pipe, pipe.build(seed=3).eval()


def test_padding_does_not_change_the_real_rows(classifier, tmp_path):
    pipe, model = classifier
    alone = model.preprocess(text=[SHORT])
    batch = model.preprocess(text=[SHORT, LONG])
    assert batch["tokens"].shape[1] > alone["tokens"].shape[1] and batch["mask"][0].sum() == alone["mask"][0].sum()
    with torch.no_grad():
        a = model(**{k: torch.from_numpy(v) for k, v in alone.items()})["logits"]
        b = model(**{k: torch.from_numpy(v) for k, v in batch.items()})["logits"]
    torch.testing.assert_close(b[0], a[0], rtol=1e-5, atol=1e-5)
    from composer.runtime import Session
    path = tmp_path / "text_classifier.onnx"
    composer.export(model, path)
    sess = Session(path, device="cpu")
    assert [i.name for i in sess.session.get_inputs()] == ["tokens", "mask", "token_types"]
    got_a, got_b = sess.run(alone)["logits"], sess.run(batch)["logits"]
    np.testing.assert_allclose(got_b[0], a[0].numpy(), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(got_a[0], a[0].numpy(), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(got_b[1], b[1].numpy(), rtol=1e-4, atol=1e-4)


def test_sentence_embedding_run_prints_the_similarity_matrix():
    r = CliRunner().invoke(app, ["run", str(ROOT / "pipelines" / "sentence_embedding.yaml"),
                                 "--input", f"text={SHORT}", "--input", "text=Someone eats.", "--input", f"text={LONG}"])
    assert r.exit_code == 0, r.output
    assert "embedding  [3, 384] float32" in r.output and "cosine similarity" in r.output
    rows = [line for line in r.output.splitlines() if line.startswith("  [")]
    assert len(rows) == 3 and rows[0].split()[1] == "1.000" and rows[1].split()[2] == "1.000"


def test_fill_mask_run_prints_tokens_for_each_mask():
    r = CliRunner().invoke(app, ["run", str(ROOT / "pipelines" / "fill_mask.yaml"), "--top-k", "3",
                                 "--input", "text=A man is [MASK] food at the [MASK] table."])
    assert r.exit_code == 0, r.output
    lines = [line for line in r.output.splitlines() if "[MASK] at" in line]
    assert len(lines) == 2 and all(line.count(",") == 2 for line in lines)


def test_sentence_pairs_reach_the_model_with_their_segments(tmp_path):
    spec = tmp_path / "pair.yaml"
    spec.write_text((ROOT / "pipelines" / "text_classifier.yaml").read_text()
                    .replace("data/vocab.txt", str(ROOT / "pipelines" / "data" / "vocab.txt"))
                    .replace("  text: {kind: text, shape: [B]}", "  text: {kind: text, shape: [B]}\n"
                             "  pair: {kind: text, shape: [B]}")
                    .replace("tok: {block: tokenizer, in: text,", "tok: {block: tokenizer, in: {text: text, pair: pair},"))
    model = composer.load(spec).build().eval()
    arrays = model.preprocess(text=[SHORT], pair=[LONG])
    types = arrays["token_types"][0]
    assert types[0] == 0 and types[arrays["mask"][0].sum() - 1] == 1 and set(types.tolist()) == {0, 1}


def test_a_vocabulary_larger_than_the_embedding_is_a_located_error(tmp_path):
    text = (ROOT / "pipelines" / "text_classifier.yaml").read_text()
    spec = tmp_path / "small.yaml"
    spec.write_text(text.replace("data/vocab.txt", str(ROOT / "pipelines" / "data" / "vocab.txt"))
                    .replace("    vocab_size: 1000\n", "    vocab_size: 50\n"))
    with pytest.raises(SpecError) as exc:
        composer.load(spec)
    (d,) = exc.value.errors
    assert d.path == "blocks.emb.vocab_size" and "gets ids up to" in d.message and "the table has 50 rows" in d.message


def test_a_float_image_into_the_mask_port_is_an_error(tmp_path):
    spec = tmp_path / "bad.yaml"
    spec.write_text("""\
pipeline: bad
inputs:
  x: {kind: sequence, shape: [B, T, 16]}
  m: {kind: image, shape: [B, 3, 8, 8]}
blocks:
  enc: {block: transformer_encoder, in: {x: x, mask: m}, num_layers: 1, num_heads: 2, mlp_dim: 32}
outputs:
  y: enc
""")
    with pytest.raises(SpecError) as exc:
        composer.load(spec)
    (d,) = exc.value.errors
    assert d.code == "E301" and "mask" in d.message and d.loc.line == 6

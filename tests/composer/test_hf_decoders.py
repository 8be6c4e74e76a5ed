"""`composer import hf DIR` for the generative families: GPT-2, T5 and XLNet folders become specs
whose logits and hidden states equal `transformers'` on a padded batch (GPT-2 and T5 with a KV
cache too), `--weights DIR` brings the same rules into a spec named like the import, and configs
the blocks cannot reproduce are clear errors. Every model is built here with random weights and
a tokenizer from local files; nothing is downloaded."""

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

GPT2_DATA = Path(__file__).resolve().parents[2] / "pipelines" / "data" / "gpt2"
TEXTS = ["A man is eating bread on a white horse in the woods.", "The girl plays drums.", "A monkey!"]
TOL = 1e-4
runner = CliRunner()


def _randomize(model, seed: int = 0):
    """Weights far from transformers' init (norms not 1, biases not 0), so every tensor's place in
    the mapping matters."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=g)
            is_norm = "norm" in name.lower() or ".ln_" in f".{name}"
            p.copy_(1 + 0.1 * noise if is_norm and name.endswith("weight") else 0.1 * noise)
    return model.eval()


def _import(folder: Path, spec: Path, *args: str):
    r = runner.invoke(app, ["import", "hf", str(folder), "-o", str(spec), *args])
    assert r.exit_code == 0, r.output
    return r


def _fails(args, *messages: str, code: int = 1) -> str:
    r = runner.invoke(app, ["import", "hf", *map(str, args)])
    assert r.exit_code == code, r.output
    assert "Traceback" not in r.output
    for m in messages:
        assert m in r.output, r.output
    return r.output


def _load(spec: Path):
    """The spec built with its weights, every tensor from the folder, no warnings."""
    ours = composer.load(spec).build().eval()
    report = ours.weights_report
    assert report.loaded == len(ours.state_dict()) and not report.warnings and not report.unused, report.describe()
    return ours


def _diff(got, want, mask: torch.Tensor) -> float:
    got, want = torch.as_tensor(np.asarray(got)), torch.as_tensor(np.asarray(want))
    assert got.shape == want.shape, (got.shape, want.shape)
    return (got[mask] - want[mask]).abs().max().item()


# ---- GPT-2 -------------------------------------------------------------------------------------

GPT2 = dict(vocab_size=600, n_positions=40, n_embd=32, n_layer=2, n_head=4, bos_token_id=0, eos_token_id=0)


def _gpt2_folder(tmp_path: Path, arch: str = "GPT2LMHeadModel", tokenizer: str = "files", **extra):
    """A folder as `save_pretrained` writes it, with the 600-id byte-level BPE of pipelines/data/gpt2:
    its vocab.json + merges.txt (`files`) or the tokenizer.json GPT2TokenizerFast saves (`json`)."""
    torch.manual_seed(0)
    model = _randomize(getattr(transformers, arch)(transformers.GPT2Config(**{**GPT2, **extra})))
    folder = tmp_path / arch.lower()
    model.save_pretrained(folder)
    for name in ("vocab.json", "merges.txt"):
        shutil.copy(GPT2_DATA / name, folder / name)
    tok = transformers.GPT2TokenizerFast.from_pretrained(str(folder))
    if tokenizer == "json":
        for name in ("vocab.json", "merges.txt"):
            (folder / name).unlink()
        tok.save_pretrained(folder)
        assert (folder / "tokenizer.json").is_file()
    return model, tok, folder


def _positions(mask: torch.Tensor) -> torch.Tensor:
    """GPT-2's position ids as `generate` numbers them: the real tokens before each one."""
    return (mask.cumsum(-1) - 1).masked_fill(mask == 0, 1)


def _gpt2_inputs(ours, tok, texts):
    inputs = ours.preprocess(text=texts)
    enc = tok(texts, padding=False)
    for row, ids in zip(inputs["tokens"], enc["input_ids"]):          # the same ids, right-padded
        assert row[:len(ids)].tolist() == ids
    return torch.from_numpy(inputs["tokens"]), torch.from_numpy(inputs["mask"])


def _left_padded(tokens: torch.Tensor, mask: torch.Tensor):
    """The same rows with their pads moved to the front (as `generate` pads prompts)."""
    tokens, mask = tokens.clone(), mask.clone()
    for i in range(len(mask)):
        n = int(mask[i].sum())
        tokens[i] = torch.cat([tokens[i, n:], tokens[i, :n]])
        mask[i] = torch.cat([mask[i, n:], mask[i, :n]])
    return tokens, mask


def _empty_past(model, b: int):
    c = model.config
    return torch.zeros(c.n_layer, 2, b, c.n_head, 0, c.n_embd // c.n_head), torch.zeros(b, 0, dtype=torch.int64)


@pytest.mark.parametrize("arch, tokenizer, extra", [
    ("GPT2LMHeadModel", "files", {}),
    ("GPT2LMHeadModel", "json", {"activation_function": "gelu", "n_inner": 48}),
    ("GPT2LMHeadModel", "files", {"tie_word_embeddings": False}),
    ("GPT2Model", "files", {"activation_function": "relu"}),
], ids=["lm", "lm-tokenizer-json-gelu", "lm-untied", "base-relu"])
def test_gpt2_equals_transformers_with_and_without_past(tmp_path, arch, tokenizer, extra):
    model, tok, folder = _gpt2_folder(tmp_path, arch, tokenizer, **extra)
    spec = tmp_path / "specs" / "gpt2.yaml"                    # paths in the spec are relative to it
    r = _import(folder, spec)
    lm = arch == "GPT2LMHeadModel"
    assert f"{arch} (gpt2), outputs {'logits' if lm else 'hidden'}, present" in r.output
    ours = _load(spec)
    out = "logits" if lm else "hidden"
    tokens, mask = _gpt2_inputs(ours, tok, TEXTS)
    assert int(mask.sum(1).min()) < tokens.shape[1]            # a padded batch
    diffs = {}
    for name, (t, m) in {"right": (tokens, mask), "left": _left_padded(tokens, mask)}.items():
        with torch.no_grad():
            ref = model(input_ids=t, attention_mask=m, position_ids=_positions(m))
            want = ref.logits if lm else ref.last_hidden_state
            got = ours(tokens=t, mask=m, past=_empty_past(model, len(t))[0], past_mask=_empty_past(model, len(t))[1])
        diffs[name] = _diff(got[out], want, m.bool())
        assert got["present"].shape[4] == t.shape[1]
    # the prompt less its last 3 tokens, then one cached step per token (left-padded, as generate runs it)
    t, m = _left_padded(tokens, mask)
    with torch.no_grad():
        ref = model(input_ids=t, attention_mask=m, position_ids=_positions(m))
        want = ref.logits if lm else ref.last_hidden_state
        past, past_mask = _empty_past(model, len(t))
        n = t.shape[1] - 3
        steps = []
        for start, stop in ((0, n), (n, n + 1), (n + 1, n + 2), (n + 2, n + 3)):
            got = ours(tokens=t[:, start:stop], mask=m[:, start:stop], past=past, past_mask=past_mask)
            steps.append(got[out])
            past, past_mask = got["present"], m[:, :stop]
    diffs["cached"] = _diff(torch.cat(steps, dim=1), want, m.bool())
    assert all(d <= TOL for d in diffs.values()), diffs


def test_gpt2_spec_reads_well_and_takes_weights_dir(tmp_path):
    """The spec has gpt2.yaml's layout and validates; `--weights DIR` of the folder into a hand-written
    spec named like it brings the rename and transpose rules. (The decoder's ONNX export is proven in
    tests/blocks/text/test_decoder.py; the imported spec is the same graph.)"""
    model, tok, folder = _gpt2_folder(tmp_path)
    spec = tmp_path / "gpt2.yaml"
    _import(folder, spec)
    text = spec.read_text()
    for line in ("  P: {sizes: [2, 5], example: 34}", "  past: {kind: kv_cache, shape: [2, 2, B, 4, P, 8]}",
                 "    position_ids: from_mask",
                 "  lm_head: {block: lm_head, in: {x: decoder.sequence, table: emb.table}}",
                 "  logits: lm_head", "  present: decoder.present", "  transpose:",
                 r"    - ['^transformer\.h\.(\d+)\.attn\.c_attn\.weight$', 'decoder.layers.\1.self_attention."
                 "in_proj_weight']", "    vocab: gpt2lmheadmodel/vocab.json", "    activation: gelu_tanh"):
        assert line in text, line
    r = runner.invoke(app, ["validate", str(spec)])
    assert r.exit_code == 0, r.output
    tokens, mask = _gpt2_inputs(composer.load(spec).build(spec_weights=False), tok, TEXTS)
    past, past_mask = _empty_past(model, len(tokens))
    with torch.no_grad():
        want = model(input_ids=tokens, attention_mask=mask, position_ids=_positions(mask)).logits
    hand = tmp_path / "hand.yaml"                              # no weights section, no tokenizer
    hand.write_text(HAND_GPT2)
    saved = tmp_path / "mapped.safetensors"
    r = runner.invoke(app, ["weights", str(hand), str(folder), "--save", str(saved)])
    assert r.exit_code == 0, r.output
    assert "loaded 28 tensors" in r.output and "gpt2 rule" in r.output, r.output
    ours = composer.load(hand).build(spec_weights=False).eval()
    composer.load_weights(ours, saved)
    with torch.no_grad():
        got = ours(tokens=tokens, mask=mask, past=past, past_mask=past_mask)["logits"]
    assert _diff(got, want, mask.bool()) <= TOL


HAND_GPT2 = """\
pipeline: gpt2_by_hand
dims:
  B: {sizes: [1, 2]}
  T: {sizes: [3, 5]}
  P: {sizes: [2, 4]}
inputs:
  tokens: {kind: tokens, shape: [B, T], dtype: int64}
  mask: {kind: mask, shape: [B, T], dtype: int64}
  past: {kind: kv_cache, shape: [2, 2, B, 4, P, 8]}
  past_mask: {kind: mask, shape: [B, P], dtype: int64}
blocks:
  emb: {block: embedding, in: {tokens: tokens, mask: mask, past_mask: past_mask}, vocab_size: 600, dim: 32,
        max_positions: 40, position_ids: from_mask, norm: false}
  decoder: {block: transformer_decoder, in: {x: emb.sequence, mask: mask, past: past, past_mask: past_mask},
            num_layers: 2, num_heads: 4, mlp_dim: 128}
  lm_head: {block: lm_head, in: {x: decoder.sequence, table: emb.table}}
outputs:
  logits: lm_head
  present: decoder.present
"""


def test_gpt2_base_folder_gives_logits_with_the_tied_head(tmp_path):
    """A GPT2Model folder as GPT2LMHeadModel: the tied head needs no weights of its own."""
    _, tok, folder = _gpt2_folder(tmp_path, "GPT2Model")
    spec = tmp_path / "lm.yaml"
    _import(folder, spec, "--architecture", "GPT2LMHeadModel")
    ours = _load(spec)
    model = transformers.GPT2LMHeadModel.from_pretrained(str(folder)).eval()    # a local folder: ties lm_head
    tokens, mask = _gpt2_inputs(ours, tok, TEXTS)
    past, past_mask = _empty_past(model, len(tokens))
    with torch.no_grad():
        want = model(input_ids=tokens, attention_mask=mask, position_ids=_positions(mask)).logits
        got = ours(tokens=tokens, mask=mask, past=past, past_mask=past_mask)["logits"]
    assert _diff(got, want, mask.bool()) <= TOL


def test_gpt2_task_folder_imports_its_base_model(tmp_path):
    _, _, folder = _gpt2_folder(tmp_path, "GPT2ForSequenceClassification", num_labels=3, pad_token_id=0)
    spec = tmp_path / "base.yaml"
    _fails([folder, "-o", spec], "architecture GPT2ForSequenceClassification", "GPT2LMHeadModel",
           "--architecture GPT2Model")
    r = _import(folder, spec, "--architecture", "GPT2Model")
    assert "note: the folder's score.* (1 tensors) is not part of GPT2Model: ignored" in r.output
    _load(spec)


def test_gpt2_older_checkpoints_with_mask_buffers_and_a_tied_copy(tmp_path):
    """Checkpoints of older transformers hold the causal-mask buffers (`attn.bias`, `attn.masked_bias`)
    and the tied lm_head.weight: the spec ignores them, naming why."""
    from safetensors.torch import load_file, save_file
    model, tok, folder = _gpt2_folder(tmp_path)
    tensors = load_file(str(folder / "model.safetensors"))
    for i in range(2):
        tensors[f"transformer.h.{i}.attn.bias"] = torch.tril(torch.ones(40, 40))[None, None]
        tensors[f"transformer.h.{i}.attn.masked_bias"] = torch.tensor(-1e4)
    tensors["lm_head.weight"] = tensors["transformer.wte.weight"].clone()
    save_file(tensors, str(folder / "model.safetensors"))
    spec = tmp_path / "old.yaml"
    _import(folder, spec)
    text = spec.read_text()
    assert "# tied to emb.word (the checkpoint holds a copy)" in text and "# the causal-mask buffer" in text
    ours = _load(spec)
    assert len(ours.weights_report.ignored) == 5
    tokens, mask = _gpt2_inputs(ours, tok, TEXTS)
    past, past_mask = _empty_past(model, len(tokens))
    with torch.no_grad():
        want = model(input_ids=tokens, attention_mask=mask, position_ids=_positions(mask)).logits
        got = ours(tokens=tokens, mask=mask, past=past, past_mask=past_mask)["logits"]
    assert _diff(got, want, mask.bool()) <= TOL


def test_gpt2_configs_the_decoder_cannot_reproduce_are_errors(tmp_path):
    _, _, folder = _gpt2_folder(tmp_path)
    config = json.loads((folder / "config.json").read_text())
    out = tmp_path / "spec.yaml"

    def with_config(**changes) -> Path:
        (folder / "config.json").write_text(json.dumps({**config, **changes}))
        return folder

    _fails([with_config(scale_attn_by_inverse_layer_idx=True), "-o", out], "scale_attn_by_inverse_layer_idx: true")
    _fails([with_config(reorder_and_upcast_attn=True), "-o", out], "reorder_and_upcast_attn: true")
    _fails([with_config(add_cross_attention=True), "-o", out], "add_cross_attention: true", "no cross-attention")
    _fails([with_config(scale_attn_weights=False), "-o", out], "scale_attn_weights: false")
    _fails([with_config(activation_function="silu"), "-o", out], "activation_function: silu",
           "gelu, relu, gelu_new")
    _fails([with_config(n_head=5), "-o", out], "n_head: 5", "does not divide")
    _fails([with_config(n_layer=0), "-o", out], "n_layer", "positive integer")
    _fails([with_config(), "-o", out, "--pair"], "--pair is for the encoder families")
    assert not out.exists()


# ---- T5 ----------------------------------------------------------------------------------------

T5_TOKENIZER = Path(__file__).resolve().parents[2] / "pipelines" / "data" / "t5" / "tokenizer.json"
T5 = dict(vocab_size=400, d_model=32, d_kv=8, d_ff=48, num_layers=2, num_decoder_layers=3, num_heads=4,
          relative_attention_num_buckets=8, relative_attention_max_distance=20, decoder_start_token_id=0,
          pad_token_id=0, eos_token_id=1)


def _t5_folder(tmp_path: Path, arch: str = "T5ForConditionalGeneration", **extra):
    """A folder with the small Unigram tokenizer.json of pipelines/data/t5, saved by T5TokenizerFast."""
    torch.manual_seed(0)
    model = _randomize(getattr(transformers, arch)(transformers.T5Config(**{**T5, **extra})))
    folder = tmp_path / arch.lower()
    model.save_pretrained(folder)
    tok = transformers.T5TokenizerFast(tokenizer_file=str(T5_TOKENIZER))
    tok.save_pretrained(folder)
    return model, tok, folder


def _t5_batch(ours, tok, b: int):
    """The source texts through the spec's tokenizer (the ids transformers' gives, right-padded) and
    decoder tokens from the start id, the last row padded after 3."""
    inputs = ours.preprocess(text=TEXTS[:b])
    enc = tok(TEXTS[:b], padding=True, return_tensors="pt")
    np.testing.assert_array_equal(inputs["tokens"], enc["input_ids"].numpy())
    np.testing.assert_array_equal(inputs["mask"], enc["attention_mask"].numpy())
    dec = torch.randint(2, 380, (b, 6), generator=torch.Generator().manual_seed(3))
    dec[:, 0] = 0
    dec_mask = torch.ones_like(dec)
    dec_mask[-1, 3:] = 0
    return enc["input_ids"], enc["attention_mask"], dec, dec_mask


@pytest.mark.parametrize("arch, extra", [
    ("T5ForConditionalGeneration", {}),
    ("T5ForConditionalGeneration", {"feed_forward_proj": "gated-gelu", "tie_word_embeddings": False}),
    ("T5Model", {"feed_forward_proj": "gated-gelu"}),
], ids=["v1.0", "v1.1-unscaled", "base"])
def test_t5_equals_transformers_with_past_and_parts(tmp_path, arch, extra):
    from composer.parts import part_model
    model, tok, folder = _t5_folder(tmp_path, arch, **extra)
    spec = tmp_path / "specs" / "t5.yaml"
    _import(folder, spec)
    ours = _load(spec)
    lm = arch == "T5ForConditionalGeneration"
    out = "logits" if lm else "hidden"
    assert set(ours.output_names) == {"encoder_states", out, "present"}
    tokens, mask, dec, dec_mask = _t5_batch(ours, tok, 3)
    c = model.config
    past, past_mask = torch.zeros(c.num_decoder_layers, 2, 3, c.num_heads, 0, c.d_kv), torch.zeros(3, 0).long()
    with torch.no_grad():
        ref = model(input_ids=tokens, attention_mask=mask, decoder_input_ids=dec, decoder_attention_mask=dec_mask)
        want = ref.logits if lm else ref.last_hidden_state
        got = ours(tokens=tokens, mask=mask, decoder_tokens=dec, decoder_mask=dec_mask, past=past, past_mask=past_mask)
        diffs = {"encoder": _diff(got["encoder_states"], ref.encoder_last_hidden_state, mask.bool()),
                 out: _diff(got[out], want, dec_mask.bool())}
        # the parts: the encoder once, the decoder step by step with its cache
        encoder, decoder = part_model(ours, "encoder"), part_model(ours, "decoder")
        assert "tokens" not in decoder.input_names            # the step reads the shared table, not the source ids
        states = encoder(tokens=tokens, mask=mask)["encoder_states"]
        steps = []
        for start, stop in ((0, 3), (3, 4), (4, 5), (5, 6)):
            step = decoder(decoder_tokens=dec[:, start:stop], decoder_mask=dec_mask[:, start:stop], past=past,
                           past_mask=past_mask, encoder_states=states, mask=mask)
            steps.append(step[out])
            past, past_mask = step["present"], dec_mask[:, :stop]
    diffs["cached"] = _diff(torch.cat(steps, dim=1), want, dec_mask.bool())
    assert all(d <= TOL for d in diffs.values()), diffs
    if "tie_word_embeddings" in extra:       # transformers 5 ties T5 always; tie_word_embeddings only unscales
        assert "scale:" not in spec.read_text() and "table: shared" in spec.read_text()


def test_t5_untied_head_of_older_checkpoints(tmp_path):
    """T5 v1.1 as transformers 4 saved it: `tie_word_embeddings: false` and an lm_head.weight of its own."""
    from safetensors.torch import load_file, save_file
    model, tok, folder = _t5_folder(tmp_path, feed_forward_proj="gated-gelu")
    config = json.loads((folder / "config.json").read_text())
    config.pop("scale_decoder_outputs", None)
    (folder / "config.json").write_text(json.dumps({**config, "tie_word_embeddings": False}))
    tensors = load_file(str(folder / "model.safetensors"))
    own = torch.randn(400, 32, generator=torch.Generator().manual_seed(4)) * 0.1
    save_file({**tensors, "lm_head.weight": own}, str(folder / "model.safetensors"))
    spec = tmp_path / "t5.yaml"
    _import(folder, spec)
    assert "vocab_size: 400" in spec.read_text().split("lm_head:")[1]
    ours = _load(spec)
    tokens, mask, dec, dec_mask = _t5_batch(ours, tok, 2)
    with torch.no_grad():
        hidden = model(input_ids=tokens, attention_mask=mask, decoder_input_ids=dec, decoder_attention_mask=dec_mask,
                       output_hidden_states=True).decoder_hidden_states[-1]
        want = hidden @ own.T                                   # no d_model ** -0.5: not tied
        got = ours(tokens=tokens, mask=mask, decoder_tokens=dec, decoder_mask=dec_mask,
                   past=torch.zeros(3, 2, 2, 4, 0, 8), past_mask=torch.zeros(2, 0).long())["logits"]
    assert _diff(got, want, dec_mask.bool()) <= TOL


def test_t5_encoder_model_weights_dir_and_errors(tmp_path):
    model, tok, folder = _t5_folder(tmp_path)
    spec = tmp_path / "enc.yaml"
    r = _import(folder, spec, "--architecture", "T5EncoderModel")
    assert "outputs hidden;" in r.output and "decoder.* (" in r.output
    ours = _load(spec)
    tokens, mask, _, _ = _t5_batch(ours, tok, 3)
    with torch.no_grad():
        want = model.encoder(input_ids=tokens, attention_mask=mask).last_hidden_state
        got = ours(tokens=tokens, mask=mask)["hidden"]
    assert _diff(got, want, mask.bool()) <= TOL
    full = tmp_path / "t5.yaml"
    _import(folder, full)
    r = runner.invoke(app, ["weights", str(full), str(folder)])          # the folder again: the family's rules
    assert r.exit_code == 0 and "loaded 60 tensors" in r.output and "t5 rule" in r.output, r.output
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "feed_forward_proj": "gated-silu"}))
    _fails([folder, "-o", tmp_path / "x.yaml"], "feed_forward_proj: gated-silu", "relu, gated-gelu")
    (folder / "config.json").write_text(json.dumps({**config, "is_decoder": True}))
    _fails([folder, "-o", tmp_path / "x.yaml"], "is_decoder: true")


# ---- XLNet -------------------------------------------------------------------------------------

CORPUS = """\
A man is eating food.
A man is eating a piece of bread.
The girl is carrying a baby.
A man is riding a horse.
A woman is playing violin.
Two men pushed carts through the woods.
A man is riding a white horse on an enclosed ground.
A monkey is playing drums.
"""


@pytest.fixture(scope="module")
def xlnet_tokenizer(tmp_path_factory):
    """XLNet's fast tokenizer on a Unigram vocabulary trained here (`A <sep> <cls>`, pads `<pad>`)."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    folder = tmp_path_factory.mktemp("xlnet_tok")
    (folder / "corpus.txt").write_text(CORPUS, encoding="utf-8")
    uni = Tokenizer(models.Unigram())
    uni.pre_tokenizer = pre_tokenizers.Metaspace()
    uni.train([str(folder / "corpus.txt")], trainers.UnigramTrainer(
        vocab_size=120, unk_token="<unk>", show_progress=False,
        special_tokens=["<unk>", "<s>", "</s>", "<cls>", "<sep>", "<pad>", "<mask>"]))
    uni.save(str(folder / "unigram.json"))
    scores = [tuple(v) for v in json.loads((folder / "unigram.json").read_text())["model"]["vocab"]]
    return transformers.XLNetTokenizerFast(vocab=scores)


@pytest.mark.parametrize("arch", ["XLNetModel", "XLNetLMHeadModel"])
def test_xlnet_equals_transformers(tmp_path, xlnet_tokenizer, arch):
    tok = xlnet_tokenizer
    torch.manual_seed(0)
    config = transformers.XLNetConfig(vocab_size=len(tok) + 3, d_model=32, n_layer=2, n_head=4, d_inner=37,
                                      ff_activation="gelu_new" if arch == "XLNetModel" else "gelu",
                                      pad_token_id=tok.pad_token_id)
    model = _randomize(getattr(transformers, arch)(config))
    folder = tmp_path / arch.lower()
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    spec = tmp_path / "specs" / "xlnet.yaml"
    _import(folder, spec)
    ours = _load(spec)
    inputs = ours.preprocess(text=TEXTS)
    for row, ids in zip(inputs["tokens"], tok(TEXTS)["input_ids"]):     # transformers' ids, right-padded
        assert row[:len(ids)].tolist() == ids
    tokens, mask = torch.from_numpy(inputs["tokens"]), torch.from_numpy(inputs["mask"])
    assert int(mask.sum(1).min()) < tokens.shape[1]
    with torch.no_grad():
        ref = model(input_ids=tokens, attention_mask=mask, output_hidden_states=True)
        got = ours(tokens=tokens, mask=mask)
    want = {"hidden": ref.last_hidden_state if arch == "XLNetModel" else ref.hidden_states[-1]}
    if arch == "XLNetLMHeadModel":
        want["logits"] = ref.logits
    assert set(got) == set(want)
    diffs = {k: _diff(got[k], want[k], mask.bool()) for k in want}
    assert all(d <= TOL for d in diffs.values()), diffs


def test_xlnet_configs_the_encoder_cannot_reproduce_are_errors(tmp_path, xlnet_tokenizer):
    model = transformers.XLNetModel(transformers.XLNetConfig(vocab_size=80, d_model=32, n_layer=1, n_head=4,
                                                             d_inner=37))
    folder = tmp_path / "xlnet"
    model.save_pretrained(folder)
    xlnet_tokenizer.save_pretrained(folder)
    config = json.loads((folder / "config.json").read_text())
    out = tmp_path / "x.yaml"
    for changes, message in (({"attn_type": "uni"}, "attn_type: uni"), ({"bi_data": True}, "bi_data: true"),
                             ({"same_length": True}, "same_length: true"),
                             ({"ff_activation": "silu"}, "ff_activation: silu")):
        (folder / "config.json").write_text(json.dumps({**config, **changes}))
        _fails([folder, "-o", out], message, "is not supported")
    (folder / "config.json").write_text(json.dumps({**config, "architectures": ["XLNetForSequenceClassification"]}))
    _fails([folder, "-o", out], "architecture XLNetForSequenceClassification", "--architecture XLNetModel")
    assert not out.exists()

"""`composer generate`: greedy and sampled tokens equal transformers' GPT-2 `generate` (one prompt, a
left-padded batch, stop tokens), the onnxruntime core (its P = 0 prompt pass included) gives the same
tokens as torch, the top-k/top-p filters equal transformers' warpers, each bad input is a one-line
error, and the CLI streams the text and reports tokens/s."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

import composer
from composer.cli import app
from composer.errors import SpecError
from composer.generate import (GenerateError, OnnxCore, Sampling, TextGenerator, find_decoder,
                               process_logits, sampling_from, top_k_filter, top_p_filter)
from composer.hf.decoders import GPT2_IGNORE, GPT2_RENAME, GPT2_TRANSPOSE
from tests.conftest import ROOT

transformers = pytest.importorskip("transformers")

L, H, D, V, HD, CTX = 2, 4, 32, 600, 8, 64
DATA = ROOT / "pipelines" / "data" / "gpt2"       # a byte-level BPE of 600 ids, <|endoftext|> = 0
PROMPTS = ["Once upon a time there was a", "Hi"]
runner = CliRunner()


def spec_text(vocab_size: int = V, weights: bool = True, cache: bool = True) -> str:
    text = """\
pipeline: tiny_gpt2
dims:
  B: {sizes: [1, 2]}
  T: {sizes: [3, 5]}
  P: {sizes: [2, 4]}
inputs:
  text: {kind: text, shape: [B]}
"""
    if cache:
        text += f"""\
  past: {{kind: kv_cache, shape: [{L}, 2, B, {H}, P, {HD}]}}
  past_mask: {{kind: mask, shape: [B, P], dtype: int64}}
"""
    text += f"""\
blocks:
  tok: {{block: tokenizer, in: text, vocab: vocab.json, merges: merges.txt, max_length: 128}}
  emb:
    block: embedding
    in: {{tokens: tok.tokens, mask: tok.mask{', past_mask: past_mask' if cache else ''}}}
    vocab_size: {vocab_size}
    dim: {D}
    max_positions: {CTX}
    position_ids: from_mask
    norm: false
  decoder:
    block: transformer_decoder
    in: {{x: emb.sequence, mask: tok.mask{', past: past, past_mask: past_mask' if cache else ''}}}
    num_layers: {L}
    num_heads: {H}
    mlp_dim: {4 * D}
  lm_head: {{block: lm_head, in: {{x: decoder.sequence, table: emb.table}}}}
outputs:
  logits: lm_head
"""
    if cache:
        text += "  present: decoder.present\n"
    if weights:
        text += (f"weights:\n  file: gpt2.safetensors\n  rename: {json.dumps([list(r) for r in GPT2_RENAME])}\n"
                 f"  ignore: {json.dumps(list(GPT2_IGNORE))}\n  transpose: {json.dumps(list(GPT2_TRANSPOSE))}\n")
    return text


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One torch thread: a tiny model decodes faster alone than beside other work on a shared CPU."""
    was = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(was)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """A tiny transformers GPT-2 (random weights) saved where the spec's `weights:` reads it."""
    from safetensors.torch import save_file
    root = tmp_path_factory.mktemp("gpt2")
    for name in ("vocab.json", "merges.txt"):
        shutil.copy(DATA / name, root / name)
    torch.manual_seed(0)
    cfg = transformers.GPT2Config(vocab_size=V, n_positions=CTX, n_embd=D, n_layer=L, n_head=H, bos_token_id=0,
                                  eos_token_id=0, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    ref = transformers.GPT2LMHeadModel(cfg).eval()
    save_file({k: v.clone().contiguous() for k, v in ref.state_dict().items()}, str(root / "gpt2.safetensors"))
    (root / "tiny.yaml").write_text(spec_text())
    return root, ref


@pytest.fixture(scope="module")
def pipe(folder):
    return composer.load(folder[0] / "tiny.yaml")


@pytest.fixture(scope="module")
def ref(folder):
    return folder[1]


@pytest.fixture(scope="module")
def gen(pipe):
    return TextGenerator(pipe)


@pytest.fixture(scope="module")
def onnx_gen(pipe):
    g = TextGenerator(pipe, backend="onnx", device="cpu")
    g.core()                                    # exported (verified) to a temporary file once
    yield g
    g.close()


def reference(ref, gen, prompts, n, **kw):
    tokens, mask = gen.encode(prompts)
    with torch.no_grad():
        return ref.generate(tokens, attention_mask=mask, max_new_tokens=n, pad_token_id=0, **kw).numpy()


# ---- the spec and the loop ---------------------------------------------------------------------


def test_roles_are_found_by_type(pipe):
    r = find_decoder(pipe.graph)
    assert (r.text, r.tokenizer, r.tokens, r.mask, r.past, r.past_mask, r.logits, r.present) == \
        ("text", "tok", "tokens", "mask", "past", "past_mask", "logits", "present")
    assert r.cache_shape == (L, 2, H, HD) and r.vocab == V
    assert (r.context, r.context_from) == (CTX, "`emb.max_positions`")


def test_prompts_are_left_padded_with_eos(gen):
    tokens, mask = gen.encode(PROMPTS)
    n = int(mask[1].sum())
    assert mask[0].all() and not mask[1, :-n].any() and mask[1, -n:].all()
    assert (tokens[1, :-n] == 0).all()              # <|endoftext|> pads, as transformers' GPT-2 takes them


def test_greedy_equals_transformers(gen, ref):
    got = gen(PROMPTS[0], max_new_tokens=12)
    want = reference(ref, gen, PROMPTS[:1], 12, do_sample=False)
    assert np.array_equal(got.sequences, want)
    assert got.ids[0] == want[0, got.prompt_lengths[0]:].tolist()
    assert got.texts[0] == gen.tok.decode(got.ids[0])


def test_greedy_left_padded_batch_equals_transformers(gen, ref):
    got = gen(PROMPTS, max_new_tokens=10)
    want = reference(ref, gen, PROMPTS, 10, do_sample=False)
    assert got.prompt_lengths[0] != got.prompt_lengths[1]
    assert np.array_equal(got.sequences, want)


def test_stop_token_ends_a_row_as_transformers_eos(gen, ref):
    first = gen(PROMPTS, max_new_tokens=6)
    stop_id = first.ids[0][2]                       # the third token of the first row
    stop = gen.tok.id_to_token(stop_id)
    got = gen(PROMPTS, max_new_tokens=10, stop=[stop])
    want = reference(ref, gen, PROMPTS, 10, do_sample=False, eos_token_id=stop_id)
    assert np.array_equal(got.sequences, want)
    assert got.stopped[0] and got.ids[0] == first.ids[0][:first.ids[0].index(stop_id) + 1]
    assert stop not in got.texts[0]                 # the stop token ends the text, it is not printed


def test_seeded_sampling_equals_transformers_and_repeats(gen, ref):
    s = Sampling(temperature=0.7, top_k=40, top_p=0.9, seed=5)
    a = gen(PROMPTS, max_new_tokens=10, sampling=s)
    b = gen(PROMPTS, max_new_tokens=10, sampling=s)
    assert np.array_equal(a.sequences, b.sequences)
    torch.manual_seed(5)                            # transformers samples from the global generator
    want = reference(ref, gen, PROMPTS, 10, do_sample=True, temperature=0.7, top_k=40, top_p=0.9)
    assert np.array_equal(a.sequences, want)
    flat = [gen(PROMPTS[0], max_new_tokens=10, sampling=Sampling(temperature=2.0, top_k=0, seed=k)).ids[0]
            for k in (1, 2)]
    assert flat[0] != flat[1]


def test_filters_equal_transformers_warpers():
    from transformers.generation.logits_process import (LogitsProcessorList, TemperatureLogitsWarper,
                                                        TopKLogitsWarper, TopPLogitsWarper)
    scores = torch.randn(4, V, generator=torch.Generator().manual_seed(0)) * 3
    ids = torch.zeros(4, 1, dtype=torch.int64)
    for k in (1, 7, 50, V + 5):
        assert torch.equal(top_k_filter(scores, k), TopKLogitsWarper(k)(ids, scores.clone()))
    for p in (0.05, 0.5, 0.9, 0.999, 1.0):
        assert torch.equal(top_p_filter(scores, p), TopPLogitsWarper(p)(ids, scores.clone()))
    chain = LogitsProcessorList([TemperatureLogitsWarper(0.6), TopKLogitsWarper(20), TopPLogitsWarper(0.8)])
    assert torch.equal(process_logits(scores, Sampling(temperature=0.6, top_k=20, top_p=0.8)), chain(ids, scores))


# ---- onnxruntime ------------------------------------------------------------------------------------


def test_onnx_prompt_pass_with_an_empty_past(onnx_gen, gen):
    """P = 0 runs in onnxruntime: the prompt pass's logits and present equal torch's."""
    core = onnx_gen.core()
    assert isinstance(core, OnnxCore) and core.session.device == "cpu"
    tokens, mask = gen.encode(PROMPTS)
    feeds = {"tokens": tokens, "mask": mask, "past": torch.zeros(L, 2, 2, H, 0, HD),
             "past_mask": torch.zeros(2, 0, dtype=torch.int64)}
    got = core(feeds, ("logits", "present"))
    want = gen.core()(feeds, ("logits", "present"))
    real = mask.bool()
    torch.testing.assert_close(got["logits"][real], want["logits"][real], atol=1e-4, rtol=1e-4)
    assert got["present"].shape == (L, 2, 2, H, tokens.shape[1], HD)


def test_onnx_greedy_tokens_equal_torch(onnx_gen, gen, ref):
    for prompts in (PROMPTS[:1], PROMPTS):
        got = onnx_gen(prompts, max_new_tokens=10)
        assert np.array_equal(got.sequences, gen(prompts, max_new_tokens=10).sequences)
    assert np.array_equal(got.sequences, reference(ref, gen, PROMPTS, 10, do_sample=False))
    s = Sampling(temperature=0.9, seed=3)
    assert onnx_gen(PROMPTS, max_new_tokens=8, sampling=s).ids == gen(PROMPTS, max_new_tokens=8, sampling=s).ids


# ---- bad input ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("kw, message", [
    ({"max_new_tokens": 0}, "--max-new-tokens must be 1 or more, not 0"),
    ({"max_new_tokens": -3}, "--max-new-tokens must be 1 or more, not -3"),
    ({"sampling": Sampling(top_p=0.0)}, "--top-p must be in (0, 1], not 0"),
    ({"sampling": Sampling(top_p=1.5)}, "--top-p must be in (0, 1], not 1.5"),
    ({"sampling": Sampling(temperature=0.0)}, "--temperature must be above 0, not 0"),
    ({"sampling": Sampling(temperature=-1.0)}, "--temperature must be above 0, not -1"),
    ({"sampling": Sampling(top_k=-1)}, "--top-k must be 1 or more (0 turns it off), not -1"),
    ({"stop": ["<|nope|>"]}, "--stop '<|nope|>' is not a token of the vocabulary of `tok`"),
    ({"stop": ["Once upon"]}, "--stop 'Once upon' is not a token of the vocabulary of `tok` (it makes"),
    ({"max_new_tokens": 60}, "the prompt is 15 tokens and --max-new-tokens 60 makes 75, beyond the 64 positions "
                             "of the model (`emb.max_positions`); use --max-new-tokens 49 or less"),
])
def test_bad_options(gen, kw, message):
    with pytest.raises(GenerateError) as exc:
        gen(PROMPTS[0], **kw)
    assert str(exc.value).startswith(message) and "\n" not in str(exc.value)
    assert exc.value.exit_code == 2


@pytest.mark.parametrize("prompt", ["", "   ", ["A", ""]])
def test_empty_prompt(gen, prompt):
    with pytest.raises(GenerateError, match="empty: give the text to continue"):
        gen(prompt)


def test_greedy_beside_sampling_options():
    with pytest.raises(GenerateError, match="--greedy takes the argmax; --temperature, --top-p apply to sampling"):
        sampling_from(True, 0.8, None, 0.9)
    assert sampling_from().greedy and not sampling_from(False).greedy and sampling_from(False).top_k == 50
    assert sampling_from(None, 0.8) == Sampling(temperature=0.8)


def test_not_a_decoder(folder):
    (folder[0] / "nocache.yaml").write_text(spec_text(weights=False, cache=False))
    with pytest.raises(GenerateError) as exc:
        TextGenerator(composer.load(folder[0] / "nocache.yaml"))
    assert str(exc.value) == (
        "`tiny_gpt2` is not a decoder spec that generate can run: it lacks an input of kind kv_cache "
        "[L, 2, B, H, P, hd] (the past keys and values); an output of kind kv_cache (the present, "
        "[L, 2, B, H, P+T, hd]) (pipelines/gpt2.yaml is one)")


def test_vocabulary_larger_than_the_table_is_a_located_spec_error(folder):
    path = folder[0] / "small_table.yaml"
    path.write_text(spec_text(vocab_size=100, weights=False))
    with pytest.raises(SpecError) as exc:
        composer.load(path)
    (d,) = exc.value.errors
    assert d.code == "E302" and "gets ids up to 599 from its tokenizer, but the table has 100 rows" in d.message
    assert d.loc.line == 15 and "blocks.emb.vocab_size" in d.format()


# ---- the command ---------------------------------------------------------------------------------


def invoke(*args):
    return runner.invoke(app, ["generate", *map(str, args)])


def test_cli_streams_text_and_reports_speed(folder, gen, monkeypatch):
    import composer.cli.generate as cli
    pieces = []
    write = cli._write
    monkeypatch.setattr(cli, "_write", lambda text: (pieces.append(text), write(text)))
    res = invoke(folder[0] / "tiny.yaml", "--prompt", PROMPTS[0], "-n", 12, "--device", "cpu")
    assert res.exit_code == 0, res.output
    want = gen(PROMPTS[0], max_new_tokens=12)
    assert res.stdout == PROMPTS[0] + want.texts[0] + "\n"
    assert len(pieces) > 3                          # the prompt, then the text as tokens come
    assert "12 tokens in " in res.stderr and "tokens/s (first token " in res.stderr and "torch on cpu" in res.stderr


def test_cli_batch_onnx_and_sampling(folder, onnx_gen, gen):
    exported = onnx_gen.core().session.path
    res = invoke(folder[0] / "tiny.yaml", "-p", PROMPTS[0], "-p", PROMPTS[1], "-n", 6, "--onnx", exported,
                 "--device", "cpu")
    assert res.exit_code == 0, res.output
    want = gen(PROMPTS, max_new_tokens=6)
    assert res.stdout == "".join(f"[{i}] {p}{t}\n" for i, (p, t) in enumerate(zip(PROMPTS, want.texts)))
    assert "onnxruntime on cpu" in res.stderr and "over 2 prompts" in res.stderr
    args = [folder[0] / "tiny.yaml", "-p", "Hi", "-n", 6, "--temperature", 1.5, "--top-k", 0, "--seed"]
    runs = [invoke(*args, s).stdout for s in (4, 4, 9)]
    assert runs[0] == runs[1] != runs[2]


@pytest.mark.parametrize("args, message", [
    (["-n", "0"], "error: --max-new-tokens must be 1 or more, not 0"),
    (["--top-p", "1.2"], "error: --top-p must be in (0, 1], not 1.2"),
    (["--temperature", "0"], "error: --temperature must be above 0, not 0"),
    (["--top-k", "-2"], "error: --top-k must be 1 or more (0 turns it off), not -2"),
    (["--greedy", "--top-k", "5"], "error: --greedy takes the argmax; --top-k applies to sampling"),
    (["--stop", "<|end|>"], "error: --stop '<|end|>' is not a token of the vocabulary of `tok` (it makes 5 "
                            "tokens); did you mean '<|endoftext|>'?"),
    (["-n", "100"], "error: the prompt is 4 tokens and --max-new-tokens 100 makes 104, beyond the 64 positions"),
    (["--backend", "tpu"], "error: unknown backend 'tpu': choose torch or onnx"),
])
def test_cli_usage_errors_exit_2(folder, args, message):
    res = invoke(folder[0] / "tiny.yaml", "-p", "Hi there", *args)
    assert res.exit_code == 2 and res.stderr.startswith(message), res.output
    assert len(res.stderr.strip().splitlines()) == 1 and "Traceback" not in res.output


def test_cli_spec_errors_exit_2(folder):
    res = invoke(folder[0] / "tiny.yaml", "-p", " ")
    assert res.exit_code == 2 and res.stderr == "error: --prompt is empty: give the text to continue\n"
    res = invoke(folder[0] / "tiny.yaml")
    assert res.exit_code == 2 and "give a prompt" in res.stderr
    (folder[0] / "nocache.yaml").write_text(spec_text(weights=False, cache=False))
    res = invoke(folder[0] / "nocache.yaml", "-p", "Hi")
    assert res.exit_code == 2 and "is not a decoder spec that generate can run" in res.stderr
    (folder[0] / "small_table.yaml").write_text(spec_text(vocab_size=100, weights=False))
    res = invoke(folder[0] / "small_table.yaml", "-p", "Hi")
    assert res.exit_code == 2 and "small_table.yaml:15:17:" in res.stderr and "error[E302]" in res.stderr
    res = invoke(folder[0] / "model.onnx", "-p", "Hi")
    assert res.exit_code == 2 and "generate needs the spec" in res.stderr

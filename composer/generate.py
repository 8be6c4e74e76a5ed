"""Text generation for decoder specs, with a KV cache, on the torch or the onnxruntime core.

    gen = TextGenerator(composer.load("pipelines/gpt2.yaml"))            # or backend="onnx"
    result = gen(["Once upon a time"], max_new_tokens=40)                 # greedy
    result = gen("Once upon a time", max_new_tokens=40, sampling=Sampling(temperature=0.8, top_p=0.95))
    composer.generate(pipe, "Once upon a time")                           # the same, in one call

A decoder spec is recognised by its types, never by its names (pipelines/gpt2.yaml is the
model): a `text` input tokenized by a pre-processing block whose `tokens` (and `mask`) the core
reads; a `kv_cache` input `past` [L, 2, B, H, P, hd] with a `mask` input [B, P] beside it (which
cached steps are real); a `logits` output [B, T, V] and a `kv_cache` output (the present,
[L, 2, B, H, P + T, hd]). `find_decoder` says what a spec lacks.

The loop is transformers' `generate`: the prompts are left-padded (mask 0 on the pads), one
prompt pass runs with an empty past (P = 0), then each step feeds only the new token with the
previous `present` as `past` and the grown mask as `past_mask`. The next token is the argmax
(greedy), or a sample after transformers' logits processors in transformers' order:
temperature, top-k, top-p. A row that meets a stop token is finished; it gets the pad id from
then on, and generation ends when every row has finished or after `max_new_tokens`.

How a prompt pass and a step run is a scheme: the class `DecoderOnly` here. An encoder-decoder (T5)
fits the same loop as a second scheme whose `start` runs the encoder once on the prompt and the
decoder on its start token, and whose `step` runs the decoder alone; `find_scheme` is where
its recogniser goes.
"""

from __future__ import annotations

import difflib
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Optional, Protocol, Sequence, Union

import numpy as np
import torch

from .dims import format_dim, is_static
from .errors import ComposerError
from .inputs import TORCH_DTYPES
from .stages import PreStage, core_inputs

EOS_TOKENS = ("<|endoftext|>", "</s>", "<eos>", "[EOS]")
PAD_TOKENS = ("[PAD]", "<pad>")
BACKENDS = ("torch", "onnx")


class GenerateError(ComposerError):
    """A generation request that cannot run as asked: a bad option, a prompt that does not fit,
    a spec that is not a decoder (exit code 2, a usage error)."""

    exit_code = 2


# ---- what the spec is -------------------------------------------------------------------------


@dataclass(frozen=True)
class DecoderRoles:
    """Where a decoder spec's generation values are: core input and output names, found by type."""

    pipeline: str
    text: str                       # the spec's text input
    tokenizer: str                  # the pre-processing block that tokenizes it
    tokens: str                     # core inputs: the token ids [B, T] ...
    mask: Optional[str]             # ... their mask [B, T] (1 = real)
    token_types: Optional[str]      # ... segment ids, fed as zeros
    past: str                       # the cache of P earlier steps [L, 2, B, H, P, hd]
    past_mask: str                  # which cached steps are real [B, P]
    logits: str                     # outputs: [B, T, V] ...
    present: str                    # ... and the cache with this call's steps appended
    cache_shape: tuple[int, int, int, int]   # (L, 2, H, hd)
    cache_dtype: str
    mask_dtype: str
    past_mask_dtype: str
    vocab: int                      # V, the logits' size
    context: Optional[int] = None   # positions the model numbers (None: no position table)
    context_from: str = ""          # which param says so: `emb.max_positions`


def _spec_input_of(graph, ci) -> bool:
    return ci.port is None and ci.field is None and ci.node in graph.resolved.inputs


def find_decoder(graph) -> DecoderRoles:
    """The decoder roles of a typed graph (`pipe.graph`); a `GenerateError` lists what is missing."""
    r = graph.resolved
    name = r.name
    cores = core_inputs(graph)
    missing: list[str] = []

    texts = [n for n, i in r.inputs.items() if i.type is not None and i.type.kind == "text"]
    tokenizer = tokens = mask = token_types = None
    text = None
    for t in texts:
        for node in graph.dag.successors(t):
            made = {ci.port: ci for ci in cores.values() if ci.node == node and ci.port is not None}
            if "tokens" in made and made["tokens"].type is not None and made["tokens"].type.kind == "tokens":
                text, tokenizer, tokens = t, node, made["tokens"]
                mask = made.get("mask")
                token_types = made.get("token_types")
                break
        if tokenizer is not None:
            break
    if not texts:
        missing.append("a `text` input (kind text, [B] strings) for the prompt")
    elif tokenizer is None:
        missing.append(f"a tokenizer on the text input `{texts[0]}` whose `tokens` the model reads")

    pasts = [ci for ci in cores.values() if _spec_input_of(graph, ci) and ci.type is not None
             and ci.type.kind == "kv_cache" and ci.type.rank == 6]
    past = pasts[0] if len(pasts) == 1 else None
    if not pasts:
        missing.append("an input of kind kv_cache [L, 2, B, H, P, hd] (the past keys and values)")
    elif len(pasts) > 1:
        missing.append(f"one kv_cache input, not {len(pasts)} ({', '.join(f'`{c.name}`' for c in pasts)})")
    past_mask = None
    if past is not None:
        b, p = past.type.shape[2], past.type.shape[4]
        masks = [ci for ci in cores.values() if _spec_input_of(graph, ci) and ci.type is not None
                 and ci.type.kind == "mask" and ci.type.rank == 2 and ci.type.shape[1] == p
                 and ci.type.shape[0] == b]
        if masks:
            past_mask = masks[0]
        else:
            missing.append(f"an input of kind mask [{format_dim(b)}, {format_dim(p)}] beside `{past.name}` "
                           "(which cached steps are real)")

    logits = present = None
    for out, ref in r.outputs.items():
        t = graph.output_type(ref)
        if t is None:
            continue
        if t.kind == "logits" and t.rank == 3 and logits is None:
            logits = (out, t)
        elif t.kind == "kv_cache" and t.rank == 6 and present is None:
            present = (out, t)
    if logits is None:
        missing.append("an output of kind logits [B, T, V]")
    if present is None:
        missing.append("an output of kind kv_cache (the present, [L, 2, B, H, P+T, hd])")
    if missing:
        raise GenerateError(f"`{name}` is not a decoder spec that generate can run: it lacks "
                            + "; ".join(missing) + " (pipelines/gpt2.yaml is one)")

    problems = []
    t_dim = tokens.type.shape[1] if tokens.type.shape is not None and len(tokens.type.shape) == 2 else None
    if t_dim is None or is_static(t_dim):
        problems.append(f"the tokens of `{tokenizer}` have a fixed length ({t_dim}); each step feeds one token, "
                        "so the length must be a dim (set `padding: longest` on the tokenizer)")
    l_, two, _, h, p, hd = past.type.shape
    if not all(isinstance(d, int) for d in (l_, two, h, hd)) or two != 2:
        problems.append(f"the cache `{past.name}` {past.type} needs fixed L, 2, H and hd")
    if is_static(p):
        problems.append(f"the cache `{past.name}` has a fixed length P = {p}; it grows by one each step, so it "
                        "must be a dim")
    v = logits[1].shape[2]
    if not isinstance(v, int):
        problems.append(f"the logits `{logits[0]}` have no fixed vocabulary size ({format_dim(v)})")
    if problems:
        raise GenerateError(f"`{name}` cannot generate: " + "; ".join(problems))
    context, where = _context(graph, tokenizer)
    return DecoderRoles(
        pipeline=name, text=text, tokenizer=tokenizer, tokens=tokens.name, mask=mask.name if mask else None,
        token_types=token_types.name if token_types else None, past=past.name, past_mask=past_mask.name,
        logits=logits[0], present=present[0], cache_shape=(l_, 2, h, hd), cache_dtype=past.type.dtype,
        mask_dtype=mask.type.dtype if mask else "int64", past_mask_dtype=past_mask.type.dtype, vocab=v,
        context=context, context_from=where)


def _context(graph, tokenizer: str) -> tuple[Optional[int], str]:
    """How many positions the blocks reading the token ids number: the smallest position table
    among them (an embedding's `max_positions`, less RoBERTa's padding offset), or None."""
    best: tuple[Optional[int], str] = (None, "")
    for _, dst, data in graph.dag.out_edges(tokenizer, data=True):
        if graph.port_of(data["ref"]) != "tokens":
            continue
        block = graph.nodes[dst].block
        limit = getattr(block, "max_positions", None)
        if not isinstance(limit, int) or getattr(block, "positions", "learned") == "none":
            continue
        if getattr(block, "position_ids", None) == "padding_offset" and block.padding_idx is not None:
            limit -= block.padding_idx + 1
        if best[0] is None or limit < best[0]:
            best = (limit, f"`{dst}.max_positions`")
    return best


@dataclass(frozen=True)
class Seq2SeqRoles:
    """An encoder-decoder spec's generation values (T5): the prompt's tokenizer and the encoder part
    it feeds, the decoder part that runs once per token, and where each of its `given` inputs
    comes from."""

    pipeline: str
    text: str
    tokenizer: str
    tokens: str                     # the encoder's core inputs: token ids [B, S] ...
    mask: Optional[str]             # ... and their mask
    token_types: Optional[str]
    encoder: str                    # the part run once on the prompt
    decoder: str                    # the part run once per token
    encoder_inputs: tuple[str, ...]
    encoder_outputs: tuple[str, ...]
    given: tuple[tuple[str, str], ...]   # decoder input -> the encoder output or encoder input it is
    decoder_tokens: str
    decoder_mask: Optional[str]
    past: str
    past_mask: str
    logits: str
    present: str
    cache_shape: tuple[int, int, int, int]
    cache_dtype: str
    past_mask_dtype: str
    vocab: int
    context: Optional[int] = None
    context_from: str = ""


def find_seq2seq(graph) -> Optional[Seq2SeqRoles]:
    """The roles of an encoder-decoder spec: one with `parts:`, one part of which computes logits and
    a kv_cache from the other parts' outputs (`given`); None for any other spec."""
    from .parts import part_pipeline
    from .pipeline import Pipeline
    r = graph.resolved
    step = None
    for name, part in r.parts.items():
        kinds = {(graph.output_type(r.outputs[o]).kind, graph.output_type(r.outputs[o]).rank) for o in part.outputs}
        if ("logits", 3) in kinds and ("kv_cache", 6) in kinds and part.given:
            step = part
            break
    if step is None:
        return None
    pipe = Pipeline(graph)
    dec = part_pipeline(pipe, step.name)
    given, encoder = [], None
    for gname, ref in step.given.items():
        source = None
        for other in r.parts.values():
            if other.name == step.name:
                continue
            for o in other.outputs:
                out = r.outputs[o]
                if out.node == ref.node and (out.port or "out") == (ref.port or "out") and out.field == ref.field:
                    source, encoder = o, other
        if source is None:                        # a pre-processing output (the prompt's mask)
            for ci in core_inputs(graph).values():
                if ci.node == ref.node and ci.port == graph.port_of(ref):
                    source = ci.name
        if source is None:
            raise GenerateError(f"`{r.name}`: the given input `{gname}` of part `{step.name}` is neither another "
                                "part's output nor a pre-processed input")
        given.append((gname, source))
    if encoder is None:
        raise GenerateError(f"`{r.name}`: part `{step.name}` is given no other part's output")
    enc = part_pipeline(pipe, encoder.name)
    texts = [n for n, i in r.inputs.items() if i.type is not None and i.type.kind == "text"]
    tok_ci = [ci for ci in core_inputs(enc.graph).values() if ci.port == "tokens"]
    if not texts or not tok_ci:
        raise GenerateError(f"`{r.name}`: the encoder part `{encoder.name}` reads no tokenized text input")
    tokenizer = tok_ci[0].node
    made = {ci.port: ci.name for ci in core_inputs(enc.graph).values() if ci.node == tokenizer}
    dcores = core_inputs(dec.graph)
    named = {g for g, _ in given}
    tokens = [ci for ci in dcores.values() if ci.name not in named and ci.type is not None and ci.type.kind == "tokens"]
    pasts = [ci for ci in dcores.values() if ci.type is not None and ci.type.kind == "kv_cache" and ci.type.rank == 6]
    if len(tokens) != 1 or len(pasts) != 1:
        raise GenerateError(f"`{r.name}`: part `{step.name}` needs one input of kind tokens (the target ids) and "
                            "one kv_cache input")
    past = pasts[0]
    b, p = past.type.shape[2], past.type.shape[4]
    masks = [ci for ci in dcores.values() if ci.name not in named and ci.type is not None and ci.type.kind == "mask"
             and ci.type.rank == 2 and ci.type.shape[0] == b]
    past_mask = next((ci for ci in masks if ci.type.shape[1] == p), None)
    dmask = next((ci for ci in masks if ci.type.shape[1] == tokens[0].type.shape[1]), None)
    if past_mask is None:
        raise GenerateError(f"`{r.name}`: part `{step.name}` has no mask input [B, P] beside `{past.name}`")
    logits = next(o for o in step.outputs if graph.output_type(r.outputs[o]).kind == "logits")
    present = next(o for o in step.outputs if graph.output_type(r.outputs[o]).kind == "kv_cache")
    l_, _, _, h, _, hd = past.type.shape
    return Seq2SeqRoles(
        pipeline=r.name, text=texts[0], tokenizer=tokenizer, tokens=made["tokens"], mask=made.get("mask"),
        token_types=made.get("token_types"), encoder=encoder.name, decoder=step.name,
        encoder_inputs=tuple(core_inputs(enc.graph)), encoder_outputs=tuple(encoder.outputs), given=tuple(given),
        decoder_tokens=tokens[0].name, decoder_mask=dmask.name if dmask else None, past=past.name,
        past_mask=past_mask.name, logits=logits, present=present, cache_shape=(l_, 2, h, hd),
        cache_dtype=past.type.dtype, past_mask_dtype=past_mask.type.dtype,
        vocab=graph.output_type(r.outputs[logits]).shape[2])


def find_scheme(graph) -> tuple[type, Any]:
    """The generation scheme of a spec and its roles: an encoder-decoder (`parts:` with a decoder
    step given the encoder's output, T5), else decoder-only (GPT-2)."""
    roles = find_seq2seq(graph)
    if roles is not None:
        return EncoderDecoder, roles
    return DecoderOnly, find_decoder(graph)


# ---- choosing the next token ------------------------------------------------------------------


@dataclass(frozen=True)
class Sampling:
    """How the next token is chosen. `greedy`: the argmax. Otherwise a sample (torch.Generator
    seeded by `seed`) after transformers' processors in their order: `temperature`, `top_k`
    (0 = off), `top_p` (1.0 = off); the defaults are transformers' (`top_k` 50 when sampling)."""

    greedy: bool = False
    temperature: float = 1.0
    top_k: int = 50
    top_p: float = 1.0
    seed: int = 0

    def check(self) -> None:
        if not self.temperature > 0:
            raise GenerateError(f"--temperature must be above 0, not {self.temperature:g} (use --greedy for the "
                                "argmax)")
        if self.top_k < 0:
            raise GenerateError(f"--top-k must be 1 or more (0 turns it off), not {self.top_k}")
        if not 0 < self.top_p <= 1:
            raise GenerateError(f"--top-p must be in (0, 1], not {self.top_p:g}")


GREEDY = Sampling(greedy=True)


def sampling_from(greedy: Optional[bool] = None, temperature: Optional[float] = None, top_k: Optional[int] = None,
                  top_p: Optional[float] = None, seed: int = 0) -> Sampling:
    """The `Sampling` of command-line options: greedy unless a sampling option (or `greedy=False`)
    is given; `greedy=True` beside a sampling option is an error."""
    asked = [n for n, v in (("--temperature", temperature), ("--top-k", top_k), ("--top-p", top_p)) if v is not None]
    if greedy and asked:
        raise GenerateError(f"--greedy takes the argmax; {', '.join(asked)} appl{'ies' if len(asked) == 1 else 'y'} "
                            "to sampling: leave out one or the other")
    s = Sampling(greedy=not asked and greedy is not False, temperature=1.0 if temperature is None else temperature,
                 top_k=50 if top_k is None else top_k, top_p=1.0 if top_p is None else top_p, seed=seed)
    s.check()
    return s


def top_k_filter(scores: torch.Tensor, top_k: int, min_tokens_to_keep: int = 1) -> torch.Tensor:
    """transformers' TopKLogitsWarper: scores below the k-th largest become -inf."""
    k = min(max(top_k, min_tokens_to_keep), scores.shape[-1])
    kth = torch.topk(scores, k)[0][..., -1, None]
    return scores.masked_fill(scores < kth, -float("inf"))


def top_p_filter(scores: torch.Tensor, top_p: float, min_tokens_to_keep: int = 1) -> torch.Tensor:
    """transformers' TopPLogitsWarper: sorted ascending, the tokens whose cumulative probability is
    at most 1 - top_p become -inf; the likeliest `min_tokens_to_keep` always stay."""
    sorted_scores, order = torch.sort(scores, descending=False)
    cumulative = sorted_scores.softmax(dim=-1).cumsum(dim=-1)
    remove = cumulative <= (1 - top_p)
    remove[..., -min_tokens_to_keep:] = False
    return scores.masked_fill(remove.scatter(-1, order, remove), -float("inf"))


def process_logits(scores: torch.Tensor, sampling: Sampling) -> torch.Tensor:
    """Temperature, top-k and top-p, where they are on, in transformers' order ([B, V] float)."""
    if sampling.temperature != 1.0:
        scores = scores / sampling.temperature
    if sampling.top_k:
        scores = top_k_filter(scores, sampling.top_k)
    if sampling.top_p < 1.0:
        scores = top_p_filter(scores, sampling.top_p)
    return scores


def choose(scores: torch.Tensor, sampling: Sampling, generator: Optional[torch.Generator]) -> torch.Tensor:
    """The next token of each row ([B, V] float scores -> [B] int64)."""
    if sampling.greedy:
        return scores.argmax(dim=-1)
    probs = process_logits(scores, sampling).softmax(dim=-1)
    return torch.multinomial(probs, num_samples=1, generator=generator).squeeze(1)


# ---- the tensor core, on either backend -------------------------------------------------------


class Core(Protocol):
    """One forward of the tensor core: named tensors in, the named outputs asked for out."""

    where: str                      # a line saying where it runs
    device: torch.device            # where its inputs (the cache) live

    def __call__(self, feeds: Mapping[str, torch.Tensor], names: Sequence[str]) -> dict[str, torch.Tensor]: ...


class TorchCore:
    """The compiled module, in eval mode, without autograd."""

    def __init__(self, model, device: torch.device):
        self.model = model.to(device).eval()
        self.device = device
        self.where = f"torch on {device}"

    def __call__(self, feeds: Mapping[str, torch.Tensor], names: Sequence[str]) -> dict[str, torch.Tensor]:
        with torch.no_grad():
            out = self.model(**{n: v.to(self.device) for n, v in feeds.items()})
        return {n: out[n] for n in names}


class OnnxCore:
    """An exported core in onnxruntime (`composer.runtime.Session`); tensors cross as numpy arrays."""

    def __init__(self, session, roles: DecoderRoles, inputs: Optional[Sequence[str]] = None,
                 outputs: Optional[Sequence[str]] = None):
        self.session = session
        self.device = torch.device("cpu")
        self.where = session.describe()
        wanted = inputs if inputs is not None else [
            n for n in (roles.tokens, roles.mask, roles.token_types, roles.past, roles.past_mask) if n]
        lack = [n for n in wanted if n not in session.input_names]
        lack += [n for n in (outputs if outputs is not None else (roles.logits, roles.present))
                 if n not in session.output_names]
        if lack:
            raise GenerateError(f"{session.path} is not an export of `{roles.pipeline}`: it has no "
                                f"{', '.join(f'`{n}`' for n in lack)} (inputs {', '.join(session.input_names)}; "
                                f"outputs {', '.join(session.output_names)}); export the spec again")

    def __call__(self, feeds: Mapping[str, torch.Tensor], names: Sequence[str]) -> dict[str, torch.Tensor]:
        out = self.session.run({n: v.numpy() for n, v in feeds.items()}, list(names))
        return {n: torch.from_numpy(v) for n, v in out.items()}


# ---- the schemes --------------------------------------------------------------------------------


class DecoderOnly:
    """GPT-2's loop: the prompt with an empty past (P = 0), then one new token per step with the
    previous `present` as `past` and the mask of every step so far as `past_mask`."""

    def __init__(self, roles: DecoderRoles, core: Core):
        self.roles = roles
        self.core = core
        self.past: Optional[torch.Tensor] = None
        self.past_mask: Optional[torch.Tensor] = None

    def _feeds(self, tokens: torch.Tensor, mask: torch.Tensor) -> dict[str, torch.Tensor]:
        r = self.roles
        feeds = {r.tokens: tokens, r.past: self.past, r.past_mask: self.past_mask.to(TORCH_DTYPES[r.past_mask_dtype])}
        if r.mask:
            feeds[r.mask] = mask.to(TORCH_DTYPES[r.mask_dtype])
        if r.token_types:
            feeds[r.token_types] = torch.zeros_like(tokens)
        return feeds

    def _run(self, tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        r = self.roles
        out = self.core(self._feeds(tokens, mask), (r.logits, r.present))
        self.past = out[r.present]
        self.past_mask = torch.cat([self.past_mask, mask.to(self.past_mask.device)], dim=1)   # (B, P + T)
        return out[r.logits][:, -1].float().cpu()                                            # (B, V)

    def start(self, tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """The prompt pass (left-padded [B, T] tokens and mask): the scores of each row's first new token."""
        r = self.roles
        b = tokens.shape[0]
        layers, two, heads, hd = r.cache_shape
        dev = self.core.device
        self.past = torch.zeros(layers, two, b, heads, 0, hd, dtype=TORCH_DTYPES[r.cache_dtype], device=dev)
        self.past_mask = torch.zeros(b, 0, dtype=torch.int64, device=dev)
        return self._run(tokens, mask)

    def step(self, tokens: torch.Tensor) -> torch.Tensor:
        """One step: each row's last token [B] -> the scores of its next one [B, V]."""
        return self._run(tokens[:, None], torch.ones(tokens.shape[0], 1, dtype=torch.int64))


class PartCores:
    """The cores of an encoder-decoder's parts, by part name."""

    def __init__(self, cores: Mapping[str, Core]):
        self.parts = dict(cores)
        first = next(iter(self.parts.values()))
        self.device, self.where = first.device, first.where


class EncoderDecoder:
    """T5's loop: the encoder part once on the prompt, then the decoder part on the start token (the
    pad id, T5's decoder_start_token_id) with an empty past, and on each new token after it."""

    def __init__(self, roles: Seq2SeqRoles, core: PartCores, start_id: int = 0):
        self.roles, self.core, self.start_id = roles, core, start_id
        self.given: dict[str, torch.Tensor] = {}
        self.past: Optional[torch.Tensor] = None
        self.past_mask: Optional[torch.Tensor] = None

    def _run(self, tokens: torch.Tensor) -> torch.Tensor:
        r = self.roles
        ones = torch.ones(tokens.shape, dtype=torch.int64)
        feeds = {r.decoder_tokens: tokens, r.past: self.past,
                 r.past_mask: self.past_mask.to(TORCH_DTYPES[r.past_mask_dtype]), **self.given}
        if r.decoder_mask:
            feeds[r.decoder_mask] = ones
        out = self.core.parts[r.decoder](feeds, (r.logits, r.present))
        self.past = out[r.present]
        self.past_mask = torch.cat([self.past_mask, ones.to(self.past_mask.device)], dim=1)   # (B, P + T)
        return out[r.logits][:, -1].float().cpu()                                            # (B, V)

    def start(self, tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        r = self.roles
        feeds = {r.tokens: tokens}
        if r.mask:
            feeds[r.mask] = mask
        if r.token_types:
            feeds[r.token_types] = torch.zeros_like(tokens)
        feeds = {k: v for k, v in feeds.items() if k in r.encoder_inputs}
        enc = self.core.parts[r.encoder](feeds, r.encoder_outputs)
        self.given = {g: enc[src] if src in enc else feeds[src] for g, src in r.given}
        b = tokens.shape[0]
        layers, two, heads, hd = r.cache_shape
        dev = self.core.device
        self.past = torch.zeros(layers, two, b, heads, 0, hd, dtype=TORCH_DTYPES[r.cache_dtype], device=dev)
        self.past_mask = torch.zeros(b, 0, dtype=torch.int64, device=dev)
        return self._run(torch.full((b, 1), self.start_id, dtype=torch.int64))

    def step(self, tokens: torch.Tensor) -> torch.Tensor:
        return self._run(tokens[:, None])


# ---- text out -----------------------------------------------------------------------------------


class TextStream:
    """Decodes one row's new ids as they come: each `push` returns the text it completes, held
    back while the last bytes are an unfinished UTF-8 character (a byte-level BPE piece)."""

    def __init__(self, tokenizer, skip: Sequence[int] = ()):
        self.tok = tokenizer
        self.skip = set(skip)
        self.ids: list[int] = []
        self.text = ""              # the text of every id so far
        self.sent = 0               # how much of it has been returned

    def push(self, token: int) -> str:
        if int(token) in self.skip:
            return ""
        self.ids.append(int(token))
        self.text = self.tok.decode(self.ids, skip_special_tokens=False)
        return "" if self.text.endswith("\ufffd") else self._emit()

    def flush(self) -> str:
        """The text still held back (at the end of generation)."""
        return self._emit()

    def _emit(self) -> str:
        new = self.text[self.sent:]
        self.sent = max(self.sent, len(self.text))
        return new


@dataclass
class Generation:
    """What a generation gave, per prompt, and how fast."""

    prompts: list[str]
    ids: list[list[int]]            # each prompt's new ids, a stop token included
    texts: list[str]                # their text, stop tokens left out
    sequences: np.ndarray           # [B, T + n]: left-padded prompts, the new ids, pads after a stop (transformers')
    prompt_lengths: list[int]       # real tokens of each prompt
    stopped: list[bool]             # whether each row ended at a stop token
    first_token_s: float            # the prompt pass and the first choice
    total_s: float
    where: str = ""

    @property
    def new_tokens(self) -> int:
        return sum(len(i) for i in self.ids)

    @property
    def tokens_per_s(self) -> float:
        return self.new_tokens / self.total_s if self.total_s > 0 else float("inf")

    def summary(self) -> str:
        """One line: tokens, time, tokens/s and the first token's latency."""
        n = self.new_tokens
        rows = f" over {len(self.ids)} prompts" if len(self.ids) > 1 else ""
        steps = max((len(i) for i in self.ids), default=0)
        rest = self.total_s - self.first_token_s
        then = f", then {(n - len(self.ids)) / rest:.1f} tokens/s" if steps > 1 and rest > 0 else ""
        return (f"{n} token{'s' if n != 1 else ''}{rows} in {self.total_s:.2f} s: {self.tokens_per_s:.1f} tokens/s "
                f"(first token {self.first_token_s * 1000:.0f} ms{then}; {self.where})")


# ---- the generator ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Request:
    """A checked generation request: the prompts left-padded, and how to continue them."""

    prompts: list[str]
    tokens: torch.Tensor            # [B, T] left-padded ids
    mask: torch.Tensor              # [B, T] 1 = a real token
    lengths: list[int]              # real tokens of each prompt
    max_new_tokens: int
    sampling: Sampling
    stops: list[int]


WeightsArg = Union[str, os.PathLike, Any, None]


class TextGenerator:
    """A decoder spec ready to generate: its roles and tokenizer at once, the model (built, or
    exported and opened in onnxruntime) on first use, then kept for every call.

    `target`: a `Pipeline`, or a built `CompiledPipeline` (used as it is). `backend`: torch or
    onnx; `onnx`: an exported .onnx of the same spec (else the spec is exported, verified, to a
    temporary file). `weights` replaces the spec's `weights:`; `device`: auto, cpu or cuda
    (and tensorrt for onnx); `threads`: onnxruntime's intra-op threads."""

    def __init__(self, target, *, backend: str = "torch", onnx: Union[str, os.PathLike, None] = None,
                 weights: WeightsArg = None, device: str = "cpu", threads: Optional[int] = None,
                 on_weights: Optional[Callable[[dict], None]] = None):
        from ._target import target_of
        self.model, self.pipe = target_of(target, GenerateError, "generate")
        if onnx is not None:
            backend = "onnx"
        if backend not in BACKENDS:
            raise GenerateError(f"unknown backend {backend!r}: choose torch or onnx")
        if backend == "torch" and device == "tensorrt":
            raise GenerateError("device 'tensorrt' needs --backend onnx")
        if backend == "onnx" and self.model is not None and weights is not None:
            raise GenerateError("a built model carries its weights; give `weights` with a Pipeline")
        self.backend, self.onnx, self.weights, self.device, self.threads = backend, onnx, weights, device, threads
        self.on_weights = on_weights
        self.scheme, self.roles = find_scheme(self.pipe.graph)
        self.stage = PreStage(self.pipe.graph)
        others = [n for n in self.stage.raw_inputs if n != self.roles.text]
        if others:
            raise GenerateError(f"`{self.pipe.name}` pre-processes {', '.join(f'`{n}`' for n in others)} beside the "
                                f"prompt `{self.roles.text}`; generate feeds the prompt only")
        self.tok = self.stage.runtime(self.roles.tokenizer).tok
        self.vocab = min(self.tok.get_vocab_size(with_added_tokens=True), self.roles.vocab)
        self.eos = next((self.tok.token_to_id(t) for t in EOS_TOKENS if self.tok.token_to_id(t) is not None), None)
        pad = next((self.tok.token_to_id(t) for t in PAD_TOKENS if self.tok.token_to_id(t) is not None), None)
        self.pad_id = pad if pad is not None else self.eos if self.eos is not None else 0
        self._core: Optional[Core] = None
        self._tmp: Optional[tempfile.TemporaryDirectory] = None

    # -- options ---------------------------------------------------------------------------------

    def stop_ids(self, stop: Optional[Sequence[str]]) -> list[int]:
        """The ids of stop tokens (None: the vocabulary's end-of-text token, where it has one); each
        a token of the vocabulary, or a text that is exactly one token."""
        if stop is None:
            return [self.eos] if self.eos is not None else []
        ids = []
        for s in stop:
            i = self.tok.token_to_id(s)
            if i is None and s:
                enc = self.tok.encode(s, add_special_tokens=False).ids
                i = enc[0] if len(enc) == 1 else None
            if i is None or i >= self.vocab:
                vocab = self.tok.get_vocab()
                near = difflib.get_close_matches(s, list(vocab), n=1, cutoff=0.6)
                pieces = len(self.tok.encode(s, add_special_tokens=False).ids) if s else 0
                raise GenerateError(f"--stop {s!r} is not a token of the vocabulary of `{self.roles.tokenizer}`"
                                    + (f" (it makes {pieces} tokens)" if pieces > 1 else "")
                                    + (f"; did you mean {near[0]!r}?" if near else ""))
            ids.append(i)
        return ids

    def encode(self, prompts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Left-padded token ids and mask [B, T] of the prompts (pads: mask 0, the pad id)."""
        from blocks.text.tokenizer import TextError
        try:
            made = self.stage({self.roles.text: list(prompts)})
        except TextError as exc:
            raise GenerateError(str(exc)) from None
        tokens = made[self.roles.tokens]
        mask = made[self.roles.mask] if self.roles.mask else np.ones_like(tokens)
        b, t = tokens.shape
        ids = np.full((b, t), self.pad_id, dtype=np.int64)
        keep = np.zeros((b, t), dtype=np.int64)
        for row in range(b):
            real = tokens[row][mask[row] != 0]
            if len(real):
                ids[row, t - len(real):] = real
                keep[row, t - len(real):] = 1
        return torch.from_numpy(ids), torch.from_numpy(keep)

    # -- the core --------------------------------------------------------------------------------

    def core(self) -> Core:
        """The backend, built (or exported and opened) on first use."""
        if self._core is not None:
            return self._core
        if self.scheme is EncoderDecoder:
            self._core = self._part_cores()
            return self._core
        if self.backend == "torch":
            self._core = TorchCore(self._built(), self._torch_device())
            return self._core
        from .runtime import Session
        path = self.onnx
        if path is None:
            from .export import export
            self._tmp = tempfile.TemporaryDirectory(prefix="composer-generate-")
            path = Path(self._tmp.name) / f"{self.pipe.name}.onnx"
            rep = export(self.model if self.model is not None else self.pipe, path, weights=self.weights,
                         pipeline=self.pipe)
            if rep.get("weights") and self.on_weights:
                self.on_weights(rep["weights"])
        self._core = OnnxCore(Session(path, device=self.device, threads=self.threads), self.roles)
        return self._core

    def _built(self):
        """The model with its weights (built and loaded on first use)."""
        from ._target import built
        return built(self.pipe, self.model, self.weights, self.on_weights)

    def _part_cores(self) -> PartCores:
        """An encoder-decoder's parts on the backend: built from one model (torch), or each exported
        and verified to a temporary file (onnx)."""
        from .parts import part_model
        r = self.roles
        if self.onnx is not None:
            raise GenerateError(f"`{self.pipe.name}` generates with two parts ({r.encoder}, {r.decoder}); give "
                                "--backend onnx without --onnx and both are exported")
        dev = self._torch_device() if self.backend == "torch" else torch.device("cpu")
        model = self._built()
        parts = {name: part_model(model, name) for name in (r.encoder, r.decoder)}
        if self.backend == "torch":
            return PartCores({name: TorchCore(m, dev) for name, m in parts.items()})
        from .export import export
        from .runtime import Session
        self._tmp = tempfile.TemporaryDirectory(prefix="composer-generate-")
        cores = {}
        for name, m in parts.items():
            path = Path(self._tmp.name) / f"{self.pipe.name}_{name}.onnx"
            export(m, path)
            session = Session(path, device=self.device, threads=self.threads)
            outputs = r.encoder_outputs if name == r.encoder else (r.logits, r.present)
            cores[name] = OnnxCore(session, r, inputs=list(session.input_names), outputs=outputs)
        return PartCores(cores)

    def _torch_device(self) -> torch.device:
        from ._target import torch_device
        return torch_device(self.device, GenerateError)

    # -- the loop --------------------------------------------------------------------------------

    def __call__(self, prompt: Union[str, Sequence[str]], *, max_new_tokens: int = 32,
                 sampling: Sampling = GREEDY, stop: Optional[Sequence[str]] = None,
                 on_text: Optional[Callable[[int, str], None]] = None) -> Generation:
        """Generate up to `max_new_tokens` after each prompt; `on_text(row, text)` receives the
        text of each row as it completes."""
        return self.run(self.prepare(prompt, max_new_tokens=max_new_tokens, sampling=sampling, stop=stop), on_text)

    def prepare(self, prompt: Union[str, Sequence[str]], *, max_new_tokens: int = 32, sampling: Sampling = GREEDY,
                stop: Optional[Sequence[str]] = None) -> Request:
        """Every check of a request, before any model runs (or is built): the options, the prompts,
        the stop tokens, and that prompt and new tokens fit the context."""
        prompts = [prompt] if isinstance(prompt, str) else list(prompt)
        if not prompts:
            raise GenerateError("give a prompt (--prompt TEXT)")
        for i, p in enumerate(prompts):
            if not isinstance(p, str) or not p.strip():
                raise GenerateError(f"prompt {i} is empty: give the text to continue"
                                    if len(prompts) > 1 else "the prompt is empty: give the text to continue")
        if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) or max_new_tokens < 1:
            raise GenerateError(f"--max-new-tokens must be 1 or more, not {max_new_tokens}")
        sampling.check()
        stops = self.stop_ids(stop)
        tokens, mask = self.encode(prompts)
        lengths = [int(n) for n in mask.sum(dim=1)]
        ctx, longest = self.roles.context, max(lengths)
        if ctx is not None and longest + max_new_tokens > ctx:
            which = "the prompt" if len(prompts) == 1 else "the longest prompt"
            raise GenerateError(f"{which} is {longest} token{'s' if longest != 1 else ''} and --max-new-tokens "
                                f"{max_new_tokens} makes {longest + max_new_tokens}, beyond the {ctx} positions of "
                                f"the model ({self.roles.context_from}); "
                                + (f"use --max-new-tokens {ctx - longest} or less" if longest < ctx
                                   else "shorten the prompt"))
        return Request(prompts, tokens, mask, lengths, max_new_tokens, sampling, stops)

    def run(self, request: Request, on_text: Optional[Callable[[int, str], None]] = None) -> Generation:
        """Run a prepared request (the model is built, or exported, on first use)."""
        core = self.core()
        prompts, tokens, mask, lengths = request.prompts, request.tokens, request.mask, request.lengths
        max_new_tokens, sampling, stops = request.max_new_tokens, request.sampling, request.stops
        t0 = time.perf_counter()
        b = tokens.shape[0]
        scheme = EncoderDecoder(self.roles, core, self.pad_id) if self.scheme is EncoderDecoder \
            else self.scheme(self.roles, core)
        gen = torch.Generator().manual_seed(sampling.seed) if not sampling.greedy else None
        streams = [TextStream(self.tok, skip=stops) for _ in range(b)]
        stop_set = torch.tensor(stops, dtype=torch.int64)
        finished = torch.zeros(b, dtype=torch.bool)
        ended = [False] * b
        new: list[list[int]] = [[] for _ in range(b)]
        columns = []
        scores = scheme.start(tokens, mask)
        first_s = None
        for i in range(max_new_tokens):
            if self.vocab < scores.shape[1]:          # ids the tokenizer cannot decode are never chosen
                scores = scores[:, :self.vocab]
            nxt = choose(scores, sampling, gen)
            nxt = torch.where(finished, torch.full_like(nxt, self.pad_id), nxt)
            columns.append(nxt)
            if first_s is None:
                first_s = time.perf_counter() - t0
            for row in range(b):
                if finished[row]:
                    continue
                tid = int(nxt[row])
                new[row].append(tid)
                piece = streams[row].push(tid)
                if piece and on_text is not None:
                    on_text(row, piece)
            hit = torch.isin(nxt, stop_set) & ~finished if len(stops) else torch.zeros_like(finished)
            for row in hit.nonzero().flatten().tolist():
                ended[row] = True
            finished |= hit
            if bool(finished.all()) or i == max_new_tokens - 1:
                break
            scores = scheme.step(nxt)
        for row in range(b):
            piece = streams[row].flush()
            if piece and on_text is not None:
                on_text(row, piece)
        total = time.perf_counter() - t0
        seq = torch.cat([tokens, torch.stack(columns, dim=1)], dim=1).numpy()
        return Generation(list(prompts), new, [s.text for s in streams], seq, lengths, ended, first_s or total, total,
                          core.where)

    def close(self) -> None:
        """Remove the temporary ONNX file, if one was exported."""
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None
            self._core = None


def generate(target, prompt: Union[str, Sequence[str]], *, max_new_tokens: int = 32, sampling: Sampling = GREEDY,
             stop: Optional[Sequence[str]] = None, backend: str = "torch", onnx: Union[str, os.PathLike, None] = None,
             weights: WeightsArg = None, device: str = "cpu",
             on_text: Optional[Callable[[int, str], None]] = None) -> Generation:
    """Continue `prompt` (a text, or a list of texts: a left-padded batch) with a decoder spec
    (`Pipeline` or built model); see `TextGenerator` for the options, `Sampling` for the choice."""
    gen = TextGenerator(target, backend=backend, onnx=onnx, weights=weights, device=device)
    try:
        return gen(prompt, max_new_tokens=max_new_tokens, sampling=sampling, stop=stop, on_text=on_text)
    finally:
        gen.close()

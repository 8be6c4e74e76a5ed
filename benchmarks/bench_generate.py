"""GPT-2 small (`pipelines/gpt2.yaml`) generating with a KV cache: composer's `TextGenerator` against
transformers' `generate` with the same weights, onnxruntime against torch, and the first token
after a 512-token prompt.

The models: `transformers.GPT2LMHeadModel(GPT2Config(attn_implementation="sdpa"))` (124M, random
weights, eval; its LayerNorms and biases drawn at random too, since its init leaves them 1 and 0 as
ours does and a key mapped onto the wrong tensor would then go unseen), its state dict mapped onto
composer's compiled `pipelines/gpt2.yaml` with `composer.weights.map_state_dict` and the GPT-2
rules of `composer.hf.decoders` (rename, ignore the tied `lm_head.weight`, transpose the Conv1D
matrices). The logits of both are checked first on the short and on the long prompt (max abs diff
≤ 1e-4). The onnxruntime side is the same compiled model exported once with
`composer.export(model, path, verify=False)` and opened by `TextGenerator(model, onnx=path,
threads=--threads)` (CPU provider).

1. **Tokens/s** — a prompt of about 16 tokens (the first words of `pipelines/data/corpus.txt`),
   tokenized once by composer's tokenizer (`TextGenerator.prepare`); transformers gets exactly those
   ids and that mask, `do_sample=False, max_new_tokens=N, use_cache=True`, the pad id composer
   uses and no end-of-text id; composer runs greedy with `stop=[]`, so both make N new tokens.
   composer picks among the ids its tokenizer can decode (the spec's BPE vocabulary is smaller than
   the model's 50,257 logits), so transformers gets a logits processor that sets the scores of the
   other ids to -inf: both choose among the same ids. The generated ids are checked equal on all
   three sides first (that run is each side's warm-up). Then `TextGenerator.run(request)` (torch
   and onnx) and `model.generate(...)` are timed, interleaved in balanced rotating order; tokens/s
   is N over the median wall time of a whole call (prompt pass included, as
   `Generation.tokens_per_s`). The figure is composer / transformers tokens/s (target ≥ 1.0), and
   onnxruntime / torch.
2. **First token** — the first 512 tokens of the corpus as the prompt, one new token
   (`max_new_tokens=1`): the prompt pass and the first choice, on the three sides, interleaved;
   the first token is checked equal.
3. **Where the time goes** — recorded during the timed calls themselves: forward hooks on both
   torch models alike (the model, its attention layers, its MLPs, its LM head) and a timed
   `session.run` for onnxruntime give the prompt pass, each step's forward and its parts, and the
   time between two forwards (the generation loop's own Python: choosing, bookkeeping, feeding),
   median over the calls. Before the tokens/s timing, one more call per torch side under
   `torch.profiler` gives the ops whose self CPU time differs most, and one layer's attention call
   is timed alone: composer's `attend` with the key mask and `causal=True` against
   `scaled_dot_product_attention` without a mask.

torch runs with `torch.set_num_threads(--threads)` for the whole run and onnxruntime with as many
intra-op threads; the default is 1, as in `bench_text.py`: on the shared 2-core machines an OpenMP
pool of two stalls whenever the second core is taken, which swamps the differences looked for
here; one thread is steady. The run keeps to `--minutes` (default 9, the export included): each
part gets its share of what is left after the models are built and exported, and a few iterations
at least. `--quick` is a smoke run (8 new tokens, a 128-token long prompt, 1.5 minutes, nothing
written unless asked with `--write`).

    .venv/bin/python benchmarks/bench_generate.py [--minutes 9] [--threads 1] [--only tokens,first] [--quick] [--no-write]
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import gc
import os
import statistics
import sys
import tempfile
import time
import warnings

T0 = time.perf_counter()          # --minutes counts from here: the imports are part of the run
from pathlib import Path
from typing import Callable, Optional

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")          # nothing is ever downloaded
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import torch  # noqa: E402

import composer  # noqa: E402
from composer.generate import TextGenerator  # noqa: E402
from composer.hf.decoders import GPT2_IGNORE, GPT2_RENAME, GPT2_TRANSPOSE  # noqa: E402
from composer.weights import map_state_dict  # noqa: E402
from _results import (Section, fmt_ms, fmt_spread, interleave, machine, parse_options, publish,  # noqa: E402
                      quartiles, ratio_stats, sections)  # (benchmarks/ is on sys.path)

SECTION = "## GPT-2 generation"
SPEC = ROOT / "pipelines" / "gpt2.yaml"
CORPUS = ROOT / "pipelines" / "data" / "corpus.txt"
TARGET = 1.0                # composer / transformers tokens/s
TOLERANCE = 1e-4            # logits, composer against transformers
PROMPT_TOKENS = 16          # the short prompt: the corpus's first words up to this many tokens
NEW_TOKENS = {False: 32, True: 8}       # by --quick
LONG_PROMPT = {False: 512, True: 128}
PART_WEIGHTS = {"tokens": 0.55, "first": 0.45}
MIN_ITERS = {"tokens": 4, "first": 3}
SIDES = ("transformers", "composer", "onnxruntime")


def _quiet_transformers():
    import transformers
    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    return transformers


# ---- the models -----------------------------------------------------------------------------------


def short_prompt(gen: TextGenerator, want: int) -> str:
    """The corpus's first words, as many as make at least `want` tokens."""
    words = CORPUS.read_text(encoding="utf-8").split()
    for n in range(1, len(words) + 1):
        text = " ".join(words[:n])
        if int(gen.encode([text])[1].sum()) >= want:
            return text
    raise SystemExit(f"{CORPUS.name} makes fewer than {want} tokens")


def long_request(gen: TextGenerator, length: int):
    """A request of the corpus's first `length` tokens (the corpus repeated as needed), one new token."""
    words = CORPUS.read_text(encoding="utf-8").split()
    count = lambda k: int(gen.encode([" ".join(words[:k])])[1].sum())                # noqa: E731
    while count(len(words)) < length:
        words = words + words
    lo, hi = 1, len(words)                          # the fewest words that make `length` tokens
    while lo < hi:
        mid = (lo + hi) // 2
        lo, hi = (mid + 1, hi) if count(mid) < length else (lo, mid)
    req = gen.prepare(" ".join(words[:lo]), max_new_tokens=1, stop=[])
    tokens, mask = req.tokens[:, :length], req.mask[:, :length]                      # (1, length), no pads
    return dataclasses.replace(req, prompts=[gen.tok.decode(tokens[0].tolist())], tokens=tokens, mask=mask,
                               lengths=[length])


def empty_past(gen: TextGenerator, b: int) -> tuple[torch.Tensor, torch.Tensor]:
    layers, two, heads, hd = gen.roles.cache_shape
    return torch.zeros(layers, two, b, heads, 0, hd), torch.zeros(b, 0, dtype=torch.int64)


def models(log, quick: bool) -> dict:
    """transformers' GPT-2 and composer's with its weights, logits checked equal, and the prompts."""
    transformers = _quiet_transformers()
    t0 = time.perf_counter()
    torch.manual_seed(0)
    ref = transformers.GPT2LMHeadModel(transformers.GPT2Config(attn_implementation="sdpa")).eval()
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():   # its init leaves LayerNorms at 1/0 and biases at 0, as ours: draw them
        for name, p in ref.named_parameters():
            if ".ln_" in name or name.startswith("transformer.ln_f"):
                p.copy_((1.0 if name.endswith("weight") else 0.0) + 0.1 * torch.randn(p.shape, generator=g))
            elif name.endswith(".bias"):
                p.copy_(0.02 * torch.randn(p.shape, generator=g))
    t_ref = time.perf_counter() - t0
    t0 = time.perf_counter()
    pipe = composer.load(SPEC)
    ours = pipe.build(seed=0).eval()
    t_ours = time.perf_counter() - t0
    tensors, report = map_state_dict(ours, ref.state_dict(), rename=[list(r) for r in GPT2_RENAME],
                                     ignore=list(GPT2_IGNORE), transpose=list(GPT2_TRANSPOSE))
    ours.load_state_dict(tensors)
    n_ref = sum(p.numel() for p in ref.parameters())
    n_ours = sum(p.numel() for p in ours.parameters())
    gen = TextGenerator(ours, device="cpu")
    n = NEW_TOKENS[quick]
    prompt = short_prompt(gen, PROMPT_TOKENS)
    req = gen.prepare(prompt, max_new_tokens=n, stop=[])
    long_req = long_request(gen, LONG_PROMPT[quick])
    log(f"transformers GPT2LMHeadModel built in {t_ref:.1f} s ({n_ref:,} params, attention "
        f"{ref.config._attn_implementation}); composer {SPEC.name} loaded + built in {t_ours:.1f} s ({n_ours:,} "
        f"params); weights: {report.describe()}; tokenizer vocabulary {gen.vocab} of {gen.roles.vocab} logits, "
        f"pad id {gen.pad_id}; prompt {req.lengths[0]} tokens {prompt!r}, long prompt {long_req.lengths[0]} tokens")
    parity = {}
    with torch.no_grad():
        for what, r in (("short", req), ("long", long_req)):
            past, past_mask = empty_past(gen, 1)
            got = ours(tokens=r.tokens, mask=r.mask, past=past, past_mask=past_mask)["logits"]
            want = ref(input_ids=r.tokens, attention_mask=r.mask).logits
            parity[what] = (float((got - want).abs().max()), float(want.abs().max()))
            log(f"  logits, {what} prompt ({r.lengths[0]} tokens): max abs diff {parity[what][0]:.1e} "
                f"(max |logit| {parity[what][1]:.2f})")
            if parity[what][0] > TOLERANCE:
                raise SystemExit(f"composer and transformers disagree on the {what} prompt: max abs diff "
                                 f"{parity[what][0]:.2e} > {TOLERANCE:g}; not timing different functions")
    return {"pipe": pipe, "ours": ours, "ref": ref, "gen": gen, "req": req, "long": long_req, "n": n,
            "parity": parity, "weights": report.describe(), "params": (n_ours, n_ref),
            "transformers": transformers.__version__, "limit": _vocab_limit(transformers, gen.vocab)}


def _vocab_limit(transformers, vocab: int):
    """A logits processor that leaves transformers the ids composer chooses among: 0 .. vocab - 1."""

    class VocabLimit(transformers.LogitsProcessor):
        def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
            scores[:, vocab:] = -float("inf")
            return scores

    return transformers.LogitsProcessorList([VocabLimit()])


def export(m: dict, tmp: Path, threads: int, log) -> dict:
    """The compiled model exported once and opened by a second TextGenerator (onnxruntime, CPU)."""
    path = tmp / "gpt2.onnx"
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        report = composer.export(m["ours"], path, pipeline=m["pipe"], verify=False)
    export_s = time.perf_counter() - t0
    gen = TextGenerator(m["ours"], onnx=path, device="cpu", threads=threads)
    core = gen.core()
    sess = core.session
    if sess.device != "cpu":
        raise SystemExit(f"onnxruntime is not on the CPU provider: {sess.providers}")
    req = m["req"]
    past, past_mask = empty_past(m["gen"], 1)
    feed = {"tokens": req.tokens, "mask": req.mask, "past": past, "past_mask": past_mask}
    with torch.no_grad():
        want = m["ours"](**feed)["logits"]
    got = core(feed, ["logits"])["logits"]
    diff = float((got - want).abs().max())
    mib = sum(f.stat().st_size for f in tmp.iterdir() if f.name.startswith("gpt2.onnx")) / 2**20
    log(f"exported in {export_s:.1f} s ({report['exporter']}, opset {report['opset']}, {mib:.0f} MiB with its "
        f"external data); onnxruntime on {', '.join(sess.providers)}, {threads} thread(s); logits against torch on "
        f"the short prompt: max abs diff {diff:.1e}")
    return {"gen": gen, "export_s": export_s, "exporter": report["exporter"], "opset": report["opset"], "mib": mib,
            "diff": diff, "providers": list(sess.providers)}


# ---- the three sides ------------------------------------------------------------------------------


def sides(m: dict, onnx: dict, req) -> dict[str, Callable[[], list[int]]]:
    """Each side's call for one request; each returns the new ids."""
    ref, gen, ogen, limit = m["ref"], m["gen"], onnx["gen"], m["limit"]
    t = req.tokens.shape[1]

    def hf() -> list[int]:
        out = ref.generate(input_ids=req.tokens, attention_mask=req.mask, do_sample=False,
                           max_new_tokens=req.max_new_tokens, use_cache=True, pad_token_id=gen.pad_id,
                           eos_token_id=None, logits_processor=limit)
        return out[0, t:].tolist()

    return {"transformers": hf, "composer": lambda: gen.run(req).ids[0], "onnxruntime": lambda: ogen.run(req).ids[0]}


def check_ids(fns: dict[str, Callable[[], list[int]]], n: int, log) -> dict:
    """One untimed call per side (their warm-up): the new ids, which must be n and equal."""
    ids, secs = {}, {}
    for name, fn in fns.items():
        t0 = time.perf_counter()
        with torch.no_grad():
            ids[name] = fn()
        secs[name] = time.perf_counter() - t0
    same = all(v == ids["transformers"] for v in ids.values()) and len(ids["transformers"]) == n
    log(f"  ids: {'equal on all three sides' if same else 'DIFFERENT'} ({n} new: {ids['transformers'][:12]}"
        f"{' …' if n > 12 else ''}); first calls " + ", ".join(f"{k} {v:.2f} s" for k, v in secs.items()))
    if not same:
        raise SystemExit("the sides generate different ids: " + "; ".join(f"{k}: {v}" for k, v in ids.items()))
    return {"ids": ids["transformers"], "first_call_s": secs}


# ---- where the time goes --------------------------------------------------------------------------


class Spans:
    """Wall-clock spans of module calls (forward pre- and post-hooks), by label."""

    def __init__(self, modules: dict[str, list[torch.nn.Module]]):
        self.spans: dict[str, list[tuple[float, float]]] = {k: [] for k in modules}
        self.handles = []
        for label, mods in modules.items():
            for mod in mods:
                open_: list[float] = []
                self.handles.append(mod.register_forward_pre_hook(
                    lambda *_, o=open_: o.append(time.perf_counter())))
                self.handles.append(mod.register_forward_hook(
                    lambda *_, o=open_, s=self.spans[label]: s.append((o.pop(), time.perf_counter()))))

    def remove(self) -> None:
        for h in self.handles:
            h.remove()


class TimedRun:
    """Wraps a session's `run` to record the span of each call (label `model`)."""

    def __init__(self, session):
        self.session, self.orig = session, session.run
        self.spans: dict[str, list[tuple[float, float]]] = {"model": []}

        def run(*a, **k):
            t0 = time.perf_counter()
            out = self.orig(*a, **k)
            self.spans["model"].append((t0, time.perf_counter()))
            return out
        session.run = run

    def remove(self) -> None:
        self.session.run = self.orig


class Recorder:
    """One side's spans, kept per call: `wrap(fn)` is the side's call that stores the call's own
    (start, end) and the spans recorded during it (a copy of a few hundred tuples)."""

    def __init__(self, source):
        self.source = source                       # a Spans or a TimedRun
        self.calls: list[tuple[float, float, dict]] = []

    def wrap(self, fn: Callable[[], object]) -> Callable[[], object]:
        spans = self.source.spans

        def call():
            for v in spans.values():
                v.clear()
            t0 = time.perf_counter()
            out = fn()
            t1 = time.perf_counter()
            self.calls.append((t0, t1, {k: v[:] for k, v in spans.items()}))
            return out
        return call

    def summary(self) -> dict:
        """The median over the calls of each call's breakdown (see `breakdown`)."""
        per = [breakdown(*c) for c in self.calls]
        per = [p for p in per if p]
        if not per:
            return {}
        out = {"calls": len(per), "forwards": per[0]["forwards"]}
        for k, v in per[0].items():
            if k in out:
                continue
            if isinstance(v, tuple):
                out[k] = tuple(statistics.median(p[k][i] for p in per) for i in range(len(v)))
            else:
                out[k] = statistics.median(p[k] for p in per)
        return out


def breakdown(t0: float, t1: float, spans: dict[str, list[tuple[float, float]]]) -> dict:
    """One call's spans as ms: the whole call, the prompt pass (the first forward of `model`), the
    steps' forwards (median), each other label summed per forward (the prompt's, the steps' median),
    the gaps between forwards (median), and the time outside the forwards."""
    fw = spans.get("model", [])
    if not fw:
        return {}
    ms = lambda a, b: (b - a) * 1e3                                                       # noqa: E731
    nan = float("nan")
    out = {"total": ms(t0, t1), "forwards": len(fw), "prompt": ms(*fw[0]),
           "step": statistics.median(ms(*s) for s in fw[1:]) if len(fw) > 1 else nan,
           "gap": statistics.median(ms(fw[i][1], fw[i + 1][0]) for i in range(len(fw) - 1)) if len(fw) > 1 else nan,
           "outside": ms(t0, t1) - sum(ms(*s) for s in fw)}
    for label, got in spans.items():
        if label == "model":
            continue
        per = [sum(ms(a, b) for a, b in got if f0 <= a and b <= f1) for f0, f1 in fw]
        out[label] = (per[0], statistics.median(per[1:]) if len(per) > 1 else nan)
    return out


PARTS = ("attention", "mlp", "lm_head")


def recorders(m: dict, onnx: dict) -> dict[str, Recorder]:
    """Hooks on each torch model, its attention layers, its MLPs and its LM head; a timed
    `session.run` for onnxruntime. `remove` them with `unhook`."""
    ref, ours = m["ref"], m["ours"]
    return {
        "transformers": Recorder(Spans({"model": [ref], "attention": [blk.attn for blk in ref.transformer.h],
                                        "mlp": [blk.mlp for blk in ref.transformer.h], "lm_head": [ref.lm_head]})),
        "composer": Recorder(Spans({"model": [ours], "attention": [lay.self_attention for lay in ours.decoder.layers],
                                    "mlp": [lay.mlp for lay in ours.decoder.layers], "lm_head": [ours.lm_head]})),
        "onnxruntime": Recorder(TimedRun(onnx["gen"].core().session)),
    }


def unhook(recs: dict[str, Recorder]) -> None:
    for r in recs.values():
        r.source.remove()


def profile_ops(fns: dict[str, Callable[[], object]], names: tuple[str, str], top: int = 8) -> list[tuple]:
    """One call of each of two sides under torch.profiler: the aten ops whose self CPU time differs
    most, as (op, calls a, ms a, calls b, ms b)."""
    from torch.profiler import ProfilerActivity, profile
    got = {}
    for n in names:
        with torch.no_grad(), profile(activities=[ProfilerActivity.CPU]) as prof:
            fns[n]()
        got[n] = {e.key: (e.count, e.self_cpu_time_total / 1e3) for e in prof.key_averages()
                  if e.key.startswith("aten::")}
    a, b = got[names[0]], got[names[1]]
    rows = [(k, *a.get(k, (0, 0.0)), *b.get(k, (0, 0.0))) for k in set(a) | set(b)]
    rows.sort(key=lambda r: -abs(r[2] - r[4]))
    return rows[:top]


def mask_cost(m: dict, reps: int = 400) -> dict:
    """One step's attention call of one layer (q (1, H, 1, hd), keys and values (1, H, S, hd), S the
    cached length halfway through the generation), interleaved: composer's `attend` with the (1, S)
    key mask and `causal=True`, as the decoder calls it, against `scaled_dot_product_attention` with no
    mask, as transformers calls it without padding. Median µs of each."""
    from blocks.core.attention import attend
    _, _, h, hd = m["gen"].roles.cache_shape
    s = m["req"].lengths[0] + m["n"] // 2
    g = torch.Generator().manual_seed(5)
    q, k, v = torch.randn(1, h, 1, hd, generator=g), torch.randn(1, h, s, hd, generator=g), \
        torch.randn(1, h, s, hd, generator=g)
    keys = torch.ones(1, s, dtype=torch.int64)
    sdpa = torch.nn.functional.scaled_dot_product_attention
    res = interleave({"attend": lambda: attend(q, k, v, keys, True), "sdpa": lambda: sdpa(q, k, v)}, 0.0, reps, 20)
    return {"s": s, **{n: statistics.median(x["wall"]) * 1e3 for n, x in res["meas"].items()}}


# ---- the parts -------------------------------------------------------------------------------------


def timed(m: dict, onnx: dict, fns: dict[str, Callable[[], object]], section: Section, reserve: float,
          min_iters: int) -> dict:
    """The three sides interleaved, each call recorded (hooks on both torch sides alike)."""
    recs = recorders(m, onnx)
    try:
        res = interleave({k: recs[k].wrap(f) for k, f in fns.items()}, section.left(reserve), min_iters, 0,
                         hard_end=section.end - reserve)
    finally:
        unhook(recs)
    return {"iters": res["iters"], "res": res,
            "vs_ref": ratio_stats(res, "transformers", "composer"),       # ref time / ours = ours tokens/s / ref's
            "ort": ratio_stats(res, "composer", "onnxruntime"),           # torch time / ORT = ORT tokens/s / torch's
            "med": {k: statistics.median(v["wall"]) for k, v in res["meas"].items()},
            "where": {k: r.summary() for k, r in recs.items()}}


def _log_where(where: dict, log) -> None:
    for k in SIDES:
        w = where.get(k)
        if not w:
            continue
        parts = "".join(f", {lab} {w[lab][0]:.0f} / {w[lab][1]:.1f} ms" for lab in PARTS if lab in w)
        log(f"  {k} (median of {w['calls']} calls): prompt pass {w['prompt']:.0f} ms, step forward "
            f"{w['step']:.1f} ms{parts} (prompt / step), between forwards {w['gap']:.2f} ms, whole call "
            f"{w['total']:.0f} ms")


def bench_tokens(m: dict, onnx: dict, section: Section, quick: bool, log) -> dict:
    req, n = m["req"], m["n"]
    fns = sides(m, onnx, req)
    check = check_ids(fns, n, log)
    ops = profile_ops(fns, ("composer", "transformers"))     # before the timing, out of its share
    masks = mask_cost(m)
    log(f"  one attention call at S = {masks['s']}: composer's attend {masks['attend']:.0f} µs, sdpa without a mask "
        f"{masks['sdpa']:.0f} µs")
    out = timed(m, onnx, fns, section, 0.0, 2 if quick else MIN_ITERS["tokens"])
    out.update(check, ops=ops, masks=masks)
    r, o = out["vs_ref"], out["ort"]
    rate = {k: n / (v / 1e3) for k, v in out["med"].items()}
    out["rate"] = rate
    log(f"  tokens/s: composer {rate['composer']:.2f}, transformers {rate['transformers']:.2f}, onnxruntime "
        f"{rate['onnxruntime']:.2f}; composer / transformers {r['ratio']:.3f} (paired {r['paired']:.3f} "
        f"[{r['lo']:.3f}, {r['hi']:.3f}]); onnxruntime / torch {o['ratio']:.3f} (paired {o['paired']:.3f} "
        f"[{o['lo']:.3f}, {o['hi']:.3f}]); {out['iters']} iterations")
    _log_where(out["where"], log)
    return out


def bench_first(m: dict, onnx: dict, section: Section, quick: bool, log) -> dict:
    req = m["long"]
    fns = sides(m, onnx, req)
    check = check_ids(fns, 1, log)
    out = timed(m, onnx, fns, section, 0.0, 2 if quick else MIN_ITERS["first"])
    out.update(check)
    r, o = out["vs_ref"], out["ort"]
    log(f"  first token after {req.lengths[0]}: composer {out['med']['composer']:.0f} ms, transformers "
        f"{out['med']['transformers']:.0f} ms, onnxruntime {out['med']['onnxruntime']:.0f} ms; transformers / "
        f"composer {r['ratio']:.3f} (paired {r['paired']:.3f} [{r['lo']:.3f}, {r['hi']:.3f}]); torch / "
        f"onnxruntime {o['ratio']:.3f}; {out['iters']} iterations")
    _log_where(out["where"], log)
    return out


# ---- the report ------------------------------------------------------------------------------------


def verdict(r: dict, target: float = TARGET) -> str:
    """For a tokens/s ratio (higher is better)."""
    if r["ratio"] >= target:
        return "met" if r["lo"] >= target else "met, within noise"
    return "not met, within noise" if r["hi"] >= target else "**NOT met**"


def _q_rate(n: int, q: tuple[float, float]) -> str:
    return f"[{n / (q[1] / 1e3):.2f}, {n / (q[0] / 1e3):.2f}]"


def report(info: str, threads: int, load0, wall_s: float, quick: bool, m: dict, onnx: dict,
           tok: Optional[dict], first: Optional[dict]) -> str:
    when = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M")
    load1 = os.getloadavg()
    n = m["n"]
    out = [f"`benchmarks/bench_generate.py`{' --quick' if quick else ''}, {when} UTC, {wall_s / 60:.1f} min. "
           f"Machine: {info}; `torch.set_num_threads({threads})` for the whole run, onnxruntime {threads} intra-op "
           f"thread{'s' if threads > 1 else ''}. Load average (1 / 5 / 15 min) at start {load0[0]:.2f} / "
           f"{load0[1]:.2f} / {load0[2]:.2f}, at the end {load1[0]:.2f} / {load1[1]:.2f} / {load1[2]:.2f}."]
    if load0[0] > 0.75 * os.cpu_count():
        out += ["", f"**Taken while the machine was shared** (1-minute load average {load0[0]:.2f} at start on "
                    f"{os.cpu_count()} CPUs): absolute times are inflated and noisy; the ratios, measured "
                    "interleaved in the same run, are the figures to compare."]
    par = "; ".join(f"{k} prompt ({(m['req'] if k == 'short' else m['long']).lengths[0]} tokens) {d:.1e}"
                    for k, (d, _) in m["parity"].items())
    out += ["", f"`transformers.GPT2LMHeadModel(GPT2Config(attn_implementation=\"sdpa\"))` (transformers "
                f"{m['transformers']}, {m['params'][1]:,} parameters, random weights with LayerNorms and biases "
                f"drawn at random too, eval) mapped onto `pipelines/gpt2.yaml` ({m['params'][0]:,} parameters) with "
                f"`map_state_dict` and `composer.hf.decoders`' GPT-2 rules ({m['weights']}). Logits checked first, "
                f"max abs diff {par} (≤ {TOLERANCE:g} required); onnxruntime against torch on the short prompt "
                f"{onnx['diff']:.1e}. onnxruntime: the compiled model exported once with `composer.export(model, "
                f"path, verify=False)` ({onnx['export_s']:.0f} s, {onnx['exporter']} exporter, opset {onnx['opset']}, "
                f"{onnx['mib']:.0f} MiB with its external data) and opened by `TextGenerator(model, onnx=path, "
                f"threads={threads})` on {onnx['providers'][0]}.",
            "",
            f"Greedy, batch 1. The prompt is tokenized once by composer's tokenizer (`TextGenerator.prepare`, "
            f"`stop=[]`); transformers' `generate(do_sample=False, max_new_tokens=…, use_cache=True, "
            f"pad_token_id={m['gen'].pad_id}, eos_token_id=None)` gets the same ids and mask. The spec's BPE "
            f"vocabulary has {m['gen'].vocab} tokens of the model's {m['gen'].roles.vocab:,} logits and composer "
            "chooses among the ids its tokenizer decodes, so transformers gets a logits processor that sets the "
            "other ids' scores to -inf (one in-place fill per step): both choose among the same ids. The new ids "
            "are checked equal on all three sides first (each side's untimed warm-up); then the three calls "
            "(`TextGenerator.run(request)` on torch and on onnxruntime, `model.generate`) run interleaved in "
            "balanced rotating order, `torch.no_grad`; median per side with the interquartile range, the paired "
            "column the median of per-iteration ratios with a 95% CI."]
    if tok:
        r, o, rate = tok["vs_ref"], tok["ort"], tok["rate"]
        q = {k: quartiles(v["wall"]) for k, v in tok["res"]["meas"].items()}
        out += ["", f"### Tokens/s: {n} new tokens after a {m['req'].lengths[0]}-token prompt", "",
                f"Prompt {m['req'].prompts[0]!r}; new ids equal on the three sides "
                f"({', '.join(map(str, tok['ids'][:8]))}{' …' if n > 8 else ''}). Tokens/s = {n} / the wall time of "
                f"a whole call (prompt pass included); {tok['iters']} iterations.", "",
                "| side | time per call | tokens/s [IQR] | **ratio tokens/s** | paired [95% CI] | CPU-time ratio "
                "| target |",
                "|---|---:|---:|---:|---:|---:|:--|",
                f"| transformers `generate` | {fmt_spread(tok['med']['transformers'], q['transformers'])} | "
                f"{rate['transformers']:.2f} {_q_rate(n, q['transformers'])} | 1 (reference) | | | |",
                f"| composer, torch | {fmt_spread(tok['med']['composer'], q['composer'])} | {rate['composer']:.2f} "
                f"{_q_rate(n, q['composer'])} | **{r['ratio']:.3f}** composer / transformers | {r['paired']:.3f} "
                f"[{r['lo']:.3f}, {r['hi']:.3f}] | {r['ratio_cpu']:.3f} | ≥ {TARGET}: {verdict(r)} |",
                f"| composer, onnxruntime | {fmt_spread(tok['med']['onnxruntime'], q['onnxruntime'])} | "
                f"{rate['onnxruntime']:.2f} {_q_rate(n, q['onnxruntime'])} | **{o['ratio']:.3f}** onnxruntime / "
                f"torch | {o['paired']:.3f} [{o['lo']:.3f}, {o['hi']:.3f}] | {o['ratio_cpu']:.3f} | |"]
        out += where_table(tok["where"], n, long=False)
        if tok.get("ops"):
            out += ["", f"One call of each torch side under `torch.profiler` ({n} new tokens), the aten ops whose "
                        "self CPU time differs most (profiling inflates small ops):", "",
                    "| op | composer calls | composer self CPU | transformers calls | transformers self CPU |",
                    "|---|---:|---:|---:|---:|"]
            for op, ca, ta, cb, tb in tok["ops"]:
                out.append(f"| `{op}` | {ca:,} | {fmt_ms(ta)} | {cb:,} | {fmt_ms(tb)} |")
    if first:
        r, o = first["vs_ref"], first["ort"]
        q = {k: quartiles(v["wall"]) for k, v in first["res"]["meas"].items()}
        length = m["long"].lengths[0]
        lat = first["med"]
        out += ["", f"### First-token latency: a {length}-token prompt", "",
                f"The first {length} tokens of `pipelines/data/corpus.txt`, `max_new_tokens=1`: the prompt pass and "
                f"the first choice (first token equal on the three sides: {first['ids'][0]}); {first['iters']} "
                "iterations.", "",
                "| side | first-token latency [IQR] | **ratio latency** | paired [95% CI] | CPU-time ratio |",
                "|---|---:|---:|---:|---:|",
                f"| transformers `generate` | {fmt_spread(lat['transformers'], q['transformers'])} | 1 (reference) "
                "| | |",
                f"| composer, torch | {fmt_spread(lat['composer'], q['composer'])} | **{1 / r['ratio']:.3f}** "
                f"composer / transformers | {1 / r['paired']:.3f} [{1 / r['hi']:.3f}, {1 / r['lo']:.3f}] | "
                f"{1 / r['ratio_cpu']:.3f} |",
                f"| composer, onnxruntime | {fmt_spread(lat['onnxruntime'], q['onnxruntime'])} | "
                f"**{1 / o['ratio']:.3f}** onnxruntime / torch | {1 / o['paired']:.3f} [{1 / o['hi']:.3f}, "
                f"{1 / o['lo']:.3f}] | {1 / o['ratio_cpu']:.3f} |"]
        out += where_table(first["where"], 1, long=True)
    out += ["", *findings(m, tok, first)]
    out += ["", "- Shared 2-core machine: absolute times vary run to run; the ratios measured in one run are the "
                "figures."]
    return "\n".join(out)


def _cell(w: dict, label: str, i: int) -> str:
    return fmt_ms(w[label][i]) if label in w else "–"


def where_table(where: dict, n: int, long: bool) -> list[str]:
    if not where:
        return []
    calls = min(w["calls"] for w in where.values() if w)
    rows = ["", f"Where the time goes, recorded during the timed calls (median over {calls}+ calls per side): forward "
                "hooks on the model, its 12 attention layers (projections, cache concatenation, mask and "
                "`scaled_dot_product_attention`), its 12 MLPs and its LM head on both torch sides alike (about "
                "50 hook calls per forward, some 0.1 ms), a timed `session.run` for onnxruntime. \"Between "
                "forwards\" is the generation loop's own time per step (choosing the token, bookkeeping, preparing "
                "the next feed).", ""]
    if long:
        rows += ["| side | whole call | prompt pass | of which attention | of which MLPs | of which LM head "
                 "| outside the forward |",
                 "|---|---:|---:|---:|---:|---:|---:|"]
        for k in SIDES:
            w = where.get(k)
            if w:
                rows.append(f"| {k} | {fmt_ms(w['total'])} | {fmt_ms(w['prompt'])} | {_cell(w, 'attention', 0)} | "
                            f"{_cell(w, 'mlp', 0)} | {_cell(w, 'lm_head', 0)} | {fmt_ms(w['outside'])} |")
        return rows
    rows += ["| side | whole call | prompt pass | of which LM head | step forward | of which attention "
             "| of which MLPs | of which LM head | between forwards | outside the forwards, whole call |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for k in SIDES:
        w = where.get(k)
        if w:
            rows.append(f"| {k} | {fmt_ms(w['total'])} | {fmt_ms(w['prompt'])} | {_cell(w, 'lm_head', 0)} | "
                        f"{fmt_ms(w['step'])} | {_cell(w, 'attention', 1)} | {_cell(w, 'mlp', 1)} | "
                        f"{_cell(w, 'lm_head', 1)} | {fmt_ms(w['gap'])} | {fmt_ms(w['outside'])} |")
    return rows


def _signed(ms: float) -> str:
    return ("+" if ms >= 0 else "−") + fmt_ms(abs(ms))


def findings(m: dict, tok: Optional[dict], first: Optional[dict]) -> list[str]:
    out = []
    vocab = m["gen"].roles.vocab
    layers = m["gen"].roles.cache_shape[0]
    if tok:
        r = tok["vs_ref"]
        c, h = tok["where"].get("composer"), tok["where"].get("transformers")
        line = (f"- Tokens/s, composer / transformers: **{r['ratio']:.3f}** (paired {r['paired']:.3f} "
                f"[{r['lo']:.3f}, {r['hi']:.3f}]; target ≥ {TARGET}: {verdict(r)}); onnxruntime / torch: "
                f"**{tok['ort']['ratio']:.3f}**.")
        if c and h:
            steps = c["forwards"] - 1
            d_step = c["step"] - h["step"]
            parts = ", ".join(f"{lab.replace('_', ' ')} {_signed(c[lab][1] - h[lab][1])}" for lab in PARTS)
            line += (f" Against transformers, per call composer spends {_signed(c['prompt'] - h['prompt'])} in the "
                     f"prompt pass (its LM head {_signed(c['lm_head'][0] - h['lm_head'][0])}), "
                     f"{_signed(d_step)} in each of the {steps} step forwards ({parts}; the rest "
                     f"{_signed(d_step - sum(c[lab][1] - h[lab][1] for lab in PARTS))}: embedding, LayerNorms, the "
                     f"cache stacking of `DecoderStack`) and {_signed(c['gap'] - h['gap'])} per step between "
                     "forwards (its loop is the leaner one).")
        out.append(line)
        if c and h and c["attention"][1] > h["attention"][1]:
            out.append(f"- Attention per step: composer's 12 layers {fmt_ms(c['attention'][1])}, transformers' "
                       f"{fmt_ms(h['attention'][1])}. composer's `attend` (blocks/core/attention.py) rebuilds the "
                       "mask in every layer of every step from the (B, P + T) key mask: `key_padding_mask` (`to(bool)`, "
                       "`any`, `~`, `|`), the causal `ones(T, S).tril`, their `&`, then an additive float mask "
                       "(`zeros(...).masked_fill(~keep, min)`), and `scaled_dot_product_attention` runs with that "
                       "mask; transformers builds its mask once per forward and, with no padding, passes none. "
                       + (f"One layer's call at S = {tok['masks']['s']} measured alone: `attend` with the key mask "
                          f"and `causal=True` {tok['masks']['attend']:.0f} µs, `scaled_dot_product_attention` "
                          f"without a mask {tok['masks']['sdpa']:.0f} µs, "
                          f"{layers * (tok['masks']['attend'] - tok['masks']['sdpa']) / 1e3:.2f} ms per step over "
                          f"{layers} layers." if tok.get("masks") else ""))
        cat = {op: (ca, cb) for op, ca, _, cb, _ in tok.get("ops", [])}.get("aten::cat")
        if c and cat and cat[0] > cat[1]:
            steps = c["forwards"]
            out.append(f"- `aten::cat` runs {cat[0] / steps:.0f} times per forward in composer against "
                       f"{cat[1] / steps:.0f} in transformers: besides the per-layer `torch.cat` of the past and the "
                       "new keys and values (which transformers' cache does too), `DecoderStack.forward` stacks each "
                       "layer's (keys, values) (`torch.stack(kv)`) and then all layers (`torch.stack(present)`), "
                       "so every step copies the whole cache twice more, a cost that grows with the cached length.")
    if first:
        r = first["vs_ref"]
        c, h = first["where"].get("composer"), first["where"].get("transformers")
        length = m["long"].lengths[0]
        line = (f"- First token after {length} tokens, composer / transformers latency: **{1 / r['ratio']:.3f}** "
                f"(paired {1 / r['paired']:.3f} [{1 / r['hi']:.3f}, {1 / r['lo']:.3f}]); onnxruntime / torch: "
                f"**{1 / first['ort']['ratio']:.3f}**.")
        if c and h:
            line += (f" In the prompt pass composer's LM head takes {fmt_ms(c['lm_head'][0])} against transformers' "
                     f"{fmt_ms(h['lm_head'][0])}: composer's model returns logits [B, T, V] for all {length} positions "
                     f"({length} × {vocab:,} × 768 multiply-adds) and `DecoderOnly._run` keeps the last; "
                     "transformers' `generate` passes `logits_to_keep=1` and scores the last position only "
                     f"(the exported ONNX graph computes all {length} too). Without the LM head composer's prompt "
                     f"pass is {fmt_ms(c['prompt'] - c['lm_head'][0])} against "
                     f"{fmt_ms(h['prompt'] - h['lm_head'][0])}; attention {fmt_ms(c['attention'][0])} against "
                     f"{fmt_ms(h['attention'][0])}, MLPs {fmt_ms(c['mlp'][0])} against {fmt_ms(h['mlp'][0])}.")
        out.append(line)
    return out


def main(argv: list[str] | None = None) -> int:
    args, minutes, parts, write = parse_options(argv, __doc__, list(PART_WEIGHTS), 9.0, "torch and onnxruntime",
                                                "8 new tokens, a 128-token long prompt")
    torch.set_num_threads(args.threads)
    load0 = os.getloadavg()
    import onnxruntime as ort
    import transformers
    info = machine(f"transformers {transformers.__version__}, onnxruntime {ort.__version__}")
    start = T0

    def log(msg: str) -> None:
        print(f"[{time.perf_counter() - start:6.1f} s] {msg}", flush=True)

    log(f"{info}; torch threads {torch.get_num_threads()}; load average {load0[0]:.2f}")
    results: dict = {}
    with tempfile.TemporaryDirectory(prefix="bench_generate.") as d:
        m = models(log, args.quick)
        onnx = export(m, Path(d), args.threads, log)
        total = minutes * 60 - (time.perf_counter() - start) - 15      # the report and a margin
        for p, section in sections(parts, PART_WEIGHTS, total):
            log(f"{p}: {section.left():.0f} s")
            if p == "tokens":
                results[p] = bench_tokens(m, onnx, section, args.quick, log)
            else:
                results[p] = bench_first(m, onnx, section, args.quick, log)
            gc.collect()
        text = report(info, args.threads, load0, time.perf_counter() - start, args.quick, m, onnx,
                      results.get("tokens"), results.get("first"))
        onnx["gen"].close()
    publish(SECTION, text, write=write)
    return 0


if __name__ == "__main__":
    sys.exit(main())

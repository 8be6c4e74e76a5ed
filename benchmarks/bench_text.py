"""BERT-base (`pipelines/bert_base.yaml`) against `transformers`: eager latency with the same
weights, onnxruntime against torch eager, and tokenizer throughput.

1. **Latency** — composer's compiled BERT-base against `transformers.BertModel(BertConfig())`
   (attention "sdpa", eval), the transformers state dict saved with `save_pretrained` into a temp
   folder and loaded into ours with `composer.weights.load_weights(..., rename=RENAME)`. Before
   saving, the reference's LayerNorm and bias tensors are drawn at random (its init leaves them
   1 and 0, as ours does), so a key mapped onto the wrong tensor changes the outputs. Both
   outputs (`hidden`, `pooled`) are checked first (max abs diff ≤ 1e-4 at every timed batch).
   Token ids random in the vocabulary, full attention mask, token types 0, sequence length 128,
   batch 1 and 8; composer's module gets the `tokens` / `mask` / `token_types` tensors directly.
   Both run under `torch.inference_mode()`, interleaved in rotating order, median per side; the
   ratio composer / transformers is the figure (target ≤ 1.02). A third function in the same
   rotation, composer's module with `mask=None` (transformers drops an all-ones mask and runs
   attention without one), shows what the mask costs; one profiled forward of each side is
   compared op by op, and one attention call is timed with and without the mask.
2. **onnxruntime / torch** — the same composer model (transformers' weights in it) exported once
   with `composer.export(..., verify=False)`, run in onnxruntime through
   `composer.runtime.Session(device="cpu")` (CPU provider) against torch eager, same inputs,
   batch 1 and 8 at length 128, interleaved; ratio ORT / torch and the max abs diff.
3. **Tokenizer** — the spec's `tok` block (trained at load time from `pipelines/data/corpus.txt`),
   as `preprocess` runs it (`PreStage(pipe.graph)`) and as the bare block runtime, against
   `BertTokenizerFast` loaded from a folder holding that vocabulary as `vocab.txt`; ids, mask and
   token types checked equal first. A batch of 64 sentences from the corpus, padding to the
   longest; sentences per second and the ratio composer / transformers (target ≥ 0.95).

torch runs with `torch.set_num_threads(--threads)` for the whole run, onnxruntime with as many
intra-op threads and the tokenizers' Rust thread pool with as many (`RAYON_NUM_THREADS`). The
default is 1: on the shared 2-core machines the second core comes and goes, and while it is away
an OpenMP pool of two stalls at every op (a 1024² matmul measured 40 ms with two threads against
25 ms with one, and a batch-1 attention call 8 ms against 0.9 ms), which swamps the differences
this benchmark looks for; one thread is steady. The run keeps to `--minutes`
(default 9, so about 10 with start-up): every timing loop gets a share of what is left of its
section's time, and a few iterations at least. The machines are shared: ratios measured in one
run are the figures; absolute times are quoted with the machine they came from.

    .venv/bin/python benchmarks/bench_text.py [--minutes 9] [--threads 1] [--only tokenizer,latency,onnx] [--no-write]
"""

from __future__ import annotations

import argparse
import datetime as _dt
import gc
import os
import re
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Optional

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")          # nothing is ever downloaded
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

import composer  # noqa: E402
from composer.weights import load_weights  # noqa: E402
from _results import (Section, fmt_ms, fmt_spread, interleave, machine, median_ci, op_counts,  # noqa: E402
                      publish, quartiles, ratio_stats, sections)  # (benchmarks/ is on sys.path)

SECTION = "## Text"
SPEC = ROOT / "pipelines" / "bert_base.yaml"
CORPUS = ROOT / "pipelines" / "data" / "corpus.txt"
TARGET = 1.02               # composer / transformers latency
TOK_TARGET = 0.95           # composer / transformers tokenizer throughput
TOLERANCE = 1e-4
SEQ = 128
BATCHES = (1, 8)
TOK_BATCH = 64
# shares of --minutes, in running order: the tokenizer first (cheap), the export last
SECTION_WEIGHTS = {"tokenizer": 0.08, "latency": 0.50, "onnx": 0.42}
# batch: (weight of the section's time, minimum iterations, warm-up rounds)
RUNS = {1: (1.0, 8, 2), 8: (1.5, 4, 1)}
NO_MASK = "composer, mask=None"   # the diagnostic third function of the latency runs

# transformers' BertModel keys -> the keys of pipelines/bert_base.yaml's compiled module
RENAME = [
    (r"^embeddings\.word_embeddings\.", "emb.word."),
    (r"^embeddings\.position_embeddings\.", "emb.position."),
    (r"^embeddings\.token_type_embeddings\.", "emb.token_type."),
    (r"^embeddings\.LayerNorm\.", "emb.norm."),
    (r"^encoder\.layer\.(\d+)\.attention\.self\.(query|key|value)\.", r"encoder.layers.\1.self_attention.\2."),
    (r"^encoder\.layer\.(\d+)\.attention\.output\.dense\.", r"encoder.layers.\1.self_attention.out_proj."),
    (r"^encoder\.layer\.(\d+)\.attention\.output\.LayerNorm\.", r"encoder.layers.\1.ln_1."),
    (r"^encoder\.layer\.(\d+)\.intermediate\.dense\.", r"encoder.layers.\1.mlp.0."),
    (r"^encoder\.layer\.(\d+)\.output\.dense\.", r"encoder.layers.\1.mlp.3."),
    (r"^encoder\.layer\.(\d+)\.output\.LayerNorm\.", r"encoder.layers.\1.ln_2."),
    (r"^pooler\.dense\.", "pooler."),
]

# what an op-count difference between the two forwards is (ours vs transformers')
OP_HINTS = [
    (("aten::any", "aten::bitwise_not", "aten::bitwise_or", "aten::__or__"),
     "composer turns the [B, T] mask into a boolean [B, 1, 1, T] once per forward (`key_padding_mask`: "
     "`mask.to(bool)`, and a row of all padding attends everywhere: `any`, `~`, `|`)"),
    (("aten::all", "aten::item", "aten::is_nonzero", "aten::_local_scalar_dense"),
     "transformers checks whether the mask is all ones (`all` + `item`, one host sync) and then passes no mask "
     "to attention at all"),
    (("aten::where", "aten::scalar_tensor"),
     "`scaled_dot_product_attention` on CPU turns a boolean mask into an additive float one inside each call "
     "(2 per layer); transformers, with no mask, skips it"),
    (("aten::dropout",),
     "more `nn.Dropout` modules (identity in eval mode: the embedding's, one after attention and two in "
     "`MLPBlock` per layer, against transformers' two per layer)"),
    (("aten::embedding", "aten::index_select"),
     "composer adds the position table by slicing (`position.weight[:T]`), transformers looks up "
     "`position_ids` in it"),
]
VIEW_OPS = {"aten::as_strided", "aten::flatten", "aten::unflatten", "aten::view", "aten::reshape", "aten::permute",
            "aten::transpose", "aten::slice", "aten::select", "aten::expand", "aten::_unsafe_view",
            "aten::_reshape_alias", "aten::unsqueeze", "aten::t", "aten::contiguous", "aten::empty",
            "aten::empty_like", "aten::empty_strided", "aten::resolve_conj", "aten::to", "aten::_to_copy",
            "aten::copy_", "aten::fill_"}


# ---- timing -------------------------------------------------------------------------------------


def verdict(r: dict, target: float = TARGET) -> str:
    if r["ratio"] <= target:
        return "met"
    return "not met, within noise" if r["lo"] <= target else "**NOT met**"


# ---- the models ---------------------------------------------------------------------------------


def _quiet_transformers():
    import transformers
    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    try:
        import huggingface_hub.utils as hub_utils
        hub_utils.disable_progress_bars()
    except Exception:   # an older hub: the bar is only noise
        pass
    return transformers


def inputs(batch: int) -> dict[str, torch.Tensor]:
    """Random ids in BERT's vocabulary, a full mask, token types 0: (B, 128) int64 each."""
    g = torch.Generator().manual_seed(100 + batch)
    return {"tokens": torch.randint(0, 30522, (batch, SEQ), generator=g),
            "mask": torch.ones(batch, SEQ, dtype=torch.int64),
            "token_types": torch.zeros(batch, SEQ, dtype=torch.int64)}


def models(tmp: Path, log) -> dict:
    """transformers' BertModel and composer's BERT-base with its weights, checked equal."""
    transformers = _quiet_transformers()
    t0 = time.perf_counter()
    torch.manual_seed(0)
    config = transformers.BertConfig(attn_implementation="sdpa")
    ref = transformers.BertModel(config).eval()
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():   # its init leaves LayerNorms at 1/0 and biases at 0, as ours: draw them
        for name, p in ref.named_parameters():
            if "LayerNorm" in name:
                p.copy_((1.0 if name.endswith("weight") else 0.0) + 0.1 * torch.randn(p.shape, generator=g))
            elif name.endswith(".bias"):
                p.copy_(0.02 * torch.randn(p.shape, generator=g))
    t_ref = time.perf_counter() - t0
    t0 = time.perf_counter()
    pipe = composer.load(SPEC)
    ours = pipe.build(seed=0).eval()
    t_ours = time.perf_counter() - t0
    folder = tmp / "bert-hf"
    ref.save_pretrained(folder)
    report = load_weights(ours, folder, rename=RENAME)
    n_ref = sum(p.numel() for p in ref.parameters())
    n_ours = sum(p.numel() for p in ours.parameters())
    log(f"transformers BertModel built in {t_ref:.1f} s ({n_ref:,} params, attention "
        f"{ref.config._attn_implementation}); composer {SPEC.name} loaded + built in {t_ours:.1f} s ({n_ours:,} "
        f"params, inputs {', '.join(ours.input_names)}); weights: {report.describe()}")
    parity = {}
    with torch.inference_mode():
        for b in BATCHES:
            x = inputs(b)
            got = ours(**x)
            want = ref(input_ids=x["tokens"], attention_mask=x["mask"], token_type_ids=x["token_types"])
            d_hidden = float((got["hidden"] - want.last_hidden_state).abs().max())
            d_pooled = float((got["pooled"] - want.pooler_output).abs().max())
            parity[b] = (d_hidden, d_pooled, float(want.last_hidden_state.abs().max()))
            log(f"  parity batch {b}: max abs diff hidden {d_hidden:.1e}, pooled {d_pooled:.1e} "
                f"(max |hidden| {parity[b][2]:.2f})")
            if max(d_hidden, d_pooled) > TOLERANCE:
                raise SystemExit(f"composer and transformers disagree at batch {b}: max abs diff hidden {d_hidden:.2e}, "
                                 f"pooled {d_pooled:.2e} (> {TOLERANCE:g}); not timing different functions")
    return {"pipe": pipe, "ours": ours, "ref": ref, "parity": parity, "weights": report.describe(),
            "strategy": report.strategy, "params": (n_ours, n_ref), "transformers": transformers.__version__}


# ---- 1. latency against transformers ------------------------------------------------------------


def op_diff(ours: dict[str, int], ref: dict[str, int]) -> tuple[list[str], list[str]]:
    """(explained differences, view/copy-only differences) between two forwards' op counts."""
    differ = {k: (ours.get(k, 0), ref.get(k, 0)) for k in set(ours) | set(ref) if ours.get(k, 0) != ref.get(k, 0)}
    explained, views = [], []
    for ops, hint in OP_HINTS:
        seen = [o for o in ops if o in differ]
        if seen:
            counts = ", ".join(f"`{o}` {differ[o][0]} vs {differ[o][1]}" for o in seen)
            explained.append(f"{counts}: {hint}")
            for o in seen:
                differ.pop(o)
    for k in sorted(differ):
        a, b = differ[k]
        (views if k in VIEW_OPS else explained).append(f"`{k}` {a} vs {b}")
    return explained, views


def mask_cost(batch: int, reps: int = 60) -> tuple[float, float]:
    """One BERT-base attention call ((B, 12, 128, 64) q, k, v) without a mask and with composer's boolean
    [B, 1, 1, T] mask, interleaved: (median ms without, median ms with)."""
    g = torch.Generator().manual_seed(7)
    q, k, v = (torch.randn(batch, 12, SEQ, 64, generator=g) for _ in range(3))
    keep = torch.ones(batch, 1, 1, SEQ, dtype=torch.bool)
    sdpa = torch.nn.functional.scaled_dot_product_attention
    res = interleave({"none": lambda: sdpa(q, k, v), "mask": lambda: sdpa(q, k, v, attn_mask=keep)},
                     0.0, reps, 3, context=torch.inference_mode)
    return statistics.median(res["meas"]["none"]["wall"]), statistics.median(res["meas"]["mask"]["wall"])


def bench_latency(m: dict, section: Section, log) -> dict:
    ours, ref = m["ours"], m["ref"]
    rows = []
    weights_left = sum(w for w, _, _ in RUNS.values())
    for b, (weight, min_iters, warm) in RUNS.items():
        x = inputs(b)
        no_mask = {**x, "mask": None}
        fns = {"composer": lambda x=x: ours(**x),
               "transformers": lambda x=x: ref(input_ids=x["tokens"], attention_mask=x["mask"],
                                               token_type_ids=x["token_types"]),
               # diagnostic: composer's forward with no mask at all, as transformers runs an all-ones mask
               NO_MASK: lambda no_mask=no_mask: ours(**no_mask)}
        res = interleave(fns, section.share(weight, weights_left, reserve=8.0), min_iters, warm, hard_end=section.end,
                         context=torch.inference_mode)
        weights_left -= weight
        r = ratio_stats(res, "composer", "transformers")
        r.update(batch=b, verdict=verdict(r), no_mask=ratio_stats(res, NO_MASK, "transformers"),
                 mask_share=ratio_stats(res, "composer", NO_MASK))
        rows.append(r)
        log(f"  torch b{b}: composer {r['a']:.1f} ms vs transformers {r['b']:.1f} ms, ratio {r['ratio']:.3f} "
            f"(paired {r['paired']:.3f} [{r['lo']:.3f}, {r['hi']:.3f}], CPU {r['ratio_cpu']:.3f}); composer without "
            f"the mask {r['no_mask']['a']:.1f} ms, ratio {r['no_mask']['ratio']:.3f}; {r['iters']} iterations")
    x = inputs(1)
    ops_ours = op_counts(lambda: ours(**x), torch.inference_mode)
    ops_ref = op_counts(lambda: ref(input_ids=x["tokens"], attention_mask=x["mask"], token_type_ids=x["token_types"]),
                        torch.inference_mode)
    explained, views = op_diff(ops_ours, ops_ref)
    masks = {b: mask_cost(b) for b in BATCHES}
    for b, (t0, t1) in masks.items():
        log(f"  one attention call b{b}: {t0 * 1e3:.0f} µs without a mask, {t1 * 1e3:.0f} µs with composer's")
    return {"rows": rows, "explained": explained, "views": views, "masks": masks}


# ---- 2. onnxruntime against torch ---------------------------------------------------------------


def bench_onnx(m: dict, tmp: Path, section: Section, threads: int, log) -> dict:
    from composer.runtime import Session
    path = tmp / "bert_base.onnx"
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        report = composer.export(m["ours"], path, pipeline=m["pipe"], verify=False)
    export_s = time.perf_counter() - t0
    sess = Session(path, device="cpu", threads=threads, spinning=False)
    assert sess.device == "cpu", sess.providers
    log(f"  exported in {export_s:.1f} s ({report['exporter']}, opset {report['opset']}, "
        f"{report['file_bytes'] / 2**20:.0f} MiB); onnxruntime on {', '.join(sess.providers)}, {threads} threads")
    rows = []
    weights_left = sum(w for w, _, _ in RUNS.values())
    ours = m["ours"]
    for b, (weight, min_iters, warm) in RUNS.items():
        x = inputs(b)
        feed = {k: v.numpy() for k, v in x.items()}
        with torch.inference_mode():
            want = ours(**x)
        got = sess.run(feed)
        diff = {k: float(np.abs(got[k] - want[k].numpy()).max()) for k in ("hidden", "pooled")}
        fns = {"onnxruntime": lambda feed=feed, sess=sess: sess.run(feed), "torch": lambda x=x: ours(**x)}
        res = interleave(fns, section.share(weight, weights_left, reserve=3.0), min_iters, warm, hard_end=section.end,
                         context=torch.inference_mode)
        weights_left -= weight
        r = ratio_stats(res, "onnxruntime", "torch")
        r.update(batch=b, diff=diff)
        rows.append(r)
        log(f"  b{b}: onnxruntime {r['a']:.1f} ms vs torch {r['b']:.1f} ms, ratio {r['ratio']:.3f} (paired "
            f"{r['paired']:.3f} [{r['lo']:.3f}, {r['hi']:.3f}]), max abs diff hidden {diff['hidden']:.1e}, pooled "
            f"{diff['pooled']:.1e}, {r['iters']} iterations")
    del sess
    return {"rows": rows, "export_s": export_s, "exporter": report["exporter"], "opset": report["opset"],
            "mib": report["file_bytes"] / 2**20}


# ---- 3. tokenizer -------------------------------------------------------------------------------


def sentences(n: int) -> tuple[list[str], int]:
    """`n` sentences of the corpus (its lines split at sentence ends, cycled), and how many are distinct."""
    text = CORPUS.read_text(encoding="utf-8")
    found = [s.strip() for s in re.split(r"(?<=[.!?])\s+|\n", text) if s.strip()]
    return [found[i % len(found)] for i in range(n)], len(found)


def bench_tokenizer(tmp: Path, section: Section, log) -> dict:
    transformers = _quiet_transformers()
    from composer.stages import PreStage
    pipe = composer.load(SPEC)
    pre = PreStage(pipe.graph)
    block = pre.runtime("tok")
    vocab = block.tok.get_vocab(with_added_tokens=True)
    by_id = sorted(vocab.items(), key=lambda kv: kv[1])
    if [i for _, i in by_id] != list(range(len(by_id))):
        raise SystemExit("the trained vocabulary's ids are not 0..n-1: cannot write it as a vocab.txt")
    folder = tmp / "tok-hf"
    folder.mkdir()
    (folder / "vocab.txt").write_text("".join(f"{t}\n" for t, _ in by_id), encoding="utf-8")
    # from the folder: transformers 5's BertTokenizerFast(vocab_file=...) ignores the file and keeps 5 tokens
    hf = transformers.BertTokenizerFast.from_pretrained(str(folder))
    batch, distinct = sentences(TOK_BATCH)
    a = pre({"text": batch})
    h = hf(batch, padding="longest", return_tensors="np")
    same = all(a[k].shape == h[j].shape and np.array_equal(a[k], h[j])
               for k, j in (("tokens", "input_ids"), ("mask", "attention_mask"), ("token_types", "token_type_ids")))
    if not same:
        raise SystemExit("composer's tokenizer and BertTokenizerFast give different ids for the same sentences")
    shape = a["tokens"].shape
    log(f"  vocabulary of {len(by_id)} trained from {CORPUS.name}; {TOK_BATCH} sentences ({distinct} distinct) -> "
        f"ids {shape[0]}×{shape[1]}, equal to BertTokenizerFast's (ids, mask, token types)")
    fns = {"preprocess": lambda: pre({"text": batch}), "block": lambda: block(batch),
           "transformers": lambda: hf(batch, padding="longest", return_tensors="np")}
    res = interleave(fns, section.left(reserve=1.0), 50, 5, context=torch.inference_mode)
    med = {n: statistics.median(v["wall"]) for n, v in res["meas"].items()}
    quart = {n: quartiles(v["wall"]) for n, v in res["meas"].items()}
    rows = []
    for n in ("preprocess", "block"):
        pairs = [y / x for x, y in zip(res["meas"][n]["wall"], res["meas"]["transformers"]["wall"]) if x > 0]
        paired, lo, hi = median_ci(pairs)
        rows.append({"name": n, "ms": med[n], "q": quart[n], "rate": TOK_BATCH / med[n] * 1e3,
                     "ratio": med["transformers"] / med[n], "paired": paired, "lo": lo, "hi": hi})
        log(f"  {n}: {rows[-1]['rate']:,.0f} sentences/s vs transformers {TOK_BATCH / med['transformers'] * 1e3:,.0f}, "
            f"ratio {rows[-1]['ratio']:.3f} (paired {paired:.3f} [{lo:.3f}, {hi:.3f}])")
    return {"rows": rows, "ref_ms": med["transformers"], "ref_q": quart["transformers"],
            "ref_rate": TOK_BATCH / med["transformers"] * 1e3, "iters": res["iters"], "vocab": len(by_id),
            "shape": shape, "distinct": distinct}


# ---- the report ---------------------------------------------------------------------------------


def report(info: str, threads: int, load0, wall_s: float, m: Optional[dict], lat: Optional[dict],
           onnx: Optional[dict], tok: Optional[dict]) -> str:
    when = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M")
    load1 = os.getloadavg()
    out = [f"`benchmarks/bench_text.py`, {when} UTC, {wall_s / 60:.1f} min. Machine: {info}; "
           f"`torch.set_num_threads({threads})` for the whole run, onnxruntime {threads} intra-op "
           f"thread{'s' if threads > 1 else ''}, `RAYON_NUM_THREADS={threads}` for tokenizers. "
           f"Load average (1 / 5 / 15 min) at start {load0[0]:.2f} / {load0[1]:.2f} / {load0[2]:.2f}, at the end "
           f"{load1[0]:.2f} / {load1[1]:.2f} / {load1[2]:.2f}."]
    if load0[0] > 0.75 * os.cpu_count():
        out += ["", f"**Taken while the machine was shared** (1-minute load average {load0[0]:.2f} at start on "
                    f"{os.cpu_count()} CPUs): absolute times are inflated and noisy; the ratios, measured "
                    "interleaved in the same run, are the figures to compare."]
    if m is not None:
        par = "; ".join(f"batch {b}: hidden {dh:.1e}, pooled {dp:.1e}" for b, (dh, dp, _) in m["parity"].items())
        out += ["", "### BERT-base against transformers' BertModel (eager CPU, same weights)", "",
                f"`transformers.BertModel(BertConfig(attn_implementation=\"sdpa\"))` (transformers {m['transformers']}, "
                f"{m['params'][1]:,} parameters; LayerNorms and biases drawn at random) saved with `save_pretrained` "
                f"and loaded into `pipelines/bert_base.yaml` ({m['params'][0]:,} parameters) with `load_weights` and "
                f"{len(RENAME)} rename rules ({m['weights'].split(' from ')[0]}). Outputs checked first, max abs diff "
                f"{par} (≤ {TOLERANCE:g} required). Random ids, full mask, token types 0, length {SEQ}; "
                "`torch.inference_mode()` both sides; composer's module called with `tokens`, `mask`, `token_types`. "
                "Interleaved in rotating order (with the † diagnostic below), median per side with the "
                "interquartile range; the paired column is the median of per-iteration ratios with a 95% CI."]
    if lat:
        out += ["", "| batch × length | iters | transformers | composer | **ratio** | paired [95% CI] | CPU-time ratio "
                    f"| target ≤ {TARGET} | composer, `mask=None` † | † / transformers | composer / † |",
                "|---|---:|---:|---:|---:|---:|---:|:--|---:|---:|---:|"]
        for r in lat["rows"]:
            nm, ms = r["no_mask"], r["mask_share"]
            out.append(f"| {r['batch']} × {SEQ} | {r['iters']} | {fmt_spread(r['b'], r['b_q'])} | "
                       f"{fmt_spread(r['a'], r['a_q'])} | **{r['ratio']:.3f}** | {r['paired']:.3f} "
                       f"[{r['lo']:.3f}, {r['hi']:.3f}] | {r['ratio_cpu']:.3f} | {r['verdict']} | "
                       f"{fmt_ms(nm['a'])} | {nm['ratio']:.3f} ({nm['paired']:.3f} [{nm['lo']:.3f}, {nm['hi']:.3f}]) | "
                       f"{ms['ratio']:.3f} ({ms['paired']:.3f} [{ms['lo']:.3f}, {ms['hi']:.3f}]) |")
        out += ["", "- † Diagnostic, timed in the same rotation (composer, transformers and †, every order equally "
                    "often): composer's module called with `mask=None`, so its attention runs without a mask as "
                    "transformers' does for an all-ones mask (it checks the mask and drops it). Same outputs here, "
                    "since the mask is full. `composer / †` is what building and applying the mask costs composer; "
                    "in brackets the paired per-iteration ratio and its 95% CI."]
        text = "; ".join(lat["explained"]) if lat["explained"] else "no compute op differs"
        if lat["views"]:
            text += f" (view, copy and allocation ops differ too: {', '.join(lat['views'])})"
        out.append(f"- One forward at batch 1, op counts, composer vs transformers: {text}.")
        parts = [f"batch {b}: {t0 * 1e3:,.0f} µs without, {t1 * 1e3:,.0f} µs with ({t1 / t0:.3f}×)"
                 for b, (t0, t1) in lat["masks"].items()]
        out.append("- One attention call alone (`scaled_dot_product_attention` on (B, 12, 128, 64), interleaved, "
                   "without a mask and with composer's boolean (B, 1, 1, T) one): " + "; ".join(parts) + ".")
        miss = [r for r in lat["rows"] if r["ratio"] > TARGET]
        out.append(f"- Above {TARGET}: " + ("; ".join(f"batch {r['batch']} ({r['ratio']:.3f}, paired {r['paired']:.3f} "
                                                      f"[{r['lo']:.3f}, {r['hi']:.3f}])" for r in miss)
                                            if miss else "none") + ".")
    if onnx:
        out += ["", "### onnxruntime against torch eager (composer's BERT-base)", "",
                f"The model above (transformers' weights in it) exported once with `composer.export(..., verify=False)`: "
                f"{onnx['export_s']:.1f} s ({onnx['exporter']} exporter, opset {onnx['opset']}, {onnx['mib']:.0f} MiB), "
                f"run through `composer.runtime.Session(device=\"cpu\", threads={threads}, spinning=False)` (CPU "
                "provider, graph optimisation `all`) against torch eager on the same inputs, interleaved. Ratio < 1: "
                "onnxruntime is faster.", "",
                "| batch × length | iters | torch eager | onnxruntime | **ratio ORT / torch** | paired [95% CI] "
                "| CPU-time ratio | max abs diff hidden | max abs diff pooled |",
                "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for r in onnx["rows"]:
            out.append(f"| {r['batch']} × {SEQ} | {r['iters']} | {fmt_spread(r['b'], r['b_q'])} | "
                       f"{fmt_spread(r['a'], r['a_q'])} | **{r['ratio']:.2f}** | {r['paired']:.2f} "
                       f"[{r['lo']:.2f}, {r['hi']:.2f}] | {r['ratio_cpu']:.2f} | {r['diff']['hidden']:.1e} | "
                       f"{r['diff']['pooled']:.1e} |")
    if tok:
        out += ["", "### Tokenizer against transformers' BertTokenizerFast", "",
                f"The spec's `tok` block (WordPiece, {tok['vocab']} tokens trained from `pipelines/data/corpus.txt` at "
                "load time; the size and the ids change from process to process, since `tokenizers`' trainer is not "
                "deterministic (huggingface/tokenizers#1794), so the vocabulary is written out in the same run) against `BertTokenizerFast.from_pretrained(folder)`, the folder holding that vocabulary "
                f"as `vocab.txt`; {TOK_BATCH} sentences of the corpus ({tok['distinct']} distinct, cycled), padding to "
                f"the longest: ids {tok['shape'][0]}×{tok['shape'][1]}, mask and token types equal on both sides "
                "(checked first). `preprocess` is what `model.preprocess(text=…)` runs (`PreStage`: the graph's "
                "pre-processing blocks); `block` the tokenizer's stage runtime alone. Both return int64 numpy "
                "arrays, as `return_tensors=\"np\"` does. Interleaved in rotating order, "
                f"{tok['iters']:,} iterations, median per side with the interquartile range; both sides run the same "
                f"Rust `tokenizers` library ({threads} thread{'s' if threads > 1 else ''}).", "",
                f"| composer | composer time per batch | transformers time per batch | composer sentences/s "
                f"| transformers sentences/s | **ratio composer / transformers** | paired [95% CI] "
                f"| target ≥ {TOK_TARGET} |",
                "|---|---:|---:|---:|---:|---:|---:|:--|"]
        for r in tok["rows"]:
            ok = "met" if r["ratio"] >= TOK_TARGET else ("not met, within noise" if r["hi"] >= TOK_TARGET
                                                         else "**NOT met**")
            out.append(f"| `{r['name']}` | {fmt_spread(r['ms'], r['q'])} | {fmt_spread(tok['ref_ms'], tok['ref_q'])} | "
                       f"{r['rate']:,.0f} | {tok['ref_rate']:,.0f} | **{r['ratio']:.3f}** | {r['paired']:.3f} "
                       f"[{r['lo']:.3f}, {r['hi']:.3f}] | {ok} |")
    out += ["", "- Shared 2-core machine: absolute times vary run to run; the ratios measured in one run are the figures."]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=9.0, help="time for the whole run (default 9)")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch intra-op threads, and onnxruntime's and the tokenizers' (default 1)")
    ap.add_argument("--only", default="tokenizer,latency,onnx", help="comma list of: tokenizer, latency, onnx")
    ap.add_argument("--no-write", action="store_true", help="print only; leave RESULTS.md alone")
    args = ap.parse_args(argv)
    parts = [p for p in SECTION_WEIGHTS if p in {q.strip() for q in args.only.split(",")}]
    if args.threads < 1:
        ap.error("--threads must be 1 or more")
    torch.set_num_threads(args.threads)
    os.environ["RAYON_NUM_THREADS"] = str(args.threads)     # read when tokenizers first runs in parallel
    load0 = os.getloadavg()
    import onnxruntime as ort
    import tokenizers
    import transformers
    info = machine(f"transformers {transformers.__version__}, tokenizers {tokenizers.__version__}, "
                   f"onnxruntime {ort.__version__}")
    start = time.perf_counter()

    def log(msg: str) -> None:
        print(f"[{time.perf_counter() - start:6.1f} s] {msg}", flush=True)

    log(f"{info}; torch threads {torch.get_num_threads()}; load average {load0[0]:.2f}")
    results: dict = {}
    m = None
    with tempfile.TemporaryDirectory(prefix="bench_text.") as d:
        tmp = Path(d)
        if {"latency", "onnx"} & set(parts):
            m = models(tmp, log)
        total = args.minutes * 60 - (time.perf_counter() - start) - 10      # the report and a margin
        for p, section in sections(parts, SECTION_WEIGHTS, total):
            log(f"{p}: {section.left():.0f} s")
            if p == "tokenizer":
                results[p] = bench_tokenizer(tmp, section, log)
            elif p == "latency":
                results[p] = bench_latency(m, section, log)
            else:
                results[p] = bench_onnx(m, tmp, section, args.threads, log)
            gc.collect()
    text = report(info, args.threads, load0, time.perf_counter() - start, m, results.get("latency"),
                  results.get("onnx"), results.get("tokenizer"))
    publish(SECTION, text, write=not args.no_write)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Recurrent pipelines and the `lstm` block: onnxruntime against torch eager, and composer's `lstm`
against a bare `torch.nn.LSTM` with the same weights.

1. **onnxruntime / torch** — `pipelines/timeseries.yaml` (2-layer LSTM forecaster, `series`
   [B, T, 4]) and `pipelines/sequence_classifier.yaml` (2-layer bidirectional GRU + attention
   pooling, `series` [B, T, 6] and a boolean `mask` [B, T] with random lengths, the first row
   full), each built once (`composer.load(spec).build(seed=0)`) and exported once with
   `composer.export(model, path, pipeline=pipe, verify=False)` (traced at the spec's trace
   sizes, dynamic B and T; the LSTM/GRU layers lower to ONNX LSTM/GRU nodes with
   `sequence_lens`). onnxruntime runs through `composer.runtime.Session(device="cpu")` (CPU
   provider, graph optimisation `all`, idle workers not spinning so they leave the CPU to torch
   between calls) against the same module in torch eager (eval, `torch.no_grad`), T = 128 and
   512, batch 1 and 32; the outputs are compared once per size. Two runs per size: both at
   their default threads (all cores), by wall clock, and both at one thread, by wall clock and
   process CPU time. Ratio ORT / torch: below 1, onnxruntime is faster.
2. **composer `lstm` / bare `nn.LSTM`** — `LSTMBlock(hidden, layers, bidirectional).build(x=...)`
   with a bare `nn.LSTM(batch_first=True)`'s state dict loaded into it, outputs checked equal:
   the forecaster's encoder (input 4, hidden 64, 2 layers) and a bigger one (input 64, hidden
   256, 2 layers, bidirectional), T = 128 and 512, batch 1 and 32. Unmasked: composer's
   `forward(x)` against `nn.LSTM.forward(x)`, with a diagnostic third function in the rotation,
   the bare call plus composer's `last` (`h[-D:].transpose(0, 1).reshape(B, -1)`), which splits
   composer's extra time into that slicing and the rest of its Python forward (target ≤ 1.02).
   Masked, its own rows: composer with a `mask` (all real, then random lengths with the first
   row full) and, diagnostic, with the same `lengths`, against the bare module on
   `pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)` unpacked again
   with `pad_packed_sequence(..., total_length=T)` (the padded output composer returns).
   One thread (`--threads`, default 1): with two on the shared 2-core machine torch's OpenMP
   pool stalls at every time step whenever the second core is taken (a batch-1 forecaster step
   of 0.5 ms measured up to 0.8 s), which would swamp a 2% difference.

Every comparison runs its functions once per iteration in balanced rotating order
(`_results.interleave`) and reports the median per side with its interquartile range, the
median of the per-iteration ratios with a 95% CI, and the iterations it took. The run keeps to
`--minutes` (default 8.5, about 10 with the exports and start-up); every cell gets a share of
what is left of its part's time and a few iterations at least. `--quick` is a short smoke run
(T = 128 only, 1.5 minutes, nothing written unless asked with `--write`).

    .venv/bin/python benchmarks/bench_sequence.py [--minutes 8.5] [--threads 1] [--only onnx,lstm] [--quick] [--no-write]
"""

from __future__ import annotations

import datetime as _dt
import gc
import os
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Callable, Optional

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence  # noqa: E402

import composer  # noqa: E402
from blocks.sequence.rnn import LSTMBlock  # noqa: E402
from composer.types import PortType  # noqa: E402
from _results import (Section, fmt_spread, interleave, machine, op_counts, publish,  # noqa: E402  (benchmarks/ is on sys.path)
                      parse_options, ratio_stats, sections)

SECTION = "## Sequences"
TARGET = 1.02               # composer lstm / bare nn.LSTM
TOLERANCE = 1e-4            # onnxruntime against torch, max abs diff
LENGTHS = (128, 512)
BATCHES = (1, 32)
PIPELINES = {"LSTM forecaster": ("timeseries.yaml", 4), "GRU classifier": ("sequence_classifier.yaml", 6)}
# name: (input features, hidden, layers, bidirectional)
LSTMS = {"forecaster encoder": (4, 64, 2, False), "bigger": (64, 256, 2, True)}
PART_WEIGHTS = {"onnx": 0.40, "lstm": 0.60}
MIN_ITERS, WARMUP = 5, 1
SLICE = "bare + `last`"           # the diagnostic third function of the unmasked runs
LENGTHS_FN = "composer, `lengths`"  # the diagnostic of the masked runs


def random_lengths(batch: int, t: int, seed: int) -> torch.Tensor:
    """(B,) int64 lengths uniform in 1..T, the first row full."""
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(1, t + 1, (batch,), generator=g)
    lengths[0] = t
    return lengths


def mask_of(lengths: torch.Tensor, t: int) -> torch.Tensor:
    return torch.arange(t)[None, :] < lengths[:, None]               # (B, T) bool


def series(batch: int, t: int, features: int, seed: int) -> torch.Tensor:
    return torch.randn(batch, t, features, generator=torch.Generator().manual_seed(seed))


def cells(quick: bool) -> list[tuple[int, int]]:
    return [(t, b) for t in (LENGTHS[:1] if quick else LENGTHS) for b in BATCHES]


def _run(fns: dict[str, Callable[[], object]], section: Section, weight: float, weights_left: float,
         reserve: float) -> dict:
    return interleave(fns, section.share(weight, weights_left, reserve=reserve), MIN_ITERS, WARMUP,
                      hard_end=section.end)


# ---- 1. onnxruntime against torch ---------------------------------------------------------------


def bench_onnx(tmp: Path, section: Section, quick: bool, log) -> dict:
    from composer.runtime import Session
    default_threads = torch.get_num_threads()
    models = {}
    for label, (spec, features) in PIPELINES.items():
        pipe = composer.load(ROOT / "pipelines" / spec)
        model = pipe.build(seed=0).eval()
        path = tmp / spec.replace(".yaml", ".onnx")
        t0 = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            report = composer.export(model, path, pipeline=pipe, verify=False)
        export_s = time.perf_counter() - t0
        sessions = {th: Session(path, device="cpu", threads=th, spinning=False) for th in (None, 1)}
        for s in sessions.values():
            assert s.device == "cpu" and s.providers == ["CPUExecutionProvider"], s.providers
        import onnx
        ops = sorted({n.op_type for n in onnx.load(str(path)).graph.node} & {"LSTM", "GRU"})
        trace = {n: d["trace"] for n, d in report["dims"].items()}
        models[label] = {"spec": spec, "features": features, "model": model, "sessions": sessions,
                         "export_s": export_s, "exporter": report["exporter"], "opset": report["opset"],
                         "trace": trace, "rnn_ops": ops, "inputs": list(model.input_names)}
        log(f"  {spec}: exported in {export_s:.1f} s ({report['exporter']}, opset {report['opset']}, traced at "
            f"{trace}, ONNX {'/'.join(ops)} nodes)")
    runs = [(label, t, b, th) for label in models for t, b in cells(quick) for th in (None, 1)]
    weights_left = float(len(runs))
    rows = []
    for label, t, b, th in runs:
        m = models[label]
        model, sess = m["model"], m["sessions"][th]
        x = {"series": series(b, t, m["features"], seed=t + b)}
        if "mask" in m["inputs"]:
            x["mask"] = mask_of(random_lengths(b, t, seed=t * b), t)
        feed = {k: v.numpy() for k, v in x.items()}
        torch.set_num_threads(th or default_threads)
        try:
            with torch.no_grad():
                want = model(**x)
            got = sess.run(feed)
            diff = max(float(np.abs(got[k] - want[k].numpy()).max()) for k in got)
            if diff > TOLERANCE:
                raise SystemExit(f"{m['spec']} at B={b}, T={t}: onnxruntime and torch differ by {diff:.2e} "
                                 f"(> {TOLERANCE:g}); not timing different functions")
            res = _run({"onnxruntime": lambda: sess.run(feed), "torch": lambda: model(**x)}, section, 1.0,
                       weights_left, reserve=2.0)
        finally:
            torch.set_num_threads(default_threads)
        weights_left -= 1.0
        r = ratio_stats(res, "onnxruntime", "torch")
        real = int(x["mask"].sum()) if "mask" in x else b * t
        r.update(label=label, t=t, batch=b, threads=th, diff=diff, real=real / (b * t))
        rows.append(r)
        log(f"  [{th or 'all'} thr] {label} B={b} T={t}: onnxruntime {r['a']:.2f} ms vs torch {r['b']:.2f} ms, "
            f"ratio {r['ratio']:.2f} (paired {r['paired']:.2f} [{r['lo']:.2f}, {r['hi']:.2f}], CPU "
            f"{r['ratio_cpu']:.2f}), diff {diff:.1e}, {r['iters']} iterations")
    return {"rows": rows, "models": {k: {kk: vv for kk, vv in v.items() if kk not in ("model", "sessions")}
                                     for k, v in models.items()}, "threads": default_threads}


# ---- 2. composer's lstm against a bare nn.LSTM --------------------------------------------------


def lstm_pair(features: int, hidden: int, layers: int, bidirectional: bool) -> tuple[nn.Module, nn.Module]:
    """A bare nn.LSTM (batch first) and composer's `lstm` block holding its weights."""
    torch.manual_seed(features + hidden)
    bare = nn.LSTM(features, hidden, num_layers=layers, batch_first=True, bidirectional=bidirectional).eval()
    ours = LSTMBlock(hidden=hidden, layers=layers, bidirectional=bidirectional).build(
        x=PortType("series", ("B", "T", features))).eval()
    ours.load_state_dict(bare.state_dict())
    return ours, bare


def last_fn(ours: nn.Module, d: int, b: int) -> Callable[[torch.Tensor], torch.Tensor]:
    """How composer's forward makes `last` from h (layers·D, B, H): its `_last` where it has one, else the
    slicing its forward did inline."""
    own = getattr(ours, "_last", None)
    return own if own is not None else (lambda h: h[-d:].transpose(0, 1).reshape(b, -1))


def _check_equal(what: str, pairs: list[tuple[torch.Tensor, torch.Tensor]]) -> None:
    for a, b in pairs:
        if a.shape != b.shape or not torch.equal(a, b):
            d = float((a - b).abs().max()) if a.shape == b.shape else float("nan")
            raise SystemExit(f"{what}: composer's lstm and the bare nn.LSTM disagree (max abs diff {d:.2e}, shapes "
                             f"{tuple(a.shape)} vs {tuple(b.shape)}); not timing different functions")


def bench_lstm(section: Section, quick: bool, log) -> dict:
    # at batch 1 the one row is the full first row, so `random` would repeat `full`
    runs = [(name, t, b, kind) for name in LSTMS for t, b in cells(quick)
            for kind in (("none", "full", "random") if b > 1 else ("none", "full"))]
    weights = {"none": 1.0, "full": 0.75, "random": 0.75}
    weights_left = sum(weights[k] for *_, k in runs)
    pairs = {name: lstm_pair(*cfg) for name, cfg in LSTMS.items()}
    rows, ops = [], {}
    for name, t, b, kind in runs:
        features, hidden, layers, bi = LSTMS[name]
        ours, bare = pairs[name]
        d = 2 if bi else 1
        x = series(b, t, features, seed=1000 + t + b)
        with torch.no_grad():
            y_bare, (h_bare, c_bare) = bare(x)
        if kind == "none":
            last_of = last_fn(ours, d, b)

            def bare_last():
                y, (h, c) = bare(x)
                return y, last_of(h), (h, c)
            with torch.no_grad():
                y, last, state = ours(x)
                last_bare = bare_last()[1]
            _check_equal(f"{name} B={b} T={t}", [(y, y_bare), (state["h"], h_bare), (state["c"], c_bare),
                                                 (last, last_bare)])
            fns = {"composer": lambda: ours(x), "bare": lambda: bare(x), SLICE: bare_last}
            if name not in ops:
                x1 = series(1, LENGTHS[0], features, seed=1)
                ops[name] = (op_counts(lambda: ours(x1)), op_counts(lambda: bare(x1)))
        else:
            lengths = torch.full((b,), t, dtype=torch.int64) if kind == "full" else random_lengths(b, t, seed=t + b)
            mask = mask_of(lengths, t)

            def packed():
                p = pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
                y, hx = bare(p)
                return pad_packed_sequence(y, batch_first=True, total_length=t)[0], hx

            with torch.no_grad():
                y_ref, (h_ref, c_ref) = packed()
                got = [ours(x, mask), ours(x, lengths=lengths)]
            for g in got:
                _check_equal(f"{name} B={b} T={t} ({kind} mask)", [(g[0], y_ref), (g[2]["h"], h_ref),
                                                                    (g[2]["c"], c_ref)])
            fns = {"composer": lambda: ours(x, mask), "packed": packed,
                   LENGTHS_FN: lambda: ours(x, lengths=lengths)}
        res = _run(fns, section, weights[kind], weights_left, reserve=1.0)
        weights_left -= weights[kind]
        ref = "bare" if kind == "none" else "packed"
        r = ratio_stats(res, "composer", ref)
        diag = SLICE if kind == "none" else LENGTHS_FN
        r.update(name=name, t=t, batch=b, kind=kind, diag=ratio_stats(res, diag, ref),
                 rest=ratio_stats(res, "composer", diag))
        if kind == "none":
            r["verdict"] = ("met" if r["ratio"] <= TARGET else
                            "not met, within noise" if r["lo"] <= TARGET else "**NOT met**")
        rows.append(r)
        log(f"  {name} B={b} T={t} mask={kind}: composer {r['a']:.2f} ms vs {ref} {r['b']:.2f} ms, ratio "
            f"{r['ratio']:.3f} (paired {r['paired']:.3f} [{r['lo']:.3f}, {r['hi']:.3f}], CPU {r['ratio_cpu']:.3f}); "
            f"{diag} {r['diag']['a']:.2f} ms; {r['iters']} iterations")
    some = next(iter(pairs.values()))[0]
    last_doc = ("composer's `_last(h)`" if hasattr(some, "_last") else
                "`h[-D:].transpose(0, 1).reshape(B, -1)`, as composer's forward does")
    return {"rows": rows, "ops": ops, "kernels": kernels(), "last_doc": last_doc}


def _kernel(ops: dict[str, int]) -> str:
    if ops.get("aten::mkldnn_rnn_layer"):
        return f"oneDNN (`mkldnn_rnn_layer` × {ops['aten::mkldnn_rnn_layer']})"
    return f"ATen's step loop (`addmm` × {ops.get('aten::addmm', 0)})"


def kernels() -> dict:
    """Which torch kernel each case runs (op counts of one forward), and the fixed cost of a call: the
    forecaster's encoder at T=1, batch 1, with oneDNN on and off (interleaved)."""
    t = LENGTHS[0]
    lstm = nn.LSTM(4, 64, num_layers=2, batch_first=True).eval()
    gru = nn.GRU(6, 64, num_layers=2, batch_first=True, bidirectional=True).eval()
    x4, x6 = series(32, t, 4, seed=5), series(32, t, 6, seed=6)
    uneven = pack_padded_sequence(x4, random_lengths(32, t, seed=7), batch_first=True, enforce_sorted=False)
    even = pack_padded_sequence(x4, torch.full((32,), t), batch_first=True, enforce_sorted=False)
    gru_uneven = pack_padded_sequence(x6, random_lengths(32, t, seed=7), batch_first=True, enforce_sorted=False)
    cases = [(f"`nn.LSTM` (4 → 64, 2 layers), 32 × {t}, padded tensor", lambda: lstm(x4)),
             (f"the same, packed, all lengths {t}", lambda: lstm(even)),
             ("the same, packed, random lengths", lambda: lstm(uneven)),
             (f"`nn.GRU` (6 → 64, 2 layers, bidirectional), 32 × {t}, padded tensor", lambda: gru(x6)),
             ("the same, packed, random lengths", lambda: gru(gru_uneven))]
    found = [(what, _kernel(op_counts(call))) for what, call in cases]
    x1 = series(1, 1, 4, seed=8)

    def off():
        torch.backends.mkldnn.enabled = False
        try:
            return lstm(x1)
        finally:
            torch.backends.mkldnn.enabled = True

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = interleave({"onednn": lambda: lstm(x1), "aten": off}, 1.5, 50, 5)
    step1 = {k: statistics.median(v["wall"]) for k, v in res["meas"].items()}
    return {"cases": found, "t1": step1, "t1_iters": res["iters"]}


# ---- the report ---------------------------------------------------------------------------------


def _ci(r: dict, digits: int = 3) -> str:
    return f"{r['paired']:.{digits}f} [{r['lo']:.{digits}f}, {r['hi']:.{digits}f}]"


def op_delta(ours: dict[str, int], bare: dict[str, int]) -> str:
    diff = [f"`{k}` {ours.get(k, 0)} vs {bare.get(k, 0)}" for k in sorted(set(ours) | set(bare))
            if ours.get(k, 0) != bare.get(k, 0)]
    return ", ".join(diff) if diff else "none"


def _ratios(rows: list[dict], **match) -> str:
    sel = [r for r in rows if all(r.get(k) == v for k, v in match.items())]
    return ", ".join(f"{r['batch']} × {r['t']}: {r['ratio']:.2f}" for r in sel)


def interpretation(onnx: Optional[dict], lstm: Optional[dict]) -> list[str]:
    """A few lines on what is fast or slow and why, with this run's numbers."""
    notes = []
    k = lstm["kernels"] if lstm else None
    if onnx:
        rows = onnx["rows"]
        for label in PIPELINES:
            notes.append(f"onnxruntime / torch, {label}: one thread {_ratios(rows, label=label, threads=1)}; all cores "
                         f"{_ratios(rows, label=label, threads=None)}.")
        lstm1 = [r for r in rows if r["label"] == "LSTM forecaster" and r["threads"] == 1]
        b1 = [r["ratio"] for r in lstm1 if r["batch"] == 1]
        b32 = [r["ratio"] for r in lstm1 if r["batch"] == 32]
        if b1 and b32:
            line = (f"LSTM: onnxruntime's LSTM kernel is {'faster' if max(b1) < 1 else 'not faster'} at batch 1 "
                    f"({min(b1):.2f}–{max(b1):.2f}), {'faster' if max(b32) < 1 else 'slower' if min(b32) > 1 else 'about even'} "
                    f"at batch 32 ({min(b32):.2f}–{max(b32):.2f}). torch runs the padded LSTM through oneDNN")
            if k:
                on, off = k["t1"]["onednn"] * 1e3, k["t1"]["aten"] * 1e3
                line += (f", which has a fixed cost per call: at T = 1 a call takes {on:,.0f} µs through oneDNN and "
                         f"{off:,.0f} µs through ATen's own loop")
            line += ("; at batch 1 that fixed part is much of the call, at batch 32 oneDNN's batched step GEMMs "
                     "carry the time.")
            notes.append(line)
        gru1 = [r["ratio"] for r in rows if r["label"] == "GRU classifier" and r["threads"] == 1]
        if gru1:
            notes.append(f"GRU: onnxruntime is {1 / max(gru1):.1f}–{1 / min(gru1):.1f}× faster (one thread). torch has "
                         "no oneDNN GRU on CPU: `nn.GRU` runs ATen's step loop, a handful of small ops per step, layer "
                         "and direction (see the kernel table), and the classifier's mask makes it a packed sequence "
                         "on top; onnxruntime runs each layer as one GRU node that skips padded steps through "
                         "`sequence_lens`. The gap is widest at batch 1, where torch's per-op overhead is all there is.")
        alls = {(r["label"], r["t"], r["batch"]): r for r in rows if r["threads"] is None}
        ones = {(r["label"], r["t"], r["batch"]): r for r in rows if r["threads"] == 1}
        slow = [(key, alls[key]["b"] / ones[key]["b"]) for key in alls if key in ones]
        if slow:
            lo, hi = min(v for _, v in slow), max(v for _, v in slow)
            worst = max(slow, key=lambda kv: kv[1])
            line = (f"All cores against one thread (separate rotations, so indicative only): torch's median at "
                    f"{onnx['threads']} threads over its one-thread median, {lo:.2f}–{hi:.2f}× (highest: {worst[0][0]}, "
                    f"{worst[0][2]} × {worst[0][1]}).")
            if hi > 1.2:
                line += (" A recurrent net runs many small ops one after another; an OpenMP pool of two synchronises "
                         "at each of them, which costs more than splitting such small GEMMs saves, and stalls "
                         "whenever the second core is busy elsewhere: for small recurrent models one thread per "
                         "model is the better setting.")
            elif hi < 0.9:
                line += " The second core helps every cell here."
            else:
                line += (" The second core buys little: the per-step work of these small recurrent nets is too small "
                         "to split well between two threads.")
            notes.append(line)
    if lstm:
        none = [r for r in lstm["rows"] if r["kind"] == "none"]
        if none:
            worst = max(none, key=lambda r: r["ratio"])
            extra = (worst["a"] - worst["b"]) * 1e3
            sliced = (worst["diag"]["a"] - worst["diag"]["b"]) * 1e3
            notes.append(f"composer's `lstm` without a mask: {min(r['ratio'] for r in none):.3f}–{worst['ratio']:.3f} "
                         f"of the bare `nn.LSTM`, the most at {worst['name']} {worst['batch']} × {worst['t']}: "
                         f"{extra:,.0f} µs more on a {worst['b'] * 1e3:,.0f} µs call, of which the `last` slicing († / "
                         f"bare) is {sliced:,.0f} µs; the rest (composer / †) is composer's Python frame (a few µs: its "
                         "`forward`, the state dict) and run-to-run noise of the same size, which the paired ratio and "
                         "its CI separate. These are fixed costs, so they show only where a whole call is a few "
                         "hundred µs: the small encoder at batch 1.")
        masked = [r for r in lstm["rows"] if r["kind"] != "none"]
        if masked:
            comp = [r["rest"]["ratio"] for r in masked]
            zero = [r["diag"]["ratio"] for r in masked]
            line = (f"With a mask composer pays {min(r['ratio'] for r in masked):.2f}–{max(r['ratio'] for r in masked):.2f}× "
                    f"the bare packed call: reading the mask (composer / ‡ {min(comp):.2f}–{max(comp):.2f}: a sum and a "
                    "check that it has no holes; steps are moved only when it has) and the call with lengths "
                    f"(‡ / packed {min(zero):.2f}–{max(zero):.2f}: below 1 where nothing is padded, which runs "
                    "unpacked through oneDNN; otherwise the packed call itself, whose unpacking already zeroes the "
                    "padded steps).")
            full = {(r["name"], r["t"], r["batch"]): r["b"] for r in masked if r["kind"] == "full"}
            slower = [(r, r["b"] / full[(r["name"], r["t"], r["batch"])]) for r in masked
                      if r["kind"] == "random" and (r["name"], r["t"], r["batch"]) in full]
            if k and slower:
                line += (" Packing with unequal lengths is the expensive part on torch's side: its oneDNN kernel "
                         "takes a packed batch only when all lengths are equal, otherwise it falls back to ATen's "
                         "step loop (kernel table), so the bare packed call with random lengths takes "
                         + ", ".join(f"{v:.1f}× ({r['name']} {r['batch']} × {r['t']})" for r, v in slower)
                         + " the time of the all-full one, though it has about half the real steps.")
            notes.append(line)
    return notes


def report(info: str, lstm_threads: int, load0, wall_s: float, quick: bool, onnx: Optional[dict],
           lstm: Optional[dict]) -> str:
    when = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M")
    load1 = os.getloadavg()
    out = [f"`benchmarks/bench_sequence.py`{' --quick' if quick else ''}, {when} UTC, {wall_s / 60:.1f} min. "
           f"Machine: {info}. Load average (1 / 5 / 15 min) at start {load0[0]:.2f} / {load0[1]:.2f} / "
           f"{load0[2]:.2f}, at the end {load1[0]:.2f} / {load1[1]:.2f} / {load1[2]:.2f}."]
    if load0[0] > 0.75 * os.cpu_count():
        out += ["", f"**Taken while the machine was shared** (1-minute load average {load0[0]:.2f} at start on "
                    f"{os.cpu_count()} CPUs): absolute times are inflated and noisy, the all-core ones most; the "
                    "ratios, measured interleaved in the same run, are the figures to compare."]
    out += ["", "Every cell: its functions once per iteration in balanced rotating order; median per side with the "
                "interquartile range, `iters` the iterations it took; the paired column is the median of the "
                "per-iteration ratios with a 95% CI."]
    if onnx:
        ms = onnx["models"]
        exports = "; ".join(f"`{m['spec']}` {m['export_s']:.1f} s (traced at "
                            + ", ".join(f"{k}={v}" for k, v in m["trace"].items())
                            + f", ONNX {'/'.join(m['rnn_ops'])} nodes)" for m in ms.values())
        out += ["", "### onnxruntime against torch eager (the exported pipelines)", "",
                f"Each spec built once (`build(seed=0)`) and exported once with `composer.export(model, path, "
                f"pipeline=pipe, verify=False)` ({next(iter(ms.values()))['exporter']} exporter, opset "
                f"{next(iter(ms.values()))['opset']}, dynamic B and T): {exports}. onnxruntime through "
                "`composer.runtime.Session(device=\"cpu\", spinning=False)` (CPU provider, graph optimisation `all`) "
                "against the same module in torch eager (eval, `no_grad`). The forecaster takes `series` [B, T, 4]; "
                "the classifier `series` [B, T, 6] and a boolean `mask` with random lengths in 1..T, the first row "
                "full (`real` is the share of real steps). Outputs compared at every size first (max abs diff over "
                f"all outputs, ≤ {TOLERANCE:g} required). Ratio < 1: onnxruntime is faster.", ""]
        for th, title in ((None, f"**All cores** (torch's default {onnx['threads']} intra-op threads, onnxruntime's "
                                 "default pool), wall clock:"),
                          (1, "**One thread each** (`torch.set_num_threads(1)`, `Session(threads=1)`):")):
            out += [title, "",
                    "| pipeline | B × T | real | iters | torch eager | onnxruntime | **ratio ORT / torch** "
                    "| paired [95% CI] | CPU-time ratio | max abs diff |",
                    "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
            for r in onnx["rows"]:
                if r["threads"] != th:
                    continue
                out.append(f"| {r['label']} | {r['batch']} × {r['t']} | {r['real']:.0%} | {r['iters']} | "
                           f"{fmt_spread(r['b'], r['b_q'])} | {fmt_spread(r['a'], r['a_q'])} | **{r['ratio']:.2f}** | "
                           f"{_ci(r, 2)} | {r['ratio_cpu']:.2f} | {r['diff']:.1e} |")
            out.append("")
        out.pop()
    if lstm:
        cfg = "; ".join(f"{n}: input {f}, hidden {h}, {l} layers{', bidirectional' if bi else ''}"
                        for n, (f, h, l, bi) in LSTMS.items())
        out += ["", "### composer `lstm` against a bare `nn.LSTM` (same weights)", "",
                f"`LSTMBlock(hidden, layers, bidirectional).build(x=PortType(\"series\", (B, T, F)))` with the state "
                f"dict of a bare `nn.LSTM(batch_first=True)` loaded into it ({cfg}); outputs checked equal first "
                f"(bitwise: the same kernel runs). Eager, eval, `no_grad`, `torch.set_num_threads({lstm_threads})`.",
                "", "**No mask** — composer's `forward(x)` against `nn.LSTM.forward(x)`; † the bare call plus composer's "
                    f"`last` ({lstm['last_doc']}), timed in the same rotation: `† / bare` is what "
                    "the slicing costs, `composer / †` the rest of composer's forward (its Python: the mixin's "
                    "`forward`, `torch.compiler.is_exporting()`, the state dict).", "",
                "| LSTM | B × T | iters | bare nn.LSTM | composer | **ratio** | paired [95% CI] | CPU-time ratio "
                f"| target ≤ {TARGET} | † / bare | composer / † |",
                "|---|---|---:|---:|---:|---:|---:|---:|:--|---:|---:|"]
        for r in lstm["rows"]:
            if r["kind"] == "none":
                out.append(f"| {r['name']} | {r['batch']} × {r['t']} | {r['iters']} | {fmt_spread(r['b'], r['b_q'])} | "
                           f"{fmt_spread(r['a'], r['a_q'])} | **{r['ratio']:.3f}** | {_ci(r)} | {r['ratio_cpu']:.3f} | "
                           f"{r['verdict']} | {r['diag']['ratio']:.3f} ({_ci(r['diag'])}) | "
                           f"{r['rest']['ratio']:.3f} ({_ci(r['rest'])}) |")
        out += ["", "**With a mask** — composer's `forward(x, mask)` against the bare module on "
                    "`pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)`, unpacked with "
                    "`pad_packed_sequence(..., total_length=T)` (the lengths given, as a user holding them would); "
                    "‡ composer's `forward(x, lengths=lengths)`, same rotation: `composer / ‡` is what the mask "
                    "costs over given lengths (turning it into lengths and checking it has no holes; a mask with "
                    "holes would also move the real steps to the front), `‡ / packed` the rest of composer's call "
                    "(unpacked where nothing is padded, and the `last` selection). `full`: every step real; `random`: lengths "
                    "uniform in 1..T, the first row full.", "",
                "| LSTM | B × T | mask | iters | bare, packed | composer, mask | **ratio** | paired [95% CI] "
                "| CPU-time ratio | ‡ / packed | composer / ‡ |",
                "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for r in lstm["rows"]:
            if r["kind"] != "none":
                out.append(f"| {r['name']} | {r['batch']} × {r['t']} | {r['kind']} | {r['iters']} | "
                           f"{fmt_spread(r['b'], r['b_q'])} | {fmt_spread(r['a'], r['a_q'])} | **{r['ratio']:.3f}** | "
                           f"{_ci(r)} | {r['ratio_cpu']:.3f} | {r['diag']['ratio']:.3f} ({_ci(r['diag'])}) | "
                           f"{r['rest']['ratio']:.3f} ({_ci(r['rest'])}) |")
        out.append("")
        for name, (a, b) in lstm["ops"].items():
            out.append(f"- One unmasked forward ({name}, batch 1, T = {LENGTHS[0]}), op counts composer vs bare: "
                       f"{op_delta(a, b)}.")
        miss = [r for r in lstm["rows"] if r["kind"] == "none" and r["ratio"] > TARGET]
        out.append(f"- No mask, above {TARGET}: " + ("; ".join(
            f"{r['name']} {r['batch']} × {r['t']} ({r['ratio']:.3f}, paired {_ci(r)})" for r in miss)
            if miss else "none") + ".")
        k = lstm["kernels"]
        out += ["", "**Which torch kernel runs** (op counts of one forward, one thread):", "",
                "| case | torch kernel |", "|---|---|"]
        out += [f"| {what} | {kernel} |" for what, kernel in k["cases"]]
        out += ["", f"A call's fixed cost: the forecaster's encoder (`nn.LSTM`, 4 → 64, 2 layers) at batch 1, T = 1, "
                    f"interleaved, {k['t1_iters']} iterations: {k['t1']['onednn'] * 1e3:,.0f} µs through oneDNN, "
                    f"{k['t1']['aten'] * 1e3:,.0f} µs with oneDNN switched off (`torch.backends.mkldnn.enabled = False`, "
                    "ATen's step loop)."]
    notes = interpretation(onnx, lstm)
    if notes:
        out += ["", "### What the figures say", ""] + [f"- {n}" for n in notes]
    out += ["", "- Shared 2-core machine: absolute times vary run to run; the ratios measured in one run are the figures."]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    args, minutes, parts, write = parse_options(argv, __doc__, list(PART_WEIGHTS), 8.5, "lstm", "T=128 only")
    load0 = os.getloadavg()
    import onnxruntime as ort
    info = machine(f"onnxruntime {ort.__version__}")
    start = time.perf_counter()

    def log(msg: str) -> None:
        print(f"[{time.perf_counter() - start:6.1f} s] {msg}", flush=True)

    log(f"{info}; torch threads {torch.get_num_threads()}; load average {load0[0]:.2f}")
    results: dict = {}
    with tempfile.TemporaryDirectory(prefix="bench_sequence.") as d:
        total = minutes * 60 - (time.perf_counter() - start) - 5      # the report and a margin
        for p, section in sections(parts, PART_WEIGHTS, total):
            log(f"{p}: {section.left():.0f} s")
            if p == "onnx":
                results[p] = bench_onnx(Path(d), section, args.quick, log)
            else:
                threads = torch.get_num_threads()
                torch.set_num_threads(args.threads)
                try:
                    results[p] = bench_lstm(section, args.quick, log)
                finally:
                    torch.set_num_threads(threads)
            gc.collect()
    text = report(info, args.threads, load0, time.perf_counter() - start, args.quick, results.get("onnx"),
                  results.get("lstm"))
    publish(SECTION, text, write=write)
    return 0


if __name__ == "__main__":
    sys.exit(main())

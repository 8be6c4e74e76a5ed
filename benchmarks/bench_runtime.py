"""torch eager vs onnxruntime (CPU provider) for every `pipelines/*.yaml`, and export times.

For each pipeline: build it (seed 0), export it with `composer.export` (dynamo exporter,
verified against torch; the exporter's own time and the total with verification are
reported), then time the forward at batch 1 and 8 (other dims at the spec's `example`
sizes) in torch eager (eval, `no_grad`) and in an onnxruntime session on the CPU provider
(graph optimisation "all"), both with one intra-op thread per core.

Timing: interleaved runs in ABBA order (torch, ort, ort, torch, ...), so neither side always
runs first and slow phases of this shared machine hit both; thread CPU time per call; median
per side; the figure is the ratio onnxruntime / torch measured in the same run (target for
conv nets: ≤ 0.7). Absolute times are quoted with the machine they came from.

    .venv/bin/python benchmarks/bench_runtime.py [--seconds 3] [--only resnet50,cnn] [--no-write]
"""

from __future__ import annotations

import argparse
import datetime as _dt
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

import composer  # noqa: E402
from composer.inputs import BATCH_NAMES, example_size, random_inputs, specs_from_pipeline, symbols_of  # noqa: E402
from composer.runtime import Session  # noqa: E402

import onnxruntime  # noqa: E402
from _results import machine, publish  # noqa: E402  (benchmarks/ is on sys.path)

SECTION = "## ONNX runtime"
BATCHES = (1, 8)
TARGET = 0.7




def is_conv_net(model: torch.nn.Module) -> bool:
    convs = sum(isinstance(m, torch.nn.Conv2d) for m in model.modules())
    attn = sum(isinstance(m, torch.nn.MultiheadAttention) for m in model.modules())
    return convs >= 2 and attn == 0


def interleaved(model, sess: Session, inputs: dict, seconds: float, min_pairs: int = 3, max_pairs: int = 200):
    """ABBA-interleaved wall times of torch and onnxruntime; returns (torch list, ort list)."""
    feed = {k: v.numpy() for k, v in inputs.items()}

    def t_torch():
        c0, t0 = time.thread_time(), time.perf_counter()
        with torch.no_grad():
            model(**inputs)
        return time.perf_counter() - t0, time.thread_time() - c0

    def t_ort():
        c0, t0 = time.thread_time(), time.perf_counter()
        sess.run(feed)
        return time.perf_counter() - t0, time.thread_time() - c0

    t_torch(), t_ort()                                     # warm-up (allocations, first-run kernels)
    tt, to = [], []
    start = time.perf_counter()
    i = 0
    while i < max_pairs and (i < min_pairs or time.perf_counter() - start < 2 * seconds):
        if i % 2 == 0:
            tt.append(t_torch())
            to.append(t_ort())
        else:
            to.append(t_ort())
            tt.append(t_torch())
        i += 1
    return tt, to


def fmt_ms(s: float) -> str:
    ms = s * 1000
    return f"{ms:,.1f} ms" if ms >= 10 else f"{ms:.2f} ms"


def bench_pipeline(path: Path, seconds: float, threads: int, folder: Path) -> dict:
    pipe = composer.load(path)
    model = pipe.build(seed=0).eval()
    t0 = time.perf_counter()
    rep = composer.export(model, folder / f"{pipe.name}.onnx", pipeline=pipe)
    total_export = time.perf_counter() - t0
    sess = Session(folder / f"{pipe.name}.onnx", device="cpu", threads=threads, spinning=False)
    specs = specs_from_pipeline(pipe)
    dims = pipe.resolved.dims
    row = {"pipeline": pipe.name, "params": pipe.graph.total_params(), "conv": is_conv_net(model),
           "export_s": rep["export_seconds"], "export_total_s": total_export,
           "max_abs": rep["verification"]["max_abs"], "max_rel": rep["verification"]["max_rel"],
           "scale": max(c["scale"] for run in rep["verification"]["runs"] for c in run["outputs"].values()),
           "runs": []}
    for batch in BATCHES:
        env = {}
        for sym in symbols_of(specs):
            env[sym] = batch if sym in BATCH_NAMES else example_size(sym, dims.get(sym))
        inputs = random_inputs(specs, env, seed=0)
        shape = "×".join(str(s) for s in next(iter(inputs.values())).shape)
        tt, to = interleaved(model, sess, inputs, seconds)
        # with one thread both run on this thread: its CPU time is immune to being descheduled
        col = 1 if threads == 1 else 0
        mt, mo = statistics.median(t[col] for t in tt), statistics.median(o[col] for o in to)
        wt, wo = statistics.median(t[0] for t in tt), statistics.median(o[0] for o in to)
        paired = statistics.median(o[col] / t[col] for o, t in zip(to, tt))
        row["runs"].append({"batch": batch, "input": shape, "torch": mt, "ort": mo, "ratio": mo / mt,
                            "paired": paired, "wall_torch": wt, "wall_ort": wo, "n": len(tt)})
        print(f"{pipe.name:<18} batch {batch}: torch {fmt_ms(mt)}, onnxruntime {fmt_ms(mo)}, "
              f"ratio {mo / mt:.2f}, wall ratio {wo / wt:.2f} ({len(tt)} pairs)", flush=True)
    print(f"{pipe.name:<18} export {rep['export_seconds']:.1f} s (with verification {total_export:.1f} s)", flush=True)
    return row


def report(rows: list[dict], threads: int, seconds: float) -> str:
    now = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    measure = ("CPU time of the calling thread (with one intra-op thread both torch and onnxruntime compute "
               "on it, so other jobs descheduling us do not count)" if threads == 1 else "wall clock")
    lines = [
        f"`benchmarks/bench_runtime.py`, {now}. Machine: {machine('onnxruntime ' + onnxruntime.__version__)}; {threads} intra-op "
        f"thread{'s' if threads != 1 else ''} on both sides.",
        "",
        "Every `pipelines/*.yaml` built with seed 0, exported with `composer.export` (dynamo exporter, verified "
        "against torch), then timed in torch eager (eval, `no_grad`) and in onnxruntime on `CPUExecutionProvider` "
        "(graph optimisation `all`, worker threads not spinning between runs). Batch 1 and 8; other dims at the "
        f"spec's `example` size. ABBA-interleaved runs (about {seconds:g} s per side per cell, at least 3 pairs) "
        f"timed by {measure}; medians; **ratio** = "
        f"onnxruntime / torch in the same run (target for conv nets ≤ {TARGET}). Export: the exporter alone, and "
        "the whole `composer.export` call (checker and onnxruntime verification at two sizes of every dim).",
        "",
        "| pipeline | params | input | torch eager | onnxruntime | **ratio** | paired ratio | wall ratio | pairs "
        "| conv net ≤ 0.7 |",
        "|:--|--:|:--|--:|--:|--:|--:|--:|--:|:--|",
    ]
    for row in rows:
        for r in row["runs"]:
            verdict = ("met" if r["ratio"] <= TARGET else "**not met**") if row["conv"] else "—"
            lines.append(f"| {row['pipeline']} | {row['params']:,} | {r['input']} | {fmt_ms(r['torch'])} | "
                         f"{fmt_ms(r['ort'])} | **{r['ratio']:.2f}** | {r['paired']:.2f} | {r['wall_ort'] / r['wall_torch']:.2f} | "
                         f"{r['n']} | {verdict} |")
    lines += ["", "| pipeline | export (exporter) | export + checker + verification | max abs diff | "
                  "max rel diff | largest output |value| |",
              "|:--|--:|--:|--:|--:|--:|"]
    for row in rows:
        lines.append(f"| {row['pipeline']} | {row['export_s']:.1f} s | {row['export_total_s']:.1f} s | "
                     f"{row['max_abs']:.1e} | {row['max_rel']:.1e} | {row['scale']:.1e} |")
    conv = [r["ratio"] for row in rows if row["conv"] for r in row["runs"]]
    if conv:
        met = sum(x <= TARGET for x in conv)
        lines += ["", f"- Conv nets: {met} of {len(conv)} cells meet onnxruntime ≤ {TARGET} × torch eager; "
                      f"median ratio {statistics.median(conv):.2f}."]
    other = [r["ratio"] for row in rows if not row["conv"] for r in row["runs"]]
    if other:
        lines.append(f"- Other pipelines (MLP, transformer): median ratio {statistics.median(other):.2f}.")
    lines.append("- Parity: max rel diff is taken over elements whose reference is not ~0 (|ref| > atol × scale); an "
                 "element passes when |onnx − torch| ≤ atol × scale + rtol × |ref| (fp32: atol 1e-4, rtol 1e-3; "
                 "scale = max(1, largest |output|)), so a small element can show a relative diff above rtol. "
                 "Inception v3's random-init logits reach 5e10 in eval mode (torchvision's own init does the same).")
    lines.append("- Shared 2-core machine: absolute times vary run to run; compare the ratios. GPU figures "
                 "(CUDA provider vs torch CUDA, TensorRT) need a GPU machine and are not measured here.")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=3.0, help="about this long per side per cell")
    ap.add_argument("--only", default="", help="comma-separated words; pipelines whose name contains one")
    ap.add_argument("--threads", type=int, default=1, help="intra-op threads on both sides (1: CPU-time timing)")
    ap.add_argument("--no-write", action="store_true", help="print only; leave RESULTS.md alone")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    specs = sorted((ROOT / "pipelines").glob("*.yaml"))
    if args.only:
        words = args.only.split(",")
        specs = [p for p in specs if any(w in p.stem for w in words)]
    rows = []
    failed = []
    with tempfile.TemporaryDirectory(prefix="bench-runtime-") as tmp:
        for path in specs:
            try:
                rows.append(bench_pipeline(path, args.seconds, args.threads, Path(tmp)))
            except composer.ComposerError as exc:
                failed.append((path.name, str(exc).splitlines()[0]))
                print(f"{path.name}: FAILED: {exc}", flush=True)
    text = report(rows, args.threads, args.seconds)
    if failed:
        text += "\n" + "\n".join(f"- `{n}` failed to export: {m}" for n, m in failed)
    publish(SECTION, text, write=not args.no_write)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

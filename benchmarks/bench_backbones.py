"""Vision backbones against torchvision: eager latency with the same weights, onnxruntime against
torch eager, and build time against torchvision's constructors.

1. **Latency** — composer's ResNet-50 and ViT-B/16, each as the single `resnet` / `vit` block
   (num_classes 1000, a two-line spec) and as the spec composed from parts
   (`pipelines/resnet50.yaml`, `pipelines/vit_b16.yaml`), against `torchvision.models.resnet50`
   / `vit_b_16` (weights=None) with torchvision's state dict copied into ours; outputs are
   checked first (max abs diff ≤ 1e-4). Eager CPU, eval + `no_grad`, 224×224, batch 1 and 8.
   The three models run in rotating order within every iteration (each of the 6 orders in
   turn), median per model; the ratio composer / torchvision is the figure (target ≤ 1.02).
   Where a ratio is above target, one profiled forward of each side is compared op by op.
2. **onnxruntime / torch** — each family's spec exported once with `composer.export`
   (verify=False: the export tests cover parity), then onnxruntime (CPU provider, through
   `composer.runtime.Session`) and the same compiled model in torch eager, interleaved (ABBA).
3. **Build time** — `composer.load(spec).build(seed=0)` against torchvision's constructor for
   the same model, interleaved, median of a few repetitions.

Torch's intra-op threads are left at their default (recorded). Machines are shared: ratios
from one run are the figures; absolute times are quoted with the machine they came from.

    .venv/bin/python benchmarks/bench_backbones.py [--scale 1.0] [--only latency,onnx,build] [--no-write]
"""

from __future__ import annotations

import argparse
import datetime as _dt
import gc
import inspect
import itertools
import math
import os
import platform
import re
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
import torchvision  # noqa: E402

import composer  # noqa: E402
from composer.weights import map_state_dict  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"
SECTION = "## Vision backbones"
TARGET = 1.02
TOLERANCE = 1e-4
PIPES = ROOT / "pipelines"

# the single-block forms of bench 1 (the spec a user writes to get torchvision's model)
BLOCK_SPECS = {
    "resnet50_block": """\
pipeline: resnet50_block
seed: 0
dims:
  B: {sizes: [1, 2], example: 1}
inputs:
  image: {kind: image, shape: [B, 3, 224, 224], dtype: float32}
blocks:
  backbone: {block: resnet, in: image, depth: 50, num_classes: 1000}
outputs:
  logits: backbone.logits
""",
    "vit_b16_block": """\
pipeline: vit_b16_block
seed: 0
dims:
  B: {sizes: [1, 2], example: 1}
inputs:
  image: {kind: image, shape: [B, 3, 224, 224], dtype: float32}
blocks:
  backbone: {block: vit, in: image, variant: b16, image_size: 224, num_classes: 1000}
outputs:
  logits: backbone.logits
""",
}


def _inception_v3():
    return torchvision.models.inception_v3(weights=None, aux_logits=True, init_weights=True)


# family: (spec (a pipelines/ file or a BLOCK_SPECS name), torchvision constructor, image size)
FAMILIES = {
    "resnet50": ("resnet50.yaml", lambda: torchvision.models.resnet50(weights=None), 224),
    "mobilenet_v3_large": ("mobilenet_v3.yaml", lambda: torchvision.models.mobilenet_v3_large(weights=None), 224),
    "efficientnet_b0": ("efficientnet_b0.yaml", lambda: torchvision.models.efficientnet_b0(weights=None), 224),
    "densenet121": ("densenet121.yaml", lambda: torchvision.models.densenet121(weights=None), 224),
    "inception_v3": ("inception_v3.yaml", _inception_v3, 299),
    "vit_b16": ("vit_b16.yaml", lambda: torchvision.models.vit_b_16(weights=None), 224),
}
# build-time rows: (model, spec, torchvision family)
BUILD_ROWS = [
    ("resnet50", "resnet50_block", "resnet50"),
    ("resnet50", "resnet50.yaml", "resnet50"),
    ("resnet50", "classification.yaml", "resnet50"),
    ("mobilenet_v3_large", "mobilenet_v3.yaml", "mobilenet_v3_large"),
    ("efficientnet_b0", "efficientnet_b0.yaml", "efficientnet_b0"),
    ("densenet121", "densenet121.yaml", "densenet121"),
    ("inception_v3", "inception_v3.yaml", "inception_v3"),
    ("vit_b_16", "vit_b16_block", "vit_b16"),
    ("vit_b_16", "vit_b16.yaml", "vit_b16"),
]


# ---- machine ----------------------------------------------------------------------------------


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def machine() -> dict:
    import onnxruntime as ort
    return {"nproc": len(os.sched_getaffinity(0)), "cpus": os.cpu_count(), "cpu": cpu_model(),
            "python": platform.python_version(), "torch": torch.__version__, "torchvision": torchvision.__version__,
            "onnxruntime": ort.__version__, "threads": torch.get_num_threads(),
            "interop": torch.get_num_interop_threads()}


# ---- helpers ----------------------------------------------------------------------------------


def spec_path(spec: str, tmp: Path) -> Path:
    """A spec file: one of pipelines/, or a BLOCK_SPECS text written into `tmp`."""
    if spec in BLOCK_SPECS:
        p = tmp / f"{spec}.yaml"
        if not p.exists():
            p.write_text(BLOCK_SPECS[spec])
        return p
    return PIPES / spec


def image(batch: int, size: int) -> torch.Tensor:
    return torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(1000 + batch))


def median_ci(xs: list[float]) -> tuple[float, float, float]:
    """The median and a distribution-free 95% confidence interval for it (binomial order statistics)."""
    s = sorted(xs)
    n = len(s)
    half = 1.96 * math.sqrt(n) / 2
    lo, hi = max(0, int(n / 2 - half)), min(n - 1, int(math.ceil(n / 2 + half)))
    return statistics.median(s), s[lo], s[hi]


def interleave(fns: dict[str, Callable[[], object]], budget_s: float, min_iters: int, max_iters: int,
               warmup: int) -> dict:
    """Run every function once per iteration, in rotating order (each permutation in turn, so none
    always runs first or after the same neighbour), until the budget is spent (at least
    `min_iters`). Each call: wall clock and process CPU time (all threads)."""
    names = list(fns)
    orders = list(itertools.permutations(names))
    wall = {n: [] for n in names}
    cpu = {n: [] for n in names}
    with torch.no_grad():
        for _ in range(warmup):
            for n in names:
                fns[n]()
        gc.collect()
        t_end = time.perf_counter() + budget_s
        i = 0
        while (i < min_iters or time.perf_counter() < t_end) and i < max_iters:
            for n in orders[i % len(orders)]:
                c0, t0 = time.process_time_ns(), time.perf_counter_ns()
                fns[n]()
                t1, c1 = time.perf_counter_ns(), time.process_time_ns()
                wall[n].append((t1 - t0) / 1e6)
                cpu[n].append((c1 - c0) / 1e6)
            i += 1
    return {"iters": i, "wall": wall, "cpu": cpu}


def ratio_stats(res: dict, a: str, b: str) -> dict:
    """a / b: ratio of medians (wall and CPU) and the paired per-iteration wall ratio with its CI."""
    wa, wb = res["wall"][a], res["wall"][b]
    ca, cb = res["cpu"][a], res["cpu"][b]
    paired, lo, hi = median_ci([x / y for x, y in zip(wa, wb)])
    return {"a_ms": statistics.median(wa), "b_ms": statistics.median(wb),
            "ratio": statistics.median(wa) / statistics.median(wb),
            "paired": paired, "lo": lo, "hi": hi,
            "cpu_ratio": statistics.median(ca) / statistics.median(cb)}


def op_counts(model: torch.nn.Module, call: Callable[[], object]) -> dict[str, tuple[int, float]]:
    """aten op name -> (calls, self CPU µs) over one profiled forward."""
    from torch.profiler import ProfilerActivity, profile
    with torch.no_grad():
        call()
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            call()
    return {e.key: (e.count, e.self_cpu_time_total) for e in prof.key_averages()}


def op_diff(ours: dict, ref: dict) -> list[str]:
    """Ops whose call counts differ between the two forwards, as `op: ours vs ref`."""
    out = []
    for k in sorted(set(ours) | set(ref)):
        a, b = ours.get(k, (0, 0.0))[0], ref.get(k, (0, 0.0))[0]
        if a != b and not k.startswith(("ProfilerStep", "## ")):
            out.append(f"`{k}` {a} vs {b}")
    return out


def fmt_ms(ms: float) -> str:
    return f"{ms:,.1f} ms" if ms < 100 else f"{ms:,.0f} ms"


# ---- 1. latency vs torchvision ----------------------------------------------------------------


def bench_latency(tmp: Path, scale: float, log) -> dict:
    rows, notes = [], []
    plans = {  # model: (torchvision, [(label, spec)], {batch: (budget s, min iters, warm-up)})
        "ResNet-50": (lambda: torchvision.models.resnet50(weights=None),
                      [("`resnet` block", "resnet50_block"), ("`resnet50.yaml` (parts)", "resnet50.yaml")],
                      {1: (12, 20, 3), 8: (30, 6, 1)}),
        "ViT-B/16": (lambda: torchvision.models.vit_b_16(weights=None),
                     [("`vit` block", "vit_b16_block"), ("`vit_b16.yaml` (parts)", "vit_b16.yaml")],
                     {1: (14, 12, 2), 8: (36, 5, 1)}),
    }
    for model_name, (make_ref, specs, batches) in plans.items():
        ref = make_ref().eval()
        state = ref.state_dict()
        ours = {}
        for label, spec in specs:
            m = composer.load(spec_path(spec, tmp)).build(seed=0)
            mapped, report = map_state_dict(m, state, file="torchvision")
            m.load_state_dict(mapped, strict=True)
            ours[label] = (m.eval(), report.strategy)
        # parity first: logits with torchvision's weights
        parity = {}
        x1 = image(2, 224)
        with torch.no_grad():
            expected = ref(x1)
            for label, (m, strategy) in ours.items():
                got = m(image=x1)["logits"]
                diff = (got - expected).abs().max().item()
                parity[label] = diff
                log(f"{model_name} {label}: weights mapped by {strategy}; max |logits - torchvision| = {diff:.2e} "
                    f"(max |logit| {expected.abs().max().item():.3g})")
                if not diff <= TOLERANCE:
                    raise SystemExit(f"{model_name} {label}: outputs differ from torchvision by {diff:.3g} "
                                     f"(> {TOLERANCE}); not timing a different model")
        for batch, (budget, min_iters, warm) in batches.items():
            x = image(batch, 224)
            fns = {"torchvision": (lambda x=x: ref(x))}
            for label, (m, _) in ours.items():
                fns[label] = (lambda m=m, x=x: m(image=x))
            res = interleave(fns, budget * scale, max(3, int(min_iters * min(1.0, scale))), 10_000, warm)
            for label, _ in specs:
                r = ratio_stats(res, label, "torchvision")
                verdict = ("met" if r["ratio"] <= TARGET
                           else "not met, within noise" if r["lo"] <= TARGET else "**NOT met**")
                row = {"model": model_name, "composer": label, "batch": batch, "iters": res["iters"],
                       "diff": parity[label], "verdict": verdict, **r}
                rows.append(row)
                log(f"  {model_name} b{batch} {label}: {r['a_ms']:.1f} ms vs torchvision {r['b_ms']:.1f} ms, "
                    f"ratio {r['ratio']:.3f} (paired {r['paired']:.3f} [{r['lo']:.3f}, {r['hi']:.3f}], CPU "
                    f"{r['cpu_ratio']:.3f}), {res['iters']} iterations")
        # op-level comparison (batch 1): structural differences explain a ratio above target
        x = image(1, 224)
        ref_ops = op_counts(ref, lambda: ref(x))
        for label, (m, _) in ours.items():
            diff = op_diff(op_counts(m, lambda m=m: m(image=x)), ref_ops)
            notes.append((model_name, label, diff))
            log(f"  {model_name} {label} op-count differences: {', '.join(diff) or 'none'}")
        del ref, ours, state
        gc.collect()
    return {"rows": rows, "ops": notes}


# ---- 2. onnxruntime vs torch eager ------------------------------------------------------------


def _session(path: Path):
    from composer.runtime import Session
    kw = {}
    if "spinning" in inspect.signature(Session).parameters:
        kw["spinning"] = False   # idle ORT workers must not spin while torch runs (interleaved)
    return Session(path, device="cpu", **kw), kw.get("spinning", True)


def bench_onnx(tmp: Path, scale: float, log) -> dict:
    rows = []
    spinning = None
    budgets = {1: (4.0, 10, 2), 8: (9.0, 4, 1)}
    for family, (spec, _, size) in FAMILIES.items():
        pipe = composer.load(PIPES / spec)
        model = pipe.build(seed=0).eval()
        path = tmp / f"{family}.onnx"
        t0 = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            report = composer.export(model, path, pipeline=pipe, verify=False)
        export_s = time.perf_counter() - t0
        sess, spinning = _session(path)
        assert sess.device == "cpu", sess.providers
        log(f"{family}: exported {spec} in {export_s:.1f} s ({report['exporter']} exporter, opset {report['opset']}, "
            f"{report['file_bytes'] / 2**20:.0f} MiB); onnxruntime on {', '.join(sess.providers)}")
        for batch, (budget, min_iters, warm) in budgets.items():
            x = image(batch, size)
            xn = x.numpy()
            with torch.no_grad():
                want = model(image=x)["logits"].numpy()
            got = sess.run({"image": xn})["logits"]
            scale_ref = max(1.0, float(np.abs(want).max()))
            err = float(np.abs(got - want).max()) / scale_ref
            fns = {"torch": (lambda x=x: model(image=x)), "onnxruntime": (lambda xn=xn: sess.run({"image": xn}))}
            res = interleave(fns, budget * scale, max(3, int(min_iters * min(1.0, scale))), 10_000, warm)
            r = ratio_stats(res, "onnxruntime", "torch")
            rows.append({"family": family, "spec": spec, "size": size, "batch": batch, "iters": res["iters"],
                         "export_s": export_s, "exporter": report["exporter"], "err": err, **r})
            log(f"  b{batch}: onnxruntime {r['a_ms']:.1f} ms vs torch {r['b_ms']:.1f} ms, ratio {r['ratio']:.3f} "
                f"(paired {r['paired']:.3f} [{r['lo']:.3f}, {r['hi']:.3f}]), {res['iters']} iterations, "
                f"max |diff|/scale {err:.1e}")
        del sess, model, pipe
        gc.collect()
    return {"rows": rows, "spinning": spinning}


# ---- 3. build time ----------------------------------------------------------------------------


def bench_build(tmp: Path, scale: float, log) -> dict:
    rows = []
    reps = max(1, round(3 * min(scale, 1.0)))
    for model_name, spec, family in BUILD_ROWS:
        path = spec_path(spec, tmp)
        make_ref = FAMILIES[family][1]
        t_load, t_build, t_ref = [], [], []
        for i in range(reps + 1):              # the first round warms imports and caches, not counted
            gc.collect()
            sides = ("composer", "torchvision") if i % 2 == 0 else ("torchvision", "composer")
            for side in sides:
                if side == "composer":
                    t0 = time.perf_counter()
                    pipe = composer.load(path)
                    t1 = time.perf_counter()
                    m = pipe.build(seed=0)
                    t2 = time.perf_counter()
                    if i:
                        t_load.append(t1 - t0)
                        t_build.append(t2 - t1)
                else:
                    t0 = time.perf_counter()
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore")
                        m = make_ref()
                    if i:
                        t_ref.append(time.perf_counter() - t0)
                del m
        med = statistics.median
        total = [a + b for a, b in zip(t_load, t_build)]
        row = {"model": model_name, "spec": spec, "reps": reps, "load_s": med(t_load), "build_s": med(t_build),
               "total_s": med(total), "ref_s": med(t_ref), "ratio": med(total) / med(t_ref)}
        rows.append(row)
        log(f"{spec}: load {row['load_s'] * 1e3:.0f} ms + build {row['build_s'] * 1e3:.0f} ms = "
            f"{row['total_s'] * 1e3:.0f} ms vs torchvision {model_name} {row['ref_s'] * 1e3:.0f} ms: "
            f"ratio {row['ratio']:.2f}")
    return {"rows": rows}


# ---- report -----------------------------------------------------------------------------------


def spec_label(spec: str) -> str:
    if spec in BLOCK_SPECS:
        block = "resnet" if spec.startswith("resnet") else "vit"
        return f"`{block}` block spec"
    return f"`pipelines/{spec}`"


def report(info: dict, load0: tuple[float, float, float], wall_s: float, lat: Optional[dict],
           onnx: Optional[dict], build: Optional[dict]) -> str:
    when = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M")
    threads_note = " (torch's default)" if info.get("threads_default", True) else " (set by --threads)"
    out = [
        f"`benchmarks/bench_backbones.py`, {when} UTC, {wall_s / 60:.1f} min. Machine: nproc {info['nproc']}, "
        f"{info['cpu']}; Python {info['python']}, torch {info['torch']}, torchvision {info['torchvision']}, "
        f"onnxruntime {info['onnxruntime']}; torch threads {info['threads']} intra-op{threads_note}, "
        f"{info['interop']} inter-op. Load average at start {load0[0]:.2f} / {load0[1]:.2f} / {load0[2]:.2f}.",
    ]
    if load0[0] > 1.5:
        out += ["", f"**Taken while the machine was shared** (1-minute load average {load0[0]:.2f} > 1.5 at start, "
                    "other engineers' tests running): absolute times are inflated and noisy; the ratios, "
                    "measured interleaved in the same run, are the figures to compare."]
    if lat:
        out += ["", "### ResNet-50 and ViT-B/16 against torchvision (eager CPU, same weights)", "",
                "torchvision's model (`weights=None`, its own init) and its state dict copied into ours "
                "(`map_state_dict`: by key for the blocks, by order for the parts specs); logits checked "
                f"first (max abs diff ≤ {TOLERANCE:g}, at batch 2). 224×224, eval + `no_grad`; torchvision and "
                "both composer forms run in rotating order within each iteration; median wall time per "
                "model; the paired column is the median of per-iteration ratios with a 95% CI.", "",
                "| model | composer | batch | iters | torchvision | composer | **ratio** | paired [95% CI] "
                "| CPU-time ratio | max abs diff | target ≤ 1.02 |",
                "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|:--|"]
        for r in lat["rows"]:
            out.append(f"| {r['model']} | {r['composer']} | {r['batch']} | {r['iters']} | {fmt_ms(r['b_ms'])} | "
                       f"{fmt_ms(r['a_ms'])} | **{r['ratio']:.3f}** | {r['paired']:.3f} [{r['lo']:.3f}, "
                       f"{r['hi']:.3f}] | {r['cpu_ratio']:.3f} | {r['diff']:.1e} | {r['verdict']} |")
        out.append("")
        for model_name, label, diff in lat["ops"]:
            out.append(f"- {model_name}, {label}: aten ops whose call counts differ from torchvision's in one "
                       f"forward (ours vs torchvision): {', '.join(diff) if diff else 'none'}.")
    if onnx:
        spin = "" if onnx["spinning"] is None else (
            "; idle onnxruntime workers do not spin (`Session(..., spinning=False)`), so they do not steal "
            "the cores from the torch run that follows" if onnx["spinning"] is False else "")
        out += ["", "### onnxruntime against torch eager", "",
                "Each family's spec exported once with `composer.export(..., verify=False)` (the export tests "
                "cover parity; the logits are compared here once, max abs diff / max(1, max |logit|) below), "
                f"then run in onnxruntime through `composer.runtime.Session(device=\"cpu\")` (CPU provider, graph "
                f"optimisation `all`, default threads{spin}) and the same compiled model in torch eager (eval + "
                "`no_grad`), interleaved, median wall time per side. Ratio < 1: onnxruntime is faster.", "",
                "| family | spec | input | batch | iters | torch eager | onnxruntime | **ratio onnx/torch** "
                "| paired [95% CI] | rel. diff | export |",
                "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for r in onnx["rows"]:
            out.append(f"| {r['family']} | `{r['spec']}` | {r['size']}×{r['size']} | {r['batch']} | {r['iters']} | "
                       f"{fmt_ms(r['b_ms'])} | {fmt_ms(r['a_ms'])} | **{r['ratio']:.2f}** | {r['paired']:.2f} "
                       f"[{r['lo']:.2f}, {r['hi']:.2f}] | {r['err']:.0e} | {r['export_s']:.1f} s ({r['exporter']}) |")
    if build:
        out += ["", "### Build time against torchvision's constructor", "",
                "`composer.load(spec)` (read, validate, resolve, type) + `.build(seed=0)` (construct and "
                "initialise every block) against torchvision's constructor with `weights=None` "
                "(`inception_v3` with `init_weights=True`, the init composer reproduces), interleaved, "
                "median of the repetitions after one warm-up round. Both initialise the weights the same "
                "way, which dominates for the large models.", "",
                "| model | spec | reps | load | build | **composer total** | torchvision | **ratio** |",
                "|---|---|---:|---:|---:|---:|---:|---:|"]
        for r in build["rows"]:
            out.append(f"| {r['model']} | {spec_label(r['spec'])} | {r['reps']} | {r['load_s'] * 1e3:,.0f} ms | "
                       f"{r['build_s'] * 1e3:,.0f} ms | **{r['total_s'] * 1e3:,.0f} ms** | {r['ref_s'] * 1e3:,.0f} ms "
                       f"| **{r['ratio']:.2f}** |")
    return "\n".join(out)


def write_section(path: Path, heading: str, body: str) -> None:
    """Replace (or append) one `## ` section of RESULTS.md, leaving every other section alone.
    The file is re-read right before writing (other benchmarks write their own sections)."""
    text = path.read_text(encoding="utf-8") if path.exists() else "# Benchmarks\n"
    block = f"{heading}\n\n{body.strip()}\n"
    pattern = re.compile(rf"^{re.escape(heading)}[ \t]*\n.*?(?=^## |\Z)", re.S | re.M)
    if pattern.search(text):
        text = pattern.sub(lambda m: block + "\n", text, count=1)
    else:
        text = text.rstrip("\n") + "\n\n" + block
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    tmp.write_text(text.rstrip("\n") + "\n", encoding="utf-8")
    os.replace(tmp, path)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scale", type=float, default=1.0, help="multiply every timing budget (0.2 for a quick look)")
    ap.add_argument("--only", default="latency,onnx,build", help="comma list of: latency, onnx, build")
    ap.add_argument("--threads", type=int, default=0, help="torch intra-op threads (default: torch's default)")
    ap.add_argument("--no-write", action="store_true", help="print only; leave RESULTS.md alone")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    parts = {p.strip() for p in args.only.split(",")}
    load0 = os.getloadavg()
    info = machine()
    info["threads_default"] = not args.threads
    start = time.perf_counter()

    def log(msg: str) -> None:
        print(f"[{time.perf_counter() - start:6.1f} s] {msg}", flush=True)

    log(f"nproc {info['nproc']}, {info['cpu']}, torch {info['torch']} ({info['threads']} threads), onnxruntime "
        f"{info['onnxruntime']}, load average {load0[0]:.2f}")
    lat = onnx = build = None
    with tempfile.TemporaryDirectory(prefix="bench_backbones.") as d:
        tmp = Path(d)
        if "latency" in parts:
            lat = bench_latency(tmp, args.scale, log)
        if "onnx" in parts:
            onnx = bench_onnx(tmp, args.scale, log)
        if "build" in parts:
            build = bench_build(tmp, args.scale, log)
    text = report(info, load0, time.perf_counter() - start, lat, onnx, build)
    print()
    print(text)
    if not args.no_write:
        write_section(RESULTS, SECTION, text)
        print(f"\nwrote {SECTION!r} in {RESULTS.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Forward latency of the compiled `pipelines/cnn_classifier.yaml` against the same network
hand-written as an `nn.Module`, with the same weights.

The hand-written network is what an engineer would write: conv/pool/linear layers as modules,
relu / mean / softmax as calls in `forward`, returning the same dict. Its state dict is
loaded from the compiled model (strict), and both outputs are checked to be bitwise equal
before anything is timed.

Timing: eval mode under `torch.no_grad()`, interleaved A/B runs in ABBA order (so neither
side always runs first), many iterations, median per side; the ratio compiled / hand-written
is reported for batch 1 and batch 32 (target ≤ 1.02). One intra-op thread by default: the
machine is shared, and a single thread makes the ratio far less noisy.

    .venv/bin/python benchmarks/bench_latency.py [--threads 1] [--seconds 12] [--no-write]
"""

from __future__ import annotations

import argparse
import datetime as _dt
import os
import platform
import re
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402

import composer  # noqa: E402

SPEC = ROOT / "pipelines" / "cnn_classifier.yaml"
RESULTS = Path(__file__).resolve().parent / "RESULTS.md"
SECTION = "## Compiled forward latency"
TARGET = 1.02
H = W = 64


class HandCNN(nn.Module):
    """cnn_classifier written by hand: conv → relu → maxpool → conv → relu → mean → dense → softmax."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 32, 3, padding=1)
        self.pool1 = nn.MaxPool2d(2)
        self.conv2 = nn.Conv2d(32, 64, 3, padding=1)
        self.head = nn.Linear(64, 10)

    def forward(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        x = F.relu(self.conv1(image))          # (B, 32, H, W)
        x = self.pool1(x)                      # (B, 32, H/2, W/2)
        x = F.relu(self.conv2(x))              # (B, 64, H/2, W/2)
        x = x.mean(dim=(2, 3))                 # (B, 64)
        logits = self.head(x)                  # (B, 10)
        return {"logits": logits, "probs": F.softmax(logits, dim=-1)}


class HandCNNKeepAlive(HandCNN):
    """The same, but every intermediate keeps its own name until `return`, as the compiled
    forward does: used to show what the compiled forward pays for not freeing dead values."""

    def forward(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        conv1 = self.conv1(image)
        act1 = F.relu(conv1)
        pool1 = self.pool1(act1)
        conv2 = self.conv2(pool1)
        act2 = F.relu(conv2)
        gap = act2.mean(dim=(2, 3))
        logits = self.head(gap)
        return {"logits": logits, "probs": F.softmax(logits, dim=-1)}


def make_models() -> tuple[nn.Module, nn.Module]:
    compiled = composer.load(SPEC).build(seed=0).eval()
    hand = HandCNN().eval()
    hand.load_state_dict(compiled.state_dict(), strict=True)
    return compiled, hand


def check_equal(compiled: nn.Module, hand: nn.Module, batch: int) -> None:
    x = torch.randn(batch, 3, H, W, generator=torch.Generator().manual_seed(batch))
    with torch.no_grad():
        a, b = compiled(image=x), hand(x)
    assert a.keys() == b.keys(), (a.keys(), b.keys())
    for k in a:
        assert torch.equal(a[k], b[k]), f"output {k!r} differs: max |diff| {(a[k] - b[k]).abs().max().item():.3g}"


def interleaved(compiled: nn.Module, hand: nn.Module, batch: int, seconds: float,
                min_iters: int = 30, max_iters: int = 20_000) -> dict:
    """ABBA-interleaved timings (ns) of compiled(image=x) and hand(x) on one fixed input."""
    x = torch.randn(batch, 3, H, W, generator=torch.Generator().manual_seed(0))
    fa = (lambda: compiled(image=x)) if isinstance(compiled, composer.CompiledPipeline) else (lambda: compiled(x))
    fb = lambda: hand(x)  # noqa: E731
    ta: list[int] = []
    tb: list[int] = []
    clock = time.perf_counter_ns
    with torch.no_grad():
        for _ in range(20):  # warm-up: allocator, kernels, caches
            fa(), fb()
        t_end = time.perf_counter() + seconds
        i = 0
        while (i < min_iters or time.perf_counter() < t_end) and i < max_iters:
            first, second, tf, ts = (fa, fb, ta, tb) if i % 2 == 0 else (fb, fa, tb, ta)
            t0 = clock()
            first()
            t1 = clock()
            second()
            t2 = clock()
            tf.append(t1 - t0)
            ts.append(t2 - t1)
            i += 1
    ma, mb = statistics.median(ta), statistics.median(tb)
    paired = statistics.median(a / b for a, b in zip(ta, tb))
    return {"batch": batch, "iters": i, "compiled_us": ma / 1e3, "hand_us": mb / 1e3,
            "ratio": ma / mb, "paired_ratio": paired,
            "compiled_p10_us": _pct(ta, 10) / 1e3, "hand_p10_us": _pct(tb, 10) / 1e3}


def _pct(xs: list[int], q: int) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, len(s) * q // 100)]


def overhead_us(compiled: nn.Module, hand: nn.Module, iters: int = 3000) -> tuple[float, float]:
    """Pure Python dispatch cost: both forwards on the meta-free smallest input (1x3x2x2)."""
    x = torch.randn(1, 3, 2, 2)
    out = []
    with torch.no_grad():
        for f in (lambda: compiled(image=x), lambda: hand(x)):
            for _ in range(100):
                f()
            ts = []
            for _ in range(iters):
                t0 = time.perf_counter_ns()
                f()
                ts.append(time.perf_counter_ns() - t0)
            out.append(statistics.median(ts) / 1e3)
    return out[0], out[1]


def machine() -> str:
    model = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (f"{os.cpu_count()} CPUs (nproc {len(os.sched_getaffinity(0))}), {model}; "
            f"Python {platform.python_version()}, torch {torch.__version__}")


def write_section(path: Path, heading: str, body: str) -> None:
    """Replace (or append) one `## ` section of RESULTS.md, leaving every other section alone."""
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


def report(rows: list[dict], threads: int, dispatch: tuple[float, float], keep: dict | None) -> str:
    out = [
        f"`benchmarks/bench_latency.py`, {_dt.datetime.now(_dt.timezone.utc).strftime('%Y-%m-%d %H:%M')} UTC. "
        f"Machine: {machine()}; {threads} intra-op thread{'s' if threads != 1 else ''}.",
        "",
        f"Compiled `pipelines/cnn_classifier.yaml` (`composer.load(...).build(seed=0)`) against the same "
        f"network hand-written as an `nn.Module` (modules for conv/pool/linear, `F.relu`, `mean`, "
        f"`F.softmax`), same state dict, outputs checked bitwise equal first. Input [B, 3, {H}, {W}], "
        f"eval + `no_grad`, ABBA-interleaved, median per side.",
        "",
        "| batch | iterations | compiled | hand-written | ratio (medians) | median of paired ratios | target |",
        "|---:|---:|---:|---:|---:|---:|:--|",
    ]
    for r in rows:
        ok = "met" if r["ratio"] <= TARGET else "**NOT met**"
        out.append(f"| {r['batch']} | {r['iters']:,} | {r['compiled_us']:,.1f} µs | {r['hand_us']:,.1f} µs | "
                   f"{r['ratio']:.3f} | {r['paired_ratio']:.3f} | ≤ {TARGET} {ok} |")
    out.append("")
    ca, hb = dispatch
    out.append(f"- Python dispatch cost (both forwards on a 1×3×2×2 input, compute negligible): compiled "
               f"{ca:.1f} µs, hand-written {hb:.1f} µs, difference {ca - hb:+.1f} µs per call. The compiled "
               f"forward calls a module for every block (`act1`, `act2`, `gap`, `probs` are `nn.ReLU`, "
               f"`GlobalAvgPool2d`, `nn.Softmax` modules), where the hand-written one calls functions; "
               f"each `nn.Module.__call__` costs a few µs of Python.")
    if keep is not None:
        out.append(f"- Diagnosis at batch {keep['batch']}: the hand-written network changed only to keep every "
                   f"intermediate in its own variable until `return` (as the generated forward does) runs "
                   f"{keep['ratio']:.3f}× the hand-written one ({keep['compiled_us']:,.0f} vs "
                   f"{keep['hand_us']:,.0f} µs, {keep['iters']} ABBA iterations). The generated forward never "
                   f"drops a dead value, so every activation of the pass stays allocated until it returns; "
                   f"freeing each value after its last use (`conv1 = None`, as torch.fx's generated code "
                   f"does) made the compiled forward match the hand-written one in a trial run.")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1)")
    ap.add_argument("--seconds", type=float, default=12.0, help="timing budget per batch size")
    ap.add_argument("--batches", default="1,32")
    ap.add_argument("--no-write", action="store_true", help="print only; leave RESULTS.md alone")
    ap.add_argument("--show-code", action="store_true", help="print the compiled model's generated forward")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    compiled, hand = make_models()
    if args.show_code:
        print(compiled.code)
    rows = []
    for batch in (int(b) for b in args.batches.split(",")):
        check_equal(compiled, hand, batch)
        r = interleaved(compiled, hand, batch, args.seconds)
        rows.append(r)
        print(f"batch {batch:>3}: compiled {r['compiled_us']:9.1f} µs   hand {r['hand_us']:9.1f} µs   "
              f"ratio {r['ratio']:.3f} (paired {r['paired_ratio']:.3f}, {r['iters']} iterations)", flush=True)
    dispatch = overhead_us(compiled, hand)
    keep = None
    worst = max(rows, key=lambda r: r["ratio"])
    if worst["ratio"] > TARGET:  # explain it: is it the values the generated forward keeps alive?
        keeper = HandCNNKeepAlive().eval()
        keeper.load_state_dict(hand.state_dict(), strict=True)
        check_equal(keeper, hand, worst["batch"])
        keep = interleaved(keeper, hand, worst["batch"], args.seconds / 2)
        print(f"diagnosis, batch {worst['batch']}: hand-written keeping intermediates alive / hand-written = "
              f"{keep['ratio']:.3f}", flush=True)
    text = report(rows, args.threads, dispatch, keep)
    print()
    print(text)
    if not args.no_write:
        write_section(RESULTS, SECTION, text)
        print(f"\nwrote {SECTION!r} in {RESULTS.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

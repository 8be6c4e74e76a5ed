"""Shared by the benchmark scripts: the machine line, a median with its confidence interval,
and printing a report and writing it as one `## ` section of RESULTS.md, leaving the others."""

from __future__ import annotations

import gc
import math
import os
import platform
import re
import resource
import statistics
import time
from pathlib import Path
from typing import Callable, Optional

import torch

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown CPU"


def machine(*extra: str, load: bool = False) -> str:
    """`2 CPUs (nproc 2), <cpu>; Python …, torch …` plus any extra versions."""
    where = f"{os.cpu_count()} CPUs (nproc {len(os.sched_getaffinity(0))}), {cpu_model()}"
    if load:
        where += ", load average " + ", ".join(f"{x:.1f}" for x in os.getloadavg())
    versions = [f"Python {platform.python_version()}, torch {torch.__version__}", *extra]
    return f"{where}; " + "; ".join(versions)


def median_ci(xs: list[float]) -> tuple[float, float, float]:
    """The median and a distribution-free 95% confidence interval for it (binomial order statistics)."""
    s = sorted(xs)
    n = len(s)
    half = 1.96 * math.sqrt(n) / 2
    lo, hi = max(0, int(n / 2 - half)), min(n - 1, int(math.ceil(n / 2 + half)))
    return statistics.median(s), s[lo], s[hi]


def publish(heading: str, text: str, write: bool = True) -> None:
    """Print a benchmark's report and (unless `write` is false) store it as its RESULTS.md section."""
    print("\n" + text)
    if write:
        write_section(RESULTS, heading, text)
        print(f"\nwrote {heading!r} in benchmarks/{RESULTS.name}")


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


def balanced_orders(names: list[str]) -> list[list[str]]:
    """Each rotation of `names` and its reverse: after len(orders) iterations every function has run
    in every position equally often, and after and before every other one."""
    out = []
    for k in range(len(names)):
        rot = names[k:] + names[:k]
        out += [rot, rot[::-1]] if len(names) > 1 else [rot]
    return out


def interleave(fns: dict[str, Callable[[], object]], budget_s: float, min_iters: int, warmup: int,
               hard_end: Optional[float] = None, context: Callable = None) -> dict:
    """Run every function once per iteration, in balanced rotating order (so none always runs first
    or after the same neighbour), until the budget is spent and `min_iters` are done; past
    `hard_end` (the section's deadline) two iterations are enough. Each call: wall clock, and
    the process's user and kernel CPU time (all threads). `context` wraps the runs (default
    `torch.no_grad`)."""
    names = list(fns)
    orders = balanced_orders(names)
    meas = {n: {"wall": [], "user": [], "sys": []} for n in names}
    usage, who, clock = resource.getrusage, resource.RUSAGE_SELF, time.perf_counter_ns
    with (context or torch.no_grad)():
        for _ in range(warmup):
            for n in names:
                fns[n]()
        gc.collect()
        t_end = time.perf_counter() + budget_s
        i = 0
        while True:
            now = time.perf_counter()
            if (i >= min_iters and now >= t_end) or (hard_end is not None and i >= 2 and now >= hard_end):
                break
            for n in orders[i % len(orders)]:
                r0, t0 = usage(who), clock()
                fns[n]()
                t1, r1 = clock(), usage(who)
                m = meas[n]
                m["wall"].append((t1 - t0) / 1e6)
                m["user"].append((r1.ru_utime - r0.ru_utime) * 1e3)
                m["sys"].append((r1.ru_stime - r0.ru_stime) * 1e3)
            i += 1
    for m in meas.values():
        m["cpu"] = [u + k for u, k in zip(m["user"], m["sys"])]
    return {"iters": i, "meas": meas}


def op_counts(call: Callable[[], object], context: Callable = None) -> dict[str, int]:
    """aten op name -> calls in one profiled forward, run under `context` (default `torch.no_grad`)."""
    from torch.profiler import ProfilerActivity, profile
    with (context or torch.no_grad)():
        call()
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            call()
    return {e.key: e.count for e in prof.key_averages() if e.key.startswith("aten::")}


def parse_options(argv, doc: str, parts: list[str], minutes: float, threads_for: str, quick: str,
                  threads: int = 1):
    """The options every timed benchmark takes: `--minutes` (default `minutes`, 1.5 with `--quick`),
    `--threads` (default `threads`, for `threads_for`), `--only` (a comma list of `parts`), `--quick` (a short
    smoke run: `quick` says what it leaves out), `--write` / `--no-write`. Returns (args, minutes,
    the chosen parts in order, whether RESULTS.md is written)."""
    import argparse
    ap = argparse.ArgumentParser(description=doc.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=None,
                    help=f"time for the whole run (default {minutes:g}; 1.5 with --quick)")
    ap.add_argument("--threads", type=int, default=threads, help=f"torch intra-op threads for the {threads_for} "
                                                                  f"part (default {threads})")
    ap.add_argument("--only", default=",".join(parts), help="comma list of: " + ", ".join(parts))
    ap.add_argument("--quick", action="store_true", help=f"smoke run: {quick}, 1.5 minutes, nothing written")
    ap.add_argument("--write", action="store_true", help="with --quick: write RESULTS.md all the same")
    ap.add_argument("--no-write", action="store_true", help="print only; leave RESULTS.md alone")
    args = ap.parse_args(argv)
    chosen = [p for p in parts if p in {q.strip() for q in args.only.split(",")}]
    if not chosen:
        ap.error("--only names none of: " + ", ".join(parts))
    if args.threads < 1:
        ap.error("--threads must be 1 or more")
    total = args.minutes if args.minutes is not None else (1.5 if args.quick else minutes)
    return args, total, chosen, not args.no_write and (args.write or not args.quick)


# ---- deadlines, ratios and their formatting ----------------------------------------------------


class Section:
    """A deadline; `share(w, ws)` is this loop's part of the time left (weight w of the weights left)."""

    def __init__(self, end: float):
        self.end = end

    def left(self, reserve: float = 0.0) -> float:
        return max(0.0, self.end - time.perf_counter() - reserve)

    def share(self, weight: float, weights_left: float, reserve: float = 0.0) -> float:
        return self.left(reserve) * weight / max(weight, weights_left)


def sections(parts: list[str], weights: dict[str, float], total_s: float, start: Optional[float] = None):
    """(part, Section) for each part in turn, each deadline its weighted share of `total_s` after
    the previous one, from `start` (default now): an early part's unused time passes on to the later ones."""
    end = time.perf_counter() if start is None else start
    weight_sum = sum(weights[p] for p in parts)
    for p in parts:
        end += total_s * weights[p] / weight_sum
        yield p, Section(end)


def quartiles(xs: list[float]) -> tuple[float, float]:
    if len(xs) < 4:
        return min(xs), max(xs)
    q = statistics.quantiles(xs, n=4)
    return q[0], q[2]


def ratio_stats(res: dict, a: str, b: str) -> dict:
    """a / b by wall clock: ratio of medians, paired per-iteration ratio with its 95% CI, the
    quartiles of each side, and the CPU-time ratio."""
    ma, mb = res["meas"][a], res["meas"][b]
    med = statistics.median
    pairs = [x / y for x, y in zip(ma["wall"], mb["wall"]) if y > 0]
    paired, lo, hi = median_ci(pairs)
    cpu_b = med(mb["cpu"])
    return {"a": med(ma["wall"]), "b": med(mb["wall"]), "a_q": quartiles(ma["wall"]), "b_q": quartiles(mb["wall"]),
            "ratio": med(ma["wall"]) / med(mb["wall"]), "paired": paired, "lo": lo, "hi": hi,
            "a_cpu": med(ma["cpu"]), "b_cpu": cpu_b, "ratio_cpu": med(ma["cpu"]) / cpu_b if cpu_b > 0 else float("nan"),
            "iters": res["iters"]}


def fmt_ms(ms: float) -> str:
    return f"{ms:,.2f} ms" if ms < 10 else f"{ms:,.1f} ms" if ms < 100 else f"{ms:,.0f} ms"


def fmt_spread(ms: float, q: tuple[float, float]) -> str:
    return f"{fmt_ms(ms)} [{fmt_ms(q[0]).removesuffix(' ms')}, {fmt_ms(q[1])}]"

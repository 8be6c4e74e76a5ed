"""Shared by the benchmark scripts: the machine line, a median with its confidence interval,
and printing a report and writing it as one `## ` section of RESULTS.md, leaving the others."""

from __future__ import annotations

import math
import os
import platform
import re
import statistics
from pathlib import Path

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

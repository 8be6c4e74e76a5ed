"""Run every `benchmarks/bench_*.py` in turn; each writes its own section of RESULTS.md.

    .venv/bin/python benchmarks/run_all.py            # all of them, in name order
    .venv/bin/python benchmarks/run_all.py validate   # only those whose name contains a word

Scripts run one at a time (the machines are small and shared; parallel runs would disturb
each other's timings), each in its own interpreter with this one's Python. Exits non-zero
if any script failed, after running the rest.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


def scripts(filters: list[str]) -> list[Path]:
    found = sorted(HERE.glob("bench_*.py"))
    if filters:
        found = [p for p in found if any(f in p.stem for f in filters)]
    return found


def main(argv: list[str] | None = None) -> int:
    filters = list(sys.argv[1:] if argv is None else argv)
    todo = scripts(filters)
    if not todo:
        print(f"no benchmarks/bench_*.py matches {filters}", file=sys.stderr)
        return 1
    results: list[tuple[str, int, float]] = []
    for path in todo:
        print(f"\n=== {path.relative_to(ROOT)} ===", flush=True)
        t0 = time.perf_counter()
        rc = subprocess.call([sys.executable, str(path)], cwd=ROOT)
        results.append((path.name, rc, time.perf_counter() - t0))
    print("\n=== summary ===")
    for name, rc, dt in results:
        print(f"{name:<28} {'ok' if rc == 0 else f'FAILED (exit {rc})':<18} {dt:7.1f} s")
    print(f"results: {(HERE / 'RESULTS.md').relative_to(ROOT)}")
    return 0 if all(rc == 0 for _, rc, _ in results) else 1


if __name__ == "__main__":
    sys.exit(main())

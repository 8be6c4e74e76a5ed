"""What a finished run leaves beside its weights: `curves.png` (loss and metrics per epoch,
train and val, from Lightning's metrics.csv) and `report.json`."""

from __future__ import annotations

import csv
import io
import json
import math
import platform
from datetime import datetime, timezone
from pathlib import Path

import torch

from .. import _io


HISTORY = ".metrics.before-resume.csv"


def _rows(path: Path) -> list[dict]:
    try:
        with path.open(newline="") as f:
            return list(csv.DictReader(f))
    except OSError:
        return []


def _step(row: dict) -> float:
    try:
        return float(row.get("step") or "nan")
    except ValueError:
        return math.nan


def _merge(old: list[dict], new: list[dict]) -> list[dict]:
    """Rows of an earlier part of the run that come before the first step logged again, then the new ones."""
    first = min((s for s in map(_step, new) if not math.isnan(s)), default=math.inf)
    return [r for r in old if _step(r) < first] + new


def _write_rows(path: Path, rows: list[dict]) -> None:
    keys = sorted({k for r in rows for k in r if k})
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=keys)
    writer.writeheader()
    writer.writerows({k: r.get(k, "") for k in keys} for r in rows)
    _io.write_text(path, buf.getvalue())


def keep_history(folder: Path) -> None:
    """Before a resumed run starts (Lightning's CSV logger starts metrics.csv afresh): keep the
    rows logged so far, to be put back in front of the new ones at the end."""
    current = _rows(folder / "metrics.csv")
    if current:
        _write_rows(folder / HISTORY, _merge(_rows(folder / HISTORY), current))


def restore_history(folder: Path) -> None:
    history = folder / HISTORY
    if history.exists():
        _write_rows(folder / "metrics.csv", _merge(_rows(history), _rows(folder / "metrics.csv")))
        history.unlink()


def epoch_table(metrics_csv: Path) -> dict[str, list[tuple[int, float]]]:
    """Per-epoch series from metrics.csv: `train/loss`, `val/loss`, `val/accuracy`, … -> [(epoch, value)]."""
    series: dict[str, dict[int, float]] = {}
    try:
        rows = list(csv.DictReader(metrics_csv.open(newline="")))
    except OSError:
        return {}
    for row in rows:
        epoch = row.get("epoch")
        if not epoch:
            continue
        for key, value in row.items():
            if not value or key in ("epoch", "step") or key.endswith("_step") or "samples_per_s" in key:
                continue
            if not (key.startswith("train/") or key.startswith("val/")):
                continue
            name = key.removesuffix("_epoch")
            try:
                series.setdefault(name, {})[int(float(epoch))] = float(value)
            except ValueError:
                continue
    return {k: sorted(v.items()) for k, v in series.items()}


def plot_curves(table: dict[str, list[tuple[int, float]]], title: str) -> bytes:
    """One panel for the losses and one per metric, train and val on the same axes (PNG bytes)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = sorted({k.split("/", 1)[1] for k in table if "/loss_" not in k},
                   key=lambda n: (n != "loss", n))
    fig, axes = plt.subplots(1, max(1, len(names)), figsize=(4.2 * max(1, len(names)), 3.4), squeeze=False)
    for ax, name in zip(axes[0], names):
        for stage, style in (("train", "-o"), ("val", "-s")):
            points = table.get(f"{stage}/{name}")
            if points:
                ax.plot([e + 1 for e, _ in points], [v for _, v in points], style, markersize=3, label=stage)
        ax.set_title(name)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(title)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return buf.getvalue()


def write_outputs(result, plan, pipe, folder: Path, trainer) -> list[str]:
    """curves.png and report.json, atomically; returns the files of the run folder."""
    restore_history(folder)
    table = epoch_table(folder / "metrics.csv")
    if table:
        _io.write_bytes(folder / "curves.png", plot_curves(table, pipe.name))
    spec = plan.spec
    report = {
        "pipeline": pipe.name,
        "spec": str(Path(pipe.file).resolve()),
        "finished": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": {"platform": platform.platform(), "torch": torch.__version__,
                    "accelerator": type(trainer.accelerator).__name__.removesuffix("Accelerator").lower(),
                    "devices": trainer.num_devices, "nodes": trainer.num_nodes,
                    "strategy": type(trainer.strategy).__name__},
        "steps": result.steps, "epochs": result.epochs, "seconds": round(result.seconds, 3),
        "samples_per_s": round(result.samples_per_s, 2),
        "monitor": result.monitor, "best": result.best,
        "metrics": {k: v for k, v in sorted(result.metrics.items()) if math.isfinite(v)},
        "curves": {k: [v for _, v in pts] for k, pts in table.items()},
        "train": spec.model_dump(mode="json"),
    }
    _io.write_text(folder / "report.json", json.dumps(report, indent=2) + "\n")
    return sorted(str(p.relative_to(folder)) for p in folder.iterdir() if not p.name.startswith("."))

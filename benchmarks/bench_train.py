"""Training: `composer train` (Lightning) against a hand-written plain PyTorch loop, and DDP with two
processes against one.

1. **composer / plain loop**, in this process, one intra-op thread (`--threads`) for both —
   `pipelines/shapes_classifier.yaml` (small CNN, 64x64 PNGs in an image folder: compute-bound
   steps) and `pipelines/tabular_mlp.yaml` (MLP on a 32-column CSV: tiny steps, where the
   framework's cost per step shows). Each spec is copied into a temp folder with its data paths
   made absolute, `early_stopping` removed and `epochs` fixed (shapes 4, tabular 20; `--quick` 2
   and 10), so both sides take the same number of steps; validation stays on both sides (the
   spec's `val` split after every epoch). Both start from the same weights
   (`composer.load(spec).build(seed=0)`, saved once and given to composer as `init_weights`) with
   the same batch size, optimizer (the spec's AdamW, weight decay on weight matrices and kernels
   only, as composer groups them), per-step schedule (shapes: OneCycleLR; tabular: linear warm-up
   then cosine), fp32, no accumulation, no loader workers, and
   `torch.use_deterministic_algorithms(True)` (composer's default `deterministic: true`).
   - composer: `composer.train.train(pipe, folder, progress=False, devices=1, accelerator="cpu",
     init_weights=...)`: its Lightning Trainer, callbacks (checkpoints every epoch, best/last
     weights, LR monitor), CSV and TensorBoard loggers, train and val metrics (accuracy, f1).
   - plain: `torch.utils.data.DataLoader` (batch, shuffle, `drop_last`) over a
     `torchvision.datasets.ImageFolder` with `transforms.v2` `ToImage`, `ToDtype(float32,
     scale=True)`, `RandomHorizontalFlip(0.5)` (the spec's `augment`; composer decodes to RGB in
     [0, 1] the same way), or a `TensorDataset` of the CSV read once with numpy; `model.train()`,
     forward, `F.cross_entropy`, `loss.backward()`, `opt.step()`, `opt.zero_grad()`,
     `sched.step()`; after each epoch `model.eval()` and a `no_grad` pass over the val split (loss
     and accuracy).
   Throughput = training samples per second from the start of the first step (its batch in hand)
   to the end of the last optimizer step, on both sides: composer's side is timed by hooks of a
   `PipelineModule` subclass put in its place for the run (`on_train_batch_start`,
   `training_step`, the forward, `on_before_backward`/`on_after_backward`,
   `on_before_optimizer_step`, `on_train_batch_end`), the plain loop by the same marks inline;
   so process start, reading and checking the data, the Trainer's setup and the last epoch's
   validation and reports are outside both windows. The same marks split each side's time per
   step into phases. composer's own `TrainResult.samples_per_s` and each call's whole wall time
   are reported beside it. Runs alternate A/B/B/A (`_results.interleave`, one run per side per
   iteration, after one 1-epoch warm-up run of each); per pipeline: the median samples/s of
   each with its interquartile range, the ratio of medians composer / plain (target ≥ 0.95) and
   the median of the per-iteration ratios with a 95% CI. A third measure takes the data loaders
   alone: one epoch of composer's loader (`composer.train.data.make_loader`) against the plain
   `DataLoader`, interleaved, ms per batch.
2. **DDP, two processes against one**: `.venv/bin/composer train SPEC --devices 2 --strategy ddp
   --accelerator cpu` (Lightning starts the second process) against `--devices 1` with two
   intra-op threads (the whole machine) and, for the per-process scaling, with one (not in
   `--quick`); the DDP
   processes take one thread each (`OMP_NUM_THREADS=1`, what Lightning sets on 2 cores). The
   shapes spec copy (3 epochs, `--quick` 2), the same global batch (32: 16 per process), each run
   a fresh CLI process in a fresh folder, alternating. Per run: `samples_per_s` of its
   report.json, and the step window (the last `train/samples_per_s` of its metrics.csv: samples
   from the first step to the last logged step), and the run's wall time.

`--minutes` (default 8, `--quick` 1.5) bounds the run; each part gets its share of what is left.
`--quick` is a smoke run: fewer epochs, nothing written unless asked with `--write`.

    .venv/bin/python benchmarks/bench_train.py [--minutes 8] [--threads 1] [--only loop,ddp] [--quick] [--no-write]
"""

from __future__ import annotations

import contextlib
import csv
import datetime as _dt
import gc
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Optional

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
import yaml  # noqa: E402

import composer  # noqa: E402
from _results import (Section, fmt_ms, interleave, machine, median_ci, publish, quartiles,  # noqa: E402
                      parse_options, sections)

SECTION = "## Training"
TARGET = 0.95                        # composer / plain, samples per second
PIPELINES = ("shapes_classifier", "tabular_mlp")
EPOCHS = {"shapes_classifier": (4, 2), "tabular_mlp": (20, 10)}      # (full, --quick)
PIPE_WEIGHTS = {"shapes_classifier": 0.65, "tabular_mlp": 0.35}
LOADER_SHARE = 0.08                  # of a pipeline's time: the loaders alone
PART_WEIGHTS = {"loop": 0.62, "ddp": 0.38}
DDP_SPEC, DDP_EPOCHS = "shapes_classifier", (3, 2)
# name: (CLI --devices, --strategy, OMP_NUM_THREADS)
DDP_RUNS = {"1 process × 2 threads": ("1", "auto", "2"), "1 process × 1 thread": ("1", "auto", "1"),
            "DDP 2 processes × 1 thread": ("2", "ddp", "1")}
DDP_QUICK = ("1 process × 2 threads", "DDP 2 processes × 1 thread")
MIN_ITERS = 3
PHASES = ("data, between steps", "Lightning between hooks", "forward", "loss, logging, metrics", "backward",
          "optimizer step", "epoch ends")


def bench_spec(name: str, folder: Path, epochs: int) -> Path:
    """A copy of pipelines/NAME.yaml in `folder`: data paths absolute, no early stopping, `epochs` fixed."""
    src = ROOT / "pipelines" / f"{name}.yaml"
    raw = yaml.safe_load(src.read_text(encoding="utf-8"))
    tr = raw["train"]
    for key in ("train", "val"):
        if tr["data"].get(key):
            tr["data"][key] = str((src.parent / tr["data"][key]).resolve())
    tr.pop("early_stopping", None)
    tr.pop("max_steps", None)
    tr["epochs"] = epochs
    out = folder / f"{name}.e{epochs}.yaml"
    out.write_text(yaml.safe_dump(raw, sort_keys=False), encoding="utf-8")
    return out


# ---- step clocks ---------------------------------------------------------------------------------


class Clock:
    """Time marks of each training step: start (batch in hand), step0/step1 (training_step), fwd0/fwd1
    (the forward), bwd0/bwd1 (backward), opt0 (optimizer step begins), end (the step is over)."""

    def __init__(self):
        self.steps: list[dict[str, float]] = []
        self.epoch_first: list[bool] = []

    def start(self, first_of_epoch: bool) -> None:
        self.steps.append({"start": time.perf_counter()})
        self.epoch_first.append(first_of_epoch)

    def mark(self, name: str) -> None:
        self.steps[-1][name] = time.perf_counter()

    def window(self) -> float:
        return self.steps[-1]["end"] - self.steps[0]["start"]

    def phases(self) -> dict[str, float]:
        """Seconds spent in each of PHASES over the window."""
        out = dict.fromkeys(PHASES, 0.0)
        for k, s in enumerate(self.steps):
            if k:
                gap = s["start"] - self.steps[k - 1]["end"]
                out["epoch ends" if self.epoch_first[k] else "data, between steps"] += gap
            out["Lightning between hooks"] += ((s["fwd0"] - s["start"]) + (s["bwd0"] - s["step1"])
                                               + (s["opt0"] - s["bwd1"]))
            out["forward"] += s["fwd1"] - s["fwd0"]
            out["loss, logging, metrics"] += s["step1"] - s["fwd1"]
            out["backward"] += s["bwd1"] - s["bwd0"]
            out["optimizer step"] += s["end"] - s["opt0"]
        return out


@contextlib.contextmanager
def timed_module(clock: Clock):
    """composer.train's PipelineModule replaced, for one run, by a subclass whose hooks mark `clock`."""
    from composer.train import module as M
    base = M.PipelineModule
    if not callable(getattr(base, "_run", None)):
        raise SystemExit("composer.train.module.PipelineModule has no `_run(batch)` (the forward of a training step) "
                         "any more: update bench_train.timed_module to mark the forward where it now is")

    class Timed(base):
        def on_train_batch_start(self, batch, batch_idx):
            clock.start(batch_idx == 0)
            return super().on_train_batch_start(batch, batch_idx)

        def training_step(self, batch, batch_idx):
            clock.mark("step0")
            loss = super().training_step(batch, batch_idx)
            clock.mark("step1")
            return loss

        def _run(self, batch):
            clock.mark("fwd0")
            out = super()._run(batch)
            clock.mark("fwd1")
            return out

        def on_before_backward(self, loss):
            clock.mark("bwd0")
            return super().on_before_backward(loss)

        def on_after_backward(self):
            super().on_after_backward()
            clock.mark("bwd1")

        def on_before_optimizer_step(self, optimizer):
            clock.mark("opt0")
            return super().on_before_optimizer_step(optimizer)

        def on_train_batch_end(self, outputs, batch, batch_idx):
            super().on_train_batch_end(outputs, batch, batch_idx)
            clock.mark("end")

    M.PipelineModule = Timed
    try:
        yield
    finally:
        M.PipelineModule = base


# ---- the two sides -----------------------------------------------------------------------------


def run_composer(pipe, folder: Path, init: Path) -> dict:
    from composer.train import train
    clock = Clock()
    with timed_module(clock):
        result = train(pipe, folder, progress=False, echo=lambda line: None, devices=1, accelerator="cpu",
                       init_weights=str(init))
    shutil.rmtree(folder, ignore_errors=True)
    batch = pipe.resolved.train.spec.batch_size
    w = clock.window()
    return {"steps": len(clock.steps), "result_steps": result.steps, "window": w,
            "rate": len(clock.steps) * batch / w, "own_rate": result.samples_per_s, "fit_s": result.seconds,
            "phases": clock.phases(), "val_accuracy": result.metrics.get("val/accuracy"),
            "threads": torch.get_num_threads(), "deterministic": torch.are_deterministic_algorithms_enabled()}


class PlainData:
    """The data as a plain PyTorch user reads it: torchvision's ImageFolder or a TensorDataset."""

    def __init__(self, pipe):
        spec = pipe.resolved.train.spec
        data = spec.data
        self.batch = spec.batch_size
        self.input = next(iter(pipe.resolved.inputs))
        if data.format == "image_folder":
            from torchvision import datasets
            from torchvision.transforms import v2
            if list(spec.augment) != [{"horizontal_flip": {"p": 0.5}}]:
                raise SystemExit(f"{pipe.name}: the plain loop's transforms were written for `augment: "
                                 f"[horizontal_flip: {{p: 0.5}}]`, and the spec has {list(spec.augment)}")
            decode = [v2.ToImage(), v2.ToDtype(torch.float32, scale=True)]
            self.train = datasets.ImageFolder(data.train, transform=v2.Compose(decode + [v2.RandomHorizontalFlip(0.5)]))
            self.val = datasets.ImageFolder(data.val, transform=v2.Compose(decode))
            labels = list(pipe.resolved.labels.names) if pipe.resolved.labels is not None else []
            if labels and self.train.classes != labels:
                raise SystemExit(f"{pipe.name}: ImageFolder's classes {self.train.classes} are not the spec's {labels}")
        elif data.format == "table":
            self.train, self.val = self._table(Path(data.train)), self._table(Path(data.val))
        else:
            raise SystemExit(f"{pipe.name}: no plain loop for `format: {data.format}`")

    @staticmethod
    def _table(path: Path):
        from torch.utils.data import TensorDataset
        header = path.read_text(encoding="utf-8").split("\n", 1)[0].split(",")
        a = np.loadtxt(path, delimiter=",", skiprows=1, dtype=np.float64)
        y = header.index("label")
        x = np.delete(a, y, axis=1).astype(np.float32)
        return TensorDataset(torch.from_numpy(x), torch.from_numpy(a[:, y].astype(np.int64)))

    def loaders(self, seed: int):
        from torch.utils.data import DataLoader
        g = torch.Generator().manual_seed(seed)
        return (DataLoader(self.train, batch_size=self.batch, shuffle=True, drop_last=True, generator=g),
                DataLoader(self.val, batch_size=self.batch))


def plain_optimizer(pipe, model, total: int):
    """The spec's optimizer and schedule, written out as a user would (assertions keep them in step)."""
    spec = pipe.resolved.train.spec
    opt, sched = spec.optimizer, spec.schedule
    if opt.type != "adamw":
        raise SystemExit(f"{pipe.name}: the plain loop writes AdamW, and the spec has {opt.type}")
    decay = [p for p in model.parameters() if p.ndim >= 2]
    no_decay = [p for p in model.parameters() if p.ndim < 2]
    o = torch.optim.AdamW([{"params": decay, "weight_decay": opt.weight_decay},
                           {"params": no_decay, "weight_decay": 0.0}], lr=opt.lr, betas=tuple(opt.betas), eps=opt.eps)
    S = torch.optim.lr_scheduler
    if sched.type == "onecycle":
        return o, S.OneCycleLR(o, max_lr=sched.max_lr or opt.lr, total_steps=total, pct_start=sched.pct_start,
                               div_factor=sched.div_factor, final_div_factor=sched.final_div_factor)
    if sched.type == "cosine":
        warm = min(sched.warmup_steps, total - 1)
        cos = S.CosineAnnealingLR(o, T_max=max(1, total - warm), eta_min=sched.min_lr)
        if not warm:
            return o, cos
        return o, S.SequentialLR(o, [S.LinearLR(o, start_factor=0.01, end_factor=1.0, total_iters=warm), cos],
                                 milestones=[warm])
    raise SystemExit(f"{pipe.name}: the plain loop has no `{sched.type}` schedule")


def run_plain(pipe, data: PlainData, init: Path, epochs: int) -> dict:
    model = pipe.build(seed=0)
    composer.load_weights(model, str(init))
    train_dl, val_dl = data.loaders(seed=0)
    opt, sched = plain_optimizer(pipe, model, epochs * len(train_dl))
    torch.use_deterministic_algorithms(True)
    name = data.input
    clock = Clock()
    t_call = time.perf_counter()
    for epoch in range(epochs):
        model.train()
        first = True
        for x, y in train_dl:
            clock.start(first)
            first = False
            s = clock.steps[-1]
            s["step0"] = s["fwd0"] = s["start"]
            out = model(**{name: x})["logits"]
            clock.mark("fwd1")
            loss = F.cross_entropy(out, y)
            clock.mark("step1")
            s["bwd0"] = s["step1"]
            loss.backward()
            clock.mark("bwd1")
            s["opt0"] = s["bwd1"]
            opt.step()
            opt.zero_grad()
            sched.step()
            clock.mark("end")
        model.eval()
        correct, seen, val_loss = 0, 0, 0.0
        with torch.no_grad():
            for x, y in val_dl:
                out = model(**{name: x})["logits"]
                val_loss += float(F.cross_entropy(out, y, reduction="sum"))
                correct += int((out.argmax(-1) == y).sum())
                seen += len(y)
    w = clock.window()
    return {"steps": len(clock.steps), "window": w, "rate": len(clock.steps) * data.batch / w,
            "call_s": time.perf_counter() - t_call, "phases": clock.phases(), "val_accuracy": correct / seen,
            "threads": torch.get_num_threads(), "deterministic": torch.are_deterministic_algorithms_enabled()}


def _stats(xs: list[float]) -> dict:
    med, lo, hi = median_ci(xs)
    return {"median": med, "ci": (lo, hi), "q": quartiles(xs), "n": len(xs)}


def bench_pipeline(name: str, tmp: Path, section: Section, weight: float, weights_left: float, quick: bool,
                   log) -> dict:
    epochs = EPOCHS[name][1 if quick else 0]
    spec_path = bench_spec(name, tmp, epochs)
    warm_path = bench_spec(name, tmp, 1)
    pipe, warm_pipe = composer.load(spec_path), composer.load(warm_path)
    init = composer.save_weights(pipe.build(seed=0), tmp / f"{name}.init.safetensors")
    data = PlainData(pipe)
    batch = pipe.resolved.train.spec.batch_size
    counter = [0]

    def folder() -> Path:
        counter[0] += 1
        return tmp / f"run{counter[0]}"

    t0 = time.perf_counter()
    c_warm = run_composer(warm_pipe, folder(), init)
    p_warm = run_plain(warm_pipe, data, init, 1)
    warm = time.perf_counter() - t0
    iteration = warm * epochs           # an over-estimate of one iteration (the set-up does not grow with epochs)
    log(f"  {name}: warm-up (1 epoch) composer {c_warm['rate']:.0f}, plain {p_warm['rate']:.0f} samples/s, "
        f"{warm:.1f} s")
    share = section.share(weight, weights_left, reserve=2.0)
    loader = loaders_alone(pipe, spec_path.parent, data, share * LOADER_SHARE, log)
    share = section.share(weight, weights_left, reserve=2.0)
    records: dict[str, list[dict]] = {"composer": [], "plain": []}

    def composer_fn():
        records["composer"].append(run_composer(pipe, folder(), init))

    def plain_fn():
        records["plain"].append(run_plain(pipe, data, init, epochs))

    res = interleave({"composer": composer_fn, "plain": plain_fn}, max(0.0, share - iteration), MIN_ITERS, 0,
                     hard_end=section.end - iteration, context=contextlib.nullcontext)
    c, p = records["composer"], records["plain"]
    for r in c:
        if r["steps"] != r["result_steps"] or r["steps"] != p[0]["steps"]:
            raise SystemExit(f"{name}: composer took {r['result_steps']} steps ({r['steps']} timed), the plain loop "
                             f"{p[0]['steps']}; not comparing different runs")
    out = {"name": name, "epochs": epochs, "batch": batch, "steps": p[0]["steps"], "iters": res["iters"],
           "composer": _stats([r["rate"] for r in c]), "plain": _stats([r["rate"] for r in p]),
           "paired": _stats([a["rate"] / b["rate"] for a, b in zip(c, p)]),
           "own": statistics.median(r["own_rate"] for r in c),
           "call_c": statistics.median(res["meas"]["composer"]["wall"]) / 1e3,
           "call_p": statistics.median(res["meas"]["plain"]["wall"]) / 1e3,
           "fit_s": statistics.median(r["fit_s"] for r in c),
           "window_c": statistics.median(r["window"] for r in c), "window_p": statistics.median(r["window"] for r in p),
           "phases_c": {k: statistics.median(r["phases"][k] / r["steps"] for r in c) * 1e3 for k in PHASES},
           "phases_p": {k: statistics.median(r["phases"][k] / r["steps"] for r in p) * 1e3 for k in PHASES},
           "val_c": statistics.median(r["val_accuracy"] for r in c if r["val_accuracy"] is not None),
           "val_p": statistics.median(r["val_accuracy"] for r in p),
           "threads": {r["threads"] for r in c + p}, "deterministic": {r["deterministic"] for r in c + p},
           "loader": loader, "dataset": str(Path(pipe.resolved.train.spec.data.train).relative_to(ROOT))}
    out["ratio"] = out["composer"]["median"] / out["plain"]["median"]
    out["ms_c"] = batch / out["composer"]["median"] * 1e3
    out["ms_p"] = batch / out["plain"]["median"] * 1e3
    out["verdict"] = ("met" if out["ratio"] >= TARGET else
                      "not met, within noise" if out["paired"]["ci"][1] >= TARGET else "**NOT met**")
    log(f"  {name}: {out['steps']} steps × {batch}, {res['iters']} iterations: composer {out['composer']['median']:.0f} "
        f"samples/s, plain {out['plain']['median']:.0f}, ratio {out['ratio']:.3f} (paired {out['paired']['median']:.3f} "
        f"[{out['paired']['ci'][0]:.3f}, {out['paired']['ci'][1]:.3f}]); {out['ms_c']:.2f} vs {out['ms_p']:.2f} ms/step; "
        f"composer's own figure {out['own']:.0f} samples/s")
    return out


def loaders_alone(pipe, spec_dir: Path, data: PlainData, budget: float, log) -> dict:
    """One training epoch of composer's loader against the plain DataLoader, interleaved: ms per batch."""
    from composer.train.data import make_loader, open_splits
    from composer.train.plan import plan as make_plan
    p = make_plan(pipe)
    seed = pipe.resolved.seed or 0
    examples, _ = open_splits(p, spec_dir, seed)
    ours = make_loader(examples, p, train=True, batch_size=p.spec.batch_size, seed=seed)
    theirs, _ = data.loaders(seed=0)

    def epoch(loader) -> Callable[[], None]:
        def run():
            for _ in loader:
                pass
        return run

    res = interleave({"composer": epoch(ours), "plain": epoch(theirs)}, budget, MIN_ITERS, 1)
    n = len(ours)
    out = {k: statistics.median(res["meas"][k]["wall"]) / n for k in ("composer", "plain")}
    out.update(iters=res["iters"], batches=n)
    log(f"  loaders alone: composer {out['composer']:.2f} ms/batch, plain {out['plain']:.2f} ms/batch, "
        f"{res['iters']} iterations")
    return out


def bench_loop(tmp: Path, section: Section, quick: bool, log) -> list[dict]:
    rows = []
    left = sum(PIPE_WEIGHTS.values())
    for name in PIPELINES:
        rows.append(bench_pipeline(name, tmp, section, PIPE_WEIGHTS[name], left, quick, log))
        left -= PIPE_WEIGHTS[name]
        gc.collect()
    return rows


# ---- 2. DDP ---------------------------------------------------------------------------------------


def composer_cli() -> str:
    here = Path(sys.executable).parent / "composer"
    found = str(here) if here.exists() else shutil.which("composer")
    if not found:
        raise SystemExit("no `composer` command next to this Python or on PATH: install the project (pip install -e .)")
    return found


def _last_logged_rate(metrics_csv: Path) -> tuple[Optional[float], Optional[int]]:
    try:
        rows = [r for r in csv.DictReader(metrics_csv.open(newline="")) if r.get("train/samples_per_s")]
    except OSError:
        return None, None
    if not rows:
        return None, None
    return float(rows[-1]["train/samples_per_s"]), int(float(rows[-1]["step"]))


def run_cli(spec: Path, folder: Path, devices: str, strategy: str, threads: str) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS=threads)
    cmd = [composer_cli(), "train", str(spec), "-o", str(folder), "--devices", devices, "--strategy", strategy,
           "--accelerator", "cpu", "--no-progress"]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-15:])
        raise SystemExit(f"`{' '.join(cmd)}` failed (exit {proc.returncode}):\n{tail}")
    report = json.loads((folder / "report.json").read_text())
    rate, at = _last_logged_rate(folder / "metrics.csv")
    shutil.rmtree(folder, ignore_errors=True)
    return {"wall": wall, "report_rate": report["samples_per_s"], "fit_s": report["seconds"], "steps": report["steps"],
            "window_rate": rate, "window_step": at, "devices": report["machine"]["devices"],
            "strategy": report["machine"]["strategy"]}


def bench_ddp(tmp: Path, section: Section, quick: bool, log) -> dict:
    epochs = DDP_EPOCHS[1 if quick else 0]
    spec = bench_spec(DDP_SPEC, tmp, epochs)
    names = list(DDP_QUICK if quick else DDP_RUNS)
    records: dict[str, list[dict]] = {n: [] for n in names}
    counter = [0]

    def fn(name: str) -> Callable[[], None]:
        devices, strategy, threads = DDP_RUNS[name]

        def run():
            counter[0] += 1
            r = run_cli(spec, tmp / f"cli{counter[0]}", devices, strategy, threads)
            records[name].append(r)
            log(f"  {name}: {r['window_rate']:.0f} samples/s over the steps (to step {r['window_step']}), "
                f"report.json {r['report_rate']:.0f}, fit {r['fit_s']:.1f} s, wall {r['wall']:.1f} s")
        return run

    per_run = 25.0 if quick else 30.0
    budget = max(0.0, section.left(reserve=2.0) - per_run * len(names))
    res = interleave({n: fn(n) for n in names}, budget, 1 if quick else 2, 0, hard_end=section.end - per_run * len(names),
                     context=contextlib.nullcontext)
    rows = []
    for n in names:
        rs = records[n]
        rows.append({"name": n, "devices": DDP_RUNS[n][0], "threads": DDP_RUNS[n][2], "runs": len(rs),
                     "window": _stats([r["window_rate"] for r in rs]), "report": _stats([r["report_rate"] for r in rs]),
                     "wall": statistics.median(r["wall"] for r in rs), "fit": statistics.median(r["fit_s"] for r in rs),
                     "steps": rs[0]["steps"], "strategy": rs[0]["strategy"], "window_step": rs[0]["window_step"]})
    pipe = composer.load(spec)
    return {"rows": rows, "epochs": epochs, "iters": res["iters"], "batch": pipe.resolved.train.spec.batch_size,
            "params": sum(p.numel() for p in pipe.build(seed=0).parameters())}


# ---- the report -------------------------------------------------------------------------------------


def _spread(s: dict, digits: int = 0) -> str:
    return f"{s['median']:,.{digits}f} [{s['q'][0]:,.{digits}f}, {s['q'][1]:,.{digits}f}]"


def loop_notes(rows: list[dict]) -> list[str]:
    notes = []
    for r in rows:
        c, p = r["phases_c"], r["phases_p"]
        extra = r["ms_c"] - r["ms_p"]
        diffs = sorted(((c[k] - p[k], k) for k in PHASES), reverse=True)
        big = [f"{k} {d:+.2f} ms" for d, k in diffs if abs(d) >= max(0.05, 0.05 * abs(extra))]
        ld = r["loader"]
        notes.append(f"{r['name']}: composer {r['ms_c']:.2f} ms per step against {r['ms_p']:.2f} ms "
                     f"({extra:+.2f} ms, ratio {r['ratio']:.3f}); by phase: " + ", ".join(big) +
                     f". The loaders alone: composer {ld['composer']:.2f} ms per batch of {r['batch']}, the plain "
                     f"DataLoader {ld['plain']:.2f} ms ({(ld['composer'] - ld['plain']) / r['batch'] * 1e3:+.0f} µs "
                     "per example).")
        if abs(r["own"] - r["composer"]["median"]) > 0.03 * r["composer"]["median"]:
            notes.append(f"{r['name']}: composer's own `TrainResult.samples_per_s` is {r['own']:,.0f} against "
                         f"{r['composer']['median']:,.0f} over the steps: it divides the samples by the whole "
                         f"`trainer.fit` ({r['fit_s']:.2f} s, against a {r['window_c']:.2f} s step window), so "
                         "Lightning's setup, the last validation and the end-of-run checkpoint and weights writes "
                         "count in it.")
    return notes


def ddp_notes(ddp: dict) -> list[str]:
    rows = {r["name"]: r for r in ddp["rows"]}
    notes = []
    d = rows.get("DDP 2 processes × 1 thread")
    two = rows.get("1 process × 2 threads")
    one = rows.get("1 process × 1 thread")
    if d and two:
        notes.append(f"DDP / one process with both cores, over the steps: {d['window']['median'] / two['window']['median']:.2f}; "
                     f"by report.json: {d['report']['median'] / two['report']['median']:.2f} (its `samples_per_s` "
                     f"divides by the whole fit, {d['fit']:.1f} s for DDP, which includes starting the second "
                     "process and the gloo rendezvous).")
    if d and one:
        eff = d["window"]["median"] / (2 * one["window"]["median"])
        notes.append(f"Scaling per process: DDP's two single-thread processes give {eff:.0%} of twice one "
                     f"single-thread process ({d['window']['median']:.0f} against 2 × {one['window']['median']:.0f} "
                     "samples/s).")
    if two and one:
        notes.append(f"One process, two threads against one thread: {two['window']['median'] / one['window']['median']:.2f}× "
                     "(torch's intra-op parallelism on a CNN at batch 32).")
    notes.append(f"What limits DDP on this machine: 2 cores shared with other jobs (load average in the header), so "
                 "two busy processes take both cores the other jobs also want; each process decodes and augments its "
                 f"own half batch ({ddp['batch'] // 2} images) in the training process (no loader workers); every step "
                 f"all-reduces the gradients over gloo ({ddp['params']:,} parameters: small) and waits for the slower "
                 "process; a one-process run with two threads instead loses time whenever one of its two OpenMP "
                 "threads is descheduled (every parallel region waits for it).")
    return notes


def report(info: str, threads: int, load0, wall_s: float, quick: bool, loop: Optional[list[dict]],
           ddp: Optional[dict]) -> str:
    when = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M")
    load1 = os.getloadavg()
    out = [f"`benchmarks/bench_train.py`{' --quick' if quick else ''}, {when} UTC, {wall_s / 60:.1f} min. "
           f"Machine: {info}; load average {load0[0]:.2f} at the start, {load1[0]:.2f} at the end.", ""]
    if loop:
        out += ["**composer train / a plain PyTorch loop**, in one process, "
                f"`torch.set_num_threads({threads})`, `torch.use_deterministic_algorithms(True)` on both sides "
                "(composer's default `deterministic: true`). Spec copies with `early_stopping` removed and `epochs` "
                "fixed, validation after every epoch on both sides. The same initial weights (`build(seed=0)`), "
                "batch, AdamW with the same groups, per-step schedule, fp32, no workers. The plain loop: a torch "
                "`DataLoader` over torchvision's `ImageFolder` (`v2.ToImage`, `ToDtype(float32, scale=True)`, "
                "`RandomHorizontalFlip(0.5)`) or a `TensorDataset` of the CSV read once with numpy; forward, "
                "`F.cross_entropy`, `backward`, `step`, `zero_grad`, `sched.step`; a `no_grad` val pass per epoch. "
                "Throughput: training samples per second from the first step (its batch in hand) to the end of "
                "the last optimizer step (composer: marks from the hooks of a `PipelineModule` subclass); runs "
                "alternate A/B/B/A after a warm-up run of each.", "",
                f"| pipeline | steps × batch | runs | plain samples/s [IQR] | composer samples/s [IQR] | **composer / "
                f"plain** | paired [95% CI] | ms/step plain → composer | target ≥ {TARGET} | composer's own figure |",
                "|:--|--:|--:|--:|--:|--:|--:|--:|:--|--:|"]
        for r in loop:
            pr = r["paired"]
            out.append(f"| {r['name']} | {r['steps']} × {r['batch']} | {r['iters']} | {_spread(r['plain'])} | "
                       f"{_spread(r['composer'])} | **{r['ratio']:.3f}** | {pr['median']:.3f} [{pr['ci'][0]:.3f}, "
                       f"{pr['ci'][1]:.3f}] | {r['ms_p']:.2f} → {r['ms_c']:.2f} ({r['ms_c'] - r['ms_p']:+.2f}) | "
                       f"{r['verdict']} | {r['own']:,.0f} |")
        out += ["", "Where a step's time goes, ms per step (medians over the runs). `data, between steps`: from the "
                    "end of one step to the next batch in hand (composer: its loader, and Lightning's step end: the "
                    "LR scheduler's step, the loggers); `Lightning between hooks`: from the batch's arrival to the "
                    "forward, from `training_step`'s return to `backward` (zero_grad), and from `backward` to the "
                    "optimizer; `loss, logging, metrics`: after the forward to `training_step`'s return (plain: "
                    "`F.cross_entropy`); `optimizer step`: to the step's end (plain: with `zero_grad` and "
                    "`sched.step`); `epoch ends`: the time between epochs — validation, checkpoints, epoch "
                    "metrics, and the next epoch's first batch — spread over the steps:", "",
                "| phase | " + " | ".join(f"{r['name']} plain | composer" for r in loop) + " |",
                "|:--|" + "--:|--:|" * len(loop)]
        for k in PHASES:
            out.append(f"| {k} | " + " | ".join(f"{r['phases_p'][k]:.2f} | {r['phases_c'][k]:.2f}" for r in loop) + " |")
        out.append("| **total** | " + " | ".join(f"**{sum(r['phases_p'].values()):.2f}** | "
                                                 f"**{sum(r['phases_c'].values()):.2f}**" for r in loop) + " |")
        out += ["", "| pipeline | training data | loaders alone, ms per batch: plain → composer | iterations | whole "
                    "call: plain → composer `train()` | composer's fit | val accuracy after the run: plain, composer |",
                "|:--|:--|--:|--:|--:|--:|--:|"]
        for r in loop:
            ld = r["loader"]
            out.append(f"| {r['name']} | `{r['dataset']}` | {fmt_ms(ld['plain'])} → {fmt_ms(ld['composer'])} | "
                       f"{ld['iters']} | {r['call_p']:.2f} s → {r['call_c']:.2f} s | {r['fit_s']:.2f} s | "
                       f"{r['val_p']:.3f}, {r['val_c']:.3f} |")
        out += [""] + [f"- {n}" for n in loop_notes(loop)]
        odd = [r["name"] for r in loop if r["threads"] != {threads} or r["deterministic"] != {True}]
        if odd:
            out.append(f"- Threads or deterministic mode changed during the runs of {', '.join(odd)}.")
    if ddp:
        out += ["", f"**DDP on this machine**: `composer train` through the CLI, the shapes spec copy "
                    f"({ddp['epochs']} epochs, global batch {ddp['batch']}), `--accelerator cpu`, each run a fresh "
                    "process and folder, alternating; intra-op threads by `OMP_NUM_THREADS`. Over the steps: the "
                    "last `train/samples_per_s` of the run's metrics.csv (samples from the first step to the last "
                    "logged one, that step's batch counted and its compute not: about 1/steps high, alike for every "
                    "run); report.json: its `samples_per_s`.", "",
                "| run | steps | runs | samples/s over the steps [IQR] | report.json samples/s | fit | wall per run | "
                "over the steps, / 1 process × 2 threads |", "|:--|--:|--:|--:|--:|--:|--:|--:|"]
        base = next((r for r in ddp["rows"] if r["name"] == "1 process × 2 threads"), ddp["rows"][0])
        for r in ddp["rows"]:
            out.append(f"| {r['name']} (`--devices {r['devices']}`, {r['strategy']}) | {r['steps']} | {r['runs']} | "
                       f"{_spread(r['window'])} | {_spread(r['report'])} | {r['fit']:.1f} s | {r['wall']:.1f} s | "
                       f"{r['window']['median'] / base['window']['median']:.2f} |")
        out += [""] + [f"- {n}" for n in ddp_notes(ddp)]
    out += ["", "- Shared 2-core machine: absolute figures vary run to run; the ratios measured in one run are the "
                "figures to compare."]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    args, minutes, parts, write = parse_options(argv, __doc__, list(PART_WEIGHTS), 8.0, "loop", "fewer epochs")
    load0 = os.getloadavg()
    import lightning
    import torchvision
    info = machine(f"torchvision {torchvision.__version__}", f"lightning {lightning.__version__}")
    start = time.perf_counter()

    def log(msg: str) -> None:
        print(f"[{time.perf_counter() - start:6.1f} s] {msg}", flush=True)

    log(f"{info}; load average {load0[0]:.2f}")
    results: dict = {}
    threads = torch.get_num_threads()
    with tempfile.TemporaryDirectory(prefix="bench_train.") as d:
        total = minutes * 60 - (time.perf_counter() - start) - 3
        for p, section in sections(parts, PART_WEIGHTS, total):
            log(f"{p}: {section.left():.0f} s")
            if p == "loop":
                torch.set_num_threads(args.threads)
                try:
                    results[p] = bench_loop(Path(d), section, args.quick, log)
                finally:
                    torch.set_num_threads(threads)
            else:
                results[p] = bench_ddp(Path(d), section, args.quick, log)
            gc.collect()
    text = report(info, args.threads, load0, time.perf_counter() - start, args.quick, results.get("loop"),
                  results.get("ddp"))
    publish(SECTION, text, write=write)
    return 0


if __name__ == "__main__":
    sys.exit(main())

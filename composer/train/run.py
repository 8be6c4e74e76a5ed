"""`composer train`: a pipeline, its plan and its data handed to a Lightning Trainer, and the run
folder it leaves.

    runs/NAME/
      best.safetensors  last.safetensors     pipeline keys: `--weights` of every other command
      checkpoints/last.ckpt, step*.ckpt      Lightning's resumable checkpoints (optimizer, scheduler,
                                             step, loader position, RNG), written atomically
      metrics.csv  tensorboard/  curves.png  what was logged, per step and per epoch
      spec.yaml                              the resolved spec, `train:` with every default filled
      report.json                            the run: settings, final and best metrics, throughput

Every file is written atomically; a run killed at any moment resumes with `--resume` from its
last checkpoint, and with `deterministic: true` ends with the weights an uninterrupted run has.
"""

from __future__ import annotations

import logging
import time
import warnings
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Optional

import torch

from .. import _io
from .. import errors as E
from ..errors import ComposerError, Diagnostic, SpecError
from .plan import Plan, plan as make_plan

CKPT_DIR = "checkpoints"
STRATEGIES = ("auto", "ddp", "fsdp")


@dataclass
class TrainResult:
    folder: Path
    metrics: dict[str, float]
    best: Optional[float]
    monitor: Optional[str]
    steps: int
    epochs: int
    seconds: float
    samples_per_s: float
    files: list[str] = field(default_factory=list)


def monitor_of(p: Plan, has_val: bool) -> tuple[Optional[str], str, tuple]:
    """What makes `best` best, its mode, and where it was written (for errors)."""
    spec = p.spec
    if spec.checkpoint.monitor:
        name, where = spec.checkpoint.monitor, ("checkpoint", "monitor")
        mode = spec.checkpoint.mode
    elif spec.early_stopping is not None:
        name, mode, where = spec.early_stopping.monitor, spec.early_stopping.mode, ("early_stopping", "monitor")
    elif not has_val:
        return None, "min", ()
    elif p.objective_outputs:
        name, mode, where = "val/loss", "min", ()
    else:
        from .metrics import logged_names
        vals = [n for n in logged_names(p) if n.startswith("val/") and n != "val/loss"]
        if not vals:
            return None, "min", ()
        name, mode, where = vals[0], None, ()
    if mode is None:
        low = ("loss", "mse", "mae", "rmse", "mape")
        mode = "min" if any(x in name.rsplit("/", 1)[-1] for x in low) else "max"
    return name, mode, where


def _check_monitors(p: Plan, has_val: bool) -> None:
    from .metrics import logged_names
    names = logged_names(p)
    if not p.objective_outputs:
        names.remove("val/loss")
    diags: list[Diagnostic] = []
    spec = p.spec
    written = []
    if spec.early_stopping is not None:
        written.append((spec.early_stopping.monitor, ("early_stopping", "monitor")))
    if spec.checkpoint.monitor:
        written.append((spec.checkpoint.monitor, ("checkpoint", "monitor")))
    from .config import Plateau
    if isinstance(spec.schedule, Plateau):
        written.append((spec.schedule.monitor, ("schedule", "monitor")))
    for name, where in written:
        if name not in names:
            diags.append(Diagnostic(E.UNKNOWN_REF, f"`{name}` is not logged by this run", loc=p.section.loc(*where),
                                    path="train." + ".".join(where), expected="one of: " + ", ".join(names),
                                    found=name, hint=E.did_you_mean(name, names)))
        elif name.startswith("val/") and not has_val:
            diags.append(Diagnostic(E.INVALID_VALUE, f"`{name}` needs validation data, and `train.data` has none",
                                    loc=p.section.loc(*where), path="train." + ".".join(where),
                                    hint="add `val: PATH` or `val_fraction: 0.1` to `train.data`, or monitor "
                                         "`train/loss`"))
    if diags:
        raise SpecError(diags)


def check_run_folder(folder: Path, resume: bool) -> Optional[Path]:
    """The checkpoint to resume from (None for a new run); refuses to train over an earlier run."""
    last = folder / CKPT_DIR / "last.ckpt"
    if resume:
        if last.exists():
            return last
        # last.ckpt links to the newest checkpoint; a run killed while it was being relinked has none
        steps = sorted((folder / CKPT_DIR).glob("*.ckpt"), key=lambda p: p.stat().st_mtime)
        if not steps:
            raise ComposerError(f"--resume: {folder} has no checkpoint to resume from ({last} is missing)")
        return steps[-1]
    if folder.exists() and any(folder.iterdir()):
        if (folder / CKPT_DIR).exists() or (folder / "last.safetensors").exists():
            raise ComposerError(f"{folder} holds an earlier run: continue it with --resume, or give a new folder "
                                "with -o (nothing was changed)")
    if folder.exists() and not folder.is_dir():
        raise ComposerError(f"-o {folder}: it is a file; -o names the run folder")
    return None


def train(pipe, folder: Optional[Path] = None, *, resume: bool = False, devices: Any = None, num_nodes: int = 1,
          strategy: str = "auto", accelerator: str = "auto", progress: Optional[bool] = None,
          init_weights=None, echo=print) -> Optional[TrainResult]:
    """Train `pipe` by its `train:` section into `folder` (default runs/PIPELINE), starting from
    its initial weights (the spec's `weights:`, or `init_weights`: a composer.weights source).
    Returns None in the worker processes of a distributed run (rank 0 has the result)."""
    with quiet_lightning():
        return _train(pipe, folder, resume=resume, devices=devices, num_nodes=num_nodes, strategy=strategy,
                      accelerator=accelerator, progress=progress, init_weights=init_weights, echo=echo)


def _train(pipe, folder: Optional[Path], *, resume: bool, devices: Any, num_nodes: int, strategy: str,
           accelerator: str, progress: Optional[bool], init_weights, echo) -> Optional[TrainResult]:
    import lightning.pytorch as pl

    from .callbacks import callbacks_for
    from .data import open_splits
    from .module import PipelineModule

    p = make_plan(pipe)
    spec = p.spec
    seed = spec.seed if spec.seed is not None else pipe.resolved.seed
    folder = Path(folder) if folder is not None else Path("runs") / pipe.name
    ckpt = check_run_folder(folder, resume)
    if strategy not in STRATEGIES:
        raise ComposerError(f"unknown strategy {strategy!r}: choose {', '.join(STRATEGIES)}")
    accelerator = _accelerator(accelerator)
    if strategy == "fsdp" and accelerator == "cpu":
        raise ComposerError("--strategy fsdp runs on CUDA devices only (Lightning shards with FSDP on GPUs): use "
                            "--strategy ddp on CPUs (gloo), or run on GPUs")
    if spec.precision == "16-mixed" and accelerator == "cpu":
        raise ComposerError("precision 16-mixed needs a CUDA device; on the CPU use bf16-mixed (or 32)")
    train_data, val_data = open_splits(p, Path(pipe.file).resolve().parent, seed)
    _check_monitors(p, val_data is not None)
    train_data.check(p)
    if val_data is not None:
        val_data.check(p)
    if len(train_data) < spec.batch_size:
        raise ComposerError(f"{train_data.source}: {len(train_data)} training examples, fewer than one batch of "
                            f"{spec.batch_size} (batches are full in training): lower `train.batch_size`")
    _io.ensure_dir(folder)
    pl.seed_everything(seed, workers=True, verbose=False)
    model = pipe.build()
    if init_weights is not None:
        from ..weights import load_weights
        load_weights(model, init_weights)
    module = PipelineModule(model, p, train_data=train_data, val_data=val_data, seed=seed,
                            workers=spec.data.workers)
    module.live = bool(progress)
    monitor, mode, _ = monitor_of(p, val_data is not None)
    cbs, loggers, plugins = callbacks_for(p, folder, monitor, mode, progress, echo)
    trainer = pl.Trainer(
        accelerator=accelerator, devices=devices if devices is not None else 1, num_nodes=num_nodes,
        strategy=strategy, precision=spec.precision,
        max_epochs=spec.epochs if spec.epochs is not None else (-1 if spec.max_steps else 10),
        max_steps=spec.max_steps or -1, accumulate_grad_batches=spec.accumulate,
        gradient_clip_val=(spec.clip_grad.norm or spec.clip_grad.value) if spec.clip_grad else None,
        gradient_clip_algorithm=("norm" if spec.clip_grad.norm else "value") if spec.clip_grad else None,
        deterministic=spec.deterministic, use_distributed_sampler=False, callbacks=cbs, logger=loggers,
        plugins=plugins, log_every_n_steps=spec.log_every_n_steps, num_sanity_val_steps=0,
        enable_model_summary=False, enable_progress_bar=bool(progress), default_root_dir=str(folder),
        limit_val_batches=1.0 if val_data is not None else 0)
    if trainer.global_rank == 0:
        _write_spec(pipe, folder)
        if ckpt is not None:
            from .report import keep_history
            keep_history(folder)
    t0 = time.perf_counter()
    trainer.fit(module, ckpt_path=str(ckpt) if ckpt else None)
    seconds = time.perf_counter() - t0
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if torch.is_tensor(v) and v.numel() == 1}
    writer = next(c for c in cbs if type(c).__name__ == "WeightsWriter")
    result = TrainResult(folder, metrics, writer.best, monitor, trainer.global_step, trainer.current_epoch, seconds,
                         module.samples_per_s)
    if trainer.global_rank != 0:
        return None
    from .report import write_outputs
    result.files = write_outputs(result, p, pipe, folder, trainer)
    return result


@contextmanager
def quiet_lightning() -> Iterator[None]:
    """Lightning's notices (devices found, tips, worker-count advice) stay out of composer's output;
    its warnings about the user's settings still show."""
    import lightning.pytorch as pl  # its loggers exist once it is imported
    del pl
    loggers = [logging.getLogger(n) for n in list(logging.root.manager.loggerDict) if n.startswith("lightning")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.WARNING)
    with warnings.catch_warnings():
        for pattern in (".*does not have many workers.*", ".*exists and is not empty.*", ".*LeafSpec.*",
                        ".*is not using a `DistributedSampler`.*", ".*smaller than the logging interval.*",
                        ".*`training_step` returned `None`.*", ".*when logging on epoch level in distributed.*", ".*Checkpoint directory .* exists and is not empty.*"):
            warnings.filterwarnings("ignore", message=pattern)
        try:
            yield
        finally:
            for lg, level in zip(loggers, levels):
                lg.setLevel(level)


def _accelerator(name: str) -> str:
    if name not in ("auto", "cpu", "cuda", "gpu"):
        raise ComposerError(f"unknown accelerator {name!r}: choose auto, cpu or cuda")
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name in ("cuda", "gpu") and not torch.cuda.is_available():
        raise ComposerError("--accelerator cuda: no CUDA device is visible here")
    return "cuda" if name == "gpu" else name


def _write_spec(pipe, folder: Path) -> None:
    """The resolved spec (sub-pipelines inlined), with the `train:` section as it ran (every default filled)."""
    import yaml

    from ..emit import to_yaml
    text = to_yaml(pipe.resolved)
    section = pipe.resolved.train.spec.model_dump(mode="json")
    text += "\n" + yaml.safe_dump({"train": section}, sort_keys=False, default_flow_style=None, width=110)
    _io.write_text(folder / "spec.yaml", text)

"""The Lightning callbacks, loggers and checkpoint IO a run uses, from the `train:` section.

Lightning's own: `ModelCheckpoint` (the resumable checkpoints), `EarlyStopping`,
`LearningRateMonitor`, `CSVLogger`, `TensorBoardLogger`, `RichProgressBar`. Ours: where Lightning
has no such thing — `WeightsWriter` keeps `best.safetensors`/`last.safetensors` in pipeline
keys, `EpochLines` prints one line per epoch where no progress bar is drawn, and
`AtomicCheckpointIO` makes every checkpoint write a temporary file that replaces the old one.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any, Optional

import lightning.pytorch as pl
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning.pytorch.callbacks import Callback, EarlyStopping, LearningRateMonitor, ModelCheckpoint

from .. import _io
from .plan import Plan
from .run import CKPT_DIR


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's checkpoint format, written to a temporary file in the same folder, synced,
    then moved over the old one: a run killed while saving keeps its previous checkpoint."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Optional[Any] = None) -> None:
        with _io.atomic_path(path) as tmp:
            super().save_checkpoint(checkpoint, str(tmp), storage_options)
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())


class WeightsWriter(Callback):
    """`best.safetensors` whenever the monitored value improves (every epoch without validation),
    and `last.safetensors` at the end: the model's state dict in pipeline keys."""

    def __init__(self, folder: Path, monitor: Optional[str], mode: str):
        self.folder, self.monitor, self.mode = folder, monitor, mode
        self.best: Optional[float] = None
        self.best_step: Optional[int] = None

    def _save(self, trainer: pl.Trainer, module, name: str) -> None:
        # every rank takes part (FSDP gathers the shards); rank 0 writes
        state = trainer.strategy.lightning_module_state_dict()
        if trainer.is_global_zero:
            from ..weights import save_tensors
            tensors = {k[len("model."):]: v for k, v in state.items() if k.startswith("model.")}
            save_tensors(tensors, self.folder / name, {"composer.step": str(trainer.global_step)},
                         module.model.pipeline_name)

    def on_validation_end(self, trainer: pl.Trainer, module) -> None:
        if trainer.sanity_checking or self.monitor is None:
            return
        value = trainer.callback_metrics.get(self.monitor)
        if value is None:
            return
        v = float(value)
        if math.isnan(v):
            return
        if self.best is None or (v < self.best if self.mode == "min" else v > self.best):
            self.best, self.best_step = v, trainer.global_step
            self._save(trainer, module, "best.safetensors")

    def on_train_epoch_end(self, trainer: pl.Trainer, module) -> None:
        if self.monitor is None:   # no validation: the newest weights are the best there are
            self.best_step = trainer.global_step
            self._save(trainer, module, "best.safetensors")

    def on_train_end(self, trainer: pl.Trainer, module) -> None:
        self._save(trainer, module, "last.safetensors")
        if not (self.folder / "best.safetensors").exists():
            self._save(trainer, module, "best.safetensors")

    def state_dict(self) -> dict[str, Any]:
        return {"best": self.best, "best_step": self.best_step}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best, self.best_step = state.get("best"), state.get("best_step")


class EpochLines(Callback):
    """One line per epoch (losses, metrics, throughput) where no progress bar is drawn. Printed
    once the epoch's metrics are all in: at the start of the next epoch, or at the end."""

    def __init__(self, echo):
        self.echo = echo
        self.pending: Optional[tuple[int, int]] = None

    def on_train_epoch_end(self, trainer: pl.Trainer, module) -> None:
        self.pending = (trainer.current_epoch, trainer.global_step)

    def on_train_epoch_start(self, trainer: pl.Trainer, module) -> None:
        self._flush(trainer)

    def on_train_end(self, trainer: pl.Trainer, module) -> None:
        self._flush(trainer)

    def _flush(self, trainer: pl.Trainer) -> None:
        if self.pending is None or not trainer.is_global_zero:
            return
        epoch, step = self.pending
        self.pending = None
        m = trainer.callback_metrics
        values: dict[str, float] = {}
        for k in m:
            name = k.removesuffix("_epoch")
            if (k.startswith("train/") or k.startswith("val/")) and not k.endswith("_step") and \
                    "samples_per_s" not in k and "/loss_" not in name and (k.endswith("_epoch") or name not in values):
                values[name] = float(m[k])
        parts = [f"{k} {values[k]:.4g}" for k in sorted(values, key=_order)]
        rate = m.get("train/samples_per_s")
        if rate is not None:
            parts.append(f"{float(rate):.0f} samples/s")
        total = trainer.max_epochs if trainer.max_epochs and trainer.max_epochs > 0 else "?"
        self.echo(f"epoch {epoch + 1}/{total}  step {step}  " + "  ".join(parts))


def _order(key: str) -> tuple:
    return (not key.startswith("train/"), "loss" not in key, key)


def callbacks_for(p: Plan, folder: Path, monitor: Optional[str], mode: str, progress: Optional[bool], echo):
    """Callbacks, loggers and plugins of a run."""
    from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger

    spec = p.spec
    ck = spec.checkpoint
    resumable = ModelCheckpoint(dirpath=str(folder / CKPT_DIR), filename="step{step}", auto_insert_metric_name=False,
                                monitor="step", mode="max", save_top_k=ck.keep, save_last="link",
                                every_n_train_steps=ck.every_n_steps, save_on_train_epoch_end=True)
    writer = WeightsWriter(folder, monitor, mode)
    cbs: list[Callback] = [resumable, writer, LearningRateMonitor(logging_interval="epoch")]
    if spec.early_stopping is not None:
        es = spec.early_stopping
        cbs.append(EarlyStopping(monitor=es.monitor, mode=es.mode, patience=es.patience, min_delta=es.min_delta,
                                 check_on_train_epoch_end=not es.monitor.startswith("val/")))
    if progress:
        from lightning.pytorch.callbacks import RichProgressBar
        cbs.append(RichProgressBar(leave=True))
    else:
        cbs.append(EpochLines(echo))
    loggers = [CSVLogger(str(folder), name="", version=""),
               TensorBoardLogger(str(folder), name="tensorboard", version="", default_hp_metric=False)]
    return cbs, loggers, [AtomicCheckpointIO()]


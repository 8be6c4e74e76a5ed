"""The LightningModule of a compiled pipeline: the `train:` section mapped onto Lightning's hooks.

The loop, the strategies (DDP, FSDP), precision, accumulation, clipping and checkpoints are
Lightning's; this module supplies what is the pipeline's: the forward on a batch's inputs,
the objective (composer.train.losses), the metrics (composer.train.metrics), the optimizer
and schedule, frozen blocks kept in eval mode (their batch-norm statistics do not move), and
the RNG states saved in each checkpoint so that a resumed run continues as it would have.
"""

from __future__ import annotations

import math
import random
import time
from typing import Any, Optional

import lightning.pytorch as pl
import numpy as np
import torch
from torch import nn

from ..errors import ComposerError
from .config import SGD, Adam, AdamW, Constant, Cosine, MultiStep, OneCycle, Plateau, RMSprop, StepLR
from .losses import Objective
from .metrics import OutputMetrics
from .plan import Plan


class NonFiniteLoss(ComposerError):
    """A loss became NaN or infinite: the run stops, its last good checkpoint is kept."""


class PipelineModule(pl.LightningModule):
    """Trains one compiled pipeline (`model`, a composer CompiledPipeline) by its plan."""

    def __init__(self, model: nn.Module, plan: Plan, *, train_data=None, val_data=None, seed: int = 0,
                 workers: int = 0):
        super().__init__()
        self.model, self.plan = model, plan
        self.objective = Objective(plan)
        self.train_metrics = OutputMetrics(plan, "train")
        self.val_metrics = OutputMetrics(plan, "val")
        self.train_data, self.val_data, self.seed, self.workers = train_data, val_data, seed, workers
        graph = model.pipeline.graph
        self.kinds = {o: (graph.output_type(ref).kind if graph.output_type(ref) is not None else "")
                      for o, ref in graph.resolved.outputs.items()}
        self.frozen = [name.replace("/", ".") for name, node in graph.nodes.items() if node.frozen
                       and _has_module(model, name.replace("/", "."))]
        self._t0: Optional[float] = None
        self._t_last = 0.0
        self._seen = 0
        self._sums: dict[str, torch.Tensor] = {}
        self._count = 0
        self.live = False        # a progress bar shows every step's loss

    # ---- data (our sampler shards for DDP: Lightning's distributed sampler is off) ----------

    def _loader(self, data, train: bool):
        from .data.loader import make_loader
        world = self.trainer.world_size if self._trainer is not None else 1
        rank = self.trainer.global_rank if self._trainer is not None else 0
        return make_loader(data, self.plan, train=train, batch_size=self.plan.spec.batch_size, seed=self.seed,
                           rank=rank, world=world, workers=self.workers)

    def train_dataloader(self):
        return self._loader(self.train_data, True)

    def val_dataloader(self):
        return self._loader(self.val_data, False) if self.val_data is not None else []

    # ---- steps ------------------------------------------------------------------------------

    def train(self, mode: bool = True):
        """Frozen blocks stay in eval mode: no dropout, and batch norm keeps its statistics."""
        super().train(mode)
        for name in self.frozen:
            self.model.get_submodule(name).eval()
        return self

    def on_train_epoch_start(self) -> None:
        self.train()     # Lightning leaves the modules' modes as they were; this puts the frozen ones in eval

    def forward(self, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return self.model(**inputs)

    def _run(self, batch: dict) -> tuple[dict, dict]:
        """Outputs, and the losses recorded by blocks that define their own (detectors)."""
        recorded: dict = {}
        if self.plan.block_losses and self.model.training:
            from ..block_losses import collecting
            det = next(t for t in self.plan.targets.values() if t.role == "detection")
            with collecting(batch["targets"][det.output]) as bl:
                outputs = self.model(**batch["inputs"])
            recorded = dict(bl.losses)
        else:
            outputs = self.model(**batch["inputs"])
        return outputs, recorded

    def training_step(self, batch: dict, batch_idx: int):
        if self._t0 is None:
            self._t0 = time.perf_counter()
        outputs, recorded = self._run(batch)
        parts = self.objective.parts(outputs, batch["targets"], recorded)
        self._check_finite(parts, batch)
        loss = self.objective.total(parts, self.model)
        self._check_finite({"total (with regularization)": loss}, batch)
        n = int(batch["index"].shape[0])
        world = self.trainer.world_size
        self._seen += n * world
        self._t_last = time.perf_counter()
        # the epoch means are summed here and logged once per epoch (a `self.log` per step and value
        # costs about as much as a small model's step); per-step values every log_every_n_steps
        # steps, and on every step where a progress bar shows them
        sums = self._sums
        sums["loss"] = sums.get("loss", 0.0) + loss.detach() * n
        if len(parts) > 1:
            for name, value in parts.items():
                key = name if name.startswith("loss_") else f"loss_{name}"    # a block's loss_objectness, or loss_OUTPUT
                sums[key] = sums.get(key, 0.0) + value.detach() * n
        self._count += n
        if self.live or batch_idx % self.plan.spec.log_every_n_steps == 0:
            self.log("train/loss_step", loss.detach(), on_step=True, on_epoch=False, prog_bar=True, batch_size=n)
            if self._t_last > self._t0:
                self.log("train/samples_per_s", self.samples_per_s, on_step=True, on_epoch=False, prog_bar=True,
                         batch_size=n)
        if self.train_metrics.collections and not self.plan.block_losses:
            self.train_metrics.update(outputs, batch["targets"], self.kinds)
        return loss

    @property
    def samples_per_s(self) -> float:
        """Training examples per second (all processes) from the first step to the latest one."""
        if self._t0 is None or self._t_last <= self._t0:
            return 0.0
        return self._seen / (self._t_last - self._t0)

    def on_train_epoch_end(self) -> None:
        if self._count:
            world = self.trainer.world_size
            self.log_dict({f"train/{k}": v / self._count for k, v in self._sums.items()}, prog_bar=True,
                          sync_dist=world > 1)
        self._sums, self._count = {}, 0
        if self.train_metrics.collections and not self.plan.block_losses:
            self.log_dict(_floats(self.train_metrics.compute()), sync_dist=False)
            self.train_metrics.reset()

    def validation_step(self, batch: dict, batch_idx: int):
        outputs = self.model(**batch["inputs"])
        n = int(batch["index"].shape[0])
        if self.objective.fns:
            parts = self.objective.parts(outputs, batch["targets"])
            loss = sum(self.objective.weights[o] * v for o, v in parts.items())
            self.log("val/loss", loss, on_step=False, on_epoch=True, prog_bar=True, batch_size=n, sync_dist=True)
        self.val_metrics.update(outputs, batch["targets"], self.kinds)

    def on_validation_epoch_end(self) -> None:
        if self.val_metrics.collections:
            self.log_dict(_floats(self.val_metrics.compute()), prog_bar=True, sync_dist=False)
            self.val_metrics.reset()

    def _check_finite(self, parts: dict, batch: dict) -> None:
        for name, value in parts.items():
            if not bool(torch.isfinite(value.detach()).all()):
                examples = batch["index"].tolist()
                shown = ", ".join(str(i) for i in examples[:8]) + (", …" if len(examples) > 8 else "")
                raise NonFiniteLoss(
                    f"step {self.global_step} (epoch {self.current_epoch}, batch {self.trainer.fit_loop.epoch_loop.batch_idx}): "
                    f"the loss of `{name}` is {float(value.detach().float().sum())} on examples {shown}; the run stops "
                    "and its last good checkpoint is kept (lower the learning rate, clip gradients, or check those "
                    "examples)")

    # ---- optimizer and schedule -------------------------------------------------------------

    def configure_optimizers(self):
        spec = self.plan.spec
        opt = spec.optimizer
        decay, no_decay = [], []
        for p in self.model.parameters():
            if p.requires_grad:
                (decay if p.ndim >= 2 else no_decay).append(p)
        if not decay and not no_decay:
            raise ComposerError("every block is frozen: nothing to train (set `frozen: false` on a block)")
        groups = [{"params": decay, "weight_decay": opt.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
        groups = [g for g in groups if g["params"]]
        optimizer = _optimizer(opt, groups)
        per_epoch, total = self._steps()
        sched = spec.schedule
        if isinstance(sched, Plateau):
            return {"optimizer": optimizer, "lr_scheduler": {
                "scheduler": torch.optim.lr_scheduler.ReduceLROnPlateau(
                    optimizer, mode=sched.mode, factor=sched.factor, patience=sched.patience, min_lr=sched.min_lr),
                "monitor": sched.monitor, "interval": "epoch"}}
        scheduler = _schedule(sched, optimizer, total, per_epoch, opt.lr)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def _steps(self) -> tuple[int, int]:
        """Optimizer steps per epoch and in all, counted from the data (not with Lightning's
        `estimated_stepping_batches`, which sets the loader up before a checkpoint's loader
        state is restored, so a resumed run would start its epoch again)."""
        spec = self.plan.spec
        batches = max(1, len(self.train_data) // spec.batch_size) if self.train_data is not None else 1
        per_epoch = max(1, math.ceil(batches / spec.accumulate))
        epochs = self.trainer.max_epochs if self.trainer.max_epochs and self.trainer.max_epochs > 0 else None
        total = per_epoch * epochs if epochs else None
        if spec.max_steps:
            total = min(total, spec.max_steps) if total else spec.max_steps
        return per_epoch, max(1, total or per_epoch)

    # ---- checkpoints: RNG states beside Lightning's own ----------------------------------

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        name, keys, pos, has_gauss, gauss = np.random.get_state()
        # plain values only: Lightning reads checkpoints with torch.load(weights_only=True)
        checkpoint["composer"] = {"pipeline": self.model.pipeline_name, "seen": self._seen, "count": self._count,
                                  "sums": {k: float(v) for k, v in self._sums.items()}, "rng": {
            "torch": torch.get_rng_state(), "numpy": [name, keys.tolist(), pos, has_gauss, gauss],
            "python": random.getstate()}}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        state = checkpoint.get("composer", {})
        rng = state.get("rng")
        self._seen = int(state.get("seen", 0))
        self._count = int(state.get("count", 0))     # the epoch's sums so far: its mean counts every step
        self._sums = {k: torch.tensor(v) for k, v in state.get("sums", {}).items()}
        if rng:
            torch.set_rng_state(rng["torch"])
            name, keys, pos, has_gauss, gauss = rng["numpy"]
            np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, gauss))
            random.setstate(rng["python"])


def _has_module(model: nn.Module, name: str) -> bool:
    try:
        model.get_submodule(name)
        return True
    except AttributeError:
        return False


def _floats(values: dict) -> dict:
    return {k: v.float() if isinstance(v, torch.Tensor) else float(v) for k, v in values.items()}


def _optimizer(opt, groups):
    if isinstance(opt, SGD):
        return torch.optim.SGD(groups, lr=opt.lr, momentum=opt.momentum, nesterov=opt.nesterov,
                               dampening=opt.dampening)
    if isinstance(opt, AdamW):
        return torch.optim.AdamW(groups, lr=opt.lr, betas=tuple(opt.betas), eps=opt.eps, amsgrad=opt.amsgrad)
    if isinstance(opt, Adam):
        return torch.optim.Adam(groups, lr=opt.lr, betas=tuple(opt.betas), eps=opt.eps, amsgrad=opt.amsgrad)
    if isinstance(opt, RMSprop):
        return torch.optim.RMSprop(groups, lr=opt.lr, alpha=opt.alpha, momentum=opt.momentum, eps=opt.eps,
                                   centered=opt.centered)
    raise AssertionError(type(opt))


def _schedule(sched, optimizer, total: int, per_epoch: int, lr: float):
    """A per-step torch scheduler; `warmup_steps` put a linear warm-up (from lr/100) before it.
    Step sizes and milestones are written in epochs and counted here in optimizer steps."""
    S = torch.optim.lr_scheduler
    if isinstance(sched, OneCycle):
        return S.OneCycleLR(optimizer, max_lr=sched.max_lr or lr, total_steps=total, pct_start=sched.pct_start,
                            div_factor=sched.div_factor, final_div_factor=sched.final_div_factor)
    warm = min(sched.warmup_steps, max(0, total - 1))
    rest = max(1, total - warm)
    if isinstance(sched, Constant):
        main = S.ConstantLR(optimizer, factor=1.0, total_iters=0)
    elif isinstance(sched, StepLR):
        main = S.StepLR(optimizer, step_size=sched.step_size * per_epoch, gamma=sched.gamma)
    elif isinstance(sched, MultiStep):
        main = S.MultiStepLR(optimizer, milestones=[m * per_epoch for m in sched.milestones], gamma=sched.gamma)
    elif isinstance(sched, Cosine):
        main = S.CosineAnnealingLR(optimizer, T_max=rest, eta_min=sched.min_lr)
    else:
        raise AssertionError(type(sched))
    if not warm:
        return main
    ramp = S.LinearLR(optimizer, start_factor=0.01, end_factor=1.0, total_iters=warm)
    return S.SequentialLR(optimizer, [ramp, main], milestones=[warm])


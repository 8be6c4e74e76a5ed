"""`composer eval`: a pipeline's loss and metrics on one data split, run by Lightning's `validate`."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import torch

from ..errors import ComposerError


@dataclass
class EvalResult:
    metrics: dict[str, float]
    source: Path
    examples: int
    weights: Optional[dict] = None


def evaluate(pipe, weights=None, *, data: Optional[Path] = None, split: str = "val",
             accelerator: str = "auto") -> EvalResult:
    """Metrics of `pipe` (its spec's weights, or `weights`: a composer.weights source) on `data`
    (a path in the spec's data format) or on the spec's own `split` (val or train)."""
    import lightning.pytorch as pl

    from .data import open_data, open_splits
    from .module import PipelineModule
    from .plan import plan as make_plan
    from .run import _accelerator

    p = make_plan(pipe)
    seed = p.spec.seed if p.spec.seed is not None else pipe.resolved.seed
    if data is not None:
        examples = open_data(p, Path(data))
    else:
        train_data, val_data = open_splits(p, Path(pipe.file).resolve().parent, seed)
        examples = val_data if split == "val" else train_data
        if examples is None:
            raise ComposerError("--split val: the spec's `train.data` has no validation data (`val` or "
                                "`val_fraction`); give --data PATH or --split train")
    examples.check(p)
    model = pipe.build()
    info = None
    if weights is not None:
        from ..weights import load_weights
        info = load_weights(model, weights).to_dict()
    module = PipelineModule(model, p, val_data=examples, seed=seed, workers=p.spec.data.workers)
    trainer = pl.Trainer(accelerator=_accelerator(accelerator), devices=1, logger=False, enable_progress_bar=False,
                         enable_model_summary=False, use_distributed_sampler=False, precision=p.spec.precision
                         if p.spec.precision != "16-mixed" or torch.cuda.is_available() else "32")
    results = trainer.validate(module, verbose=False)
    metrics = {k.removeprefix("val/"): float(v) for k, v in (results[0] if results else {}).items()}
    return EvalResult(metrics, examples.source, len(examples), info)

"""Training from the spec's `train:` section on Lightning: `composer train` and `composer eval`.

`train(pipe, folder)` runs a pipeline's training and writes its run folder; `evaluate(pipe, …)`
gives the loss and metrics of weights on a data split. Lightning is imported when they run,
not when composer is.
"""

from __future__ import annotations


def train(pipe, folder=None, **kwargs):
    """See composer.train.run.train."""
    from .run import train as _train
    return _train(pipe, folder, **kwargs)


def evaluate(pipe, weights=None, **kwargs):
    """See composer.train.evaluation.evaluate."""
    from .evaluation import evaluate as _evaluate
    from .run import quiet_lightning
    with quiet_lightning():
        return _evaluate(pipe, weights, **kwargs)


__all__ = ["train", "evaluate"]

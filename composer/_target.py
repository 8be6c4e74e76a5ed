"""What `generate` and `sample` share: the model they run (a spec, or a model built from one), built
with its weights on first use, and the torch device a `--device` names."""

from __future__ import annotations

from typing import Any, Callable, Optional

import torch

from .errors import ComposerError


def target_of(target: Any, error: type[ComposerError], what: str) -> tuple[Optional[Any], Any]:
    """(model, pipeline) of a `Pipeline` (model None: built when first needed) or a built
    `CompiledPipeline`; anything else is an `error` saying what `what` takes."""
    from .compile import CompiledPipeline
    from .pipeline import Pipeline
    if isinstance(target, CompiledPipeline):
        if target.pipeline is None:
            raise error("the model has no pipeline (build it with `pipe.build()`)")
        return target, target.pipeline
    if isinstance(target, Pipeline):
        return None, target
    raise error(f"{what} takes a Pipeline or a built model, not a {type(target).__name__}")


def built(pipe, model=None, weights=None, on_weights: Optional[Callable[[dict], None]] = None):
    """`model` (or `pipe` built) with `weights` loaded in place of the spec's own, in eval mode;
    each load's report goes to `on_weights`."""
    if model is None:
        model = pipe.build(spec_weights=weights is None)
        if weights is None and model.weights_report is not None and on_weights:
            on_weights(model.weights_report.to_dict())
    if weights is not None:
        from .weights import load_weights
        report = load_weights(model, weights)
        if on_weights:
            on_weights(report.to_dict())
    return model.eval()


def torch_device(device: str, error: type[ComposerError]) -> torch.device:
    """The torch device of `--device` auto | cpu | cuda (auto: CUDA when one is visible)."""
    if device not in ("auto", "cpu", "cuda"):
        raise error(f"unknown device {device!r}: choose auto, cpu or cuda for the torch backend")
    if device == "cuda" and not torch.cuda.is_available():
        raise error("device 'cuda' is not usable here: no CUDA device is visible")
    cuda = device == "cuda" or (device == "auto" and torch.cuda.is_available())
    return torch.device("cuda" if cuda else "cpu")

"""Metrics by name for each output, as torchmetrics objects chosen by the output's target role.

    class   accuracy (micro), top5, f1, precision, recall (macro), auroc
    binary  accuracy, f1, precision, recall, auroc (one score per example; several: multilabel)
    value   mse, rmse, mae, r2, mape
    detection  map (COCO mAP@[.5:.95]; `map_50`, `map_75` logged beside it)

Logged as `val/NAME` (and `train/NAME`) when one output has metrics, else `val/OUTPUT/NAME`.
"""

from __future__ import annotations

from typing import Optional

import torch
import torchmetrics
from torch import Tensor, nn
from torchmetrics import classification as C
from torchmetrics import regression as R

from .. import errors as E
from ..errors import Diagnostics, did_you_mean
from .config import TrainSection
from .plan import Plan, TargetNeed


def _class(name: str, need: TargetNeed) -> torchmetrics.Metric:
    c, ignore = need.num_classes, need.ignore_index
    kw = {"num_classes": c, "ignore_index": ignore, "validate_args": False}
    return {
        "accuracy": lambda: C.MulticlassAccuracy(average="micro", **kw),
        "top5": lambda: C.MulticlassAccuracy(average="micro", top_k=min(5, c), **kw),
        "f1": lambda: C.MulticlassF1Score(average="macro", **kw),
        "precision": lambda: C.MulticlassPrecision(average="macro", **kw),
        "recall": lambda: C.MulticlassRecall(average="macro", **kw),
        "auroc": lambda: C.MulticlassAUROC(**kw),
    }[name]()


def _binary(name: str, need: TargetNeed) -> torchmetrics.Metric:
    n = 1
    for d in need.shape or ():
        n *= d or 1
    if n > 1:
        kw = {"num_labels": n, "validate_args": False}
        table = {"accuracy": C.MultilabelAccuracy, "f1": C.MultilabelF1Score, "precision": C.MultilabelPrecision,
                 "recall": C.MultilabelRecall, "auroc": C.MultilabelAUROC}
    else:
        kw = {"validate_args": False}
        table = {"accuracy": C.BinaryAccuracy, "f1": C.BinaryF1Score, "precision": C.BinaryPrecision,
                 "recall": C.BinaryRecall, "auroc": C.BinaryAUROC}
    return table[name](**kw)


def _value(name: str, need: TargetNeed) -> torchmetrics.Metric:
    return {"mse": R.MeanSquaredError, "rmse": lambda: R.MeanSquaredError(squared=False),
            "mae": R.MeanAbsoluteError, "r2": R.R2Score, "mape": R.MeanAbsolutePercentageError}[name]()


NAMES = {"class": ("accuracy", "top5", "f1", "precision", "recall", "auroc"),
         "binary": ("accuracy", "f1", "precision", "recall", "auroc"),
         "value": ("mse", "rmse", "mae", "r2", "mape"),
         "detection": ("map",)}
_BUILD = {"class": _class, "binary": _binary, "value": _value}


def check_metrics(output: str, names: list[str], t, need: Optional[TargetNeed], section: TrainSection,
                  diags: Diagnostics) -> None:
    """Each metric of `output` must exist for its target's role; located errors otherwise."""
    if need is None:
        if t is not None:
            diags.add(E.INVALID_VALUE, f"output `{output}` has metrics but no loss or target to compare with",
                      loc=section.key_loc("metrics", output), path=f"train.metrics.{output}",
                      hint=f"add `{output}: FIELD` to `data.targets` (or a loss for it)")
        return
    allowed = NAMES[need.role]
    for i, name in enumerate(names):
        if name not in allowed:
            diags.add(E.INVALID_VALUE, f"unknown metric `{name}` for output `{output}` ({need.role} targets)",
                      loc=section.loc("metrics", output, i), path=f"train.metrics.{output}[{i}]",
                      expected="one of: " + ", ".join(allowed), found=name, hint=did_you_mean(name, allowed))


def logged_names(plan: Plan) -> list[str]:
    """Everything a run logs, as `early_stopping.monitor` and `checkpoint.monitor` may name it."""
    names = ["train/loss", "val/loss"]
    for stage in ("train", "val"):
        for output, metric in _keys(plan):
            names.append(f"{stage}/{metric}" if output is None else f"{stage}/{output}/{metric}")
            if metric == "map":
                names += [f"{stage}/map_50", f"{stage}/map_75"] if output is None else \
                    [f"{stage}/{output}/map_50", f"{stage}/{output}/map_75"]
    return names


def _keys(plan: Plan) -> list[tuple[Optional[str], str]]:
    with_metrics = [o for o, m in plan.metrics.items() if m and o in plan.targets]
    single = len(with_metrics) == 1
    return [(None if single else o, m) for o in with_metrics for m in plan.metrics[o]]


class OutputMetrics(nn.Module):
    """One split's metrics (a torchmetrics collection per output), updated from model outputs."""

    def __init__(self, plan: Plan, stage: str):
        super().__init__()
        self.plan, self.stage = plan, stage
        self.collections = nn.ModuleDict()
        self.prefixes: dict[str, str] = {}
        single = len([o for o, m in plan.metrics.items() if m and o in plan.targets]) == 1
        for output, names in plan.metrics.items():
            need = plan.targets.get(output)
            if need is None or not names:
                continue
            prefix = self.prefixes[output] = f"{stage}/" if single else f"{stage}/{output}/"
            if need.role == "detection":
                from .detection_metrics import mean_average_precision
                self.collections[output] = mean_average_precision()
                continue
            metrics = {n: _BUILD[need.role](n, need) for n in names}
            self.collections[output] = torchmetrics.MetricCollection(metrics, prefix=prefix)

    def update(self, outputs: dict[str, Tensor], targets: dict[str, object], kinds: dict[str, str]) -> None:
        for output, coll in self.collections.items():
            need = self.plan.targets[output]
            if need.role == "detection":
                from .detection_metrics import detection_roles, map_lists
                coll.update(*map_lists(outputs, targets[output], detection_roles(kinds)))
                continue
            out, target = outputs[output].detach().float(), targets[output]
            if need.role == "class":
                coll.update(out.reshape(-1, out.shape[-1]), target.reshape(-1))
            elif need.role == "binary":
                probs = torch.sigmoid(out)
                t = target.reshape(out.shape).long()
                coll.update(probs.reshape(out.shape[0], -1).squeeze(-1), t.reshape(out.shape[0], -1).squeeze(-1))
            else:
                coll.update(out.reshape(-1), target.reshape(-1).float())

    def compute(self) -> dict[str, Tensor]:
        values: dict[str, Tensor] = {}
        for output, coll in self.collections.items():
            result = coll.compute()
            if self.plan.targets[output].role == "detection":
                result = {self.prefixes[output] + k: result[k] for k in ("map", "map_50", "map_75")}
            values.update(result)
        return values

    def reset(self) -> None:
        for coll in self.collections.values():
            coll.reset()

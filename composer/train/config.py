"""The spec's `train:` section: pydantic models and the located check of a written section.

    train:
      data: {format: image_folder, train: data/train, val: data/val, targets: {logits: label}}
      augment: [{random_resized_crop: {size: 64, scale: [0.8, 1.0]}}, {horizontal_flip: {p: 0.5}}]
      loss: {logits: {type: cross_entropy, label_smoothing: 0.1}}
      metrics: {logits: [accuracy, f1]}
      optimizer: {type: adamw, lr: 3.0e-4, weight_decay: 0.05}
      schedule: {type: cosine, warmup_steps: 100}
      batch_size: 64
      epochs: 20

Sections with a `type` (optimizer, schedule, each loss) are checked in two steps: the type
against its closed list (did-you-mean), then the other keys against that type's own model,
so `momentum` on `adam` is an unknown key located where it is written. Names that refer to
the pipeline (outputs of `loss`/`metrics`/`targets`, inputs of `data.inputs`) are checked
against the resolved spec in `check_train`; checks that need inferred types (a loss that does
not fit its output's kind) run when training starts (`composer.train.plan`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .. import errors as E
from .._yaml import Doc
from ..errors import Diagnostics, Location, did_you_mean
from ..errors import found_text as _found
from ..params import NonNegInt, PosFloat, PosInt


FORMATS = ("image_folder", "table", "jsonl", "arrays", "coco", "series", "graph")
PRECISIONS = ("32", "16-mixed", "bf16-mixed")


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class DataDecl(_Model):
    """Where the examples are and how their fields meet the pipeline."""

    format: Literal[FORMATS] = Field(description="image_folder | table (.csv/.parquet) | jsonl | arrays "  # type: ignore[valid-type]
                                                 "(.npz/.safetensors) | coco | series (.csv) | graph "
                                                 "(.json/.jsonl/.npz graphs)")
    train: str = Field(min_length=1, description="the training data, relative to the spec")
    val: Optional[str] = Field(default=None, min_length=1, description="the validation data, relative to the spec")
    val_fraction: Optional[float] = Field(default=None, gt=0.0, lt=1.0,
                                          description="without `val`: this share of `train`, a seeded split")
    inputs: dict[str, str] = Field(default={}, description="data field -> spec input (default: the same name)")
    targets: dict[str, str] = Field(default={}, description="spec output -> the data field its loss compares with")
    columns: dict[str, list[str]] = Field(
        default={}, description="table: spec input -> the columns that fill it, in order (default for a "
                                "vector input: every column that is not a target or another input's)")
    ignore_columns: list[str] = Field(default=[], description="table, series: columns that are neither inputs nor "
                                                              "targets (an id, a timestamp)")
    classes: Optional[list[str]] = Field(default=None, min_length=1,
                                         description="image_folder: the class folders, index = label (default: "
                                                     "the spec's `labels:`, else the folders in sorted order)")
    images: Optional[str] = Field(default=None, min_length=1,
                                  description="coco: the image folder (default: the annotation file's folder)")
    window: Optional[PosInt] = Field(default=None, description="series: time steps per example (default: the "
                                                               "input's T from `dims`)")
    horizon: PosInt = Field(default=1, description="series: steps after the window that are the target")
    stride: PosInt = Field(default=1, description="series: steps between the starts of two windows")
    workers: NonNegInt = Field(default=0, description="loader worker processes (0: read in the training process)")


class LossBase(_Model):
    weight: float = Field(default=1.0, ge=0.0, description="the factor of this output's loss in the total")


class CrossEntropy(LossBase):
    type: Literal["cross_entropy"]
    label_smoothing: float = Field(default=0.0, ge=0.0, lt=1.0)
    ignore_index: int = Field(default=-100, description="target value that adds nothing (padding of a tagger)")
    class_weights: Optional[list[PosFloat]] = None


class BCE(LossBase):
    type: Literal["bce"]
    pos_weight: Optional[PosFloat] = None


class MSE(LossBase):
    type: Literal["mse"]


class L1(LossBase):
    type: Literal["l1"]


class Huber(LossBase):
    type: Literal["huber"]
    delta: PosFloat = 1.0


class BlockLosses(LossBase):
    """The losses the pipeline's blocks define (a detector's RPN and box head), summed."""

    type: Literal["blocks"]
    weights: dict[str, float] = Field(default={}, description="a factor per named block loss (`loss_objectness`)")


LOSSES: dict[str, type[_Model]] = {"cross_entropy": CrossEntropy, "bce": BCE, "mse": MSE, "l1": L1, "huber": Huber,
                                   "blocks": BlockLosses}
Loss = Union[CrossEntropy, BCE, MSE, L1, Huber, BlockLosses]


class _Optim(_Model):
    lr: PosFloat = 1e-3
    weight_decay: float = Field(default=0.0, ge=0.0)


class SGD(_Optim):
    type: Literal["sgd"]
    momentum: float = Field(default=0.0, ge=0.0, lt=1.0)
    nesterov: bool = False
    dampening: float = Field(default=0.0, ge=0.0, lt=1.0)


class Adam(_Optim):
    type: Literal["adam"]
    betas: list[float] = Field(default=[0.9, 0.999], min_length=2, max_length=2)
    eps: PosFloat = 1e-8
    amsgrad: bool = False


class AdamW(Adam):
    type: Literal["adamw"]  # type: ignore[assignment]
    weight_decay: float = Field(default=0.01, ge=0.0)


class RMSprop(_Optim):
    type: Literal["rmsprop"]
    alpha: float = Field(default=0.99, gt=0.0, lt=1.0)
    momentum: float = Field(default=0.0, ge=0.0, lt=1.0)
    eps: PosFloat = 1e-8
    centered: bool = False


OPTIMIZERS: dict[str, type[_Model]] = {"sgd": SGD, "adam": Adam, "adamw": AdamW, "rmsprop": RMSprop}
Optimizer = Union[SGD, Adam, AdamW, RMSprop]


class _Sched(_Model):
    warmup_steps: NonNegInt = Field(default=0, description="linear warm-up from lr/100 over this many steps")


class Constant(_Sched):
    type: Literal["constant"]


class StepLR(_Sched):
    type: Literal["step"]
    step_size: PosInt = Field(description="epochs between decays")
    gamma: float = Field(default=0.1, gt=0.0, le=1.0)


class MultiStep(_Sched):
    type: Literal["multistep"]
    milestones: list[PosInt] = Field(min_length=1, description="epochs at which the lr decays")
    gamma: float = Field(default=0.1, gt=0.0, le=1.0)


class Cosine(_Sched):
    type: Literal["cosine"]
    min_lr: float = Field(default=0.0, ge=0.0)


class OneCycle(_Model):
    type: Literal["onecycle"]
    max_lr: Optional[PosFloat] = Field(default=None, description="the peak (default: the optimizer's lr)")
    pct_start: float = Field(default=0.3, gt=0.0, lt=1.0)
    div_factor: PosFloat = 25.0
    final_div_factor: PosFloat = 1e4


class Plateau(_Model):
    type: Literal["plateau"]
    monitor: str = Field(default="val/loss", min_length=1)
    mode: Literal["min", "max"] = "min"
    factor: float = Field(default=0.1, gt=0.0, lt=1.0)
    patience: NonNegInt = 10
    min_lr: float = Field(default=0.0, ge=0.0)


SCHEDULES: dict[str, type[_Model]] = {"constant": Constant, "step": StepLR, "multistep": MultiStep, "cosine": Cosine,
                                      "onecycle": OneCycle, "plateau": Plateau}
Schedule = Union[Constant, StepLR, MultiStep, Cosine, OneCycle, Plateau]


class Regularize(_Model):
    l1: float = Field(default=0.0, ge=0.0, description="factor of the sum of |w| over trainable weights")
    l2: float = Field(default=0.0, ge=0.0, description="factor of the sum of w² over trainable weights (a "
                                                       "penalty in the loss, beside the optimizer's weight decay)")


class ClipGrad(_Model):
    norm: Optional[PosFloat] = Field(default=None, description="clip the gradients' global L2 norm")
    value: Optional[PosFloat] = Field(default=None, description="clip each gradient element to ±value")


class EarlyStopping(_Model):
    monitor: str = Field(default="val/loss", min_length=1)
    mode: Literal["min", "max"] = "min"
    patience: PosInt = 5
    min_delta: float = Field(default=0.0, ge=0.0)


class Checkpoint(_Model):
    every_n_steps: Optional[PosInt] = Field(default=None, description="also write the resumable checkpoint every "
                                                                      "n optimizer steps (default: each epoch)")
    keep: PosInt = Field(default=1, description="step checkpoints kept (the newest)")
    monitor: Optional[str] = Field(default=None, min_length=1,
                                   description="what makes `best` best (default: early stopping's monitor, else "
                                               "val/loss)")
    mode: Optional[Literal["min", "max"]] = None


class TrainSpec(_Model):
    """The whole `train:` section, after each part was checked."""

    data: DataDecl
    augment: list[dict[str, Any]] = []
    loss: dict[str, Loss] = {}
    metrics: dict[str, list[str]] = {}
    optimizer: Optimizer = AdamW(type="adamw")
    regularize: Regularize = Regularize()
    schedule: Schedule = Constant(type="constant")
    batch_size: PosInt = 32
    epochs: Optional[PosInt] = Field(default=None, description="passes over the training data (default 10 without "
                                                                "max_steps); with max_steps, whichever comes first")
    max_steps: Optional[PosInt] = Field(default=None, description="optimizer steps")
    accumulate: PosInt = 1
    clip_grad: Optional[ClipGrad] = None
    precision: Literal[PRECISIONS] = "32"  # type: ignore[valid-type]
    early_stopping: Optional[EarlyStopping] = None
    checkpoint: Checkpoint = Checkpoint()
    seed: Optional[NonNegInt] = Field(default=None, description="data order, augmentation and dropout (default: "
                                                                "the spec's `seed`)")
    deterministic: bool = Field(default=True, description="deterministic kernels: the same seed gives the same weights")
    log_every_n_steps: PosInt = 10


TOP = list(TrainSpec.model_fields)
TYPED = {"optimizer": OPTIMIZERS, "schedule": SCHEDULES}


@dataclass
class TrainSection:
    """A checked `train:` section and the document it was written in (for located errors later)."""

    spec: TrainSpec
    doc: Doc
    base: tuple = ("train",)
    graph: Optional[Any] = None      # the typed graph, once a plan is made from the section

    def loc(self, *path) -> Location:
        return self.doc.loc(self.base + tuple(path))

    def key_loc(self, *path) -> Location:
        return self.doc.key_loc(self.base + tuple(path))


def _validate(model: type[_Model], raw: Any, doc: Doc, path: tuple, diags: Diagnostics, what: str) -> Optional[Any]:
    from ..spec import pydantic_diagnostics
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        subs = {name: list(f.annotation.model_fields) for name, f in model.model_fields.items()
                if isinstance(f.annotation, type) and issubclass(f.annotation, BaseModel)}
        diags.extend(pydantic_diagnostics(exc, doc, path, list(model.model_fields), what=what, sections=subs))
        return None


def _typed(raw: Any, table: dict[str, type[_Model]], doc: Doc, path: tuple, diags: Diagnostics, what: str,
           default: Optional[str] = None) -> Optional[Any]:
    """A section chosen by its `type`: the type from its closed list, then that type's own keys."""
    p = ".".join(path)
    if not isinstance(raw, dict):
        diags.add(E.INVALID_VALUE, f"`{p}` must be a mapping with a `type`", loc=doc.loc(path), path=p,
                  expected=f"{{type: {' | '.join(table)}, ...}}", found=_found(raw))
        return None
    kind = raw.get("type", default)
    if kind is None:
        diags.add(E.MISSING_PARAM, f"`{p}` needs a `type`", loc=doc.loc(path), path=f"{p}.type",
                  expected=" | ".join(table), hint=f"add `type: {next(iter(table))}`")
        return None
    if kind not in table:
        diags.add(E.INVALID_VALUE, f"unknown {what} `{kind}`", loc=doc.loc(path + ("type",)), path=f"{p}.type",
                  expected="one of: " + ", ".join(table), found=_found(kind), hint=did_you_mean(str(kind), table))
        return None
    before = len(diags.items)
    got = _validate(table[kind], {**raw, "type": kind}, doc, path, diags, what="key")
    for d in diags.items[before:]:
        key = d.path.rsplit(".", 1)[-1]
        if d.code == E.UNKNOWN_PARAM and d.hint is None:
            owners = [name for name, model in table.items() if key in model.model_fields]
            if owners:
                d.hint = f"`{key}` is a key of {', '.join(owners)}, not of {kind}"
    return got


def check_section(raw: Any, doc: Doc, diags: Diagnostics) -> Optional[TrainSection]:
    """Validate the written `train:` section on its own; every problem located, all in one pass."""
    base = ("train",)
    if not isinstance(raw, dict):
        diags.add(E.INVALID_VALUE, "`train` must be a mapping", loc=doc.loc(base), path="train",
                  expected="a mapping with `data`, `optimizer`, `epochs`, …", found=_found(raw))
        return None
    ok = True
    values: dict[str, Any] = {}
    for key, value in raw.items():
        path = base + (key,)
        if key not in TOP:
            diags.add(E.UNKNOWN_PARAM, f"unknown key `{key}` in `train`", loc=doc.key_loc(path), path=f"train.{key}",
                      expected="one of: " + ", ".join(TOP), found=str(key), hint=did_you_mean(str(key), TOP))
            ok = False
        elif key in TYPED:
            got = _typed(value, TYPED[key], doc, path, diags, key)
            ok &= got is not None
            values[key] = got
        elif key == "loss":
            got = _losses(value, doc, path, diags)
            ok &= got is not None
            values[key] = got
        elif key == "augment":
            from .augment import check_augment
            got = check_augment(value, doc, path, diags)
            ok &= got is not None
            values[key] = got if got is not None else []    # reported already
        else:
            values[key] = value
    if "data" not in raw:
        diags.add(E.MISSING_PARAM, "`train` needs a `data` section", loc=doc.key_loc(base), path="train.data",
                  hint="add `data: {format: image_folder, train: data/train}`")
        return None
    clip = raw.get("clip_grad")
    if isinstance(clip, dict) and ("norm" in clip) == ("value" in clip):
        diags.add(E.INVALID_VALUE, "`clip_grad` takes one of `norm` and `value`", loc=doc.loc(base + ("clip_grad",)),
                  path="train.clip_grad", expected="{norm: 1.0} or {value: 0.5}", found=_found(clip))
        ok = False
    rest = {k: v for k, v in values.items() if k not in TYPED and k != "loss"}
    if _validate(_Untyped, rest, doc, base, diags, what="key") is None or not ok:
        return None
    full = dict(raw)
    if "augment" in raw:
        full["augment"] = values["augment"]        # bare step names as {name: {}}
    if isinstance(raw.get("loss"), dict):
        full["loss"] = {o: {"type": b} if isinstance(b, str) else b for o, b in raw["loss"].items()}
    spec = TrainSpec.model_validate(full)
    if spec.data.val is not None and spec.data.val_fraction is not None:
        diags.add(E.INVALID_VALUE, "`data` sets both `val` and `val_fraction`", loc=doc.key_loc(base + ("data", "val_fraction")),
                  path="train.data.val_fraction", hint="give a validation folder or file, or a share of `train`")
        return None
    return TrainSection(spec, doc)


def _losses(raw: Any, doc: Doc, path: tuple, diags: Diagnostics) -> Optional[dict]:
    if not isinstance(raw, dict):
        diags.add(E.INVALID_VALUE, "`train.loss` must map outputs to losses", loc=doc.loc(path), path="train.loss",
                  expected="{OUTPUT: {type: cross_entropy}} (or OUTPUT: cross_entropy)", found=_found(raw))
        return None
    out, ok = {}, True
    for output, body in raw.items():
        body = {"type": body} if isinstance(body, str) else body
        got = _typed(body, LOSSES, doc, path + (output,), diags, "loss")
        ok &= got is not None
        out[output] = got
    return out if ok else None


class _Untyped(TrainSpec):
    """TrainSpec without the typed sections, which `_typed` checked already."""

    optimizer: Any = None
    schedule: Any = None
    loss: Any = None


def check_names(raw: Any, doc: Doc, inputs: dict, outputs: dict, diags: Diagnostics) -> None:
    """Names in the written section that refer to the pipeline: outputs of `loss`, `metrics` and
    `data.targets`, inputs of `data.inputs` (its values) and `data.columns` (its keys). Read from
    the section as written, so they are reported beside its other errors."""
    if not isinstance(raw, dict):
        return
    base = ("train",)
    out_names, in_names = list(outputs), list(inputs)
    data = raw.get("data") if isinstance(raw.get("data"), dict) else {}

    def keys(value: Any) -> list:
        return list(value) if isinstance(value, dict) else []

    def missing(name: str, path: tuple, what: str, names: list[str], at_value: bool = False) -> None:
        p = ".".join(base + path)
        diags.add(E.UNKNOWN_REF, f"the pipeline has no {what} `{name}`",
                  loc=doc.loc(base + path) if at_value else doc.key_loc(base + path), path=p,
                  expected=f"one of its {what}s: " + ", ".join(names), found=str(name),
                  hint=did_you_mean(str(name), names))

    for key in ("loss", "metrics"):
        for output in keys(raw.get(key)):
            if output not in outputs:
                missing(output, (key, output), "output", out_names)
    for output in keys(data.get("targets")):
        if output not in outputs:
            missing(output, ("data", "targets", output), "output", out_names)
    inputs_map = data.get("inputs") if isinstance(data.get("inputs"), dict) else {}
    for field, name in inputs_map.items():
        if isinstance(name, str) and name not in inputs:
            missing(name, ("data", "inputs", field), "input", in_names, at_value=True)
    for name in keys(data.get("columns")):
        if name not in inputs:
            missing(name, ("data", "columns", name), "input", in_names)

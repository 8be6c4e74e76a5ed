"""The `train.augment` list: torchvision.transforms.v2 steps applied to training examples only.

    augment:
      - random_resized_crop: {size: 64, scale: [0.8, 1.0]}
      - horizontal_flip                      # a bare name: the step's defaults
      - color_jitter: {brightness: 0.2, contrast: 0.2}

A step's name comes from a closed table (`STEPS`, name -> v2 class; nothing in a spec imports
or runs code), its params are checked against the class's signature and then by the class's own
constructor, each problem located where it is written. The steps act on the image inputs of
an example (float [C, H, W]) and, when it has a detection target, on its boxes too (so a flip
or crop moves them; boxes left empty by a crop are dropped with their labels). Randomness is
drawn from a generator seeded by (seed, epoch, example index), so an example is augmented the
same way whatever the number of loader workers, and again after a resume.
"""

from __future__ import annotations

import inspect
from typing import Any, Callable, Mapping, Optional

import torch

from .. import errors as E
from .._yaml import Doc
from ..errors import Diagnostics, SpecError, did_you_mean
from ..errors import found_text as _found


def _table() -> dict[str, type]:
    from torchvision.transforms import v2
    return {
        "random_resized_crop": v2.RandomResizedCrop, "random_crop": v2.RandomCrop, "resize": v2.Resize,
        "center_crop": v2.CenterCrop, "pad": v2.Pad, "zoom_out": v2.RandomZoomOut, "iou_crop": v2.RandomIoUCrop,
        "horizontal_flip": v2.RandomHorizontalFlip, "vertical_flip": v2.RandomVerticalFlip,
        "rotation": v2.RandomRotation, "affine": v2.RandomAffine, "perspective": v2.RandomPerspective,
        "elastic": v2.ElasticTransform, "color_jitter": v2.ColorJitter, "photometric_distort":
        v2.RandomPhotometricDistort, "grayscale": v2.Grayscale, "random_grayscale": v2.RandomGrayscale,
        "gaussian_blur": v2.GaussianBlur, "gaussian_noise": v2.GaussianNoise, "random_erasing": v2.RandomErasing,
        "invert": v2.RandomInvert, "posterize": v2.RandomPosterize, "solarize": v2.RandomSolarize,
        "sharpness": v2.RandomAdjustSharpness, "autocontrast": v2.RandomAutocontrast, "equalize": v2.RandomEqualize,
        "rand_augment": v2.RandAugment, "trivial_augment": v2.TrivialAugmentWide, "normalize": v2.Normalize,
    }


STEPS: tuple[str, ...] = tuple(_table())
DETERMINISTIC = ("resize", "center_crop", "pad", "grayscale", "normalize")   # the same for every example
FIXED_SIZE = ("random_resized_crop", "random_crop", "center_crop")           # give every image one size


def _params(cls: type) -> tuple[list[str], list[str]]:
    """The keyword params of a step's class, and those without a default."""
    sig = inspect.signature(cls.__init__)
    names = [n for n, p in sig.parameters.items() if n != "self" and p.kind in
             (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    required = [n for n in names if sig.parameters[n].default is inspect.Parameter.empty]
    return names, required


def _plain(value: Any) -> bool:
    """Params are data: numbers, strings, booleans, null and lists of them."""
    if isinstance(value, (list, tuple)):
        return all(_plain(v) for v in value)
    return value is None or isinstance(value, (bool, int, float, str))


def check_augment(raw: Any, doc: Doc, path: tuple, diags: Diagnostics) -> Optional[list[dict[str, dict]]]:
    """The written `augment` list, each step `{name: {params}}` or a bare `name`, checked and
    normalised to `[{name: {params}}]`; None (with located diagnostics) when a step is wrong."""
    p = ".".join(path)
    if not isinstance(raw, list):
        diags.add(E.INVALID_VALUE, f"`{p}` must be a list of steps", loc=doc.loc(path), path=p,
                  expected="[{random_resized_crop: {size: 64}}, horizontal_flip, ...]", found=_found(raw))
        return None
    table = _table()
    out: list[dict[str, dict]] = []
    ok = True
    for i, step in enumerate(raw):
        at = path + (i,)
        if isinstance(step, str):
            name, params, name_at = step, {}, at
        elif isinstance(step, dict) and len(step) == 1:
            name, params = next(iter(step.items()))
            name_at = at + (name,)
            params = {} if params is None else params
        else:
            diags.add(E.INVALID_VALUE, f"augment step {i} must be a name or `{{name: {{params}}}}`", loc=doc.loc(at),
                      path=f"{p}[{i}]", expected="horizontal_flip, or {rotation: {degrees: 10}}", found=_found(step))
            ok = False
            continue
        if name not in table:
            diags.add(E.INVALID_VALUE, f"unknown augment step `{name}`", loc=doc.key_loc(name_at) if name_at != at
                      else doc.loc(at), path=f"{p}[{i}]", expected="one of: " + ", ".join(table), found=_found(name),
                      hint=did_you_mean(str(name), table))
            ok = False
            continue
        if not isinstance(params, dict):
            diags.add(E.INVALID_VALUE, f"the params of `{name}` must be a mapping", loc=doc.loc(name_at),
                      path=f"{p}[{i}].{name}", expected="{param: value, ...}", found=_found(params))
            ok = False
            continue
        got = _check_step(name, params, table[name], doc, name_at, f"{p}[{i}].{name}", diags)
        ok &= got
        if got and name in DETERMINISTIC:
            diags.add(E.INVALID_VALUE, f"`{name}` in `augment` changes training examples only, not validation "
                      "or `composer run` inputs", loc=doc.loc(name_at) if name_at == at else doc.key_loc(name_at),
                      path=f"{p}[{i}]", severity="warning",
                      hint="for every split, give the input a `preprocess: {resize: ..., crop: ..., mean: ..., "
                           "std: ...}`")
        out.append({name: dict(params)})
    return out if ok else None


def _check_step(name: str, params: dict, cls: type, doc: Doc, at: tuple, p: str, diags: Diagnostics) -> bool:
    names, required = _params(cls)
    ok = True
    for key, value in params.items():
        if key not in names:
            diags.add(E.UNKNOWN_PARAM, f"unknown param `{key}` of augment step `{name}`", loc=doc.key_loc(at + (key,)),
                      path=f"{p}.{key}", expected="one of: " + ", ".join(names), found=str(key),
                      hint=did_you_mean(str(key), names))
            ok = False
        elif not _plain(value):
            diags.add(E.INVALID_VALUE, f"`{key}` of `{name}` must be a number, a string, a boolean or a list",
                      loc=doc.loc(at + (key,)), path=f"{p}.{key}", found=_found(value))
            ok = False
    missing = [r for r in required if r not in params]
    if missing:
        diags.add(E.MISSING_PARAM, f"augment step `{name}` needs `{missing[0]}`", loc=doc.loc(at), path=p,
                  expected=", ".join(missing), hint=f"write `{name}: {{{missing[0]}: ...}}`")
        ok = False
    if not ok:
        return False
    try:
        cls(**params)
    except (ValueError, TypeError) as exc:
        diags.add(E.INVALID_VALUE, f"augment step `{name}`: {str(exc).strip().splitlines()[0]}", loc=doc.loc(at),
                  path=p, found=", ".join(f"{k}: {v!r}" for k, v in params.items()) or "no params")
        return False
    return True


def fixes_size(steps: list[dict[str, dict]]) -> bool:
    """Whether the steps give every training image one size (so differing sizes still batch)."""
    for step in steps:
        name, params = next(iter(step.items()))
        if name in FIXED_SIZE or (name == "resize" and isinstance(params.get("size"), list)
                                  and len(params["size"]) == 2):
            return True
    return False


def check_augment_targets(plan) -> None:
    """A written `augment` needs an image input to act on; SpecError located at `train.augment`."""
    if not plan.spec.augment:
        return
    images = [n for n in plan.inputs.values() if n.kind == "image" and not n.raw]
    if not images:
        kinds = ", ".join(f"`{n.name}` ({n.kind})" for n in plan.inputs.values())
        raise SpecError([E.Diagnostic(E.KIND_MISMATCH, "`augment` transforms image inputs, and this pipeline has none",
                                      loc=plan.section.loc("augment"), path="train.augment",
                                      expected="an input of kind image", found=kinds,
                                      hint="remove `augment`, or augment the data before training")])


_MASK = (1 << 64) - 1


def _mix(x: int) -> int:
    """splitmix64's finaliser: a cheap 64-bit hash whose outputs spread over the whole range."""
    x = (x + 0x9E3779B97F4A7C15) & _MASK
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK
    return x ^ (x >> 31)


def example_seed(seed: int, epoch: int, index: int) -> int:
    """The seed of one example's augmentation: the same for a given (seed, epoch, index), and
    unrelated for neighbouring ones (a hash, computed per example in microseconds)."""
    return _mix(_mix(_mix(seed & _MASK) ^ (epoch & _MASK)) ^ (index & _MASK)) >> 1


class Augment:
    """The steps as one v2 pipeline, called per example with its (seed, epoch, index)."""

    def __init__(self, steps: list[dict[str, dict]]):
        from torchvision.transforms import v2
        table = _table()
        self.transform = v2.Compose([table[name](**params) for s in steps for name, params in s.items()])
        self.sanitize = v2.SanitizeBoundingBoxes()

    def __call__(self, images: Mapping[str, torch.Tensor], detection: Optional[dict[str, torch.Tensor]],
                 seed: int) -> tuple[dict[str, torch.Tensor], Optional[dict[str, torch.Tensor]]]:
        """Augment `images` ({field: [C, H, W]}, all the same way) and the boxes of `detection`
        ({"boxes": [N, 4] x1 y1 x2 y2, "labels": [N]}, and "masks" [N, H, W] if it has them) with them."""
        from torchvision import tv_tensors
        sample: dict[str, Any] = {k: tv_tensors.Image(v) for k, v in images.items()}
        if detection is not None:
            first = next(iter(images.values()))
            sample["boxes"] = tv_tensors.BoundingBoxes(detection["boxes"], format="XYXY",
                                                       canvas_size=tuple(first.shape[-2:]))
            sample["labels"] = detection["labels"]
            if "masks" in detection:
                sample["masks"] = tv_tensors.Mask(detection["masks"])
        # the global CPU generator, seeded for this example and restored after (dropout in the
        # training process reads it); torch.manual_seed would seed every device's generator too
        state = torch.get_rng_state()
        try:
            torch.default_generator.manual_seed(seed)
            out = self.transform(sample)
            if detection is not None:
                out = self.sanitize(out)
        finally:
            torch.set_rng_state(state)
        imgs = {k: out[k].as_subclass(torch.Tensor) for k in images}
        if detection is None:
            return imgs, None
        det = {**detection, "boxes": out["boxes"].as_subclass(torch.Tensor), "labels": out["labels"]}
        if "masks" in detection:
            det["masks"] = out["masks"].as_subclass(torch.Tensor)
        return imgs, det


def build_augment(steps: list[dict[str, dict]]) -> Optional[Callable]:
    """The callable of checked steps, or None for none."""
    return Augment(steps) if steps else None

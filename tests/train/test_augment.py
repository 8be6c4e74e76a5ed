"""`train.augment`: located validation of the steps, boxes moved with their images, and
randomness that depends only on (seed, epoch, example), not on workers or resumes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import composer
from composer.errors import SpecError
from composer.train.augment import Augment, check_augment_targets, example_seed, fixes_size
from composer.train.data import make_loader, open_splits
from composer.train.plan import plan as make_plan

CNN = """pipeline: cnn
seed: 0
dims:
  B: {sizes: [1, 3], example: 1}
  H: {sizes: [8, 16], example: 8}
  W: {sizes: [8, 16], example: 8}
inputs:
  image: {kind: image, shape: [B, 3, H, W], dtype: float32}
blocks:
  conv: {block: conv2d, in: image, out_channels: 4, kernel: 3, padding: 1}
  gap: {block: global_avg_pool, in: conv}
  head: {block: dense, in: gap, out_features: 2}
outputs: {logits: head}
train:
  data: {format: image_folder, train: train}
  loss: {logits: cross_entropy}
"""

MLP = """pipeline: mlp
seed: 0
dims: {B: {sizes: [1, 4], example: 2}}
inputs:
  features: {kind: vector, shape: [B, 4]}
blocks:
  head: {block: dense, in: features, out_features: 3}
outputs: {logits: head}
train:
  data: {format: table, train: d.csv}
  loss: {logits: cross_entropy}
"""


def spec_errors(tmp_path: Path, augment: str, base: str = CNN) -> list:
    with pytest.raises(SpecError) as info:
        composer.loads(base + "  augment:\n" + augment, file=str(tmp_path / "spec.yaml"))
    return info.value.errors


def load(tmp_path: Path, augment: str = "", base: str = CNN):
    text = base + ("  augment:\n" + augment if augment else "")
    pipe = composer.loads(text, file=str(tmp_path / "spec.yaml"))
    return pipe, make_plan(pipe)


def test_steps_are_checked_where_they_are_written(tmp_path):
    errors = spec_errors(tmp_path, "    - horizontal_flop\n"                           # line 18
                                   "    - rotation: {degree: 10}\n"                    # line 19
                                   "    - random_resized_crop: {scale: [0.5, 1.0]}\n"  # line 20
                                   "    - color_jitter: {brightness: -1}\n"            # line 21
                                   "    - gaussian_blur: {kernel_size: [3, 3], sigma: {a: 1}}\n"
                                   "    - [1, 2]\n")
    by_line = {e.loc.line: e for e in reversed(errors)}        # the first of a line
    assert sorted(by_line) == [18, 19, 20, 21, 22, 23], [e.format() for e in errors]
    assert "unknown augment step `horizontal_flop`" in by_line[18].message
    assert by_line[18].hint == "did you mean `horizontal_flip`?"
    assert by_line[19].code == "E103" and by_line[19].path == "train.augment[1].rotation.degree"
    assert by_line[19].hint == "did you mean `degrees`?" and by_line[19].loc.col == 18
    assert by_line[20].code == "E104" and "needs `size`" in by_line[20].message
    assert by_line[21].code == "E105" and "non negative" in by_line[21].message
    assert "must be a number" in by_line[22].message
    assert "must be a name or" in by_line[23].message
    assert [e.code for e in errors if e.loc.line == 19] == ["E103", "E104"]     # and `degrees` is missing
    assert len(errors) == 7                       # and no second report of the same list


def test_bare_names_defaults_and_warnings(tmp_path):
    pipe, p = load(tmp_path, "    - horizontal_flip\n    - {rotation: {degrees: 5}}\n    - normalize: {mean: [0.5], "
                             "std: [0.5]}\n")
    assert p.spec.augment == [{"horizontal_flip": {}}, {"rotation": {"degrees": 5}}, {"normalize": {"mean": [0.5],
                                                                                                    "std": [0.5]}}]
    warnings = [w for w in pipe.warnings if "augment" in w.path]
    assert len(warnings) == 1 and "training examples only" in warnings[0].message and warnings[0].loc.line == 20
    assert not fixes_size(p.spec.augment)
    assert fixes_size([{"random_resized_crop": {"size": 8}}]) and fixes_size([{"resize": {"size": [8, 8]}}])
    errors = spec_errors(tmp_path, "    horizontal_flip\n")
    assert "must be a list of steps" in errors[0].message


def test_augment_needs_an_image_input(tmp_path):
    pipe, p = load(tmp_path, "    - horizontal_flip\n", base=MLP)
    with pytest.raises(SpecError) as info:
        check_augment_targets(p)
    d = info.value.errors[0]
    assert d.path == "train.augment" and d.loc.line == 13 and "`features` (vector)" in d.found
    _, p = load(tmp_path, "    - horizontal_flip\n")
    check_augment_targets(p)


def test_flip_moves_boxes_and_crops_drop_them():
    image = torch.zeros(3, 10, 20)
    image[:, :, :5] = 1.0                                         # the left quarter is bright
    det = {"boxes": torch.tensor([[0.0, 0.0, 5.0, 10.0]]), "labels": torch.tensor([3])}
    imgs, out = Augment([{"horizontal_flip": {"p": 1.0}}])({"image": image}, det, seed=0)
    assert imgs["image"][:, :, 15:].eq(1).all() and imgs["image"][:, :, :15].eq(0).all()
    assert out["boxes"].tolist() == [[15.0, 0.0, 20.0, 10.0]] and out["labels"].tolist() == [3]
    imgs, out = Augment([{"center_crop": {"size": [10, 6]}}])({"image": image}, det, seed=0)   # keeps x 7..13
    assert imgs["image"].shape == (3, 10, 6) and out["boxes"].shape == (0, 4) and out["labels"].numel() == 0


def test_randomness_follows_seed_epoch_and_example():
    steps = [{"random_resized_crop": {"size": 6, "scale": [0.2, 1.0]}}, {"color_jitter": {"brightness": 0.5}}]
    aug = Augment(steps)
    image = torch.rand(3, 12, 12, generator=torch.Generator().manual_seed(0))
    run = lambda s: aug({"image": image}, None, s)[0]["image"]             # noqa: E731
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    a = run(example_seed(0, 1, 5))
    assert torch.rand(1).eq(before).all()                                     # the global RNG is untouched
    assert torch.equal(a, run(example_seed(0, 1, 5)))
    assert not torch.equal(a, run(example_seed(0, 1, 6))) and not torch.equal(a, run(example_seed(0, 2, 5)))
    assert example_seed(0, 1, 5) != example_seed(1, 1, 5)


def _images(root: Path, n: int) -> None:
    g = np.random.default_rng(0)
    for c in ("a", "b"):
        (root / c).mkdir(parents=True)
        for i in range(n):
            Image.fromarray(g.integers(0, 256, (12, 12, 3), dtype=np.uint8)).save(root / c / f"{i}.png")


def test_training_batches_are_augmented_the_same_with_workers_and_after_resume(tmp_path):
    _images(tmp_path / "train", 4)
    _, p = load(tmp_path, "    - random_resized_crop: {size: 8, scale: [0.3, 1.0]}\n    - horizontal_flip\n")
    train, _ = open_splits(p, tmp_path, seed=0)
    batches = [b["inputs"]["image"] for b in make_loader(train, p, train=True, batch_size=2, seed=4)]
    assert all(b.shape == (2, 3, 8, 8) for b in batches)
    workers = [b["inputs"]["image"] for b in make_loader(train, p, train=True, batch_size=2, seed=4, workers=2)]
    assert all(torch.equal(a, b) for a, b in zip(batches, workers))
    loader = make_loader(train, p, train=True, batch_size=2, seed=4)
    state = {**loader.state_dict(), "batches": 2}
    resumed = make_loader(train, p, train=True, batch_size=2, seed=4)
    resumed.load_state_dict(state)
    rest = [b["inputs"]["image"] for b in resumed]
    assert all(torch.equal(a, b) for a, b in zip(batches[2:], rest)) and len(rest) == 2
    # validation batches are not augmented (the images keep their 12x12 and can't be cropped to 8x8 at random)
    val = next(iter(make_loader(train, p, train=False, batch_size=2, seed=4)))
    assert val["inputs"]["image"].shape == (2, 3, 12, 12)

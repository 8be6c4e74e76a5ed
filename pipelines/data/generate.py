"""Writes the small training data shipped beside the pipelines (deterministic; rerun to regenerate):

    python pipelines/data/generate.py

- tabular/{train,val}.csv     32 numeric features, a class (0-2) that is a fixed linear map's argmax
- shapes/{train,val}/CLASS/   64x64 PNGs of filled circles, squares and triangles
- load/{train,val}.csv        hourly weather readings and the load they drive (daily and weekly cycles)
- boxes/{train,val}/           COCO detection data: 64x64 PNGs of squares and circles, annotations.json
- reviews/{train,val}.jsonl   short reviews, label 1 when a positive word is in them

The test suite uses the same functions for the data it generates.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

HERE = Path(__file__).resolve().parent


def write_table(path: Path, n: int, features: int = 8, classes: int = 3, seed: int = 0) -> Path:
    """A CSV table whose class is the argmax of a fixed linear map of the features (learnable)."""
    g = np.random.default_rng(seed)
    x = g.normal(size=(n, features)).astype(np.float32)
    w = np.random.default_rng(1234).normal(size=(features, classes))
    y = (x @ w).argmax(1)
    cols = [f"f{i}" for i in range(features)]
    lines = [",".join(cols + ["label"])]
    lines += [",".join(f"{v:.3f}" for v in row) + f",{c}" for row, c in zip(x, y)]
    path.write_text("\n".join(lines) + "\n")
    return path


SHAPES = ("circle", "square", "triangle")


def write_shapes(folder: Path, per_class: int, size: int = 32, seed: int = 0) -> Path:
    """An image folder of filled circles, squares and triangles at random places, sizes and colours."""
    g = np.random.default_rng(seed)
    for label in SHAPES:
        (folder / label).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            bg = tuple(int(v) for v in g.integers(0, 80, 3))
            fg = tuple(int(v) for v in g.integers(150, 256, 3))
            im = Image.new("RGB", (size, size), bg)
            d = ImageDraw.Draw(im)
            r = int(g.integers(size // 5, size // 3))
            cx, cy = (int(v) for v in g.integers(r, size - r, 2))
            if label == "circle":
                d.ellipse([cx - r, cy - r, cx + r, cy + r], fill=fg)
            elif label == "square":
                d.rectangle([cx - r, cy - r, cx + r, cy + r], fill=fg)
            else:
                d.polygon([(cx, cy - r), (cx - r, cy + r), (cx + r, cy + r)], fill=fg)
            im.save(folder / label / f"{i:03d}.png")
    return folder


def write_sines(path: Path, steps: int, seed: int = 0) -> Path:
    """A CSV time series: two sine waves of different periods and their sum as `load`."""
    g = np.random.default_rng(seed)
    t = np.arange(steps)
    a = np.sin(2 * math.pi * t / 24 + g.uniform(0, 6))
    b = 0.5 * np.sin(2 * math.pi * t / 9 + g.uniform(0, 6))
    lines = ["time,a,b,load"] + [f"{i},{x:.5f},{y:.5f},{x + y:.5f}" for i, x, y in zip(t, a, b)]
    path.write_text("\n".join(lines) + "\n")
    return path


POSITIVE = ("good", "great", "fine", "excellent", "happy", "love", "best", "nice")
NEGATIVE = ("bad", "awful", "poor", "terrible", "sad", "hate", "worst", "boring")
FILLER = ("the", "movie", "was", "a", "story", "and", "it", "of", "film", "very", "plot", "acting")


def write_corpus(path: Path, n: int, seed: int = 0) -> Path:
    """JSONL reviews: filler words around one or two sentiment words; label 1 for positive."""
    g = np.random.default_rng(seed)
    with path.open("w") as f:
        for _ in range(n):
            label = int(g.integers(0, 2))
            words = list(g.choice(FILLER, size=int(g.integers(4, 9))))
            for _ in range(int(g.integers(1, 3))):
                words.insert(int(g.integers(0, len(words) + 1)), str(g.choice(POSITIVE if label else NEGATIVE)))
            f.write(json.dumps({"text": " ".join(words), "label": label}) + "\n")
    return path


def write_coco(folder: Path, images: int, size: int = 64, seed: int = 0) -> Path:
    """A COCO detection set: `folder/images/*.png` with one or two filled squares (category 1)
    or circles (category 2) each, and `folder/annotations.json` (bbox as x, y, w, h)."""
    g = np.random.default_rng(seed)
    (folder / "images").mkdir(parents=True, exist_ok=True)
    doc = {"images": [], "annotations": [],
           "categories": [{"id": 1, "name": "square"}, {"id": 2, "name": "circle"}]}
    for i in range(images):
        im = Image.new("RGB", (size, size), tuple(int(v) for v in g.integers(0, 60, 3)))
        d = ImageDraw.Draw(im)
        placed: list[tuple[int, int, int, int]] = []
        for _ in range(int(g.integers(1, 3))):
            r = int(g.integers(size // 8, size // 4))
            x, y = (int(v) for v in g.integers(r, size - r, 2))
            box = (x - r, y - r, x + r, y + r)
            if any(box[0] < b[2] and b[0] < box[2] and box[1] < b[3] and b[1] < box[3] for b in placed):
                continue
            placed.append(box)
            cat = int(g.integers(1, 3))
            fill = tuple(int(v) for v in g.integers(150, 256, 3))
            (d.rectangle if cat == 1 else d.ellipse)(box, fill=fill)
            doc["annotations"].append({"id": len(doc["annotations"]) + 1, "image_id": i + 1, "category_id": cat,
                                       "bbox": [box[0], box[1], 2 * r, 2 * r], "area": 4 * r * r, "iscrowd": 0})
        name = f"{i:04d}.png"
        im.save(folder / "images" / name)
        doc["images"].append({"id": i + 1, "file_name": f"images/{name}", "width": size, "height": size})
    (folder / "annotations.json").write_text(json.dumps(doc))
    return folder


def write_load(path: Path, steps: int, seed: int = 0) -> Path:
    """Hourly temperature, humidity, pressure (standardised) and the load they drive: a daily and
    a weekly cycle, cooling with the temperature, and a little noise."""
    g = np.random.default_rng(seed)
    t = np.arange(steps)
    temp = np.sin(2 * math.pi * (t - 6) / 24) + 0.3 * np.sin(2 * math.pi * t / (24 * 9)) + 0.1 * g.normal(size=steps)
    hum = -0.6 * temp + 0.3 * g.normal(size=steps)
    pres = np.cumsum(0.05 * g.normal(size=steps))
    pres = (pres - pres.mean()) / (pres.std() + 1e-9)
    load = 0.8 * np.sin(2 * math.pi * (t - 9) / 24) + 0.3 * np.sin(2 * math.pi * t / 168) + 0.4 * temp \
        + 0.05 * g.normal(size=steps)
    lines = ["time,temperature,humidity,pressure,load"]
    lines += [f"{i},{a:.4f},{b:.4f},{c:.4f},{d:.4f}" for i, a, b, c, d in zip(t, temp, hum, pres, load)]
    path.write_text("\n".join(lines) + "\n")
    return path


def main() -> None:
    (HERE / "tabular").mkdir(exist_ok=True)
    write_table(HERE / "tabular" / "train.csv", 800, features=32, seed=0)
    write_table(HERE / "tabular" / "val.csv", 200, features=32, seed=1)
    write_shapes(HERE / "shapes" / "train", 120, size=64, seed=0)
    write_shapes(HERE / "shapes" / "val", 30, size=64, seed=1)
    (HERE / "load").mkdir(exist_ok=True)
    write_load(HERE / "load" / "train.csv", 2000, seed=0)
    write_load(HERE / "load" / "val.csv", 500, seed=1)
    write_coco(HERE / "boxes" / "train", 96, seed=0)
    write_coco(HERE / "boxes" / "val", 24, seed=1)
    (HERE / "reviews").mkdir(exist_ok=True)
    write_corpus(HERE / "reviews" / "train.jsonl", 800, seed=0)
    write_corpus(HERE / "reviews" / "val.jsonl", 200, seed=1)


if __name__ == "__main__":
    main()

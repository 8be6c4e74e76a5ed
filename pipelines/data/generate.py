"""Writes the small training data shipped beside the pipelines (deterministic; rerun to regenerate):

    python pipelines/data/generate.py

- tabular/{train,val}.csv     32 numeric features, a class (0-2) that is a fixed linear map's argmax
- shapes/{train,val}/CLASS/   64x64 PNGs of filled circles, squares and triangles
- load/{train,val}.csv        hourly weather readings and the load they drive (daily and weekly cycles)
- boxes/{train,val}/           COCO detection data: 64x64 PNGs of squares and circles, annotations.json
- reviews/{train,val}.jsonl   short reviews, label 1 when a positive word is in them
- graphs/communities.json     one graph of 4 communities (a stochastic block model), noisy node hints, masks
- graphs/molecules.jsonl      300 small molecular-like graphs (4 atom types), class: tree (0) or ring (1)
- graphs/molecules.npz        the same graphs as concatenated arrays with `batch` and a `y` per graph
- graphs/karate.json          Zachary's karate club (networkx), one-hot node ids, the club as the class

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


def _graph_json(graph: dict) -> str:
    """A graph as compact JSON: lists of numbers, 3 decimals for floats."""
    def num(v):
        return round(float(v), 3) if isinstance(v, (float, np.floating)) else int(v)

    def lists(v):
        return [lists(u) for u in v] if isinstance(v, (list, np.ndarray)) and np.ndim(v) else num(v)
    return json.dumps({k: lists(v) if isinstance(v, np.ndarray) else v for k, v in graph.items()},
                      separators=(",", ":"))


def write_communities(path: Path, communities: int = 4, size: int = 60, features: int = 8, p_in: float = 0.1,
                      p_out: float = 0.004, signal: float = 0.75, train_share: float = 0.2, seed: int = 0) -> Path:
    """One graph for node classification: a stochastic block model of `communities` groups of
    `size` nodes (an edge inside a group with probability p_in, between groups p_out) whose
    node features are weak hints of the group (a mean of `signal` on the group's own feature,
    unit Gaussian noise on every feature), so a node's neighbours say more than its features:
    a 2-layer GCN beats an MLP on the features alone by far. `train_mask` marks `train_share`
    of the nodes (the same share of each group), `val_mask` the rest. Undirected edges, stored once."""
    g = np.random.default_rng(seed)
    y = np.repeat(np.arange(communities), size)
    g.shuffle(y)
    n = len(y)
    src, dst = np.triu_indices(n, 1)
    p = np.where(y[src] == y[dst], p_in, p_out)
    keep = g.random(len(p)) < p
    means = np.zeros((communities, features))
    means[np.arange(communities), np.arange(communities) % features] = signal
    x = means[y] + g.normal(size=(n, features))
    train = np.zeros(n, dtype=bool)
    for c in range(communities):
        members = np.flatnonzero(y == c)
        train[g.choice(members, size=max(1, round(train_share * len(members))), replace=False)] = True
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(_graph_json({"x": x, "edges": np.stack([src[keep], dst[keep]], 1), "undirected": True,
                                 "y": y, "train_mask": train.astype(int), "val_mask": (~train).astype(int)}) + "\n")
    return path


ATOM_TYPES = 4
ATOM_FREQ = (0.6, 0.2, 0.15, 0.05)


def molecule(g: np.random.Generator, ring: bool, low: int = 6, high: int = 20) -> dict:
    """A molecular-like graph of low..high nodes, no node with more than 4 bonds: a random tree,
    or (ring) a cycle of 3 to 8 atoms with trees grown on it. Atom types (one-hot) are drawn
    independently of the class, so only the structure tells a ring from a tree."""
    n = int(g.integers(low, high + 1))
    edges: list[tuple[int, int]] = []
    degree = np.zeros(n, dtype=int)
    start = 1
    if ring:
        k = int(g.integers(3, min(8, n) + 1))
        edges = [(i, (i + 1) % k) for i in range(k)]
        degree[:k] = 2
        start = k
    for v in range(start, n):
        free = np.flatnonzero(degree[:v] < 4)
        u = int(g.choice(free))
        edges.append((u, v))
        degree[u] += 1
        degree[v] += 1
    perm = g.permutation(n)                                    # the ring is not always nodes 0..k-1
    edges = [(int(perm[a]), int(perm[b])) for a, b in edges]
    types = g.choice(ATOM_TYPES, size=n, p=ATOM_FREQ)
    return {"x": np.eye(ATOM_TYPES, dtype=int)[types], "edges": np.asarray(edges), "undirected": True,
            "y": int(ring)}


def write_molecules(jsonl: Path, npz: Path, n: int = 300, seed: int = 0) -> tuple[Path, Path]:
    """Graph classification: `n` molecules, half of them with a ring (class 1), half trees (0),
    as JSON lines (edges once, `undirected`) and as one `.npz` of concatenated arrays (x,
    edge_index in both directions, as the JSON reader expands them, `batch`, a `y` per graph)."""
    g = np.random.default_rng(seed)
    graphs = [molecule(g, ring=bool(i % 2)) for i in range(n)]
    order = g.permutation(n)
    graphs = [graphs[i] for i in order]
    jsonl.parent.mkdir(parents=True, exist_ok=True)
    jsonl.write_text("".join(_graph_json(gr) + "\n" for gr in graphs))
    xs, eis, batch, offset = [], [], [], 0
    for i, gr in enumerate(graphs):
        e = gr["edges"].T
        eis.append(np.concatenate([e, e[::-1]], axis=1) + offset)
        xs.append(gr["x"])
        batch.append(np.full(len(gr["x"]), i))
        offset += len(gr["x"])
    np.savez_compressed(npz, x=np.concatenate(xs).astype(np.uint8), edge_index=np.concatenate(eis, 1).astype(np.int32),
                        batch=np.concatenate(batch).astype(np.int32), y=np.asarray([gr["y"] for gr in graphs]))
    return jsonl, npz


def write_karate(path: Path, per_club: int = 4) -> Path:
    """Zachary's karate club (networkx): 34 members, 78 friendships stored in both directions
    (156 edges), x the identity (one-hot member ids), y the club each joined (0 Mr. Hi, 1 Officer);
    `train_mask` marks the `per_club` best-connected members of each club, `val_mask` the rest."""
    import networkx as nx
    graph = nx.karate_club_graph()
    n = graph.number_of_nodes()
    y = np.asarray([0 if graph.nodes[v]["club"] == "Mr. Hi" else 1 for v in range(n)])
    degree = dict(graph.degree())
    train = np.zeros(n, dtype=bool)
    for club in (0, 1):
        members = sorted((v for v in range(n) if y[v] == club), key=lambda v: (-degree[v], v))
        train[members[:per_club]] = True
    edges = np.asarray(sorted(graph.edges()))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(_graph_json({"x": np.eye(n, dtype=int), "edges": np.concatenate([edges, edges[:, ::-1]]), "y": y,
                                 "train_mask": train.astype(int), "val_mask": (~train).astype(int)}) + "\n")
    return path


def write_bpe_vocab(folder: Path, corpus: Path, vocab_size: int = 600) -> Path:
    """A byte-level BPE vocabulary (GPT-2's layout: vocab.json + merges.txt, with `<|endoftext|>`)
    trained on the small text corpus; written once and kept, since the trainer's ids can vary
    between processes."""
    from tokenizers import ByteLevelBPETokenizer
    folder.mkdir(parents=True, exist_ok=True)
    tok = ByteLevelBPETokenizer()
    tok.train([str(corpus)], vocab_size=vocab_size, min_frequency=1, show_progress=False,
              special_tokens=["<|endoftext|>"])
    tok.save_model(str(folder))
    return folder


def write_unigram_tokenizer(path: Path, corpus: Path, vocab_size: int = 400) -> Path:
    """A SentencePiece-style Unigram tokenizer.json in T5's layout (Metaspace pre-tokeniser, `<pad>` 0,
    `</s>` 1, `<unk>` 2, `</s>` after each text) trained on the small text corpus; written once and kept."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    path.parent.mkdir(parents=True, exist_ok=True)
    tok = Tokenizer(models.Unigram())
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Metaspace()
    trainer = trainers.UnigramTrainer(vocab_size=vocab_size, special_tokens=["<pad>", "</s>", "<unk>"],
                                      unk_token="<unk>", show_progress=False)
    tok.train([str(corpus)], trainer)
    tok.post_processor = processors.TemplateProcessing(single="$A </s>", pair="$A </s> $B </s>",
                                                       special_tokens=[("</s>", 1)])
    tok.save(str(path))
    return path


def write_xlnet_tokenizer(path: Path, corpus: Path, vocab_size: int = 400) -> Path:
    """A Unigram tokenizer.json in XLNet's layout (`<unk>` 0, `<s>`, `</s>`, `<cls>`, `<sep>` 4, `<pad>` 5,
    `<mask>`; `A <sep> <cls>` with segment ids 0, 0, 2) trained on the small text corpus; written once."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    path.parent.mkdir(parents=True, exist_ok=True)
    specials = ["<unk>", "<s>", "</s>", "<cls>", "<sep>", "<pad>", "<mask>"]
    tok = Tokenizer(models.Unigram())
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Metaspace()
    tok.train([str(corpus)], trainers.UnigramTrainer(vocab_size=vocab_size, special_tokens=specials,
                                                     unk_token="<unk>", show_progress=False))
    tok.post_processor = processors.TemplateProcessing(
        single="$A:0 <sep>:0 <cls>:2", pair="$A:0 <sep>:0 $B:1 <sep>:1 <cls>:2",
        special_tokens=[("<sep>", 4), ("<cls>", 3)])
    tok.save(str(path))
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
    write_communities(HERE / "graphs" / "communities.json", seed=0)
    write_molecules(HERE / "graphs" / "molecules.jsonl", HERE / "graphs" / "molecules.npz", 300, seed=0)
    write_karate(HERE / "graphs" / "karate.json")
    write_bpe_vocab(HERE / "gpt2", HERE / "corpus.txt")
    write_unigram_tokenizer(HERE / "t5" / "tokenizer.json", HERE / "corpus.txt")
    write_xlnet_tokenizer(HERE / "xlnet" / "tokenizer.json", HERE / "corpus.txt")


if __name__ == "__main__":
    main()

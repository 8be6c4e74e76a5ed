"""Pipeline inputs: what each input expects, seeded example tensors, and reading real files.

`composer run` and `composer export` both need concrete tensors for a pipeline's inputs:
export verification draws seeded random ones at chosen dim sizes; `composer run` reads
image files (decoded, resized, cropped and normalised as the input's `preprocess` says),
CSV files for `series` inputs (a header row, one row of features per time step),
`.npy`/`.npz` arrays or `.safetensors` tensors, then checks every one against the declared
type (rank, fixed sizes, `multiple_of`, the same size for a symbol shared by several inputs,
dtype) so a wrong file is a clear error naming the input, never a shape error deep in a block.
"""

from __future__ import annotations

import json
import math
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence, Union

import numpy as np
import torch

from .dims import Dim, evaluate, format_dim
from .errors import ComposerError
from .graph_data import GRAPH_FIELDS, GraphError, check_graph, random_graph, read_graph_file

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm"}
BATCH_NAMES = ("B", "N", "batch")
DEFAULT_SIZES = (64, 96)           # verification sizes of a dim with no `sizes:`
DEFAULT_BATCH_SIZES = (1, 3)

TORCH_DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16, "float64": torch.float64,
    "int64": torch.int64, "int32": torch.int32, "uint8": torch.uint8, "bool": torch.bool,
}
NUMPY_DTYPES: dict[str, Any] = {
    "float32": np.float32, "float16": np.float16, "float64": np.float64, "int64": np.int64,
    "int32": np.int32, "uint8": np.uint8, "bool": np.bool_,
}


class InputError(ComposerError):
    """An input file or tensor does not fit the input it was given for (exit code 1)."""


DimEntry = Union[int, str, Dim, None]   # fixed size, ONNX dim name, symbolic dim, unknown


@dataclass
class InputSpec:
    """What one pipeline input takes: its shape (fixed or symbolic dims), dtype and preprocessing."""

    name: str
    shape: Optional[tuple[DimEntry, ...]]
    dtype: str
    kind: str = "tensor"
    preprocess: Any = None                       # composer.spec.Preprocess or None
    multiples: dict[str, int] = field(default_factory=dict)
    int_high: int = 2                            # exclusive upper bound of random integer ids
    columns: Optional[tuple[str, ...]] = None    # series: the CSV columns that are the F features, in order
    ignore_columns: tuple[str, ...] = ()         # series: CSV columns that are not features
    group: Optional[str] = None                  # a graph input's field: the graph input (`graph` of `graph_x`)
    field: Optional[str] = None                  # ... and the field (`x`)

    def shape_text(self) -> str:
        if self.shape is None:
            return "any shape"
        return "[" + ", ".join("?" if d is None else (format_dim(d) if isinstance(d, Dim) else str(d))
                               for d in self.shape) + "]"


# ---- what the inputs are -------------------------------------------------------------------


def _int_high(graph, name: str) -> int:
    """Random ids must stay below what every consumer of `name` takes: the block's own answer
    for the port (`Block.id_high`), else the smallest positive vocabulary size it declares."""
    highs = []
    todo = [(dst, data.get("dst_port")) for _, dst, data in graph.dag.out_edges(name, data=True)] \
        if name in graph.dag else []
    seen: set[tuple] = set()
    while todo:
        succ, port = todo.pop()
        node = graph.nodes.get(succ)
        if (succ, port) in seen or node is None or node.block is None:
            continue
        seen.add((succ, port))
        if type(node.block).passthrough or node.type == "_port":   # sub-pipeline inputs: look through
            todo.extend((dst, data.get("dst_port")) for _, dst, data in graph.dag.out_edges(succ, data=True))
            continue
        own = node.block.id_high(port) if port else None
        if own is not None:
            highs.append(own)
            continue
        for key, value in node.block.model_dump().items():
            if isinstance(value, int) and not isinstance(value, bool) and value > 0 and (
                    "vocab" in key or "num_embeddings" in key):
                highs.append(value)
    return max(1, min(highs)) if highs else 2


def specs_from_pipeline(pipe) -> dict[str, InputSpec]:
    """Input specs from a `Pipeline` (its resolved, typed inputs)."""
    return specs_from_graph(pipe.graph)


def specs_from_graph(graph) -> dict[str, InputSpec]:
    """Input specs of the tensor core of a typed graph (`composer.graph.Graph`)."""
    from .stages import core_inputs
    r = graph.resolved
    multiples = {n: d.multiple_of for n, d in r.dims.items()}
    out = {}
    for name, ci in core_inputs(graph).items():
        t = ci.type
        shape = None if t is None or t.shape is None else tuple(t.shape)
        if ci.field is not None:   # one field of a graph input
            out[name] = InputSpec(name, shape, t.dtype, t.kind, None, multiples, 2, group=ci.node, field=ci.field)
        elif ci.port is None:   # a spec input
            decl = r.inputs[name].decl
            out[name] = InputSpec(name, shape, decl.dtype, decl.kind, decl.preprocess, multiples,
                                  _int_high(graph, name), tuple(decl.columns) if decl.columns else None,
                                  tuple(decl.ignore_columns))
        else:                 # what a pre-processing block (a tokenizer) produces
            high = t.get("vocab") or _int_high(graph, ci.node)    # the tokenizer says how many ids it makes
            out[name] = InputSpec(name, shape, t.dtype, t.kind, None, multiples, high)
    return out


ONNX_ELEM_DTYPES = {1: "float32", 10: "float16", 16: "bfloat16", 11: "float64", 7: "int64", 6: "int32",
                    2: "uint8", 9: "bool"}


def specs_from_onnx(model) -> dict[str, InputSpec]:
    """Input specs from an ONNX `ModelProto` (dim names stand for symbolic dims); the
    preprocessing and multiples composer stored in its metadata come back too."""
    import json

    meta = {p.key: p.value for p in model.metadata_props}
    extra = json.loads(meta.get("composer.inputs", "{}") or "{}")
    multiples = json.loads(meta.get("composer.multiples", "{}") or "{}")
    init_names = {i.name for i in model.graph.initializer}
    out = {}
    for vi in model.graph.input:
        if vi.name in init_names:
            continue
        tt = vi.type.tensor_type
        dims: list[DimEntry] = []
        for d in tt.shape.dim:
            if d.HasField("dim_value"):
                dims.append(int(d.dim_value))
            elif d.HasField("dim_param"):
                dims.append(d.dim_param)
            else:
                dims.append(None)
        info = extra.get(vi.name, {})
        pre = None
        if info.get("preprocess"):
            from .spec import Preprocess
            pre = Preprocess(**info["preprocess"])
        out[vi.name] = InputSpec(vi.name, tuple(dims) if tt.HasField("shape") else None,
                                 ONNX_ELEM_DTYPES.get(tt.elem_type, f"onnx-type-{tt.elem_type}"),
                                 info.get("kind", "tensor"), pre, dict(multiples), int(info.get("int_high", 2)),
                                 _names(info.get("columns")) or None, _names(info.get("ignore_columns")),
                                 info.get("group") if isinstance(info.get("group"), str) else None,
                                 info.get("field") if info.get("field") in GRAPH_FIELDS else None)
    return out


def _names(value: Any) -> tuple[str, ...]:
    """Column names from metadata: a list of strings, else none (a malformed entry is left out)."""
    if isinstance(value, list) and all(isinstance(v, str) and v for v in value):
        return tuple(value)
    return ()


# ---- sizes of symbolic dims ----------------------------------------------------------------


def _round_up(n: int, m: int) -> int:
    return max(m, int(math.ceil(n / m)) * m)


GRAPH_SIZES = {"x": (12, 19), "edge_index": (30, 47)}   # nodes, edges of a graph input, without `sizes:`


def graph_dims(specs: Mapping[str, InputSpec]) -> dict[str, tuple[int, int]]:
    """The default verification sizes of the node and edge dims of graph inputs (N 12 and 19,
    E 30 and 47), for dims the spec gives no `sizes:`."""
    out: dict[str, tuple[int, int]] = {}
    for s in specs.values():
        if s.field in GRAPH_SIZES and s.shape is not None:
            d = s.shape[0] if s.field == "x" else s.shape[1]
            name = str(d) if isinstance(d, (Dim, str)) else None
            if name is not None:
                out.setdefault(name, GRAPH_SIZES[s.field])
    return out


def default_sizes(name: str, multiple_of: int = 1) -> list[int]:
    """Two sizes to verify a dim at when the spec gives none: B 1 and 3, else about 64 and 96."""
    if name in BATCH_NAMES and multiple_of == 1:
        return list(DEFAULT_BATCH_SIZES)
    a = _round_up(DEFAULT_SIZES[0], multiple_of)
    b = _round_up(DEFAULT_SIZES[1], multiple_of)
    if b == a:
        b = a + multiple_of
    return [a, b]


def example_size(name: str, decl=None) -> int:
    """One size of a dim: the spec's `example`, else its first `sizes`, else a default."""
    m = decl.multiple_of if decl is not None else 1
    if decl is not None and decl.example:
        return decl.example
    if decl is not None and decl.sizes:
        return decl.sizes[0]
    return default_sizes(name, m)[0]


def symbols_of(specs: Mapping[str, InputSpec]) -> list[str]:
    """Symbolic dim names of the inputs, in order of first appearance."""
    seen: list[str] = []
    for s in specs.values():
        for d in s.shape or ():
            names = sorted(d.symbols()) if isinstance(d, Dim) else ([d] if isinstance(d, str) else [])
            for n in names:
                if n not in seen:
                    seen.append(n)
    return seen


# ---- seeded example inputs -----------------------------------------------------------------


def concrete_shape(spec: InputSpec, env: Mapping[str, int]) -> tuple[int, ...]:
    if spec.shape is None:
        raise InputError(f"input `{spec.name}` has no declared shape, so no example tensor can be made for it",
                         )
    out = []
    for d in spec.shape:
        if isinstance(d, int):
            out.append(d)
        elif isinstance(d, Dim):
            out.append(evaluate(d, env))
        elif isinstance(d, str) and d in env:
            out.append(env[d])
        else:
            raise InputError(f"input `{spec.name}`: no size for dim `{d}`")
    return tuple(out)


def padding_mask(shape: tuple[int, int], g: torch.Generator) -> torch.Tensor:
    """A [B, T] padding mask: the first row is full, the others keep a random length of at least 1."""
    b, t = shape
    lengths = torch.randint(1, t + 1, (b,), generator=g)
    if b:
        lengths[0] = t
    return torch.arange(t)[None, :] < lengths[:, None]


def random_inputs(specs: Mapping[str, InputSpec], env: Mapping[str, int], seed: int = 0) -> dict[str, torch.Tensor]:
    """Seeded tensors for every input at the dim sizes in `env` (same seed, same tensors)."""
    g = torch.Generator().manual_seed(seed)
    out = {}
    for name, spec in specs.items():
        if spec.group is not None:
            if name not in out:
                out.update(random_graph_input(specs, spec.group, env, g))
            continue
        shape = concrete_shape(spec, env)
        dtype = TORCH_DTYPES.get(spec.dtype)
        if dtype is None:
            raise InputError(f"input `{name}` has dtype {spec.dtype}, which composer cannot make tensors of")
        if spec.kind == "mask" and len(shape) == 2:
            out[name] = padding_mask(shape, g).to(dtype)     # [B, T]: a prefix of ones per row, the rest padding
        elif dtype == torch.bool:
            out[name] = torch.ones(shape, dtype=torch.bool)   # masks: everything visible
        elif dtype.is_floating_point:
            out[name] = torch.randn(shape, generator=g, dtype=torch.float32).to(dtype)
        elif dtype == torch.uint8:
            out[name] = torch.randint(0, 256, shape, generator=g, dtype=torch.uint8)
        else:
            out[name] = torch.randint(0, max(1, spec.int_high), shape, generator=g, dtype=dtype)
    return out


def graph_group(specs: Mapping[str, InputSpec], group: str) -> dict[str, InputSpec]:
    """The specs of one graph input's fields, by field."""
    return {s.field: s for s in specs.values() if s.group == group and s.field}


def random_graph_input(specs: Mapping[str, InputSpec], group: str, env: Mapping[str, int],
                        g: torch.Generator) -> dict[str, torch.Tensor]:
    """A seeded random graph for a graph input at the sizes in `env`: its node ids in range, an
    isolated node, and a batch of graphs of different sizes when it has a `batch` field."""
    fields = graph_group(specs, group)
    n, f = concrete_shape(fields["x"], env)
    e = concrete_shape(fields["edge_index"], env)[1]
    dtype = TORCH_DTYPES.get(fields["x"].dtype, torch.float32)
    edge_dim = concrete_shape(fields["edge_attr"], env)[1] if "edge_attr" in fields else None
    graph = random_graph(n, e, f, g, dtype=dtype, edge_weight="edge_weight" in fields, edge_dim=edge_dim,
                         batched="batch" in fields, graphs=env.get("G"))
    return {fields[k].name: v for k, v in graph.items()}


# ---- reading files -------------------------------------------------------------------------


def parse_pairs(items: Sequence[str]) -> list[tuple[str, str]]:
    """`name=VALUE` pairs from the command line, in order (a text input may be given repeatedly)."""
    out = []
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name or not value:
            raise InputError(f"--input {item!r}: expected NAME=FILE, e.g. --input image=cat.jpg")
        out.append((name, value))
    return out


def parse_assignments(items: Sequence[str] | Sequence[tuple[str, str]]) -> dict[str, Path]:
    """`name=FILE` pairs from the command line, each name once."""
    out: dict[str, Path] = {}
    for name, file in (parse_pairs(items) if items and isinstance(items[0], str) else items):
        if name in out:
            raise InputError(f"--input {name} is given twice")
        out[name] = Path(file)
    return out


def read_texts(name: str, values: Sequence[str]) -> list[str]:
    """The texts given for a text input: each value is a text, or a `.txt` file (one text per
    non-empty line) or a `.jsonl` file (one JSON string, or an object with a `name` or `text`
    field, per line)."""
    texts: list[str] = []
    for value in values:
        path = Path(value)
        if path.suffix.lower() in (".txt", ".jsonl") and path.is_file():
            try:
                lines = path.read_bytes().decode("utf-8").splitlines()
            except UnicodeDecodeError as exc:
                raise InputError(f"--input {name}={value}: the file is not valid UTF-8 (byte {exc.start})") from None
            except OSError as exc:
                raise InputError(f"--input {name}={value}: cannot read it: {exc.strerror or exc}") from None
            if path.suffix.lower() == ".txt":
                texts += [line for line in lines if line.strip()]
                continue
            for i, line in enumerate(lines, 1):
                if not line.strip():
                    continue
                try:
                    item = json.loads(line)
                except ValueError as exc:
                    raise InputError(f"{path}:{i}: not a JSON line ({exc.msg})") from None
                text = item if isinstance(item, str) else item.get(name, item.get("text")) if isinstance(item, dict) \
                    else None
                if not isinstance(text, str):
                    raise InputError(f"{path}:{i}: expected a JSON string or an object with a `{name}` or `text` "
                                     "string field")
                texts.append(text)
        else:
            texts.append(value)
    if not texts:
        raise InputError(f"--input {name}: no texts given")
    return texts


IMAGE_FORMATS = "PNG, JPEG, BMP, GIF, WebP, TIFF, PPM/PGM"
MAX_IMAGE_PIXELS = 64_000_000     # 64 megapixels: larger files are refused before decoding (decompression bombs)
MIN_IMAGE_SIDE = 2
# modes that are colour images: converted to RGB as they are (JPEG's CMYK and YCbCr, palettes of colours)
_COLOUR_MODES = {"RGB", "RGBX", "CMYK", "YCbCr", "P"}
_ALPHA_MODES = {"RGBA", "RGBa", "LA", "La", "PA"}
_MAGIC = [(b"\x89PNG\r\n\x1a\n", "a PNG image"), (b"\xff\xd8\xff", "a JPEG image"), (b"GIF8", "a GIF image"),
          (b"BM", "a BMP image"), (b"II*\x00", "a TIFF image"), (b"MM\x00*", "a TIFF image"),
          (b"%PDF", "a PDF document"), (b"PK\x03\x04", "a zip archive (an .npz?)"), (b"\x93NUMPY", "a .npy array"),
          (b"\x1f\x8b", "a gzip archive")]


def _looks_like(path: Path) -> str:
    """What a file that is not a readable image seems to be, from its first bytes."""
    try:
        with open(path, "rb") as f:
            head = f.read(512)
    except OSError:
        return "an unreadable file"
    if not head:
        return "an empty file"
    for magic, what in _MAGIC:
        if head.startswith(magic):
            return what
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "a WebP image"
    if len(head) > 8 and head[8:10] == b'{"':
        return "a .safetensors file"
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        text = None
    if text is not None and all(c.isprintable() or c in "\r\n\t" for c in text.rstrip("\x00")):
        low = text.lstrip().lower()
        if low.startswith(("<!doctype html", "<html")):
            return "an HTML page"
        if "<svg" in low:
            return "an SVG drawing (vector images are not read; convert it to PNG)"
        return "text"
    return "binary data of an unknown format (first bytes " + head[:8].hex(" ") + ")"


def _mode_problem(im, path: Path, want_gray: bool) -> Optional[str]:
    """Why an image of this mode cannot be fed as the input's channels, or None."""
    mode = im.mode
    transparent = mode in _ALPHA_MODES or (mode == "P" and ("transparency" in im.info
                                                             or getattr(im.palette, "mode", "RGB") == "RGBA"))
    gray = mode in ("1", "L", "F") or mode.startswith("I") or (mode == "P" and _gray_palette(im))
    what = f"{path} is a {mode} image"
    if transparent:
        kind = "has an alpha channel" if mode != "P" else "has a transparent colour"
        return (f"{what} that {kind}, and the input takes {'grayscale' if want_gray else 'RGB'} without "
                f"transparency; flatten it first, e.g. `Image.open(f).convert('{'L' if want_gray else 'RGB'}')"
                f".save('flat.png')` with PIL (transparent pixels keep their stored colour)")
    if want_gray:
        if mode in ("1", "L") or (mode == "P" and _gray_palette(im)):
            return None
        if gray:
            return (f"{what} (more than 8 bits per pixel), and the input takes 8-bit grayscale; scale it to 8 bits "
                    "first, or give the values as a float .npy")
        return (f"{what} (colour), and the input takes 1-channel grayscale (`channels: gray`); convert it first, "
                "e.g. `Image.open(f).convert('L').save('gray.png')` with PIL")
    if gray:
        return (f"{what} (grayscale), and the input takes 3-channel RGB; convert it first, e.g. "
                "`Image.open(f).convert('RGB').save('rgb.png')` with PIL (the gray value in all three channels), "
                "or declare the input with `preprocess: {channels: gray}` and 1 channel")
    if mode not in _COLOUR_MODES:
        return f"{what}, which composer does not read; save it as an RGB PNG or JPEG"
    return None


def _gray_palette(im) -> bool:
    pal = im.getpalette() or []
    return all(pal[i] == pal[i + 1] == pal[i + 2] for i in range(0, len(pal) - 2, 3))


def _open_image(path: Path, spec: InputSpec, want_gray: bool):
    """The decoded first frame, after checking size and mode from the header (nothing is
    decoded for a file that fails them)."""
    import warnings

    from PIL import Image, UnidentifiedImageError

    def fail(why: str) -> InputError:
        return InputError(f"input `{spec.name}`: {why}")

    try:
        with warnings.catch_warnings():  # our limit (below PIL's) is checked next, with our message
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            im = Image.open(path)
    except Image.DecompressionBombError as exc:
        import re
        m = re.search(r"\((\d+) pixels\)", str(exc))
        size = f"{int(m.group(1)) / 1e6:.1f} megapixels" if m else "over PIL's own limit"
        raise fail(f"image {path} is {size}, more than the limit of {MAX_IMAGE_PIXELS / 1e6:g} megapixels "
                   "(a guard against decompression bombs); scale it down first") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError) as exc:
        raise fail(_undecodable(path, None if isinstance(exc, UnidentifiedImageError) else exc)) from None
    with im:
        w, h = im.size
        if w * h > MAX_IMAGE_PIXELS:
            raise fail(f"image {path} is {w}x{h} = {w * h / 1e6:.1f} megapixels, more than the limit of "
                       f"{MAX_IMAGE_PIXELS / 1e6:g} megapixels (a guard against decompression bombs); scale it "
                       "down first")
        if w < MIN_IMAGE_SIDE or h < MIN_IMAGE_SIDE:
            raise fail(f"image {path} is {w}x{h}; an image must be at least {MIN_IMAGE_SIDE}x{MIN_IMAGE_SIDE} pixels")
        problem = _mode_problem(im, path, want_gray)
        if problem is not None:
            raise fail(problem)
        try:
            im.load()
            return im.convert("L" if want_gray else "RGB")
        except (OSError, SyntaxError, ValueError, EOFError) as exc:
            raise fail(_undecodable(path, exc)) from None


def _undecodable(path: Path, exc: Optional[BaseException]) -> str:
    what = _looks_like(path)
    why = f" ({_short(exc)})" if exc is not None else ""
    if what.endswith(" image"):
        return f"cannot decode image {path}: it looks like {what}, but damaged or truncated{why}"
    return f"cannot decode image {path}: it is not an image, it looks like {what} (composer reads {IMAGE_FORMATS})"


def load_image(path: Path, spec: InputSpec) -> np.ndarray:
    """Decode an image file into a (1, C, H, W) array as the input's `preprocess` says.

    Nothing is converted behind the user's back: a grayscale image for an RGB input (or a
    colour one for a `channels: gray` input), an image with transparency, one smaller than
    2x2 or larger than `MAX_IMAGE_PIXELS`, and a file that is no image are each an InputError
    naming the file."""
    from PIL import Image

    from .spec import Preprocess

    pre = spec.preprocess or Preprocess()
    img = _open_image(path, spec, pre.channels == "gray")
    size = "{}x{}".format(*img.size)
    if pre.resize:  # shorter side to `resize`, keeping the aspect ratio
        w, h = img.size
        s = pre.resize / min(w, h)
        img = img.resize((max(1, round(w * s)), max(1, round(h * s))), Image.BILINEAR)
        size += " ({}x{} after `resize: {}`)".format(*img.size, pre.resize)
    if pre.crop:
        w, h = img.size
        c = pre.crop
        if c > w or c > h:
            raise InputError(f"input `{spec.name}`: image {path} is {size}, smaller than the crop {c}x{c}")
        left, top = (w - c) // 2, (h - c) // 2
        img = img.crop((left, top, left + c, top + c))
    arr = np.asarray(img)
    if arr.ndim == 2:
        arr = arr[:, :, None]
    if pre.channels == "bgr":
        arr = arr[:, :, ::-1]
    arr = np.ascontiguousarray(arr.transpose(2, 0, 1))[None]   # (1, C, H, W)
    if spec.dtype == "uint8":
        return arr.astype(np.uint8)
    out = arr.astype(np.float32) * np.float32(pre.scale)
    c = out.shape[1]
    for what, values in (("mean", pre.mean), ("std", pre.std)):
        if values is not None and len(values) not in (1, c):
            raise InputError(f"input `{spec.name}`: preprocess.{what} has {len(values)} values for a {c}-channel image")
    if pre.mean is not None:
        out = out - np.asarray(pre.mean, np.float32).reshape(1, -1, 1, 1)
    if pre.std is not None:
        out = out / np.asarray(pre.std, np.float32).reshape(1, -1, 1, 1)
    return out.astype(NUMPY_DTYPES.get(spec.dtype, np.float32))


def load_array(path: Path, spec: InputSpec) -> np.ndarray:
    """A tensor from .npy, .npz or .safetensors (by the input's name, or the file's only tensor)."""
    suffix = path.suffix.lower()
    try:
        if suffix == ".npy":
            return np.load(path, allow_pickle=False)
        if suffix == ".npz":
            with np.load(path, allow_pickle=False) as z:
                return _pick({k: z[k] for k in z.files}, path, spec)
        if suffix == ".safetensors":
            from safetensors.torch import load_file
            tensors = load_file(str(path))
            t = _pick(tensors, path, spec)
            return t.numpy() if t.dtype != torch.bfloat16 else t.float().numpy()
    except InputError:
        raise
    except (ValueError, OSError, EOFError, zipfile.BadZipFile, RuntimeError) as exc:
        raise InputError(f"input `{spec.name}`: cannot read {path}: {_short(exc)} (truncated or not a {suffix} file?)"
                         ) from None
    except Exception as exc:  # safetensors raises its own error type
        raise InputError(f"input `{spec.name}`: cannot read {path}: {_short(exc)}") from None
    raise InputError(f"input `{spec.name}`: {path} has an unknown type {suffix!r}",
                     )


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"


def _pick(tensors: Mapping[str, Any], path: Path, spec: InputSpec):
    if spec.name in tensors:
        return tensors[spec.name]
    if len(tensors) == 1:
        return next(iter(tensors.values()))
    raise InputError(f"input `{spec.name}`: {path} holds {len(tensors)} tensors ({', '.join(sorted(tensors))}) "
                     f"and none is named `{spec.name}`")


def read_input(path: Path, spec: InputSpec) -> np.ndarray:
    """One input's file as an array: an image, a CSV (series inputs), or a stored array."""
    if not path.exists():
        raise InputError(f"input `{spec.name}`: file {path} does not exist")
    if not path.is_file():
        raise InputError(f"input `{spec.name}`: {path} is not a file")
    suffix = path.suffix.lower()
    if suffix in IMAGE_SUFFIXES:
        return load_image(path, spec)
    if suffix == ".csv" and spec.kind == "series":
        from ._csv import load_csv
        return load_csv(path, spec)
    if suffix in (".npy", ".npz", ".safetensors"):
        arr = load_array(path, spec)
        if spec.kind == "series" and getattr(arr, "ndim", 0) == 2:
            arr = arr[None]                          # [T, F] -> [1, T, F]: one sequence
        return arr
    hint = " (CSV files are read for `series` inputs only)" if suffix == ".csv" else ""
    raise InputError(f"input `{spec.name}`: cannot read {path.suffix or 'a file without suffix'} files{hint}")


def read_graph_input(path: Path, group: str, fields: Mapping[str, InputSpec]) -> dict[str, np.ndarray]:
    """A graph input's tensors (by core input name) from a JSON or .npz graph file; several
    graphs in the file form one batch when the input has a `batch` field."""
    try:
        graphs = read_graph_file(path, f"input `{group}`")
    except GraphError as exc:
        raise InputError(str(exc)) from None
    if len(graphs) > 1 and "batch" not in fields:
        raise InputError(f"input `{group}`: {path} holds {len(graphs)} graphs, and the input takes one graph (it has "
                         "no `batch` field); give one graph, or declare `batch: [N]` among its fields")
    for fld in fields:
        if fld != "batch" and any(fld not in gr for gr in graphs):
            raise InputError(f"input `{group}`: {path} has no `{fld}`, and the input takes it")
    from .graph_data import join
    joined = join(graphs, list(fields)) if len(graphs) > 1 or "batch" in fields else graphs[0]
    return {spec.name: np.asarray(joined[fld]).astype(NUMPY_DTYPES.get(spec.dtype, np.float32))
            for fld, spec in fields.items()}


def read_inputs(files: Mapping[str, Path], specs: Mapping[str, InputSpec]) -> dict[str, np.ndarray]:
    """Read every input's file and check them all against the declared types (a graph input:
    one graph file for all its fields)."""
    groups = list(dict.fromkeys(s.group for s in specs.values() if s.group))
    names = [n for n, s in specs.items() if s.group is None] + groups
    unknown = [n for n in files if n not in names]
    if unknown:
        import difflib
        n = unknown[0]
        m = difflib.get_close_matches(n, names, n=1)
        hint = f" (did you mean `{m[0]}`?)" if m else ""
        raise InputError(f"unknown input `{n}`{hint}; the inputs are: {', '.join(names)}")
    missing = [n for n in names if n not in files]
    if missing:
        what = "a graph: .json or .npz" if missing[0] in groups else \
            f"{specs[missing[0]].shape_text()} {specs[missing[0]].dtype}"
        raise InputError(f"missing input `{missing[0]}` ({what}): "
                         f"pass it with --input {missing[0]}=FILE" + (
                             f"; also missing: {', '.join(missing[1:])}" if missing[1:] else ""))
    arrays: dict[str, np.ndarray] = {}
    sources: dict[str, str] = {}
    for n in names:
        if n in groups:
            fields = graph_group(specs, n)
            arrays.update(read_graph_input(files[n], n, fields))
            sources.update({s.name: str(files[n]) for s in fields.values()})
        else:
            arrays[n] = read_input(files[n], specs[n])
            sources[n] = str(files[n])
    check_inputs(arrays, specs, sources)
    return arrays


# ---- checks --------------------------------------------------------------------------------


def _dtype_name(a) -> str:
    if isinstance(a, torch.Tensor):
        return str(a.dtype).replace("torch.", "")
    return str(np.asarray(a).dtype).replace("bool_", "bool")


def check_inputs(values: Mapping[str, Any], specs: Mapping[str, InputSpec],
                 sources: Optional[Mapping[str, str]] = None) -> dict[str, int]:
    """Check tensors against their specs; returns the size of every symbolic dim."""
    sources = sources or {}
    env: dict[str, int] = {}
    where: dict[str, str] = {}
    for name, spec in specs.items():
        if name not in values:
            raise InputError(f"missing input `{name}` ({spec.shape_text()} {spec.dtype})")
        v = values[name]
        src = f" from {sources[name]}" if name in sources else ""
        shape = tuple(v.shape)
        dt = _dtype_name(v)
        if dt != spec.dtype:
            hint = ""
            if spec.dtype.startswith("float") and dt.startswith("float"):
                hint = f"; convert it, e.g. `array.astype('{spec.dtype}')`"
            raise InputError(f"input `{name}`{src} has dtype {dt}, expected {spec.dtype}{hint}")
        if spec.shape is None:
            continue
        if len(shape) != len(spec.shape):
            raise InputError(f"input `{name}`{src} has shape {list(shape)} (rank {len(shape)}), "
                             f"expected {spec.shape_text()} (rank {len(spec.shape)})")
        for axis, (got, want) in enumerate(zip(shape, spec.shape)):
            if isinstance(want, int) and got != want:
                raise InputError(f"input `{name}`{src} has shape {list(shape)}, expected {spec.shape_text()}: "
                                 f"axis {axis} must be {want}, found {got}" + _resize_hint(spec, axis))
            sym = None
            if isinstance(want, Dim) and len(want.symbols()) == 1 and str(want) in want.symbols():
                sym = str(want)
            elif isinstance(want, str):
                sym = want
            if sym is None:
                continue
            m = spec.multiples.get(sym, 1)
            if got % m:
                raise InputError(f"input `{name}`{src} has shape {list(shape)}: axis {axis} ({sym}) is {got}, "
                                 f"which is not a multiple of {m}" + _resize_hint(spec, axis))
            if sym in env and env[sym] != got:
                raise InputError(f"input `{name}`{src} has {sym} = {got} at axis {axis}, but {where[sym]} has "
                                 f"{sym} = {env[sym]}: inputs that share a dim must agree")
            env.setdefault(sym, got)
            where.setdefault(sym, f"`{name}`")
    for group in dict.fromkeys(s.group for s in specs.values() if s.group):
        fields = graph_group(specs, group)
        first = next(iter(fields.values())).name
        src = f" from {sources[first]}" if first in sources else ""
        check_graph({fld: values[s.name] for fld, s in fields.items()}, f"input `{group}`{src}", InputError)
    return env


def _resize_hint(spec: InputSpec, axis: int) -> str:
    if spec.kind == "image" and axis >= 2:
        return " (for image files, set `preprocess: {resize: ..., crop: ...}` on the input)"
    return ""

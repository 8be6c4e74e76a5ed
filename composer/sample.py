"""Images from generative specs (`composer sample`), on the torch or the onnxruntime core.

Three schemes, found from the spec's types:

- **latent**: a GAN generator or a VAE decoder. The pipeline, or one of its parts, has inputs of
  kind `latent` only and an image-like output (rank 4); each latent is drawn from N(0, I).
- **diffusion**: a denoiser with a `diffusion:` section. The loop of `composer.diffusion`
  (DDPM or DDIM) calls the denoiser once per step on the noisy batch.
- **flow**: a chain of flow blocks; the sampling direction (`composer.flows.flow_sampler`) maps
  standard-normal noise back to images.

Every random draw comes from one torch generator on the CPU, seeded by `seed`, so the same seed
gives the same images on either backend. Images come out in [0, 1] (the model's value range,
`value_range`, mapped and clamped), shaped [N, C, H, W].
"""

from __future__ import annotations

import math
import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Optional, Sequence, Union

import numpy as np
import torch

from .dims import is_static
from .errors import ComposerError

MAX_SAMPLES = 1024          # images per call: a grid larger than this is not something to look at
CHUNK = 64                  # images per forward of a latent generator
BACKENDS = ("torch", "onnx")


class SampleError(ComposerError):
    """A sampling request that cannot run as asked: a bad option, a spec that is not generative
    (exit code 2, a usage error)."""

    exit_code = 2


# ---- what to run ----------------------------------------------------------------------------------


@dataclass
class Scheme:
    """How a spec samples: `kind` (latent | diffusion | flow), the `part` that runs (None: the whole
    pipeline), the noise `inputs` (name -> shape without the batch), the `output` that is the image,
    and the image's value range."""

    kind: str
    part: Optional[str]
    inputs: dict[str, tuple[int, ...]]
    output: str
    value_range: tuple[float, float]
    samplers: tuple[str, ...] = ()
    dtypes: dict[str, torch.dtype] = field(default_factory=dict)


def _static_tail(name: str, shape: Sequence[Any], what: str) -> tuple[int, ...]:
    tail = tuple(shape[1:])
    if not all(is_static(d) for d in tail):
        raise SampleError(f"{what} `{name}` has the shape [{', '.join(map(str, shape))}]: sampling draws it, so every "
                          "dim but the batch must be fixed (set the others in `dims`)")
    return tuple(int(d) for d in tail)


def _range_of(pipe, ref) -> tuple[float, float]:
    """The value range of an image output, from the block that makes it: tanh (a GAN generator) is
    [-1, 1], a sigmoid [0, 1]; anything else is taken as [0, 1]."""
    node = pipe.resolved.nodes.get(ref.node)
    kind = node.type if node is not None else ""
    if kind in ("tanh", "dcgan_generator"):
        return (-1.0, 1.0)
    return (0.0, 1.0)


def find_scheme(pipe) -> Scheme:
    """The scheme a pipeline samples with; a `SampleError` that lists what is missing otherwise."""
    r, graph = pipe.resolved, pipe.graph
    if getattr(r, "diffusion", None) is not None:
        return _diffusion_scheme(pipe)
    flow = _flow_scheme(pipe)
    if flow is not None:
        return flow
    from .parts import part_pipeline
    candidates = [(name, None) for name in r.parts] + [(None, pipe)]     # a part (a GAN's generator) runs less
    for name, sub in candidates:
        sub = sub if sub is not None else part_pipeline(pipe, name)
        ins = sub.resolved.inputs
        if not ins or any(i.type is None or i.type.kind != "latent" for i in ins.values()):
            continue
        images = [(o, ref) for o, ref in sub.resolved.outputs.items()
                  if (t := sub.graph.output_type(ref)) is not None and t.rank == 4 and t.dtype.startswith("float")]
        if not images:
            continue
        o, ref = images[0]
        shapes = {n: _static_tail(n, i.type.shape, "latent input") for n, i in ins.items()}
        return Scheme("latent", name, shapes, o, _range_of(pipe, ref))
    raise SampleError(f"`{r.name}` is not a generative spec that `sample` can run: it needs a `diffusion:` section "
                      "(a denoiser), a chain of flow blocks, or inputs of kind `latent` only (the whole pipeline or "
                      "one of its `parts:`) with an image output [B, C, H, W] (a GAN generator, a VAE decoder)")


def _diffusion_scheme(pipe) -> Scheme:
    decl = pipe.resolved.diffusion
    ins = pipe.resolved.inputs
    x = ins[decl.sample].type
    if x is None or x.rank != 4:
        raise SampleError(f"the diffusion sample `{decl.sample}` must be an image [B, C, H, W], not {x}")
    shape = []
    for i, d in enumerate(x.shape[1:], start=1):
        if is_static(d):
            shape.append(int(d))
            continue
        sym = str(d)
        ex = pipe.resolved.dims.get(sym)
        if ex is None or ex.example is None:
            raise SampleError(f"dim {sym} of `{decl.sample}` has no example size in `dims`: sampling needs one")
        shape.append(int(ex.example))
    output = decl.output or next(iter(pipe.resolved.outputs))
    t = ins[decl.timestep].type
    from .inputs import TORCH_DTYPES
    dtypes = {decl.sample: TORCH_DTYPES[x.dtype], decl.timestep: TORCH_DTYPES[t.dtype] if t is not None else torch.int64}
    lim = float(decl.clip_sample_range)
    return Scheme("diffusion", None, {decl.sample: tuple(shape)}, output, (-lim, lim), ("ddpm", "ddim"), dtypes)


def _flow_scheme(pipe) -> Optional[Scheme]:
    try:
        from . import flows
    except ImportError:          # pragma: no cover - the flows module is part of the package
        return None
    finder = getattr(flows, "sampling_scheme", None)
    return finder(pipe, Scheme) if finder is not None else None


# ---- the result -----------------------------------------------------------------------------------


@dataclass
class Samples:
    """`images` [N, C, H, W] in [0, 1]; `raw`: the model's outputs as they came; timings."""

    images: torch.Tensor
    raw: torch.Tensor
    seconds: float
    steps: int = 0
    where: str = ""

    def summary(self) -> str:
        n = self.images.shape[0]
        per = f", {self.steps} steps" if self.steps else ""
        return f"{n} images {tuple(self.images.shape[1:])}{per} in {self.seconds:.2f} s ({self.where})"


# ---- the sampler ----------------------------------------------------------------------------------


Progress = Callable[[int, int], None]


class ImageSampler:
    """A generative spec ready to sample: its scheme at once, the model (built, or exported, verified
    and opened in onnxruntime) on first use.

    `target`: a `Pipeline` or a built `CompiledPipeline`; `backend`: torch or onnx; `weights`
    replaces the spec's `weights:`; `device`: auto, cpu or cuda; `threads`: onnxruntime's intra-op
    threads."""

    def __init__(self, target, *, backend: str = "torch", weights=None, device: str = "cpu",
                 threads: Optional[int] = None, on_weights: Optional[Callable[[dict], None]] = None):
        from ._target import target_of
        self.model, self.pipe = target_of(target, SampleError, "sample")
        if backend not in BACKENDS:
            raise SampleError(f"unknown backend {backend!r}: choose torch or onnx")
        if backend == "onnx" and self.model is not None and weights is not None:
            raise SampleError("a built model carries its weights; give `weights` with a Pipeline")
        self.backend, self.weights, self.device, self.threads = backend, weights, device, threads
        self.on_weights = on_weights
        self.scheme = find_scheme(self.pipe)
        self._run: Optional[Callable[[dict[str, torch.Tensor]], torch.Tensor]] = None
        self._tmp: Optional[tempfile.TemporaryDirectory] = None
        self.where = ""

    # -- checks, before anything is built --------------------------------------------------------

    def check(self, n: int, steps: Optional[int] = None, sampler: Optional[str] = None,
              temperature: float = 1.0) -> None:
        s = self.scheme
        if n < 1:
            raise SampleError(f"-n must be 1 or more, not {n}")
        if n > MAX_SAMPLES:
            raise SampleError(f"-n {n} is beyond the limit of {MAX_SAMPLES} images per call: sample in several calls "
                              "(with other seeds)")
        if not temperature > 0 or not math.isfinite(temperature):
            raise SampleError(f"--temperature must be above 0, not {temperature}")
        if s.kind != "diffusion":
            if sampler is not None:
                raise SampleError(f"--sampler {sampler}: `{self.pipe.name}` is a {s.kind} model, which samples in one "
                                  "pass; DDPM and DDIM samplers are for diffusion specs")
            if steps is not None:
                raise SampleError(f"--steps {steps}: `{self.pipe.name}` is a {s.kind} model, which samples in one pass; "
                                  "steps are for diffusion specs")
            return
        if sampler is not None and sampler not in s.samplers:
            import difflib
            near = difflib.get_close_matches(sampler, s.samplers, n=1)
            raise SampleError(f"unknown sampler {sampler!r}: a diffusion spec samples with "
                              f"{' or '.join(s.samplers)}" + (f"; did you mean {near[0]!r}?" if near else ""))
        if steps is not None:
            total = self.pipe.resolved.diffusion.schedule.timesteps
            if steps < 1:
                raise SampleError(f"--steps must be 1 or more, not {steps}")
            if steps > total:
                raise SampleError(f"--steps {steps} is more than the schedule's {total} timesteps")

    # -- the core --------------------------------------------------------------------------------

    def _built(self):
        from ._target import built
        return built(self.pipe, self.model, self.weights, self.on_weights)

    def core(self) -> Callable[[dict[str, torch.Tensor]], torch.Tensor]:
        """feeds -> the image output (or the flow sampler's images), on the backend."""
        if self._run is not None:
            return self._run
        s = self.scheme
        model = self._built()
        if s.kind == "flow":
            from .flows import flow_sampler
            module = flow_sampler(model)
            name = f"{self.pipe.name}_sampler"
        elif s.part is not None:
            from .parts import part_model
            module, name = part_model(model, s.part), f"{self.pipe.name}_{s.part}"
        else:
            module, name = model, self.pipe.name
        if self.backend == "torch":
            from ._target import torch_device
            dev = torch_device(self.device, SampleError)
            module = module.to(dev).eval()
            self.where = f"torch on {dev}"

            def run(feeds: dict[str, torch.Tensor]) -> torch.Tensor:
                with torch.no_grad():
                    out = module(**{k: v.to(dev) for k, v in feeds.items()})
                return (out[s.output] if isinstance(out, Mapping) else out).float().cpu()
        else:
            from .runtime import Session
            self._tmp = tempfile.TemporaryDirectory(prefix="composer-sample-")
            path = Path(self._tmp.name) / f"{name}.onnx"
            if s.kind == "flow":
                from .flows import export_sampler
                export_sampler(model, path)
            else:
                from .export import export
                export(module, path)
            session = Session(path, device=self.device, threads=self.threads)
            self.where = session.describe()
            out_name = s.output if s.output in session.output_names else session.output_names[0]

            def run(feeds: dict[str, torch.Tensor]) -> torch.Tensor:
                got = session.run({k: v.numpy() for k, v in feeds.items()}, [out_name])
                return torch.from_numpy(np.asarray(got[out_name])).float()
        self._run = run
        return run

    def close(self) -> None:
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    # -- sampling --------------------------------------------------------------------------------

    def sample(self, n: int = 16, *, seed: int = 0, steps: Optional[int] = None, sampler: Optional[str] = None,
               eta: Optional[float] = None, temperature: float = 1.0,
               progress: Optional[Progress] = None) -> Samples:
        """`n` images from the seed; `steps`, `sampler` and `eta` override a diffusion spec's
        `diffusion.sampler`; `temperature` scales the noise of latent and flow models."""
        self.check(n, steps, sampler, temperature)
        run = self.core()
        s = self.scheme
        gen = torch.Generator().manual_seed(seed)
        t0 = time.perf_counter()
        done = 0
        if s.kind == "diffusion":
            from .diffusion import sample_loop
            decl = self.pipe.resolved.diffusion
            (xname, shape), = s.inputs.items()
            xdt, tdt = s.dtypes[decl.sample], s.dtypes[decl.timestep]

            def denoise(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
                return run({decl.sample: x.to(xdt), decl.timestep: t.to(tdt)})

            raw = sample_loop(denoise, (n, *shape), decl, kind=sampler, steps=steps, eta=eta, generator=gen,
                              progress=progress)
            from .diffusion import sampler as make_sampler
            done = len(make_sampler(decl, kind=sampler, steps=steps, eta=eta).timesteps)
        else:
            chunks = []
            for start in range(0, n, CHUNK):
                b = min(CHUNK, n - start)
                feeds = {name: torch.randn((b, *shape), generator=gen) * temperature for name, shape in s.inputs.items()}
                chunks.append(run(feeds))
                if progress is not None:
                    progress(start + b, n)
            raw = torch.cat(chunks)
        lo, hi = s.value_range
        images = ((raw.float() - lo) / (hi - lo)).clamp(0.0, 1.0)
        return Samples(images, raw, time.perf_counter() - t0, done, self.where)


# ---- files ----------------------------------------------------------------------------------------


def grid(images: torch.Tensor, nrow: Optional[int] = None, pad: int = 2) -> np.ndarray:
    """[N, C, H, W] in [0, 1] -> one uint8 picture [rows·(H+pad)+pad, cols·(W+pad)+pad, C] (C 1 or 3),
    `nrow` images a row (default: a square)."""
    n, c, h, w = images.shape
    if c not in (1, 3):
        raise SampleError(f"images with {c} channels cannot be drawn: a grid takes 1 (grey) or 3 (RGB)")
    cols = nrow or math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    out = np.full((rows * (h + pad) + pad, cols * (w + pad) + pad, c), 255, dtype=np.uint8)
    pix = (images.clamp(0, 1) * 255.0 + 0.5).to(torch.uint8).permute(0, 2, 3, 1).numpy()   # (N, H, W, C)
    for i in range(n):
        r, col = divmod(i, cols)
        y, x = pad + r * (h + pad), pad + col * (w + pad)
        out[y:y + h, x:x + w] = pix[i]
    return out


def write_grid(images: torch.Tensor, path: Union[str, os.PathLike], nrow: Optional[int] = None) -> Path:
    """The grid of `images` as a PNG (or any format PIL writes from the suffix), written atomically."""
    import io

    from PIL import Image

    from ._io import write_bytes
    picture = grid(images, nrow)
    img = Image.fromarray(picture[..., 0] if picture.shape[-1] == 1 else picture)
    buf = io.BytesIO()
    fmt = {".jpg": "JPEG", ".jpeg": "JPEG"}.get(Path(path).suffix.lower(), "PNG")
    img.save(buf, format=fmt)
    return write_bytes(path, buf.getvalue())


def save_tensors(samples: Samples, path: Union[str, os.PathLike]) -> Path:
    """`images` and `raw` to a .safetensors, .npz or .pt file (by its suffix), written atomically."""
    from ._io import atomic_path
    path = Path(path)
    tensors = {"images": samples.images.contiguous(), "raw": samples.raw.contiguous()}
    suffix = path.suffix.lower()
    if suffix not in (".safetensors", ".npz", ".pt"):
        raise SampleError(f"--save {path}: give a .safetensors, .npz or .pt file")
    with atomic_path(path) as tmp:
        if suffix == ".safetensors":
            from safetensors.torch import save_file
            save_file(tensors, str(tmp))
        elif suffix == ".npz":
            with open(tmp, "wb") as f:
                np.savez(f, **{k: v.numpy() for k, v in tensors.items()})
        else:
            torch.save(tensors, str(tmp))
    return path

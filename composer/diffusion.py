"""Diffusion at the pipeline level: the spec's `diffusion:` section, noise schedules, and the DDPM and
DDIM samplers with their loop. No weights live here: the denoiser is the pipeline (any block graph
with a sample input, a timestep input and a prediction output, e.g. `unet2d`).

The schedules and samplers compute what `diffusers`' `DDPMScheduler` and `DDIMScheduler` compute
(float32 betas and cumulative alphas, "leading" timestep spacing, `set_alpha_to_one` for DDIM), and
tests/composer/test_diffusion_schedules.py proves them equal step for step. They are written here
because diffusers is a test reference, not a runtime dependency, and because `sample_loop` must own
every random draw: the initial noise and each step's noise come from one torch generator on the CPU,
in the same order, whether `denoise` is the torch module or an onnxruntime session, so both backends
give the same images for the same seed.
"""

from __future__ import annotations

import difflib
import math
from typing import Callable, Literal, Optional, Sequence, Union

import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator
from torch import Tensor

from .errors import ComposerError
from .params import PosFloat, PosInt

__all__ = ["ScheduleDecl", "SamplerDecl", "DiffusionDecl", "DiffusionError", "NoiseSchedule", "DDPMSampler",
           "DDIMSampler", "SAMPLERS", "sampler", "sample_loop", "make_betas"]

DDIM_DEFAULT_STEPS = 50


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class DiffusionError(ComposerError):
    """A sampling setting that cannot run: steps out of range, an unknown sampler (a usage error)."""

    exit_code = 2


# ---- the spec section ---------------------------------------------------------------------------


class ScheduleDecl(_Model):
    """The forward (noising) process: how beta_t grows over `timesteps` steps. `cosine` is Nichol &
    Dhariwal's (diffusers' `squaredcos_cap_v2`), which ignores beta_start and beta_end."""

    type: Literal["linear", "scaled_linear", "cosine"] = "linear"
    timesteps: PosInt = 1000
    beta_start: float = Field(default=1e-4, gt=0.0, lt=1.0)
    beta_end: float = Field(default=0.02, gt=0.0, lt=1.0)


class SamplerDecl(_Model):
    """How `composer sample` denoises: DDPM (every timestep by default) or DDIM (50 steps by default;
    `eta` 0 is deterministic, 1 adds DDPM-like noise)."""

    type: Literal["ddpm", "ddim"] = "ddpm"
    steps: Optional[PosInt] = Field(default=None, description="default: schedule.timesteps for ddpm, 50 for ddim")
    eta: float = Field(default=0.0, ge=0.0, le=1.0, description="DDIM only: the share of fresh noise per step")


class DiffusionDecl(_Model):
    """The `diffusion:` section of a denoiser spec: which input takes x_t and which the timestep, what
    the output predicts (`eps`: the noise, `v`: the velocity, `sample`: x0), the noise schedule, and
    the sampler."""

    sample: str = Field(default="sample", description="the input that takes the noisy sample x_t")
    timestep: str = Field(default="timestep", description="the input that takes the timestep t")
    output: Optional[str] = Field(default=None, description="the output holding the prediction "
                                                            "(default: the only output)")
    prediction: Literal["eps", "v", "sample"] = "eps"
    schedule: ScheduleDecl = ScheduleDecl()
    clip_sample: bool = True
    clip_sample_range: PosFloat = 1.0
    sampler: SamplerDecl = SamplerDecl()

    @model_validator(mode="after")
    def _steps(self) -> "DiffusionDecl":
        steps, total = self.sampler.steps, self.schedule.timesteps
        if steps is not None and steps > total:
            raise ValueError(f"sampler.steps={steps} is more than the schedule's {total} timesteps")
        return self


# ---- schedules ----------------------------------------------------------------------------------


def _cosine_betas(n: int, max_beta: float = 0.999) -> Tensor:
    """beta_t = 1 - abar(t+1)/abar(t) with abar(t) = cos²((t/n + 0.008)/1.008 · π/2), capped."""
    abar = lambda t: math.cos((t + 0.008) / 1.008 * math.pi / 2) ** 2  # noqa: E731
    return torch.tensor([min(1 - abar((i + 1) / n) / abar(i / n), max_beta) for i in range(n)], dtype=torch.float32)


def make_betas(schedule: ScheduleDecl) -> Tensor:
    """The [T] float32 betas of a schedule, computed as diffusers computes them."""
    n = schedule.timesteps
    if schedule.type == "linear":
        return torch.linspace(schedule.beta_start, schedule.beta_end, n, dtype=torch.float32)
    if schedule.type == "scaled_linear":
        return torch.linspace(schedule.beta_start ** 0.5, schedule.beta_end ** 0.5, n, dtype=torch.float32) ** 2
    return _cosine_betas(n)


def _broadcast(v: Tensor, like: Tensor) -> Tensor:
    """A [B] coefficient as (B, 1, ..., 1) to scale a (B, ...) tensor."""
    return v.flatten().reshape(-1, *([1] * (like.dim() - 1)))


class NoiseSchedule:
    """`betas`, `alphas` and `alphas_cumprod` ([T] float32) of a schedule, and the forward process:
    x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) noise; the velocity v = sqrt(abar_t) noise - sqrt(1 - abar_t) x0;
    `target`, what the denoiser learns to predict (by `prediction`)."""

    def __init__(self, decl: Union[DiffusionDecl, ScheduleDecl]):
        self.decl = decl if isinstance(decl, DiffusionDecl) else DiffusionDecl(schedule=decl)
        self.timesteps = self.decl.schedule.timesteps
        self.betas = make_betas(self.decl.schedule)
        self.alphas = 1.0 - self.betas
        self.alphas_cumprod = torch.cumprod(self.alphas, dim=0)

    def _coeffs(self, x: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        acp = self.alphas_cumprod.to(device=x.device, dtype=x.dtype)[t.to(x.device)]       # (B,)
        return _broadcast(acp ** 0.5, x), _broadcast((1 - acp) ** 0.5, x)

    def add_noise(self, x0: Tensor, noise: Tensor, t: Tensor) -> Tensor:
        """x_t for clean samples x0 (B, ...), noise like x0 and integer timesteps t (B,)."""
        a, s = self._coeffs(x0, t)
        return a * x0 + s * noise

    def velocity(self, x0: Tensor, noise: Tensor, t: Tensor) -> Tensor:
        """v = sqrt(abar_t) noise - sqrt(1 - abar_t) x0 (the v-prediction target)."""
        a, s = self._coeffs(x0, t)
        return a * noise - s * x0

    def target(self, x0: Tensor, noise: Tensor, t: Tensor) -> Tensor:
        """The training target of a denoiser that predicts `prediction`: the noise, v, or x0."""
        p = self.decl.prediction
        return noise if p == "eps" else self.velocity(x0, noise, t) if p == "v" else x0


# ---- samplers -----------------------------------------------------------------------------------


def _noise(like: Tensor, generator: Optional[torch.Generator]) -> Tensor:
    """Standard-normal noise shaped like `like`, drawn on the CPU (from `generator` when given)."""
    return torch.randn(like.shape, generator=generator, dtype=like.dtype).to(like.device)


class _Sampler:
    """Shared by DDPM and DDIM: the schedule, the inference timesteps, and x0 (and eps) from a prediction."""

    kind: str = ""

    def __init__(self, decl: DiffusionDecl, steps: Optional[int] = None):
        self.decl = decl
        self.schedule = NoiseSchedule(decl)
        self.alphas_cumprod = self.schedule.alphas_cumprod
        self.one = torch.tensor(1.0)
        self.num_train = decl.schedule.timesteps
        self.set_timesteps(steps or self.default_steps())

    def default_steps(self) -> int:
        return self.num_train

    def set_timesteps(self, n: int) -> None:
        """`n` timesteps evenly spaced from 0 ("leading": 0, r, 2r, ... with r = T // n), last first."""
        if not isinstance(n, int) or isinstance(n, bool) or n < 1:
            raise DiffusionError(f"steps must be 1 or more, not {n!r}")
        if n > self.num_train:
            raise DiffusionError(f"steps={n} is more than the schedule's {self.num_train} timesteps")
        self.num_inference_steps = n
        self.ratio = self.num_train // n
        self.timesteps = (torch.arange(n, dtype=torch.int64) * self.ratio).flip(0)   # (n,)

    def _acp_prev(self, prev: int) -> Tensor:
        return self.alphas_cumprod[prev] if prev >= 0 else self.one

    def _predict(self, out: Tensor, t: int, x: Tensor) -> tuple[Tensor, Tensor]:
        """(x0 before clipping, eps) from the model's output at timestep t."""
        a = self.alphas_cumprod[t]
        b = 1 - a
        p = self.decl.prediction
        if p == "eps":
            return (x - b ** 0.5 * out) / a ** 0.5, out
        if p == "sample":
            return out, (x - a ** 0.5 * out) / b ** 0.5
        return a ** 0.5 * x - b ** 0.5 * out, a ** 0.5 * out + b ** 0.5 * x

    def _clip(self, x0: Tensor) -> Tensor:
        r = self.decl.clip_sample_range
        return x0.clamp(-r, r) if self.decl.clip_sample else x0

    def step(self, model_output: Tensor, t: int, sample: Tensor, generator: Optional[torch.Generator] = None
             ) -> tuple[Tensor, Tensor]:
        raise NotImplementedError


class DDPMSampler(_Sampler):
    """Ancestral sampling (Ho et al.): the posterior mean of x_{t'} given x_t and the predicted x0,
    plus its fixed small variance ("fixed_small") times fresh noise, except at the last step."""

    kind = "ddpm"

    def prev_timestep(self, t: int) -> int:
        i = int((self.timesteps == t).nonzero()[0, 0])
        return int(self.timesteps[i + 1]) if i + 1 < len(self.timesteps) else -1

    def step(self, model_output: Tensor, t: int, sample: Tensor, generator: Optional[torch.Generator] = None
             ) -> tuple[Tensor, Tensor]:
        """(x_{t'}, predicted x0) from the model's output at timestep t; t' is the next timestep."""
        t = int(t)
        prev = self.prev_timestep(t)
        a_t, a_prev = self.alphas_cumprod[t], self._acp_prev(prev)
        b_t, b_prev = 1 - a_t, 1 - a_prev
        alpha_t = a_t / a_prev
        beta_t = 1 - alpha_t
        x0 = self._clip(self._predict(model_output, t, sample)[0])
        mean = (a_prev ** 0.5 * beta_t / b_t) * x0 + (alpha_t ** 0.5 * b_prev / b_t) * sample
        if t > 0:
            variance = torch.clamp(b_prev / b_t * beta_t, min=1e-20)
            mean = mean + variance ** 0.5 * _noise(model_output, generator)
        return mean, x0


class DDIMSampler(_Sampler):
    """DDIM (Song et al.): x_{t'} = sqrt(abar_t') x0 + sqrt(1 - abar_t' - σ²) eps + σ noise with
    σ = eta · sqrt((1 - abar_t')/(1 - abar_t) · (1 - abar_t/abar_t')); eta 0 is deterministic."""

    kind = "ddim"

    def __init__(self, decl: DiffusionDecl, steps: Optional[int] = None, eta: Optional[float] = None):
        self.eta = decl.sampler.eta if eta is None else float(eta)
        if not 0.0 <= self.eta <= 1.0:
            raise DiffusionError(f"eta must be between 0 and 1, not {self.eta}")
        super().__init__(decl, steps)

    def default_steps(self) -> int:
        return min(DDIM_DEFAULT_STEPS, self.num_train)

    def step(self, model_output: Tensor, t: int, sample: Tensor, generator: Optional[torch.Generator] = None
             ) -> tuple[Tensor, Tensor]:
        """(x_{t'}, predicted x0) from the model's output at timestep t, t' = t - T // steps."""
        t = int(t)
        prev = t - self.ratio
        a_t, a_prev = self.alphas_cumprod[t], self._acp_prev(prev)
        b_t, b_prev = 1 - a_t, 1 - a_prev
        x0, eps = self._predict(model_output, t, sample)
        x0 = self._clip(x0)
        std = self.eta * ((b_prev / b_t) * (1 - a_t / a_prev)) ** 0.5
        out = a_prev ** 0.5 * x0 + (1 - a_prev - std ** 2) ** 0.5 * eps
        if self.eta > 0:
            out = out + std * _noise(model_output, generator)
        return out, x0


SAMPLERS: dict[str, type[_Sampler]] = {"ddpm": DDPMSampler, "ddim": DDIMSampler}


def sampler(decl: DiffusionDecl, kind: Optional[str] = None, steps: Optional[int] = None,
            eta: Optional[float] = None) -> Union[DDPMSampler, DDIMSampler]:
    """The sampler of `decl.sampler` (or `kind`), its timesteps set for `steps` (default: the decl's,
    else every timestep for DDPM and 50 for DDIM); `eta` overrides DDIM's."""
    kind = kind or decl.sampler.type
    if kind not in SAMPLERS:
        near = difflib.get_close_matches(str(kind), SAMPLERS, n=1)
        raise DiffusionError(f"unknown sampler {kind!r}: choose {' or '.join(SAMPLERS)}"
                             + (f" (did you mean {near[0]!r}?)" if near else ""))
    if steps is None and kind == decl.sampler.type:
        steps = decl.sampler.steps
    if steps is not None and (not isinstance(steps, int) or isinstance(steps, bool) or steps < 1):
        raise DiffusionError(f"steps must be 1 or more, not {steps!r}")
    if kind == "ddim":
        return DDIMSampler(decl, steps, eta if eta is not None else (decl.sampler.eta if decl.sampler.type == "ddim"
                                                                      else 0.0))
    if eta:
        raise DiffusionError(f"eta={eta} is a DDIM setting: the DDPM sampler's noise is fixed by the schedule")
    return DDPMSampler(decl, steps)


def sample_loop(denoise: Callable[[Tensor, Tensor], Tensor], shape: Sequence[int], decl: DiffusionDecl, *,
                kind: Optional[str] = None, steps: Optional[int] = None, eta: Optional[float] = None,
                generator: torch.Generator, progress: Optional[Callable[[int, int], None]] = None) -> Tensor:
    """Samples x0 [B, C, H, W] (in the model's value range, [-clip_sample_range, clip_sample_range] when
    clipping) from pure noise: x_T ~ N(0, I), then one `denoise(x_t, t)` call and one sampler step per
    timestep. `t` is an int64 [B] tensor; `denoise` returns the prediction shaped like x_t (a torch
    module or an onnxruntime session wrapper: the loop runs on CPU tensors). Every random draw comes
    from `generator` (a CPU generator), in a fixed order. `progress(done, total)` after each step."""
    s = sampler(decl, kind, steps, eta)
    shape = tuple(int(d) for d in shape)
    x = torch.randn(shape, generator=generator, dtype=torch.float32)          # (B, C, H, W)
    total = len(s.timesteps)
    for i, t in enumerate(s.timesteps.tolist()):
        tb = torch.full((shape[0],), t, dtype=torch.int64)                    # (B,)
        out = denoise(x, tb)
        if tuple(out.shape) != shape:
            raise DiffusionError(f"the denoiser returned {list(out.shape)} for a sample of {list(shape)}: a "
                                 f"prediction must have the sample's shape")
        x, _ = s.step(out.to(device=x.device, dtype=x.dtype), t, x, generator=generator)
        if progress is not None:
            progress(i + 1, total)
    return x

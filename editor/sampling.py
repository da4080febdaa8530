"""Samplers: small pure functions with one signature (after k-diffusion's ``sampling.py``).

``sample(model, x, cond, scheduler, steps, callback)`` runs any denoiser -- the 3-pass guided teacher, a distilled
student, a Clockwork-wrapped UNet -- over a diffusers scheduler. The scheduler is copied from its config for every
call, so no step counter leaks between clips or requests.
"""
from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass
from typing import Callable, Protocol

import torch
from diffusers import DDIMScheduler, SchedulerMixin


class Denoiser(Protocol):
    passes_per_step: int

    def __call__(self, x: torch.Tensor, t: torch.Tensor, cond) -> torch.Tensor: ...


@dataclass(frozen=True)
class StepInfo:
    """What the progress callback receives after every step."""

    step: int
    steps: int
    timestep: int


def make_scheduler(config: dict, kind: type[SchedulerMixin] = DDIMScheduler) -> SchedulerMixin:
    """A fresh inference scheduler from a training scheduler config (trailing spacing: the first step starts from
    pure noise at t = T-1, which v-prediction models need)."""
    return kind.from_config(config, timestep_spacing="trailing", clip_sample=False, set_alpha_to_one=True)


def initial_noise(shape: tuple[int, ...], seed: int, frames: int) -> torch.Tensor:
    """``frames x shape`` noise, the *same* draw for every frame (MoViE section 3.1: shared noise steadies the clip)."""
    g = torch.Generator().manual_seed(int(seed))
    return torch.randn(shape, generator=g).unsqueeze(0).expand(frames, *shape).contiguous()


@torch.no_grad()
def sample(model: Denoiser, x: torch.Tensor, cond, scheduler: SchedulerMixin, steps: int,
           callback: Callable[[StepInfo], None] | None = None, autocast: torch.dtype | None = None) -> torch.Tensor:
    """Denoise ``x`` (noise) in ``steps`` steps of ``scheduler``; returns the final latents. ``autocast``
    (``torch.bfloat16``): the model runs under CPU autocast to that dtype, its output is taken back to ``x``'s
    dtype, so the scheduler's update stays in full precision (docs/DESIGN.md section 8)."""
    if steps < 1:
        raise ValueError("steps must be at least 1")
    scheduler = type(scheduler).from_config(scheduler.config)
    scheduler.set_timesteps(steps)
    x = x * scheduler.init_noise_sigma
    for i, t in enumerate(scheduler.timesteps):
        with torch.autocast(x.device.type, dtype=autocast) if autocast is not None else nullcontext():
            out = model(scheduler.scale_model_input(x, t), t.expand(x.shape[0]), cond)
        out = out.to(x.dtype)
        x = scheduler.step(out, t, x).prev_sample
        if callback is not None:
            callback(StepInfo(i, steps, int(t)))
    return x

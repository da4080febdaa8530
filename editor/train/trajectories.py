"""Sampling-trajectory states for distillation: the states the student meets when it samples, not only forward-noised
training targets.

MMG distillation (``editor.train.mmg``) builds ``x_t = add_noise(target, noise, t)``. At sampling time the denoiser
sees something else: at the first step pure noise (the training schedule leaves a signal leak of
``sqrt(abar_999) = 0.068`` times the target there; Lin et al. 2024, "Common diffusion noise schedules and sample steps
are flawed", section 3), and after it the states that the guided sampler has produced, which at ``s_T = 4`` are not
noised data. On 24 training frames at the default sliders the shipped student's MSE to the teacher's Eq. 1 is 0.051
on forward-noised states, 0.086 on the teacher's own 20-step DDIM trajectory and 0.108 on its own (0.648 against 0.130
at t = 999). This module records such trajectories once, as a bank that a distillation step can draw from; the
target at every state is still the teacher's Eq. 1 there, computed during training.

A trajectory is run by a *policy* denoiser -- the 3-pass teacher (``editor.guidance.ThreePassGuidance``) or the
student as it is before training (``editor.mmg.MMGDenoiser``; one round of DAgger, Ross et al. 2011) -- over the
family's DDIM schedule (``editor.sampling.sample``) from a training-pool source with a training wording and scales
drawn per trajectory; every state the sampler feeds the denoiser is kept with its timestep, frame, wording and scales.
"""
from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path

import torch
from tqdm.auto import tqdm

from editor.guidance import Conditioning, PerSampleGuidance
from editor.sampling import sample
from editor.train.common import uniform
from editor.train.data import same_window


class StateRecorder:
    """Wraps a denoiser and keeps every state and timestep it is called on (for DDIM, whose ``scale_model_input``
    is the identity, these are the sampler's states ``x_t``)."""

    def __init__(self, inner):
        self.inner, self.passes_per_step = inner, inner.passes_per_step
        self.states: list[torch.Tensor] = []
        self.timesteps: list[torch.Tensor] = []

    def __call__(self, x, t, c):
        self.states.append(x.detach().clone())
        self.timesteps.append(t.detach().clone())
        return self.inner(x, t, c)


@dataclass
class TrajectoryBank:
    """``M`` recorded states with what produced them (one row per state)."""

    states: torch.Tensor       # M C h w
    timesteps: torch.Tensor    # M
    frames: torch.Tensor       # M, index into the pool's sources
    families: torch.Tensor     # M
    wordings: torch.Tensor     # M, index into the instruction bank's second axis
    text_scales: torch.Tensor  # M
    image_scales: torch.Tensor  # M

    def __len__(self) -> int:
        return len(self.states)

    def sample(self, batch: int, crop: int, sources: torch.Tensor, g: torch.Generator):
        """``batch`` random rows, states and their sources cut to the same random ``crop`` window:
        ``(x_t, t, source, family, wording, s_T, s_I)``."""
        i = torch.randint(len(self), (batch,), generator=g)
        xt, source = same_window((self.states[i], sources[self.frames[i]]), crop, g)
        return xt, self.timesteps[i], source, self.families[i], self.wordings[i], self.text_scales[i], \
            self.image_scales[i]

    def save(self, path: Path, settings: dict) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save({"settings": settings, **{f.name: getattr(self, f.name) for f in fields(self)}}, path)

    @classmethod
    def load(cls, path: Path, settings: dict) -> "TrajectoryBank":
        d = torch.load(path)
        if d["settings"] != settings:
            raise ValueError(f"{path} was recorded with {d['settings']}, not {settings}; "
                             "delete it or pass another --trajectory-cache")
        return cls(**{f.name: d[f.name] for f in fields(cls)})


@torch.no_grad()
def record_bank(policies: list, sources: torch.Tensor, bank: torch.Tensor, empty: torch.Tensor, scheduler,
                n: int, steps_choices: tuple[int, ...], text_range: tuple[float, float],
                image_range: tuple[float, float], g: torch.Generator, chunk: int = 16) -> TrajectoryBank:
    """Record ``n`` trajectories, ``chunk`` at a time, the policies taking turns by chunk and each chunk drawing its
    step count from ``steps_choices``; per trajectory a random pool frame, family, wording (``bank``: ``F P L D``),
    noise and scales ``s_T ~ U[text_range]``, ``s_I ~ U[image_range]``."""
    rows: dict[str, list[torch.Tensor]] = {f.name: [] for f in fields(TrajectoryBank)}
    dev = sources.device
    for k, start in enumerate(tqdm(range(0, n, chunk), desc="recording trajectories")):
        b = min(chunk, n - start)
        frames = torch.randint(len(sources), (b,), generator=g)
        fam = torch.randint(bank.shape[0], (b,), generator=g)
        par = torch.randint(bank.shape[1], (b,), generator=g)
        s_t, s_i = uniform(*text_range, b, g), uniform(*image_range, b, g)
        steps = steps_choices[int(torch.randint(len(steps_choices), (1,), generator=g))]
        noise = torch.randn(sources[frames].shape, generator=g).to(dev)
        text = bank[fam, par].to(dev)
        cond = Conditioning(source=sources[frames], text=text, empty=empty.to(dev).expand_as(text),
                            guidance=PerSampleGuidance.of(s_t, s_i, b, noise))
        rec = StateRecorder(policies[k % len(policies)])
        sample(rec, noise, cond, scheduler, steps)
        m = len(rec.states)
        rows["states"].append(torch.cat(rec.states).cpu())
        rows["timesteps"].append(torch.cat(rec.timesteps).cpu())
        for name, v in (("frames", frames), ("families", fam), ("wordings", par), ("text_scales", s_t),
                        ("image_scales", s_i)):
            rows[name].append(v.repeat(m))
    return TrajectoryBank(**{k: torch.cat(v) for k, v in rows.items()})

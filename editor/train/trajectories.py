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

The figures above are the gap diagnostic of this module (:func:`onpolicy_gap`), on the training pool only:

    python -m editor.train.trajectories --model data/models/embedded --json data/results/onpolicy_gap_stage17.json
"""
from __future__ import annotations

import argparse
import json
from dataclasses import dataclass, fields
from pathlib import Path

import torch
from diffusers import AutoencoderTiny, UNet2DConditionModel
from tqdm.auto import tqdm

from editor.guidance import Conditioning, Guidance, PerSampleGuidance, ThreePassGuidance
from editor.mmg import MMGDenoiser
from editor.loading import family_text_encoder
from editor.sampling import make_scheduler, sample
from editor.train.common import family_folder, family_noise_scheduler, instruction_bank, load_fields, save_fields, \
    uniform
from editor.train.data import build_pool, same_window


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
        save_fields(self, path, settings)

    @classmethod
    def load(cls, path: Path, settings: dict) -> "TrajectoryBank":
        return load_fields(cls, path, settings)


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


STATE_KINDS = ("forward", "teacher_traj", "student_traj")


@torch.no_grad()
def onpolicy_gap(teacher, student, target: torch.Tensor, noise: torch.Tensor, cond: Conditioning, scheduler,
                 steps: int, progress: bool = True) -> dict:
    """The student's MSE to the teacher's Eq. 1 (MoViE section 3.4: the MMG distillation target) at every sampling
    step, on three kinds of state at that step's timestep: ``forward``, the target noised with the trajectories'
    initial ``noise`` (what the distillation trains on); ``teacher_traj``, the 3-pass teacher's own DDIM trajectory;
    ``student_traj``, the student's own. Returns ``rows`` (per step: the three MSEs and the teacher prediction's RMS
    on each kind), their ``mean`` over steps, and ``final_gap``, the MSE between the two trajectories' final latents."""
    T, S = ThreePassGuidance(teacher), MMGDenoiser(student)
    recorders = {"teacher_traj": StateRecorder(T), "student_traj": StateRecorder(S)}
    finals = [sample(r, noise, cond, scheduler, steps) for r in recorders.values()]
    add_noise = scheduler.add_noise  # the same betas as the sampler's
    rows = []
    for i, t in enumerate(tqdm(recorders["teacher_traj"].timesteps, desc="on-policy gap", disable=not progress)):
        states = {"forward": add_noise(target, noise, t), **{k: r.states[i] for k, r in recorders.items()}}
        row = {"step": i, "t": int(t[0])}
        for kind, x in states.items():
            want = T(x, t, cond)
            row[kind] = float((S(x, t, cond) - want).pow(2).mean())
            row[f"{kind}_rms"] = float(want.pow(2).mean().sqrt())
        rows.append(row)
    mean = {k: sum(r[k] for r in rows) / len(rows) for k in STATE_KINDS}
    return {"rows": rows, "mean": mean, "final_gap": float((finals[0] - finals[1]).pow(2).mean())}


def main(argv=None):
    """``python -m editor.train.trajectories``: the on-policy gap of a family's MMG student (:func:`onpolicy_gap`) on
    training-pool frames (never the evaluation clips), printed and written as JSON."""
    p = argparse.ArgumentParser(description=main.__doc__)
    p.add_argument("--model", type=Path, default=Path("data/models/embedded"),
                   help="family folder with unet/ (teacher), student_mmg/ and autoencoder/")
    p.add_argument("--json", type=Path, required=True)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--frames", type=int, default=24, help="pool frames, each with a random family and seen wording")
    p.add_argument("--text-guidance", type=float, default=4.0)
    p.add_argument("--image-guidance", type=float, default=1.5)
    p.add_argument("--seed", type=int, default=123)
    p.add_argument("--pool", type=int, default=1000, help="pool size, as the shipped recipe (card: Data recipe)")
    p.add_argument("--dark-share", type=float, default=0.5)
    p.add_argument("--pool-cache", type=Path, default=Path("runs/pool1000_dark50.pt"),
                   help="the trainers' pool cache; built (seed 100, as the trainers) when missing")
    a = p.parse_args(argv)
    family = family_folder(p, a, "unet", "student_mmg", "autoencoder", flag="model")
    teacher = UNet2DConditionModel.from_pretrained(family / "unet").eval()
    student = UNet2DConditionModel.from_pretrained(family / "student_mmg").eval()
    bank, empty = instruction_bank(family_text_encoder(family))
    pool = build_pool(AutoencoderTiny.from_pretrained(family / "autoencoder").eval(), a.pool, 100,
                      cache=a.pool_cache, dark_share=a.dark_share)
    g = torch.Generator().manual_seed(a.seed)
    n = a.frames
    idx = torch.randint(len(pool.sources), (n,), generator=g)
    fam = torch.randint(len(pool.families), (n,), generator=g)
    par = torch.randint(bank.shape[1], (n,), generator=g)
    text = bank[fam, par]
    cond = Conditioning(pool.sources[idx], text, empty.expand_as(text), Guidance(a.text_guidance, a.image_guidance))
    noise = torch.randn(cond.source.shape, generator=g)
    out = onpolicy_gap(teacher, student, pool.targets[idx, fam], noise, cond,
                       make_scheduler(family_noise_scheduler(family).config), a.steps)
    print("step     t " + "".join(f"{k:>14}" for k in STATE_KINDS))
    for r in out["rows"]:
        print(f"{r['step']:4d} {r['t']:5d} " + "".join(f"{r[k]:14.4f}" for k in STATE_KINDS))
    print("mean       " + "".join(f"{out['mean'][k]:14.4f}" for k in STATE_KINDS))
    print(f"final latents, teacher's trajectory against the student's: MSE {out['final_gap']:.4f}")
    a.json.parent.mkdir(parents=True, exist_ok=True)
    a.json.write_text(json.dumps({"settings": {k: str(v) if isinstance(v, Path) else v
                                               for k, v in vars(a).items()}, **out}, indent=1))


if __name__ == "__main__":
    main()

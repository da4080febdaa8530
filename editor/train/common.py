"""Shared training loop plumbing for every stage: accelerate, resumable checkpoints, loss logs, progress bars.

Each stage script gives a model, an optimiser, a ``loss(step, rng)`` function and a ``save(dir)`` function; this
module runs the same loop on one CPU or many GPUs (``accelerate launch``), checkpoints every ``save_every`` steps,
resumes from the last checkpoint, and appends one JSON line a log interval to ``OUT/train_log.jsonl``. It also holds
what the teacher's and the students' trainers share: the training noise schedule and the bank of training wordings.
"""
from __future__ import annotations

import argparse
import json
import math
import time
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Callable

import torch
from accelerate import Accelerator
from diffusers import DDPMScheduler
from tqdm.auto import tqdm

from editor.world import edits


@dataclass(frozen=True)
class LoopConfig:
    out: str
    steps: int
    lr: float
    warmup: int = 50
    save_every: int = 200
    log_every: int = 20
    seed: int = 0
    max_minutes: float | None = None  # stop early (and save) after this wall time; the log says so
    stop_at: int | None = None  # stop (and save) after this many steps, keeping the schedule of `steps`

    def __post_init__(self):
        if self.steps <= 0 or self.lr <= 0:
            raise ValueError("steps and lr must be positive")


def add_args(p: argparse.ArgumentParser, *, out: str, export_help: str, steps: int, batch: int, lr: float,
             pool: int = 600) -> None:
    """The options every latent-diffusion training stage shares."""
    p.add_argument("--out", default=out, help="checkpoints, pool cache and train_log.jsonl")
    p.add_argument("--export", default="data/models/embedded", help=export_help)
    p.add_argument("--steps", type=int, default=steps)
    p.add_argument("--batch", type=int, default=batch)
    p.add_argument("--crop", type=int, default=16, help="latent window side for most steps")
    p.add_argument("--full-every", type=int, default=4, help="every n-th step uses whole frames (batch / 4)")
    p.add_argument("--lr", type=float, default=lr)
    p.add_argument("--pool", type=int, default=pool, help="training frames in the latent pool")
    p.add_argument("--pool-cache", type=Path, default=None,
                   help="latent pool cache file (default OUT/pool.pt; e.g. reuse runs/teacher/pool.pt)")
    p.add_argument("--dark-share", type=float, default=0.0,
                   help="share of pool frames under-exposed (scenes.training_frames), so edits also work on dark footage")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-minutes", type=float, default=None)
    p.add_argument("--stop-at", type=int, default=None, help="stop after this step (the LR schedule still spans --steps)")


def family_folder(p: argparse.ArgumentParser, a: argparse.Namespace, *parts: str, flag: str = "export") -> Path:
    """``--export`` (or the option ``flag`` names) as a Path, after checking that it holds these parts of a model
    family (``unet``, ``autoencoder``, ...): a usage error naming what is missing, at once, instead of diffusers'
    hub-lookup traceback."""
    export = Path(getattr(a, flag))
    missing = [q for q in parts if not (export / q / "config.json").exists()]
    if missing:
        hint = f"copy the shipped one first, e.g. cp -r data/models/embedded {export}" if flag == "export" \
            else "such as data/models/embedded"
        p.error(f"--{flag} {export}: no {', '.join(q + '/' for q in missing)} there; it must be a model family folder "
                f"({hint})")
    return export


def uniform(lo: float, hi: float, n: int, g: torch.Generator) -> torch.Tensor:
    """``n`` draws from ``U[lo, hi]`` (per-sample guidance scales)."""
    return lo + (hi - lo) * torch.rand(n, generator=g)


def loop_config(a: argparse.Namespace, **kw) -> "LoopConfig":
    """A LoopConfig from the shared options."""
    return LoopConfig(out=a.out, steps=a.steps, lr=a.lr, seed=a.seed, max_minutes=a.max_minutes, stop_at=a.stop_at,
                      **kw)


def cosine_lr(cfg: LoopConfig) -> Callable[[int], float]:
    """Linear warm-up then cosine decay to 10%, as a LambdaLR factor."""
    def f(step: int) -> float:
        if step < cfg.warmup:
            return (step + 1) / cfg.warmup
        p = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, p)))
    return f


def _state_dir(cfg: LoopConfig) -> Path:
    return Path(cfg.out) / "checkpoint"


def _load_step(cfg: LoopConfig) -> int:
    f = _state_dir(cfg) / "step.json"
    return json.loads(f.read_text())["step"] if f.exists() else 0


def run_loop(cfg: LoopConfig, model: torch.nn.Module, params, loss_fn: Callable[[int], dict],
             save_fn: Callable[[torch.nn.Module, Path], None]) -> int:
    """Train ``model`` for ``cfg.steps`` steps of ``loss_fn(step) -> {'loss': tensor, ...}``; returns the last step.

    Resumes from ``OUT/checkpoint`` when present; saves there and calls ``save_fn`` every ``save_every`` steps.
    """
    acc = Accelerator()
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, cosine_lr(cfg))
    model, opt, sched = acc.prepare(model, opt, sched)
    start = _load_step(cfg)
    if start:
        acc.load_state(str(_state_dir(cfg)))
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    log = open(out / "train_log.jsonl", "a")
    t0, bar = time.time(), tqdm(range(start, cfg.steps), initial=start, total=cfg.steps, disable=not acc.is_main_process)
    step = start
    for step in bar:
        terms = loss_fn(step)
        acc.backward(terms["loss"])
        acc.clip_grad_norm_(model.parameters(), 1.0)
        opt.step(); sched.step(); opt.zero_grad(set_to_none=True)
        timed_out = (cfg.max_minutes is not None and (time.time() - t0) / 60 > cfg.max_minutes) or \
            (cfg.stop_at is not None and step + 1 >= cfg.stop_at)
        if step % cfg.log_every == 0 or step == cfg.steps - 1:
            row = {"step": step, "lr": sched.get_last_lr()[0], "sec": round(time.time() - t0, 1)}
            row.update({k: float(torch.as_tensor(v).detach()) for k, v in terms.items()})
            log.write(json.dumps(row) + "\n"); log.flush()
            bar.set_postfix(loss=f"{row['loss']:.4f}")
        if (step + 1) % cfg.save_every == 0 or step == cfg.steps - 1 or timed_out:
            _checkpoint(acc, cfg, model, step + 1, save_fn)
        if timed_out:
            log.write(json.dumps({"step": step, "stopped": f"max_minutes={cfg.max_minutes}, stop_at={cfg.stop_at}"})
                      + "\n")
            break
    log.close()
    return step + 1


def _checkpoint(acc: Accelerator, cfg: LoopConfig, model, step: int, save_fn) -> None:
    acc.wait_for_everyone()
    if not acc.is_main_process:
        return
    acc.save_state(str(_state_dir(cfg)))
    (_state_dir(cfg) / "step.json").write_text(json.dumps({"step": step}))
    save_fn(acc.unwrap_model(model), Path(cfg.out))


# ----------------------------------------------------------------------------- noise schedule and training wordings

def noise_scheduler(prediction_type: str = "v_prediction", zero_snr: bool = False) -> DDPMScheduler:
    """The training noise schedule (Stable Diffusion's scaled-linear betas, 1000 steps). ``zero_snr`` rescales the
    betas to zero terminal SNR (Lin et al. 2024, "Common diffusion noise schedules and sample steps are flawed",
    Alg. 1): the scaled-linear schedule keeps sqrt(abar_999) = 0.068 of the clean latent at t = 999, so training
    lets the first step read each latent channel's mean off the noisy input, which pure noise at sampling lacks."""
    return DDPMScheduler(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                         prediction_type=prediction_type, clip_sample=False, rescale_betas_zero_snr=zero_snr)


def family_noise_scheduler(folder: Path) -> DDPMScheduler:
    """The noise schedule a family's teacher was trained with (its ``scheduler/``, written by
    ``editor.train.teacher``), which the student's and the adaptors' trainers must share; the default schedule for a
    family without one."""
    folder = Path(folder) / "scheduler"
    return DDPMScheduler.from_pretrained(folder) if (folder / "scheduler_config.json").exists() else noise_scheduler()


def instruction_bank(text_encoder, templated: bool = False, extra: dict | None = None
                     ) -> tuple[torch.Tensor, torch.Tensor]:
    """States of every training wording, ``F P L D``, and of the empty instruction, ``L D``: per family the seen
    paraphrases, with ``templated`` the templated ones (``editor.world.edits.training_instructions``), then
    ``extra[family]`` (e.g. ``data/instructions/training_wordings.json``; the same count for every family)."""
    fams = list(edits.FAMILIES.values())
    per = [edits.training_instructions(f, templated) + tuple((extra or {}).get(f.id, ())) for f in fams]
    if len({len(w) for w in per}) != 1:
        raise ValueError(f"every family needs the same number of training wordings, got {[len(w) for w in per]}")
    states = text_encoder([p for w in per for p in w])
    return states.view(len(fams), -1, *states.shape[1:]), text_encoder([""])[0]


def add_wording_args(p: argparse.ArgumentParser) -> None:
    """The training-wording flags that the teacher and student trainers share (read by ``wording_bank``)."""
    p.add_argument("--templated-instructions", action="store_true",
                   help="train on the templated wordings too (editor.world.edits.TRAINING_TEMPLATES), not only the 4 "
                        "seen paraphrases of each family")
    p.add_argument("--extra-wordings", type=Path, default=None,
                   help="JSON of more training wordings per family (e.g. data/instructions/training_wordings.json)")


def wording_bank(p: argparse.ArgumentParser, a: argparse.Namespace, text_encoder):
    """``instruction_bank`` for the wording flags of ``add_wording_args``; a bad wordings file is a usage error, raised
    before any data is built."""
    try:
        return instruction_bank(text_encoder, a.templated_instructions, load_wordings(a.extra_wordings))
    except (OSError, ValueError) as e:
        p.error(f"--extra-wordings: {e}")


def load_wordings(path: Path | None) -> dict | None:
    """``--extra-wordings FILE``: a JSON object of family id -> list of instructions (keys starting with ``_`` are
    notes); every family of ``editor.world.edits`` must be there."""
    if path is None:
        return None
    data = {k: v for k, v in json.loads(Path(path).read_text()).items() if not k.startswith("_")}
    missing = set(edits.FAMILIES) - set(data)
    if missing or set(data) - set(edits.FAMILIES):
        raise ValueError(f"{path}: families missing {sorted(missing)}, unknown {sorted(set(data) - set(edits.FAMILIES))}")
    return {k: tuple(v) for k, v in data.items()}


def save_fields(obj, path: Path, settings: dict) -> None:
    """Save a dataclass of tensors (a recorded bank) with the settings that produced it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"settings": settings, **{f.name: getattr(obj, f.name) for f in fields(obj)}}, path)


def load_fields(cls, path: Path, settings: dict):
    """A dataclass saved by :func:`save_fields`; refused when it was recorded with other settings."""
    d = torch.load(path)
    if d["settings"] != settings:
        raise ValueError(f"{path} was recorded with {d['settings']}, not {settings}; delete it or pass another cache")
    return cls(**{f.name: d[f.name] for f in fields(cls)})

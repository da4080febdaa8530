"""Multimodal guidance distillation of the embedded teacher (MMG; MoViE section 3.4): a one-pass student.

The student (``editor.mmg.student_from_teacher``: the teacher's UNet plus a zero-initialised guidance-embedding
projection) learns, by plain MSE, to match in ONE pass the teacher's 3-pass guided prediction (MoViE Eq. 1, computed
without gradients) on the same noisy input, for per-sample scales ``s_T ~ U[2, 14]``, ``s_I ~ U[1, 3]``:

    x_t = add_noise(target latent, noise, t),  t ~ U{0..999}
    loss = || student(x_t, t, source, instruction, emb(s_T, s_I)) - Eq.1(teacher; x_t, t, source, instruction) ||^2

Data: the teacher's latent pool (``editor.train.data.build_pool``, same seed rule as ``editor.train.teacher``; pass
``--pool-cache runs/teacher/pool.pt`` to reuse the teacher's cached pool) with the *seen* paraphrases, no conditioning
dropout (the teacher's three branches already supply the unconditional directions). Most steps use random
``--crop`` latent windows, every ``--full-every``-th step full frames at a quarter of the batch, as for the teacher.
With ``--trajectory-share P`` a share P of the steps is distilled instead on states recorded from sampling
trajectories of the teacher and of the starting student (``editor.train.trajectories``): pure noise at t = 999 and
the guided sampler's own states after it, where the forward-noised states alone leave the student furthest from the
teacher.

Reads ``EXPORT/unet`` (teacher) and ``EXPORT/autoencoder``; writes ``EXPORT/student_mmg`` (``save_pretrained``, with
``training.json``), which ``editor.loading.load_family`` picks up as ``family.extras["student_mmg"]``.
Resumable: rerun the same command (``OUT/checkpoint``).

    python -m editor.train.mmg --out runs/mmg --export data/models/embedded
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from diffusers import AutoencoderTiny, UNet2DConditionModel

from editor.guidance import ThreePassGuidance
from editor.loading import family_text_encoder
from editor.mmg import EMBED_DIM, TRAIN_IMAGE_RANGE, TRAIN_TEXT_RANGE, MMGDenoiser, guidance_embedding, mmg_targets, \
    rebase_student, student_from_teacher
from editor.sampling import make_scheduler
from editor.train.common import (add_args, add_wording_args, family_folder, family_noise_scheduler, loop_config,
                                 run_loop, uniform, wording_bank)
from editor.train.data import pool_from_args
from editor.train.trajectories import TrajectoryBank, record_bank

STUDENT_DIR = "student_mmg"


def mmg_loss(student, teacher, sched, x0, source, text, empty, s_t, s_i, g, weighting: str = "none",
             image_pair_weight: float = 0.0) -> dict:
    """MSE between the student's one-pass prediction and the teacher's guided prediction on the same ``x_t``.

    ``weighting="inverse-square"`` divides each sample's MSE by ``(s_T / 2)^2``: Eq. 1 scales the text direction by
    ``s_T``, so under plain MSE with ``s_T ~ U[2, 14]`` the samples below ``s_T = 4`` -- where the default sliders
    sit -- carry about 2% of the loss. The weighting gives every scale the same relative error budget.

    ``image_pair_weight > 0`` adds the s_I pair term: every sample is also predicted at ``s_I + 1`` (so draw ``s_i``
    from ``U[1, 2]``; the pair covers ``U[1, 3]``), and the student's change between the two, ``S(s_I + 1) - S(s_I)``,
    is regressed on the teacher's, which by Eq. 1 is exactly ``e(x, c_I, 0) - e(x, 0, 0)``, the image direction. That
    direction is small next to the whole prediction, so under the plain MSE the student learns s_I last and least
    (its s_I response spans 2.5 dB against the teacher's 4.0 and even flips sign on some clips)."""
    t = torch.randint(0, sched.config.num_train_timesteps, (x0.shape[0],), generator=g)
    noise = torch.randn(x0.shape, generator=g)
    return mmg_loss_at(student, teacher, sched.add_noise(x0, noise, t), t, source, text, empty, s_t, s_i, weighting,
                       image_pair_weight)


def mmg_loss_at(student, teacher, xt, t, source, text, empty, s_t, s_i, weighting: str = "none",
                image_pair_weight: float = 0.0) -> dict:
    """:func:`mmg_loss` on given states ``x_t`` at timesteps ``t`` (e.g. from a trajectory bank,
    ``editor.train.trajectories``)."""
    dev = student.device
    xt, t, source, text, empty = (v.to(dev) for v in (xt, t, source, text, empty))
    s_t, s_i = s_t.to(dev), s_i.to(dev)
    pairs = [(s_t, s_i)] + ([(s_t, s_i + 1.0)] if image_pair_weight > 0 else [])
    targets = mmg_targets(teacher, xt, t, source, text, empty, pairs)
    k = len(pairs)
    emb = torch.cat([guidance_embedding(st, si, student.config.time_cond_proj_dim) for st, si in pairs])
    preds = student(torch.cat([xt, source], 1).repeat(k, 1, 1, 1), t.repeat(k), text.repeat(k, 1, 1),
                    timestep_cond=emb.to(dev, xt.dtype)).sample.chunk(k)
    per_sample = torch.stack([(p - q).pow(2).mean(dim=(1, 2, 3)) for p, q in zip(preds, targets)]).mean(0)
    w = (2.0 / s_t).pow(2) if weighting == "inverse-square" else torch.ones_like(s_t)
    terms = {"loss": (w * per_sample).mean(), "mse": per_sample.mean().detach(),
             "target_rms": targets[0].pow(2).mean().sqrt().detach()}
    if k == 2:
        pair = ((preds[1] - preds[0]) - (targets[1] - targets[0])).pow(2).mean()
        terms["loss"] = terms["loss"] + image_pair_weight * pair
        terms["image_pair_mse"] = pair.detach()
        terms["image_dir_rms"] = (targets[1] - targets[0]).pow(2).mean().sqrt()
    return terms


POLICIES = {"teacher": ("teacher",), "student": ("student",), "both": ("teacher", "student")}


def wording_states(bank: torch.Tensor, fam: torch.Tensor, par: torch.Tensor, mix: float,
                   g: torch.Generator) -> torch.Tensor:
    """The instruction states of a batch, ``bank[fam, par]``. With ``mix`` > 0 that share of the samples instead gets
    ``w * bank[fam, par] + (1 - w) * bank[fam, other]``, ``other`` another training wording of the same family and
    ``w ~ U[0, 1]``: states between the wordings, which no training wording has. Distillation needs no ground truth --
    the target is the teacher's Eq. 1 at whatever states it is given -- so the student is fitted to how the teacher
    responds around its training wordings, not only at them (the held-out paraphrases are never used)."""
    states = bank[fam, par]
    if mix <= 0:  # draws nothing, so runs without the flag reproduce
        return states
    other = bank[fam, torch.randint(bank.shape[1], par.shape, generator=g)]
    shape = (len(par),) + (1,) * (states.dim() - 1)
    w = torch.rand(len(par), generator=g).view(shape)
    on = (torch.rand(len(par), generator=g) < mix).view(shape)
    return torch.where(on, w * states + (1 - w) * other, states)


def trajectory_bank(a: argparse.Namespace, teacher, student, pool, bank, empty, noise_schedule) -> TrajectoryBank:
    """The bank of sampling states for ``--trajectory-share``: loaded from ``--trajectory-cache`` (default
    ``OUT/trajectories.pt``) when recorded with the same settings, recorded and saved otherwise. Scales are drawn as
    the distillation draws them, so the pair term's ``s_I + 1`` stays in range; sampled with DDIM over
    ``noise_schedule``, the family's training betas."""
    lo, hi = TRAIN_IMAGE_RANGE
    text_range = a.trajectory_text_range or a.text_range
    settings = {"policy": a.trajectory_policy, "n": a.trajectories, "steps": list(a.trajectory_steps),
                "text_range": list(text_range), "image_range": [lo, hi - 1.0 if a.image_pair_weight > 0 else hi],
                "seed": a.seed, "pool": a.pool, "dark_share": a.dark_share, "teacher": str(Path(a.export) / "unet"),
                "student": str(a.init_from), "rebase_from": str(a.rebase_from)}
    cache = a.trajectory_cache or Path(a.out) / "trajectories.pt"
    if cache.exists():
        return TrajectoryBank.load(cache, settings)
    was_training = student.training
    policy = {"teacher": ThreePassGuidance(teacher), "student": MMGDenoiser(student.eval())}
    out = record_bank([policy[k] for k in POLICIES[a.trajectory_policy]], pool.sources, bank, empty,
                      make_scheduler(noise_schedule.config), a.trajectories, tuple(a.trajectory_steps),
                      tuple(text_range), tuple(settings["image_range"]), torch.Generator().manual_seed(a.seed + 200))
    student.train(was_training)
    out.save(cache, settings)
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_args(p, out="runs/mmg", export_help="family folder: reads unet/ (teacher) and autoencoder/, writes student_mmg/",
             steps=1500, batch=32, lr=2e-4)
    p.add_argument("--embed-dim", type=int, default=EMBED_DIM)
    p.add_argument("--init-from", type=Path, default=None,
                   help="continue from these student weights (e.g. the shipped student_mmg/) with a fresh optimiser")
    p.add_argument("--rebase-from", type=Path, default=None,
                   help="the teacher UNet that --init-from was distilled from: start from init + (teacher - this), "
                        "editor.mmg.rebase_student, when the teacher has been trained further since")
    p.add_argument("--text-range", type=float, nargs=2, default=TRAIN_TEXT_RANGE, metavar=("LO", "HI"),
                   help="s_T ~ U[LO, HI] (default 2 14, MoViE's)")
    p.add_argument("--weighting", choices=("none", "inverse-square"), default="none",
                   help="per-sample loss weight over s_T (see mmg_loss)")
    p.add_argument("--image-pair-weight", type=float, default=0.0,
                   help="weight of the s_I pair term (see mmg_loss); > 0 draws s_I ~ U[1, 2] and pairs it with s_I + 1")
    add_wording_args(p)
    p.add_argument("--wording-mix", type=float, default=0.0,
                   help="share of samples whose instruction states mix two training wordings of the family "
                        "(see wording_states)")
    p.add_argument("--trajectory-share", type=float, default=0.0,
                   help="share of steps distilled on recorded sampling-trajectory states instead of forward-noised "
                        "targets (editor.train.trajectories)")
    p.add_argument("--trajectories", type=int, default=512, help="trajectories in the bank")
    p.add_argument("--trajectory-policy", choices=sorted(POLICIES), default="both",
                   help="who samples the recorded trajectories: the teacher, the student as it starts, or both in turn")
    p.add_argument("--trajectory-steps", type=int, nargs="+", default=[20, 8],
                   help="sampling step counts the trajectories draw from")
    p.add_argument("--trajectory-text-range", type=float, nargs=2, default=None, metavar=("LO", "HI"),
                   help="s_T range the bank's trajectories are sampled at (default --text-range); the forward-noised "
                        "steps keep --text-range")
    p.add_argument("--trajectory-cache", type=Path, default=None,
                   help="trajectory bank cache (default OUT/trajectories.pt)")
    a = p.parse_args(argv)
    if a.rebase_from and not a.init_from:
        p.error("--rebase-from needs --init-from (the student to move onto the new teacher)")
    for name in ("trajectory_share", "wording_mix"):
        if not 0.0 <= getattr(a, name) <= 1.0:
            p.error(f"--{name.replace('_', '-')} must be in [0, 1]")
    if a.trajectory_text_range and not 0.0 <= a.trajectory_text_range[0] <= a.trajectory_text_range[1]:
        p.error("--trajectory-text-range needs 0 <= LO <= HI")
    torch.manual_seed(a.seed)
    export = family_folder(p, a, "unet", "autoencoder")
    bank, empty = wording_bank(p, a, family_text_encoder(export))  # before the pool (minutes)
    teacher = UNet2DConditionModel.from_pretrained(export / "unet").eval().requires_grad_(False)
    ae = AutoencoderTiny.from_pretrained(export / "autoencoder").eval()
    pool = pool_from_args(ae, a)
    student = UNet2DConditionModel.from_pretrained(a.init_from).train() if a.init_from \
        else student_from_teacher(teacher, a.embed_dim).train()
    if a.rebase_from:
        rebase_student(student, UNet2DConditionModel.from_pretrained(a.rebase_from), teacher)
    sched = family_noise_scheduler(export)  # the teacher's betas (only add_noise is used)
    g = torch.Generator().manual_seed(a.seed)
    trajectories = trajectory_bank(a, teacher, student, pool, bank, empty, sched) if a.trajectory_share > 0 else None

    def loss_fn(step):
        if teacher.device != student.device:  # accelerate moved the student
            teacher.to(student.device)
        if trajectories is not None and float(torch.rand(1, generator=g)) < a.trajectory_share:
            full = (step % a.full_every) == a.full_every - 1
            xt, t, source, fam, par, s_t, s_i = trajectories.sample(
                max(1, a.batch // 4) if full else a.batch, pool.sources.shape[-1] if full else a.crop, pool.sources, g)
            terms = mmg_loss_at(student, teacher, xt, t, source, wording_states(bank, fam, par, a.wording_mix, g),
                                empty, s_t, s_i, a.weighting, a.image_pair_weight)
            return {**terms, "on_trajectory": torch.tensor(1.0)}  # marks these rows in train_log.jsonl
        source, x0, fam, par = pool.sample(step, a.batch, a.crop, a.full_every, bank.shape[1], g)
        b = len(source)
        s_t = uniform(*a.text_range, b, g)
        lo, hi = TRAIN_IMAGE_RANGE
        s_i = uniform(lo, hi - 1.0, b, g) if a.image_pair_weight > 0 else uniform(lo, hi, b, g)
        return mmg_loss(student, teacher, sched, x0, source, wording_states(bank, fam, par, a.wording_mix, g), empty,
                        s_t, s_i, g, a.weighting, a.image_pair_weight)

    def save_fn(model, out: Path):
        model.save_pretrained(export / STUDENT_DIR)
        (export / STUDENT_DIR / "training.json").write_text(json.dumps(
            {"method": "MMG (MoViE section 3.4)", "args": vars(a), "text_range": list(a.text_range),
             "image_range": list(TRAIN_IMAGE_RANGE), "families": list(pool.families)}, indent=1, default=str))

    run_loop(loop_config(a, warmup=100, save_every=100), student, student.parameters(), loss_fn, save_fn)


if __name__ == "__main__":
    main()

"""Adversarial distillation of the MMG student to one step (MoViE section 3.5; ``editor.onestep``).

1. **Real samples, recorded once** (:func:`record_samples`): the MMG student (``student_mmg/``) run for
   ``--bank-steps`` DDIM steps from noise, on training-pool sources (never the evaluation clips) with seen wordings,
   at scales drawn over the *whole* sliders, ``s_T ~ U[1, 14]``, ``s_I ~ U[1, 3]``. The MMG student rather than the
   3-pass teacher: MoViE distils its MMG model, the bank costs a third, and on the 52-task sweep its per-task slider
   response is the more monotone one (Spearman 0.82 / 0.82 against the teacher's 0.53 / 0.63), which is what the
   one-step student must inherit.
2. **The student** (initialised from ``student_mmg/``) predicts ``x0`` in one pass from the bank sample's own noise
   (``t = 999``), or, for a share of the batch, from that sample noised to another timestep of the 2- and 4-step
   schedules (``editor.onestep.STUDENT_TIMESTEPS``).
3. **The discriminator**: the frozen teacher's down path and mid block plus trainable heads conditioned on ``t'``,
   the instruction and (unless ``--unconditioned-heads``, MoViE's ablation) ``(s_T, s_I)``; real and fake re-noised
   with the same noise at a logit-normal ``t'``. Hinge loss with R1 on real inputs every ``--r1-every`` steps (lazy
   regularisation, Karras et al. 2020).
4. **Losses**: ``l_mse * ||x0_hat - x0_bank||^2 + l_gen * hinge_g`` for the student, plus, with ``--target-weight``,
   an MSE to the exact target latent of the edit world (beyond the paper; kept only if held-out accuracy rises).
   The student and the heads are updated together from one backward pass: the student's adversarial term reads
   the heads through detached weights and the heads' term reads the fake through detached features, so neither
   gradient reaches the other.

Reads ``EXPORT/unet`` (teacher, the feature extractor), ``EXPORT/student_mmg`` and ``EXPORT/autoencoder``; writes
``EXPORT/student_onestep`` (``save_pretrained`` + ``training.json``), which the loader picks up as the ``onestep``
variant. Resumable (``OUT/checkpoint``); ``--stop-at`` and ``--max-minutes`` stop early and save.

    python -m editor.train.adversarial --out runs/onestep --export runs/fam_onestep
"""
from __future__ import annotations

import argparse
import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import torch
from diffusers import AutoencoderTiny, UNet2DConditionModel
from tqdm.auto import tqdm

from editor.guidance import IMAGE_RANGE, TEXT_RANGE, Conditioning, PerSampleGuidance
from editor.loading import family_text_encoder
from editor.mmg import MMGDenoiser
from editor.onestep import STUDENT_TIMESTEPS, Discriminator, DiscriminatorHeads, hinge_d_loss, hinge_g_loss, \
    level_channels, predict_x0, r1_penalty, renoise_timesteps
from editor.sampling import make_scheduler, sample
from editor.train.common import add_args, family_folder, family_noise_scheduler, instruction_bank, load_fields, \
    loop_config, run_loop, save_fields, uniform
from editor.train.data import pool_from_args, same_window

STUDENT_DIR = "student_onestep"


@dataclass
class SampleBank:
    """``N`` samples of the multi-step model with what produced them (one row per sample)."""

    noise: torch.Tensor         # N C h w, the initial noise
    x0: torch.Tensor            # N C h w, the sampled latent
    frames: torch.Tensor        # N, index into the pool's sources
    families: torch.Tensor      # N
    wordings: torch.Tensor      # N, index into the instruction bank's second axis
    text_scales: torch.Tensor   # N
    image_scales: torch.Tensor  # N

    def __len__(self) -> int:
        return len(self.x0)

    def batch(self, step: int, a: argparse.Namespace, pool, bank: torch.Tensor, g: torch.Generator) -> "Batch":
        """A training batch, as the pool's: random ``--crop`` windows (the same window of the noise, the sample, the
        source and the exact target), every ``--full-every``-th step whole frames at a quarter of the batch."""
        full = (step % a.full_every) == a.full_every - 1
        i = torch.randint(len(self), (max(1, a.batch // 4) if full else a.batch,), generator=g)
        fam = self.families[i]
        frames = self.frames[i]
        size = self.x0.shape[-1] if full else a.crop
        noise, x0, source, target = same_window(
            (self.noise[i], self.x0[i], pool.sources[frames], pool.targets[frames, fam]), size, g)
        return Batch(noise, x0, source, target, bank[fam, self.wordings[i]], self.text_scales[i], self.image_scales[i])


@dataclass
class Batch:
    noise: torch.Tensor    # B C h w
    x0: torch.Tensor       # B C h w, the bank's sample ("real")
    source: torch.Tensor   # B C h w
    target: torch.Tensor   # B C h w, the exact edit's latent
    text: torch.Tensor     # B L D
    s_t: torch.Tensor      # B
    s_i: torch.Tensor      # B

    def __len__(self) -> int:
        return len(self.x0)


@torch.no_grad()
def record_samples(policy, sources: torch.Tensor, bank: torch.Tensor, empty: torch.Tensor, scheduler, n: int, steps: int,
                   g: torch.Generator, chunk: int = 32) -> SampleBank:
    """``n`` samples of ``policy`` (a one-pass denoiser, e.g. ``MMGDenoiser``) in ``steps`` DDIM steps, ``chunk`` at a
    time; per sample a random pool frame, family, wording (``bank``: ``F P L D``; ``empty``: ``L D``), noise and scales over the whole
    sliders."""
    rows: dict[str, list[torch.Tensor]] = {f.name: [] for f in fields(SampleBank)}
    for start in tqdm(range(0, n, chunk), desc="recording the sample bank"):
        b = min(chunk, n - start)
        frames = torch.randint(len(sources), (b,), generator=g)
        fam = torch.randint(bank.shape[0], (b,), generator=g)
        par = torch.randint(bank.shape[1], (b,), generator=g)
        s_t, s_i = uniform(*TEXT_RANGE, b, g), uniform(*IMAGE_RANGE, b, g)
        noise = torch.randn(sources[frames].shape, generator=g)
        text = bank[fam, par]
        cond = Conditioning(source=sources[frames], text=text, empty=empty.expand_as(text),
                            guidance=PerSampleGuidance.of(s_t, s_i, b, noise))
        x0 = sample(policy, noise, cond, scheduler, steps)
        for name, v in (("noise", noise), ("x0", x0), ("frames", frames), ("families", fam), ("wordings", par),
                        ("text_scales", s_t), ("image_scales", s_i)):
            rows[name].append(v)
    return SampleBank(**{k: torch.cat(v) for k, v in rows.items()})


def sample_bank(a: argparse.Namespace, export: Path, pool, bank: torch.Tensor, empty: torch.Tensor,
                noise_schedule) -> SampleBank:
    """The bank named by ``--bank-cache`` (default ``OUT/bank.pt``), recorded and saved when missing."""
    settings = {"n": a.bank_size, "steps": a.bank_steps, "seed": a.seed, "pool": a.pool, "dark_share": a.dark_share,
                "policy": "student_mmg", "text_range": list(TEXT_RANGE), "image_range": list(IMAGE_RANGE)}
    cache = a.bank_cache or Path(a.out) / "bank.pt"
    if cache.exists():
        return load_fields(SampleBank, cache, settings)
    mmg = UNet2DConditionModel.from_pretrained(export / "student_mmg").eval()
    out = record_samples(MMGDenoiser(mmg), pool.sources, bank, empty, make_scheduler(noise_schedule.config), a.bank_size,
                         a.bank_steps, torch.Generator().manual_seed(a.seed + 300))
    save_fields(out, cache, settings)
    return out


class StudentAndHeads(torch.nn.Module):
    """The two trained parts in one module, so the shared loop (``editor.train.common.run_loop``) checkpoints and
    resumes both with one optimiser (two parameter groups)."""

    def __init__(self, student: UNet2DConditionModel, heads: DiscriminatorHeads):
        super().__init__()
        self.student, self.heads = student, heads


@dataclass(frozen=True)
class LossWeights:
    mse: float = 1.0        # l_mse: distillation to the bank sample
    gen: float = 0.05       # l_gen: the student's adversarial term
    r1: float = 0.1         # R1 weight (per R1 step, times r1_every)
    r1_every: int = 4
    target: float = 0.0     # MSE to the exact edit target (beyond the paper)
    share_999: float = 0.5  # share of the batch at t = 999 (pure noise: the one-step case)


def student_inputs(b: Batch, sched, share_999: float, g: torch.Generator):
    """Timesteps and noisy inputs of the student: the sample's own noise at ``t = 999``, or the sample noised with it
    to one of the other 2- and 4-step timesteps."""
    n = len(b)
    others = torch.tensor(STUDENT_TIMESTEPS[1:])
    t = torch.where(torch.rand(n, generator=g) < share_999, torch.full((n,), STUDENT_TIMESTEPS[0]),
                    others[torch.randint(len(others), (n,), generator=g)])
    x_t = torch.where((t == STUDENT_TIMESTEPS[0]).view(n, 1, 1, 1), b.noise, sched.add_noise(b.x0, b.noise, t))
    return x_t, t


def adversarial_loss(student, disc: Discriminator, b: Batch, sched, w: LossWeights, step: int,
                     g: torch.Generator) -> dict:
    """One step's loss terms (see the module docstring); ``loss`` is their sum."""
    x_t, t = student_inputs(b, sched, w.share_999, g)
    x0_hat = predict_x0(student, x_t, t, b.source, b.text, b.s_t, b.s_i, sched)
    mse = (x0_hat - b.x0).pow(2).mean()
    t_re = renoise_timesteps(len(b), g)
    noise = torch.randn(b.x0.shape, generator=g)
    feats_fake = disc.features(disc.renoise(x0_hat, noise, t_re), t_re, b.source, b.text)
    frozen = {k: v.detach() for k, v in disc.heads.named_parameters()}
    g_adv = hinge_g_loss(disc.logits(feats_fake, t_re, b.text, b.s_t, b.s_i, params=frozen))
    r1_step = w.r1 > 0 and step % w.r1_every == 0
    real_in = disc.renoise(b.x0, noise, t_re).requires_grad_(r1_step)
    with torch.set_grad_enabled(r1_step):
        feats_real = disc.features(real_in, t_re, b.source, b.text, double_backward=r1_step)
    d_real = disc.logits(feats_real, t_re, b.text, b.s_t, b.s_i)
    d_fake = disc.logits([f.detach() for f in feats_fake], t_re, b.text, b.s_t, b.s_i)
    d_loss = hinge_d_loss(d_real, d_fake)
    terms = {"mse": mse.detach(), "g_adv": g_adv.detach(), "d_loss": d_loss.detach(),
             "d_real": d_real.mean().detach(), "d_fake": d_fake.mean().detach()}
    loss = w.mse * mse + w.gen * g_adv + d_loss
    if r1_step:
        r1 = r1_penalty(d_real, real_in)
        loss = loss + w.r1 * w.r1_every * r1
        terms["r1"] = r1.detach()
    if w.target > 0:
        exact = (x0_hat - b.target).pow(2).mean()
        loss = loss + w.target * exact
        terms["target_mse"] = exact.detach()
    return {"loss": loss, **terms}


def parse_args(argv=None) -> tuple[argparse.ArgumentParser, argparse.Namespace]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_args(p, out="runs/onestep", steps=600, batch=16, lr=5e-5, pool=1000,
             export_help="family folder: reads unet/, student_mmg/ and autoencoder/, writes student_onestep/")
    p.add_argument("--init-from", type=Path, default=None, help="student weights to start from (default "
                   "EXPORT/student_mmg; e.g. a student_onestep/ to continue with a fresh optimiser)")
    p.add_argument("--bank-size", type=int, default=1024, help="samples of the MMG student in the real bank")
    p.add_argument("--bank-steps", type=int, default=8,
                   help="DDIM steps of each bank sample (the MMG student's accuracy is the same at 8 and 20)")
    p.add_argument("--bank-cache", type=Path, default=None, help="bank cache file (default OUT/bank.pt)")
    p.add_argument("--unconditioned-heads", action="store_true",
                   help="heads not conditioned on (s_T, s_I) (MoViE's ablation)")
    p.add_argument("--d-lr-mult", type=float, default=2.0, help="the heads' learning rate over the student's")
    for f in fields(LossWeights):
        p.add_argument(f"--{f.name.replace('_', '-')}" + ("-weight" if f.name in ("mse", "gen", "target") else ""),
                       dest=f.name, type=type(f.default), default=f.default)
    a = p.parse_args(argv)
    if a.bank_size < a.batch or a.bank_steps < 1:
        p.error("--bank-size must be at least --batch, and --bank-steps at least 1")
    if a.r1_every < 1 or not 0 <= a.share_999 <= 1:
        p.error("--r1-every must be >= 1 and --share-999 in [0, 1]")
    return p, a


def main(argv=None):
    p, a = parse_args(argv)
    torch.manual_seed(a.seed)
    export = family_folder(p, a, "unet", "student_mmg", "autoencoder")
    bank, empty = instruction_bank(family_text_encoder(export))
    pool = pool_from_args(AutoencoderTiny.from_pretrained(export / "autoencoder").eval(), a)
    sched = family_noise_scheduler(export)
    samples = sample_bank(a, export, pool, bank, empty, sched)
    teacher = UNet2DConditionModel.from_pretrained(export / "unet").eval().requires_grad_(False)
    student = UNet2DConditionModel.from_pretrained(a.init_from or export / "student_mmg").train()
    heads = DiscriminatorHeads(level_channels(teacher), text_dim=teacher.config.cross_attention_dim,
                               scale_conditioned=not a.unconditioned_heads,
                               guidance_dim=student.config.time_cond_proj_dim)
    disc = Discriminator(teacher, heads, sched)
    weights = LossWeights(**{f.name: getattr(a, f.name) for f in fields(LossWeights)})
    g = torch.Generator().manual_seed(a.seed)

    def loss_fn(step):
        batch = samples.batch(step, a, pool, bank, g)
        return adversarial_loss(student, disc, batch, sched, weights, step, g)

    def save_fn(model, out: Path):
        model.student.save_pretrained(export / STUDENT_DIR)
        model.heads.save_pretrained(out / "heads")
        (export / STUDENT_DIR / "training.json").write_text(json.dumps(
            {"method": "adversarial distillation to one step (MoViE section 3.5)", "args": vars(a),
             "weights": asdict(weights),
             "student_timesteps": list(STUDENT_TIMESTEPS), "families": list(pool.families)}, indent=1, default=str))

    model = StudentAndHeads(student, heads)
    groups = [{"params": student.parameters()}, {"params": heads.parameters(), "lr": a.lr * a.d_lr_mult}]
    run_loop(loop_config(a, warmup=50, save_every=100), model, groups, loss_fn, save_fn)


if __name__ == "__main__":
    main()

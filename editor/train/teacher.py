"""Train the embedded InstructPix2Pix teacher (MoViE sections 3.1-3.2) on the procedural edit world.

The UNet sees ``concat(noisy target latent, source latent)`` and the MiniLM states of a *seen* paraphrase. As in
InstructPix2Pix (Brooks et al. 2023, section 3.4) the instruction and the source are each dropped for ``--drop`` of the
examples and both together for another ``--drop``, so the three branches of MoViE Eq. 1 are all trained. v-prediction
(Salimans & Ho 2022) with min-SNR-5 loss weights (Hang et al. 2023). Most steps use random 16x16 latent windows (the
edits are local or pointwise, so windows teach the same maps 4x cheaper); every ``--full-every``-th step the full frame.

    python -m editor.train.teacher --out runs/teacher --export data/models/embedded
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from diffusers import AutoencoderTiny, UNet2DConditionModel

from editor.family import TeacherConfig, config_dict
from editor.loading import FAMILY_INDEX, family_text_encoder, write_family_index
from editor.text_encoder import MiniLMEncoder
from editor.train.common import (add_args, add_wording_args, family_folder, loop_config, noise_scheduler, run_loop,
                                 wording_bank)
from editor.train.data import family_probs, partial_edits, pool_from_args
from editor.world import edits


def loss_weights(snr: torch.Tensor, floor: float = 0.0) -> torch.Tensor:
    """Min-SNR-5 weights for v-prediction (Hang et al. 2023), ``min(snr, 5) / (snr + 1)``, lifted to at least ``floor``.

    Unfloored they fall to ~0.005 at t = 999: the noisiest steps, where each latent channel's mean (a frame's overall
    colour and brightness) is decided, barely train."""
    return (snr.clamp(max=5.0) / (snr + 1)).clamp(min=floor)


def diffusion_loss(unet, sched, x0, cond, text, g, weight_floor: float = 0.0) -> dict:
    """v-prediction MSE weighted by ``loss_weights``; ``x0`` target latents, ``cond`` source latents."""
    b = x0.shape[0]
    t = torch.randint(0, sched.config.num_train_timesteps, (b,), generator=g)
    noise = torch.randn(x0.shape, generator=g)
    xt = sched.add_noise(x0, noise, t)
    v = sched.get_velocity(x0, noise, t)
    snr = (sched.alphas_cumprod[t] / (1 - sched.alphas_cumprod[t]))
    xt, v, cond, text, t, snr = (u.to(unet.device) for u in (xt, v, cond, text, t, snr))  # pool stays on the CPU
    pred = unet(torch.cat([xt, cond], 1), t, text).sample
    mse = (pred - v).pow(2).mean(dim=(1, 2, 3))
    return {"loss": (loss_weights(snr, weight_floor) * mse).mean(), "mse": mse.mean().detach()}


def drop_conditions(cond, text, empty, x0, p: float, g, anchor_share: float = 0.0):
    """IP2P conditioning dropout: instruction only, source only, or both, each with probability ``p``.

    Returns ``(cond, text, x0)``. With ``anchor_share`` 1 (the null-text anchor) an example that keeps its source but
    drops its instruction learns the source itself (``x0`` := ``cond``), not its edit; with 0 (plain IP2P) its edit. In plain IP2P that
    branch, ``eps(z, c_I, 0)`` in MoViE Eq. 1, learns the average of all edits of the source (on our families the
    teacher's sample from it lies 8.6 dB from the source on pan_lion, darkened like ``night``), so raising ``s_I``
    pulls towards that average edit rather than towards the source. Anchored, ``s_I`` scales faithfulness to the
    source and ``s_T`` the step from the source to the requested edit. A share in between anchors only that share of
    those examples (the rest keep their edit), so the branch learns a blend of the source and the average edit."""
    u = torch.rand(cond.shape[0], generator=g)
    drop_text = (u < p) | (u >= 1 - p)
    drop_img = (u >= p) & (u < 2 * p) | (u >= 1 - p)
    text = torch.where(drop_text[:, None, None], empty.expand_as(text), text)
    if anchor_share > 0.0:
        anchor = drop_text & ~drop_img
        if anchor_share < 1.0:
            anchor &= torch.rand(cond.shape[0], generator=g) < anchor_share
        x0 = torch.where(anchor[:, None, None, None], cond, x0)
    cond = cond * (~drop_img).float()[:, None, None, None]
    return cond, text, x0


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_args(p, out="runs/teacher", export_help="family folder: reads autoencoder/, writes unet/", steps=2000,
             batch=64, lr=6e-4)
    p.add_argument("--drop", type=float, default=0.08, help="conditioning dropout probability (each of 3 cases)")
    p.add_argument("--init-from", type=Path, default=None,
                   help="start from these UNet weights (e.g. the shipped unet/) with a fresh optimiser")
    p.add_argument("--strength-share", type=float, default=0.0,
                   help="share of examples whose target is a partial edit (editor.train.data.partial_edits)")
    p.add_argument("--strength-range", type=float, nargs=2, default=(0.3, 1.0), metavar=("LO", "HI"),
                   help="edit strength a ~ U[LO, HI] of the partial edits")
    p.add_argument("--weight-floor", type=float, default=0.0,
                   help="lowest loss weight of any timestep (min-SNR-5 gives ~0.005 at t = 999; see loss_weights)")
    p.add_argument("--null-text-target", choices=("edit", "source"), default="edit",
                   help="target of examples that drop only the instruction: their edit (IP2P) or their source "
                        "(the null-text anchor; see drop_conditions)")
    p.add_argument("--anchor-share", type=float, default=1.0,
                   help="with --null-text-target source: share of those examples that learn the source")
    p.add_argument("--zero-snr", action="store_true",
                   help="rescale the betas to zero terminal SNR (Lin et al. 2024; see noise_scheduler); written to the "
                        "family's scheduler/, which the loader and the later trainers read")
    p.add_argument("--family-weight", action="append", default=[], metavar="FAMILY=W",
                   help="draw this edit family W times as often as the others (repeatable; e.g. cartoon=3 for the "
                        "family with the highest loss)")
    add_wording_args(p)
    p.add_argument("--text-tokens", type=int, default=None,
                   help="token states the UNet sees after the sentence embedding (0: the sentence embedding only); "
                        "recorded in the family's family.json, which every later trainer and the loader read "
                        "(default: the family's setting, all 16 for a new family)")
    a = p.parse_args(argv)
    if not 0.0 < a.anchor_share <= 1.0:
        p.error(f"--anchor-share must be in (0, 1], got {a.anchor_share}")
    if a.anchor_share < 1.0 and a.null_text_target != "source":
        p.error("--anchor-share needs --null-text-target source")
    try:  # checked before the pool is built (minutes), then ordered as the pool's families
        family_probs(tuple(edits.FAMILIES), a.family_weight)
    except ValueError as e:
        p.error(f"--family-weight: {e}")
    anchor_share = a.anchor_share if a.null_text_target == "source" else 0.0
    torch.manual_seed(a.seed)
    export = family_folder(p, a, "autoencoder")
    try:
        encoder = MiniLMEncoder(keep_tokens=a.text_tokens) if a.text_tokens is not None else family_text_encoder(export)
    except ValueError as e:
        p.error(f"--text-tokens: {e}")
    bank, empty = wording_bank(p, a, encoder)  # before the pool (minutes), so a bad option fails at once
    ae = AutoencoderTiny.from_pretrained(export / "autoencoder").eval()
    pool = pool_from_args(ae, a)
    probs = family_probs(pool.families, a.family_weight)
    cfg = TeacherConfig(latent_channels=pool.sources.shape[1], sample_size=pool.sources.shape[-1])
    unet = UNet2DConditionModel.from_pretrained(a.init_from) if a.init_from else cfg.build()
    sched = noise_scheduler(cfg.prediction_type, a.zero_snr)
    g = torch.Generator().manual_seed(a.seed)

    def loss_fn(step):
        cond, x0, fam, par = pool.sample(step, a.batch, a.crop, a.full_every, bank.shape[1], g, probs)
        x0 = partial_edits(cond, x0, a.strength_share, a.strength_range, g)
        cond, text, x0 = drop_conditions(cond, bank[fam, par], empty, x0, a.drop, g, anchor_share)
        return diffusion_loss(unet, sched, x0, cond, text, g, a.weight_floor)

    def save_fn(model, out: Path):
        model.save_pretrained(export / "unet")
        sched.save_pretrained(export / "scheduler")
        if not (export / FAMILY_INDEX).exists():
            write_family_index(export, name="embedded", default_steps=20)
        if a.text_tokens is not None:  # the loader and the student's trainer must encode as this UNet was trained
            index = json.loads((export / FAMILY_INDEX).read_text())
            (export / FAMILY_INDEX).write_text(json.dumps({**index, "text_tokens": a.text_tokens}, indent=1))
        (export / "unet" / "training.json").write_text(json.dumps(
            {"config": config_dict(cfg), "args": vars(a), "families": list(pool.families)}, indent=1, default=str))

    run_loop(loop_config(a, warmup=100, save_every=100), unet, unet.parameters(), loss_fn, save_fn)


if __name__ == "__main__":
    main()

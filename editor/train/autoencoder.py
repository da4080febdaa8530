"""Train the embedded lightweight autoencoder (MoViE section 3.3: a TAESD-style ``AutoencoderTiny``).

Data: random crops of training photos and procedural scenes (``editor.world.scenes``), half of them passed through a
random edit family so the decoder can also draw edited frames. Loss: MSE + 0.5 L1 on ``[-1, 1]`` pixels. After training the
config's ``scaling_factor`` is set to 1/std of the latents, so the diffusion models see unit-variance latents.

    python -m editor.train.autoencoder --out runs/autoencoder --export data/models/embedded/autoencoder

``--decoder-only FROM`` trains only the decoder of the autoencoder in ``FROM``, its encoder frozen: the latent space,
and with it every diffusion model trained on it, stays valid, while the reconstruction improves.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import AutoencoderTiny

from editor.family import AutoencoderConfig, save_autoencoder
from editor.layout import frames_to_images
from editor.train.common import LoopConfig, run_loop
from editor.world import edits, scenes


def frame_pool(n: int, seed: int, dark_share: float = 0.0) -> torch.Tensor:
    """``2n`` training images ``T 3 256 256`` in [-1, 1]: ``n`` sources (``dark_share`` of them under-exposed,
    ``scenes.training_frames``) and ``n`` randomly edited copies."""
    frames = scenes.training_frames(n, seed=seed, dark_share=dark_share)
    rng = np.random.default_rng(seed + 1)
    ids = list(edits.FAMILIES)
    edited = np.stack([edits.FAMILIES[ids[rng.integers(len(ids))]].apply(f[None], int(rng.integers(1 << 30)))[0]
                       for f in frames])
    return frames_to_images(np.concatenate([frames, edited]))


def random_crops(pool: torch.Tensor, batch: int, crop: int, g: torch.Generator) -> torch.Tensor:
    idx = torch.randint(len(pool), (batch,), generator=g)
    h, w = pool.shape[-2:]
    ys = torch.randint(0, (h - crop) // 8 + 1, (batch,), generator=g) * 8
    xs = torch.randint(0, (w - crop) // 8 + 1, (batch,), generator=g) * 8
    return torch.stack([pool[i, :, y:y + crop, x:x + crop] for i, y, x in zip(idx, ys, xs)])


@torch.no_grad()
def set_scaling_factor(ae, pool: torch.Tensor) -> float:
    """Set ``scaling_factor`` = 1 / std of the raw latents over (part of) the pool; returns it."""
    z = torch.cat([ae.encode(pool[i:i + 16].to(ae.device)).latents for i in range(0, min(len(pool), 128), 16)])
    sf = float(1.0 / z.std())
    ae.register_to_config(scaling_factor=sf)
    return sf


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="runs/autoencoder", help="checkpoints and train_log.jsonl")
    p.add_argument("--export", default="data/models/embedded/autoencoder", help="save_pretrained folder")
    p.add_argument("--steps", type=int, default=1200)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--crop", type=int, default=128)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--pool", type=int, default=600, help="source frames in the pool (plus as many edited)")
    p.add_argument("--dark-share", type=float, default=0.0,
                   help="share of pool frames under-exposed, so the decoder also learns true black and dim colours")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-minutes", type=float, default=None)
    p.add_argument("--stop-at", type=int, default=None,
                   help="stop after this step (the LR schedule still spans --steps)")
    p.add_argument("--decoder-only", type=Path, default=None, metavar="FROM",
                   help="fine-tune only the decoder of this autoencoder folder; encoder and scaling_factor are kept")
    a = p.parse_args(argv)
    torch.manual_seed(a.seed)
    pool = frame_pool(a.pool, a.seed, a.dark_share)
    train_encoder = a.decoder_only is None
    ae = AutoencoderConfig().build() if train_encoder else AutoencoderTiny.from_pretrained(a.decoder_only)
    ae.encoder.requires_grad_(train_encoder)
    g = torch.Generator().manual_seed(a.seed)

    def loss_fn(step):
        x = random_crops(pool, a.batch, a.crop, g).to(ae.device)  # the pool stays on the CPU
        with torch.set_grad_enabled(train_encoder):
            z = ae.encode(x).latents
        y = ae.decode(z).sample
        mse, l1 = F.mse_loss(y, x), F.l1_loss(y, x)
        psnr = 10 * torch.log10(4.0 / mse.detach())
        return {"loss": mse + 0.5 * l1, "mse": mse.detach(), "psnr": psnr}

    def save_fn(model, out: Path):
        model.eval()
        if train_encoder:  # a frozen encoder keeps its latent statistics
            set_scaling_factor(model, pool)
        save_autoencoder(model, a.export)
        model.train()

    cfg = LoopConfig(out=a.out, steps=a.steps, lr=a.lr, seed=a.seed, save_every=100, log_every=10,
                     max_minutes=a.max_minutes, stop_at=a.stop_at)
    run_loop(cfg, ae, ae.parameters() if train_encoder else ae.decoder.parameters(), loss_fn, save_fn)


if __name__ == "__main__":
    main()

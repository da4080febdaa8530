"""Stop 30 diagnostic: does the teacher lean on the terminal-SNR leak (Lin et al. 2024, "Common diffusion noise
schedules and sample steps are flawed", section 3.1)? Our scaled-linear schedule keeps sqrt(abar_999) = 0.068 of the
target latent at t = 999, so in training the first step can read each channel's mean off the noisy latent; at sampling
the noise has none. Sample the teacher from (a) plain noise, (b) noise plus the oracle leak of the *target* latent,
(c) noise plus the leak of the *source* latent, on training-pool frames (seed 7, half dark), every family, first seen
paraphrase; (d) the source's leak with each latent channel's mean moved to the target's (only the mean, the
quantity the paper says the flaw is about); report PSNR to target, nearest-family accuracy and mean level against the target's.
If (b) >> (a), the flaw costs the teacher; zero-terminal-SNR fine-tuning is the remedy the paper gives."""
import sys
import numpy as np, torch
import editor.pipeline as pl
from editor import edits, metrics, scenes
from editor.loading import load_family
from editor.pipeline import Editor, EditRequest, frames_to_images
torch.set_grad_enabled(False)
n = int(sys.argv[1]) if len(sys.argv) > 1 else 6
fam = load_family(sys.argv[2] if len(sys.argv) > 2 else "data/models/embedded"); ed = Editor(fam)
abar = float(fam.scheduler.alphas_cumprod[-1]) if hasattr(fam.scheduler, "alphas_cumprod") else None
print("sqrt(abar_T) =", abar ** 0.5)
frames = scenes.training_frames(n, seed=7, dark_share=0.5)
plain_sample = pl.sample
leak = {}
def leaky(model, x, cond, scheduler, steps, cb=None):
    z = leak.get("z")
    if z is not None:
        x = (1 - abar) ** 0.5 * x + abar ** 0.5 * z
    return plain_sample(model, x, cond, scheduler, steps, cb)
pl.sample = leaky
rows = {m: [] for m in ("noise", "oracle", "source", "oracle_mean")}
for i in range(n):
    src = frames[i:i + 1]
    tg = edits.all_targets(src, 0)
    z_src = fam.encode(frames_to_images(src))
    for k, f in edits.FAMILIES.items():
        z_tgt = fam.encode(frames_to_images(tg[k]))
        mean_only = z_src + (z_tgt.mean((2, 3), keepdim=True) - z_src.mean((2, 3), keepdim=True))
        for mode, z in (("noise", None), ("oracle", z_tgt), ("source", z_src), ("oracle_mean", mean_only)):
            leak["z"] = z
            out = ed.edit_frames(src, EditRequest(f.instructions("seen")[0], fam.default_guidance, steps=20, seed=0)).frames
            rows[mode].append((i, k, metrics.psnr(out, tg[k]), metrics.nearest_family(out, tg) == k,
                               out.mean(), tg[k].mean(), src.mean()))
for mode, r in rows.items():
    ps = np.array([x[2] for x in r]); hit = np.array([x[3] for x in r])
    dark = np.array([x[6] < 60 for x in r])
    lvl_err = np.array([abs(x[4] - x[5]) for x in r])
    print(f"{mode:7s} all: {ps.mean():.2f} dB, {hit.sum()}/{len(hit)} hits, |mean level - target's| {lvl_err.mean():.1f}"
          f" | dark frames: {ps[dark].mean():.2f} dB, {hit[dark].sum()}/{dark.sum()}, level err {lvl_err[dark].mean():.1f}"
          f" | bright: {ps[~dark].mean():.2f} dB, {hit[~dark].sum()}/{(~dark).sum()}, level err {lvl_err[~dark].mean():.1f}")
for k in edits.FAMILIES:
    print(k.ljust(16), " ".join(f"{m}: {np.mean([x[2] for x in rows[m] if x[1] == k]):.2f}" for m in rows))

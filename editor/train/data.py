"""Latent training pools shared by the diffusion training stages.

A pool holds, for ``n`` training frames (``editor.world.scenes``), the scaled latent of the source frame and of its
target under every edit family (``editor.world.edits``), encoded once with the frozen autoencoder and cached on disk.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from editor.layout import frames_to_images
from editor.world import edits, scenes


def same_window(tensors: tuple[torch.Tensor, ...], size: int, g: torch.Generator) -> tuple[torch.Tensor, ...]:
    """The same random ``size x size`` window of every ``... h w`` tensor (all of them when ``size`` covers it)."""
    h, w = tensors[0].shape[-2:]
    if size >= h:
        return tensors
    y = int(torch.randint(0, h - size + 1, (1,), generator=g))
    x = int(torch.randint(0, w - size + 1, (1,), generator=g))
    return tuple(v[..., y:y + size, x:x + size] for v in tensors)


@dataclass
class LatentPool:
    sources: torch.Tensor  # N C h w
    targets: torch.Tensor  # N F C h w, F = len(families)
    families: tuple[str, ...]

    def crop(self, idx: torch.Tensor, fam: torch.Tensor, size: int, g: torch.Generator):
        """Source and target latents of the pairs ``(idx, fam)``, cropped to the same random ``size`` window."""
        return same_window((self.sources[idx], self.targets[idx, fam]), size, g)

    def sample(self, step: int, batch: int, crop: int, full_every: int, n_paraphrases: int, g: torch.Generator,
               family_probs: torch.Tensor | None = None):
        """A training batch: (source latents, target latents, family ids, paraphrase ids). Every ``full_every``-th
        step uses whole frames at a quarter of the batch (same cost as ``crop`` windows when crop is half the side).
        Families are drawn uniformly, or with ``family_probs`` (one probability per entry of ``families``)."""
        full = (step % full_every) == full_every - 1
        b = max(1, batch // 4) if full else batch
        idx = torch.randint(len(self.sources), (b,), generator=g)
        if family_probs is None:
            fam = torch.randint(len(self.families), (b,), generator=g)
        else:
            fam = torch.multinomial(family_probs, b, replacement=True, generator=g)
        par = torch.randint(n_paraphrases, (b,), generator=g)
        source, target = self.crop(idx, fam, self.sources.shape[-1] if full else crop, g)
        return source, target, fam, par


def family_probs(families: tuple[str, ...], weights: list[str]) -> torch.Tensor | None:
    """Sampling probabilities over ``families`` from ``NAME=W`` pairs (every other family weighs 1); ``None`` when no
    pair is given (uniform draws, the RNG stream of earlier runs). Raises ``ValueError`` on an unknown family or a
    weight that is not a positive number."""
    if not weights:
        return None
    w = dict.fromkeys(families, 1.0)
    for pair in weights:
        name, sep, value = pair.partition("=")
        if not sep or name not in w:
            raise ValueError(f"expected FAMILY=WEIGHT with FAMILY one of {', '.join(families)}, got {pair!r}")
        try:
            w[name] = float(value)
        except ValueError:
            raise ValueError(f"weight of {name} is not a number: {value!r}") from None
        if not w[name] > 0:
            raise ValueError(f"weight of {name} must be positive, got {value}")
    p = torch.tensor([w[f] for f in families])
    return p / p.sum()


def partial_edits(source: torch.Tensor, target: torch.Tensor, share: float, strength: tuple[float, float],
                  g: torch.Generator) -> torch.Tensor:
    """Targets with a strength axis: ``share`` of the batch gets ``source + a * (target - source)`` in latent space,
    ``a ~ U[strength]``, the rest the full edit.

    The procedural edits are deterministic, so without this the instruction fixes the target exactly and classifier-
    free guidance has nothing to sharpen: beyond ``s_T = 2`` the teacher's output hardly changes (its per-task s_T
    sweep is flat). Real InstructPix2Pix data holds edits of every strength for one wording, and guidance pushes a
    sample towards the strongest, most instruction-specific end (Brooks et al. 2023, section 3.4). A latent lerp
    decodes as close to the pixel lerp as the autoencoder's own reconstruction of it (checked on a training pan:
    23.4 vs 23.4 dB for sepia at a = 0.5)."""
    if share <= 0:
        return target
    b = target.shape[0]
    a = strength[0] + (strength[1] - strength[0]) * torch.rand(b, generator=g)
    a = torch.where(torch.rand(b, generator=g) < share, a, torch.ones(b)).view(b, 1, 1, 1)
    return source + a * (target - source)


@torch.no_grad()
def encode_frames(ae, frames: np.ndarray, batch: int = 32) -> torch.Tensor:
    """Scaled latents of ``uint8 T H W 3`` frames."""
    sf = ae.config.scaling_factor
    return torch.cat([ae.encode(frames_to_images(frames[i:i + batch])).latents * sf for i in range(0, len(frames), batch)])


def build_pool(ae, n: int, seed: int, cache: Path | None = None, dark_share: float = 0.0) -> LatentPool:
    """The pool for ``n`` training frames (``dark_share`` of them under-exposed, ``scenes.training_frames``); loaded
    from ``cache`` when it exists, written there otherwise. A cache built with another ``dark_share`` is refused."""
    if cache is not None and cache.exists():
        d = torch.load(cache)
        built = float(d.get("dark_share", 0.0))  # caches from before the option hold no dark frames
        if built != dark_share:
            raise ValueError(f"{cache} was built with dark_share={built}, not {dark_share}; "
                             "pass the matching --dark-share or another --pool-cache")
        return LatentPool(d["sources"], d["targets"], tuple(d["families"]))
    frames = scenes.training_frames(n, seed=seed, dark_share=dark_share)
    fams = tuple(edits.FAMILIES)
    rng = np.random.default_rng(seed + 7)
    sources = encode_frames(ae, frames)
    targets = []
    for f in tqdm(frames, desc="encoding edit targets"):
        seed_f = int(rng.integers(1 << 30))
        tgt = np.stack([edits.FAMILIES[k].apply(f[None], seed_f)[0] for k in fams])
        targets.append(encode_frames(ae, tgt))
    pool = LatentPool(sources, torch.stack(targets), fams)
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        torch.save({"sources": pool.sources, "targets": pool.targets, "families": list(fams),
                    "dark_share": dark_share}, cache)
    return pool


def pool_from_args(ae, a) -> LatentPool:
    """The pool a training stage's shared options (``common.add_args``) name, cached at ``--pool-cache`` or
    ``OUT/pool.pt``; every stage uses seed ``--seed + 100``, so the teacher, the student and the adaptor can share one
    cache."""
    cache = a.pool_cache or Path(a.out) / "pool.pt"
    return build_pool(ae, a.pool, a.seed + 100, cache=cache, dark_share=a.dark_share)

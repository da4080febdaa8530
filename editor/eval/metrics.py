"""Quality metrics of the procedural edit benchmark (docs/DESIGN.md section 5). All take ``uint8 T H W 3`` clips."""
from __future__ import annotations

import numpy as np

from editor.layout import check_frames


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """PSNR in dB over whole clips (one MSE over all pixels; 100 dB for identical clips)."""
    if a.shape != b.shape:
        raise ValueError(f"shape mismatch {a.shape} vs {b.shape}")
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return 100.0 if mse == 0 else float(10 * np.log10(255.0 ** 2 / mse))


def downsample_psnr(frames: np.ndarray, factor: int = 4) -> float:
    """PSNR of a bicubic ``factor``x down- and up-sampling of ``frames`` to themselves: how much fine detail a clip
    holds, a model-free reference for autoencoder PSNR (4x keeps 3/16 values a pixel, an 8x latent of 16 channels 1/4;
    the shipped autoencoder scores 1.5-2 dB under it on every photo, training or held-out)."""
    from PIL import Image

    check_frames(frames)
    h, w = frames.shape[1:3]
    small = (max(1, w // factor), max(1, h // factor))
    back = np.stack([np.asarray(Image.fromarray(f).resize(small, Image.BICUBIC).resize((w, h), Image.BICUBIC))
                     for f in frames])
    return psnr(back, frames)


def temporal_change(frames: np.ndarray) -> float:
    """Mean absolute change between consecutive frames (0..255)."""
    check_frames(frames)
    if len(frames) < 2:
        return 0.0
    return float(np.mean(np.abs(np.diff(frames.astype(np.float32), axis=0))))


def flicker_ratio(output: np.ndarray, target: np.ndarray) -> float:
    """Temporal change of the output relative to that of the target clip (1.0 = as steady as the exact edit)."""
    ref = temporal_change(target)
    return temporal_change(output) / max(ref, 1e-6)


def target_psnrs(output: np.ndarray, targets: dict[str, np.ndarray]) -> dict[str, float]:
    """PSNR of ``output`` to every family's target, computed once for the nearest family, the hit and its margin."""
    return {k: psnr(output, t) for k, t in targets.items()}


def nearest_family(output: np.ndarray, targets: dict[str, np.ndarray]) -> str:
    """The family whose target is nearest (highest PSNR) to ``output``."""
    return nearest_of(target_psnrs(output, targets))


def nearest_of(scores: dict[str, float]) -> str:
    """``nearest_family`` from the PSNRs ``target_psnrs`` already gave."""
    return max(scores, key=scores.get)


def instruction_hit(output: np.ndarray, requested: str, targets: dict[str, np.ndarray]) -> bool:
    """True when ``output`` is nearer to the requested family's target than to every other family's target."""
    return nearest_family(output, targets) == requested


def hit_margin(output: np.ndarray, requested: str, targets: dict[str, np.ndarray]) -> float:
    """How clear the call is, in dB: PSNR to the requested family's target minus the highest PSNR to any other
    family's target: positive on a hit, negative on a miss (0 on an exact tie); near 0 when a small change would
    flip the call."""
    return margin_of(target_psnrs(output, targets), requested)


def margin_of(scores: dict[str, float], requested: str) -> float:
    """``hit_margin`` from the PSNRs ``target_psnrs`` already gave."""
    return scores[requested] - max(v for k, v in scores.items() if k != requested)


def edit_strength(output: np.ndarray, source: np.ndarray) -> float:
    """How far the edit moved the clip: mean absolute difference to the source, as a share of 255."""
    if output.shape != source.shape:
        raise ValueError(f"shape mismatch {output.shape} vs {source.shape}")
    return float(np.mean(np.abs(output.astype(np.float32) - source.astype(np.float32)))) / 255.0


def edit_progress(output: np.ndarray, source: np.ndarray, target: np.ndarray) -> float:
    """Share of the requested change that the edit applied: the projection of ``output - source`` on
    ``target - source``, over ``|target - source|^2`` (0 = nothing of it, 1 = exactly the target's change, above 1 =
    overshoot). Unlike ``edit_strength`` it counts only change in the requested direction: the pixel-space analogue of
    InstructPix2Pix's CLIP directional similarity (Brooks et al. 2023, quantitative evaluation). 0.0 when the target
    equals the source (no change was requested)."""
    o, s, t = (np.asarray(x, dtype=np.float64).ravel() for x in (output, source, target))
    if not (o.shape == s.shape == t.shape):
        raise ValueError(f"shape mismatch {output.shape}, {source.shape}, {target.shape}")
    d = t - s
    dd = float(d @ d)
    return 0.0 if dd == 0 else float((o - s) @ d) / dd


def _gradient_magnitude(frames: np.ndarray) -> np.ndarray:
    from scipy import ndimage

    y = frames.astype(np.float64).mean(-1)
    return np.stack([np.hypot(ndimage.sobel(f, 0), ndimage.sobel(f, 1)) for f in y])


def structure_to_source(output: np.ndarray, source: np.ndarray) -> float:
    """Faithfulness to the source's structure: Pearson correlation of the Sobel gradient magnitudes of output and
    source luma (1 = the same edges). Invert leaves it at exactly 1 and a colour edit (black and white, sepia) near 1
    while they move PSNR to the source far down, so it is the faithfulness that image guidance controls; the analogue of
    InstructPix2Pix's CLIP image similarity to the input (Brooks et al. 2023, quantitative evaluation). 0.0 for a
    flat clip."""
    if output.shape != source.shape:
        raise ValueError(f"shape mismatch {output.shape} vs {source.shape}")
    a, b = (_gradient_magnitude(x).ravel() for x in (output, source))
    return 0.0 if a.std() == 0 or b.std() == 0 else float(np.corrcoef(a, b)[0, 1])


def spearman(x, y) -> float:
    """Spearman rank correlation of two sequences (0.0 when either is constant: no trend to rank)."""
    from scipy.stats import spearmanr

    if len(set(np.round(np.asarray(y, dtype=np.float64), 9))) < 2 or len(set(x)) < 2:
        return 0.0
    return float(spearmanr(x, y).statistic)


def accuracy_interval(hits: int, n: int) -> tuple[float, float]:
    """95% Wilson score interval of an accuracy of ``hits`` out of ``n`` tasks (the ratings' own
    ``wilson_interval``). On the 52 tasks of the held-out clips one task is 1.9 points, and 42/52 spans 68-89%: read
    single-task differences against it."""
    from editor.study.stats import wilson_interval

    return wilson_interval(hits, n)


def paired_hits(reference: list[bool], other: list[bool]) -> dict:
    """Exact McNemar test of two variants' hits on the same tasks: ``gained`` (tasks only ``other`` hits), ``lost``
    (tasks only ``reference`` hits) and ``p_value``, the two-sided probability of a split of the differing tasks at
    least this uneven if neither variant were the better (binomial, p = 1/2); 1.0 when no task differs."""
    from scipy.stats import binomtest

    pairs = list(zip(reference, other, strict=True))
    gained = sum(bool(o) and not r for r, o in pairs)
    lost = sum(bool(r) and not o for r, o in pairs)
    p = binomtest(gained, gained + lost).pvalue if gained + lost else 1.0
    return {"gained": gained, "lost": lost, "p_value": float(p)}


def mean_or_none(xs) -> float | None:
    xs = [x for x in xs if x is not None]
    return float(np.mean(xs)) if xs else None

"""What a variant costs per frame: full UNet passes and GFLOPs, from the registry and one FLOP count per UNet, and
what it was measured to run at (``python -m editor.eval.bench`` writes ``data/results/bench_speed.json``).

A Clockwork step (Habibian et al. 2024, section 3.1) runs the high-resolution ends of the UNet and the adaptor in
place of the low-resolution middle; :func:`editor.clockwork.step_flops` counts both kinds of step once per UNet
and latent size (``torch.utils.flop_counter``), and :class:`CostTable` caches those counts. Everything else is
arithmetic over the variant's schedule (:meth:`editor.variants.Variant.schedule`), so labelling every variant is
cheap and needs no request.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from editor.clockwork import DEFAULT_CLOCK, StepFlops, step_flops
from editor.pipeline import EditRequest
from editor.variants import Variant, get_variant

SPEED_KEYS = {"variant", "short_side", "steps", "ms_per_frame", "fps"}  # a bench_speed.json row
SPEED_COLUMNS = ["variant", "size (px)", "UNet passes", "GFLOPs / frame", "measured ms / frame", "measured fps",
                 "measured at steps"]


@dataclass(frozen=True)
class Cost:
    """Cost of one frame: full UNet passes, GFLOPs, and the GFLOPs of each sampler step."""

    unet_passes: int
    gflops: float
    step_gflops: tuple[float, ...]


def one_step(variant: Variant) -> bool:
    """True for a few-step student: its steps are one of its ``step_options`` (the first, 1, by default), not the
    free steps setting."""
    return variant.step_options is not None


def latent_size(family, size: tuple[int, int]) -> tuple[int, int]:
    """The latent ``(height, width)`` of frames of ``size`` = ``(width, height)`` px."""
    return size[1] // family.downsample, size[0] // family.downsample


class CostTable:
    """FLOPs per UNet call for the variants of one model family at one latent size (counted once, then cached)."""

    def __init__(self, family, latent_hw: tuple[int, int] | None = None):
        self.family = family
        side = 256 // family.downsample
        self.latent_hw = latent_hw or (side, side)
        self._flops: dict[tuple, StepFlops] = {}

    def step_flops(self, variant: Variant, latent_hw: tuple[int, int] | None = None) -> StepFlops:
        """Full and adaptor FLOPs of one UNet call (batch 1) of ``variant``'s UNet."""
        hw = latent_hw or self.latent_hw
        key = (variant.model, variant.clockwork, hw)
        if key not in self._flops:
            unet = variant.unet(self.family)  # the registry's own UNet lookup
            self._flops[key] = step_flops(unet, variant.adaptor(self.family),
                                          sample_shape=(1, unet.config.in_channels, *hw))
        return self._flops[key]

    def cost(self, name: str, steps: int, clock: int = DEFAULT_CLOCK,
             latent_hw: tuple[int, int] | None = None) -> Cost:
        """Cost per frame of variant ``name`` at ``steps`` sampler steps and Clockwork ``clock``."""
        variant = get_variant(name)
        flops = self.step_flops(variant, latent_hw)
        passes = variant.passes_per_step()
        schedule = variant.schedule(int(steps), int(clock))
        per_step = tuple(passes * (flops.full if full else flops.adaptor) / 1e9 for full in schedule)
        return Cost(passes * sum(schedule), sum(per_step), per_step)

    def of(self, request: EditRequest, latent_hw: tuple[int, int] | None = None) -> Cost:
        """Cost per frame of ``request``."""
        return self.cost(request.variant, request.steps, request.clock, latent_hw)

    def label(self, name: str, steps: int, clock: int = DEFAULT_CLOCK, latent_hw: tuple[int, int] | None = None) -> str:
        """Dropdown label: the variant's name with its cost per frame."""
        c = self.cost(name, steps, clock, latent_hw)
        return f"{name} · {c.unet_passes} UNet passes, {c.gflops:.1f} GFLOPs / frame"

    def choices(self, names: list[str], steps: int, clock: int = DEFAULT_CLOCK,
                latent_hw: tuple[int, int] | None = None) -> list[tuple[str, str]]:
        """``(label, name)`` pairs for a dropdown of ``names``."""
        return [(self.label(n, steps, clock, latent_hw), n) for n in names]


# ----------------------------------------------------------------------------- measured speed

def load_speeds(path: str | Path | None) -> list[dict]:
    """The rows of a ``bench_speed.json`` (``{"rows": [{"variant", "short_side", "steps", "ms_per_frame", "fps"},
    ...]}``); none when the file is missing or unreadable."""
    try:
        rows = json.loads(Path(path).read_text())["rows"]
    except (TypeError, OSError, ValueError, KeyError):
        return []
    return [r for r in rows if isinstance(r, dict) and SPEED_KEYS <= set(r)]


def measured(speeds: list[dict], variant: Variant, short_side: int, steps: int) -> dict | None:
    """The measured row of ``variant`` at ``short_side``: at the steps it would run, else at any steps."""
    rows = [r for r in speeds if r["variant"] == variant.name and r["short_side"] == short_side]
    want = variant.sampler_steps(steps)
    return next((r for r in rows if r["steps"] == want), rows[0] if rows else None)


def cost_frame(costs: CostTable, names: list[str], steps: int, clock: int, sizes: dict[int, tuple[int, int]],
               speeds: list[dict]) -> pd.DataFrame:
    """One row per variant and working size (``{short side: (width, height)}``): UNet passes and GFLOPs per frame,
    and the measured ms per frame and fps where ``speeds`` has them (FLOPs alone otherwise)."""
    rows = []
    for name in names:
        variant = get_variant(name)
        for side, size in sizes.items():
            c = costs.cost(name, steps, clock, latent_size(costs.family, size))
            m = measured(speeds, variant, side, steps)
            rows.append([name, f"{size[0]}x{size[1]}", c.unet_passes, round(c.gflops, 1),
                         round(m["ms_per_frame"], 1) if m else None, round(m["fps"], 2) if m else None,
                         m["steps"] if m else None])
    frame = pd.DataFrame(rows, columns=SPEED_COLUMNS)
    return frame if speeds else frame[SPEED_COLUMNS[:4]]

"""What a variant costs per frame: full UNet passes and GFLOPs, from the registry and one FLOP count per UNet.

A Clockwork step (Habibian et al. 2024, section 3.1) runs the high-resolution ends of the UNet and the adaptor in
place of the low-resolution middle; :func:`editor.clockwork.step_flops` counts both kinds of step once per UNet
and latent size (``torch.utils.flop_counter``), and :class:`CostTable` caches those counts. Everything else is
arithmetic over the variant's schedule, so labelling every variant is cheap.
"""
from __future__ import annotations

from dataclasses import dataclass

from editor.clockwork import StepFlops, schedule_counts, step_flops
from editor.pipeline import EditRequest
from editor.variants import Variant, get_variant


@dataclass(frozen=True)
class Cost:
    """Cost of one frame: full UNet passes, GFLOPs, and the GFLOPs of each sampler step."""

    unet_passes: int
    gflops: float
    step_gflops: tuple[float, ...]


def one_step(variant: Variant) -> bool:
    """True when the variant samples in one step whatever the steps setting (a one-step student)."""
    return variant.steps(EditRequest("x", steps=2)) == 1


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

    def cost(self, name: str, steps: int, clock: int = 2, latent_hw: tuple[int, int] | None = None) -> Cost:
        """Cost per frame of variant ``name`` at ``steps`` sampler steps and Clockwork ``clock``."""
        variant = get_variant(name)
        request = EditRequest("x", steps=int(steps), clock=int(clock), variant=name)
        flops = self.step_flops(variant, latent_hw)
        passes = variant.passes_per_step()
        n = variant.steps(request)
        full = [True] * n if variant.clockwork is None else [k % clock == 0 for k in range(n)]
        assert sum(full) == (schedule_counts(n, clock)[0] if variant.clockwork else n)
        per_step = tuple(passes * (flops.full if f else flops.adaptor) / 1e9 for f in full)
        return Cost(variant.unet_passes(request), sum(per_step), per_step)

    def label(self, name: str, steps: int, clock: int = 2) -> str:
        """Dropdown label: the variant's name with its cost per frame."""
        c = self.cost(name, steps, clock)
        return f"{name} · {c.unet_passes} UNet passes, {c.gflops:.1f} GFLOPs / frame"

    def choices(self, names: list[str], steps: int, clock: int = 2) -> list[tuple[str, str]]:
        """``(label, name)`` pairs for a dropdown of ``names``."""
        return [(self.label(n, steps, clock), n) for n in names]

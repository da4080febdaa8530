"""The one registry of variants -- (model, schedule) pairs -- that the engine, benchmark, evaluator and UI all read.

A variant names which UNet of the family runs, how it is guided, and how many steps it takes (DESIGN.md section 4).
Distilled students and Clockwork register here as they land.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Literal

from editor.guidance import ThreePassGuidance

Model = Literal["teacher"]


@dataclass(frozen=True)
class Variant:
    name: str
    model: Model
    description: str
    make_denoiser: Callable  # family -> Denoiser (a fresh one per call: no state shared between requests)
    fixed_steps: int | None = None  # one-step students ignore the requested steps

    def steps(self, request) -> int:
        return self.fixed_steps or request.steps

    def denoiser(self, family):
        return self.make_denoiser(family)

    def passes_per_step(self, family) -> int:
        return self.make_denoiser(family).passes_per_step

    def available(self, family) -> bool:
        return self.model == "teacher"


VARIANTS: dict[str, Variant] = {v.name: v for v in [
    Variant("teacher", "teacher", "InstructPix2Pix teacher, 3-pass multimodal guidance (MoViE Eq. 1)",
            lambda fam: ThreePassGuidance(fam.unet)),
]}


def get_variant(name: str) -> Variant:
    try:
        return VARIANTS[name]
    except KeyError:
        raise KeyError(f"unknown variant {name!r}; known: {', '.join(VARIANTS)}") from None


def available_variants(family) -> list[str]:
    return [n for n, v in VARIANTS.items() if v.available(family)]

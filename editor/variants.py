"""The one registry of variants -- (model, schedule) pairs -- that the engine, benchmark, evaluator and UI all read.

A variant names which UNet of the family runs, how it is guided, and whether Clockwork wraps it (docs/DESIGN.md
section 4). A variant whose weights the loaded family lacks (a distilled student, a trained adaptor) is simply not
available; ``available_variants(family)`` lists the rest.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from editor.clockwork import DEFAULT_CLOCK, ClockworkConfig, ClockworkDenoiser
from editor.guidance import ThreePassGuidance
from editor.mmg import MMGDenoiser

if TYPE_CHECKING:
    from editor.pipeline import EditRequest

Model = Literal["teacher", "mmg", "onestep"]
STUDENT_MMG = "student_mmg"
STUDENT_ONESTEP = "student_onestep"
STUDENTS = {"mmg": STUDENT_MMG, "onestep": STUDENT_ONESTEP}  # model -> its folder in the family (family.extras)


@dataclass(frozen=True)
class Variant:
    name: str
    model: Model
    description: str
    clockwork: Literal["identity", "trained"] | None = None
    step_options: tuple[int, ...] | None = None  # a few-step student: the step counts it was trained for, default first

    def unet(self, family):
        """The family's UNet this variant runs."""
        return family.unet if self.model == "teacher" else family.extras[STUDENTS[self.model]]

    def adaptor(self, family, clock: int | None = None):
        """The family's trained Clockwork adaptor this variant runs at ``clock`` (a clock's specialist where the family
        has one; ``None`` for identity or no Clockwork). All share one architecture, so FLOP counts may omit ``clock``."""
        return family.adaptor_for(self.model, clock) if self.clockwork == "trained" else None

    def _wrap(self):
        return ThreePassGuidance if self.model == "teacher" else MMGDenoiser

    def denoiser(self, family, request: EditRequest):
        """A fresh denoiser for one sampling run: no state is shared between clips, chunks or requests."""
        if self.clockwork is None:
            return self._wrap()(self.unet(family))
        cfg = ClockworkConfig(clock=request.clock, adaptor=self.clockwork)
        return ClockworkDenoiser(self.unet(family), cfg, adaptor=self.adaptor(family, request.clock), wrap=self._wrap())

    def steps(self, request: EditRequest) -> int:
        """Sampling steps of ``request`` (see :meth:`sampler_steps`)."""
        return self.sampler_steps(request.steps)

    def sampler_steps(self, steps: int) -> int:
        """Sampling steps for a steps setting: the setting, except for a few-step student, which runs it when it is
        one of its ``step_options`` and its first option otherwise."""
        if self.step_options is None or steps in self.step_options:
            return steps
        return self.step_options[0]

    def schedule(self, steps: int, clock: int = DEFAULT_CLOCK) -> tuple[bool, ...]:
        """Per sampler step, whether it runs the full UNet (Clockwork's adaptor otherwise: steps ``0, clock, ...``
        are full, docs/DESIGN.md section 2.8), for a steps setting and clock; costs need no request."""
        return tuple(self.clockwork is None or k % clock == 0 for k in range(self.sampler_steps(steps)))

    def passes_per_step(self) -> int:
        return 3 if self.model == "teacher" else 1

    def unet_passes(self, request: EditRequest) -> int:
        """Full UNet passes per frame (Clockwork's adaptor steps are not UNet passes)."""
        return self.passes_per_step() * sum(self.schedule(request.steps, request.clock))

    def available(self, family) -> bool:
        if self.model in STUDENTS and STUDENTS[self.model] not in family.extras:
            return False
        return self.clockwork != "trained" or self.model in family.adaptors


VARIANTS: dict[str, Variant] = {v.name: v for v in [
    Variant("teacher", "teacher", "InstructPix2Pix teacher, 3-pass multimodal guidance (MoViE Eq. 1)"),
    Variant("teacher+clockwork-identity", "teacher", "teacher with Clockwork, identity adaptor (training-free)",
            clockwork="identity"),
    Variant("teacher+clockwork", "teacher", "teacher with Clockwork, trained ResNet adaptor", clockwork="trained"),
    Variant("mmg", "mmg", "MMG student: guidance scales distilled into the UNet, 1 pass a step (MoViE 3.4)"),
    Variant("mmg+clockwork-identity", "mmg", "MMG student with Clockwork, identity adaptor", clockwork="identity"),
    Variant("mmg+clockwork", "mmg", "MMG student with Clockwork, trained ResNet adaptor", clockwork="trained"),
    Variant("onestep", "onestep", "one-step student: adversarial distillation of the MMG student, sliders kept "
            "(MoViE 3.5)", step_options=(1, 2, 4)),
]}


def get_variant(name: str) -> Variant:
    try:
        return VARIANTS[name]
    except KeyError:
        raise KeyError(f"unknown variant {name!r}; known: {', '.join(VARIANTS)}") from None


def available_variants(family) -> list[str]:
    return [n for n, v in VARIANTS.items() if v.available(family)]


def full_step_variant(name: str) -> str | None:
    """The full-step variant a Clockwork variant is measured against (``mmg+clockwork`` -> ``mmg``); ``None`` for a
    variant without Clockwork or an unknown name."""
    v = VARIANTS.get(name)
    if v is None or v.clockwork is None:
        return None
    return next(n for n, w in VARIANTS.items() if w.model == v.model and w.clockwork is None)


def clockwork_variants(name: str) -> list[str]:
    """The Clockwork variants of ``name``'s model, the trained adaptor first (an unknown name has none)."""
    v = VARIANTS.get(name)
    if v is None:
        return []
    found = [n for n, w in VARIANTS.items() if w.model == v.model and w.clockwork is not None]
    return sorted(found, key=lambda n: VARIANTS[n].clockwork != "trained")

"""Helpers that several pages' handlers share: plain Python, no Gradio, testable on their own.

The pages (:mod:`ui.edit`, :mod:`ui.compare`, :mod:`ui.rate`, ...) bind the engine and the config to their
handlers, and :mod:`ui.serving` turns :class:`UserError` into ``gr.Error``. Everything a user can get wrong -- no
clip, an unreadable clip, an empty instruction, settings out of range -- raises :class:`UserError` with a message
meant to be shown as is.
"""
from __future__ import annotations

import math
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import numpy as np

from editor.guidance import Guidance
from editor.pipeline import EditRequest, EditResult, Editor
from editor.variants import VARIANTS, available_variants, clockwork_variants, full_step_variant
from editor.video_io import Clip, VideoError, read_clip

STEPS_RANGE = (1, 50)       # sampler steps the app accepts
CLOCK_RANGE = (1, 8)        # Clockwork clocks the app accepts (full UNet every clock-th step)
SEED_RANGE = (0, 2**32 - 1)  # seeds the app accepts; random seeds are drawn from [0, 2**31)
KEEP_OUTPUTS = 32            # edited clips kept in the output folder; older ones are deleted

Progress = Callable[[int, int], None]
ProgressSink = Callable[[float, float, str], None]  # (frames done, frames in all, description)


class UserError(ValueError):
    """A problem with the user's input; the message is shown to the user as is."""


def pick_seed(seed: float | int | None, randomize: bool, rng: np.random.Generator) -> int:
    """The seed to use: a fresh one from ``rng`` when ``randomize``, else ``seed`` checked and made an int."""
    if randomize:
        return int(rng.integers(0, 2**31))
    if seed is None or (isinstance(seed, float) and not math.isfinite(seed)):
        raise UserError("Enter a seed, or tick 'Randomize'.")
    if seed != int(seed) or not SEED_RANGE[0] <= int(seed) <= SEED_RANGE[1]:
        raise UserError(f"The seed must be a whole number from {SEED_RANGE[0]} to {SEED_RANGE[1]}, got {seed}.")
    return int(seed)


def base_variant(name: str) -> str:
    """The variant without Clockwork: ``'mmg+clockwork-identity'`` -> ``'mmg'`` (``name`` itself otherwise)."""
    return full_step_variant(name) or name


def with_clockwork(name: str, clockwork: bool, variants: list[str]) -> str:
    """The variant to run for the selector's ``name`` and the Clockwork switch: the base variant when off; when on,
    its trained-adaptor variant if available, else its identity-adaptor one (``name`` itself if it has neither)."""
    base = base_variant(name)
    if not clockwork:
        return base if base in variants else name
    options = [v for v in clockwork_variants(base) if v in variants]
    return name if name in options else (options[0] if options else name)


def uses_clockwork(name: str) -> bool:
    """True for a Clockwork variant of the registry."""
    return name in VARIANTS and VARIANTS[name].clockwork is not None


def check_clock(clock: float | None) -> int:
    """The Clockwork clock as an int in :data:`CLOCK_RANGE`; anything else raises :class:`UserError`."""
    if clock is None or clock != int(clock) or not CLOCK_RANGE[0] <= int(clock) <= CLOCK_RANGE[1]:
        raise UserError(f"The clock must be a whole number from {CLOCK_RANGE[0]} to {CLOCK_RANGE[1]}, got {clock}.")
    return int(clock)


def make_request(instruction: str | None, variant: str, s_t: float, s_i: float, steps: float, seed: int,
                 variants: list[str], clock: float = 2) -> EditRequest:
    """Check the settings and build the :class:`EditRequest`; bad settings raise :class:`UserError`."""
    instruction = (instruction or "").strip()
    if not instruction:
        raise UserError("Type an instruction first, e.g. 'make it black and white'.")
    if variant not in variants:
        raise UserError(f"Unknown variant {variant!r}; choose one of: {', '.join(variants)}.")
    if steps is None or steps != int(steps) or not STEPS_RANGE[0] <= int(steps) <= STEPS_RANGE[1]:
        raise UserError(f"Steps must be a whole number from {STEPS_RANGE[0]} to {STEPS_RANGE[1]}, got {steps}.")
    try:
        return EditRequest(instruction, Guidance(text=float(s_t), image=float(s_i)), steps=int(steps),
                           seed=seed, variant=variant, clock=check_clock(clock))
    except (TypeError, ValueError) as e:
        raise UserError(f"Invalid settings: {e}.") from e


class ProgressReport:
    """Turns the engine's ``(steps done, steps in all)`` into frames done and time left for a progress sink."""

    def __init__(self, frames: int, sink: ProgressSink | None, clock: Callable[[], float] = time.monotonic):
        self.frames, self.sink, self.clock = frames, sink, clock
        self.start = clock()

    def __call__(self, done: int, total: int) -> None:
        if self.sink is None or total <= 0:
            return
        share = min(1.0, done / total)
        frames = math.floor(self.frames * share)
        left = (self.clock() - self.start) * (1 - share) / share if share > 0 else float("nan")
        eta = f"about {left:.0f} s left" if math.isfinite(left) else "estimating time left"
        self.sink(frames, self.frames, f"Denoising: {frames}/{self.frames} frames done, {eta}")


def new_output_path(output_dir: str | Path, keep: int = KEEP_OUTPUTS) -> Path:
    """A fresh, unique ``.mp4`` path in ``output_dir``; prunes the folder to the newest ``keep`` clips first."""
    folder = Path(output_dir)
    folder.mkdir(parents=True, exist_ok=True)
    clips = sorted(folder.glob("edit-*.mp4"), key=lambda p: p.stat().st_mtime)
    for old in clips[:max(0, len(clips) - keep + 1)]:
        old.unlink(missing_ok=True)
    return folder / f"edit-{uuid.uuid4().hex[:12]}.mp4"


def load_clip(editor: Editor, config, video_path: str | None, max_frames: int | None = None) -> Clip:
    """The clip as the engine will see it (working size, frame cap); bad input raises :class:`UserError`."""
    if not video_path:
        raise UserError("Upload a video first (or pick one of the sample clips).")
    try:
        return read_clip(video_path, short_side=config.short_side, limits=config.limits,
                         max_frames=max_frames or config.max_frames, multiple=editor.family.size_multiple)
    except VideoError as e:
        raise UserError(f"Could not read the video: {e}.") from e


def edit_clip(editor: Editor, config, video_path: str, request: EditRequest,
              progress: Progress | None = None) -> EditResult:
    """Run the engine on ``video_path`` into a fresh output file; engine refusals become :class:`UserError`."""
    out_path = new_output_path(config.output_dir)
    try:
        return editor.edit_video(video_path, out_path, request, limits=config.limits,
                                 short_side=config.short_side, max_frames=config.max_frames, progress=progress)
    except VideoError as e:
        raise UserError(f"Could not read the video: {e}.") from e
    except (ValueError, KeyError) as e:
        raise UserError(f"Could not edit the video: {e.args[0] if e.args else e}.") from e


def request_from_settings(editor: Editor, instruction, variant, s_t, s_i, steps, seed, randomize,
                          clockwork: bool = False, clock: float = 2,
                          rng: np.random.Generator | None = None) -> EditRequest:
    """The :class:`EditRequest` for the Edit tab's settings; the Clockwork switch, when on, turns the variant into
    its Clockwork version (off, the variant is taken as it is: the selector already follows the switch)."""
    variants = available_variants(editor.family)
    name = with_clockwork(variant, True, variants) if clockwork and variant in variants else variant
    return make_request(instruction, name, s_t, s_i, steps,
                        pick_seed(seed, randomize, rng or np.random.default_rng()), variants, clock)

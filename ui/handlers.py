"""Handler functions of the app: plain Python, no Gradio, testable on their own.

The layout (:mod:`ui.blocks`) binds the engine and the config to these functions and turns :class:`UserError`
into ``gr.Error``. Everything a user can get wrong -- no clip, an unreadable clip, an empty instruction,
settings out of range -- raises :class:`UserError` with a message meant to be shown as is.
"""
from __future__ import annotations

import math
import uuid
from collections.abc import Callable
from pathlib import Path

import numpy as np

from editor.guidance import Guidance
from editor.pipeline import EditRequest, EditResult, Editor
from editor.variants import available_variants
from editor.video_io import VideoError

STEPS_RANGE = (1, 50)       # sampler steps the app accepts
SEED_RANGE = (0, 2**32 - 1)  # seeds the app accepts; random seeds are drawn from [0, 2**31)
KEEP_OUTPUTS = 32            # edited clips kept in the output folder; older ones are deleted

Progress = Callable[[int, int], None]


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


def make_request(instruction: str | None, variant: str, s_t: float, s_i: float, steps: float, seed: int,
                 variants: list[str]) -> EditRequest:
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
                           seed=seed, variant=variant)
    except (TypeError, ValueError) as e:
        raise UserError(f"Invalid settings: {e}.") from e


def new_output_path(output_dir: str | Path, keep: int = KEEP_OUTPUTS) -> Path:
    """A fresh, unique ``.mp4`` path in ``output_dir``; prunes the folder to the newest ``keep`` clips first."""
    folder = Path(output_dir)
    folder.mkdir(parents=True, exist_ok=True)
    clips = sorted(folder.glob("edit-*.mp4"), key=lambda p: p.stat().st_mtime)
    for old in clips[:max(0, len(clips) - keep + 1)]:
        old.unlink(missing_ok=True)
    return folder / f"edit-{uuid.uuid4().hex[:12]}.mp4"


def describe(result: EditResult, variant: str, size: tuple[int, int]) -> dict:
    """The info panel: the settings actually used and the speed figures of the run."""
    r = result.request
    return {"settings": {"variant": variant, "instruction": r.instruction, "s_T": r.guidance.text,
                         "s_I": r.guidance.image, "steps": r.steps, "seed": r.seed,
                         "frames": len(result.frames), "size": f"{size[0]}x{size[1]}", "fps": result.fps,
                         "notes": list(result.notes)},
            "speed": _rounded(result.summary())}


def _rounded(value, digits: int = 2):
    """Round floats (recursively in dicts) for display."""
    if isinstance(value, dict):
        return {k: _rounded(v, digits) for k, v in value.items()}
    return round(value, digits) if isinstance(value, float) else value


def run_edit(editor: Editor, config, video_path: str | None, instruction: str | None, variant: str,
             s_t: float, s_i: float, steps: float, seed: float | None, randomize: bool,
             progress: Progress | None = None, rng: np.random.Generator | None = None) -> tuple[str, dict]:
    """Edit the clip at ``video_path``; returns the edited MP4's path and the info dict (settings + speed).

    ``config`` is a :class:`ui.blocks.AppConfig` (limits, short_side, max_frames, output_dir); ``progress``
    receives the engine's ``(done, total)`` sampler steps. User mistakes raise :class:`UserError`.
    """
    if not video_path:
        raise UserError("Upload a video first (or pick one of the sample clips).")
    request = make_request(instruction, variant, s_t, s_i, steps,
                           pick_seed(seed, randomize, rng or np.random.default_rng()),
                           available_variants(editor.family))
    out_path = new_output_path(config.output_dir)
    try:
        result = editor.edit_video(video_path, out_path, request, limits=config.limits,
                                   short_side=config.short_side, max_frames=config.max_frames, progress=progress)
    except VideoError as e:
        raise UserError(f"Could not read the video: {e}.") from e
    except (ValueError, KeyError) as e:
        raise UserError(f"Could not edit the video: {e.args[0] if e.args else e}.") from e
    height, width = result.frames.shape[1:3]
    return str(out_path), describe(result, variant, (width, height))

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
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch.nn.functional as F

from editor import video_io
from editor.clockwork import CLOCK_RANGE, DEFAULT_CLOCK, check_clock
from editor.pipeline import SEED_RANGE, STEPS_RANGE, EditRequest, EditResult, Editor, Timings, whole_number
from editor.text_encoder import MiniLMEncoder
from editor.variants import VARIANTS, available_variants, clockwork_variants, full_step_variant
from editor.video_io import Clip, VideoError, read_clip
from editor.world.edits import FAMILIES

__all__ = ["CLOCK_RANGE", "DEFAULT_CLOCK", "SEED_RANGE", "STEPS_RANGE", "check_clock"]  # the ranges, re-exported

SHORT_SIDES = (256, 512)     # working sizes the Edit page offers (px on the short side), besides the app's own
KEEP_OUTPUTS = 32            # edited clips kept in the output folder; older ones are deleted
# The fastest variants that edit well, first: the one-step student, then the MMG student with the trained Clockwork
# adaptor; the teacher (3 passes a step) only when nothing else is there.
DEFAULT_ORDER = ("onestep", "mmg+clockwork", "mmg", "mmg+clockwork-identity", "teacher+clockwork",
                 "teacher+clockwork-identity", "teacher")

Progress = Callable[[int, int], None]
ProgressSink = Callable[[float, float, str], None]  # (frames done, frames in all, description)


class UserError(ValueError):
    """A problem with the user's input; the message is shown to the user as is."""


def pick_seed(seed: float | int | None, randomize: bool, rng: np.random.Generator, drawn: int | None = None) -> int:
    """The seed to use: with ``randomize``, ``drawn`` (a seed the preview already drew, so the edit's first frame is
    the preview) or a fresh one from ``rng``; else ``seed`` checked and made an int."""
    if randomize:
        return int(drawn) if drawn is not None else int(rng.integers(0, 2**31))
    if seed is None or (isinstance(seed, float) and not math.isfinite(seed)):
        raise UserError("Enter a seed, or tick 'Randomize'.")
    try:
        return whole_number("the seed", seed, *SEED_RANGE)
    except ValueError as e:
        raise settings_error(e) from e


def default_variant(variants: list[str]) -> str | None:
    """The variant a first visit starts with: the first of :data:`DEFAULT_ORDER` that the family has."""
    return next((n for n in DEFAULT_ORDER if n in variants), variants[0] if variants else None)


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


def make_request(instruction: str | None, variant: str, s_t: float, s_i: float, steps: float, seed: int,
                 variants: list[str], clock: float = DEFAULT_CLOCK) -> EditRequest:
    """Check the settings and build the :class:`EditRequest` (:meth:`EditRequest.from_settings`); bad settings
    raise :class:`UserError`."""
    if not (instruction or "").strip():
        raise UserError("Type an instruction first, e.g. 'make it black and white'.")
    if variant not in variants:
        raise UserError(f"Unknown variant {variant!r}; choose one of: {', '.join(variants)}.")
    try:
        return EditRequest.from_settings(instruction, variant, s_t=s_t, s_i=s_i, steps=steps, seed=seed, clock=clock)
    except (TypeError, ValueError) as e:
        raise settings_error(e) from e


def settings_error(e: Exception) -> UserError:
    """The user's message for a setting the engine refused: a range check's own sentence ("steps must be a whole
    number from 1 to 50, got 0"), anything else as invalid settings."""
    text = str(e)
    return UserError(f"{text[:1].upper()}{text[1:]}." if " must be " in text else f"Invalid settings: {text}.")


def short_sides(config) -> tuple[int, ...]:
    """Working sizes (px on the short side) offered: the app's own and :data:`SHORT_SIDES`."""
    return tuple(sorted({config.short_side, *SHORT_SIDES}))


def check_short_side(config, short_side: float | None) -> int:
    """The working size to edit at: ``short_side`` when offered (:func:`short_sides`), the app's own for ``None``."""
    if short_side is None:
        return config.short_side
    if short_side not in short_sides(config):
        raise UserError(f"The size must be one of {', '.join(map(str, short_sides(config)))} px, got {short_side}.")
    return int(short_side)


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


def _video_error(what: str, e: VideoError) -> UserError:
    return UserError(f"Could not {what} the video: {e}.")


def load_clip(editor: Editor, config, video_path: str | None, max_frames: int | None = None,
              short_side: int | None = None) -> Clip:
    """The clip as the engine will see it (working size, frame cap); bad input raises :class:`UserError`."""
    if not video_path:
        raise UserError("Upload a video first (or pick one of the sample clips).")
    try:
        return read_clip(video_path, short_side=short_side or config.short_side, limits=config.limits,
                         max_frames=max_frames or config.max_frames, multiple=editor.family.size_multiple)
    except VideoError as e:
        raise _video_error("read", e) from e


def frames_to_edit(config, video_path: str | None) -> int:
    """How many frames the engine will edit, from the container's header (:func:`editor.video_io.probe` decodes
    the first frame only), so an edit decodes its clip once, in the engine; bad input raises :class:`UserError`."""
    if not video_path:
        raise UserError("Upload a video first (or pick one of the sample clips).")
    try:
        info = video_io.probe(video_path, limits=config.limits)
    except VideoError as e:
        raise _video_error("read", e) from e
    fps = min(info["fps"] or video_io.DEFAULT_MAX_FPS, video_io.DEFAULT_MAX_FPS)
    cap = min(config.max_frames, config.limits.max_frames, max(1, math.ceil(config.limits.max_seconds * fps)))
    known = round(info["duration"] * fps) if info["duration"] else info["n_frames"]
    return max(1, min(cap, known or cap))


def clip_size(editor: Editor, video_path: str | None, short_side: int) -> tuple[int, int] | None:
    """``(width, height)`` the engine will edit ``video_path`` at (``None`` without a readable clip)."""
    if not video_path:
        return None
    try:
        info = video_io.probe(video_path)
    except VideoError:
        return None
    return video_io.working_size(info["width"], info["height"], short_side, editor.family.size_multiple)


def _engine_refusal(e: Exception) -> UserError:
    return UserError(f"Could not edit the video: {e.args[0] if e.args else e}.")


def edit_clip(editor: Editor, config, video_path: str, request: EditRequest, progress: Progress | None = None,
              short_side: int | None = None) -> EditResult:
    """Run the engine on ``video_path`` (decoded once, there) into a fresh output file; engine refusals become
    :class:`UserError`."""
    out_path = new_output_path(config.output_dir)
    try:
        return editor.edit_video(video_path, out_path, request, limits=config.limits,
                                 short_side=short_side or config.short_side, max_frames=config.max_frames,
                                 progress=progress)
    except VideoError as e:
        raise _video_error("read", e) from e
    except (ValueError, KeyError) as e:
        raise _engine_refusal(e) from e


def edit_loaded(editor: Editor, config, clip: Clip, request: EditRequest,
                progress: Progress | None = None) -> EditResult:
    """Edit the frames of a clip already decoded (several runs on one clip decode it once) into a fresh MP4 with
    the source's audio; engine refusals become :class:`UserError`."""
    out_path = new_output_path(config.output_dir)
    timings = Timings()
    try:
        result = editor.edit_frames(clip.frames, request, progress, timings)
    except (ValueError, KeyError) as e:
        raise _engine_refusal(e) from e
    with timings.stage("video_io"):
        video_io.write_clip(result.frames, clip.fps, out_path, audio_from=clip.path if clip.has_audio else None)
    return replace(result, fps=clip.fps, output_path=str(out_path), notes=clip.notes)


def request_from_settings(editor: Editor, instruction, variant, s_t, s_i, steps, seed, randomize,
                          clockwork: bool = False, clock: float = DEFAULT_CLOCK,
                          rng: np.random.Generator | None = None, drawn: int | None = None) -> EditRequest:
    """The :class:`EditRequest` for the Edit tab's settings; the Clockwork switch, when on, turns the variant into
    its Clockwork version (off, the variant is taken as it is: the selector already follows the switch). ``drawn``:
    the seed a Randomize preview drew (:func:`pick_seed`)."""
    variants = available_variants(editor.family)
    name = with_clockwork(variant, True, variants) if clockwork and variant in variants else variant
    return make_request(instruction, name, s_t, s_i, steps,
                        pick_seed(seed, randomize, rng or np.random.default_rng(), drawn), variants, clock)


# ----------------------------------------------------------------------------- what the embedded model knows

KNOWN_EDIT_SIMILARITY = 0.55  # below this cosine to every known paraphrase, an instruction gets a note (README)


class KnownEdits:
    """How near an instruction is to the edits the embedded family was trained on: the cosine of all-MiniLM-L6-v2's
    sentence embedding (the first state of :class:`editor.text_encoder.MiniLMEncoder`) to every paraphrase of every
    edit family (docs/DESIGN.md section 3). Far from all of them, the model can only tint; the note says so.
    Families with another text encoder (an InstructPix2Pix checkpoint) know open-ended edits: no note."""

    def __init__(self, family, threshold: float = KNOWN_EDIT_SIMILARITY):
        encoder = getattr(family.text_encoder, "encoder", family.text_encoder)
        self.encode = family.text_encoder if isinstance(encoder, MiniLMEncoder) else None
        self.threshold = threshold
        self.phrases = [(fam.id, p) for fam in FAMILIES.values() for p in fam.paraphrases]
        self._known = None

    def _embed(self, prompts: list[str]):
        return F.normalize(self.encode(prompts)[:, 0].float(), dim=-1)

    def nearest(self, instruction: str) -> tuple[float, str, str]:
        """``(cosine, family id, paraphrase)`` of the known paraphrase nearest ``instruction``."""
        if self._known is None:
            self._known = self._embed([p for _, p in self.phrases])
        sims = self._known @ self._embed([instruction])[0]
        k = int(sims.argmax())
        return float(sims[k]), *self.phrases[k]

    def note(self, instruction: str | None) -> str:
        """Markdown for an instruction far from every known edit, ``""`` otherwise (or for another encoder)."""
        if self.encode is None or not (instruction or "").strip():
            return ""
        sim, fid, phrase = self.nearest(instruction.strip())
        if sim >= self.threshold:
            return ""
        known = ", ".join(f.replace("_", " ") for f in FAMILIES)
        return (f"**The embedded model may not know this edit** (nearest known wording: \"{phrase}\", similarity "
                f"{sim:.2f} < {self.threshold}). It was trained on {len(FAMILIES)} whole-frame edits: {known}; "
                "anything else comes out as a colour tint at best. For open-ended edits, load an InstructPix2Pix "
                "checkpoint: `python app.py --model timbrooks/instruct-pix2pix`.")

"""The editing engine: clip -> frames -> latents -> sampler -> latents -> frames -> MP4, timed per stage.

``Editor.edit_frames`` reads like a table of contents; each step is a short function. Frames go through the sampler
in chunks of at most ``chunk`` frames, so memory stays bounded for long clips; when a clip needs several chunks the
anchor frame of cross-frame attention is prepended to each chunk, so every chunk attends to the same anchor.
"""
from __future__ import annotations

import math
import time
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Literal

import numpy as np
import torch

from editor import video_io
from editor.clockwork import DEFAULT_CLOCK, check_clock
from editor.guidance import Conditioning, Guidance
from editor.layout import check_frames, frames_to_images, images_to_frames
from editor.loading import ModelFamily
from editor.sampling import initial_noise, sample
from editor.variants import Variant, get_variant


DEFAULT_STEPS = 20           # sampler steps when neither the caller nor the family says (a family's own: default_steps)
STEPS_RANGE = (1, 50)        # sampler steps a request may ask for
SEED_RANGE = (0, 2**32 - 1)  # seeds a request may carry


def whole_number(name: str, value, lo: int, hi: int) -> int:
    """``value`` (an int, or a whole float as widgets send) as an int in ``[lo, hi]``; ``ValueError`` otherwise."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
            or value != int(value) or not lo <= value <= hi:
        raise ValueError(f"{name} must be a whole number from {lo} to {hi}, got {value!r}")
    return int(value)


@dataclass(frozen=True)
class EditRequest:
    """One edit, as the user set it (docs/DESIGN.md section 4.1). Build it with :meth:`from_settings`, the one way
    the UI, the study's pre-rendering, the evaluator and the bench turn settings into a request."""

    instruction: str
    guidance: Guidance = Guidance()
    steps: int = DEFAULT_STEPS
    seed: int = 0
    variant: str = "teacher"
    clock: int = DEFAULT_CLOCK  # Clockwork variants: full UNet every clock-th step
    cross_frame: bool = True
    chunk: int = 16

    def __post_init__(self):
        if not self.instruction.strip():
            raise ValueError("the instruction is empty")
        if self.steps < 1 or self.chunk < 1:
            raise ValueError("steps and chunk must be at least 1")
        check_clock(self.clock)

    @classmethod
    def from_settings(cls, instruction: str, variant: str = "teacher", *, family=None, s_t: float | None = None,
                      s_i: float | None = None, steps: float | None = None, seed: float = 0,
                      clock: float = DEFAULT_CLOCK) -> EditRequest:
        """The request for these settings, checked: steps, seed and clock whole numbers in :data:`STEPS_RANGE`,
        :data:`SEED_RANGE` and :data:`~editor.clockwork.CLOCK_RANGE` (widgets send floats); a ``None`` guidance
        scale or step count takes ``family``'s default (``Guidance()`` and :data:`DEFAULT_STEPS` without one).
        Bad settings raise ``ValueError`` with a message meant for the user."""
        g = family.default_guidance if family is not None else Guidance()
        if steps is None:
            steps = family.default_steps if family is not None else DEFAULT_STEPS
        guidance = Guidance(text=g.text if s_t is None else float(s_t), image=g.image if s_i is None else float(s_i))
        return cls(instruction.strip(), guidance, steps=whole_number("steps", steps, *STEPS_RANGE),
                   seed=whole_number("the seed", seed, *SEED_RANGE), variant=variant, clock=check_clock(clock))


@dataclass
class Timings:
    """Seconds per stage; ``stage()`` accumulates into a named field."""

    video_io: float = 0.0
    encode: float = 0.0
    unet: float = 0.0
    decode: float = 0.0

    @contextmanager
    def stage(self, name: str):
        t0 = time.perf_counter()
        try:
            yield
        finally:
            setattr(self, name, getattr(self, name) + time.perf_counter() - t0)

    @property
    def total(self) -> float:
        return self.video_io + self.encode + self.unet + self.decode


@dataclass
class EditResult:
    frames: np.ndarray                  # uint8 T H W 3
    request: EditRequest
    timings: Timings
    unet_passes: int                    # UNet forward passes per frame
    fps: float | None = None
    output_path: str | None = None
    notes: tuple[str, ...] = ()
    extra: dict = field(default_factory=dict)

    def summary(self) -> dict:
        """Speed figures per frame, for the UI and the benchmark."""
        n = len(self.frames)
        t = self.timings
        return {"frames": n, "ms_per_frame": 1000 * t.total / n, "fps": n / t.total if t.total else None,
                "unet_passes_per_frame": self.unet_passes,
                "stage_ms_per_frame": {k: 1000 * getattr(t, k) / n for k in ("video_io", "encode", "unet", "decode")}}


Progress = Callable[[int, int], None]  # (units done, units total)


Precision = Literal["fp32", "bf16"]


@dataclass(frozen=True)
class Speed:
    """How the engine runs the whole path on a CPU (docs/DESIGN.md section 8); results, not the models, change.

    ``unet`` / ``autoencoder``: ``"bf16"`` runs that part under CPU autocast (convolutions and matmuls in bfloat16 on
    oneDNN/AMX, the sampler's arithmetic in fp32); the bench reports the output's PSNR to the fp32 path, which must
    stay >= 35 dB. ``channels_last``: the autoencoder's input in NHWC, oneDNN's native convolution layout (the
    UNet is left NCHW: its GroupNorms and attention reshapes lose more than its convolutions gain, see the bench's
    ablation). ``ae_batch``: frames per autoencoder call (its full-resolution activations of a 16-frame batch do not
    fit in cache). Each field is measured by ``python -m editor.eval.bench --ablation``; :data:`EXACT` is the fp32
    reference the evaluator and the tests use, :data:`FAST` what the app, the live page and the bench run."""

    unet: Precision = "fp32"
    autoencoder: Precision = "fp32"
    channels_last: bool = False
    ae_batch: int = 16

    def __post_init__(self):
        if self.unet not in ("fp32", "bf16") or self.autoencoder not in ("fp32", "bf16"):
            raise ValueError(f"precision must be fp32 or bf16, got {self.unet!r} / {self.autoencoder!r}")
        if self.ae_batch < 1:
            raise ValueError("ae_batch must be at least 1")


EXACT = Speed()
FAST = Speed(unet="bf16", autoencoder="bf16", channels_last=True, ae_batch=4)


def autocast(precision: Precision):
    """CPU autocast to bfloat16 for ``"bf16"``, nothing for ``"fp32"``."""
    return torch.autocast("cpu", dtype=torch.bfloat16) if precision == "bf16" else nullcontext()


class Editor:
    """Edits clips with one model family; stateless between calls (each call builds its own denoiser state).
    ``speed`` (:class:`Speed`) says how the path runs: :data:`EXACT` (fp32) by default."""

    def __init__(self, family: ModelFamily, speed: Speed = EXACT):
        self.family = family
        self.speed = speed

    def edit_frames(self, frames: np.ndarray, request: EditRequest, progress: Progress | None = None,
                    timings: Timings | None = None,
                    instruction_states: tuple[torch.Tensor, torch.Tensor] | None = None) -> EditResult:
        """Edit ``uint8 T H W 3`` frames; returns the edited frames with timings. ``instruction_states``: the
        instruction's and the empty instruction's states from :meth:`encode_instruction`, when the caller keeps
        them (a live stream encodes its instruction once, not per frame)."""
        check_frames(frames)
        variant = get_variant(request.variant)
        timings = timings or Timings()
        with timings.stage("encode"):
            source = self.encode(frames)
            text, empty = instruction_states or self.encode_instruction(request.instruction)
            text, empty = text.expand(len(frames), -1, -1), empty.expand(len(frames), -1, -1)
        with timings.stage("unet"):
            latents = self._sample_chunks(variant, source, text, empty, request, progress)
        with timings.stage("decode"):
            out = self.decode(latents)
        return EditResult(out, request, timings, variant.unet_passes(request))

    def edit_video(self, path: str | Path, out_path: str | Path, request: EditRequest,
                   limits: video_io.VideoLimits = video_io.VideoLimits(), short_side: int = 256,
                   max_frames: int | None = None, progress: Progress | None = None) -> EditResult:
        """Read ``path``, edit it, write an H.264 MP4 with the source's audio to ``out_path``."""
        timings = Timings()
        with timings.stage("video_io"):
            clip = video_io.read_clip(path, short_side=short_side, limits=limits, max_frames=max_frames,
                                      multiple=self.family.size_multiple)
        result = self.edit_frames(clip.frames, request, progress, timings)
        with timings.stage("video_io"):
            video_io.write_clip(result.frames, clip.fps, out_path, audio_from=str(path) if clip.has_audio else None)
        return replace(result, fps=clip.fps, output_path=str(out_path), notes=clip.notes)

    def encode_instruction(self, instruction: str) -> tuple[torch.Tensor, torch.Tensor]:
        """``(instruction states, empty-instruction states)``, each ``1 L D`` (the family's encoder memoises them)."""
        states = self.family.text_encoder([instruction, ""])
        return states[0:1], states[1:2]

    @torch.no_grad()
    def encode(self, frames: np.ndarray) -> torch.Tensor:
        """``uint8 T H W 3`` frames -> noisy-space latents ``T C h w`` (fp32, contiguous), ``speed.ae_batch`` frames
        a call."""
        b, out = self.speed.ae_batch, []
        for i in range(0, len(frames), b):
            images = frames_to_images(frames[i:i + b])
            if self.speed.channels_last:
                images = images.contiguous(memory_format=torch.channels_last)
            with autocast(self.speed.autoencoder):
                out.append(self.family.encode(images).float().contiguous())
        return torch.cat(out)

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> np.ndarray:
        """Noisy-space latents ``T C h w`` -> ``uint8 T H W 3`` frames, ``speed.ae_batch`` latents a call."""
        b, out = self.speed.ae_batch, []
        for i in range(0, len(latents), b):
            x = latents[i:i + b]
            if self.speed.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            with autocast(self.speed.autoencoder):
                out.append(images_to_frames(self.family.decode(x).float().contiguous()))
        return np.concatenate(out)

    def _sample_chunks(self, variant: Variant, source, text, empty, request: EditRequest,
                       progress: Progress | None) -> torch.Tensor:
        n = len(source)
        anchor = n // 2
        chunks = [list(range(i, min(n, i + request.chunk))) for i in range(0, n, request.chunk)]
        steps = variant.steps(request)
        noise = initial_noise(tuple(source.shape[1:]), request.seed, 1)
        out = torch.empty_like(source)
        dtype = torch.bfloat16 if self.speed.unet == "bf16" else None
        for k, idx in enumerate(chunks):
            idx_run = idx if (anchor in idx or len(chunks) == 1) else [anchor] + idx
            cond = Conditioning(source=self.family.condition(source[idx_run]), text=text[idx_run],
                                empty=empty[idx_run], guidance=request.guidance,
                                anchor=idx_run.index(anchor) if request.cross_frame else None)
            model = variant.denoiser(self.family, request)
            cb = _chunk_callback(progress, k, len(chunks), steps)
            x = sample(model, noise.expand(len(idx_run), *noise.shape[1:]), cond, self.family.scheduler, steps, cb,
                       autocast=dtype)
            out[idx] = x[len(idx_run) - len(idx):]
        return out


def _chunk_callback(progress: Progress | None, chunk: int, chunks: int, steps: int):
    if progress is None:
        return None
    return lambda info: progress(chunk * steps + info.step + 1, chunks * steps)

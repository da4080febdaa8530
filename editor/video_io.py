"""Video reading and writing with PyAV: upright, resampled, size-limited ``Frames``.

``read_clip`` turns any file the bundled FFmpeg can decode into ``uint8 T H W 3`` RGB frames
(see :mod:`editor.layout`) at a fixed frame rate and working size, honouring rotation tags,
variable frame rates, 10-bit and alpha sources.  Bad input raises :class:`VideoError` whose
message can be shown to end users as is.  ``write_clip`` writes browser-playable H.264 MP4,
optionally carrying the audio of the source clip over.
"""
from __future__ import annotations

import logging
import math
import os
import shutil
import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from fractions import Fraction

import av
import numpy as np
from PIL import Image

from editor.layout import check_frames

log = logging.getLogger(__name__)

DEFAULT_MAX_FPS = 30.0          # default target fps is min(source fps, this)
TIME_EPS = 1e-4                 # seconds; tolerance when comparing frame times
MAX_BAD_PACKETS = 64            # consecutive undecodable packets before giving up
AAC_RATES = (96000, 88200, 64000, 48000, 44100, 32000, 24000, 22050, 16000, 12000, 11025, 8000)
AAC_FRAME_SIZE = 1024
MEDIA_MAGIC = (b"\x1a\x45\xdf\xa3", b"RIFF", b"GIF8", b"OggS", b"FLV", b"\x00\x00\x01\xba")
MP4_BOXES = (b"ftyp", b"moov", b"mdat", b"free", b"wide", b"skip", b"pnot")
FASTSTART_FORMATS = ("mp4", "mov", "m4v")


class VideoError(ValueError):
    """Bad or unsupported input; the message is shown to end users as is and names the problem."""


def _human_bytes(n: float) -> str:
    """``629145600`` -> ``'600 MB'``; ``1536`` -> ``'1.5 KB'``; ``12`` -> ``'12 bytes'``."""
    for unit, scale in (("GB", 2**30), ("MB", 2**20), ("KB", 2**10)):
        if n >= scale:
            return f"{n / scale:.1f}".rstrip("0").rstrip(".") + f" {unit}"
    return f"{int(n)} bytes"


@dataclass(frozen=True)
class VideoLimits:
    """What the app accepts: file size, duration and frame count kept, source resolution and shape, working size."""

    max_bytes: int = 200 * 2**20
    max_seconds: float = 30.0       # longer clips are cut (not rejected) at this duration
    max_frames: int = 240           # frames kept after fps resampling; longer clips are cut
    max_side: int = 8192            # source width/height limit; larger sources are rejected
    max_aspect: float = 8.0         # long side over short side; flatter or thinner sources are rejected
    max_working_pixels: int = 2**20  # working frames above this many pixels are made smaller (short side < asked)

    def __post_init__(self):
        for name in ("max_bytes", "max_seconds", "max_frames", "max_side", "max_aspect", "max_working_pixels"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise ValueError(f"VideoLimits.{name} must be a positive number, got {value!r}")
        if self.max_aspect < 1:
            raise ValueError(f"VideoLimits.max_aspect must be at least 1, got {self.max_aspect!r}")

    def describe(self) -> str:
        """One human line for the UI, e.g. ``'up to 200 MB, 30 s, 240 frames, 8192 px a side'``."""
        return (f"up to {_human_bytes(self.max_bytes)}, {self.max_seconds:g} s, "
                f"{self.max_frames} frames, {self.max_side} px a side")


@dataclass(frozen=True, eq=False)
class Clip:
    """Decoded frames plus what the UI needs to know about where they came from."""

    frames: np.ndarray = field(repr=False)  # uint8 T H W 3, already resized to the working size
    fps: float                      # fps of `frames`
    source_fps: float | None
    source_size: tuple[int, int]    # (width, height) after rotation
    rotation: int                   # clockwise degrees applied to make the frames upright
    has_audio: bool
    path: str
    truncated: bool                 # True when the clip was cut at max_seconds / max_frames
    notes: tuple[str, ...] = ()     # user-facing notes


def working_size(width: int, height: int, short_side: int = 256, multiple: int = 8,
                 max_pixels: int | None = None) -> tuple[int, int]:
    """Resize keeping the aspect ratio so the short side is `short_side`, or smaller when the frame would then
    have more than `max_pixels` pixels; round each side to a multiple of `multiple` (at least `multiple`).
    Returns ``(width, height)``."""
    if width <= 0 or height <= 0 or short_side <= 0 or multiple <= 0:
        raise ValueError(f"working_size needs positive sizes, got {width}x{height}, {short_side}, {multiple}")
    scale = short_side / min(width, height)
    capped = max_pixels is not None and width * height * scale * scale > max_pixels
    if capped:  # the pixel budget binds: scale to it, and round down so the budget holds after rounding
        scale = math.sqrt(max_pixels / (width * height))
    to_multiple = math.floor if capped else round
    return tuple(max(multiple, to_multiple(side * scale / multiple) * multiple) for side in (width, height))


# ----------------------------------------------------------------------------- errors / checks

def _looks_like_media(path: str) -> bool:
    """Whether the file starts like a known container (so a failure means damage, not a wrong type)."""
    try:
        with open(path, "rb") as f:
            head = f.read(16)
    except OSError:
        return False
    return head.startswith(MEDIA_MAGIC) or head[4:8] in MP4_BOXES


def _open_error(path: str, exc: BaseException) -> VideoError:
    """The user-facing error for a file FFmpeg refused to open."""
    if isinstance(exc, PermissionError):
        return VideoError("the file could not be read (permission denied)")
    if _looks_like_media(path):
        return VideoError("the file is truncated or corrupt")
    return VideoError("not a video file")


def _check_file(path: str, max_bytes: int | None = None) -> None:
    """Reject missing, empty and oversized files before FFmpeg touches them."""
    if not os.path.exists(path):
        raise VideoError("the file does not exist")
    if not os.path.isfile(path):
        raise VideoError("not a video file")
    size = os.path.getsize(path)
    if size == 0:
        raise VideoError("the file is empty")
    if max_bytes is not None and size > max_bytes:
        raise VideoError(f"file is {_human_bytes(size)}; the limit is {_human_bytes(max_bytes)}")


def _check_side(width: int, height: int, max_side: int, max_aspect: float | None = None) -> None:
    """Reject sources whose width or height exceed `max_side`, or whose shape is beyond `max_aspect`:1 (a clip of
    8192x16 pixels would need a working frame of 131072x256 to keep its short side)."""
    if width > max_side or height > max_side:
        raise VideoError(f"resolution {width}x{height} exceeds the limit of {max_side}x{max_side}")
    if max_aspect and width > 0 and height > 0 and max(width, height) > max_aspect * min(width, height):
        ratio = max(width, height) / min(width, height)
        raise VideoError(f"the clip is {width}x{height} pixels, {ratio:.3g} times as {'wide' if width > height else 'tall'}"
                         f" as it is {'tall' if width > height else 'wide'}; the limit is {max_aspect:g}:1")


def _open(path: str) -> av.container.InputContainer:
    """``av.open`` for reading, turning every failure into a :class:`VideoError`."""
    try:
        return av.open(path, mode="r", metadata_errors="ignore")
    except Exception as e:  # av.FFmpegError, OSError, UnicodeDecodeError, ...
        raise _open_error(path, e) from e


def _video_stream(container) -> av.video.stream.VideoStream:
    """The first video stream, or a :class:`VideoError` naming what the file holds instead."""
    if container.streams.video:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        return stream
    if container.streams.audio:
        raise VideoError("the clip has no video stream (audio only)")
    raise VideoError("not a video file (no video stream)")


# ----------------------------------------------------------------------------- stream facts

def _stream_fps(stream) -> float | None:
    """Nominal (average) frame rate of `stream`, or None when unknown or absurd."""
    for rate in (stream.average_rate, stream.guessed_rate, stream.base_rate):
        if rate and 0 < float(rate) <= 1000:
            return float(rate)
    return None


def _stream_duration(container, stream) -> float | None:
    """Duration in seconds from the stream, else the container; None when unknown."""
    if stream.duration and stream.time_base:
        return float(stream.duration * stream.time_base)
    if container.duration:
        return container.duration / av.time_base
    return None


def _frame_rotation(frame, stream) -> int:
    """Clockwise degrees (0/90/180/270) to turn `frame` upright, from its display matrix or
    the legacy ``rotate`` tag.  ``frame.rotation`` is counter-clockwise, hence the sign."""
    ccw = getattr(frame, "rotation", 0) or 0
    if ccw:
        return int(round(-ccw / 90.0)) * 90 % 360
    try:
        return int(round(float(stream.metadata.get("rotate", 0)) / 90.0)) * 90 % 360
    except (TypeError, ValueError):
        return 0


def _alpha_decoder(stream):
    """A libvpx VP9 decoder for a VP9 stream that carries alpha (WebM ``alpha_mode``), or None.

    FFmpeg's own vp9 decoder ignores the alpha plane, which WebM keeps beside each frame (BlockAdditional);
    libvpx-vp9 reads it, so transparent VP9 is composited like PNG, QuickTime or ProRes alpha (over black)."""
    if stream.codec_context.name != "vp9" or str(stream.metadata.get("alpha_mode", "")).strip() != "1":
        return None
    if "libvpx-vp9" not in av.codecs_available:
        log.warning("VP9 with alpha but no libvpx-vp9 decoder: the alpha channel is ignored")
        return None
    try:
        return av.CodecContext.create("libvpx-vp9", "r")
    except Exception as e:  # noqa: BLE001 -- fall back to FFmpeg's decoder (alpha ignored)
        log.warning("could not open libvpx-vp9 (%s): the alpha channel is ignored", e)
        return None


def _drain(ctx) -> list:
    """The frames a decoder still holds (a flush); none when it cannot give them."""
    try:
        return list(ctx.decode(None))
    except Exception:  # noqa: BLE001 -- a broken decoder state holds nothing worth keeping
        return []


def _decoded(container, stream) -> Iterator:
    """Decoded frames of `stream` in presentation order; damaged packets are skipped, and a run
    of :data:`MAX_BAD_PACKETS` undecodable packets (or a demuxer error) ends the stream."""
    bad = 0
    demux = container.demux(stream)
    alpha = _alpha_decoder(stream)
    while True:
        try:
            packet = next(demux)
        except StopIteration:
            return
        except Exception as e:
            # the data ends (or breaks) here: the frames still inside the decoder (threads, reordering) are
            # part of what the file holds, so drain them before saying so
            yield from _drain(alpha or stream.codec_context)
            raise VideoError("the file is truncated or corrupt") from e
        try:
            if alpha is None:
                frames = packet.decode()
            else:
                frames = alpha.decode(None if packet.size == 0 else packet)
        except Exception:
            bad += 1
            if bad >= MAX_BAD_PACKETS:
                raise VideoError("the file is truncated or corrupt") from None
            continue
        bad = 0 if frames else bad
        yield from frames


def probe(path, *, limits: VideoLimits | None = None) -> dict:
    """Facts about the video at `path` without decoding it all.

    Returns ``duration`` (s or None), ``fps`` (or None), ``width``/``height`` (after rotation),
    ``rotation`` (clockwise degrees applied to make it upright), ``has_audio``, ``n_frames``
    (estimate or None), ``codec`` and ``bytes``.  Decodes only the first frame (for the
    rotation).  With `limits`, file size and resolution are checked before any decoding.
    Raises :class:`VideoError`.
    """
    path = os.fspath(path)
    _check_file(path, limits.max_bytes if limits else None)
    with _open(path) as container:
        stream = _video_stream(container)
        width, height = stream.codec_context.width, stream.codec_context.height
        if limits:
            _check_side(width, height, limits.max_side, limits.max_aspect)
        first = next(_decoded(container, stream), None)
        if first is None:
            raise VideoError("no frames could be decoded")
        width, height = first.width, first.height
        if limits:
            _check_side(width, height, limits.max_side, limits.max_aspect)
        rotation = _frame_rotation(first, stream)
        alpha = first.format.name != "pal8" and _has_alpha(first)
        fps, duration = _stream_fps(stream), _stream_duration(container, stream)
        n_frames = stream.frames or (round(duration * fps) if duration and fps else None)
        if rotation in (90, 270):
            width, height = height, width
        return {"duration": duration, "fps": fps, "width": width, "height": height,
                "rotation": rotation, "has_audio": bool(container.streams.audio),
                "n_frames": n_frames, "codec": stream.codec_context.name, "alpha": alpha,
                "bytes": os.path.getsize(path)}


# ----------------------------------------------------------------------------- decoding

def _has_alpha(frame) -> bool:
    """Whether `frame`'s pixel format carries transparency (palettes may, e.g. GIF)."""
    fmt = frame.format
    return fmt.name == "pal8" or any(c.is_alpha for c in fmt.components)


def _to_rgb(frame) -> np.ndarray:
    """``uint8 H W 3`` RGB of any frame (10-bit, YUV, palette...); alpha is composited on black."""
    if not _has_alpha(frame):
        return frame.to_ndarray(format="rgb24")
    rgba = frame.to_ndarray(format="rgba").astype(np.uint16)
    return ((rgba[..., :3] * rgba[..., 3:] + 127) // 255).astype(np.uint8)


def _upright(rgb: np.ndarray, rotation: int) -> np.ndarray:
    """Rotate an ``H W C`` image `rotation` degrees clockwise (0, 90, 180 or 270)."""
    if rotation % 90:
        raise ValueError(f"rotation must be a multiple of 90, got {rotation}")
    return np.ascontiguousarray(np.rot90(rgb, k=-(rotation // 90) % 4))


def _frame_to_array(frame, size: tuple[int, int] | None, rotation: int) -> np.ndarray:
    """Decoded frame -> upright ``uint8 H W 3`` RGB resized to `size` = (width, height) upright."""
    rgb = _to_rgb(frame)
    if size is not None:
        w, h = size if rotation in (0, 180) else size[::-1]
        if (rgb.shape[1], rgb.shape[0]) != (w, h):
            rgb = np.asarray(Image.fromarray(rgb).resize((w, h), Image.BICUBIC, reducing_gap=3.0))
    return _upright(rgb, rotation)


def _frame_times(frames: Iterator, step: float) -> Iterator[tuple[object, float, float]]:
    """``(frame, time, duration)`` with times in seconds relative to the first frame; a frame
    without a timestamp is placed one duration after the previous one."""
    t0, prev = None, None
    for frame in frames:
        if frame.duration and frame.time_base:
            step = float(frame.duration * frame.time_base)
        t = float(frame.time) if frame.time is not None else (prev + step if prev is not None else 0.0)
        t0 = t if t0 is None else t0
        prev = t
        yield frame, t - t0, step


def _sample_times(frames: Iterator, fps: float, source_fps: float | None) -> Iterator[tuple[object, int]]:
    """Resample decoded frames to `fps`: for each output time k/fps yield ``(frame, k)`` with the
    latest frame whose time (relative to the first frame) is <= k/fps.  Skipped frames are never
    converted, and decoding stops as soon as the consumer does."""
    prev, end, k = None, 0.0, 0
    for frame, t, duration in _frame_times(frames, 1.0 / (source_fps or fps)):
        while prev is not None and k / fps < t - TIME_EPS:
            yield prev, k
            k += 1
        prev, end = frame, max(end, t + duration)
    while prev is not None and k / fps < end - TIME_EPS:
        yield prev, k
        k += 1


def iter_frames(path, *, fps: float | None = None, size: tuple[int, int] | None = None) -> Iterator[np.ndarray]:
    """Yield upright ``uint8 H W 3`` RGB frames sampled at `fps` (default min(source fps, 30)),
    each resized to `size` = (width, height) as it is decoded, so memory stays bounded.
    Decoding stops when the consumer stops iterating.  Raises :class:`VideoError`."""
    path = os.fspath(path)
    _check_file(path)
    with _open(path) as container:
        stream = _video_stream(container)
        source_fps = _stream_fps(stream)
        fps = _target_fps(fps, source_fps)
        last, last_array = None, None
        for frame, _ in _sample_times(_decoded(container, stream), fps, source_fps):
            if frame is not last:
                last, last_array = frame, _frame_to_array(frame, size, _frame_rotation(frame, stream))
            yield last_array


# ----------------------------------------------------------------------------- read_clip

def _target_fps(fps: float | None, source_fps: float | None) -> float:
    """The requested fps, or min(source fps, :data:`DEFAULT_MAX_FPS`)."""
    if fps is None:
        return min(source_fps, DEFAULT_MAX_FPS) if source_fps else DEFAULT_MAX_FPS
    if not (math.isfinite(fps) and fps > 0):
        raise ValueError(f"fps must be positive, got {fps!r}")
    return float(fps)


def _frame_cap(fps: float, max_frames: int, max_seconds: float) -> tuple[int, str]:
    """How many output frames to keep, and the note explaining a cut at that count."""
    by_time = max(1, math.ceil(max_seconds * fps - TIME_EPS))
    if max_frames <= by_time:
        return max_frames, f"limit {max_frames} frames at {fps:g} fps"
    return by_time, f"limit {max_seconds:g} s"


def _collect(frames: Iterator[np.ndarray], cap: int) -> tuple[list[np.ndarray], bool, str | None]:
    """Take up to `cap` frames; report whether more existed and why decoding stopped early."""
    kept: list[np.ndarray] = []
    try:
        for array in frames:
            if len(kept) == cap:
                return kept, True, None
            kept.append(array)
    except VideoError as e:
        if not kept:
            raise
        return kept, False, str(e)
    except Exception as e:  # never let a raw decoder error reach the user
        if not kept:
            raise VideoError("the file is truncated or corrupt") from e
        return kept, False, "the file is truncated or corrupt"
    finally:
        close = getattr(frames, "close", None)
        if close:
            close()
    return kept, False, None


def read_clip(path, *, short_side: int = 256, fps: float | None = None, max_frames: int | None = None,
              limits: VideoLimits = VideoLimits(), multiple: int = 8) -> Clip:
    """Decode `path` into a :class:`Clip`: upright RGB frames at `fps` (default min(source fps, 30))
    resized to :func:`working_size`, cut (not rejected) at ``limits.max_seconds`` and at
    `max_frames` (at most ``limits.max_frames``).  Raises :class:`VideoError` for bad input."""
    if max_frames is not None and max_frames < 1:
        raise ValueError(f"max_frames must be at least 1, got {max_frames!r}")
    path = os.fspath(path)
    info = probe(path, limits=limits)
    target_fps = _target_fps(fps, info["fps"])
    frame_limit = min(max_frames or limits.max_frames, limits.max_frames)
    cap, cap_reason = _frame_cap(target_fps, frame_limit, limits.max_seconds)
    size = working_size(info["width"], info["height"], short_side, multiple, limits.max_working_pixels)
    kept, truncated, damage = _collect(iter_frames(path, fps=target_fps, size=size), cap)
    if not kept:
        raise VideoError("no frames could be decoded")
    expected = _expected_frames(info, target_fps, cap)
    notes = _notes(info, target_fps, len(kept), truncated, cap_reason, damage, expected)
    return Clip(frames=check_frames(np.stack(kept)), fps=target_fps, source_fps=info["fps"],
                source_size=(info["width"], info["height"]), rotation=info["rotation"],
                has_audio=info["has_audio"], path=path, truncated=truncated, notes=notes)


def _expected_frames(info: dict, fps: float, cap: int) -> int | None:
    """Output frames the file's header promises (its duration at `fps`, at most `cap`); None when unknown."""
    if not info["duration"] or not math.isfinite(info["duration"]) or info["duration"] <= 0:
        return None
    return min(cap, max(1, math.ceil(info["duration"] * fps - TIME_EPS)))


def _short(n: int, expected: int | None) -> bool:
    """Whether `n` frames fall clearly short of the `expected` ones (not just a rounding of the last frame)."""
    return expected is not None and expected - n >= max(2, math.ceil(0.05 * expected))


def _notes(info: dict, fps: float, n: int, truncated: bool, cap_reason: str, damage: str | None,
           expected: int | None = None) -> tuple[str, ...]:
    """User-facing notes about what read_clip did to the clip."""
    notes = []
    if truncated:
        notes.append(f"cut to the first {n / fps:.1f} s ({cap_reason})")
    if info["rotation"]:
        notes.append(f"turned upright (rotated {info['rotation']}° clockwise as the file asks)")
    if info["fps"] and abs(info["fps"] - fps) > 0.01:
        notes.append(f"resampled from {info['fps']:.3g} fps to {fps:g} fps")
    if not truncated and _short(n, expected):
        # a file cut short decodes to its end without an error: only its header tells what is missing
        notes.append(f"read {n} of {expected} frames: the file is truncated or damaged; the frames read are edited")
    elif damage:
        notes.append(f"decoding stopped early ({damage}); kept {n} frames")
    if info.get("alpha"):
        notes.append("transparent areas composited over black")
    return tuple(notes)


# ----------------------------------------------------------------------------- writing

def _even(frames: np.ndarray) -> np.ndarray:
    """Pad odd widths/heights by one replicated pixel so yuv420p can hold them."""
    _, h, w, _ = frames.shape
    if h % 2 or w % 2:
        frames = np.pad(frames, ((0, 0), (0, h % 2), (0, w % 2), (0, 0)), mode="edge")
    return frames


def _aac_layout_rate(stream) -> tuple[str, int]:
    """Mono/stereo layout and the nearest AAC sample rate for an audio stream."""
    layout = "mono" if stream.codec_context.channels == 1 else "stereo"
    rate = stream.codec_context.sample_rate or 48000
    return layout, min(AAC_RATES, key=lambda r: abs(r - rate))


def _read_audio(path: str, seconds: float) -> tuple[np.ndarray, int, str] | None:
    """First `seconds` of the audio of `path` as planar float32 ``C N`` samples, with its rate and
    layout; None (with a warning) when there is no audio or it cannot be read."""
    try:
        with av.open(os.fspath(path), metadata_errors="ignore") as container:
            if not container.streams.audio:
                return None
            stream = container.streams.audio[0]
            layout, rate = _aac_layout_rate(stream)
            resampler = av.AudioResampler(format="fltp", layout=layout, rate=rate)
            need, chunks, have = int(round(seconds * rate)), [], 0
            for frame in container.decode(stream):
                for out in resampler.resample(frame):
                    chunks.append(out.to_ndarray())
                    have += chunks[-1].shape[1]
                if have >= need:
                    break
            if not chunks:
                return None
            return np.concatenate(chunks, axis=1)[:, :need].astype(np.float32), rate, layout
    except Exception as e:
        log.warning("could not read audio from %s, writing without audio: %s", path, e)
        return None


def _aac_frames(audio: tuple[np.ndarray, int, str]) -> Iterator[tuple[float, av.AudioFrame]]:
    """Planar float samples -> ``(start seconds, frame)`` in AAC-encoder-sized frames."""
    samples, rate, layout = audio
    for start in range(0, samples.shape[1], AAC_FRAME_SIZE):
        chunk = np.ascontiguousarray(samples[:, start:start + AAC_FRAME_SIZE])
        frame = av.AudioFrame.from_ndarray(chunk, format="fltp", layout=layout)
        frame.sample_rate, frame.pts, frame.time_base = rate, start, Fraction(1, rate)
        yield start / rate, frame


def _encode(frames: np.ndarray, rate: Fraction, path: str, audio, crf: int) -> None:
    """Write `frames` as H.264/yuv420p (and `audio` as AAC when given, interleaved) to `path`."""
    fmt = os.path.splitext(path)[1].lstrip(".").lower()
    options = {"movflags": "+faststart"} if fmt in FASTSTART_FORMATS else {}
    with av.open(path, mode="w", options=options) as container:
        video = container.add_stream("libx264", rate=rate, options={"crf": str(crf)})
        video.width, video.height, video.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        sound = container.add_stream("aac", rate=audio[1], layout=audio[2]) if audio else None
        pending = _aac_frames(audio) if audio else iter(())
        next_audio = next(pending, None)
        for i, array in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(array, format="rgb24")
            frame.pts, frame.time_base = i, 1 / rate
            container.mux(video.encode(frame))
            while next_audio is not None and next_audio[0] < (i + 1) / rate:
                container.mux(sound.encode(next_audio[1]))
                next_audio = next(pending, None)
        container.mux(video.encode(None))
        if sound is not None:
            container.mux(sound.encode(None))


def write_clip(frames: np.ndarray, fps: float, path, *, audio_from: str | None = None, crf: int = 20) -> str:
    """Write `frames` (``uint8 T H W 3``) as a browser-playable H.264 MP4 (yuv420p, even sides,
    ``+faststart``) at `fps`.  With `audio_from`, its audio is re-encoded to AAC and trimmed to
    the video's duration; audio problems only log a warning.  Returns the path."""
    check_frames(frames)
    if len(frames) == 0:
        raise ValueError("write_clip needs at least one frame")
    if not (math.isfinite(fps) and fps > 0):
        raise ValueError(f"fps must be positive, got {fps!r}")
    path = os.fspath(path)
    frames, rate = _even(frames), Fraction(fps).limit_denominator(1001)
    audio = _read_audio(audio_from, len(frames) / fps) if audio_from else None
    try:
        _encode(frames, rate, path, audio, crf)
    except Exception as e:
        if audio is None:
            raise
        log.warning("could not write audio to %s, writing without audio: %s", path, e)
        _encode(frames, rate, path, None, crf)
    return path


# ----------------------------------------------------------------------------- anonymous copies

PAD_BUCKET = 64 * 2**10  # padded copies are a multiple of this many bytes
MIN_PAD = 64             # every padded copy carries at least this many random bytes


def padded_size(sizes, bucket: int = PAD_BUCKET) -> int:
    """The size to pad files of ``sizes`` bytes to: the largest plus :data:`MIN_PAD`, rounded up to ``bucket``."""
    return -(-(max(sizes) + MIN_PAD) // bucket) * bucket


def padded_copy(src, dst, size: int) -> str:
    """Copy the MP4 ``src`` to ``dst`` and append a top-level ``free`` box of random bytes so that the copy is
    exactly ``size`` bytes (ISO 14496-12 8.1.2: players skip ``free`` boxes).  Two copies of one file differ, and
    files padded to one size cannot be told apart by their size (docs/DESIGN.md section 6)."""
    src, dst = os.fspath(src), os.fspath(dst)
    pad = size - os.path.getsize(src)
    if pad < MIN_PAD:
        raise ValueError(f"cannot pad {src} to {size} bytes")
    tmp = f"{dst}.tmp{os.getpid()}"
    shutil.copyfile(src, tmp)
    with open(tmp, "ab") as f:
        f.write(struct.pack(">I", pad) + b"free" + os.urandom(pad - 8))
    os.replace(tmp, dst)
    return dst

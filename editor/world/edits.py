"""The procedural edit world: edit families with exact targets and instruction paraphrases.

Each family is a deterministic function ``frame -> target`` on ``uint8 H W 3`` frames (stochastic families take a
seed), plus instruction paraphrases. The first ``N_SEEN`` paraphrases of every family are used for training; the rest
are held out to measure how well the model generalises to wordings it never saw (docs/DESIGN.md section 3).

Because targets are exact, the same functions give ground truth for training and for evaluation on any clip.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Literal

import numpy as np
from scipy import ndimage

from editor.layout import check_frames

N_SEEN = 4  # paraphrases 0..3 train; 4.. are held out

Split = Literal["seen", "held-out", "all"]


@dataclass(frozen=True)
class EditFamily:
    """One edit family: an id, a frame function and its instruction paraphrases."""

    id: str
    fn: Callable[[np.ndarray, np.random.Generator], np.ndarray]
    paraphrases: tuple[str, ...]

    def __post_init__(self):
        if len(self.paraphrases) < N_SEEN + 2:
            raise ValueError(f"{self.id}: need at least {N_SEEN + 2} paraphrases")

    def instructions(self, split: Split = "all") -> tuple[str, ...]:
        """Paraphrases of ``split``: ``seen`` (training), ``held-out`` or ``all``."""
        if split == "seen":
            return self.paraphrases[:N_SEEN]
        if split == "held-out":
            return self.paraphrases[N_SEEN:]
        return self.paraphrases

    def apply(self, frames: np.ndarray, seed: int = 0) -> np.ndarray:
        """Target clip for ``frames`` (``uint8 T H W 3``); one seed per clip, so stochastic edits stay consistent."""
        check_frames(frames)
        out = [self.fn(f, np.random.default_rng(seed)) for f in frames]
        return np.stack(out).astype(np.uint8)


# --- small colour helpers (float32 in [0, 1]) --------------------------------------------------------------------

def _f(x: np.ndarray) -> np.ndarray:
    return x.astype(np.float32) / 255.0


def _u8(x: np.ndarray) -> np.ndarray:
    return (np.clip(x, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def _luma(x: np.ndarray) -> np.ndarray:
    return x @ np.array([0.299, 0.587, 0.114], dtype=np.float32)


def _blur(x: np.ndarray, sigma: float) -> np.ndarray:
    s = (sigma, sigma, 0) if x.ndim == 3 else sigma
    return ndimage.gaussian_filter(x, s)


def _colormap(v: np.ndarray, stops: list[tuple[float, tuple[float, float, float]]]) -> np.ndarray:
    pos = np.array([p for p, _ in stops], dtype=np.float32)
    cols = np.array([c for _, c in stops], dtype=np.float32)
    return np.stack([np.interp(v, pos, cols[:, k]) for k in range(3)], axis=-1).astype(np.float32)


def _scale(frame: np.ndarray) -> float:
    """Pixel scale relative to a 256-px short side, so edits look the same at any working size."""
    return min(frame.shape[:2]) / 256.0


# --- the families ---------------------------------------------------------------------------------------------------

def black_and_white(frame, rng):
    y = _luma(_f(frame))
    return _u8(np.repeat(y[..., None], 3, -1))


def sepia(frame, rng):
    m = np.array([[0.393, 0.769, 0.189], [0.349, 0.686, 0.168], [0.272, 0.534, 0.131]], dtype=np.float32)
    return _u8(_f(frame) @ m.T)


def night(frame, rng):
    x = _f(frame)
    y = _luma(x)[..., None]
    x = 0.4 * x + 0.6 * y  # desaturate: the eye loses colour at night
    x = np.power(x, 1.6) * np.array([0.45, 0.55, 0.95], dtype=np.float32)
    return _u8(x + np.array([0.0, 0.01, 0.06], dtype=np.float32))


def sunset(frame, rng):
    x = _f(frame)
    h = x.shape[0]
    ramp = np.linspace(1.0, 0.0, h, dtype=np.float32)[:, None, None]
    glow = ramp * np.array([1.0, 0.45, 0.1], dtype=np.float32)
    x = x * np.array([1.1, 0.8, 0.55], dtype=np.float32)
    return _u8(0.7 * x + 0.35 * glow)


def snow(frame, rng):
    x = _f(frame)
    y = _luma(x)[..., None]
    x = 0.6 * x + 0.4 * y
    x = 0.75 * x + 0.25 * np.array([0.85, 0.9, 1.0], dtype=np.float32)
    h, w = x.shape[:2]
    s = _scale(frame)
    flakes = np.zeros((h, w), np.float32)
    n = int(0.004 * h * w)
    ys, xs = rng.integers(0, h, n), rng.integers(0, w, n)
    flakes[ys, xs] = rng.uniform(0.6, 1.0, n)
    flakes = np.clip(_blur(flakes, 0.8 * s) * 4.0, 0, 1)[..., None]
    return _u8(x * (1 - flakes) + flakes)


def fog(frame, rng):
    x = _blur(_f(frame), 1.5 * _scale(frame))
    h = x.shape[0]
    density = np.linspace(0.45, 0.7, h, dtype=np.float32)[:, None, None]
    return _u8(x * (1 - density) + density * np.array([0.82, 0.84, 0.86], dtype=np.float32))


def cartoon(frame, rng):
    s = _scale(frame)
    x = ndimage.median_filter(_f(frame), size=(5, 5, 1))
    x = np.round(x * 4) / 4  # flat colour bands
    y = _luma(_blur(_f(frame), 1.0 * s))
    edges = np.hypot(ndimage.sobel(y, 0), ndimage.sobel(y, 1))
    ink = (edges > 0.35).astype(np.float32)[..., None]
    return _u8(x * (1 - ink))


def pencil_sketch(frame, rng):
    y = _luma(_f(frame))
    blurred = _blur(1.0 - y, 3.0 * _scale(frame))
    dodge = np.clip(y / np.maximum(1.0 - blurred, 1e-3), 0, 1)  # colour dodge: the classic pencil effect
    return _u8(np.repeat(dodge[..., None], 3, -1))


_THERMAL = [(0.0, (0.0, 0.0, 0.1)), (0.25, (0.35, 0.0, 0.6)), (0.5, (0.85, 0.1, 0.3)),
            (0.75, (1.0, 0.6, 0.0)), (1.0, (1.0, 1.0, 0.8))]


def thermal(frame, rng):
    y = _luma(_blur(_f(frame), 1.0 * _scale(frame)))
    return _u8(_colormap(y, _THERMAL))


def pixel_art(frame, rng):
    h, w = frame.shape[:2]
    b = max(2, int(round(8 * _scale(frame))))
    hb, wb = -(-h // b), -(-w // b)
    pad = np.pad(_f(frame), ((0, hb * b - h), (0, wb * b - w), (0, 0)), mode="edge")
    small = pad.reshape(hb, b, wb, b, 3).mean(axis=(1, 3))
    small = np.round(small * 5) / 5  # a small palette
    return _u8(small.repeat(b, 0).repeat(b, 1)[:h, :w])


def invert(frame, rng):
    return (255 - frame).astype(np.uint8)


def warm(frame, rng):
    return _u8(_f(frame) * np.array([1.18, 1.02, 0.78], dtype=np.float32) + np.array([0.04, 0.01, 0.0], np.float32))


def cool(frame, rng):
    return _u8(_f(frame) * np.array([0.78, 0.98, 1.18], dtype=np.float32) + np.array([0.0, 0.01, 0.04], np.float32))


FAMILIES: dict[str, EditFamily] = {f.id: f for f in [
    EditFamily("black_and_white", black_and_white, (
        "make it black and white", "convert to grayscale", "remove all the colors", "turn it into a monochrome video",
        "desaturate the footage completely", "make it look like an old black-and-white film")),
    EditFamily("sepia", sepia, (
        "apply a sepia tone", "make it look like an old sepia photograph", "give it a brownish vintage sepia look",
        "turn it sepia", "tint it in antique brown tones", "make it look like a faded photo from the 1900s")),
    EditFamily("night", night, (
        "make it night", "turn day into night", "make it look like it was filmed at night", "make it dark and moonlit",
        "change the time to midnight", "make the scene look like nighttime")),
    EditFamily("sunset", sunset, (
        "make it sunset", "add a warm sunset glow", "make it look like golden hour at dusk", "bathe it in orange evening light",
        "change the time to sunset", "make it look like the sun is setting")),
    EditFamily("snow", snow, (
        "make it snow", "add falling snow", "make it a snowy winter day", "cover it in snowflakes",
        "add a snowstorm", "make it look like it is snowing")),
    EditFamily("fog", fog, (
        "make it foggy", "add thick fog", "cover the scene in mist", "make it hazy and misty",
        "add a dense haze", "make it look like a foggy morning")),
    EditFamily("cartoon", cartoon, (
        "make it a cartoon", "turn it into a cartoon", "give it a cel-shaded comic look", "make it look animated",
        "make it look like a comic book", "turn the video into an animation")),
    EditFamily("pencil_sketch", pencil_sketch, (
        "make it a pencil sketch", "turn it into a pencil drawing", "make it look hand drawn with a pencil",
        "convert it to a graphite sketch", "make it look like a sketch", "draw it in pencil")),
    EditFamily("thermal", thermal, (
        "make it a thermal camera image", "show it in infrared heat vision", "apply a thermal imaging look",
        "make it look like a heat map", "make it look like night-vision thermal footage", "view it through a heat camera")),
    EditFamily("pixel_art", pixel_art, (
        "make it pixel art", "pixelate it", "make it look like an 8-bit video game", "turn it into retro pixel graphics",
        "make it blocky and pixelated", "make it look like an old video game")),
    EditFamily("invert", invert, (
        "invert the colors", "make it a photo negative", "turn it into a negative image", "reverse all the colors",
        "make it look like a film negative", "flip the colors to their opposites")),
    EditFamily("warm", warm, (
        "make it warmer", "give it a warm color grade", "add a warm tone", "make the colors warmer and cozier",
        "warm up the colors", "give it a warm orange tint")),
    EditFamily("cool", cool, (
        "make it cooler", "give it a cool blue color grade", "add a cold blue tone", "make the colors colder",
        "cool down the colors", "give it a chilly blue tint")),
]}


def get_family(edit_id: str) -> EditFamily:
    """The family ``edit_id``; a clear error lists the valid ids."""
    try:
        return FAMILIES[edit_id]
    except KeyError:
        raise KeyError(f"unknown edit family {edit_id!r}; known: {', '.join(FAMILIES)}") from None


def all_targets(frames: np.ndarray, seed: int = 0) -> dict[str, np.ndarray]:
    """Every family's target for ``frames`` (family id -> ``T H W 3`` uint8), as the metrics compare against."""
    return {k: f.apply(frames, seed) for k, f in FAMILIES.items()}


def family_of(instruction: str) -> str | None:
    """The family whose paraphrase is exactly ``instruction`` (case- and space-insensitive), else ``None``."""
    key = " ".join(instruction.lower().split()).rstrip(".!")
    for fam in FAMILIES.values():
        if key in (p.lower() for p in fam.paraphrases):
            return fam.id
    return None


# Extra training wordings (``--templated-instructions`` of the teacher and student trainers): each family's terms,
# found verbatim in its seen paraphrases, in fixed carrier phrases. MiniLM's sentence embedding places 24 of 26
# held-out paraphrases nearest a seen paraphrase of their own family, yet the shipped teacher, trained on four exact
# sentences a family, hits 46 of 52 edits with seen wording and 37 with held-out wording; varying the sentence around
# the terms asks it to read the family from the terms. The held-out paraphrases stay unseen: no template or term comes
# from them. Tried in stop 24 (model card): 38 of 52 with held-out wording, not shipped.
TRAINING_TEMPLATES = ("{}", "apply a {} filter", "give the video a {} style", "{} look, please")
TRAINING_TERMS = {
    "black_and_white": ("black and white", "monochrome"), "sepia": ("sepia", "brownish vintage sepia"),
    "night": ("night", "dark and moonlit"), "sunset": ("sunset", "golden hour"), "snow": ("snow", "snowy winter"),
    "fog": ("thick fog", "mist"), "cartoon": ("cartoon", "cel-shaded comic"),
    "pencil_sketch": ("pencil sketch", "graphite sketch"), "thermal": ("thermal imaging", "infrared heat vision"),
    "pixel_art": ("pixel art", "retro pixel graphics"), "invert": ("photo negative", "negative image"),
    "warm": ("warm color grade", "warm tone"), "cool": ("cool blue color grade", "cold blue tone"),
}


def training_instructions(family: EditFamily, templated: bool = False) -> tuple[str, ...]:
    """The wordings a trainer uses for ``family``: its seen paraphrases, plus with ``templated`` every
    ``TRAINING_TEMPLATES`` x ``TRAINING_TERMS`` wording (the same count for every family)."""
    seen = family.instructions("seen")
    if not templated:
        return seen
    return seen + tuple(t.format(term) for term in TRAINING_TERMS[family.id] for t in TRAINING_TEMPLATES)


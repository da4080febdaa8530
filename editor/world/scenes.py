"""Source frames and clips that need no network (docs/DESIGN.md section 3).

Real photos that dependencies ship (scikit-image, scikit-learn, gradio), procedural scenes, and a virtual camera that
pans and zooms over a still to make a clip. Training and evaluation never share a source: the evaluation split holds
two gradio photos, gradio's two real videos, and procedural scenes from a disjoint seed range.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
from PIL import Image

Split = Literal["train", "eval"]

EVAL_SEED_OFFSET = 1_000_000  # procedural scenes with seeds at or above this are evaluation-only
_SKIMAGE_COLOR = ("astronaut", "cat", "chelsea", "coffee", "hubble_deep_field", "immunohistochemistry", "retina",
                  "rocket", "stereo_motorcycle", "colorwheel")
_SKIMAGE_GRAY = ("brick", "camera", "grass", "gravel", "moon", "coins", "cell", "clock")
_GRADIO_TRAIN = ("bus.png", "cheetah.jpg", "cheetah1.jpg", "groot.jpeg")
_GRADIO_EVAL = ("lion.jpg", "tower.jpg")


def gradio_media_dir() -> Path:
    import gradio

    return Path(gradio.__file__).parent / "media_assets"


def _rgb(img) -> np.ndarray:
    if isinstance(img, tuple):  # skimage.data.stereo_motorcycle returns (left, right, disparity)
        img = img[0]
    if img.dtype != np.uint8:
        img = (np.clip(img, 0, 1) * 255).astype(np.uint8) if img.max() <= 1 else img.astype(np.uint8)
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, -1)
    return np.ascontiguousarray(img[..., :3])


def _tint(gray: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Colourise a grey photo with a random two-colour ramp, so grey textures add colour variety."""
    y = gray.astype(np.float32)[..., :1] / 255.0
    lo, hi = rng.uniform(0, 0.5, 3), rng.uniform(0.5, 1.0, 3)
    return (255 * (lo + (hi - lo) * y)).astype(np.uint8)


def real_photos(split: Split) -> list[np.ndarray]:
    """Real photos shipped by dependencies, ``uint8 H W 3``; ``train`` and ``eval`` are disjoint."""
    media = gradio_media_dir() / "images"
    if split == "eval":
        return [_rgb(np.asarray(Image.open(media / n).convert("RGB"))) for n in _GRADIO_EVAL]
    import skimage.data
    from sklearn.datasets import load_sample_images

    rng = np.random.default_rng(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        photos = [_rgb(getattr(skimage.data, n)()) for n in _SKIMAGE_COLOR]
        photos += [_tint(_rgb(getattr(skimage.data, n)()), rng) for n in _SKIMAGE_GRAY]
    photos += [_rgb(im) for im in load_sample_images().images]
    photos += [_rgb(np.asarray(Image.open(media / n).convert("RGB"))) for n in _GRADIO_TRAIN]
    return photos


def procedural_scene(seed: int, size: tuple[int, int] = (384, 512)) -> np.ndarray:
    """A random landscape-like scene: sky and ground gradients, a sun, blobs, boxes and texture (``uint8 H W 3``)."""
    rng = np.random.default_rng(seed)
    h, w = size
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    horizon = rng.uniform(0.3, 0.7) * h
    sky = rng.uniform(0, 1, 3)[None, None] * (1 - yy[..., None] / h) + rng.uniform(0, 1, 3)[None, None] * (yy[..., None] / h)
    ground = rng.uniform(0, 1, 3)[None, None] * (0.6 + 0.4 * (yy[..., None] / h))
    img = np.where(yy[..., None] < horizon, sky, ground)
    for _ in range(rng.integers(3, 9)):
        cy, cx, r = rng.uniform(0, h), rng.uniform(0, w), rng.uniform(0.03, 0.2) * w
        mask = ((yy - cy) ** 2 + (xx - cx) ** 2 < r * r)[..., None]
        img = np.where(mask, rng.uniform(0, 1, 3)[None, None], img)
    for _ in range(rng.integers(2, 7)):
        y0, x0 = rng.uniform(0, h), rng.uniform(0, w)
        y1, x1 = y0 + rng.uniform(0.05, 0.4) * h, x0 + rng.uniform(0.05, 0.3) * w
        mask = ((yy > y0) & (yy < y1) & (xx > x0) & (xx < x1))[..., None]
        img = np.where(mask, rng.uniform(0, 1, 3)[None, None], img)
    img = img + rng.uniform(0.0, 0.08) * rng.standard_normal((h, w, 1))
    return (np.clip(img, 0, 1) * 255).astype(np.uint8)


@dataclass(frozen=True)
class CameraPath:
    """A virtual camera over a still: crop box centre and size move linearly from ``start`` to ``end``.

    Each of ``start``/``end`` is ``(cy, cx, scale)`` in units of the image (scale = crop side / image short side).
    """

    start: tuple[float, float, float]
    end: tuple[float, float, float]

    @staticmethod
    def random(rng: np.random.Generator, motion: float = 0.15) -> "CameraPath":
        s0 = rng.uniform(0.55, 0.9)
        s1 = float(np.clip(s0 * rng.uniform(0.85, 1.15), 0.45, 1.0))
        c0 = rng.uniform(0.35, 0.65, 2)
        c1 = np.clip(c0 + rng.uniform(-motion, motion, 2), 0.3, 0.7)
        return CameraPath((c0[0], c0[1], s0), (c1[0], c1[1], s1))


def crop_frame(image: np.ndarray, cy: float, cx: float, scale: float, out: tuple[int, int]) -> np.ndarray:
    """Crop a box of aspect ``out`` (h, w) centred at (cy, cx), side ``scale`` * short side, resized to ``out``."""
    h, w = image.shape[:2]
    oh, ow = out
    ch = scale * min(h, w) * min(1.0, oh / ow)
    cw = ch * ow / oh
    if cw > w:
        ch, cw = ch * w / cw, w
    y0 = float(np.clip(cy * h - ch / 2, 0, h - ch))
    x0 = float(np.clip(cx * w - cw / 2, 0, w - cw))
    box = (x0, y0, x0 + cw, y0 + ch)
    return np.asarray(Image.fromarray(image).resize((ow, oh), Image.BICUBIC, box=box))


def camera_clip(image: np.ndarray, path: CameraPath, n_frames: int, out: tuple[int, int] = (256, 256)) -> np.ndarray:
    """A clip ``uint8 T H W 3`` of ``n_frames`` along ``path`` over ``image``."""
    ts = np.linspace(0.0, 1.0, n_frames)
    a, b = np.array(path.start), np.array(path.end)
    return np.stack([crop_frame(image, *((1 - t) * a + t * b), out) for t in ts])


def darken(frame: np.ndarray, gain: float) -> np.ndarray:
    """``frame`` under-exposed by ``gain`` (< 1) in linear light: sRGB decoded with gamma 2.2, scaled, re-encoded."""
    lin = (frame.astype(np.float32) / 255.0) ** 2.2 * gain
    return np.clip(255.0 * lin ** (1 / 2.2) + 0.5, 0, 255).astype(np.uint8)


def training_frames(n: int, seed: int = 0, size: int = 256, procedural_share: float = 0.25,
                    dark_share: float = 0.0, dark_gain: tuple[float, float] = (0.002, 0.3)) -> np.ndarray:
    """``n`` random training frames ``uint8 n size size 3``: random crops of training photos and procedural scenes.

    ``dark_share`` of them are under-exposed by a log-uniform linear-light gain in ``dark_gain`` (night shots, dark
    footage; 0.002 takes a mid-grey 128 to about 8). Those draws come from their own generator, so the frames a seed
    gives with ``dark_share=0`` are unchanged.
    """
    rng, dark_rng = np.random.default_rng(seed), np.random.default_rng(seed + 1)
    photos = real_photos("train")
    frames = []
    for _ in range(n):
        if rng.uniform() < procedural_share:
            img = procedural_scene(int(rng.integers(0, EVAL_SEED_OFFSET)))
        else:
            img = photos[rng.integers(len(photos))]
        if rng.uniform() < 0.5:
            img = img[:, ::-1]
        cy, cx = rng.uniform(0.3, 0.7, 2)
        frame = crop_frame(np.ascontiguousarray(img), cy, cx, rng.uniform(0.4, 1.0), (size, size))
        dark, log_gain = dark_rng.uniform(), dark_rng.uniform(*np.log(dark_gain))
        frames.append(darken(frame, float(np.exp(log_gain))) if dark < dark_share else frame)
    return np.stack(frames)


def eval_clips(n_frames: int = 16, size: tuple[int, int] = (256, 256), n_procedural: int = 2) -> dict[str, np.ndarray]:
    """Evaluation-only clips made from held-out photos and procedural scenes (gradio's real videos are files)."""
    rng = np.random.default_rng(EVAL_SEED_OFFSET)
    clips = {}
    for name, img in zip(_GRADIO_EVAL, real_photos("eval")):
        clips[f"pan_{Path(name).stem}"] = camera_clip(img, CameraPath.random(rng), n_frames, size)
    for k in range(n_procedural):
        img = procedural_scene(EVAL_SEED_OFFSET + k)
        clips[f"procedural_{k}"] = camera_clip(img, CameraPath.random(rng), n_frames, size)
    return clips


def real_videos() -> list[Path]:
    """Gradio's two real videos (evaluation only)."""
    d = gradio_media_dir() / "videos"
    return [d / "a.mp4", d / "b.mp4"]


def write_eval_clips(folder: Path, n_frames: int = 16, fps: float = 8.0) -> list[Path]:
    """Write the evaluation clips, all real footage: gradio's two real videos (resampled to ``fps``, short side 256)
    and camera pans over the two held-out gradio photos. None of these is ever used for training."""
    from editor import video_io

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for src, name in zip(real_videos(), ("real_motion_graphic.mp4", "real_earth.mp4")):
        clip = video_io.read_clip(src, short_side=256, fps=fps, multiple=32)
        # the last frames: the motion graphic opens on a flat background
        written.append(Path(video_io.write_clip(clip.frames[-n_frames:], clip.fps, folder / name, crf=16)))
    for name, frames in eval_clips(n_frames, n_procedural=0).items():
        written.append(Path(video_io.write_clip(frames, fps, folder / f"{name}.mp4", crf=16)))
    return written


def write_train_clips(folder: Path, n: int = 3, n_frames: int = 8, fps: float = 8.0,
                      dark_gain: float | None = None) -> list[Path]:
    """Pans over *training* photos: for tuning defaults (guidance scales) without touching evaluation clips. With
    ``dark_gain``, each pan is also written under-exposed by that linear-light gain (``darken``), so defaults are
    tuned on dark footage too."""
    from editor import video_io

    rng = np.random.default_rng(7)
    photos = real_photos("train")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for k in range(n):
        clip = camera_clip(photos[int(rng.integers(len(photos)))], CameraPath.random(rng), n_frames)
        written.append(Path(video_io.write_clip(clip, fps, folder / f"train_pan_{k}.mp4")))
        if dark_gain is not None:
            dark = np.stack([darken(f, dark_gain) for f in clip])
            written.append(Path(video_io.write_clip(dark, fps, folder / f"train_pan_{k}_dark.mp4")))
    return written


if __name__ == "__main__":
    import argparse

    p = argparse.ArgumentParser(description="Write evaluation clips (never used for training) or tuning clips.")
    p.add_argument("--write-eval", type=Path, default=None)
    p.add_argument("--write-train", type=Path, default=None, help="pans over training photos, for tuning")
    p.add_argument("--train-dark-gain", type=float, default=None,
                   help="also write each training pan under-exposed by this linear-light gain (e.g. 0.01)")
    a = p.parse_args()
    paths = (write_eval_clips(a.write_eval) if a.write_eval else []) + \
        (write_train_clips(a.write_train, dark_gain=a.train_dark_gain) if a.write_train else [])
    print("\n".join(map(str, paths)))

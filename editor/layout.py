"""The tensor layouts used across the engine, declared once and asserted at the edges.

* ``Frames``: numpy ``uint8`` array ``T H W 3`` (RGB) -- what video I/O reads and writes.
* ``Images``: torch ``float32`` tensor ``T 3 H W`` in ``[-1, 1]`` -- what the autoencoder takes and gives.
* ``Latents``: torch tensor ``T C h w`` -- what the UNet sees.
"""
from __future__ import annotations

import numpy as np
import torch


def check_frames(frames: np.ndarray) -> np.ndarray:
    """Assert ``frames`` is ``uint8 T H W 3``; return it unchanged."""
    if not (isinstance(frames, np.ndarray) and frames.dtype == np.uint8 and frames.ndim == 4 and frames.shape[-1] == 3):
        raise ValueError(f"expected uint8 frames T H W 3, got {getattr(frames, 'dtype', type(frames))} {getattr(frames, 'shape', '')}")
    return frames


def frames_to_images(frames: np.ndarray) -> torch.Tensor:
    """``uint8 T H W 3`` -> ``float32 T 3 H W`` in ``[-1, 1]``."""
    check_frames(frames)
    return torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).float().div(127.5).sub(1.0)


def images_to_frames(images: torch.Tensor) -> np.ndarray:
    """``float T 3 H W`` in ``[-1, 1]`` -> ``uint8 T H W 3`` (clamped, rounded)."""
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"expected images T 3 H W, got {tuple(images.shape)}")
    out = images.detach().float().add(1.0).mul(127.5).round().clamp(0, 255).to(torch.uint8)
    return out.permute(0, 2, 3, 1).contiguous().cpu().numpy()

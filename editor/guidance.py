"""Multimodal classifier-free guidance (InstructPix2Pix Eq. 3; MoViE Eq. 1) as a thin wrapper around a UNet.

    e = e(x, 0, 0) + s_I * (e(x, c_I, 0) - e(x, 0, 0)) + s_T * (e(x, c_I, c_T) - e(x, c_I, 0))

The three branches run as one batched UNet call. Unlike diffusers' InstructPix2Pix pipeline, nothing is switched
off behind the user's back when ``s_I < 1``: the formula is applied as written for every slider value.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch

from editor.cross_frame_attention import FrameLayout

TEXT_RANGE = (1.0, 14.0)   # s_T slider range
IMAGE_RANGE = (1.0, 3.0)   # s_I slider range


@dataclass(frozen=True)
class Guidance:
    """Guidance scales ``s_T`` (instruction) and ``s_I`` (source image)."""

    text: float = 7.5
    image: float = 1.5

    def __post_init__(self):
        if not (0.0 <= self.text <= 50.0 and 0.0 <= self.image <= 50.0):
            raise ValueError(f"guidance scales out of range: text={self.text}, image={self.image}")


class PerSampleGuidance(NamedTuple):
    """Per-sample scales ``B 1 1 1`` (duck-types :class:`Guidance` for :func:`combine` and the MMG embedding): the
    distillation and adaptor-training batches draw a different ``(s_T, s_I)`` for every sample."""

    text: torch.Tensor
    image: torch.Tensor

    @classmethod
    def of(cls, s_t, s_i, batch: int, like: torch.Tensor) -> "PerSampleGuidance":
        """Floats or ``B`` tensors as ``B 1 1 1`` on ``like``'s device and dtype."""
        def shape(s):
            s = torch.as_tensor(s, dtype=like.dtype, device=like.device).reshape(-1)
            return s.expand(batch).reshape(batch, 1, 1, 1)
        return cls(shape(s_t), shape(s_i))


def combine(uncond: torch.Tensor, image: torch.Tensor, full: torch.Tensor, g: Guidance) -> torch.Tensor:
    """MoViE Eq. 1 on the three branch predictions."""
    return uncond + g.image * (image - uncond) + g.text * (full - image)


@dataclass
class Conditioning:
    """What a denoiser needs besides ``x`` and ``t``, for a batch of ``B`` frames."""

    source: torch.Tensor        # B C h w: source latents, already in the UNet's conditioning scale
    text: torch.Tensor          # B L D instruction states
    empty: torch.Tensor         # B L D states of the empty instruction
    guidance: Guidance
    anchor: int | None = None   # cross-frame attention anchor (index in the batch); None: off


class ThreePassGuidance:
    """The teacher's denoiser: three UNet branches a step, batched, combined with Eq. 1."""

    passes_per_step = 3

    def __init__(self, unet):
        self.unet = unet

    def __call__(self, x: torch.Tensor, t: torch.Tensor, c: Conditioning) -> torch.Tensor:
        return combine(*self.branches(x, t, c), c.guidance)

    def branches(self, x: torch.Tensor, t: torch.Tensor, c: Conditioning) -> tuple[torch.Tensor, ...]:
        """``(e(x, 0, 0), e(x, c_I, 0), e(x, c_I, c_T))`` from one batched call (``c.guidance`` unused)."""
        b = x.shape[0]
        latents = torch.cat([x, x, x])
        source = torch.cat([torch.zeros_like(c.source), c.source, c.source])
        text = torch.cat([c.empty, c.empty, c.text])
        out = self.unet(torch.cat([latents, source], 1), t.repeat(3), text, **unet_kwargs(3, b, c.anchor)).sample
        return out.chunk(3)


def unet_kwargs(groups: int, frames: int, anchor: int | None) -> dict:
    """``cross_attention_kwargs`` carrying the frame layout for cross-frame attention (empty when off)."""
    if anchor is None:
        return {}
    return {"cross_attention_kwargs": {"frame_layout": FrameLayout(groups, frames, anchor)}}

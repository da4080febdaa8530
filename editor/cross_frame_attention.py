"""MoViE's cross-frame attention (arXiv 2412.06578, section 3.1; after Text2Video-Zero, Khachatryan et al. 2023).

Frames are edited independently, so temporal consistency comes from the self-attention layers alone: each frame's
self-attention attends to its own keys/values *and* to those of an anchor frame (the middle frame of the clip),

    Attn(Q_i, [K_i ; K_a], [V_i ; V_a]).

The processor is stateless: the batch layout arrives per call through ``cross_attention_kwargs={"frame_layout": ...}``,
so one UNet can serve several requests at once. Without a layout it is plain attention.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from diffusers.models.attention_processor import Attention


@dataclass(frozen=True)
class FrameLayout:
    """The UNet batch is ``groups`` consecutive runs of ``frames`` frames (e.g. guidance branches x frames);
    ``anchor`` is the index, inside each run, of the frame every other frame also attends to."""

    groups: int
    frames: int
    anchor: int

    def __post_init__(self):
        if self.groups < 1 or self.frames < 1 or not 0 <= self.anchor < self.frames:
            raise ValueError(f"bad frame layout {self}")


class CrossFrameAttnProcessor:
    """Self-attention that also attends to the anchor frame's keys/values; cross-attention as usual."""

    def __call__(self, attn: Attention, hidden_states: torch.Tensor, encoder_hidden_states: torch.Tensor | None = None,
                 attention_mask: torch.Tensor | None = None, temb: torch.Tensor | None = None,
                 frame_layout: FrameLayout | None = None) -> torch.Tensor:
        if attn.spatial_norm is not None or attn.group_norm is not None or hidden_states.ndim != 3:
            raise NotImplementedError("CrossFrameAttnProcessor supports transformer-block attention only")
        residual = hidden_states
        is_self = encoder_hidden_states is None
        context = hidden_states if is_self else encoder_hidden_states
        if not is_self and attn.norm_cross:
            context = attn.norm_encoder_hidden_states(context)
        q, k, v = attn.to_q(hidden_states), attn.to_k(context), attn.to_v(context)
        if is_self and frame_layout is not None:
            k, v = with_anchor(k, frame_layout), with_anchor(v, frame_layout)
        out = _sdpa(attn, q, k, v, attention_mask)
        out = attn.to_out[1](attn.to_out[0](out))
        if attn.residual_connection:
            out = out + residual
        return out / attn.rescale_output_factor


def with_anchor(x: torch.Tensor, layout: FrameLayout) -> torch.Tensor:
    """``B N D`` -> ``B 2N D``: each frame's tokens followed by its run's anchor-frame tokens."""
    b, n, d = x.shape
    if b != layout.groups * layout.frames:
        raise ValueError(f"batch {b} does not match frame layout {layout}")
    runs = x.view(layout.groups, layout.frames, n, d)
    anchor = runs[:, layout.anchor : layout.anchor + 1].expand(-1, layout.frames, -1, -1)
    return torch.cat([runs, anchor], dim=2).reshape(b, 2 * n, d)


def _sdpa(attn: Attention, q, k, v, mask) -> torch.Tensor:
    b = q.shape[0]
    heads = attn.heads
    q, k, v = (t.view(b, -1, heads, t.shape[-1] // heads).transpose(1, 2) for t in (q, k, v))
    if attn.norm_q is not None:
        q, k = attn.norm_q(q), attn.norm_k(k)
    if mask is not None:
        mask = attn.prepare_attention_mask(mask, k.shape[2], b).view(b, heads, -1, k.shape[2])
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    return out.transpose(1, 2).reshape(b, -1, heads * q.shape[-1]).to(q.dtype)


def apply_cross_frame_attention(unet) -> None:
    """Install the (stateless) processor on every attention layer of ``unet``; plain attention until a layout is
    passed, so this is safe to do once at load time."""
    unet.set_attn_processor(CrossFrameAttnProcessor())

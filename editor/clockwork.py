"""Clockwork Diffusion (Habibian et al., CVPR 2024, arXiv 2312.08128) for any diffusers ``UNet2DConditionModel``.

Section 3.1 / Fig. 3: the UNet is split into a high-resolution outer part and a low-resolution middle,

    r_in  = high_res_in(x_t)                       conv_in + down_blocks[:split_level]
    r_out = low_res_middle(r_in)                   down_blocks[split_level:], mid_block, up_blocks[:n - split_level]
    out   = high_res_out(r_out, skips)             up_blocks[n - split_level:], conv_norm_out, conv_act, conv_out

Low-resolution features change slowly along the sampling trajectory, so on all but every ``clock``-th step the middle
is replaced by a cheap adaptor ``r_out^t ~ phi(r_in^t, r_out^{t-1}, t)`` (section 3.2, Fig. 4): the identity (reuse
the previous ``r_out``, the training-free baseline of the authors' release) or a small trained ResNet.

The split is *functional*: it calls the UNet's own sub-modules in the order of ``UNet2DConditionModel.forward`` and
never patches the module, so one UNet can serve concurrent requests. All Clockwork state (step counter, cached
``r_out``) lives in a :class:`ClockworkUNet`, one per clip / request.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Literal

import torch
import torch.nn.functional as F
from diffusers import ConfigMixin, ModelMixin
from diffusers.configuration_utils import register_to_config
from diffusers.models.resnet import ResnetBlock2D
from diffusers.models.unets.unet_2d_condition import UNet2DConditionOutput
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from editor.guidance import ThreePassGuidance


DEFAULT_CLOCK = 2        # the one default clock: the engine, the UI, the study manifests, evaluate and bench read it
CLOCK_RANGE = (1, 8)     # clocks accepted anywhere (1 = the full UNet on every step)


def check_clock(clock) -> int:
    """``clock`` as an int in :data:`CLOCK_RANGE` (a whole float is accepted); ``ValueError`` otherwise."""
    lo, hi = CLOCK_RANGE
    if isinstance(clock, bool) or not isinstance(clock, (int, float)) or not math.isfinite(clock) \
            or clock != int(clock) or not lo <= clock <= hi:
        raise ValueError(f"the clock must be a whole number from {lo} to {hi}, got {clock!r}")
    return int(clock)


@dataclass(frozen=True)
class ClockworkConfig:
    """Clockwork schedule (paper section 3.1).

    ``clock``: the full UNet runs on step 0 and every ``clock``-th step, the adaptor otherwise (1 = always full).
    ``split_level``: index of the first down block that belongs to the low-res middle (1 = everything below the
    highest resolution, the authors' choice for Stable Diffusion).
    ``adaptor``: ``"identity"`` (training-free) or ``"trained"`` (a :class:`ResNetAdaptor`, section 3.2).
    """

    clock: int = DEFAULT_CLOCK
    split_level: int = 1
    adaptor: Literal["identity", "trained"] = "identity"

    def __post_init__(self):
        check_clock(self.clock)
        if self.split_level < 0:
            raise ValueError(f"split_level must be >= 0, got {self.split_level}")
        if self.adaptor not in ("identity", "trained"):
            raise ValueError(f"adaptor must be 'identity' or 'trained', got {self.adaptor!r}")


def schedule_counts(steps: int, clock: int) -> tuple[int, int]:
    """``(full passes, adaptor passes)`` over ``steps`` sampler steps: full on steps ``0, clock, 2 clock, ...``."""
    full = math.ceil(steps / clock)
    return full, steps - full


# --- the functional split (section 3.1, Fig. 3) --------------------------------------------------------------------

def _check_level(unet, split_level: int) -> int:
    n = len(unet.down_blocks)
    if not 0 <= split_level <= n or len(unet.up_blocks) != n:
        raise ValueError(f"split_level {split_level} outside 0..{n} for a UNet with {n} levels")
    return n


def _skips_made(block) -> int:
    """Skip residuals a standard diffusers down block emits: one per resnet, one more for its downsampler."""
    return len(block.resnets) + (1 if getattr(block, "downsamplers", None) else 0)


def _entry_skips(unet, split_level: int) -> int:
    """How many skips the middle takes from the high-res part (0, or 1: ``r_in`` itself, the last downsampler's
    output, which the middle's last up block concatenates)."""
    n = _check_level(unet, split_level)
    made = sum(_skips_made(b) for b in unet.down_blocks[split_level:])
    used = sum(len(b.resnets) for b in unet.up_blocks[: n - split_level])
    if used - made not in (0, 1):
        raise ValueError(f"cannot split this UNet at level {split_level}: the middle needs {used - made} outer skips")
    return used - made


def _has_cross(block) -> bool:
    return getattr(block, "has_cross_attention", False)


def _check_kwargs(cross_attention_kwargs):
    if cross_attention_kwargs and cross_attention_kwargs.get("gligen") is not None:
        raise NotImplementedError("GLIGEN is not supported by the Clockwork split")


def needs_upsample_size(unet, size) -> bool:
    """diffusers' ``forward_upsample_size``: a side of the input is not a multiple of ``2 ** num_upsamplers``."""
    factor = 2 ** unet.num_upsamplers
    return any(int(d) % factor for d in size)


def time_embedding(unet, t, sample: torch.Tensor, timestep_cond: torch.Tensor | None = None,
                   class_labels: torch.Tensor | None = None, encoder_hidden_states: torch.Tensor | None = None,
                   added_cond_kwargs: dict | None = None) -> torch.Tensor:
    """The ``emb`` every ResNet block receives, as ``UNet2DConditionModel.forward`` builds it: ``get_time_embed`` +
    ``time_embedding`` (with ``timestep_cond``, e.g. a distilled student's guidance embedding), class and addition
    embeddings, ``time_embed_act``."""
    emb = unet.time_embedding(unet.get_time_embed(sample=sample, timestep=t), timestep_cond)
    class_emb = unet.get_class_embed(sample=sample, class_labels=class_labels)
    if class_emb is not None:
        emb = torch.cat([emb, class_emb], dim=-1) if unet.config.class_embeddings_concat else emb + class_emb
    if unet.config.addition_embed_type == "image_hint":
        raise NotImplementedError("image_hint addition embeddings are not supported by the Clockwork split")
    aug_emb = unet.get_aug_embed(emb=emb, encoder_hidden_states=encoder_hidden_states,
                                 added_cond_kwargs=added_cond_kwargs or {})
    if aug_emb is not None:
        emb = emb + aug_emb
    return unet.time_embed_act(emb) if unet.time_embed_act is not None else emb


def down_block_forward(block, h, emb, encoder_hidden_states, cross_attention_kwargs):
    if _has_cross(block):
        return block(hidden_states=h, temb=emb, encoder_hidden_states=encoder_hidden_states,
                     cross_attention_kwargs=cross_attention_kwargs)
    return block(hidden_states=h, temb=emb)


def mid_block_forward(unet, h, emb, encoder_hidden_states, cross_attention_kwargs):
    if unet.mid_block is None:
        return h
    if _has_cross(unet.mid_block):
        return unet.mid_block(h, emb, encoder_hidden_states=encoder_hidden_states,
                              cross_attention_kwargs=cross_attention_kwargs)
    return unet.mid_block(h, emb)


def _up(unet, first: int, count: int, h, skips: list, emb, encoder_hidden_states, cross_attention_kwargs,
        tail_size=None, forward_upsample_size: bool = False):
    """Run ``up_blocks[first:first + count]``, popping skips from the end of ``skips`` as diffusers does.
    ``tail_size``: the spatial size of the first skip *outside* ``skips`` (the middle's last upsampling target)."""
    n = len(unet.up_blocks)
    for i in range(first, first + count):
        block = unet.up_blocks[i]
        k = len(block.resnets)
        res, skips[:] = tuple(skips[-k:]), skips[:-k]
        size = None
        if forward_upsample_size and i != n - 1:
            size = skips[-1].shape[2:] if skips else tail_size
        if _has_cross(block):
            h = block(hidden_states=h, temb=emb, res_hidden_states_tuple=res,
                      encoder_hidden_states=encoder_hidden_states, cross_attention_kwargs=cross_attention_kwargs,
                      upsample_size=size)
        else:
            h = block(hidden_states=h, temb=emb, res_hidden_states_tuple=res, upsample_size=size)
    return h


def high_res_in(unet, sample: torch.Tensor, emb: torch.Tensor, encoder_hidden_states: torch.Tensor,
                cross_attention_kwargs: dict | None = None, split_level: int = 1):
    """``conv_in`` + ``down_blocks[:split_level]``. Returns ``(r_in, skips)``: the hidden state entering the low-res
    middle and the skip residuals that :func:`high_res_out` consumes (``r_in`` itself, which the middle also uses as
    a skip, is not repeated there)."""
    _check_kwargs(cross_attention_kwargs)
    if unet.config.center_input_sample:
        sample = 2 * sample - 1.0
    h = unet.conv_in(sample)
    skips = [h]
    for block in unet.down_blocks[:split_level]:
        h, res = down_block_forward(block, h, emb, encoder_hidden_states, cross_attention_kwargs)
        skips.extend(res)
    if _entry_skips(unet, split_level):
        if skips[-1] is not h:
            raise ValueError(f"cannot split this UNet at level {split_level}: r_in is not its last skip")
        skips.pop()
    return h, tuple(skips)


def low_res_middle(unet, r_in: torch.Tensor, emb: torch.Tensor, encoder_hidden_states: torch.Tensor,
                   cross_attention_kwargs: dict | None = None, split_level: int = 1, out_size=None) -> torch.Tensor:
    """``down_blocks[split_level:]``, ``mid_block``, ``up_blocks[:n - split_level]`` on ``r_in``; returns ``r_out``,
    the input of the high-res up blocks. ``out_size`` (the size of ``r_out``) must be given exactly when diffusers
    would forward ``upsample_size``, i.e. when the UNet input is not a multiple of ``2 ** num_upsamplers``."""
    _check_kwargs(cross_attention_kwargs)
    n = _check_level(unet, split_level)
    skips, h = [r_in] * _entry_skips(unet, split_level), r_in
    for block in unet.down_blocks[split_level:]:
        h, res = down_block_forward(block, h, emb, encoder_hidden_states, cross_attention_kwargs)
        skips.extend(res)
    h = mid_block_forward(unet, h, emb, encoder_hidden_states, cross_attention_kwargs)
    h = _up(unet, 0, n - split_level, h, skips, emb, encoder_hidden_states, cross_attention_kwargs,
            tail_size=out_size, forward_upsample_size=out_size is not None)
    if skips:
        raise ValueError(f"cannot split this UNet at level {split_level}: {len(skips)} middle skips left unused")
    return h


def high_res_out(unet, r_out: torch.Tensor, skips: tuple, emb: torch.Tensor, encoder_hidden_states: torch.Tensor,
                 cross_attention_kwargs: dict | None = None, split_level: int = 1) -> torch.Tensor:
    """``up_blocks[n - split_level:]`` with the remaining skips, then ``conv_norm_out``, ``conv_act``, ``conv_out``."""
    _check_kwargs(cross_attention_kwargs)
    n = _check_level(unet, split_level)
    stack = list(skips)
    fwd = bool(stack) and needs_upsample_size(unet, stack[0].shape[2:])
    h = _up(unet, n - split_level, split_level, r_out, stack, emb, encoder_hidden_states, cross_attention_kwargs,
            forward_upsample_size=fwd)
    if stack:
        raise ValueError(f"{len(stack)} high-res skips left unused")
    if unet.conv_norm_out is not None:
        h = unet.conv_act(unet.conv_norm_out(h))
    return unet.conv_out(h)


def middle_out_size(unet, sample: torch.Tensor, skips: tuple):
    """``out_size`` for :func:`low_res_middle`: the size of ``r_out`` when diffusers forwards ``upsample_size``
    (the size of the last high-res skip), else ``None``."""
    if not needs_upsample_size(unet, sample.shape[2:]):
        return None
    return skips[-1].shape[2:] if skips else sample.shape[2:]  # no high-res skips: split_level 0, full resolution


Middle = Callable[[torch.Tensor], torch.Tensor]


def split_forward(unet, sample: torch.Tensor, t, encoder_hidden_states: torch.Tensor,
                  cross_attention_kwargs: dict | None = None, timestep_cond: torch.Tensor | None = None,
                  split_level: int = 1, middle: Middle | None = None, class_labels=None,
                  added_cond_kwargs: dict | None = None) -> torch.Tensor:
    """``unet(sample, t, encoder_hidden_states, ...).sample`` through the three parts of the split. ``middle``
    (``r_in -> r_out``), when given, replaces :func:`low_res_middle` (Fig. 3: the adaptor's slot)."""
    emb = time_embedding(unet, t, sample, timestep_cond, class_labels, encoder_hidden_states, added_cond_kwargs)
    ehs = unet.process_encoder_hidden_states(encoder_hidden_states=encoder_hidden_states,
                                             added_cond_kwargs=added_cond_kwargs)
    r_in, skips = high_res_in(unet, sample, emb, ehs, cross_attention_kwargs, split_level)
    if middle is None:
        r_out = low_res_middle(unet, r_in, emb, ehs, cross_attention_kwargs, split_level,
                               middle_out_size(unet, sample, skips))
    else:
        r_out = middle(r_in)
    return high_res_out(unet, r_out, skips, emb, ehs, cross_attention_kwargs, split_level)


# --- adaptors (section 3.2, Fig. 4) ------------------------------------------------------------------------------

class IdentityAdaptor:
    """``phi(r_in^t, r_out^{t-1}, t) = r_out^{t-1}``: reuse the previous step's low-res output unchanged (the
    training-free baseline of the authors' release)."""

    kind = "identity"

    def __call__(self, r_in: torch.Tensor, r_out_prev: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        return r_out_prev


def _groups(channels: int, preferred: int) -> int:
    return math.gcd(channels, preferred) or 1


class ResNetAdaptor(ModelMixin, ConfigMixin):
    """The trained adaptor of Fig. 4, a few percent of the middle's cost:

        r_out^t = r_out^{t-1} + T(R(R(S([up(r_in^t) ; r_out^{t-1}]), emb), emb))

    ``S``: stride-2 3x3 conv to ``width`` channels; ``R``: diffusers ``ResnetBlock2D`` conditioned on the UNet's
    time embedding; ``T``: GroupNorm, SiLU, stride-2 transposed conv back to ``r_out``'s size and channels.
    ``r_out`` sits one level above ``r_in`` (the middle ends with an upsampler), so ``r_in`` is first brought to
    ``r_out``'s size (nearest); ``S`` then works at ``r_in``'s resolution. ``T``'s last conv is zero-initialised,
    so a fresh adaptor equals :class:`IdentityAdaptor`. Text conditioning (optional in the paper) is left out.
    """

    kind = "trained"

    @register_to_config
    def __init__(self, in_channels: int, out_channels: int, temb_channels: int, width: int = 64,
                 norm_num_groups: int = 32, norm_eps: float = 1e-5, split_level: int = 1):
        super().__init__()
        groups = _groups(width, norm_num_groups)
        self.conv_in = nn.Conv2d(in_channels + out_channels, width, 3, stride=2, padding=1)
        self.resnets = nn.ModuleList(
            ResnetBlock2D(in_channels=width, out_channels=width, temb_channels=temb_channels, groups=groups,
                          eps=norm_eps) for _ in range(2))
        self.norm_out = nn.GroupNorm(groups, width, eps=norm_eps)
        self.conv_out = nn.ConvTranspose2d(width, out_channels, 3, stride=2, padding=1)
        nn.init.zeros_(self.conv_out.weight)
        nn.init.zeros_(self.conv_out.bias)

    @classmethod
    def for_unet(cls, unet, split_level: int = 1, width: int | None = None) -> "ResNetAdaptor":
        """An adaptor whose channels match ``unet`` split at ``split_level`` (``width`` defaults to ``r_in``'s channel
        count, the narrower side, which keeps it at a few percent of a full UNet pass)."""
        _entry_skips(unet, split_level)
        ch = unet.config.block_out_channels
        c_in = ch[max(split_level - 1, 0)]
        c_out = ch[min(split_level, len(ch) - 1)]
        temb = next(r.time_emb_proj.in_features for b in unet.up_blocks for r in b.resnets)
        return cls(in_channels=c_in, out_channels=c_out, temb_channels=temb, width=width or c_in,
                   norm_num_groups=unet.config.norm_num_groups, norm_eps=unet.config.norm_eps, split_level=split_level)

    def forward(self, r_in: torch.Tensor, r_out_prev: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        size = r_out_prev.shape[2:]
        if r_in.shape[2:] != size:
            r_in = F.interpolate(r_in, size=size, mode="nearest")
        h = self.conv_in(torch.cat([r_in, r_out_prev], 1).to(self.dtype))
        for block in self.resnets:
            h = block(h, emb.to(self.dtype))
        h = self.conv_out(F.silu(self.norm_out(h)), output_size=list(size))
        return r_out_prev + h.to(r_out_prev.dtype)


# --- the per-request wrapper (section 3.1) -------------------------------------------------------------------------

def make_adaptor(config: ClockworkConfig, adaptor=None):
    """The adaptor for ``config``: an :class:`IdentityAdaptor` by default; a trained one must be passed."""
    if adaptor is None:
        if config.adaptor == "trained":
            raise ValueError("ClockworkConfig(adaptor='trained') needs a ResNetAdaptor")
        return IdentityAdaptor()
    if getattr(adaptor, "kind", "trained") != config.adaptor:
        raise ValueError(f"adaptor {type(adaptor).__name__} does not match ClockworkConfig(adaptor={config.adaptor!r})")
    if isinstance(adaptor, ResNetAdaptor) and adaptor.config.split_level != config.split_level:
        raise ValueError(f"adaptor built for split_level {adaptor.config.split_level}, config has {config.split_level}")
    return adaptor


def _first_t(t) -> float:
    return float(t.flatten()[0]) if torch.is_tensor(t) else float(t)


class ClockworkUNet:
    """A stand-in for a ``UNet2DConditionModel`` call that runs Clockwork (Fig. 3): call ``k`` (= sampler step
    ``k``) runs the full UNet when ``k % clock == 0`` and the adaptor on ``(r_in^k, r_out^{k-1})`` otherwise; the
    ``r_out`` of every step is kept for the next.

    Any denoiser that calls its UNet exactly once per sampler step works unchanged on top of it, e.g.
    ``ThreePassGuidance(ClockworkUNet(unet, cfg))`` (the three branches are one batched call).

    The wrapped UNet is shared and never modified; the step counter and ``r_out`` cache live here, so use a fresh
    ``ClockworkUNet`` (or :meth:`reset`) for every clip and request. Reuse without a reset -- a new batch shape, or a
    timestep that does not decrease -- raises ``ValueError`` instead of silently mixing two clips.
    """

    def __init__(self, unet, config: ClockworkConfig = ClockworkConfig(), adaptor=None):
        _entry_skips(unet, config.split_level)
        self.unet, self.clock_config = unet, config
        self.adaptor = make_adaptor(config, adaptor)
        self.reset()

    def reset(self) -> None:
        """Forget the cached ``r_out`` and restart the clock (a new clip)."""
        self.step, self.full_passes, self.adaptor_passes = 0, 0, 0
        self._r_out, self._shape, self._t = None, None, None

    @property
    def config(self):
        return self.unet.config

    @property
    def dtype(self):
        return self.unet.dtype

    @property
    def device(self):
        return self.unet.device

    def _check_same_clip(self, sample: torch.Tensor, t) -> None:
        if self._shape is None:
            return
        if tuple(sample.shape) != self._shape:
            raise ValueError(f"batch shape changed {self._shape} -> {tuple(sample.shape)}: a new clip needs reset() "
                             "or a fresh ClockworkUNet")
        if _first_t(t) >= self._t:
            raise ValueError(f"timestep {_first_t(t)} after {self._t}: a new clip needs reset() "
                             "or a fresh ClockworkUNet")

    def adapt(self, r_in: torch.Tensor, emb: torch.Tensor, middle: Callable[[], torch.Tensor],
              finish: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
        """``r_out`` at an adaptor step: ``phi(r_in^t, r_out^{t-1}, t)``. ``middle()`` would compute the true low-res
        middle and ``finish(r_out)`` the UNet output from an ``r_out``; inference calls neither (the saving is not
        running the middle), the adaptor's training (``editor.train.clockwork``) overrides this method to use them
        for its regression targets."""
        return self.adaptor(r_in, self._r_out, emb)

    def __call__(self, sample: torch.Tensor, timestep, encoder_hidden_states: torch.Tensor,
                 cross_attention_kwargs: dict | None = None, timestep_cond: torch.Tensor | None = None,
                 class_labels=None, added_cond_kwargs: dict | None = None, return_dict: bool = True):
        self._check_same_clip(sample, timestep)
        self._shape, self._t = tuple(sample.shape), _first_t(timestep)
        unet, level = self.unet, self.clock_config.split_level
        emb = time_embedding(unet, timestep, sample, timestep_cond, class_labels, encoder_hidden_states,
                             added_cond_kwargs)
        ehs = unet.process_encoder_hidden_states(encoder_hidden_states=encoder_hidden_states,
                                                 added_cond_kwargs=added_cond_kwargs)
        r_in, skips = high_res_in(unet, sample, emb, ehs, cross_attention_kwargs, level)
        out_size = middle_out_size(unet, sample, skips)

        def middle() -> torch.Tensor:
            return low_res_middle(unet, r_in, emb, ehs, cross_attention_kwargs, level, out_size)

        def finish(r_out: torch.Tensor) -> torch.Tensor:
            return high_res_out(unet, r_out, skips, emb, ehs, cross_attention_kwargs, level)
        if self.step % self.clock_config.clock == 0:
            self._r_out = middle()
            self.full_passes += 1
        else:
            self._r_out = self.adapt(r_in, emb, middle, finish)
            self.adaptor_passes += 1
        self.step += 1
        out = self.output(finish)
        return UNet2DConditionOutput(sample=out) if return_dict else (out,)

    def output(self, finish: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
        """The UNet output of this step, ``finish(r_out)``; adaptor training overrides it to reuse the output it has
        already computed for its loss."""
        return finish(self._r_out)


class ClockworkDenoiser:
    """A drop-in denoiser (``__call__(x, t, cond)``, ``passes_per_step``): ``wrap`` (default the 3-pass teacher,
    :class:`~editor.guidance.ThreePassGuidance`; a 1-pass student's denoiser class works the same) around a
    :class:`ClockworkUNet`. One per clip/request; ``reset()`` starts a new clip."""

    def __init__(self, unet, config: ClockworkConfig = ClockworkConfig(), adaptor=None,
                 wrap: Callable = ThreePassGuidance):
        self.clockwork = ClockworkUNet(unet, config, adaptor)
        self.inner = wrap(self.clockwork)
        self.passes_per_step = self.inner.passes_per_step

    def reset(self) -> None:
        self.clockwork.reset()

    def __call__(self, x: torch.Tensor, t: torch.Tensor, cond) -> torch.Tensor:
        return self.inner(x, t, cond)


# --- cost (for the benchmark) --------------------------------------------------------------------------------------

@dataclass(frozen=True)
class StepFlops:
    """FLOPs of one UNet call: a full step and an adaptor step."""

    full: int
    adaptor: int

    def total(self, steps: int, clock: int) -> int:
        full, adapted = schedule_counts(steps, clock)
        return full * self.full + adapted * self.adaptor

    def ratio(self, steps: int, clock: int) -> float:
        """Clockwork FLOPs over ``steps`` steps relative to the plain UNet's."""
        return self.total(steps, clock) / (steps * self.full)


def _count(fn) -> int:
    counter = FlopCounterMode(display=False)
    with counter:
        fn()
    return counter.get_total_flops()


@torch.no_grad()
def step_flops(unet, adaptor=None, sample_shape: tuple[int, ...] = (1, 8, 32, 32), text_tokens: int = 16,
               split_level: int = 1, cross_attention_kwargs: dict | None = None) -> StepFlops:
    """FLOPs (``torch.utils.flop_counter``) of a full UNet step vs a Clockwork adaptor step on ``sample_shape``."""
    adaptor = adaptor or IdentityAdaptor()
    cfg = ClockworkConfig(clock=DEFAULT_CLOCK, split_level=split_level, adaptor=adaptor.kind)
    cw = ClockworkUNet(unet, cfg, adaptor)
    p = next(unet.parameters())
    x = torch.randn(sample_shape, dtype=p.dtype, device=p.device)
    text = torch.randn(sample_shape[0], text_tokens, unet.config.cross_attention_dim, dtype=p.dtype, device=p.device)
    t = torch.full((sample_shape[0],), 999, device=p.device)
    full = _count(lambda: cw(x, t, text, cross_attention_kwargs))
    cheap = _count(lambda: cw(x, t - 1, text, cross_attention_kwargs))
    return StepFlops(full, cheap)

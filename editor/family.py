"""The embedded model family's architectures: frozen configs and builders around diffusers model classes.

* Autoencoder: diffusers ``AutoencoderTiny`` (TAESD's architecture, MoViE section 3.3) with uniform narrow widths, no
  full-resolution block in the encoder and none in the decoder, so encode + decode stays under 4 GFLOPs a 256-px frame.
* Teacher: an InstructPix2Pix ``UNet2DConditionModel`` (noisy latent + source latent in, MoViE section 3.1) with
  MoViE's Mobile-Pix2Pix change (section 3.2): no attention at the highest resolution, i.e. ``down_blocks[0]`` and
  ``up_blocks[-1]`` are plain ResNet blocks.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from diffusers import AutoencoderTiny, UNet2DConditionModel

TEXT_DIM = 384  # all-MiniLM-L6-v2 hidden size


@dataclass(frozen=True)
class AutoencoderConfig:
    width: int = 24
    latent_channels: int = 16
    encoder_blocks: tuple[int, ...] = (0, 1, 1, 1)
    decoder_blocks: tuple[int, ...] = (2, 2, 1, 0)

    def __post_init__(self):
        if len(self.encoder_blocks) != len(self.decoder_blocks):
            raise ValueError("encoder and decoder need the same number of levels")
        if self.width <= 0 or self.latent_channels <= 0:
            raise ValueError("width and latent_channels must be positive")

    @property
    def downsample(self) -> int:
        return 2 ** (len(self.encoder_blocks) - 1)

    def build(self) -> AutoencoderTiny:
        n = len(self.encoder_blocks)
        return AutoencoderTiny(
            encoder_block_out_channels=(self.width,) * n, decoder_block_out_channels=(self.width,) * n,
            latent_channels=self.latent_channels, num_encoder_blocks=self.encoder_blocks,
            num_decoder_blocks=self.decoder_blocks, scaling_factor=1.0,
        )


def save_autoencoder(ae: AutoencoderTiny, folder: str | Path) -> None:
    """``save_pretrained``, minus the config keys ``AutoencoderTiny`` writes but does not take back (it registers
    ``block_out_channels`` itself, then warns "not expected" on every load) and the local ``_name_or_path``."""
    ae.save_pretrained(folder)
    cfg_path = Path(folder) / "config.json"
    cfg = json.loads(cfg_path.read_text())
    for key in ("block_out_channels", "_name_or_path"):
        cfg.pop(key, None)
    cfg_path.write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")


@dataclass(frozen=True)
class TeacherConfig:
    latent_channels: int = 16
    block_out_channels: tuple[int, ...] = (48, 96, 160)
    layers_per_block: int = 1
    attention_head_dim: int = 32
    norm_num_groups: int = 16
    cross_attention_dim: int = TEXT_DIM
    sample_size: int = 32
    mobile: bool = True  # MoViE Mobile-Pix2Pix: no attention at the highest resolution
    prediction_type: str = "v_prediction"

    def __post_init__(self):
        if self.prediction_type not in ("epsilon", "v_prediction"):
            raise ValueError(f"prediction_type must be epsilon or v_prediction, got {self.prediction_type}")
        if any(c % self.norm_num_groups for c in self.block_out_channels):
            raise ValueError("block_out_channels must be multiples of norm_num_groups")

    def block_types(self) -> tuple[tuple[str, ...], tuple[str, ...]]:
        n = len(self.block_out_channels)
        down = ["CrossAttnDownBlock2D"] * (n - 1) + ["CrossAttnDownBlock2D"]
        up = ["CrossAttnUpBlock2D"] * n
        if self.mobile:
            down[0], up[-1] = "DownBlock2D", "UpBlock2D"
        return tuple(down), tuple(up)

    def build(self) -> UNet2DConditionModel:
        down, up = self.block_types()
        return UNet2DConditionModel(
            sample_size=self.sample_size, in_channels=2 * self.latent_channels, out_channels=self.latent_channels,
            down_block_types=down, up_block_types=up, block_out_channels=self.block_out_channels,
            layers_per_block=self.layers_per_block, cross_attention_dim=self.cross_attention_dim,
            attention_head_dim=self.attention_head_dim, norm_num_groups=self.norm_num_groups,
        )


def config_dict(cfg) -> dict:
    """A JSON-friendly dict of a config (for model cards and logs)."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(cfg).items()}

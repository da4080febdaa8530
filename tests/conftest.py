"""Shared fixtures: tiny random model families built in a temp folder (nothing is downloaded)."""
from __future__ import annotations

import os

import numpy as np
import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")


def make_tiny_family(folder, seed: int = 0):
    """Save a tiny random embedded family (AutoencoderTiny, teacher UNet, scheduler, family.json) to ``folder``."""
    from editor.family import AutoencoderConfig, TeacherConfig, save_autoencoder
    from editor.loading import write_family_index
    from editor.train.teacher import noise_scheduler

    torch.manual_seed(seed)
    ae = AutoencoderConfig(width=8, latent_channels=4, decoder_blocks=(1, 1, 1, 0)).build()
    save_autoencoder(ae, folder / "autoencoder")
    TeacherConfig(latent_channels=4, block_out_channels=(16, 32), norm_num_groups=8, attention_head_dim=8,
                  sample_size=8).build().save_pretrained(folder / "unet")
    noise_scheduler().save_pretrained(folder / "scheduler")
    write_family_index(folder, name="tiny", default_steps=2)
    return folder


@pytest.fixture(scope="session")
def tiny_family_dir(tmp_path_factory):
    return make_tiny_family(tmp_path_factory.mktemp("tiny_family"))


@pytest.fixture(scope="session")
def tiny_family(tiny_family_dir):
    from editor.loading import load_family

    return load_family(tiny_family_dir)


@pytest.fixture(scope="session")
def moving_frames():
    """8 frames ``uint8 8 64 64 3`` of a moving colour gradient."""
    t = np.arange(8)[:, None, None]
    y, x = np.mgrid[0:64, 0:64]
    r = (x[None] * 4 + t * 8) % 256
    g = (y[None] * 4 + t * 4) % 256
    b = np.broadcast_to((x + y)[None] * 2 % 256, r.shape)
    return np.stack([r, g, b], -1).astype(np.uint8)


@pytest.fixture(scope="session")
def postgres_server():
    """URL of a throwaway PostgreSQL server, one per session (tests/postgres.py); skips when none can start."""
    from tests import postgres

    try:
        postgres.find_binaries()
    except postgres.Unavailable as e:
        pytest.skip(str(e))
    with postgres.running_server() as url:
        yield url


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request, tmp_path):
    """An empty ratings database: a SQLite file in ``tmp_path``, then a fresh database on the PostgreSQL server."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'ratings.db'}"
    from tests.postgres import fresh_database

    return fresh_database(request.getfixturevalue("postgres_server"))

"""Shared fixtures and helpers: tiny random model families built in a temp folder (nothing is downloaded), the
tiny family's Editor, a temp ratings store, and the app served on a free port."""
from __future__ import annotations

import os
import socket
from contextlib import contextmanager

import numpy as np
import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

FRAMES, SIDE, FPS = 6, 64, 8  # the app tests' clips (tests/test_app.py, tests/test_browser.py)


def make_tiny_family(folder, seed: int = 0):
    """Save a tiny random embedded family (AutoencoderTiny, teacher UNet, scheduler, family.json) to ``folder``."""
    from editor.family import AutoencoderConfig, TeacherConfig, save_autoencoder
    from editor.loading import write_family_index
    from editor.train.common import noise_scheduler

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


@pytest.fixture(scope="module")
def editor(tiny_family):
    """The tiny family's Editor."""
    from editor.pipeline import Editor

    return Editor(tiny_family)


@pytest.fixture
def store(tmp_path):
    """A ratings store on a SQLite file in ``tmp_path``."""
    from editor.study.store import Store

    with Store(f"sqlite:///{tmp_path / 'ratings.db'}") as s:
        yield s


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def served(editor, store, config):
    """The app launched on a free port (queue as app.py sets it), and a gradio_client on it."""
    from gradio_client import Client

    from ui.blocks import build_app, launch_kwargs, queue_app

    demo = build_app(editor, store, config)
    try:
        _, url, _ = queue_app(demo).launch(prevent_thread_lock=True, server_port=free_port(), quiet=True,
                                           **launch_kwargs(config))
        yield url, Client(url, verbose=False)
    finally:
        demo.close()

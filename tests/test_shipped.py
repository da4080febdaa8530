"""Checks of the shipped embedded family (``data/models/embedded``): it loads, edits, and keeps its measured figures.

The thresholds sit a little below the figures in the model card, so a regression (or a wrong file) fails here.
"""
from __future__ import annotations

import numpy as np
import pytest

from editor import edits, metrics, video_io
from editor.layout import frames_to_images, images_to_frames
from editor.loading import EMBEDDED, load_family
from editor.pipeline import Editor, EditRequest

pytestmark = pytest.mark.shipped
CLIPS = EMBEDDED.parents[1] / "eval_clips"


@pytest.fixture(scope="module")
def family():
    return load_family()


def _clip(name, frames=4):
    return video_io.read_clip(CLIPS / name, max_frames=frames, multiple=32).frames


def test_autoencoder_reconstruction_on_a_real_clip(family):
    frames = _clip("real_earth.mp4")
    rec = images_to_frames(family.decode(family.encode(frames_to_images(frames))))
    assert metrics.psnr(rec, frames) > 25.0


def test_autoencoder_is_under_four_gflops_per_frame(family):
    from editor.bench import gflops

    x = frames_to_images(np.zeros((1, 256, 256, 3), np.uint8))
    assert gflops(lambda: family.decode(family.encode(x))) < 4.0


@pytest.mark.parametrize("fid", ["sunset", "fog"])
def test_teacher_edits_a_held_out_clip_towards_the_target(family, fid):
    frames = _clip("pan_lion.mp4", frames=2)
    instruction = edits.FAMILIES[fid].instructions("seen")[0]
    out = Editor(family).edit_frames(frames, EditRequest(instruction, family.default_guidance, steps=8, seed=0))
    targets = {k: f.apply(frames, 0) for k, f in edits.FAMILIES.items()}
    assert metrics.nearest_family(out.frames, targets) == fid
    assert metrics.psnr(out.frames, targets[fid]) > 18.0

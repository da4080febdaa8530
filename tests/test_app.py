"""Tests for the Gradio app: the handlers on their own, the layout, the launcher, and one edit end to end."""
from __future__ import annotations

import socket

import gradio as gr
import numpy as np
import pytest

import app
from editor.pipeline import Editor
from editor.variants import available_variants
from editor.video_io import read_clip, write_clip
from ui import handlers
from ui.blocks import AppConfig, build_app, example_instructions
from ui.handlers import UserError, pick_seed, run_edit

FRAMES, SIDE, FPS = 6, 64, 8


@pytest.fixture(scope="module")
def editor(tiny_family):
    return Editor(tiny_family)


@pytest.fixture
def config(tmp_path):
    return AppConfig(short_side=SIDE, max_frames=48, samples=(), output_dir=str(tmp_path / "out"))


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    """A 6-frame 64x64 moving gradient at 8 fps."""
    t = np.arange(FRAMES)[:, None, None]
    y, x = np.mgrid[0:SIDE, 0:SIDE]
    frames = np.stack([(x[None] * 4 + t * 16) % 256, (y[None] * 4 + t * 8) % 256,
                       np.broadcast_to((x + y)[None] * 2 % 256, (FRAMES, SIDE, SIDE))], -1).astype(np.uint8)
    return write_clip(frames, FPS, tmp_path_factory.mktemp("clips") / "gradient.mp4")


def edit(editor, config, video, **kw):
    """run_edit with the test's default settings, overridable by keyword."""
    args = dict(instruction="make it black and white", variant="teacher", s_t=7.5, s_i=1.5, steps=2, seed=123,
                randomize=False)
    args.update(kw)
    return run_edit(editor, config, video, **args)


# ----------------------------------------------------------------------------- handlers

def test_run_edit_writes_a_readable_clip_and_reports_settings(editor, config, clip):
    calls = []
    out, info = edit(editor, config, clip, progress=lambda done, total: calls.append((done, total)))
    assert out.endswith(".mp4") and out.startswith(config.output_dir)
    assert len(read_clip(out).frames) == FRAMES
    s = info["settings"]
    assert (s["seed"], s["steps"], s["variant"], s["s_T"], s["s_I"]) == (123, 2, "teacher", 7.5, 1.5)
    assert s["instruction"] == "make it black and white" and s["frames"] == FRAMES and s["size"] == "64x64"
    assert info["speed"]["unet_passes_per_frame"] == 6 and info["speed"]["ms_per_frame"] > 0
    assert set(info["speed"]["stage_ms_per_frame"]) == {"video_io", "encode", "unet", "decode"}
    assert calls and calls[-1] == (2, 2)


def test_run_edit_honours_max_frames_and_randomizes_seed(editor, tmp_path, clip):
    config = AppConfig(short_side=SIDE, max_frames=3, samples=(), output_dir=str(tmp_path))
    out, info = edit(editor, config, clip, seed=None, randomize=True, steps=1)
    assert len(read_clip(out).frames) == 3 and info["settings"]["frames"] == 3
    assert any("cut" in n for n in info["settings"]["notes"])
    assert isinstance(info["settings"]["seed"], int)


def test_each_request_gets_its_own_output(editor, config, clip):
    a, _ = edit(editor, config, clip, steps=1)
    b, _ = edit(editor, config, clip, steps=1)
    assert a != b


def test_pick_seed():
    rng = np.random.default_rng(0)
    assert pick_seed(42, False, rng) == 42 and pick_seed(42.0, False, rng) == 42
    drawn = {pick_seed(42, True, rng) for _ in range(5)}
    assert len(drawn) > 1 and all(0 <= s < 2**31 for s in drawn)
    assert pick_seed(None, True, np.random.default_rng(1)) == pick_seed(None, True, np.random.default_rng(1))
    for bad in (None, -1, 1.5, float("nan"), 2**40):
        with pytest.raises(UserError):
            pick_seed(bad, False, rng)


@pytest.mark.parametrize("kw, message", [
    (dict(video=None), "Upload a video"),
    (dict(instruction="   "), "Type an instruction"),
    (dict(instruction=None), "Type an instruction"),
    (dict(variant="nope"), "Unknown variant"),
    (dict(steps=0), "Steps must be"),
    (dict(s_t=-3), "Invalid settings"),
])
def test_bad_settings_raise_user_errors(editor, config, clip, kw, message):
    video = kw.pop("video", clip)
    with pytest.raises(UserError, match=message):
        edit(editor, config, video, **kw)


def test_a_text_file_is_not_a_video(editor, config, tmp_path):
    text = tmp_path / "notes.mp4"
    text.write_text("hello, not a video\n" * 10)
    with pytest.raises(UserError, match="Could not read the video: not a video file"):
        edit(editor, config, str(text))


def test_new_output_path_is_unique_and_prunes(tmp_path):
    paths = []
    for _ in range(5):
        paths.append(handlers.new_output_path(tmp_path, keep=3))
        paths[-1].write_bytes(b"x")
    assert len(set(paths)) == 5 and len(list(tmp_path.glob("edit-*.mp4"))) == 3


# ----------------------------------------------------------------------------- layout and launcher

def test_build_app_lays_out_the_edit_tab(editor, config, clip):
    demo = build_app(editor, AppConfig(short_side=SIDE, samples=(clip,), output_dir=config.output_dir))
    assert any(fn.api_name == "edit" for fn in demo.fns.values())
    dropdown = next(b for b in demo.blocks.values() if isinstance(b, gr.Dropdown))
    assert [c[1] for c in dropdown.choices] == available_variants(editor.family)
    sliders = {b.label: b for b in demo.blocks.values() if isinstance(b, gr.Slider)}
    assert sliders["Steps"].value == editor.family.default_steps == 2
    assert sliders["Text guidance s_T"].value == editor.family.default_guidance.text
    assert len(example_instructions()) == 6


def test_parse_args_defaults_and_environment(monkeypatch):
    for name in ("SPACE_ID", "PORT", "MOVIE_MODEL"):
        monkeypatch.delenv(name, raising=False)
    args = app.parse_args([])
    assert (args.host, args.port, args.share, args.max_frames, args.short_side) == ("127.0.0.1", 7860, False, 48, 256)
    monkeypatch.setenv("SPACE_ID", "me/space")
    monkeypatch.setenv("PORT", "9000")
    monkeypatch.setenv("MOVIE_MODEL", "some/model")
    args = app.parse_args([])
    assert (args.host, args.port, args.model) == ("0.0.0.0", 9000, "some/model")
    with pytest.raises(SystemExit):
        app.parse_args(["--max-frames", "0"])


def test_main_builds_and_launches(monkeypatch, tiny_family_dir):
    seen = {}
    monkeypatch.setattr(gr.Blocks, "launch", lambda self, **kw: seen.update(kw, demo=self))
    app.main(["--model", str(tiny_family_dir), "--port", "7999", "--max-frames", "4"])
    assert seen["server_port"] == 7999 and seen["server_name"] == "127.0.0.1" and not seen["share"]
    assert seen["demo"].get_config_file()["title"]


# ----------------------------------------------------------------------------- end to end

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_end_to_end_through_the_api(editor, config, clip):
    from gradio_client import Client, handle_file
    from gradio_client.exceptions import AppError

    demo = build_app(editor, config)
    try:
        _, url, _ = demo.queue().launch(prevent_thread_lock=True, server_port=free_port(), quiet=True)
        client = Client(url, verbose=False)
        video, info = client.predict(handle_file(clip), "make it black and white", "teacher", 7.5, 1.5, 2, 123,
                                     False, api_name="/edit")
        path = video["video"] if isinstance(video, dict) else video
        assert len(read_clip(path).frames) == FRAMES
        assert info["settings"]["seed"] == 123
        with pytest.raises(AppError, match="Upload a video"):
            client.predict(None, "make it black and white", "teacher", 7.5, 1.5, 2, 123, False, api_name="/edit")
    finally:
        demo.close()

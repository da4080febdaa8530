"""The Live page: its frame handler on its own, then the page in Debian's headless Chromium with a fake camera fed
from a clip (``--use-file-for-fake-video-capture``: a Y4M written here with numpy), driven by Playwright as
``tests/test_browser.py`` does. ``python -m pytest -q -k live`` selects these tests."""
from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from editor.pipeline import FAST, Editor
from tests.conftest import served
from ui.live import LiveSession, edit_live_frame, fit_frame, live_variant
from ui.widgets import AppConfig

CHROMIUM = os.environ.get("MOVIE_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
SHOTS = Path(__file__).resolve().parents[1] / "artifacts" / "screenshots"
TIMEOUT_MS = 90_000


def test_live_handler_encodes_the_instruction_once_and_reports_fps(tiny_family, moving_frames):
    editor = Editor(tiny_family, FAST)
    session = None
    for frame in moving_frames[:4]:
        out, stats, session = edit_live_frame(editor, frame, "make it sepia", "teacher", 4.0, 1.5, 1, session,
                                              short_side=64)
        assert out.shape == frame.shape and out.dtype == np.uint8
    assert session.frames == 4 and session.encodes == 1
    assert re.search(r"\d+\.\d fps", stats) and "latency" in stats
    _, _, session = edit_live_frame(editor, moving_frames[0], "make it snow", "teacher", 9.0, 1.0, 1, session,
                                     short_side=64)
    assert session.encodes == 2 and session.instruction == "make it snow"  # a new instruction is encoded again


def test_live_handler_passes_frames_through_without_an_instruction(tiny_family, moving_frames):
    out, stats, session = edit_live_frame(Editor(tiny_family), moving_frames[0], "  ", "teacher", 4, 1.5, 1, None,
                                          short_side=64)
    assert np.array_equal(out, moving_frames[0]) and "instruction" in stats and session.frames == 0
    out, _, _ = edit_live_frame(Editor(tiny_family), None, "make it sepia", "teacher", 4, 1.5, 1, session)
    assert out is None


def test_live_fit_frame_and_variant_choice():
    frame = np.zeros((120, 160, 3), np.uint8)
    out = fit_frame(frame, 64, 16)
    assert out.shape == (64, 80, 3)
    assert live_variant(["teacher", "mmg", "onestep"]) == "onestep"
    assert live_variant(["teacher", "mmg"]) == "mmg" and live_variant(["teacher"]) == "teacher"


def write_y4m(frames: np.ndarray, path: Path, fps: int = 10) -> Path:
    """``uint8 T H W 3`` RGB frames as a Y4M file (4:2:0, BT.601 limited range), what Chromium's fake camera plays."""
    t, h, w, _ = frames.shape
    with open(path, "wb") as f:
        f.write(f"YUV4MPEG2 W{w} H{h} F{fps}:1 Ip A1:1 C420jpeg\n".encode())
        for rgb in frames.astype(np.float32):
            r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
            y = 16 + 0.257 * r + 0.504 * g + 0.098 * b
            u = 128 - 0.148 * r - 0.291 * g + 0.439 * b
            v = 128 + 0.439 * r - 0.368 * g - 0.071 * b
            sub = lambda c: c.reshape(h // 2, 2, w // 2, 2).mean((1, 3))
            f.write(b"FRAME\n")
            for plane in (y, sub(u), sub(v)):
                f.write(np.clip(np.round(plane), 0, 255).astype(np.uint8).tobytes())
    return path


def camera_clip(n: int = 20, h: int = 120, w: int = 160) -> np.ndarray:
    """A moving colour pattern, ``uint8 n h w 3``."""
    t = np.arange(n)[:, None, None]
    y, x = np.mgrid[0:h, 0:w]
    r = (x[None] * 2 + t * 12) % 256
    g = (y[None] * 2 + t * 6) % 256
    b = np.broadcast_to(((x + y) % 256)[None], r.shape)
    return np.stack([r, g, b], -1).astype(np.uint8)


@pytest.mark.skipif(not Path(CHROMIUM).is_file(), reason=f"no Chromium at {CHROMIUM} (apt-get install chromium)")
def test_live_page_edits_the_fake_webcam_in_a_browser(tiny_family, tmp_path):
    playwright_api = pytest.importorskip("playwright.sync_api", reason="the playwright package is not installed")
    from editor.study.store import Store

    y4m = write_y4m(camera_clip(), tmp_path / "camera.y4m")
    store = Store(f"sqlite:///{tmp_path / 'ratings.db'}")
    config = AppConfig(short_side=64, max_frames=4, samples=(), output_dir=str(tmp_path / "out"))
    with served(Editor(tiny_family), store, config) as (url, _), playwright_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=[
            "--no-sandbox", "--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream",
            f"--use-file-for-fake-video-capture={y4m}"])
        context = browser.new_context(viewport={"width": 1400, "height": 1600})
        context.grant_permissions(["camera"], origin=url.rstrip("/"))
        context.set_default_timeout(TIMEOUT_MS)
        page = context.new_page()
        page.goto(url)
        page.get_by_role("tab", name="Live").click()
        page.locator("#live-instruction textarea").fill("make it sepia")
        page.locator("#live-instruction textarea").press("Enter")
        page.locator("#live-camera [title='grant webcam access'] button").click()  # Gradio's webcam: access...
        page.locator("#live-camera button.capture-button").click()                # ...then Record starts the stream
        page.wait_for_function(
            "document.querySelector('#live-output img')?.src && "
            "/\\d+\\.\\d fps/.test(document.querySelector('#live-stats')?.innerText || '')")
        stats = page.locator("#live-stats").inner_text()
        frames = int(re.search(r"(\d+) frames edited", stats).group(1))
        assert frames >= 2 and "latency" in stats
        # the sliders are inputs of the stream: moving one changes nothing but the next frames' settings
        page.wait_for_function(
            f"(+(/(\\d+) frames edited/.exec(document.querySelector('#live-stats').innerText) || [0, 0])[1]) > {frames}")
        SHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SHOTS / "live.png"), full_page=True)
        browser.close()
    store.close()

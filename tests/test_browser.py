"""The app in a real browser: Playwright driving Debian's headless Chromium (``/usr/bin/chromium``; no browser is
downloaded). Upload a clip and edit it, compare it (the two players stay in sync), make a blinded pair and vote,
check the vote's row in the database and its effect on the Results page. A screenshot of every page is saved to
``artifacts/screenshots/``.
"""
from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import pytest

from editor.pipeline import Editor
from editor.study.store import Store
from tests.conftest import FPS, FRAMES, SIDE, served
from ui.widgets import AppConfig

CHROMIUM = os.environ.get("MOVIE_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
SHOTS = Path(__file__).resolve().parents[1] / "artifacts" / "screenshots"
TIMEOUT_MS = 60_000

playwright_api = pytest.importorskip("playwright.sync_api", reason="the playwright package is not installed")
pytestmark = pytest.mark.skipif(not Path(CHROMIUM).is_file(),
                                reason=f"no Chromium at {CHROMIUM} (apt-get install chromium; .ci/run does)")


@pytest.fixture(scope="module")
def page_of():
    """A function that opens a fresh page of headless Chromium at a URL."""
    with playwright_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True,
                                     args=["--no-sandbox", "--autoplay-policy=no-user-gesture-required"])
        context = browser.new_context(viewport={"width": 1400, "height": 1800})
        context.set_default_timeout(TIMEOUT_MS)

        def open_page(url):
            page = context.new_page()
            page.goto(url)
            page.wait_for_selector("#edit-run")
            return page

        yield open_page
        browser.close()


@pytest.fixture
def clip(tmp_path, moving_frames):
    from editor.video_io import write_clip

    return write_clip(moving_frames[:FRAMES], FPS, tmp_path / "moving.mp4")


def tab(page, name: str) -> None:
    page.get_by_role("tab", name=name).click()


def shoot(page, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


def fill_source(page, prefix: str, clip: str, instruction: str) -> None:
    """Upload ``clip`` and type ``instruction`` on the page whose elements start with ``prefix``."""
    page.locator(f"#{prefix}-video input[type=file]").set_input_files(clip)
    page.wait_for_selector(f"#{prefix}-video video")
    page.locator(f"#{prefix}-instruction textarea").fill(instruction)


def rater_id(page) -> str:
    """The anonymous rater id the Rate page shows (pages render when their tab is first opened)."""
    page.wait_for_function("document.querySelector('#rate-rater')?.innerText.includes('rater-')")
    return re.search(r"rater-[0-9a-f]{32}", page.locator("#rate-rater").inner_text()).group(0)


FIRST_FRAME_SHOWN = ("(() => { const v = document.querySelector('#%s video');"
                     " return !!v && v.paused && v.readyState >= 2 && v.currentTime > 0; })()")


def test_edit_compare_rate_and_results_in_a_browser(tiny_family, tmp_path, clip, page_of, moving_frames):
    from editor.video_io import write_clip

    other_clip = write_clip(moving_frames[::-1][:FRAMES], FPS, tmp_path / "other.mp4")
    store = Store(f"sqlite:///{tmp_path / 'ratings.db'}")
    config = AppConfig(short_side=SIDE, max_frames=FRAMES, samples=(), output_dir=str(tmp_path / "out"), n_boot=20)
    with served(Editor(tiny_family), store, config) as (url, _):
        page = page_of(url)
        # a first visit starts on the fastest variant the family has, never the 3-pass teacher alone
        assert "clockwork-identity" in page.locator("#edit-variant input").input_value()
        fill_source(page, "edit", other_clip, "give the rabbit a red hat")
        page.wait_for_function("document.querySelector('#edit-note')?.innerText.includes('may not know this edit')")
        first_src = page.locator("#edit-video video").get_attribute("src")
        with page.expect_file_chooser() as chooser:  # a new clip replaces the old one, no clearing first
            page.locator("#edit-replace").click()
        chooser.value.set_files(clip)
        page.wait_for_function(f"document.querySelector('#edit-video video')?.src !== {json.dumps(first_src)}")
        page.locator("#edit-instruction textarea").fill("make it black and white")
        page.wait_for_function("document.querySelector('#edit-note')?.innerText.trim() === ''")
        page.locator("#edit-clockwork input").check()  # the selector follows the Clockwork switch
        page.wait_for_function("document.querySelector('#edit-variant input').value.includes('clockwork-identity')")
        page.locator("#edit-run").click()
        page.wait_for_selector("#edit-result video")
        page.wait_for_function("document.querySelector('#edit-info')?.innerText.includes('unet_gflops_per_frame')")
        assert '"teacher+clockwork-identity"' in page.locator("#edit-info").inner_text()
        page.wait_for_function(FIRST_FRAME_SHOWN % "edit-result")  # the player shows its first frame, unplayed
        shoot(page, "edit")

        tab(page, "Compare")
        fill_source(page, "compare", clip, "make it sepia")
        page.locator("#compare-run").click()
        page.wait_for_selector("#compare-left video")
        page.wait_for_selector("#compare-right video")
        page.wait_for_function("document.querySelector('#compare-left video')?.dataset.synced === '1'")
        page.wait_for_function(FIRST_FRAME_SHOWN % "compare-left")
        page.locator("#compare-play").click()
        page.wait_for_function("!document.querySelector('#compare-right video').paused")
        page.evaluate("document.querySelector('#compare-left video').pause()")
        page.wait_for_function("document.querySelector('#compare-right video').paused")  # follows the left one
        shoot(page, "compare")

        tab(page, "Rate")
        me = rater_id(page)
        fill_source(page, "rate", clip, "make it snow")
        page.locator("#rate-make").click()
        page.wait_for_selector("#rate-A:not([disabled])")
        assert "was" not in page.locator("#rate-reveal").inner_text()  # names hidden before the vote
        page.locator("#rate-A").click()
        page.wait_for_function("document.querySelector('#rate-reveal')?.innerText.includes('saved')")
        page.wait_for_selector("#rate-A[disabled]")
        shoot(page, "rate")

        votes = store.votes()
        assert len(votes) == 1 and votes[0]["rater_id"] == me and votes[0]["instruction"] == "make it snow"
        left = "teacher" if "(left) was `teacher`" in page.locator("#rate-reveal").inner_text() else None
        assert votes[0]["choice"] == votes[0]["shown_left"]  # "A is better" = the side shown on the left
        assert left is None or votes[0][f"variant_{votes[0]['shown_left'].lower()}"] == left

        tab(page, "Results")
        page.wait_for_function("document.querySelector('#results-summary')?.innerText.includes('1 vote')")
        pairs = page.locator("#results-pairs").inner_text()
        assert "teacher" in pairs and "teacher+clockwork-identity" in pairs
        shoot(page, "results")

        page.reload()
        tab(page, "Rate")
        assert rater_id(page) == me  # the anonymous id stays with the browser
    store.close()
    assert {p.stem for p in SHOTS.glob("*.png")} >= {"edit", "compare", "rate", "results"}


def test_a_study_from_manifest_to_the_last_pair_in_a_browser(tiny_family, tmp_path, clip, page_of, monkeypatch):
    monkeypatch.setenv("MOVIE_ADMIN_TOKEN", "browser-admin")
    manifest = tmp_path / "pilot.json"
    manifest.write_text(json.dumps({
        "name": "pilot", "clips": [str(clip)], "instructions": ["make it snow"],
        "variant_pairs": [["teacher+clockwork-identity", "teacher"]], "params": {"steps": 2, "seed": 0},
        "gold_pairs": 1, "max_frames": FRAMES, "short_side": SIDE}))
    store = Store(f"sqlite:///{tmp_path / 'ratings.db'}")
    config = AppConfig(short_side=SIDE, max_frames=FRAMES, samples=(), output_dir=str(tmp_path / "out"),
                       studies_dir=str(tmp_path / "studies"))
    with served(Editor(tiny_family), store, config) as (url, _):
        page = page_of(url)
        tab(page, "Study")
        page.get_by_text("Admin: studies").click()
        page.locator("#study-token input").fill("browser-admin")
        page.locator("#study-manifest input[type=file]").set_input_files(str(manifest))
        page.locator("#study-create").click()
        page.wait_for_function("document.querySelector('#study-status')?.innerText.includes('is ready')")
        study_id = store.studies()[0]["id"]
        assert len(store.study_pairs(study_id)) == 2  # one comparison and one gold pair

        page.locator("#study-picker input").click()
        page.get_by_role("option", name="pilot").click()
        page.locator("#study-start").click()
        page.wait_for_function("document.querySelector('#study-progress')?.innerText.includes('0 of 2')")
        page.wait_for_selector("#study-left video")
        shoot(page, "study")
        for done in (1, 2):
            page.wait_for_selector("#study-tie:not([disabled])")
            page.locator("#study-tie").click()
            page.wait_for_function(f"document.querySelector('#study-progress')?.innerText.includes('{done} of 2')")
        page.wait_for_function("document.querySelector('#study-progress')?.innerText.includes('all done')")
    votes = store.votes(study_id)
    assert len(votes) == 2 and {v["choice"] for v in votes} == {"tie"} and len({v["rater_id"] for v in votes}) == 1
    assert {v["pair_id"] for v in votes} == {p["id"] for p in store.study_pairs(study_id)}
    store.close()

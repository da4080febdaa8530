"""Tests for the Gradio app: the edit handler, the layout, the launcher, and the app end to end through
gradio_client (edit, compare, vote, results, export, the busy message, votes never waiting behind an edit)."""
from __future__ import annotations

import csv
import json
import math
import threading

import gradio as gr
import numpy as np
import pytest
from scipy.optimize import minimize

import app
from editor.study.store import VoteIn
from editor.variants import available_variants
from editor.video_io import read_clip, write_clip
from tests.conftest import FPS, FRAMES, SIDE, served
from ui import common, rate
from ui.blocks import AppConfig, build_app, example_instructions
from ui.common import UserError, pick_seed
from ui.edit import run_edit


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
    out, info = edit(editor, config, clip, progress=lambda *a: calls.append(a))
    assert out.endswith(".mp4") and out.startswith(config.output_dir)
    assert len(read_clip(out).frames) == FRAMES
    s = info["settings"]
    assert (s["seed"], s["steps"], s["variant"], s["s_T"], s["s_I"]) == (123, 2, "teacher", 7.5, 1.5)
    assert s["instruction"] == "make it black and white" and s["frames"] == FRAMES and s["size"] == "64x64"
    assert info["speed"]["unet_passes_per_frame"] == 6 and info["speed"]["ms_per_frame"] > 0
    assert set(info["speed"]["stage_ms_per_frame"]) == {"video_io", "encode", "unet", "decode"}
    assert calls and calls[-1][:2] == (FRAMES, FRAMES) and f"{FRAMES}/{FRAMES} frames done" in calls[-1][2]


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
        paths.append(common.new_output_path(tmp_path, keep=3))
        paths[-1].write_bytes(b"x")
    assert len(set(paths)) == 5 and len(list(tmp_path.glob("edit-*.mp4"))) == 3


# ----------------------------------------------------------------------------- layout and launcher

def test_build_app_lays_out_the_pages(editor, store, config, clip):
    demo = build_app(editor, store, AppConfig(short_side=SIDE, samples=(clip,), output_dir=config.output_dir))
    assert any(fn.api_name == "edit" for fn in demo.fns.values())
    dropdown = next(b for b in demo.blocks.values() if isinstance(b, gr.Dropdown))
    assert [c[1] for c in dropdown.choices] == available_variants(editor.family)
    sliders = {b.label: b for b in demo.blocks.values() if isinstance(b, gr.Slider)}
    assert sliders["Steps"].value == editor.family.default_steps == 2
    assert sliders["Text guidance s_T"].value == editor.family.default_guidance.text
    assert len(example_instructions()) == 6
    tabs = [b.label for b in demo.blocks.values() if isinstance(b, gr.Tab)]
    assert tabs == ["Edit", "Live", "Compare", "Rate", "Study", "Results"]
    apis = {fn.api_name: fn for fn in demo.fns.values() if fn.api_name}
    assert {"edit", "preview", "compare", "pair", "vote", "results", "export", "studies"} <= set(apis)
    engine = {apis[n].concurrency_id for n in ("edit", "preview", "compare", "pair")}
    assert engine == {"edit"} and apis["vote"].concurrency_id == "vote" and apis["results"].concurrency_id == "results"
    assert any(isinstance(b, gr.BrowserState) for b in demo.blocks.values())


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


def test_main_builds_and_launches(monkeypatch, tiny_family_dir, tmp_path):
    seen = {}
    monkeypatch.setattr(gr.Blocks, "launch", lambda self, **kw: seen.update(kw, demo=self))
    app.main(["--model", str(tiny_family_dir), "--port", "7999", "--max-frames", "4", "--db", str(tmp_path / "r.db")])
    assert seen["server_port"] == 7999 and seen["server_name"] == "127.0.0.1" and not seen["share"]
    assert seen["demo"].get_config_file()["title"] and (tmp_path / "r.db").exists()
    assert len(seen["allowed_paths"]) == 1 and seen["max_file_size"] == 200 * 2**20  # study videos: copies only
    assert (tmp_path / "server_secret").stat().st_mode & 0o777 == 0o600  # made once, next to the database


def test_database_url(monkeypatch, tmp_path):
    monkeypatch.delenv("DATABASE_URL", raising=False)
    assert app.database_url("postgresql://u@h/db") == "postgresql://u@h/db"
    assert app.database_url(str(tmp_path / "x.db")) == f"sqlite:///{tmp_path / 'x.db'}"
    assert app.database_url(None).endswith("data/ratings.db")
    monkeypatch.setenv("DATABASE_URL", "sqlite:///elsewhere.db")
    assert app.database_url(None) == "sqlite:///elsewhere.db"


# ----------------------------------------------------------------------------- end to end

def path_of(video) -> str:
    return video["video"] if isinstance(video, dict) else video


def test_edit_compare_vote_and_export_through_the_api(editor, store, config, clip, monkeypatch):
    from gradio_client import handle_file
    from gradio_client.exceptions import AppError

    monkeypatch.setenv("MOVIE_ADMIN_TOKEN", "s3cret")
    with served(editor, store, config) as (url, client):
        video, info = client.predict(handle_file(clip), "make it black and white", "teacher", 7.5, 1.5, 2, 123,
                                     False, True, 2, api_name="/edit")
        assert len(read_clip(path_of(video)).frames) == FRAMES
        assert info["settings"]["seed"] == 123 and info["settings"]["variant"] == "teacher+clockwork-identity"
        with pytest.raises(AppError, match="Upload a video"):
            client.predict(None, "make it black and white", "teacher", 7.5, 1.5, 2, 123, False, api_name="/edit")

        full, cw, speed, quality, plot, settings = client.predict(
            handle_file(clip), "make it sepia", "teacher", 7.5, 1.5, 4, 2, 7, False, api_name="/compare")
        assert settings["seed"] == 7 and settings["clockwork"] == "teacher+clockwork-identity"
        rows = {r[0]: r[1:] for r in speed["data"]}
        assert rows["UNet passes per frame"][:2] == [12, 6]
        assert len(plot["data"]) == 8 and quality["data"][0][0] == "PSNR full vs clockwork (dB)"

        rater = client.predict("", api_name="/rater")
        _, _, pair_token, *_ = client.predict(rater, handle_file(clip), "make it sepia", "teacher",
                                              "teacher+clockwork-identity", 7.5, 1.5, 1, 7, False, api_name="/pair")
        shown_left = store.shown_pair(pair_token)["shown_left"]
        voted = client.predict(rater, pair_token, "A", 1500, api_name="/vote")
        assert voted["choice"] == shown_left and "(left) was `" in voted["reveal"]
        with pytest.raises(AppError, match="already voted"):
            client.predict(rater, pair_token, "tie", 100, api_name="/vote")
        row = store.votes()[0]
        assert (row["rater_id"], row["choice"], row["shown_left"], row["decide_ms"]) == (
            rater.split(".")[0], shown_left, shown_left, 1500)
        with pytest.raises(AppError, match="admin token"):
            client.predict("wrong", "", api_name="/export")
        exported = client.predict("s3cret", "", api_name="/export")
        with open(exported, newline="") as f:
            lines = list(csv.DictReader(f))
        assert len(lines) == 1 and lines[0]["id"] == voted["vote_id"] and lines[0]["choice"] == shown_left


class BlockingEditor:
    """An editor whose edits wait until released: shows what waits behind a running edit."""

    def __init__(self, editor):
        self.family, self.inner = editor.family, editor
        self.started, self.release = threading.Event(), threading.Event()

    def edit_video(self, *args, **kwargs):
        self.started.set()
        assert self.release.wait(30), "never released"
        return self.inner.edit_video(*args, **kwargs)


def test_votes_never_wait_behind_an_edit_and_a_full_queue_says_busy(editor, store, tmp_path, clip):
    from gradio_client import handle_file
    from gradio_client.exceptions import AppError

    blocking = BlockingEditor(editor)
    config = AppConfig(short_side=SIDE, samples=(), output_dir=str(tmp_path / "out"), max_waiting=0)
    args = (handle_file(clip), "make it sepia", "teacher", 7.5, 1.5, 1, 1, False)
    with served(blocking, store, config) as (url, client):
        running = client.submit(*args, api_name="/edit")
        assert blocking.started.wait(30)
        rater = client.predict("", api_name="/rater")
        pair = rate.record_pair(store, rate.rater_tokens(store).verify(rater), "e" * 64, "x", {"variant": "teacher"},
                                {"variant": "mmg"}, np.random.default_rng(0))
        try:
            assert client.predict(rater, pair["token"], "tie", 10, api_name="/vote")["choice"] == "tie"
            assert client.predict("", api_name="/results")[0].startswith("**1 vote**")
            with pytest.raises(AppError, match="busy"):
                client.predict(*args, api_name="/edit")
            assert not running.done()
        finally:
            blocking.release.set()
        assert len(read_clip(path_of(running.result(timeout=60)[0])).frames) == FRAMES


# ----------------------------------------------------------------------------- the Results page vs first principles

def _wilson(wins: float, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval, from its textbook formula."""
    p = wins / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return centre - half, centre + half


def _bradley_terry(votes: list[tuple[str, str, float]], names: list[str]) -> dict[str, float]:
    """Bradley-Terry log-strengths (mean 0) by maximising the likelihood with a generic optimiser;
    each vote is (a, b, a's share of the win) with ties as 0.5."""
    index = {n: i for i, n in enumerate(names)}

    def nll(theta):
        theta = np.append(theta, -theta.sum())  # the last strength makes the mean 0
        total = 0.0
        for a, b, share in votes:
            d = theta[index[a]] - theta[index[b]]
            total -= share * -np.logaddexp(0, -d) + (1 - share) * -np.logaddexp(0, d)
        return total

    fit = minimize(nll, np.zeros(len(names) - 1), method="BFGS", options={"gtol": 1e-10})
    theta = np.append(fit.x, -fit.x.sum())
    return {n: float(theta[index[n]]) for n in names}


def test_results_page_matches_an_independent_computation(editor, store, config):
    names = ["mmg", "teacher", "teacher+clockwork-identity"]
    plan = [("teacher", "mmg", "A")] * 5 + [("teacher", "mmg", "B")] * 3 + [("mmg", "teacher", "tie")] * 2 + \
        [("teacher+clockwork-identity", "teacher", "A")] * 2 + [("teacher+clockwork-identity", "teacher", "B")] * 4 + \
        [("teacher", "teacher+clockwork-identity", "both_bad")] + [("mmg", "teacher+clockwork-identity", "A")] * 3 + \
        [("mmg", "teacher+clockwork-identity", "B")] * 2
    for k, (a, b, choice) in enumerate(plan):
        store.add_vote(VoteIn(rater_id=f"rater-ind-{k:04d}", clip_hash="f" * 64, instruction="make it snow",
                              variant_a=a, variant_b=b, shown_left="A", choice=choice, decide_ms=1))
    share = {"A": 1.0, "B": 0.0, "tie": 0.5, "both_bad": 0.5}
    with served(editor, store, config) as (url, client):
        summary, pairs, bt, per_instruction, *_ = client.predict("", api_name="/results")
    assert summary.startswith(f"**{len(plan)} votes**")
    shown = {(r[0], r[1]): r for r in pairs["data"]}
    for first, second in [("mmg", "teacher"), ("mmg", "teacher+clockwork-identity"),
                          ("teacher", "teacher+clockwork-identity")]:
        wins = sum(share[c] if a == first else 1 - share[c] for a, b, c in plan if {a, b} == {first, second})
        n = sum({a, b} == {first, second} for a, b, _ in plan)
        row = shown[(first, second)]
        assert row[2] == n and row[7] == pytest.approx(wins / n, abs=1e-4)
        assert row[8:10] == pytest.approx(list(_wilson(wins, n)), abs=1e-4)
    expected = _bradley_terry([(a, b, share[c]) for a, b, c in plan], names)
    scores = {r[0]: r[1] for r in bt["data"]}
    assert scores == pytest.approx(expected, abs=2e-4)
    assert all(r[2] <= r[1] <= r[3] for r in bt["data"])  # the bootstrap interval holds the estimate
    assert len(per_instruction["data"]) == 3


# ----------------------------------------------------------------------------- load

def test_load_script_small(editor, store, config, tmp_path):
    from ui import load_test

    with served(editor, store, config) as (url, _):
        report_path = tmp_path / "load.json"
        status = load_test.main(["--url", url, "--raters", "4", "--votes", "5", "--db", store.url,
                                 "--json", str(report_path)])
    report = json.loads(report_path.read_text())
    assert status == 0 and report["errors"] == 0 and report["rows_expected"] == report["rows_found"] == 20
    assert store.count_votes() == 20 and len({v["rater_id"] for v in store.votes()}) == 4
    assert report["latency_ms"]["p50"] <= report["latency_ms"]["p95"] and report["votes_per_s"] > 0

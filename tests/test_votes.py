"""Votes that can be trusted (issue #34): rater tokens, pairs that live on the server, anonymous videos, the
leaderboard's gold pairs and small samples -- as plain handlers, then through the real API (``gradio_client`` on
``launch(prevent_thread_lock=True)``): forged, replayed, swapped-name and foreign-rater votes store nothing."""
from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest

from editor.study.studies import BROKEN_VARIANT, broken_frames
from editor.study.tokens import InvalidToken, RaterTokens, load_secret, secret_path_for
from editor.video_io import read_clip, write_clip
from tests.conftest import served
from ui import rate, results, study
from ui.common import UserError
from ui.costs import CostTable
from ui.widgets import AppConfig

SIDE = 64
TOKEN = "test-admin-token"
SECRET = b"s" * 32
VARIANT_NAMES = ("teacher", "clockwork", "mmg", "onestep", BROKEN_VARIANT)


@pytest.fixture
def tokens():
    return RaterTokens(SECRET)


@pytest.fixture
def config(tmp_path):
    return AppConfig(short_side=SIDE, max_frames=4, samples=(), output_dir=str(tmp_path / "out"), n_boot=20)


@pytest.fixture(scope="module")
def clip(tmp_path_factory, moving_frames):
    return write_clip(moving_frames[:4], 8, tmp_path_factory.mktemp("clips") / "moving.mp4")


@pytest.fixture
def admin(monkeypatch):
    monkeypatch.setenv("MOVIE_ADMIN_TOKEN", TOKEN)
    return TOKEN


# ----------------------------------------------------------------------------- tokens and the secret

def test_rater_tokens_are_signed_and_scoped(tokens):
    token = tokens.issue()
    rater = tokens.verify(token)
    assert re.fullmatch(r"rater-[0-9a-f]{32}", rater.rater_id) and rater.study_id is None
    bound = tokens.for_study(token, "study-1")
    assert tokens.verify(bound).rater_id == rater.rater_id and tokens.verify(bound).study_id == "study-1"
    rater_id, scope, sig = token.split(".")
    other = tokens.issue()
    forged = [
        f"{rater_id}.{scope}.{sig[:-1]}{'A' if sig[-1] != 'A' else 'B'}",   # signature changed
        f"{other.split('.')[0]}.{scope}.{sig}",                              # someone else's id, my signature
        f"{rater_id}.study-1.{sig}",                                         # moved to a study
        RaterTokens(b"another server's secret").issue(rater_id=rater_id),    # another server
        f"rater-{'0' * 32}", "", None, 12, {"rater_id": rater_id}, token + "x" * 300,
    ]
    for bad in forged:
        with pytest.raises(InvalidToken):
            tokens.verify(bad)


def test_the_secret_is_made_once_with_mode_0600(tmp_path, monkeypatch):
    monkeypatch.delenv("MOVIE_SECRET", raising=False)
    path = secret_path_for(f"sqlite:///{tmp_path / 'ratings.db'}")
    assert path == tmp_path / "server_secret"
    first = load_secret(path)
    assert load_secret(path) == first and len(first) >= 32 and (path.stat().st_mode & 0o777) == 0o600
    monkeypatch.setenv("MOVIE_SECRET", "from-the-environment-0123456789")
    assert load_secret(path) == b"from-the-environment-0123456789"
    monkeypatch.setenv("MOVIE_SECRET", "short")
    with pytest.raises(ValueError, match="too short"):
        load_secret(path)


def test_the_page_keeps_a_valid_token_and_replaces_anything_else(tokens):
    token = tokens.issue()
    assert rate.ensure_rater_token(tokens, token) == token
    for old in (None, "", "rater-0123456789abcdef0123456789abcdef", RaterTokens(b"x" * 32).issue()):
        fresh = rate.ensure_rater_token(tokens, old)
        assert fresh != old and tokens.verify(fresh).study_id is None
    bound = tokens.for_study(token, "s1")  # a study token in the page's slot: the same rater, ad-hoc scope
    assert tokens.verify(rate.ensure_rater_token(tokens, bound)).rater_id == tokens.verify(token).rater_id


# ----------------------------------------------------------------------------- the Rate page's handlers

def test_default_pair_is_the_one_step_student_against_the_teacher(tiny_family):
    costs = CostTable(tiny_family, (8, 8))
    assert rate.default_pair(["teacher", "teacher+clockwork-identity"], costs, 4) == (
        "teacher+clockwork-identity", "teacher")
    assert rate.default_pair(["teacher", "mmg", "onestep", "teacher+clockwork-identity"], costs, 4) == (
        "onestep", "teacher")
    assert rate.default_pair(["teacher"], costs, 4) == ("teacher", "teacher")


def test_render_pair_records_the_pair_and_serves_anonymous_copies(editor, store, tokens, config, clip):
    token = tokens.issue()
    left, right, pair_token = rate.render_pair(editor, config, store, tokens, token, clip, "make it sepia",
                                               "teacher+clockwork-identity", "teacher", 7.5, 1.5, 2, 9, False,
                                               rng=np.random.default_rng(1))
    pair = store.shown_pair(pair_token)
    assert pair["rater_id"] == tokens.verify(token).rater_id and pair["seed_a"] == pair["seed_b"] == 9
    assert pair["variant_a"] == "teacher+clockwork-identity" and pair["timings_a"]["frames"] == 4
    for video in (left, right):
        assert re.fullmatch(r"pair-[0-9a-f]{32}\.mp4", Path(video).name) and len(read_clip(video).frames) == 4
    assert os.path.getsize(left) == os.path.getsize(right)
    assert sorted(Path(config.output_dir).glob("*.mp4")) == sorted(Path(p) for p in (left, right))
    with pytest.raises(UserError, match="two different"):
        rate.render_pair(editor, config, store, tokens, token, clip, "x", "teacher", "teacher", 7.5, 1.5, 2, 9,
                         False)
    with pytest.raises(UserError, match="Invalid rater token"):
        rate.render_pair(editor, config, store, tokens, "rater-x", clip, "x", "teacher", "mmg", 7.5, 1.5, 2, 9,
                         False)


def _pair(store, tokens, rater_token, seed=3, rng=None):
    a = {"variant": "teacher", "params": {"steps": 4}, "seed": seed, "timings": {"total_s": 2.0}}
    b = {"variant": "teacher+clockwork-identity", "params": {"steps": 4, "clock": 2}, "seed": seed}
    return rate.record_pair(store, tokens.verify(rater_token), "c" * 64, "make it snow", a, b,
                            rng or np.random.default_rng(seed))


def test_cast_vote_stores_the_servers_pair_once(store, tokens):
    me = tokens.issue()
    pair = _pair(store, tokens, me)
    voted = rate.cast_vote(store, tokens, me, pair["token"], "A", 2500)
    (row,) = store.votes()
    assert (row["choice"], row["shown_left"], row["decide_ms"], row["rater_id"]) == (
        pair["shown_left"], pair["shown_left"], 2500, tokens.verify(me).rater_id)
    left = pair["variant_a"] if pair["shown_left"] == "A" else pair["variant_b"]
    assert voted["reveal"].startswith(f"**A** (left) was `{left}`")
    with pytest.raises(UserError, match="already voted"):
        rate.cast_vote(store, tokens, me, pair["token"], "tie")
    assert store.count_votes() == 1


@pytest.mark.parametrize("case, message", [
    ("forged pair", "unknown pair token"), ("malformed pair", "no pair to vote on"),
    ("old-style pair", "no pair to vote on"), ("foreign rater", "another rater"),
    ("forged rater", "Invalid rater token"), ("other server", "Invalid rater token"),
    ("study token", "not part of the rater's study"), ("bad choice", "choice must be"),
    ("decide_ms nan", "decide_ms"), ("decide_ms huge", "decide_ms"), ("decide_ms text", "decide_ms"),
])
def test_bad_votes_store_nothing(store, tokens, case, message):
    me = tokens.issue()
    pair = _pair(store, tokens, me)
    args = {"rater_token": me, "pair_token": pair["token"], "shown_choice": "A", "decide_ms": 10}
    args |= {
        "forged pair": {"pair_token": "p-" + "A" * 43}, "malformed pair": {"pair_token": "teacher"},
        "old-style pair": {"pair_token": {"variant_a": "teacher", "variant_b": "mmg", "shown_left": "A"}},
        "foreign rater": {"rater_token": tokens.issue()}, "forged rater": {"rater_token": me[:-2] + "xx"},
        "other server": {"rater_token": RaterTokens(b"o" * 32).issue(rater_id=tokens.verify(me).rater_id)},
        "study token": {"rater_token": tokens.for_study(me, "s1")}, "bad choice": {"shown_choice": "left"},
        "decide_ms nan": {"decide_ms": float("nan")}, "decide_ms huge": {"decide_ms": 1e300},
        "decide_ms text": {"decide_ms": "fast"},
    }[case]
    with pytest.raises(UserError, match=message):
        rate.cast_vote(store, tokens, args["rater_token"], args["pair_token"], args["shown_choice"],
                       args["decide_ms"])
    assert store.count_votes() == 0


def test_the_vote_cap(store, tokens):
    me = tokens.issue()
    for seed in range(3):
        rate.cast_vote(store, tokens, me, _pair(store, tokens, me, seed)["token"], "A", max_votes=3)
    with pytest.raises(UserError, match="most votes one rater may"):
        rate.cast_vote(store, tokens, me, _pair(store, tokens, me, 9)["token"], "A", max_votes=3)
    assert store.count_votes() == 3


# ----------------------------------------------------------------------------- the Study page's handlers

def make_study(store, tmp_path, moving_frames, n=3, gold=1, rendered=True) -> str:
    """A study of ``n`` pairs, the first ``gold`` of them gold pairs (their B side broken), with real videos."""
    folder = tmp_path / "renders"
    folder.mkdir(exist_ok=True)
    clip = write_clip(moving_frames[:4], 8, folder / "clip.mp4")
    sid = store.create_study("pilot")
    pairs = []
    for k in range(n):
        files = []
        for side in "ab":
            # named like the old renders, variant and all: the names must never reach the browser
            f = folder / f"clip-{k}-{BROKEN_VARIANT if k < gold and side == 'b' else 'teacher'}-{side}.mp4"
            if rendered:
                frames = moving_frames[:4] if side == "a" or k >= gold else broken_frames(moving_frames[:4], k)
                write_clip(np.ascontiguousarray(frames[:, :, :, ::-1] if side == "b" else frames), 8, f)
            files.append(str(f))
        is_gold = k < gold
        pairs.append(dict(clip_path=str(clip), instruction=f"make it snow {k}", variant_a="teacher",
                          variant_b=BROKEN_VARIANT if is_gold else "teacher+clockwork-identity",
                          params={"steps": 4, "seed": k}, rendered_a=files[0], rendered_b=files[1],
                          is_gold=is_gold, gold_bad_side="B" if is_gold else None))
    store.add_study_pairs(sid, pairs)
    return sid


def test_a_rater_works_through_a_study(store, tokens, tmp_path, moving_frames, config):
    sid = make_study(store, tmp_path, moving_frames)
    me = tokens.issue()
    left, right, line, pair_token, bound = study.study_next(store, tokens, sid, me, config.output_dir,
                                                            np.random.default_rng(0))
    assert "**0 of 3**" in line and tokens.verify(bound).study_id == sid
    assert tokens.verify(bound).rater_id == tokens.verify(me).rater_id
    again = study.study_next(store, tokens, sid, bound, config.output_dir)  # a reload: the same pair and sides
    assert again[3] == pair_token and again[0] != left
    sizes, seen = set(), [store.shown_pair(pair_token)["study_pair_id"]]
    for _ in range(3):
        sizes |= {os.path.getsize(left), os.path.getsize(right)}
        assert not any(name in Path(v).name for v in (left, right) for name in VARIANT_NAMES)
        reveal, left, right, line, pair_token, bound = study.study_vote(store, tokens, bound, pair_token, "A",
                                                                        config.output_dir)
        assert "saved" in reveal
        if pair_token:
            seen.append(store.shown_pair(pair_token)["study_pair_id"])
    assert pair_token == "" and left is None and "**3 of 3**" in line and "all done" in line
    assert len(set(seen)) == 3 and store.count_votes(sid) == 3 and {v["study_id"] for v in store.votes()} == {sid}
    assert len(sizes) == 1  # every video of the study, gold pairs' broken sides included, has one size


def test_study_errors(store, tokens, tmp_path, moving_frames, admin, config):
    sid = make_study(store, tmp_path, moving_frames, rendered=False)
    me = tokens.issue()
    with pytest.raises(UserError, match="not rendered yet"):
        study.study_next(store, tokens, sid, me, config.output_dir)
    with pytest.raises(UserError, match="Pick a study"):
        study.study_next(store, tokens, "", me, config.output_dir)
    with pytest.raises(UserError, match="No study with that id"):
        study.study_next(store, tokens, "no-such-study", me, config.output_dir)
    with pytest.raises(UserError, match="bound to another study"):
        study.study_next(store, tokens, sid, tokens.for_study(me, "another"), config.output_dir)
    with pytest.raises(UserError, match="admin token"):
        study.study_overview(store, "wrong")
    table = study.study_overview(store, admin)
    assert list(table["pairs"]) == [3] and list(table["gold pairs"]) == [1] and list(table["votes"]) == [0]


def test_create_from_manifest_checks_the_token_and_the_manifest(store, editor, tmp_path, admin):
    bad = tmp_path / "m.json"
    bad.write_text('{"name": "x", "clips": []}')
    with pytest.raises(UserError, match="admin token"):
        study.create_from_manifest(store, editor, "nope", str(bad), tmp_path)
    with pytest.raises(UserError, match="Invalid manifest"):
        study.create_from_manifest(store, editor, admin, str(bad), tmp_path)
    with pytest.raises(UserError, match="Upload a study manifest"):
        study.create_from_manifest(store, editor, admin, None, tmp_path)
    with pytest.raises(UserError, match="No manifest file"):
        study.create_from_manifest(store, editor, admin, None, tmp_path, server_path=str(tmp_path / "none.json"))
    for text in ("[1, 2]", "{not json", "\udcff"):
        bad.write_text(text, errors="surrogateescape")
        with pytest.raises(UserError, match="manifest"):
            study.create_from_manifest(store, editor, admin, str(bad), tmp_path)


def test_relative_clip_paths_are_taken_from_the_manifests_folder(store, editor, tmp_path, admin, moving_frames):
    folder = tmp_path / "project"
    (folder / "clips").mkdir(parents=True)
    write_clip(moving_frames[:2], 8, folder / "clips" / "a.mp4")
    manifest = folder / "study.json"
    manifest.write_text(json.dumps({"name": "rel", "clips": ["clips/a.mp4"], "instructions": ["make it snow"],
                                    "variant_pairs": [["teacher+clockwork-identity", "teacher"]],
                                    "params": {"steps": 1}, "max_frames": 2, "short_side": SIDE}))
    upload = Path(tempfile.mkdtemp(dir=tmp_path)) / "study.json"  # Gradio keeps an upload in a folder of its own
    shutil.copy(manifest, upload)
    with pytest.raises(UserError, match="relative clip paths .* manifest's folder"):
        study.create_from_manifest(store, editor, admin, str(upload), tmp_path / "out")
    table, line = study.create_from_manifest(store, editor, admin, None, tmp_path / "out",
                                             server_path=str(manifest))
    assert "is ready" in line and list(table["pairs"]) == [1]
    assert store.study_pairs(store.studies()[0]["id"])[0]["clip_path"] == str(folder / "clips" / "a.mp4")


# ----------------------------------------------------------------------------- results

def _votes(store, tokens, choices: list[str], study_pairs=None) -> None:
    for k, choice in enumerate(choices):
        me = tokens.issue()
        rate.cast_vote(store, tokens, me, _pair(store, tokens, me, k, np.random.default_rng([k, 1]))["token"],
                       choice)


def test_results_count_ties_half_and_hide_intervals_of_small_samples(store, tokens):
    _votes(store, tokens, ["A", "A", "B", "tie"])  # A/B as clicked: map to canonical sides via shown_left
    votes = store.votes()
    wins = sum(1.0 if v["choice"] == "A" else 0.5 if v["choice"] == "tie" else 0.0 for v in votes)
    summary, pairs, bt, per_instruction, win_plot, bt_plot = results.results(store, "", n_boot=50)
    assert summary.startswith("**4 votes** from **4 raters**")
    row = pairs.iloc[0]
    assert (row["variant A"], row["votes"]) == ("teacher", 4) and row["A win rate"] == wins / 4
    assert row["CI low"] == row["CI high"] == results.TOO_FEW  # 4 votes: no interval
    assert list(bt["CI low"]) == [results.TOO_FEW] * 2
    _votes(store, tokens, ["tie"] * 2)
    row = results.results(store, "", n_boot=50)[1].iloc[0]
    assert row["votes"] == 6 and isinstance(row["CI low"], float) and row["CI low"] < row["A win rate"] < row["CI high"]


def test_gold_pairs_are_never_ranked(store, tokens, tmp_path, moving_frames, config):
    sid = make_study(store, tmp_path, moving_frames, n=2, gold=1)
    me = tokens.issue()
    _, _, _, pair_token, bound = study.study_next(store, tokens, sid, me, config.output_dir)
    while pair_token:
        _, _, _, _, pair_token, bound = study.study_vote(store, tokens, bound, pair_token, "A", config.output_dir)
    assert {v["variant_b"] for v in store.votes(sid)} == {BROKEN_VARIANT, "teacher+clockwork-identity"}
    summary, pairs, bt, per_instruction, *_ = results.results(store, sid, n_boot=20)
    assert "1 vote on gold check pairs, not ranked" in summary
    assert BROKEN_VARIANT not in set(pairs["variant A"]) | set(pairs["variant B"]) | set(bt["variant"])
    assert BROKEN_VARIANT not in set(per_instruction["variant B"])
    with pytest.raises(UserError, match="No study with that id"):
        results.results(store, "no-such-study")


def test_export_needs_the_admin_token(store, tokens, tmp_path, admin):
    _votes(store, tokens, ["A"])
    with pytest.raises(UserError, match="admin token"):
        results.export_csv(store, "wrong", "", str(tmp_path))
    path = results.export_csv(store, admin, "", str(tmp_path))
    lines = open(path).read().splitlines()
    assert len(lines) == 2 and lines[0].startswith("id,created_at,rater_id")
    assert results.study_filter_choices(store) == [("All votes", "")]
    with pytest.raises(UserError, match="No study with that id"):
        results.export_csv(store, admin, "../../etc/passwd", str(tmp_path))


# ----------------------------------------------------------------------------- through the real API

def _refused(client, args, api_name="/vote") -> str:
    """The one-line message of a refused call (never an internal error)."""
    from gradio_client.exceptions import AppError

    with pytest.raises(AppError) as err:
        client.predict(*args, api_name=api_name)
    message = str(err.value)
    assert "internal error" not in message and "\n" not in message.strip(), message
    return message


def _opaque(path: str) -> None:
    assert re.fullmatch(r"pair-[0-9a-f]{32}\.mp4", Path(path).name), path
    assert not any(name in path for name in VARIANT_NAMES), path


def test_vote_abuse_through_the_api_stores_nothing(editor, store, config, clip, tmp_path, moving_frames, caplog,
                                                    capfd):
    import logging

    from gradio_client import handle_file

    caplog.set_level(logging.INFO, logger="ui.serving")
    sid = make_study(store, tmp_path, moving_frames, n=2, gold=1)
    with served(editor, store, config) as (url, client):
        me, other = client.predict("", api_name="/rater"), client.predict("", api_name="/rater")
        left, right, pair_token, *_ = client.predict(me, handle_file(clip), "make it sepia", "teacher",
                                                     "teacher+clockwork-identity", 7.5, 1.5, 1, 3, False,
                                                     api_name="/pair")
        for video in (left, right):  # what the browser sees before the vote: the URL path and the file
            _opaque(video)
        assert os.path.getsize(left) == os.path.getsize(right)
        pair = store.shown_pair(pair_token)
        rater_id = me.split(".")[0]
        old_style = {"clip_hash": pair["clip_hash"], "instruction": "make it sepia", "variant_a": pair["variant_b"],
                     "variant_b": pair["variant_a"], "seed_a": 3, "seed_b": 3, "shown_left": "A"}
        attempts = {
            "forged pair token": (me, "p-" + "Z" * 43, "A", 100),
            "swapped names, the old payload": (me, old_style, "A", 100),
            "names in the pair token": (me, "teacher+clockwork-identity", "A", 100),
            "foreign rater": (other, pair_token, "A", 100),
            "forged rater token": (me[:-4] + "AAAA", pair_token, "A", 100),
            "another server's token": (RaterTokens(b"x" * 32).issue(rater_id=rater_id), pair_token, "A", 100),
            "the study's token on an ad-hoc pair": (client.predict(sid, api_name="/rater"), pair_token, "A", 100),
            "unknown choice": (me, pair_token, "left", 100),
            "decide_ms 1e300": (me, pair_token, "A", 1e300),
            "decide_ms negative": (me, pair_token, "A", -5),
            "5 MB field": (me, "p-" + "x" * 5_000_000, "A", 100),
        }
        messages = {case: _refused(client, args) for case, args in attempts.items()}
        assert store.count_votes() == 0, messages
        assert "unknown pair token" in messages["forged pair token"]
        assert "another rater" in messages["foreign rater"]
        assert "Invalid rater token" in messages["forged rater token"]

        voted = client.predict(me, pair_token, "A", 1500, api_name="/vote")
        assert voted["choice"] == pair["shown_left"]
        assert "already voted" in _refused(client, (me, pair_token, "B", 10))           # replayed
        assert "already voted" in _refused(client, (me, pair_token, "A", 1500))         # replayed as it was
        (row,) = store.votes()
        assert (row["variant_a"], row["variant_b"], row["pair_token"], row["rater_id"], row["decide_ms"]) == (
            pair["variant_a"], pair["variant_b"], pair_token, rater_id, 1500)

        # a study: its rater token, pairs under opaque names of one size, the gold pair included
        bound = client.predict(sid, api_name="/rater")
        sizes = set()
        for _ in range(2):
            left, right, line, study_pair, bound2, *_ = client.predict(sid, bound, api_name="/study_pair")
            assert bound2 == bound and "of 2" in line
            for video in (left, right):
                _opaque(video)
                sizes.add(os.path.getsize(video))
            assert "another rater" in _refused(client, (other, study_pair, "A", 10))
            client.predict(bound, study_pair, "tie", 900, api_name="/vote")
        assert len(sizes) == 1 and store.count_votes(sid) == 2
        assert "No study with that id" in _refused(client, ("no-such-study",), "/rater")
        assert "No study with that id" in _refused(client, ("no-such-study", me), "/study_pair")
        assert "No study with that id" in _refused(client, ("no-such-study",), "/results")
        summary, pairs, bt, *_ = client.predict(sid, api_name="/results")
        assert BROKEN_VARIANT not in json.dumps([pairs, bt]) and "not ranked" in summary
    refusals = [r for r in caplog.records if "refused" in r.getMessage()]
    assert len(refusals) >= len(attempts) and not any(r.exc_info for r in refusals)
    assert "Traceback" not in capfd.readouterr().err

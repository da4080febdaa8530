"""The study backend: per-rater order and progress, the admin token, the manifest, and pre-rendering a study with
the tiny random family (2 clips x 1 instruction x 1 variant pair + 1 gold pair, 2 frames, 2 steps)."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest

from editor import video_io
from editor.study.store import DuplicateVote, Store, file_sha256
from editor.study.studies import (
    ADMIN_TOKEN_ENV, BROKEN_VARIANT, StudyManifest, StudyParams, admin_ok, broken_frames, main, next_pair,
    pair_sides, rater_order, study_vote,
)

PAIR_VARIANTS = ["teacher+clockwork-identity", "teacher"]


def add_pairs(store: Store, n: int, name: str = "s") -> tuple[str, list[dict]]:
    sid = store.create_study(name)
    store.add_study_pairs(sid, [dict(clip_path=f"c{i}.mp4", clip_hash=f"{i:064x}", instruction="snow",
                                     variant_a="mmg", variant_b="teacher", params={"steps": 2, "seed": 3})
                                for i in range(n)])
    return sid, store.study_pairs(sid)


def vote(store: Store, pair: dict, rater: str, choice: str = "A") -> str:
    return store.add_vote(study_vote(pair, rater_id=rater, shown_left="B", choice=choice, decide_ms=700))


# ------------------------------------------------------------------------------------------- raters


def test_rater_order_is_a_stable_per_rater_permutation():
    pairs = [{"id": i, "pair_key": f"k{i}"} for i in range(1, 13)]
    order = rater_order(pairs, "rater-1", "study-1")
    assert sorted(p["id"] for p in order) == list(range(1, 13))
    assert order == rater_order(pairs[::-1], "rater-1", "study-1")  # input order does not matter
    orders = {tuple(p["id"] for p in rater_order(pairs, f"rater-{r}", "study-1")) for r in range(6)}
    assert len(orders) == 6  # 12! orders: six raters sharing one would be a broken seed
    assert rater_order(pairs, "rater-1", "study-2") != order
    assert [p["id"] for p in pairs] == list(range(1, 13))  # the caller's list is not shuffled in place


def test_next_pair_walks_the_raters_order_to_the_end(db_url):
    with Store(db_url) as store:
        sid, pairs = add_pairs(store, 4)
        other, other_pairs = add_pairs(store, 2, "other")
        vote(store, other_pairs[0], "r1")                        # votes elsewhere do not count here
        vote(store, pairs[2], "r2")                              # nor do other raters' votes
        expected = rater_order(pairs, "r1", sid)
        seen = []
        for done in range(4):
            pair, n_done, total = next_pair(store, sid, "r1")
            assert (n_done, total) == (done, 4) and pair == expected[done]
            seen.append(pair["id"])
            vote(store, pair, "r1", choice="AB"[done % 2])
        assert next_pair(store, sid, "r1") == (None, 4, 4)
        assert sorted(seen) == sorted(p["id"] for p in pairs)
        assert next_pair(store, sid, "r2")[1:] == (1, 4)
        with pytest.raises(DuplicateVote):
            vote(store, pairs[0], "r1", choice="B")


def test_study_vote_carries_the_pairs_hash_params_and_timings(db_url):
    with Store(db_url) as store:
        sid = store.create_study("t")
        store.add_study_pairs(sid, [dict(clip_path="a.mp4", clip_hash="ab" * 32, instruction="snow",
                                         variant_a="teacher", variant_b="mmg",
                                         params={"steps": 4, "s_T": 7.5, "s_I": 1.5, "clock": 2, "seed": 9,
                                                 "max_frames": 8},
                                         timings={"a": {"ms_per_frame": 10.0}, "b": None})])
        (pair,) = store.study_pairs(sid)
        vote(store, pair, "r1", choice="tie")
        (row,) = store.votes(sid)
    assert (row["clip_hash"], row["pair_id"], row["pair_key"]) == ("ab" * 32, pair["id"], pair["pair_key"])
    assert row["params_a"] == row["params_b"] == {"steps": 4, "s_T": 7.5, "s_I": 1.5, "clock": 2}
    assert (row["seed_a"], row["seed_b"], row["timings_a"], row["timings_b"]) == (9, 9, {"ms_per_frame": 10.0}, None)


def test_pair_sides_hashes_the_clip_of_an_old_pair(tmp_path):
    clip = tmp_path / "a.mp4"
    clip.write_bytes(b"not really a video")
    old = dict(id=1, study_id="s", clip_path=str(clip), clip_hash=None, instruction="x", variant_a="teacher",
               variant_b="mmg", params={}, rendered_a="a", rendered_b="b", timings=None)
    sides = pair_sides(old)
    assert sides["clip_hash"] == file_sha256(clip) and sides["seed_a"] is None and sides["params_b"] == {}


def test_admin_ok(monkeypatch):
    monkeypatch.delenv(ADMIN_TOKEN_ENV, raising=False)
    assert not admin_ok("anything") and not admin_ok("") and not admin_ok(None)
    monkeypatch.setenv(ADMIN_TOKEN_ENV, "")
    assert not admin_ok("")
    monkeypatch.setenv(ADMIN_TOKEN_ENV, "s3cret-tøken")
    assert admin_ok("s3cret-tøken")
    assert not any(admin_ok(t) for t in ("s3cret", "s3cret-tøken ", "S3CRET-TØKEN", "", None))


# ------------------------------------------------------------------------------------------- manifest


def write_clips(folder, frames, n=2):
    folder.mkdir(parents=True, exist_ok=True)
    return [video_io.write_clip(np.roll(frames[:3], 16 * i, axis=2), 8.0, folder / f"clip{i}.mp4")
            for i in range(n)]


def manifest_dict(**kw) -> dict:
    m = {"name": "pilot study", "clips": ["clips/clip0.mp4", "clips/clip1.mp4"], "instructions": ["make it snow"],
         "variant_pairs": [PAIR_VARIANTS], "params": {"steps": 2, "s_T": 5, "s_I": 1.5, "seed": 1},
         "gold_pairs": 1, "max_frames": 2, "short_side": 32}
    return m | kw


@pytest.mark.parametrize("bad, message", [
    (dict(name=" "), "name"),
    (dict(clips=["clips/nope.mp4"]), "not found"),
    (dict(instructions=[]), "at least one"),
    (dict(variant_pairs=[["teacher", "teacher"]]), "two different"),
    (dict(variant_pairs=[["teacher", BROKEN_VARIANT]]), "two different"),
    (dict(gold_pairs=3), "gold_pairs"),
    (dict(params={"steps": 0}), "steps"),
    (dict(params={"steps": 2.5}), "integers"),
    (dict(params={"s_T": -1}), "guidance"),
    (dict(frames=4), "unknown manifest keys: frames"),
])
def test_manifest_is_checked(tmp_path, moving_frames, bad, message):
    write_clips(tmp_path / "clips", moving_frames)
    StudyManifest.from_dict(manifest_dict(), tmp_path)  # the base manifest is fine
    with pytest.raises(ValueError, match=message):
        StudyManifest.from_dict(manifest_dict(**bad), tmp_path)


def test_broken_frames_are_plainly_broken(moving_frames):
    broken = broken_frames(moving_frames, seed=0)
    assert broken.shape == moving_frames.shape and broken.dtype == np.uint8
    assert np.abs(broken.astype(float) - moving_frames).mean() > 50
    np.testing.assert_array_equal(broken, broken_frames(moving_frames, seed=0))


# ------------------------------------------------------------------------------------------- pre-rendering


@pytest.fixture
def study_setup(tmp_path, moving_frames, tiny_family_dir):
    write_clips(tmp_path / "clips", moving_frames)
    (tmp_path / "study.json").write_text(json.dumps(manifest_dict()))
    argv = ["create", "--manifest", str(tmp_path / "study.json"), "--out", str(tmp_path / "out"),
            "--model", str(tiny_family_dir), "--db", f"sqlite:///{tmp_path / 'ratings.db'}"]
    return tmp_path, argv


def count_edits(monkeypatch) -> list:
    from editor.pipeline import Editor

    calls, edit_video = [], Editor.edit_video
    monkeypatch.setattr(Editor, "edit_video", lambda self, *a, **k: calls.append(a[2].variant) or
                        edit_video(self, *a, **k))
    return calls


def test_create_study_pre_renders_every_pair(study_setup, monkeypatch, capsys):
    tmp_path, argv = study_setup
    calls = count_edits(monkeypatch)
    study_id = main(argv)
    assert sorted(calls) == sorted(PAIR_VARIANTS * 2)  # 2 clips x 2 variants; the gold pair reuses an edit
    assert f"study 'pilot study': {study_id} (3 pairs)" in capsys.readouterr().out
    with Store(argv[-1]) as store:
        (study,) = store.studies()
        pairs = store.study_pairs(study_id)
    assert study["manifest"]["clips"] == [str(tmp_path / "clips" / f"clip{i}.mp4") for i in range(2)]
    real, gold = [p for p in pairs if not p["is_gold"]], [p for p in pairs if p["is_gold"]]
    assert len(real) == 2 and len(gold) == 1
    assert {(p["variant_a"], p["variant_b"]) for p in real} == {tuple(PAIR_VARIANTS)}
    assert {p["clip_hash"] for p in real} == {file_sha256(tmp_path / "clips" / f"clip{i}.mp4") for i in range(2)}
    for p in pairs:
        assert p["params"] == {"steps": 2, "s_T": 5, "s_I": 1.5, "seed": 1, "clock": 2, "max_frames": 2,
                               "short_side": 32}
        for side in "ab":
            clip = video_io.read_clip(p[f"rendered_{side}"], short_side=32)
            assert clip.frames.shape == (2, 32, 32, 3)
            assert p[f"rendered_{side}"].startswith(str(tmp_path / "out" / "pilot-study"))
        assert p["timings"]["a"] is None or p["timings"]["a"]["frames"] == 2

    (g,) = gold
    bad = g["gold_bad_side"].lower()
    good = "b" if bad == "a" else "a"
    assert g[f"variant_{bad}"] == BROKEN_VARIANT and g[f"variant_{good}"] == PAIR_VARIANTS[0]
    assert g["timings"][bad] is None and g["timings"][good]["unet_passes_per_frame"] >= 1
    same = [p for p in real if p["clip_hash"] == g["clip_hash"]][0]
    assert g[f"rendered_{good}"] == same["rendered_a"]  # the good side is the real edit, not a re-render
    source = video_io.read_clip(g["clip_path"], short_side=32, max_frames=2).frames.astype(float)
    broken = video_io.read_clip(g[f"rendered_{bad}"], short_side=32).frames
    assert np.abs(broken - source).mean() > 40


def test_create_study_again_is_idempotent_and_resumes(study_setup, monkeypatch):
    tmp_path, argv = study_setup
    study_id = main(argv)
    with Store(argv[-1]) as store:
        pairs = store.study_pairs(study_id)
    files = sorted({p[f"rendered_{s}"] for p in pairs for s in "ab"})
    assert len(files) == 5  # 4 edits + the broken clip
    mtimes = {f: os.stat(f).st_mtime_ns for f in files}
    calls = count_edits(monkeypatch)
    assert main(argv) == study_id and calls == []  # nothing rendered again, no second study
    os.remove(pairs[0]["rendered_b"])                 # a lost file is rendered again, alone
    assert main(argv) == study_id and calls == [pairs[0]["variant_b"]]
    assert all(os.stat(f).st_mtime_ns == t for f, t in mtimes.items() if f != pairs[0]["rendered_b"])
    with Store(argv[-1]) as store:
        assert len(store.studies()) == 1 and len(store.study_pairs(study_id)) == 3
    assert not list((tmp_path / "out").rglob(".*tmp*"))  # no half-written files left behind


def test_create_study_refuses_unknown_variants_before_rendering(study_setup, monkeypatch):
    tmp_path, argv = study_setup
    (tmp_path / "study.json").write_text(json.dumps(manifest_dict(variant_pairs=[["mmg", "teacher"]])))
    calls = count_edits(monkeypatch)
    with pytest.raises(ValueError, match="not available.*mmg"):
        main(argv)
    assert calls == [] and not (tmp_path / "out").exists()
    with Store(argv[-1]) as store:
        assert store.studies() == []


def test_study_params_request():
    req = StudyParams(steps=3, s_T=6, s_I=1.2, seed=4, clock=3).request("snow", "mmg")
    assert (req.steps, req.seed, req.clock, req.variant, req.guidance.text, req.guidance.image) == \
        (3, 4, 3, "mmg", 6.0, 1.2)

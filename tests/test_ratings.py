"""Rating store (on SQLite in tmp_path and on a throwaway PostgreSQL server), its migrations, and the rating
statistics.  No torch, no Gradio."""
from __future__ import annotations

import csv
import hashlib
import io
import json
import math
import random
import threading

import numpy as np
import pytest
from scipy.optimize import minimize
from datetime import datetime, timezone
from pathlib import Path

from sqlalchemy import create_engine, inspect, make_url, text

from editor.study import migrations
from editor.study.stats import bootstrap_bt, bradley_terry, elo, pairwise_table, per_instruction, wilson_interval
from editor.study.store import (STUDY_PAIR_COLUMNS, VOTE_COLUMNS, Base, DuplicateVote, Store, VoteIn, engine_url,
                                pair_key)

CLIP = hashlib.sha256(b"clip-0").hexdigest()


def make_vote(rater="rater-1", i=0, choice="A", **kw) -> VoteIn:
    base = dict(rater_id=rater, clip_hash=CLIP, instruction="make it snow", variant_a="teacher",
                variant_b="clockwork", params_a={"steps": 20, "s_T": 7.5, "s_I": 1.5},
                params_b={"steps": 20, "s_T": 7.5, "s_I": 1.5, "clockwork": True}, seed_a=i, seed_b=i,
                timings_a={"total_s": 1.25}, timings_b={"total_s": 0.75}, shown_left="B", choice=choice,
                decide_ms=1500, session_id="sess-1", app_version="0.1.0")
    base.update(kw)
    return VoteIn(**base)


@pytest.fixture
def store(db_url):  # db_url (tests/conftest.py): SQLite, then PostgreSQL
    s = Store(db_url)
    yield s
    s.close()


@pytest.fixture
def sqlite_store(tmp_path):
    s = Store(f"sqlite:///{tmp_path / 'ratings.db'}")
    yield s
    s.close()


# ------------------------------------------------------------------------------------------------ store


def test_add_and_read_votes(store):
    ids = [store.add_vote(make_vote(i=i, choice=c)) for i, c in enumerate(["A", "B", "tie", "both_bad"])]
    rows = store.votes()
    assert [r["id"] for r in rows] == ids
    assert store.count_votes() == 4
    r = rows[0]
    assert tuple(r) == VOTE_COLUMNS
    assert r["params_b"] == {"steps": 20, "s_T": 7.5, "s_I": 1.5, "clockwork": True}
    assert r["timings_a"] == {"total_s": 1.25}
    assert r["created_at"].utcoffset().total_seconds() == 0
    assert (r["rater_id"], r["shown_left"], r["choice"], r["decide_ms"], r["seed_a"]) == ("rater-1", "B", "A", 1500, 0)
    assert r["pair_key"] == make_vote(i=0).content_key()
    assert store.has_voted("rater-1", r["pair_key"])
    assert not store.has_voted("rater-2", r["pair_key"])
    assert store.count_votes(rater_id="rater-2") == 0


def test_duplicate_vote_raises_and_leaves_one_row(store):
    store.add_vote(make_vote(choice="A"))
    with pytest.raises(DuplicateVote):
        store.add_vote(make_vote(choice="B", decide_ms=10))
    assert isinstance(DuplicateVote(), ValueError)
    rows = store.votes()
    assert len(rows) == 1 and rows[0]["choice"] == "A"
    store.add_vote(make_vote(rater="rater-2"))  # another rater may vote on the same pair
    assert store.count_votes() == 2


@pytest.mark.parametrize("bad", [dict(choice="C"), dict(shown_left="left"), dict(decide_ms=-1), dict(rater_id=""),
                                 dict(rater_id="   "), dict(clip_hash="nothex"), dict(variant_a="")])
def test_vote_validation(bad):
    with pytest.raises(ValueError):
        make_vote(**bad)


def test_pair_key_canonical():
    a, b = {"name": "teacher", "params": {"steps": 20, "s_T": 7.5}}, {"name": "clockwork", "params": {"steps": 4}}
    k = pair_key(CLIP, "snow", a, b)
    assert len(k) == 64 and int(k, 16) >= 0
    assert k == pair_key(CLIP, "snow", {"params": {"s_T": 7.5, "steps": 20.0}, "name": "teacher"}, b)
    assert k != pair_key(CLIP, "snow", b, a)  # A/B are canonical: order matters
    assert k != pair_key(CLIP, "rain", a, b)
    assert make_vote(i=1).pair_key != make_vote(i=2).pair_key  # seeds are part of the comparison


def test_sqlite_pragmas(sqlite_store):
    with sqlite_store.engine.connect() as c:
        assert c.execute(text("PRAGMA journal_mode")).scalar().lower() == "wal"
        assert c.execute(text("PRAGMA foreign_keys")).scalar() == 1
        assert c.execute(text("PRAGMA busy_timeout")).scalar() == 30000


def test_csv_export_round_trip(store, tmp_path):
    store.add_vote(make_vote(i=0, instruction='quote " and, comma\nnewline'))
    store.add_vote(make_vote(i=1, choice="tie", timings_b=None))
    expected = [{c: Store.csv_cell(c, v) for c, v in r.items()} for r in store.votes()]
    path = tmp_path / "votes.csv"
    assert store.export_csv(path) == 2
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        assert tuple(reader.fieldnames) == VOTE_COLUMNS
        got = list(reader)
    assert got == expected
    assert got[0]["instruction"] == 'quote " and, comma\nnewline'
    assert got[1]["timings_b"] == ""
    assert json.loads(got[0]["params_b"])["clockwork"] is True
    buf = io.StringIO()
    store.export_csv(buf)
    assert list(csv.DictReader(io.StringIO(buf.getvalue()))) == expected


def test_concurrent_writers_distinct_pairs(db_url):
    n_threads, per_thread = 8, 25
    barrier = threading.Barrier(n_threads)
    errors = []

    def work(t):
        try:
            barrier.wait()
            s = Store(db_url)  # separate Store (engine, pool) per thread on the same file
            for i in range(per_thread):
                s.add_vote(make_vote(rater=f"r{t}", i=i, choice="AB"[i % 2]))
            s.close()
        except Exception as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=work, args=(t,)) for t in range(n_threads)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert errors == []
    with Store(db_url) as s:
        assert s.count_votes() == n_threads * per_thread
        assert len({r["id"] for r in s.votes()}) == n_threads * per_thread


@pytest.mark.parametrize("shared", [False, True])
def test_concurrent_same_pair_one_row(db_url, shared):
    Store(db_url).close()
    one = Store(db_url) if shared else None
    barrier = threading.Barrier(4)
    ok, dup, other = [], [], []

    def work():
        s = one or Store(db_url)
        barrier.wait()
        try:
            ok.append(s.add_vote(make_vote(rater="same", i=7)))
        except DuplicateVote:
            dup.append(1)
        except Exception as e:  # noqa: BLE001
            other.append(e)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert other == []
    assert len(ok) == 1 and len(dup) == 3
    with Store(db_url) as s:
        assert s.count_votes() == 1


def test_studies_pairs_and_rater_flags(store):
    sid = store.create_study("pilot", {"clips": ["a.mp4"], "variants": ["teacher", "clockwork"]})
    assert store.studies()[0]["manifest"]["variants"] == ["teacher", "clockwork"]
    ids = store.add_study_pairs(sid, [
        dict(clip_path="a.mp4", instruction="snow", variant_a="teacher", variant_b="clockwork",
             params={"steps": 20}, rendered_a="a_t.mp4", rendered_b="a_c.mp4"),
        dict(clip_path="a.mp4", instruction="snow", variant_a="teacher", variant_b="broken",
             rendered_a="a_t.mp4", rendered_b="a_x.mp4", is_gold=True, gold_bad_side="B"),
        dict(clip_path="b.mp4", instruction="rain", variant_a="broken", variant_b="teacher",
             is_gold=True, gold_bad_side="A"),
    ])
    pairs = store.study_pairs(sid)
    assert [p["id"] for p in pairs] == ids
    assert [p["is_gold"] for p in pairs] == [False, True, True]
    assert pairs[0]["params"] == {"steps": 20} and pairs[1]["gold_bad_side"] == "B"
    with pytest.raises(ValueError):
        store.add_study_pairs(sid, [dict(clip_path="c.mp4", instruction="x", variant_a="a", variant_b="b",
                                         is_gold=True)])  # gold without a bad side
    with pytest.raises(ValueError):
        store.add_study_pairs("no-such-study", [dict(clip_path="c.mp4", instruction="x", variant_a="a",
                                                     variant_b="b")])
    with pytest.raises(ValueError):  # the same pair twice in one study
        store.add_study_pairs(sid, [{k: pairs[0][k] for k in ("clip_path", "instruction", "variant_a",
                                                               "variant_b", "params")}])

    def vote(rater, pair, choice):
        return store.add_vote(make_vote(rater=rater, pair_id=pair["id"], study_id=sid, choice=choice,
                                        instruction=pair["instruction"], variant_a=pair["variant_a"],
                                        variant_b=pair["variant_b"]))

    vote("good", pairs[0], "A"); vote("good", pairs[1], "A"); vote("good", pairs[2], "B")
    vote("sloppy", pairs[1], "B"); vote("sloppy", pairs[2], "B")     # fails 1 of 2
    vote("once", pairs[2], "A")                                      # fails 1 of 1
    vote("tied", pairs[1], "tie"); vote("tied", pairs[2], "both_bad")  # not picking the broken side
    vote("nogold", pairs[0], "B")
    with pytest.raises(DuplicateVote):
        vote("good", pairs[1], "B")
    assert store.votes(sid)[0]["pair_key"] == pairs[0]["pair_key"]
    assert store.count_votes(sid) == 9 and store.count_votes() == 9
    flags = store.rater_flags(sid)
    assert flags["good"] == {"gold_seen": 2, "gold_failed": 0, "careless": False}
    assert flags["sloppy"] == {"gold_seen": 2, "gold_failed": 1, "careless": True}
    assert flags["once"] == {"gold_seen": 1, "gold_failed": 1, "careless": True}
    assert flags["tied"] == {"gold_seen": 2, "gold_failed": 0, "careless": False}
    assert flags["nogold"] == {"gold_seen": 0, "gold_failed": 0, "careless": False}
    # a vote naming a study pair must agree with it
    with pytest.raises(ValueError):
        store.add_vote(make_vote(rater="x", pair_id=pairs[0]["id"], study_id="other-study"))
    with pytest.raises(ValueError):
        store.add_vote(make_vote(rater="x", pair_id=10_000))


def test_foreign_key_enforced(store):
    from sqlalchemy.exc import IntegrityError

    with pytest.raises(IntegrityError):
        store.add_vote(make_vote(study_id="no-such-study"))
    assert store.count_votes() == 0


def test_database_url_env(monkeypatch, tmp_path):
    url = f"sqlite:///{tmp_path / 'sub' / 'env.db'}"
    monkeypatch.setenv("DATABASE_URL", url)
    with Store() as s:
        assert s.url == url
        s.add_vote(make_vote())
    assert (tmp_path / "sub" / "env.db").exists()


def test_database_url_env_postgres(postgres_server, monkeypatch):
    from tests.postgres import fresh_database

    url = make_url(fresh_database(postgres_server))
    heroku_style = url.set(drivername="postgres").render_as_string(hide_password=False)  # no driver named
    monkeypatch.setenv("DATABASE_URL", heroku_style)
    with Store() as s:
        assert (s.engine.dialect.name, s.engine.driver) == ("postgresql", "psycopg")
        s.add_vote(make_vote())
        assert s.count_votes() == 1


def test_study_pair_clip_hash_and_timings(store):
    sid = store.create_study("hashes")
    store.add_study_pairs(sid, [dict(clip_path="a.mp4", clip_hash=CLIP.upper(), instruction="snow",
                                     variant_a="mmg", variant_b="teacher", timings={"a": {"s": 1.5}, "b": {"s": 4}})])
    (pair,) = store.study_pairs(sid)
    assert pair["clip_hash"] == CLIP and pair["timings"] == {"a": {"s": 1.5}, "b": {"s": 4}}
    with pytest.raises(ValueError):
        store.add_study_pairs(sid, [dict(clip_path="b.mp4", clip_hash="abc", instruction="x", variant_a="a",
                                         variant_b="b")])


# ------------------------------------------------------------------------------------------------ migrations

LEGACY_SCHEMA = Path(__file__).parent / "legacy_schema"  # DDL that create_all wrote before migrations, per dialect


def create_legacy_database(url: str) -> None:
    """The tables as the store made them before it had migrations (no alembic_version), with a study, two pairs
    and two votes (one on a study pair) in them."""
    engine = create_engine(engine_url(url))
    ddl = (LEGACY_SCHEMA / f"{engine.dialect.name}.sql").read_text()
    now = datetime(2026, 11, 1, 12, tzinfo=timezone.utc)
    with engine.begin() as c:
        for statement in filter(str.strip, ddl.split(";")):
            c.execute(text(statement))
        c.execute(text("INSERT INTO studies VALUES ('s1', 'old study', :t, :m)"), dict(t=now, m='{"clips": 1}'))
        for i, gold in ((1, False), (2, True)):
            c.execute(text("INSERT INTO study_pairs (id, study_id, pair_key, clip_path, instruction, variant_a, "
                           "variant_b, params, rendered_a, rendered_b, is_gold, gold_bad_side) VALUES (:i, 's1', "
                           ":k, 'a.mp4', 'snow', 'mmg', 'teacher', '{}', 'x.mp4', 'y.mp4', :g, :bad)"),
                      dict(i=i, k=f"{i:064x}", g=gold, bad="B" if gold else None))
        for i, pair in ((1, 1), (2, None)):
            c.execute(text("INSERT INTO votes VALUES (:id, :t, 'r1', 'sess', '0.1', :sid, :pair, :k, :clip, 'snow', "
                           "'mmg', '{\"steps\": 4}', 0, NULL, 'teacher', '{}', 0, '{\"s\": 2.5}', 'A', 'B', 900)"),
                      dict(id=f"v{i}", t=now, sid="s1" if pair else None, pair=pair, k=f"{i:064x}", clip=CLIP))
    engine.dispose()


def legacy_rows(store: Store) -> tuple:
    pairs = [{k: p[k] for k in STUDY_PAIR_COLUMNS[:12]} for p in store.study_pairs("s1")]
    return store.votes(), pairs, [(r["id"], r["name"], r["manifest"]) for r in store.studies()]


def test_legacy_database_is_stamped_and_upgraded(db_url):
    create_legacy_database(db_url)
    with Store(db_url) as s:
        assert s.revision == migrations.head_revision() == "0003"
        assert migrations.current_revision(s.engine) == "0003"
        votes, pairs, studies = legacy_rows(s)
        assert [v["id"] for v in votes] == ["v1", "v2"]
        assert votes[0]["pair_id"] == 1 and votes[0]["study_id"] == "s1" and votes[1]["pair_id"] is None
        assert votes[0]["params_a"] == {"steps": 4} and votes[1]["timings_b"] == {"s": 2.5}
        assert votes[0]["created_at"] == datetime(2026, 11, 1, 12, tzinfo=timezone.utc)
        assert [(p["id"], p["is_gold"], p["gold_bad_side"]) for p in s.study_pairs("s1")] == [(1, False, None),
                                                                                                (2, True, "B")]
        assert all(p["clip_hash"] is None and p["timings"] is None for p in s.study_pairs("s1"))
        assert studies == [("s1", "old study", {"clips": 1})]
        assert s.rater_flags("s1") == {"r1": {"gold_seen": 0, "gold_failed": 0, "careless": False}}
        with pytest.raises(DuplicateVote):  # the old unique constraint still holds
            s.add_vote(make_vote(rater="r1", pair_id=1))
        s.add_vote(make_vote(rater="r2", pair_id=2, choice="B"))
    with Store(db_url) as s:  # opening it again changes nothing
        assert s.count_votes() == 3 and s.rater_flags("s1")["r2"]["gold_failed"] == 1


def _schema(engine) -> dict:
    """Tables -> columns (name, type, nullable), primary key, uniques, indexes, foreign keys, checks."""
    insp = inspect(engine)
    out = {}
    for t in sorted(set(insp.get_table_names()) - {"alembic_version"}):
        out[t] = dict(
            columns=[(c["name"], str(c["type"]), c["nullable"]) for c in insp.get_columns(t)],
            pk=insp.get_pk_constraint(t)["constrained_columns"],
            uniques=sorted((u["name"], tuple(u["column_names"])) for u in insp.get_unique_constraints(t)),
            indexes=sorted((i["name"], tuple(i["column_names"]), bool(i["unique"])) for i in insp.get_indexes(t)),
            fks=sorted((tuple(f["constrained_columns"]), f["referred_table"], tuple(f["referred_columns"]),
                        (f.get("options") or {}).get("ondelete")) for f in insp.get_foreign_keys(t)),
            checks=sorted((c["name"], " ".join(c["sqltext"].split())) for c in insp.get_check_constraints(t)))
    return out


def test_revision_0001_is_the_legacy_schema(db_url, tmp_path):
    legacy_url = f"sqlite:///{tmp_path / 'legacy.db'}" if db_url.startswith("sqlite") else fresh_database_like(db_url)
    create_legacy_database(legacy_url)
    migrated = create_engine(engine_url(db_url))
    assert migrations.upgrade(migrated, "0001") == "0001"
    legacy = create_engine(engine_url(legacy_url))
    assert _schema(migrated) == _schema(legacy)
    assert set(_schema(legacy)) == {"studies", "study_pairs", "votes"}
    migrated.dispose(), legacy.dispose()


def fresh_database_like(url: str) -> str:
    """Another empty database on the same PostgreSQL server as ``url``."""
    from tests.postgres import fresh_database

    return fresh_database(make_url(url).set(database="postgres").render_as_string(hide_password=False))


def test_head_schema_matches_the_models(store):
    """Every change to the ORM models comes with a revision: autogenerate finds nothing to do at head."""
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    with store.engine.connect() as c:
        assert compare_metadata(MigrationContext.configure(c), Base.metadata) == []


def _raw_votes(engine) -> list:
    """The votes' revision-0001 columns, read with plain SQL (the ORM models are the head schema)."""
    with engine.connect() as c:
        return [tuple(r) for r in c.execute(text("SELECT id, rater_id, pair_id, pair_key, choice FROM votes "
                                                 "ORDER BY id"))]


def test_downgrade_and_upgrade_keep_rows(store):
    sid = store.create_study("round trip")
    (pid,) = store.add_study_pairs(sid, [dict(clip_path="a.mp4", clip_hash=CLIP, instruction="snow",
                                              variant_a="mmg", variant_b="teacher")])
    store.add_vote(make_vote(pair_id=pid))
    store.add_vote(make_vote(i=1))
    before, raw = store.votes(), _raw_votes(store.engine)
    assert migrations.downgrade(store.engine, "0001") == "0001"
    cols = {c["name"] for c in inspect(store.engine).get_columns("study_pairs")}
    assert "clip_hash" not in cols and "params" in cols
    assert "pair_token" not in {c["name"] for c in inspect(store.engine).get_columns("votes")}
    assert "shown_pairs" not in inspect(store.engine).get_table_names()
    assert _raw_votes(store.engine) == raw  # dropping the columns did not null the votes' pair ids
    assert migrations.upgrade(store.engine) == "0003"
    assert store.votes() == before and store.study_pairs(sid)[0]["clip_hash"] is None
    assert migrations.downgrade(store.engine, "base") is None
    assert set(inspect(store.engine).get_table_names()) <= {"alembic_version"}


def test_failed_upgrade_leaves_the_old_database_as_it_was(db_url, monkeypatch):
    """Stamp and upgrade run in one transaction: a crash after the DDL rolls all of it back."""
    from alembic import command

    create_legacy_database(db_url)
    upgrade = command.upgrade

    def upgrade_then_crash(*args, **kwargs):
        upgrade(*args, **kwargs)
        raise RuntimeError("crash mid-migration")

    monkeypatch.setattr(command, "upgrade", upgrade_then_crash)
    with pytest.raises(RuntimeError, match="crash mid-migration"):
        Store(db_url)
    engine = create_engine(engine_url(db_url))
    assert migrations.current_revision(engine) is None
    assert "clip_hash" not in {c["name"] for c in inspect(engine).get_columns("study_pairs")}
    engine.dispose()
    monkeypatch.setattr(command, "upgrade", upgrade)
    with Store(db_url) as s:
        assert s.revision == "0003" and [v["id"] for v in s.votes()] == ["v1", "v2"]


def test_half_made_database_is_refused(tmp_path):
    url = f"sqlite:///{tmp_path / 'half.db'}"
    with create_engine(url).begin() as c:
        c.execute(text("CREATE TABLE votes (id VARCHAR(36) PRIMARY KEY)"))
    with pytest.raises(RuntimeError, match="only some of the tables"):
        Store(url)


# ------------------------------------------------------------------------------------------------ stats


def synthetic_votes(seed=0, n=200):
    """A beats B 80 %, B beats C 80 %, A beats C 90 %, with some ties; canonical sides randomised."""
    rng = random.Random(seed)
    votes = []
    for (x, y, p) in [("A", "B", 0.8), ("B", "C", 0.8), ("A", "C", 0.9)]:
        for _ in range(n):
            u = rng.random()
            outcome = "tie" if u > 0.95 else ("x" if u < p * 0.95 else "y")
            if rng.random() < 0.5:
                a, b, choice = x, y, {"x": "A", "y": "B", "tie": "tie"}[outcome]
            else:
                a, b, choice = y, x, {"x": "B", "y": "A", "tie": "tie"}[outcome]
            votes.append({"variant_a": a, "variant_b": b, "choice": choice, "instruction": f"i{len(votes) % 2}"})
    return votes


def test_wilson_interval():
    lo, hi = wilson_interval(8, 10)
    assert lo == pytest.approx(0.4902, abs=5e-4) and hi == pytest.approx(0.9433, abs=5e-4)
    assert wilson_interval(0, 0) == (0.0, 1.0)
    lo, hi = wilson_interval(5, 10)
    assert lo == pytest.approx(1 - hi) and lo < 0.5 < hi
    assert wilson_interval(0, 5)[0] == 0.0 and wilson_interval(5, 5)[1] == pytest.approx(1.0)
    with pytest.raises(ValueError):
        wilson_interval(11, 10)


def test_pairwise_table():
    votes = [
        {"variant_a": "teacher", "variant_b": "clockwork", "choice": "A"},
        {"variant_a": "clockwork", "variant_b": "teacher", "choice": "A"},
        {"variant_a": "clockwork", "variant_b": "teacher", "choice": "B"},
        {"variant_a": "teacher", "variant_b": "clockwork", "choice": "tie"},
        {"variant_a": "teacher", "variant_b": "clockwork", "choice": "both_bad"},
        {"variant_a": "teacher", "variant_b": "teacher", "choice": "A"},  # self-pair: ignored
    ]
    (row,) = pairwise_table(votes)
    assert (row["variant_a"], row["variant_b"]) == ("clockwork", "teacher")
    assert (row["n"], row["wins_a"], row["wins_b"], row["ties"], row["both_bad"]) == (5, 1, 2, 1, 1)
    assert row["win_rate_a"] == pytest.approx((1 + 1) / 5)
    assert (row["ci_low"], row["ci_high"]) == pytest.approx(wilson_interval(2.0, 5))
    with pytest.raises(ValueError):
        pairwise_table([{"variant_a": "a", "variant_b": "b", "choice": "left"}])
    by = per_instruction(synthetic_votes())
    assert list(by) == ["i0", "i1"]
    assert sum(r["n"] for t in by.values() for r in t) == 600


def bt_reference(votes):
    """Independent BT fit: maximise the log-likelihood with ties as half a win each side, then centre."""
    names = sorted({v["variant_a"] for v in votes} | {v["variant_b"] for v in votes})
    ix = {n: i for i, n in enumerate(names)}
    a = np.array([ix[v["variant_a"]] for v in votes])
    b = np.array([ix[v["variant_b"]] for v in votes])
    sa = np.array([{"A": 1.0, "B": 0.0}.get(v["choice"], 0.5) for v in votes])

    def nll(s):
        d = s[a] - s[b]
        return -np.sum(sa * -np.logaddexp(0, -d) + (1 - sa) * -np.logaddexp(0, d))

    def grad(s):
        d = s[a] - s[b]
        r = sa - 1 / (1 + np.exp(-d))
        g = np.zeros_like(s)
        np.add.at(g, a, -r)
        np.add.at(g, b, r)
        return g

    res = minimize(nll, np.zeros(len(names)), jac=grad, method="BFGS", options={"gtol": 1e-10})
    s = res.x - res.x.mean()
    return dict(zip(names, s))


def test_bradley_terry_order_invariance_and_reference():
    votes = synthetic_votes()
    bt = bradley_terry(votes)
    assert bt["A"] > bt["B"] > bt["C"]
    assert sum(bt.values()) == pytest.approx(0, abs=1e-9)
    shuffled = votes[:]
    random.Random(1).shuffle(shuffled)
    bt2 = bradley_terry(shuffled)
    assert all(bt2[k] == pytest.approx(bt[k], abs=1e-9) for k in bt)
    ref = bt_reference(votes)
    assert all(abs(bt[k] - ref[k]) < 1e-3 for k in bt), (bt, ref)
    # explicit prior=0 is the same MLE here; Elo mapping
    assert bradley_terry(votes, prior=0)["A"] == pytest.approx(bt["A"], abs=1e-9)
    e = elo(bt)
    assert e["A"] - e["B"] == pytest.approx(400 / math.log(10) * (bt["A"] - bt["B"]))


def test_bradley_terry_degenerate_data():
    one_sided = [{"variant_a": "x", "variant_b": "y", "choice": "A"}] * 3
    bt = bradley_terry(one_sided)  # MLE does not exist: falls back to a small prior, stays finite
    assert math.isfinite(bt["x"]) and bt["x"] > bt["y"]
    with pytest.raises(ValueError):
        bradley_terry(one_sided, prior=0)
    assert bradley_terry([]) == {}
    # two groups never compared with each other: each centred on its own
    votes = [{"variant_a": "p", "variant_b": "q", "choice": c} for c in "AAB"] + \
            [{"variant_a": "r", "variant_b": "s", "choice": c} for c in "ABB"]
    bt = bradley_terry(votes)
    assert bt["p"] + bt["q"] == pytest.approx(0, abs=1e-9) and bt["r"] + bt["s"] == pytest.approx(0, abs=1e-9)
    assert bt["p"] == pytest.approx(math.log(2) / 2, abs=1e-6)


def test_bootstrap_bt():
    votes = synthetic_votes(n=60)
    out = bootstrap_bt(votes, n_boot=200, seed=0)
    bt = bradley_terry(votes)
    assert set(out) == {"A", "B", "C"}
    for name, (score, low, high) in out.items():
        assert score == pytest.approx(bt[name], abs=1e-9)
        assert low <= score <= high and high - low > 0
    assert out["A"][1] > out["C"][2]  # A clearly above C
    assert bootstrap_bt(votes, n_boot=50, seed=3) == bootstrap_bt(votes, n_boot=50, seed=3)


def test_retries_when_locked(sqlite_store):
    store = sqlite_store
    from sqlalchemy.exc import OperationalError

    calls = []

    def flaky():
        calls.append(1)
        if len(calls) < 3:
            raise OperationalError("INSERT ...", {}, Exception("database is locked"))
        return "done"

    store.backoff_s = 0.001
    assert store._retrying(flaky) == "done" and len(calls) == 3

    def other():
        raise OperationalError("SELECT ...", {}, Exception("no such table: votes"))

    with pytest.raises(OperationalError):
        store._retrying(other)


# ------------------------------------------------------------------------------------------------ pairs on the server


def shown(store, rater="rater-" + "1" * 32, token="p-" + "t" * 43, **kw):
    base = dict(token=token, rater_id=rater, clip_hash=CLIP, instruction="make it snow", variant_a="mmg",
                variant_b="teacher", shown_left="B", params_a={"steps": 4}, params_b={"steps": 4},
                seed_a=2**32 - 1, seed_b=2**32 - 1, timings_a={"total_s": 1.0}, timings_b={"total_s": 3.0})
    base.update(kw)
    return store.add_shown_pair(**base)


def test_a_vote_on_a_shown_pair_records_the_servers_pair(store):
    from editor.study.store import PairRefused

    pair = shown(store)
    vote_id, row = store.vote_on_pair(pair["token"], rater_id=pair["rater_id"], study_id=None, shown_choice="A",
                                      decide_ms=800)
    (v,) = store.votes()
    assert v["id"] == vote_id and v["pair_token"] == pair["token"] and v["choice"] == "B"  # left was B
    assert (v["variant_a"], v["variant_b"], v["seed_a"], v["shown_left"]) == ("mmg", "teacher", 2**32 - 1, "B")
    assert v["pair_key"] == pair_key(CLIP, "make it snow", {"name": "mmg", "params": {"steps": 4}, "seed": 2**32 - 1},
                                     {"name": "teacher", "params": {"steps": 4}, "seed": 2**32 - 1})
    with pytest.raises(DuplicateVote):  # replayed
        store.vote_on_pair(pair["token"], rater_id=pair["rater_id"], study_id=None, shown_choice="B")
    with pytest.raises(PairRefused, match="unknown"):
        store.vote_on_pair("p-" + "x" * 43, rater_id=pair["rater_id"], study_id=None, shown_choice="A")
    other = shown(store, token="p-" + "u" * 43)
    with pytest.raises(PairRefused, match="another rater"):
        store.vote_on_pair(other["token"], rater_id="rater-" + "2" * 32, study_id=None, shown_choice="A")
    with pytest.raises(PairRefused, match="not part of the rater's study"):
        store.vote_on_pair(other["token"], rater_id=other["rater_id"], study_id="some-study", shown_choice="A")
    with pytest.raises(DuplicateVote):  # a second pair token for the same comparison: one vote per rater and pair
        store.vote_on_pair(other["token"], rater_id=other["rater_id"], study_id=None, shown_choice="A")
    for bad in ({"shown_choice": "left"}, {"shown_choice": "A", "decide_ms": float("nan")},
                {"shown_choice": "A", "decide_ms": 1e300}):
        with pytest.raises(ValueError):
            store.vote_on_pair(shown(store, token="p-" + "w" * 43, seed_a=1)["token"], rater_id=other["rater_id"],
                               study_id=None, **bad)
        store.engine.dispose()
        with store.engine.begin() as c:
            c.execute(text("DELETE FROM shown_pairs WHERE token = :t"), {"t": "p-" + "w" * 43})
    assert store.count_votes() == 1


def test_the_database_takes_one_vote_per_pair_token(store):
    pair = shown(store)
    store.add_vote(make_vote(rater=pair["rater_id"], pair_token=pair["token"]))
    with pytest.raises(DuplicateVote):  # another rater, another comparison: the token is spent all the same
        store.add_vote(make_vote(rater="rater-9", i=5, pair_token=pair["token"]))
    assert store.count_votes() == 1


def test_study_pairs_shown_vote_caps_and_bounds(store):
    from editor.study.store import PairRefused, VoteCapReached

    sid = store.create_study("s")
    (pid,) = store.add_study_pairs(sid, [dict(clip_path="a.mp4", clip_hash=CLIP, instruction="snow",
                                              variant_a="mmg", variant_b="teacher")])
    rater = "rater-" + "3" * 32
    pair = shown(store, rater=rater, study_pair_id=pid)
    assert pair["study_id"] == sid and pair["pair_key"] == store.study_pairs(sid)[0]["pair_key"]
    assert store.open_study_pair(rater, pid)["token"] == pair["token"]
    with pytest.raises(PairRefused, match="another study"):
        store.vote_on_pair(pair["token"], rater_id=rater, study_id=None, shown_choice="A")
    store.vote_on_pair(pair["token"], rater_id=rater, study_id=sid, shown_choice="tie")
    assert store.open_study_pair(rater, pid) is None and store.count_rater_votes(rater, sid) == 1
    extra = shown(store, rater=rater, token="p-" + "c" * 43)
    with pytest.raises(VoteCapReached):
        store.vote_on_pair(extra["token"], rater_id=rater, study_id=None, shown_choice="A", max_votes=0)
    for bad in ({"instruction": "x" * 5000}, {"seed_a": 2**70}, {"seed_a": float("nan")}, {"variant_a": "v" * 200},
                {"clip_hash": "nope"}):
        with pytest.raises(ValueError):
            shown(store, token="p-" + "d" * 43, **bad)
    assert store.study("no-such-study") is None and store.study(sid)["name"] == "s"
    assert store.count_votes() == 1

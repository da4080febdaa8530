"""Vote storage for the preference-rating study: SQLAlchemy 2.x ORM plus a small data-access API.

One row per vote (table ``votes``); studies (``studies``) hold a manifest and a list of prepared pairs
(``study_pairs``), some of them gold pairs with one plainly broken side used to flag careless raters.

A/B are the pair's canonical sides; which one was shown on the left is randomised by the caller and recorded in
``shown_left``.  ``choice`` is always in canonical terms (``A``, ``B``, ``tie``, ``both_bad``).

One vote per rater per comparison: ``UNIQUE(rater_id, pair_key)``.  ``pair_key`` is the study pair's key when the
vote belongs to a study pair, otherwise :func:`pair_key` of the vote's content (clip hash, instruction, both
variants' names, params and seeds).  A second vote raises :class:`DuplicateVote` and writes nothing.

Pairs live on the server (revision 0003): every pair shown to a rater is a row of ``shown_pairs`` keyed by an
unguessable pair token (:mod:`editor.study.tokens`) and bound to that rater; a vote names only the pair token
(:meth:`Store.vote_on_pair`), so variants, sides, clip and settings come from the server's row, never from the
client.  ``UNIQUE(votes.pair_token)`` makes a pair token good for one vote.

SQLite (the default, ``data/ratings.db``) runs in WAL mode with foreign keys on and a 30 s busy timeout;
``DATABASE_URL`` points the store elsewhere (any SQLAlchemy URL; tested on SQLite and PostgreSQL, where a URL
without a driver, ``postgres://`` or ``postgresql://``, uses psycopg 3).

The schema is versioned with Alembic (:mod:`editor.study.migrations`): opening a :class:`Store` upgrades the
database to the head revision, once, under the database's write lock, and a database written before migrations
existed is recognised and upgraded without losing a row.  The ORM models below are the head schema; a change to
them needs a new revision in ``migrations/versions``.
"""
from __future__ import annotations

import csv
import hashlib
import io
import json
import math
import os
import random
import time
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from sqlalchemy import (
    JSON, BigInteger, Boolean, CheckConstraint, DateTime, ForeignKey, Index, Integer, String, Text, TypeDecorator,
    UniqueConstraint, create_engine, event, func, select,
)
from sqlalchemy.engine import URL, Engine, make_url
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column
from sqlalchemy.pool import StaticPool

from editor.study import migrations

CHOICES = ("A", "B", "tie", "both_bad")
SIDES = ("A", "B")
DEFAULT_DB_PATH = Path(__file__).resolve().parents[2] / "data" / "ratings.db"
MAX_TEXT = 1000              # characters of an instruction, rater id or session id a vote may carry
MAX_DECIDE_MS = 3_600_000    # time to decide: at most an hour
MAX_SEED = 2**63 - 1         # seeds are stored as 64-bit integers
# 64-bit on PostgreSQL (seeds reach 2**32 - 1); SQLite's INTEGER is 64-bit already
SeedInt = BigInteger().with_variant(Integer(), "sqlite")

# Column order of votes() dicts and of export_csv().
VOTE_COLUMNS = (
    "id", "created_at", "rater_id", "session_id", "app_version", "study_id", "pair_id", "pair_key",
    "clip_hash", "instruction", "variant_a", "params_a", "seed_a", "timings_a", "variant_b", "params_b", "seed_b",
    "timings_b", "shown_left", "choice", "decide_ms", "pair_token",
)
JSON_VOTE_COLUMNS = ("params_a", "params_b", "timings_a", "timings_b")
SHOWN_PAIR_COLUMNS = (
    "token", "created_at", "rater_id", "study_id", "study_pair_id", "pair_key", "clip_hash", "instruction",
    "variant_a", "params_a", "seed_a", "timings_a", "variant_b", "params_b", "seed_b", "timings_b", "shown_left",
)
STUDY_PAIR_COLUMNS = (
    "id", "study_id", "pair_key", "clip_path", "instruction", "variant_a", "variant_b", "params",
    "rendered_a", "rendered_b", "is_gold", "gold_bad_side", "clip_hash", "timings",
)


class DuplicateVote(ValueError):
    """This rater already voted on this pair; nothing was written."""


class PairRefused(ValueError):
    """A vote on a pair token that is unknown, another rater's or another scope's; nothing was written."""


class VoteCapReached(ValueError):
    """The rater has cast as many votes as one rater may; nothing was written."""


def canonical_choice(shown_choice: str, shown_left: str) -> str:
    """A click (``A`` = the left video, ``B`` = the right one, ``tie``, ``both_bad``) in the pair's canonical sides."""
    if shown_choice not in CHOICES:
        raise ValueError(f"the choice must be one of {', '.join(CHOICES)}")
    if shown_choice in ("tie", "both_bad"):
        return shown_choice
    if shown_choice == "A":
        return shown_left
    return "B" if shown_left == "A" else "A"


# --------------------------------------------------------------------------------------------------------------
# helpers


def _jsonable(obj: Any) -> Any:
    """A plain-JSON copy of ``obj`` (mappings -> dict with str keys, sequences -> list, numpy scalars -> python)."""
    if obj is None or isinstance(obj, (str, bool, int)):
        return obj
    if isinstance(obj, float):
        if not math.isfinite(obj):
            raise ValueError(f"non-finite number {obj!r} cannot be stored as JSON")
        return obj
    if isinstance(obj, Mapping):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    item = getattr(obj, "item", None)  # numpy scalar / 0-d array
    if callable(item):
        return _jsonable(item())
    tolist = getattr(obj, "tolist", None)  # numpy array
    if callable(tolist):
        return _jsonable(tolist())
    raise TypeError(f"cannot store {type(obj).__name__} as JSON")


def _canonical_numbers(obj: Any) -> Any:
    """Integral floats -> int, so that ``steps=4`` and ``steps=4.0`` give the same pair key."""
    if isinstance(obj, float) and obj.is_integer():
        return int(obj)
    if isinstance(obj, dict):
        return {k: _canonical_numbers(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_canonical_numbers(v) for v in obj]
    return obj


def _sha256_json(obj: Any) -> str:
    text = json.dumps(_canonical_numbers(_jsonable(obj)), sort_keys=True, separators=(",", ":"),
                      ensure_ascii=False, allow_nan=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def pair_key(clip_hash: str, instruction: str, a: Mapping, b: Mapping) -> str:
    """Key of one comparison: sha256 hex of canonical JSON of the clip hash, instruction and both sides.

    ``a`` and ``b`` describe the canonical sides, e.g. ``{"name": "teacher", "params": {...}, "seed": 0}``.
    Order matters (A/B are canonical): ``pair_key(c, i, a, b) != pair_key(c, i, b, a)``.  Keys of mappings are
    sorted and integral floats are written as ints, so the key does not depend on dict order or ``4`` vs ``4.0``.
    """
    return _sha256_json({"v": 1, "clip": clip_hash, "instruction": instruction, "a": dict(a), "b": dict(b)})


def file_sha256(path: str | os.PathLike) -> str:
    """sha256 hex of a file's bytes: the ``clip_hash`` of votes and study pairs (read in 1 MiB blocks)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _utcnow() -> datetime:
    return datetime.now(timezone.utc)


def _sha256_hex(name: str, value) -> str:
    """``value`` as a lower-case sha256 hex digest; ``ValueError`` if it is not one."""
    digest = str(value).lower()
    if len(digest) != 64 or any(ch not in "0123456789abcdef" for ch in digest):
        raise ValueError(f"{name} must be a sha256 hex digest, got {value!r}")
    return digest


def _is_locked(exc: OperationalError) -> bool:
    msg = str(getattr(exc, "orig", exc)).lower()
    return "database is locked" in msg or "database is busy" in msg or "database table is locked" in msg


# --------------------------------------------------------------------------------------------------------------
# ORM


class UTCDateTime(TypeDecorator):
    """Stores UTC; always returns timezone-aware UTC datetimes (SQLite drops tzinfo on its own)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value, dialect):
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime; pass a timezone-aware one")
        value = value.astimezone(timezone.utc)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value, dialect):
        if value is None:
            return None
        return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)


class Base(DeclarativeBase):
    pass


class Study(Base):
    __tablename__ = "studies"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=_utcnow)
    manifest: Mapped[dict] = mapped_column(JSON, default=dict)


class StudyPair(Base):
    __tablename__ = "study_pairs"
    __table_args__ = (
        UniqueConstraint("study_id", "pair_key", name="uq_study_pairs_study_pair_key"),
        CheckConstraint("gold_bad_side IS NULL OR gold_bad_side IN ('A', 'B')", name="ck_study_pairs_gold_side"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    study_id: Mapped[str] = mapped_column(ForeignKey("studies.id", ondelete="CASCADE"), index=True)
    pair_key: Mapped[str] = mapped_column(String(64))
    clip_path: Mapped[str] = mapped_column(Text)
    instruction: Mapped[str] = mapped_column(Text)
    variant_a: Mapped[str] = mapped_column(String(100))
    variant_b: Mapped[str] = mapped_column(String(100))
    params: Mapped[dict] = mapped_column(JSON, default=dict)
    rendered_a: Mapped[str | None] = mapped_column(Text)
    rendered_b: Mapped[str | None] = mapped_column(Text)
    is_gold: Mapped[bool] = mapped_column(Boolean, default=False)
    gold_bad_side: Mapped[str | None] = mapped_column(String(1))
    clip_hash: Mapped[str | None] = mapped_column(String(64))   # revision 0002
    timings: Mapped[dict | None] = mapped_column(JSON)          # revision 0002: {"a": {...}, "b": {...}}


class PairColumns:
    """What a shown pair and a vote on it both record: the clip, the instruction, each side's variant, parameters,
    seed (64-bit since revision 0003) and timings, and which side was shown on the left."""

    pair_key: Mapped[str] = mapped_column(String(64))
    clip_hash: Mapped[str] = mapped_column(String(64))
    instruction: Mapped[str] = mapped_column(Text)
    variant_a: Mapped[str] = mapped_column(String(100))
    params_a: Mapped[dict] = mapped_column(JSON, default=dict)
    seed_a: Mapped[int | None] = mapped_column(SeedInt)
    timings_a: Mapped[dict | None] = mapped_column(JSON)
    variant_b: Mapped[str] = mapped_column(String(100))
    params_b: Mapped[dict] = mapped_column(JSON, default=dict)
    seed_b: Mapped[int | None] = mapped_column(SeedInt)
    timings_b: Mapped[dict | None] = mapped_column(JSON)
    shown_left: Mapped[str] = mapped_column(String(1))


class Vote(PairColumns, Base):
    __tablename__ = "votes"
    __table_args__ = (
        UniqueConstraint("rater_id", "pair_key", name="uq_votes_rater_pair"),
        CheckConstraint("choice IN ('A', 'B', 'tie', 'both_bad')", name="ck_votes_choice"),
        CheckConstraint("shown_left IN ('A', 'B')", name="ck_votes_shown_left"),
        CheckConstraint("decide_ms >= 0", name="ck_votes_decide_ms"),
        Index("ix_votes_study_id", "study_id"),
        Index("uq_votes_pair_token", "pair_token", unique=True),  # one vote per shown pair (revision 0003)
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=_utcnow, index=True)
    rater_id: Mapped[str] = mapped_column(String(128))
    session_id: Mapped[str] = mapped_column(String(128), default="")
    app_version: Mapped[str] = mapped_column(String(64), default="")
    study_id: Mapped[str | None] = mapped_column(ForeignKey("studies.id", ondelete="SET NULL"))
    pair_id: Mapped[int | None] = mapped_column(ForeignKey("study_pairs.id", ondelete="SET NULL"))
    choice: Mapped[str] = mapped_column(String(8))
    decide_ms: Mapped[int] = mapped_column(Integer)
    pair_token: Mapped[str | None] = mapped_column(String(64))  # revision 0003: the shown pair voted on


class ShownPair(PairColumns, Base):
    """A pair as the server made it for one rater (revision 0003): the vote reads everything from here."""

    __tablename__ = "shown_pairs"
    __table_args__ = (
        CheckConstraint("shown_left IN ('A', 'B')", name="ck_shown_pairs_shown_left"),
        Index("ix_shown_pairs_rater_study_pair", "rater_id", "study_pair_id"),
    )

    token: Mapped[str] = mapped_column(String(64), primary_key=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=_utcnow)  # when it was shown
    rater_id: Mapped[str] = mapped_column(String(128))
    study_id: Mapped[str | None] = mapped_column(ForeignKey("studies.id", ondelete="CASCADE"))
    study_pair_id: Mapped[int | None] = mapped_column(ForeignKey("study_pairs.id", ondelete="CASCADE"))


def _row_dict(row, columns) -> dict:
    return {c: getattr(row, c) for c in columns}


# --------------------------------------------------------------------------------------------------------------
# input


def _opt_int(name: str, value, limit: int = MAX_SEED) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or \
            (isinstance(value, float) and not math.isfinite(value)) or int(value) != value:
        raise ValueError(f"{name} must be an integer, got {value!r}")
    if not -limit <= int(value) <= limit:
        raise ValueError(f"{name} is out of range")
    return int(value)


def _text(name: str, value, limit: int = MAX_TEXT) -> str:
    if not isinstance(value, str):
        raise ValueError(f"{name} must be a string")
    if len(value) > limit:
        raise ValueError(f"{name} is longer than {limit} characters")
    return value


@dataclass(frozen=True, kw_only=True)
class VoteIn:
    """One vote as the UI hands it in; validated (and normalised) on construction.

    ``pair_key`` is filled in from the content (:func:`pair_key`) unless given or unless ``pair_id`` names a study
    pair, in which case :meth:`Store.add_vote` takes the study pair's key.
    """

    rater_id: str
    clip_hash: str
    instruction: str
    variant_a: str
    variant_b: str
    shown_left: str
    choice: str
    decide_ms: int
    params_a: Mapping = field(default_factory=dict)
    params_b: Mapping = field(default_factory=dict)
    seed_a: int | None = None
    seed_b: int | None = None
    timings_a: Mapping | None = None
    timings_b: Mapping | None = None
    session_id: str = ""
    app_version: str = ""
    study_id: str | None = None
    pair_id: int | None = None
    pair_key: str | None = None
    pair_token: str | None = None

    def __post_init__(self):
        def put(name, value):
            object.__setattr__(self, name, value)

        if not isinstance(self.rater_id, str) or not self.rater_id.strip():
            raise ValueError("rater_id must be a non-empty string")
        if len(self.rater_id) > 128:
            raise ValueError("rater_id is longer than 128 characters")
        if self.choice not in CHOICES:
            raise ValueError(f"choice must be one of {CHOICES}, got {self.choice!r}")
        if self.shown_left not in SIDES:
            raise ValueError(f"shown_left must be 'A' or 'B', got {self.shown_left!r}")
        if isinstance(self.decide_ms, bool) or not isinstance(self.decide_ms, (int, float)) \
                or not math.isfinite(self.decide_ms) or not 0 <= self.decide_ms <= MAX_DECIDE_MS:
            raise ValueError(f"decide_ms must be a number of milliseconds from 0 to {MAX_DECIDE_MS}")
        put("decide_ms", int(round(self.decide_ms)))
        put("clip_hash", _sha256_hex("clip_hash", self.clip_hash))
        _text("instruction", self.instruction)
        if self.study_id is not None:
            _text("study_id", self.study_id, 36)
        if self.pair_token is not None:
            _text("pair_token", self.pair_token, 64)
        for side in ("a", "b"):
            name = getattr(self, f"variant_{side}")
            if not isinstance(name, str) or not name or len(name) > 100:
                raise ValueError(f"variant_{side} must be a non-empty string of at most 100 characters")
            params = getattr(self, f"params_{side}")
            if not isinstance(params, Mapping):
                raise ValueError(f"params_{side} must be a mapping")
            put(f"params_{side}", _jsonable(params))
            timings = getattr(self, f"timings_{side}")
            if timings is not None and not isinstance(timings, Mapping):
                raise ValueError(f"timings_{side} must be a mapping or None")
            put(f"timings_{side}", _jsonable(timings))
            put(f"seed_{side}", _opt_int(f"seed_{side}", getattr(self, f"seed_{side}")))
        put("pair_id", _opt_int("pair_id", self.pair_id))
        put("session_id", str(self.session_id or "")[:128])
        put("app_version", str(self.app_version or "")[:64])
        if self.pair_key is None and self.pair_id is None:
            put("pair_key", self.content_key())

    def content_key(self) -> str:
        """:func:`pair_key` of this vote's clip, instruction and both sides (name, params, seed)."""
        return pair_key(self.clip_hash, self.instruction,
                        {"name": self.variant_a, "params": self.params_a, "seed": self.seed_a},
                        {"name": self.variant_b, "params": self.params_b, "seed": self.seed_b})


def _study_pair_row(study_id: str, pair: Mapping) -> StudyPair:
    """A checked :class:`StudyPair` row from one pair as :meth:`Store.add_study_pairs` takes it."""
    p = dict(pair)
    missing = [k for k in ("clip_path", "variant_a", "variant_b") if not p.get(k)]
    missing += [] if isinstance(p.get("instruction"), str) else ["instruction"]
    if missing:
        raise ValueError(f"study pair is missing {', '.join(missing)}")
    params = _jsonable(dict(p.get("params") or {}))
    is_gold = bool(p.get("is_gold", False))
    bad = p.get("gold_bad_side")
    if is_gold and bad not in SIDES:
        raise ValueError("a gold pair needs gold_bad_side 'A' or 'B'")
    if not is_gold and bad is not None:
        raise ValueError("gold_bad_side is only for gold pairs")
    clip_hash = None if p.get("clip_hash") is None else _sha256_hex("clip_hash", p["clip_hash"])
    timings = p.get("timings")
    if timings is not None and not isinstance(timings, Mapping):
        raise ValueError("timings must be a mapping or None")
    # the study is part of the key: a rater who judged the same comparison in another study may judge it here
    key = p.get("pair_key") or _sha256_json({
        "v": 2, "study": study_id, "clip": clip_hash or str(p["clip_path"]), "instruction": p["instruction"],
        "variant_a": p["variant_a"], "variant_b": p["variant_b"], "params": params})
    return StudyPair(
        study_id=study_id, pair_key=key, clip_path=str(p["clip_path"]), instruction=p["instruction"],
        variant_a=p["variant_a"], variant_b=p["variant_b"], params=params,
        rendered_a=None if p.get("rendered_a") is None else str(p["rendered_a"]),
        rendered_b=None if p.get("rendered_b") is None else str(p["rendered_b"]),
        is_gold=is_gold, gold_bad_side=bad, clip_hash=clip_hash, timings=_jsonable(timings))


# --------------------------------------------------------------------------------------------------------------
# store


def default_url() -> str:
    """``DATABASE_URL`` if set, else SQLite at ``<repo>/data/ratings.db``."""
    url = os.environ.get("DATABASE_URL")
    if url:
        return "postgresql://" + url[len("postgres://"):] if url.startswith("postgres://") else url
    return f"sqlite:///{DEFAULT_DB_PATH}"


def engine_url(url: str) -> URL:
    """``url`` parsed; a PostgreSQL URL without a driver gets psycopg (3), the driver ``requirements.txt`` installs
    (SQLAlchemy would pick psycopg2, which is not installed)."""
    u = make_url(url)
    return u.set(drivername="postgresql+psycopg") if u.drivername == "postgresql" else u


def _sqlite_on_connect(dbapi_connection, connection_record):
    cur = dbapi_connection.cursor()
    try:
        cur.execute("PRAGMA busy_timeout=30000")
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA foreign_keys=ON")
    finally:
        cur.close()


class Store:
    """Data access for votes and studies.  Thread-safe: every call opens its own short session.

    Opening one migrates the database to the head schema revision (``self.revision`` says which it is at).
    """

    def __init__(self, url: str | None = None, *, retries: int = 8, backoff_s: float = 0.05):
        self.url = url or default_url()
        self.retries = max(1, int(retries))
        self.backoff_s = float(backoff_s)
        u = engine_url(self.url)
        kwargs: dict[str, Any] = {"pool_pre_ping": True}
        self.is_sqlite = u.get_backend_name() == "sqlite"
        if self.is_sqlite:
            kwargs["connect_args"] = {"timeout": 30}
            db = u.database
            if not db or db == ":memory:" or "mode=memory" in str(u):
                # one shared connection, else each thread would see its own empty in-memory database
                kwargs["poolclass"] = StaticPool
                kwargs["connect_args"]["check_same_thread"] = False
            else:
                Path(db).expanduser().parent.mkdir(parents=True, exist_ok=True)
        self.engine: Engine = create_engine(u, **kwargs)
        if self.is_sqlite:
            event.listens_for(self.engine, "connect")(_sqlite_on_connect)
        self.revision = self._retrying(lambda: migrations.upgrade(self.engine))

    def close(self) -> None:
        self.engine.dispose()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _retrying(self, fn):
        """Run ``fn`` again (with jittered exponential backoff) when SQLite reports the database as locked."""
        for attempt in range(self.retries):
            try:
                return fn()
            except OperationalError as e:
                if not _is_locked(e) or attempt == self.retries - 1:
                    raise
                time.sleep(self.backoff_s * (2 ** attempt) * (0.5 + random.random()))

    # ---------------------------------------------------------------- votes

    def add_vote(self, vote: VoteIn) -> str:
        """Insert ``vote`` in one transaction; return its id.  Raises :class:`DuplicateVote` if this rater already
        voted on this pair (nothing is written), ``ValueError`` if ``pair_id``/``study_id`` do not match."""
        if not isinstance(vote, VoteIn):
            raise TypeError("add_vote takes a VoteIn")
        vote_id = str(uuid.uuid4())
        key, study_id = vote.pair_key, vote.study_id

        if vote.pair_id is not None:
            pair = self._retrying(lambda: self._get(StudyPair, vote.pair_id))
            if pair is None:
                raise ValueError(f"no study pair with id {vote.pair_id}")
            if key is not None and key != pair["pair_key"]:
                raise ValueError("pair_key does not match the study pair's key")
            if study_id is not None and study_id != pair["study_id"]:
                raise ValueError("study_id does not match the study pair's study")
            key, study_id = pair["pair_key"], pair["study_id"]

        def insert():
            with Session(self.engine) as s, s.begin():
                s.add(Vote(
                    id=vote_id, created_at=_utcnow(), rater_id=vote.rater_id, session_id=vote.session_id,
                    app_version=vote.app_version, study_id=study_id, pair_id=vote.pair_id, pair_key=key,
                    clip_hash=vote.clip_hash, instruction=vote.instruction,
                    variant_a=vote.variant_a, params_a=vote.params_a, seed_a=vote.seed_a, timings_a=vote.timings_a,
                    variant_b=vote.variant_b, params_b=vote.params_b, seed_b=vote.seed_b, timings_b=vote.timings_b,
                    shown_left=vote.shown_left, choice=vote.choice, decide_ms=vote.decide_ms,
                    pair_token=vote.pair_token,
                ))

        try:
            self._retrying(insert)
        except IntegrityError:
            if self.has_voted(vote.rater_id, key) or (vote.pair_token and self._token_voted(vote.pair_token)):
                raise DuplicateVote(f"rater {vote.rater_id!r} already voted on pair {key}") from None
            raise
        return vote_id

    def _token_voted(self, token: str) -> bool:
        with Session(self.engine) as s:
            return s.scalar(select(Vote.id).where(Vote.pair_token == token).limit(1)) is not None

    # ---------------------------------------------------------------- pairs shown to raters

    def add_shown_pair(self, *, token: str, rater_id: str, clip_hash: str, instruction: str, variant_a: str,
                       variant_b: str, shown_left: str, params_a: Mapping | None = None,
                       params_b: Mapping | None = None, seed_a: int | None = None, seed_b: int | None = None,
                       timings_a: Mapping | None = None, timings_b: Mapping | None = None,
                       study_pair_id: int | None = None) -> dict:
        """Record a pair the server made for ``rater_id`` under ``token``; return its row.

        The pair's key is the study pair's key for a study pair (``study_pair_id``), else :func:`pair_key` of its
        content.  Checked like a vote (:class:`VoteIn`): a bad field raises ``ValueError`` and writes nothing."""
        check = VoteIn(rater_id=rater_id, clip_hash=clip_hash, instruction=instruction, variant_a=variant_a,
                       variant_b=variant_b, shown_left=shown_left, choice="tie", decide_ms=0,
                       params_a=params_a or {}, params_b=params_b or {}, seed_a=seed_a, seed_b=seed_b,
                       timings_a=timings_a, timings_b=timings_b, pair_token=token,
                       pair_id=study_pair_id)
        key, study_id = check.pair_key, None
        if study_pair_id is not None:
            sp = self._retrying(lambda: self._get(StudyPair, check.pair_id))
            if sp is None:
                raise ValueError(f"no study pair with id {study_pair_id}")
            key, study_id = sp["pair_key"], sp["study_id"]
        row = dict(token=token, created_at=_utcnow(), rater_id=check.rater_id, study_id=study_id,
                   study_pair_id=check.pair_id, pair_key=key, clip_hash=check.clip_hash,
                   instruction=check.instruction, variant_a=check.variant_a, params_a=check.params_a,
                   seed_a=check.seed_a, timings_a=check.timings_a, variant_b=check.variant_b,
                   params_b=check.params_b, seed_b=check.seed_b, timings_b=check.timings_b,
                   shown_left=check.shown_left)

        def run():
            with Session(self.engine) as s, s.begin():
                s.add(ShownPair(**row))
        self._retrying(run)
        return row

    def shown_pair(self, token) -> dict | None:
        """The pair behind ``token`` (``None`` for an unknown or malformed one) with ``voted`` (a vote id or None)."""
        if not isinstance(token, str) or not 0 < len(token) <= 64:
            return None

        def run():
            with Session(self.engine) as s:
                row = s.get(ShownPair, token)
                if row is None:
                    return None
                out = _row_dict(row, SHOWN_PAIR_COLUMNS)
                out["voted"] = s.scalar(select(Vote.id).where(Vote.pair_token == token).limit(1))
                return out
        return self._retrying(run)

    def open_study_pair(self, rater_id: str, study_pair_id: int) -> dict | None:
        """The pair already shown to ``rater_id`` for this study pair and not yet voted on, if any (a rater who
        reloads gets the same pair token and sides, not a new row per reload)."""
        def run():
            with Session(self.engine) as s:
                stmt = (select(ShownPair).where(ShownPair.rater_id == rater_id,
                                                ShownPair.study_pair_id == study_pair_id)
                        .order_by(ShownPair.created_at.desc()))
                for row in s.scalars(stmt):
                    if s.scalar(select(Vote.id).where(Vote.pair_token == row.token).limit(1)) is None:
                        return _row_dict(row, SHOWN_PAIR_COLUMNS)
                return None
        return self._retrying(run)

    def count_rater_votes(self, rater_id: str, study_id: str | None) -> int:
        """Votes of ``rater_id`` in ``study_id`` (``None``: votes outside any study)."""
        def run():
            with Session(self.engine) as s:
                stmt = select(func.count()).select_from(Vote).where(Vote.rater_id == rater_id)
                stmt = stmt.where(Vote.study_id.is_(None) if study_id is None else Vote.study_id == study_id)
                return int(s.scalar(stmt))
        return self._retrying(run)

    def vote_on_pair(self, token, *, rater_id: str, study_id: str | None, shown_choice: str,
                     decide_ms: float | None = None, session_id: str = "", app_version: str = "",
                     max_votes: int | None = None) -> tuple[str, dict]:
        """Store ``rater_id``'s vote on the shown pair ``token``; return ``(vote id, the pair's row)``.

        Everything the vote records comes from the server's row; the client gives only the click (``A`` = the
        left video, ``B`` = the right one, ``tie``, ``both_bad``) and the time it took (default: since the pair
        was shown).  Raises, writing nothing: :class:`PairRefused` for an unknown token, a pair made for another
        rater or a pair outside the rater's scope (``study_id``: the study the rater token is bound to, ``None`` for
        ad-hoc pairs); :class:`VoteCapReached` past ``max_votes`` votes in that scope; :class:`DuplicateVote` for a
        second vote on the pair (or on the same comparison); ``ValueError`` for a bad choice or time."""
        pair = self.shown_pair(token)
        if pair is None:
            raise PairRefused("unknown pair token")
        if pair["rater_id"] != rater_id:
            raise PairRefused("this pair was made for another rater")
        if pair["study_id"] != study_id:
            raise PairRefused("this pair belongs to another study" if pair["study_id"] else
                              "this pair is not part of the rater's study")
        if pair["voted"]:
            raise DuplicateVote(f"pair {token} already has a vote")
        choice = canonical_choice(shown_choice, pair["shown_left"])
        if decide_ms is None:
            decide_ms = min(MAX_DECIDE_MS, max(0.0, (_utcnow() - pair["created_at"]).total_seconds() * 1000))
        if max_votes is not None and self.count_rater_votes(rater_id, study_id) >= max_votes:
            raise VoteCapReached(f"rater {rater_id} has cast the most votes one rater may ({max_votes})")
        vote = VoteIn(rater_id=rater_id, clip_hash=pair["clip_hash"], instruction=pair["instruction"],
                      variant_a=pair["variant_a"], variant_b=pair["variant_b"], params_a=pair["params_a"],
                      params_b=pair["params_b"], seed_a=pair["seed_a"], seed_b=pair["seed_b"],
                      timings_a=pair["timings_a"], timings_b=pair["timings_b"], shown_left=pair["shown_left"],
                      choice=choice, decide_ms=decide_ms, session_id=session_id, app_version=app_version,
                      study_id=pair["study_id"], pair_id=pair["study_pair_id"], pair_key=pair["pair_key"],
                      pair_token=token)
        return self.add_vote(vote), pair

    def _get(self, model, pk) -> dict | None:
        with Session(self.engine) as s:
            row = s.get(model, pk)
            return None if row is None else _row_dict(row, [c.key for c in model.__table__.columns])

    def _vote_filter(self, stmt, study_id=None, rater_id=None):
        if study_id is not None:
            stmt = stmt.where(Vote.study_id == study_id)
        if rater_id is not None:
            stmt = stmt.where(Vote.rater_id == rater_id)
        return stmt

    def votes(self, study_id: str | None = None, *, rater_id: str | None = None) -> list[dict]:
        """All votes (of one study / rater if given), oldest first, as dicts keyed by :data:`VOTE_COLUMNS`."""
        def run():
            with Session(self.engine) as s:
                stmt = self._vote_filter(select(Vote), study_id, rater_id).order_by(Vote.created_at, Vote.id)
                return [_row_dict(v, VOTE_COLUMNS) for v in s.scalars(stmt)]
        return self._retrying(run)

    def count_votes(self, study_id: str | None = None, *, rater_id: str | None = None) -> int:
        def run():
            with Session(self.engine) as s:
                stmt = self._vote_filter(select(func.count()).select_from(Vote), study_id, rater_id)
                return int(s.scalar(stmt))
        return self._retrying(run)

    def has_voted(self, rater_id: str, pair_key: str) -> bool:
        def run():
            with Session(self.engine) as s:
                stmt = select(Vote.id).where(Vote.rater_id == rater_id, Vote.pair_key == pair_key).limit(1)
                return s.scalar(stmt) is not None
        return self._retrying(run)

    def export_csv(self, path_or_file, study_id: str | None = None) -> int:
        """Write the votes as CSV (header row, one line per vote, JSON columns as compact sorted JSON, ``created_at``
        in ISO 8601, ``None`` as an empty cell) to a path or an open text file; return the number of votes."""
        rows = self.votes(study_id)
        if isinstance(path_or_file, (str, os.PathLike)):
            with open(path_or_file, "w", newline="", encoding="utf-8") as f:
                return self._write_csv(f, rows)
        return self._write_csv(path_or_file, rows)

    @staticmethod
    def csv_cell(column: str, value) -> str:
        """How :meth:`export_csv` writes one value."""
        if value is None:
            return ""
        if column in JSON_VOTE_COLUMNS:
            return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        if isinstance(value, datetime):
            return value.isoformat()
        return str(value)

    def _write_csv(self, f, rows) -> int:
        w = csv.writer(f)
        w.writerow(VOTE_COLUMNS)
        for r in rows:
            w.writerow([self.csv_cell(c, r[c]) for c in VOTE_COLUMNS])
        return len(rows)

    def export_csv_text(self, study_id: str | None = None) -> str:
        buf = io.StringIO(newline="")
        self.export_csv(buf, study_id)
        return buf.getvalue()

    # ---------------------------------------------------------------- studies

    def create_study(self, name: str, manifest: Mapping | None = None) -> str:
        """Create a study; return its id (uuid4 string)."""
        if not isinstance(name, str) or not name.strip():
            raise ValueError("study name must be a non-empty string")
        study_id = str(uuid.uuid4())
        manifest = _jsonable(dict(manifest or {}))

        def run():
            with Session(self.engine) as s, s.begin():
                s.add(Study(id=study_id, name=name, created_at=_utcnow(), manifest=manifest))
        self._retrying(run)
        return study_id

    def study(self, study_id) -> dict | None:
        """One study (``id``, ``name``, ``created_at``, ``manifest``), or ``None`` when there is no such study."""
        if not isinstance(study_id, str) or not 0 < len(study_id) <= 36:
            return None
        row = self._retrying(lambda: self._get(Study, study_id))
        return None if row is None else {k: row[k] for k in ("id", "name", "created_at", "manifest")}

    def studies(self) -> list[dict]:
        with Session(self.engine) as s:
            return [_row_dict(r, ("id", "name", "created_at", "manifest"))
                    for r in s.scalars(select(Study).order_by(Study.created_at, Study.id))]

    def add_study_pairs(self, study_id: str, pairs: Iterable[Mapping]) -> list[int]:
        """Add pairs to a study in one transaction; return their ids.

        Each pair: ``clip_path``, ``instruction``, ``variant_a``, ``variant_b`` (required); ``params`` (JSON),
        ``rendered_a``, ``rendered_b``, ``is_gold`` (default False), ``gold_bad_side`` ('A'/'B', required for gold
        pairs), ``clip_hash`` (sha256 hex of the clip file), ``timings`` (JSON, e.g. ``{"a": {...}, "b": {...}}``),
        ``pair_key`` (default: sha256 of the study id, the pair's clip (``clip_hash`` if given, else
        ``clip_path``), instruction, variant names and params).  Raises ``ValueError`` for an unknown study or a pair key already in
        the study.
        """
        rows = [_study_pair_row(study_id, p) for p in pairs]

        def run():
            with Session(self.engine) as s, s.begin():
                if s.get(Study, study_id) is None:
                    raise ValueError(f"no study with id {study_id!r}")
                s.add_all(rows)
                s.flush()
                return [r.id for r in rows]
        try:
            return self._retrying(run)
        except IntegrityError as e:
            raise ValueError(f"could not add study pairs (duplicate pair_key?): {e.orig}") from None

    def study_pairs(self, study_id: str) -> list[dict]:
        with Session(self.engine) as s:
            stmt = select(StudyPair).where(StudyPair.study_id == study_id).order_by(StudyPair.id)
            return [_row_dict(r, STUDY_PAIR_COLUMNS) for r in s.scalars(stmt)]

    def rater_flags(self, study_id: str, *, min_seen: int = 2, max_fail_rate: float = 0.25) -> dict[str, dict]:
        """Gold-pair check per rater who voted in the study.

        A gold pair is failed when the rater chose its plainly broken side (``tie``/``both_bad`` are not failures).
        ``careless`` when ``gold_failed >= 1`` with ``gold_seen >= min_seen``, or ``gold_failed / gold_seen >
        max_fail_rate`` -- with the defaults, any failure flags the rater (1 of 1 is 100 % > 25 %).
        Returns ``{rater_id: {"gold_seen": n, "gold_failed": m, "careless": bool}}``.
        """
        with Session(self.engine) as s:
            gold = {k: bad for k, bad in s.execute(
                select(StudyPair.pair_key, StudyPair.gold_bad_side)
                .where(StudyPair.study_id == study_id, StudyPair.is_gold.is_(True)))}
            votes = s.execute(select(Vote.rater_id, Vote.pair_key, Vote.choice)
                              .where(Vote.study_id == study_id)).all()
        flags: dict[str, dict] = {}
        for rater, key, choice in votes:
            f = flags.setdefault(rater, {"gold_seen": 0, "gold_failed": 0, "careless": False})
            if key in gold:
                f["gold_seen"] += 1
                f["gold_failed"] += int(choice == gold[key])
        for f in flags.values():
            n, m = f["gold_seen"], f["gold_failed"]
            f["careless"] = bool(m and ((n >= min_seen and m >= 1) or m / n > max_fail_rate))
        return dict(sorted(flags.items()))

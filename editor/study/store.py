"""Vote storage for the preference-rating study: SQLAlchemy 2.x ORM plus a small data-access API.

One row per vote (table ``votes``); studies (``studies``) hold a manifest and a list of prepared pairs
(``study_pairs``), some of them gold pairs with one plainly broken side used to flag careless raters.

A/B are the pair's canonical sides; which one was shown on the left is randomised by the caller and recorded in
``shown_left``.  ``choice`` is always in canonical terms (``A``, ``B``, ``tie``, ``both_bad``).

One vote per rater per comparison: ``UNIQUE(rater_id, pair_key)``.  ``pair_key`` is the study pair's key when the
vote belongs to a study pair, otherwise :func:`pair_key` of the vote's content (clip hash, instruction, both
variants' names, params and seeds).  A second vote raises :class:`DuplicateVote` and writes nothing.

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
    JSON, Boolean, CheckConstraint, DateTime, ForeignKey, Index, Integer, String, Text, TypeDecorator,
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

# Column order of votes() dicts and of export_csv().
VOTE_COLUMNS = (
    "id", "created_at", "rater_id", "session_id", "app_version", "study_id", "pair_id", "pair_key",
    "clip_hash", "instruction", "variant_a", "params_a", "seed_a", "timings_a", "variant_b", "params_b", "seed_b",
    "timings_b", "shown_left", "choice", "decide_ms",
)
JSON_VOTE_COLUMNS = ("params_a", "params_b", "timings_a", "timings_b")
STUDY_PAIR_COLUMNS = (
    "id", "study_id", "pair_key", "clip_path", "instruction", "variant_a", "variant_b", "params",
    "rendered_a", "rendered_b", "is_gold", "gold_bad_side", "clip_hash", "timings",
)


class DuplicateVote(ValueError):
    """This rater already voted on this pair; nothing was written."""


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


class Vote(Base):
    __tablename__ = "votes"
    __table_args__ = (
        UniqueConstraint("rater_id", "pair_key", name="uq_votes_rater_pair"),
        CheckConstraint("choice IN ('A', 'B', 'tie', 'both_bad')", name="ck_votes_choice"),
        CheckConstraint("shown_left IN ('A', 'B')", name="ck_votes_shown_left"),
        CheckConstraint("decide_ms >= 0", name="ck_votes_decide_ms"),
        Index("ix_votes_study_id", "study_id"),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=_utcnow, index=True)
    rater_id: Mapped[str] = mapped_column(String(128))
    session_id: Mapped[str] = mapped_column(String(128), default="")
    app_version: Mapped[str] = mapped_column(String(64), default="")
    study_id: Mapped[str | None] = mapped_column(ForeignKey("studies.id", ondelete="SET NULL"))
    pair_id: Mapped[int | None] = mapped_column(ForeignKey("study_pairs.id", ondelete="SET NULL"))
    pair_key: Mapped[str] = mapped_column(String(64))
    clip_hash: Mapped[str] = mapped_column(String(64))
    instruction: Mapped[str] = mapped_column(Text)
    variant_a: Mapped[str] = mapped_column(String(100))
    params_a: Mapped[dict] = mapped_column(JSON, default=dict)
    seed_a: Mapped[int | None] = mapped_column(Integer)
    timings_a: Mapped[dict | None] = mapped_column(JSON)
    variant_b: Mapped[str] = mapped_column(String(100))
    params_b: Mapped[dict] = mapped_column(JSON, default=dict)
    seed_b: Mapped[int | None] = mapped_column(Integer)
    timings_b: Mapped[dict | None] = mapped_column(JSON)
    shown_left: Mapped[str] = mapped_column(String(1))
    choice: Mapped[str] = mapped_column(String(8))
    decide_ms: Mapped[int] = mapped_column(Integer)


def _row_dict(row, columns) -> dict:
    return {c: getattr(row, c) for c in columns}


# --------------------------------------------------------------------------------------------------------------
# input


def _opt_int(name: str, value) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or int(value) != value:
        raise ValueError(f"{name} must be an integer, got {value!r}")
    return int(value)


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
                or not math.isfinite(self.decide_ms) or self.decide_ms < 0:
            raise ValueError(f"decide_ms must be a finite number >= 0, got {self.decide_ms!r}")
        put("decide_ms", int(round(self.decide_ms)))
        put("clip_hash", _sha256_hex("clip_hash", self.clip_hash))
        if not isinstance(self.instruction, str):
            raise ValueError("instruction must be a string")
        for side in ("a", "b"):
            name = getattr(self, f"variant_{side}")
            if not isinstance(name, str) or not name:
                raise ValueError(f"variant_{side} must be a non-empty string")
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
        put("session_id", str(self.session_id or ""))
        put("app_version", str(self.app_version or ""))
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
                ))

        try:
            self._retrying(insert)
        except IntegrityError:
            if self.has_voted(vote.rater_id, key):
                raise DuplicateVote(f"rater {vote.rater_id!r} already voted on pair {key}") from None
            raise
        return vote_id

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

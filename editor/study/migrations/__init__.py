"""Schema migrations of the ratings store (Alembic revisions in ``versions/``) and the code that applies them.

:func:`upgrade` brings any database to the head revision inside one transaction that holds the database's
write lock (SQLite ``BEGIN IMMEDIATE``, a PostgreSQL advisory lock), so app replicas or threads that open the
store at the same moment migrate it exactly once and never see half a schema.  A database written before the
store had migrations (tables made by ``create_all``, no ``alembic_version``) is stamped at
:data:`LEGACY_REVISION` first -- its tables are that revision exactly -- and then upgraded, keeping every row.

For a developer: ``alembic -c editor/study/alembic.ini history`` (or ``current``, ``upgrade head``, ``revision
-m "..."``) works on ``$DATABASE_URL`` (default: the SQLite file under ``data/``).
"""
from __future__ import annotations

import threading
from contextlib import contextmanager
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy import inspect, text
from sqlalchemy.engine import Connection, Engine

MIGRATIONS_DIR = Path(__file__).resolve().parent
LEGACY_REVISION = "0001"  # the schema that ``Base.metadata.create_all`` wrote before migrations existed
LEGACY_TABLES = frozenset({"studies", "study_pairs", "votes"})
VERSION_TABLE = "alembic_version"
PG_LOCK_KEY = 0x5241_5449_4E47  # "RATING": serialises migrations between PostgreSQL clients
# Alembic installs its ``context``/``op`` proxies process-wide, so two threads must not run it at once even on
# different databases; the database lock below only serialises clients of the same database.
_ALEMBIC_LOCK = threading.Lock()


def alembic_config(connection: Connection | None = None) -> Config:
    """An Alembic config pointing at this folder; ``connection`` (if given) is the one ``env.py`` migrates."""
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    if connection is not None:
        cfg.attributes["connection"] = connection
    return cfg


def head_revision() -> str:
    return ScriptDirectory.from_config(alembic_config()).get_current_head()


def current_revision(engine: Engine) -> str | None:
    """The database's revision; ``None`` for an empty or a pre-migration database."""
    with engine.connect() as conn:
        return _version(conn)


def _version(conn: Connection) -> str | None:
    if not inspect(conn).has_table(VERSION_TABLE):
        return None
    return conn.execute(text(f"SELECT version_num FROM {VERSION_TABLE}")).scalar()


@contextmanager
def _locked(engine: Engine):
    """A connection in a transaction that holds the database's migration lock; commits on success."""
    with _ALEMBIC_LOCK, engine.connect() as conn:
        if conn.dialect.name == "sqlite":
            # pysqlite starts no transaction before DDL on its own: begin one that takes the write lock now
            conn.exec_driver_sql("BEGIN IMMEDIATE")
        elif conn.dialect.name == "postgresql":
            conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": PG_LOCK_KEY})
        yield conn
        conn.commit()


def _stamp_legacy(conn: Connection, cfg: Config) -> None:
    """Stamp a pre-migration database at :data:`LEGACY_REVISION`; refuse a half-made one."""
    tables = set(inspect(conn).get_table_names())
    if VERSION_TABLE in tables or not tables & LEGACY_TABLES:
        return
    if not LEGACY_TABLES <= tables:
        raise RuntimeError(f"ratings database has only some of the tables {sorted(LEGACY_TABLES)} and no "
                           f"{VERSION_TABLE}: not a database this store wrote; refusing to migrate it")
    command.stamp(cfg, LEGACY_REVISION)


def upgrade(engine: Engine, revision: str = "head") -> str:
    """Migrate the database to ``revision`` (stamping a pre-migration one first); return the revision it is at."""
    target = head_revision() if revision == "head" else revision
    with _locked(engine) as conn:
        cfg = alembic_config(conn)
        _stamp_legacy(conn, cfg)
        if _version(conn) != target:
            command.upgrade(cfg, target)
        return _version(conn)


def downgrade(engine: Engine, revision: str) -> str | None:
    """Migrate the database down to ``revision`` (``"base"`` drops every table); return where it is."""
    with _locked(engine) as conn:
        command.downgrade(alembic_config(conn), revision)
        return _version(conn)

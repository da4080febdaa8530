"""Alembic environment of the ratings store.

The store passes its own connection (already in a locked transaction) through ``config.attributes``; the
``alembic`` command line gets none and migrates ``sqlalchemy.url`` from the ini file, else ``$DATABASE_URL`` /
the default SQLite file.
"""
from alembic import context
from sqlalchemy import create_engine

from editor.study.store import Base, default_url


def run_migrations(connection) -> None:
    context.configure(connection=connection, target_metadata=Base.metadata)
    with context.begin_transaction():
        context.run_migrations()


def main() -> None:
    connection = context.config.attributes.get("connection")
    if connection is not None:
        run_migrations(connection)
        return
    engine = create_engine(context.config.get_main_option("sqlalchemy.url") or default_url())
    with engine.begin() as conn:
        run_migrations(conn)
    engine.dispose()


if context.is_offline_mode():
    raise SystemExit("offline (--sql) migrations are not supported; run them against a database")
main()

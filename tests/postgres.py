"""A throwaway PostgreSQL server for the tests: ``initdb`` + ``pg_ctl`` in a temp folder, Unix socket only.

The store must work on PostgreSQL (docs/DESIGN.md section 4), so its tests run there too when the server binaries are
installed (Debian's ``postgresql`` package puts them in ``/usr/lib/postgresql/<version>/bin``; ``.ci/run`` installs
it) and skip with the reason otherwise.  One server per test session keeps the start-up cost to a second or so;
each test gets its own fresh database on it.  PostgreSQL refuses to run as root, so as root the server runs as
the ``postgres`` user in a folder that user owns.  Durability is off (``fsync``, ``synchronous_commit``): the data
is thrown away anyway.
"""
from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

PORT = 5432  # only names the socket file; the socket folder is private to this server


class Unavailable(RuntimeError):
    """No PostgreSQL server can be started here; the message says why (used as the skip reason)."""


@dataclass(frozen=True)
class Binaries:
    folder: Path
    run_as: tuple[str, ...]  # command prefix, e.g. ("runuser", "-u", "postgres", "--") when we are root

    def __call__(self, tool: str, *args: str, timeout: float = 60) -> None:
        cmd = [*self.run_as, str(self.folder / tool), *args]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        if done.returncode:
            raise RuntimeError(f"{' '.join(cmd)} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")


def find_binaries() -> Binaries:
    """The newest installed server's ``bin`` folder and how to run it; raises :class:`Unavailable`."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=_version_key)
    initdb = found[-1] if found else shutil.which("initdb")
    if not initdb or not (Path(initdb).parent / "pg_ctl").exists():
        raise Unavailable("PostgreSQL server binaries (initdb, pg_ctl) not found; `apt-get install postgresql`")
    try:
        import psycopg  # noqa: F401
    except ImportError as e:
        raise Unavailable(f"psycopg is not installed ({e})") from None
    return Binaries(Path(initdb).parent, _run_as())


def _version_key(path: str) -> tuple[int, ...]:
    version = Path(path).parts[-3]
    return tuple(int(p) for p in version.split(".") if p.isdigit())


def _run_as() -> tuple[str, ...]:
    if os.geteuid() != 0:
        return ()
    if not shutil.which("runuser"):
        raise Unavailable("running as root and `runuser` is missing; PostgreSQL refuses to run as root")
    try:
        import pwd
        pwd.getpwnam("postgres")
    except KeyError:
        raise Unavailable("running as root and there is no `postgres` user to run the server as") from None
    return ("runuser", "-u", "postgres", "--")


def _own_folder(bins: Binaries) -> Path:
    """A fresh folder under the system temp dir (pytest's own are root-only) that the server's user owns."""
    folder = Path(tempfile.mkdtemp(prefix="movie-pg-"))
    if bins.run_as:
        shutil.chown(folder, "postgres", "postgres")
    return folder


@contextmanager
def running_server() -> Iterator[str]:
    """Start a server; yield the SQLAlchemy URL of its ``postgres`` database; stop it and delete its files."""
    bins = find_binaries()
    folder = _own_folder(bins)
    data, log = folder / "data", folder / "server.log"
    try:
        bins("initdb", "-D", str(data), "-U", "postgres", "-A", "trust", "-E", "UTF8", "--locale=C", "--no-sync")
        options = (f"-k {folder} -p {PORT} -c listen_addresses='' -c fsync=off -c synchronous_commit=off "
                   "-c full_page_writes=off -c max_connections=100")
        bins("pg_ctl", "-D", str(data), "-l", str(log), "-o", options, "-w", "-t", "60", "start", timeout=90)
        try:
            yield f"postgresql+psycopg://postgres@/postgres?host={folder}&port={PORT}"
        finally:
            bins("pg_ctl", "-D", str(data), "-m", "immediate", "-w", "stop")
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def fresh_database(server_url: str) -> str:
    """Create an empty database on the server; return its URL (each test gets its own)."""
    from sqlalchemy import create_engine, make_url

    name = f"t_{uuid.uuid4().hex[:16]}"
    engine = create_engine(server_url, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            conn.exec_driver_sql(f'CREATE DATABASE "{name}" TEMPLATE template0')
    finally:
        engine.dispose()
    return make_url(server_url).set(database=name).render_as_string(hide_password=False)

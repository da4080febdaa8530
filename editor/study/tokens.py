"""Server-issued tokens of the preference study: signed rater tokens, random pair tokens, the server secret.

Votes are evidence, so the server decides everything a vote records (docs/DESIGN.md section 6):

* A **rater token** names an anonymous rater and the scope it may vote in: ``rater-<32 hex>.<scope>.<signature>``,
  where the scope is ``-`` (the Rate page's ad-hoc pairs) or a study id (that study's pairs only), and the
  signature is HMAC-SHA256 of both under the server secret.  A client cannot make one up, change the rater or move
  it to another study; the server issues them (:meth:`RaterTokens.issue`, :meth:`RaterTokens.for_study`).
* A **pair token** (``p-`` and 32 random bytes, URL-safe base64) names a pair the server made and stored for one
  rater (table ``shown_pairs``: variants, sides, clip, settings).  The browser gets only the token and the two
  videos under opaque names; ``/vote`` takes the rater token, the pair token, the choice and the decision time.
* The **server secret** comes from ``$MOVIE_SECRET`` when set (several replicas must share one), else from a file
  the app creates once with mode 0600 (:func:`load_secret`; next to the SQLite database, ``data/server_secret`` by
  default) and keeps, so tokens survive restarts.
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import os
import re
import secrets
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.engine import make_url

SECRET_ENV = "MOVIE_SECRET"
SECRET_FILE = "server_secret"
DEFAULT_SECRET_PATH = Path(__file__).resolve().parents[2] / "data" / SECRET_FILE
NO_STUDY = "-"  # the scope of a rater token for the Rate page's ad-hoc pairs
RATER_ID = re.compile(r"^rater-[0-9a-f]{32}$")
RATER_TOKEN = re.compile(r"^(rater-[0-9a-f]{32})\.(-|[A-Za-z0-9-]{1,64})\.([A-Za-z0-9_-]{43})$")
PAIR_TOKEN = re.compile(r"^p-[A-Za-z0-9_-]{43}$")
MAX_TOKEN_CHARS = 200  # longer than any token: refused before any parsing


class InvalidToken(ValueError):
    """A rater or pair token that the server did not issue, or one used outside its scope."""


@dataclass(frozen=True)
class Rater:
    """A verified rater token: the rater id and the study it may vote in (``None``: ad-hoc pairs only)."""

    rater_id: str
    study_id: str | None
    token: str


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def new_pair_token() -> str:
    """An unguessable pair token (256 random bits)."""
    return "p-" + _b64(secrets.token_bytes(32))


def is_pair_token(value) -> bool:
    return isinstance(value, str) and len(value) <= MAX_TOKEN_CHARS and bool(PAIR_TOKEN.match(value))


def secret_path_for(db_url: str | None) -> Path:
    """Where the secret file lives: next to a SQLite database file, else :data:`DEFAULT_SECRET_PATH`."""
    if db_url:
        try:
            u = make_url(db_url)
        except Exception:  # noqa: BLE001 -- a URL SQLAlchemy cannot parse has no folder of its own
            return DEFAULT_SECRET_PATH
        if u.get_backend_name() == "sqlite" and u.database and u.database != ":memory:" \
                and "mode=memory" not in str(u):
            return Path(u.database).expanduser().resolve().parent / SECRET_FILE
    return DEFAULT_SECRET_PATH


def load_secret(path: str | os.PathLike | None = None) -> bytes:
    """The server secret: ``$MOVIE_SECRET`` if set, else the file at ``path`` (default
    :data:`DEFAULT_SECRET_PATH`), created with 32 random bytes and mode 0600 on first use.

    Creation is exclusive (``O_EXCL``), so two processes starting at once end up with the same secret; a file that
    is empty or shorter than 16 bytes is refused rather than trusted."""
    env = os.environ.get(SECRET_ENV, "")
    if env:
        if len(env) < 16:
            raise ValueError(f"${SECRET_ENV} is too short: use at least 16 characters")
        return env.encode("utf-8")
    path = Path(path or DEFAULT_SECRET_PATH)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        pass
    else:
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_hex(32) + "\n")
    raw = path.read_text().strip()
    if len(raw) < 16:
        raise ValueError(f"the server secret in {path} is empty or too short; delete it to make a new one")
    return raw.encode("utf-8")


class RaterTokens:
    """Issues and checks rater tokens with one server secret."""

    def __init__(self, secret: bytes):
        if not isinstance(secret, bytes) or len(secret) < 16:
            raise ValueError("the server secret must be at least 16 bytes")
        self._key = hashlib.sha256(b"movie-rater-token-v1\0" + secret).digest()

    def _sign(self, rater_id: str, scope: str) -> str:
        return _b64(hmac.new(self._key, f"{rater_id}\0{scope}".encode(), hashlib.sha256).digest())

    def issue(self, study_id: str | None = None, rater_id: str | None = None) -> str:
        """A token for a new anonymous rater (or for ``rater_id``) scoped to ``study_id`` (``None``: ad-hoc)."""
        rater_id = rater_id or f"rater-{secrets.token_hex(16)}"
        if not RATER_ID.match(rater_id):
            raise ValueError(f"not a rater id: {rater_id!r}")
        scope = NO_STUDY if study_id is None else str(study_id)
        if scope != NO_STUDY and not re.fullmatch(r"[A-Za-z0-9-]{1,64}", scope):
            raise ValueError(f"not a study id: {study_id!r}")
        return f"{rater_id}.{scope}.{self._sign(rater_id, scope)}"

    def verify(self, token) -> Rater:
        """The :class:`Rater` of a token this server issued; :class:`InvalidToken` otherwise (constant-time check)."""
        if not isinstance(token, str) or len(token) > MAX_TOKEN_CHARS:
            raise InvalidToken("malformed rater token")
        m = RATER_TOKEN.match(token)
        if not m:
            raise InvalidToken("malformed rater token")
        rater_id, scope, sig = m.groups()
        if not hmac.compare_digest(sig, self._sign(rater_id, scope)):
            raise InvalidToken("rater token not issued by this server")
        return Rater(rater_id, None if scope == NO_STUDY else scope, token)

    def for_study(self, token, study_id: str) -> str:
        """The same rater's token for ``study_id`` (from a valid token of any scope)."""
        return self.issue(study_id, self.verify(token).rater_id)

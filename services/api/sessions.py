"""Dashboard sessions, kept in Postgres so that every API process sees them.

A session is not a fact of the business (nothing else reacts to it, a replay has no use
for it, and ending one must take effect at once everywhere), so it is no event: it is a
row in a table the API owns, in its own schema (`clinai_api`, beside the rate buckets),
apart from the read models that a rebuild replaces. The cookie holds a random token; the
table holds only its SHA-256, so a copy of the table signs nobody in.

The CSRF token of a session is derived from its token (a keyed SHA-256 of it): pages
carry it in their forms and scripts send it as `X-CSRF-Token`; nothing more is stored,
and it cannot be turned back into the session token.

A session ends when its user signs out, after `session_idle_s` without a request, after
`session_max_s` in any case, and when the user's password is set (their other sessions).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

import asyncpg
import msgspec

from events import new_id

__all__ = ["COOKIE", "CSRF_HEADER", "Session", "SessionStore", "csrf_token", "token_hash"]

COOKIE = "clinai_session"
CSRF_HEADER = "x-csrf-token"
_SCHEMA = "clinai_api"
_TOUCH_EVERY_S = 60.0  # last_seen_at is written at most this often per session

_CREATE = f"""
CREATE SCHEMA IF NOT EXISTS {_SCHEMA};
CREATE TABLE IF NOT EXISTS {_SCHEMA}.sessions (
    id text PRIMARY KEY,
    token_hash text NOT NULL UNIQUE,
    user_id text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    last_seen_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS sessions_user ON {_SCHEMA}.sessions (user_id);
"""

# $1 token hash, $2 idle seconds, $3 maximum age in seconds. The user's name and role
# come from the read models (the pool's search_path), as an API key's do.
_LOOKUP = f"""
SELECT s.id, s.user_id, u.name, u.is_admin,
       extract(epoch FROM now() - s.last_seen_at)::double precision AS idle_s
FROM {_SCHEMA}.sessions s JOIN users u ON u.id = s.user_id
WHERE s.token_hash = $1
  AND s.last_seen_at > now() - make_interval(secs => $2)
  AND s.created_at > now() - make_interval(secs => $3)
"""


class Session(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    user_id: str
    name: str
    is_admin: bool
    csrf: str  # the token forms and scripts must send back


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def csrf_token(token: str) -> str:
    return hmac.new(b"clinai-csrf", token.encode(), hashlib.sha256).hexdigest()


class SessionStore:
    """Create, find, touch and end sessions; `open()` makes the table (once, whichever
    API process comes first)."""

    def __init__(self, pool: asyncpg.Pool, *, idle_s: float, max_s: float) -> None:
        if idle_s <= 0 or max_s <= 0:
            raise ValueError("session_idle_s and session_max_s must be positive")
        self._pool = pool
        self._idle_s = idle_s
        self._max_s = max_s

    @property
    def idle_s(self) -> float:
        return self._idle_s

    async def open(self) -> None:
        async with self._pool.acquire() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock(hashtext('clinai_api.sessions'))")
            await conn.execute(_CREATE)

    async def create(self, user_id: str) -> str:
        """A new session of `user_id`; returns its token (the cookie's value). Every
        session past its time is removed on the way (a sign-in is rare: the table stays
        as small as the sessions alive)."""
        token = secrets.token_urlsafe(32)
        async with self._pool.acquire() as conn, conn.transaction():
            await conn.execute(
                f"DELETE FROM {_SCHEMA}.sessions WHERE "
                "last_seen_at < now() - make_interval(secs => $1) "
                "OR created_at < now() - make_interval(secs => $2)",
                self._idle_s,
                self._max_s,
            )
            await conn.execute(
                f"INSERT INTO {_SCHEMA}.sessions (id, token_hash, user_id) VALUES ($1, $2, $3)",
                new_id("ses"),
                token_hash(token),
                user_id,
            )
        return token

    async def find(self, token: str) -> Session | None:
        """The live session of this token (and its use now keeps it alive), or None."""
        digest = token_hash(token)
        row = await self._pool.fetchrow(_LOOKUP, digest, self._idle_s, self._max_s)
        if row is None:
            return None
        if row["idle_s"] > min(_TOUCH_EVERY_S, self._idle_s / 4):
            await self._pool.execute(
                f"UPDATE {_SCHEMA}.sessions SET last_seen_at = now() WHERE token_hash = $1", digest
            )
        return Session(
            id=row["id"],
            user_id=row["user_id"],
            name=row["name"],
            is_admin=row["is_admin"],
            csrf=csrf_token(token),
        )

    async def end(self, token: str) -> None:
        await self._pool.execute(
            f"DELETE FROM {_SCHEMA}.sessions WHERE token_hash = $1", token_hash(token)
        )

    async def end_others(self, user_id: str, *, keep: str | None = None) -> int:
        """End every session of `user_id` but the one with id `keep`; how many ended."""
        result: str = await self._pool.execute(
            f"DELETE FROM {_SCHEMA}.sessions WHERE user_id = $1 AND id IS DISTINCT FROM $2",
            user_id,
            keep,
        )
        return int(result.rsplit(" ", 1)[-1])

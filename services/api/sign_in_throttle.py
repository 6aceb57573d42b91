"""Failed sign-ins, counted per account name and per client address in a table every API
process shares (`clinai_api.sign_in_failures`): past the limit within the window, sign-in
is refused (429) for that name or address until the window has passed.

A name is counted whether a user has it or not, so the answer tells nothing about who
exists. A user signs in with their name or their e-mail: a failure with either counts
against both (`aliases`), so the two together get no more tries than one. A successful
sign-in clears the counts of its names (not its address's)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import asyncpg

__all__ = ["SignInThrottle"]

_SCHEMA = "clinai_api"

_CREATE = f"""
CREATE SCHEMA IF NOT EXISTS {_SCHEMA};
CREATE UNLOGGED TABLE IF NOT EXISTS {_SCHEMA}.sign_in_failures (
    scope text PRIMARY KEY,
    failures integer NOT NULL,
    since timestamptz NOT NULL
);
"""

# $1 scopes, $2 window (s): one row per scope, a count restarted once its window passed.
_FAIL = f"""
INSERT INTO {_SCHEMA}.sign_in_failures AS f (scope, failures, since)
SELECT s, 1, now() FROM unnest($1::text[]) AS s
ON CONFLICT (scope) DO UPDATE SET
    failures = CASE WHEN f.since < now() - make_interval(secs => $2) THEN 1
                    ELSE f.failures + 1 END,
    since = CASE WHEN f.since < now() - make_interval(secs => $2) THEN now() ELSE f.since END
"""

# $1 scopes, $2 their limits, $3 window (s): the seconds until the last of them over its
# limit frees up (NULL: none is).
_BLOCKED = f"""
SELECT max(extract(epoch FROM f.since + make_interval(secs => $3) - now()))::double precision
FROM {_SCHEMA}.sign_in_failures f
JOIN unnest($1::text[], $2::integer[]) AS l(scope, lim) ON l.scope = f.scope
WHERE f.failures >= l.lim AND f.since > now() - make_interval(secs => $3)
"""


class SignInThrottle:
    def __init__(
        self, pool: asyncpg.Pool, *, per_account: int, per_address: int, window_s: float
    ) -> None:
        if per_account < 1 or per_address < 1 or window_s <= 0:
            raise ValueError("sign-in limits must be at least 1 and the window positive")
        self._pool = pool
        self._limits = (per_account, per_address)
        self._window_s = window_s

    async def open(self) -> None:
        async with self._pool.acquire() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock(hashtext('clinai_api.sign_in'))")
            await conn.execute(_CREATE)

    @staticmethod
    def _scopes(name: str, address: str, aliases: Sequence[str] = ()) -> list[str]:
        """The name's scope, the address's, then any other names' (in `retry_after`, the
        first two line up with the limits)."""
        first = name.strip().lower()
        others = {a.strip().lower() for a in aliases} - {first}
        return [f"account:{first}", f"address:{address}", *(f"account:{a}" for a in others)]

    async def retry_after(self, name: str, address: str) -> int | None:
        """Seconds until this name and address may try again, or None when they may now."""
        wait = await self._pool.fetchval(
            _BLOCKED, self._scopes(name, address), list(self._limits), self._window_s
        )
        return None if wait is None else max(1, math.ceil(wait))

    async def failed(self, name: str, address: str, aliases: Sequence[str] = ()) -> None:
        """A failure of `name` from `address`; `aliases`: the other names of the user
        `name` found (counted the same)."""
        await self._pool.execute(_FAIL, self._scopes(name, address, aliases), self._window_s)

    async def succeeded(self, name: str, aliases: Sequence[str] = ()) -> None:
        await self._pool.execute(
            f"DELETE FROM {_SCHEMA}.sign_in_failures WHERE scope = ANY($1::text[])",
            [s for s in self._scopes(name, "", aliases) if s.startswith("account:")],
        )

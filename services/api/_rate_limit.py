"""Commands per API key: a token bucket (GCRA, the generic cell rate algorithm), held
in Postgres so that every API process shares it.

A key may send `burst` commands at once, then one every `1 / rate` seconds. The bucket
is one number per key, its theoretical arrival time (TAT), updated by one atomic
`INSERT ... ON CONFLICT DO UPDATE ... WHERE` on the database's clock: no round trip
more than that one statement, no clock skew between API hosts, no lost update between
processes. The table is UNLOGGED (no WAL, no fsync: a crash of Postgres empties it,
which only resets the buckets) in its own schema, apart from the read models.

Why not the `limits` package: it offers fixed, moving and sliding windows, not a token
bucket, and stores counters in Redis, Memcached or MongoDB only; a storage adapter for
Postgres would take several round trips per hit where GCRA takes one statement.
"""

from __future__ import annotations

import math
import time
from typing import Any

import asyncpg
import msgspec
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from services.api.problems import ApiError

__all__ = ["RATE_STATE", "RateDecision", "RateLimitHeaders", "RateLimiter"]

_SCHEMA = "clinai_api"
RATE_STATE = "rate_limit"  # where a request's decision is kept in `request.state`

_CREATE = f"""
CREATE SCHEMA IF NOT EXISTS {_SCHEMA};
CREATE UNLOGGED TABLE IF NOT EXISTS {_SCHEMA}.rate_buckets (
    key text PRIMARY KEY,
    tat double precision NOT NULL  -- seconds since the epoch, the database's clock
);
"""

# $1 key, $2 emission interval T (s), $3 burst tolerance tau = T * burst (s), $4 the
# tokens wanted, n (at most the burst). A command fits when max(tat, now) + T - now <=
# tau; k = min(n, the commands that fit) are granted: tat := max(tat, now) + k * T.
# The row proposed for a new key carries now + n * T, so EXCLUDED.tat - n * T is the
# statement's clock. The final SELECT reads the table as it was before the statement.
_NOW = "(EXCLUDED.tat - $4::integer * $2::double precision)"
_FIT = f"floor(($3::double precision - (greatest(b.tat, {_NOW}) - {_NOW})) / $2 + 1e-9)"
_HIT = f"""
WITH clock AS (SELECT extract(epoch FROM clock_timestamp())::double precision AS now),
hit AS (
    INSERT INTO {_SCHEMA}.rate_buckets AS b (key, tat)
    SELECT $1::text, clock.now + $4::integer * $2::double precision FROM clock
    ON CONFLICT (key) DO UPDATE
        SET tat = greatest(b.tat, {_NOW}) + least($4, {_FIT}) * $2
        WHERE {_FIT} >= 1
    RETURNING tat
)
SELECT (SELECT now FROM clock) AS now, (SELECT tat FROM hit) AS granted,
       (SELECT tat FROM {_SCHEMA}.rate_buckets WHERE key = $1) AS before
"""
# How long tokens taken ahead stay usable in this process, and the most taken at once
# (as a share of the burst).
_LEASE_S = 0.25
_LEASE_SHARE = 4
_LEASES_KEPT = 10_000


class _Lease(msgspec.Struct):
    """Tokens this process took ahead for a key, to spend without asking Postgres."""

    tokens: int  # left to spend
    until: float  # monotonic time they stop being usable
    size: int  # how many were taken
    remaining: int  # the bucket's own remaining when they were taken
    reset_at: float  # monotonic time the bucket is full again (without more commands)


class RateDecision(msgspec.Struct, frozen=True):
    allowed: bool
    limit: int  # the burst: commands that may be sent at once
    remaining: int  # commands that may be sent now
    reset_s: float  # until the bucket is full again
    retry_after_s: float  # until the next command is allowed (0 when allowed)

    def headers(self) -> dict[str, str]:
        headers = {
            "RateLimit-Limit": str(self.limit),
            "RateLimit-Remaining": str(self.remaining),
            "RateLimit-Reset": str(math.ceil(self.reset_s)),
        }
        if not self.allowed:
            headers["Retry-After"] = str(max(1, math.ceil(self.retry_after_s)))
        return headers


class RateLimiter:
    """`rate_per_s` commands a second per key, `burst` at once; 0: no limit."""

    def __init__(self, pool: asyncpg.Pool, *, rate_per_s: float, burst: int) -> None:
        if rate_per_s < 0 or burst < 1:
            raise ValueError("rate_per_s must not be negative and burst must be at least 1")
        self._pool = pool
        self._burst = burst
        self._interval = 1.0 / rate_per_s if rate_per_s else 0.0
        self._tolerance = self._interval * burst
        self._max_lease = max(1, min(burst // _LEASE_SHARE, int(rate_per_s * _LEASE_S)))
        self._leases: dict[str, _Lease] = {}
        self.enabled = rate_per_s > 0

    async def open(self) -> None:
        """Create the buckets' table (once, whichever API process comes first)."""
        if not self.enabled:
            return
        async with self._pool.acquire() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))", _SCHEMA)
            await conn.execute(_CREATE)

    async def hit(self, key: str) -> RateDecision:
        """One token for `key`: from this process's lease while it lasts, else from the
        bucket in Postgres. A key that used up its last lease in time takes twice as
        many next time, up to a quarter of the burst or of a second's rate; its tokens
        not spent within `_LEASE_S` are lost (a key whose pace drops loses at most that
        quarter second's refill)."""
        now = time.monotonic()
        lease = self._leases.get(key)
        if lease is not None and lease.tokens and now < lease.until:
            lease.tokens -= 1
            return RateDecision(
                True,
                self._burst,
                lease.remaining + lease.tokens,
                max(0.0, lease.reset_at - now),
                0.0,
            )
        wanted = 1
        if lease is not None and not lease.tokens and now < lease.until:
            wanted = min(2 * lease.size, self._max_lease)  # spent in time: take more
        row = await self._pool.fetchrow(_HIT, key, self._interval, self._tolerance, wanted)
        db_now, granted, before = row["now"], row["granted"], row["before"]
        t, tau = self._interval, self._tolerance
        if granted is None:
            self._leases.pop(key, None)
            return RateDecision(
                False,
                self._burst,
                0,
                max(0.0, before - db_now),
                max(0.0, before + t - tau - db_now),
            )
        start = db_now if before is None else max(before, db_now)
        size = max(1, round((granted - start) / t))
        remaining = int((tau - (granted - db_now)) / t + 1e-9)
        reset_s = max(0.0, granted - db_now)
        if len(self._leases) >= _LEASES_KEPT:
            self._leases.clear()
        self._leases[key] = _Lease(
            tokens=size - 1,
            until=now + _LEASE_S,
            size=size,
            remaining=remaining,
            reset_at=now + reset_s,
        )
        return RateDecision(True, self._burst, remaining + size - 1, reset_s, 0.0)

    async def check(self, key: str) -> RateDecision:
        """The decision for one command of `key`; 429 when it is over the limit."""
        decision = await self.hit(key)
        if not decision.allowed:
            raise ApiError(
                429,
                "Too many requests",
                f"this API key may send {self._burst} commands at once and then "
                f"{1 / self._interval:g} a second (settings CLINAI_RATE_LIMIT_BURST and "
                f"CLINAI_RATE_LIMIT_PER_S); retry after {decision.headers()['Retry-After']} s",
                headers=decision.headers(),
                extra={"limit": "rate_limit", "setting": "CLINAI_RATE_LIMIT_PER_S"},
            )
        return decision


class RateLimitHeaders:
    """ASGI middleware: a command's response carries its key's `RateLimit-*` headers
    (the decision `request.state.rate_limit`). Queries pass straight through."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD"):
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                state: dict[str, Any] = scope.get("state") or {}
                decision = state.get(RATE_STATE)
                headers = list(message.get("headers", ()))
                if isinstance(decision, RateDecision) and not any(
                    name.lower() == b"ratelimit-limit" for name, _ in headers
                ):
                    headers += [
                        (name.lower().encode(), value.encode())
                        for name, value in decision.headers().items()
                    ]
                    message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_headers)

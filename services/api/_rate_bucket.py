"""The per-key token buckets in Postgres that every API process shares: GCRA (the
generic cell rate algorithm), taken from and given back in batches.

A bucket is one number per key, its theoretical arrival time (TAT): a key may send
`burst` commands at once, then one every `T = 1 / rate` seconds. `take` takes up to n
tokens in one atomic `INSERT ... ON CONFLICT DO UPDATE` on the database's clock (no clock
skew between API hosts, no lost update between processes) and returns how many it took,
as the row itself records them: never more than the bucket holds, however many
processes take at once. `give_back` returns tokens taken and not spent, for all keys in
one statement. The table is UNLOGGED (no WAL, no fsync: a crash of Postgres empties it,
which only fills the buckets) in its own schema, apart from the read models.

Why not the `limits` package: it offers fixed, moving and sliding windows, not a token
bucket, and stores counters in Redis, Memcached or MongoDB only; a storage adapter for
Postgres would take several round trips per hit where GCRA takes one statement.
"""

from __future__ import annotations

import asyncpg
import msgspec

__all__ = ["Bucket", "Taken"]

_SCHEMA = "clinai_api"

_CREATE = f"""
CREATE SCHEMA IF NOT EXISTS {_SCHEMA};
CREATE UNLOGGED TABLE IF NOT EXISTS {_SCHEMA}.rate_buckets (
    key text PRIMARY KEY,
    tat double precision NOT NULL  -- seconds since the epoch, the database's clock
);
ALTER TABLE {_SCHEMA}.rate_buckets ADD COLUMN IF NOT EXISTS
    granted integer NOT NULL DEFAULT 0;  -- tokens the last take took
"""

# $1 key, $2 emission interval T (s), $3 burst tolerance tau = T * burst (s), $4 the
# tokens wanted, n (at most the burst). A token fits when max(tat, now) + T - now <= tau;
# k = min(n, the tokens that fit) are taken: tat := max(tat, now) + k * T, and the row
# keeps k, so that RETURNING tells this statement's own take even when another process
# changed the row meanwhile. The row proposed for a new key carries now + n * T, so
# EXCLUDED.tat - n * T is the statement's clock. A take of none still writes the row
# (the same tat), so that RETURNING gives the TAT a refusal's Retry-After comes from.
_NOW = "(EXCLUDED.tat - $4::integer * $2::double precision)"
_FIT = f"floor(($3::double precision - (greatest(b.tat, {_NOW}) - {_NOW})) / $2 + 1e-9)"
_K = f"greatest(least($4::integer, {_FIT}::integer), 0)"
_TAKE = f"""
WITH clock AS (SELECT extract(epoch FROM clock_timestamp())::double precision AS now),
hit AS (
    INSERT INTO {_SCHEMA}.rate_buckets AS b (key, tat, granted)
    SELECT $1::text, clock.now + $4::integer * $2::double precision, $4::integer FROM clock
    ON CONFLICT (key) DO UPDATE
        SET tat = greatest(b.tat, {_NOW}) + {_K} * $2, granted = {_K}
    RETURNING tat, granted
)
SELECT clock.now, hit.tat, hit.granted FROM clock, hit
"""
# $1 keys, $2 the tokens each gives back, $3 T. A TAT moved below the clock is a full
# bucket, as one left idle.
_GIVE_BACK = f"""
UPDATE {_SCHEMA}.rate_buckets AS b SET tat = b.tat - r.n * $3::double precision
FROM unnest($1::text[], $2::integer[]) AS r(key, n) WHERE b.key = r.key
"""


class Taken(msgspec.Struct, frozen=True):
    """What one take got, and the bucket as it left it."""

    tokens: int  # taken (0: none fits)
    remaining: int  # still in the bucket
    reset_s: float  # until the bucket is full again
    retry_after_s: float  # until a token fits again (0 when one fits now)


class Bucket:
    """The buckets of one rate and burst, on `pool`."""

    def __init__(self, pool: asyncpg.Pool, *, rate_per_s: float, burst: int) -> None:
        if rate_per_s <= 0 or burst < 1:
            raise ValueError("rate_per_s must be positive and burst must be at least 1")
        self._pool = pool
        self.burst = burst
        self.interval = 1.0 / rate_per_s
        self._tolerance = self.interval * burst

    async def open(self) -> None:
        """Create the buckets' table (once, whichever API process comes first)."""
        async with self._pool.acquire() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))", _SCHEMA)
            await conn.execute(_CREATE)

    async def take(self, key: str, wanted: int) -> Taken:
        """Up to `wanted` tokens of `key` (at most the burst)."""
        wanted = max(1, min(wanted, self.burst))
        row = await self._pool.fetchrow(_TAKE, key, self.interval, self._tolerance, wanted)
        if row is None:
            raise RuntimeError("the rate limit's take returned no row")
        now, tat, granted = row["now"], row["tat"], row["granted"]
        t, tau = self.interval, self._tolerance
        return Taken(
            tokens=granted,
            remaining=max(0, int((tau - (tat - now)) / t + 1e-9)),
            reset_s=max(0.0, tat - now),
            retry_after_s=0.0 if granted else max(0.0, tat + t - tau - now),
        )

    async def give_back(self, tokens: dict[str, int]) -> None:
        """Return tokens taken and not spent, `{key: count}`, in one statement."""
        if not tokens:
            return
        await self._pool.execute(_GIVE_BACK, list(tokens), list(tokens.values()), self.interval)

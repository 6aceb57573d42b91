"""The per-key token bucket in Postgres (`services.api._rate_limit`), shared by two
limiters as two API processes share it, each taking tokens ahead in leases."""

from __future__ import annotations

import time

from projections.db import create_pool
from services.api._rate_limit import RateLimiter


async def test_two_limiters_together_never_grant_more_than_the_bucket(
    database_url: str,
) -> None:
    rate, burst = 40.0, 40
    pools = [await create_pool(database_url) for _ in range(2)]
    try:
        limiters = [RateLimiter(pool, rate_per_s=rate, burst=burst) for pool in pools]
        await limiters[0].open()
        await limiters[1].open()
        started = time.monotonic()
        granted = 0
        remaining_seen = []
        for n in range(400):
            decision = await limiters[n % 2].hit("key_shared")
            granted += decision.allowed
            remaining_seen.append(decision.remaining)
        elapsed = time.monotonic() - started
        # Never more than the burst and what refilled meanwhile, across both processes;
        # leases lose at most a quarter second's refill per process.
        assert granted <= burst + rate * elapsed + 1, (granted, elapsed)
        assert granted >= burst - 2 * 10, (granted, elapsed)
        assert min(remaining_seen) == 0 and all(r >= 0 for r in remaining_seen)
        refused = await limiters[0].hit("key_shared")
        if not refused.allowed:
            assert refused.headers()["RateLimit-Remaining"] == "0"
            assert int(refused.headers()["Retry-After"]) >= 1
        # Another key has its own bucket.
        assert (await limiters[1].hit("key_other")).allowed
    finally:
        for pool in pools:
            await pool.close()

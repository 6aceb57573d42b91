"""The per-key token bucket in Postgres (`services.api._rate_limit`), shared by two
limiters as two API processes share it, each spending tokens from leases it takes."""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import asyncpg
import pytest

from projections.db import create_pool
from services.api._rate_limit import LEASE_S, RateLimiter
from services.api._unavailable import _POSTGRES, _origin
from services.embedded import EmbeddedPostgres
from tests._infra import short_tmp_dir, wait_until


async def _level(pool: asyncpg.Pool, key: str, rate: float, burst: int) -> tuple[float, float]:
    """The database's clock and the tokens in `key`'s bucket (fractional), now."""
    row = await pool.fetchrow(
        "SELECT extract(epoch FROM clock_timestamp())::double precision AS now, tat"
        " FROM clinai_api.rate_buckets WHERE key = $1",
        key,
    )
    if row is None:
        raise AssertionError(f"no bucket for {key}")
    return row["now"], burst - max(0.0, row["tat"] - row["now"]) * rate


async def _hammer(limiter: RateLimiter, key: str, until: float, clients: int) -> int:
    """`clients` commands at a time, one after another, until `until`; those admitted."""
    admitted = 0

    async def client() -> None:
        nonlocal admitted
        while time.monotonic() < until:
            decision = await limiter.hit(key)  # (not `admitted += await`: a lost update)
            admitted += decision.allowed
            await asyncio.sleep(0)  # let the other clients in (refusals need no I/O)

    await asyncio.gather(*(client() for _ in range(clients)))
    return admitted


@pytest.fixture
async def pools(database_url: str) -> AsyncIterator[list[asyncpg.Pool]]:
    """Two pools on one database: two API processes' connections."""
    made = [await create_pool(database_url) for _ in range(2)]
    try:
        yield made
    finally:
        for pool in made:
            await pool.close()


async def test_two_limiters_admit_what_the_bucket_holds_no_more_and_lose_nothing(
    pools: list[asyncpg.Pool],
) -> None:
    rate, burst = 200.0, 400  # 1 s from half to full: no stall of this test's loop fills it
    limiters = [RateLimiter(pool, rate_per_s=rate, burst=burst) for pool in pools]
    for limiter in limiters:
        await limiter.open()
    key = "key_shared"
    for _ in range(burst // 2):  # half of it: far from full, none of its refill overflows
        assert (await limiters[0].hit(key)).allowed
    await limiters[0].close()  # gives back what it holds
    start, level_start = await _level(pools[0], key, rate, burst)
    until = time.monotonic() + 1.5
    admitted = sum(await asyncio.gather(*(_hammer(limiter, key, until, 8) for limiter in limiters)))
    for limiter in limiters:  # both stop: what they hold goes back
        await limiter.close()
    end, level_end = await _level(pools[0], key, rate, burst)
    refilled = rate * (end - start)
    # Tokens are taken before they are spent: never more than the bucket held and
    # refilled, whichever process admits. And every token is either spent or back in
    # the bucket (the bucket stays below full while both drain it, so none overflows).
    assert admitted <= level_start + refilled + 1, (admitted, level_start, refilled)
    assert admitted + level_end >= level_start + refilled - 2, (admitted, level_end, refilled)
    assert admitted > burst, admitted  # both processes were admitted past the burst


async def test_a_busy_key_costs_an_order_of_magnitude_fewer_statements_than_commands(
    database_url: str,
) -> None:
    async with _counting_pool(database_url) as (pool, statements):
        # The benchmark's limits: room for every command, the limiter on the path.
        limiter = RateLimiter(pool, rate_per_s=1e6, burst=1_000_000)
        await limiter.open()
        statements.clear()
        commands = 0

        async def client() -> None:
            nonlocal commands
            for _ in range(60):
                assert (await limiter.hit("key_busy")).allowed
                commands += 1
                await asyncio.sleep(0)  # the other clients' turn, as requests interleave

        await asyncio.gather(*(client() for _ in range(32)))
        assert commands == 32 * 60
        assert len(statements) <= commands / 10, (len(statements), commands)


async def test_a_burst_at_start_is_admitted_in_full_with_a_few_statements(
    database_url: str,
) -> None:
    burst = 200
    async with _counting_pool(database_url) as (pool, statements):
        limiter = RateLimiter(pool, rate_per_s=0.01, burst=burst)  # no refill in a test
        await limiter.open()
        statements.clear()
        decisions = await asyncio.gather(*(limiter.hit("key_new") for _ in range(burst + 5)))
        assert sum(d.allowed for d in decisions) == burst
        assert [d.allowed for d in decisions[burst:]] == [False] * 5
        # The commands that arrive while a take is in flight wait for it and size the next.
        assert len(statements) <= 4, len(statements)


async def test_tokens_a_process_holds_and_does_not_spend_go_back_to_the_bucket(
    database_url: str,
) -> None:
    async with _counting_pool(database_url) as (pool, statements):
        limiter = RateLimiter(pool, rate_per_s=100.0, burst=100)
        await limiter.open()
        giving_back = asyncio.create_task(limiter.run())
        try:
            for _ in range(200):  # a busy key, until this process holds some of its tokens
                assert (await limiter.hit("key_busy")).allowed
                if limiter.held("key_busy"):
                    break
            last_spent = time.monotonic()
            assert 0 < limiter.held("key_busy") <= 1.5 * limiter.max_lease
            statements.clear()
            back: list[Any] = []

            def given_back() -> bool:
                back[:] = [args for query, args in statements if "unnest" in query]
                return bool(back)

            await wait_until(given_back, what="the tokens to go back")
            idle = time.monotonic() - last_spent
            assert idle >= LEASE_S, idle  # not while the key might still spend them
            assert limiter.held("key_busy") == 0
            assert len(back) == 1 and back[0][0] == ["key_busy"] and back[0][1][0] > 0, back
        finally:
            giving_back.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await giving_back


async def test_a_refused_command_says_when_to_retry_and_refusals_cost_no_statement(
    database_url: str,
) -> None:
    rate, burst = 0.5, 3  # a token every 2 s
    async with (
        _counting_pool(database_url) as (pool_a, statements),
        _counting_pool(database_url) as (pool_b, _),
    ):
        limiters = [RateLimiter(pool, rate_per_s=rate, burst=burst) for pool in (pool_a, pool_b)]
        for limiter in limiters:
            await limiter.open()
        decisions = [await limiters[n % 2].hit("key_slow") for n in range(burst)]
        assert [d.allowed for d in decisions] == [True] * burst
        assert [d.remaining for d in decisions] == [2, 1, 0]
        refused = await limiters[0].hit("key_slow")
        refused_at = time.monotonic()
        assert not refused.allowed
        assert refused.headers()["RateLimit-Remaining"] == "0"
        # The next token comes 2 s after the first was taken, and Retry-After says so.
        assert 0 < refused.retry_after_s <= 1 / rate
        assert refused.headers()["Retry-After"] == str(max(1, math.ceil(refused.retry_after_s)))
        statements.clear()
        for _ in range(50):
            assert not (await limiters[0].hit("key_slow")).allowed
        assert len(statements) <= 1, statements  # the refusal is remembered here
        # Not before Retry-After, and soon after it, a token comes back (to either).
        await wait_until(
            _admitted(limiters[1], "key_slow"), what="a token after Retry-After", timeout_s=10
        )
        waited = time.monotonic() - refused_at
        assert refused.retry_after_s - 0.05 <= waited <= refused.retry_after_s + 2, waited
        # Another key has its own bucket.
        assert (await limiters[0].hit("key_other")).allowed


@contextlib.asynccontextmanager
async def _counting_pool(
    database_url: str,
) -> AsyncIterator[tuple[asyncpg.Pool, list[tuple[str, Any]]]]:
    """A pool whose statements on the buckets are recorded (text and arguments), as
    Postgres receives them."""
    statements: list[tuple[str, Any]] = []

    def record(query: asyncpg.connection.LoggedQuery) -> None:
        if "rate_buckets" in query.query:
            statements.append((query.query, query.args))

    async def init(conn: asyncpg.Connection) -> None:
        conn.add_query_logger(record)

    pool = await asyncpg.create_pool(database_url, init=init)
    try:
        yield pool, statements
    finally:
        await pool.close()


def _admitted(limiter: RateLimiter, key: str) -> Callable[[], Awaitable[bool]]:
    async def admitted() -> bool:
        return (await limiter.hit(key)).allowed

    return admitted


async def test_postgres_down_held_tokens_admit_then_a_take_is_a_postgres_outage() -> None:
    with short_tmp_dir("clinai-rl-pg-") as pg_dir:
        postgres = EmbeddedPostgres(pg_dir, fast=True)
        dsn = await asyncio.to_thread(postgres.start_blocking)
        pool = await create_pool(dsn)
        try:
            limiter = RateLimiter(pool, rate_per_s=1000.0, burst=1000)
            await limiter.open()
            for _ in range(100):  # a busy key: its leases grow, one is held
                assert (await limiter.hit("key_busy")).allowed
            await asyncio.to_thread(postgres.stop_blocking)
            admitted = 0
            with pytest.raises(Exception) as raised:
                for _ in range(2 * limiter.max_lease):
                    decision = await limiter.hit("key_busy")
                    admitted += decision.allowed
            # What this process held is spent, no more (at most a lease and a half);
            # then the take is an outage of Postgres (503 with Retry-After, see
            # tests/api/test_unavailable.py), not a refusal nor a defect.
            assert 0 < admitted <= 1.5 * limiter.max_lease, admitted
            err = raised.value
            assert isinstance(err, asyncpg.PostgresConnectionError) or (
                isinstance(err, OSError) and _origin(err) == _POSTGRES
            ), repr(err)
            await limiter.close()  # nothing to give back, nothing raised
            await asyncio.to_thread(postgres.start_blocking)
            await wait_until(
                _admitted(limiter, "key_busy"), what="a take once Postgres is back", timeout_s=30
            )
        finally:
            await pool.close()
            await asyncio.to_thread(postgres.stop_blocking)

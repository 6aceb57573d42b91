"""An owner's running cap across executors: two `OwnerLeases` on one NATS server stand
for two executors (before, each executor applied the cap to its own jobs only, so N
executors let an owner run N times their cap)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from nats.aio.client import Client as NATS

from services.executor._leases import OwnerLeases
from tests._infra import wait_until

OWNER = "usr_capped"


@pytest.fixture
async def two(nc: NATS) -> AsyncIterator[tuple[OwnerLeases, OwnerLeases]]:
    first = await OwnerLeases.open(nc.jetstream())
    second = await OwnerLeases.open(nc.jetstream())
    try:
        yield first, second
    finally:
        await first.close()
        await second.close()


async def test_the_cap_holds_across_executors(two: tuple[OwnerLeases, OwnerLeases]) -> None:
    a, b = two
    assert await a.try_take(OWNER, "job_1", 2)
    assert await b.try_take(OWNER, "job_2", 2)
    assert not await a.try_take(OWNER, "job_3", 2)
    assert not await b.try_take(OWNER, "job_3", 2)
    assert await b.try_take("usr_other", "job_9", 2)  # another owner's own count
    await a.give_back(OWNER, "job_1")
    assert await b.try_take(OWNER, "job_3", 2)
    assert await a.try_take(OWNER, "job_2", 2)  # a redelivered job takes over its lease


async def test_racing_executors_never_take_more_than_the_cap(
    two: tuple[OwnerLeases, OwnerLeases],
) -> None:
    a, b = two
    tries = [
        leases.try_take(OWNER, f"job_{i}_{n}", 3) for i, leases in enumerate(two) for n in range(8)
    ]
    taken = await asyncio.gather(*tries)
    assert sum(taken) == 3
    assert not await a.try_take(OWNER, "late", 3) and not await b.try_take(OWNER, "late", 3)


async def test_a_waiting_job_starts_once_another_executor_gives_a_place_back(
    two: tuple[OwnerLeases, OwnerLeases],
) -> None:
    a, b = two
    assert await a.try_take(OWNER, "job_1", 1)
    waiting = asyncio.create_task(b.take(OWNER, "job_2", 1))
    try:
        assert not await b.try_take(OWNER, "job_3", 1)
        assert not waiting.done()
        await a.give_back(OWNER, "job_1")

        async def started() -> bool:
            return waiting.done()

        await wait_until(started, what="the waiting job to take the freed place", timeout_s=10)
        waiting.result()
    finally:
        waiting.cancel()


async def test_a_dead_executors_leases_expire_and_live_ones_are_renewed(nc: NATS) -> None:
    now = [1000.0]
    js = nc.jetstream()
    dead = await OwnerLeases.open(js, ttl_s=30, clock=lambda: now[0])
    live = await OwnerLeases.open(js, ttl_s=30, clock=lambda: now[0])
    try:
        assert await dead.try_take(OWNER, "job_dead", 2)
        assert await live.try_take(OWNER, "job_live", 2)
        now[0] += 20
        await live.renew()  # job_live now runs to 1050; job_dead's lease ends at 1030
        assert not await live.try_take(OWNER, "job_3", 2)
        now[0] += 15
        assert await live.try_take(OWNER, "job_3", 2)  # job_dead's place came back
        assert not await live.try_take(OWNER, "job_4", 2)  # job_live still holds its own
    finally:
        await dead.close()
        await live.close()

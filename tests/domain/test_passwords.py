"""Argon2 work is capped per event loop: a flood of sign-ins leaves the loop's thread
pool free for the API's other blocking work (real Argon2 hashes, a real thread pool)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest

from services.domain.passwords import (
    hash_password,
    limit_concurrency,
    verify_in_thread,
)
from services.settings import Settings

FLOOD = 12


@pytest.fixture
def cap() -> Iterator[None]:
    yield
    limit_concurrency(None)


async def _other_work_during_a_flood(workers: int) -> int:
    """How many of FLOOD wrong-password checks were done when a short piece of other
    blocking work, submitted after them, came back (pool of `workers` threads)."""
    loop = asyncio.get_running_loop()
    loop.set_default_executor(ThreadPoolExecutor(max_workers=workers))
    stored = hash_password("the right password")
    flood = [asyncio.ensure_future(verify_in_thread(stored, "a wrong guess")) for _ in range(FLOOD)]
    await asyncio.sleep(0)  # let the flood start: each takes its slot or waits for one
    await asyncio.to_thread(sum, range(10))
    done = sum(f.done() for f in flood)
    assert await asyncio.gather(*flood) == [False] * FLOOD
    return done


async def test_a_sign_in_flood_leaves_threads_for_other_work(cap: None) -> None:
    limit_concurrency(1)
    assert await _other_work_during_a_flood(workers=4) < FLOOD // 2


async def test_without_the_cap_the_flood_would_take_the_pool(cap: None) -> None:
    """The test above can fail: with as many slots as the flood, other work waits
    behind it."""
    limit_concurrency(FLOOD)
    assert await _other_work_during_a_flood(workers=4) > FLOOD // 2


def test_the_cap_is_a_setting_that_defaults_to_the_cpu_count(cap: None) -> None:
    assert Settings().argon2_concurrency is None
    assert limit_concurrency(None) >= 1
    assert limit_concurrency(3) == 3
    with pytest.raises(ValueError, match="at least 1"):
        limit_concurrency(0)

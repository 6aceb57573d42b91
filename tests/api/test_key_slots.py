"""Commands of one API key in progress at once while others wait
(`services.api._key_slots`)."""

from __future__ import annotations

import asyncio

from services.api._key_slots import KeySlots


async def test_a_key_alone_is_not_held_back() -> None:
    slots = KeySlots(2)
    for _ in range(10):
        await asyncio.wait_for(slots.acquire("a"), 1)


async def test_a_busy_key_waits_at_its_limit_while_another_key_has_work() -> None:
    now = [0.0]
    slots = KeySlots(2, recent_s=1.0, clock=lambda: now[0])
    a_releases = [await slots.acquire("a") for _ in range(5)]  # alone: all five start
    b = await asyncio.wait_for(slots.acquire("b"), 1)  # never behind a's commands
    sixth = asyncio.ensure_future(slots.acquire("a"))
    await asyncio.sleep(0)  # let it reach its place (no timing involved)
    for release in a_releases[:3]:
        release()
        release()  # a second release changes nothing
    await asyncio.sleep(0)
    assert not sixth.done()  # a still has 2 in progress while b works
    a_releases[3]()
    sixth_release = await asyncio.wait_for(sixth, 1)  # below its limit again
    seventh = asyncio.ensure_future(slots.acquire("a"))
    await asyncio.sleep(0)
    b()
    await asyncio.sleep(0)
    assert not seventh.done()  # b sent a command within the last second
    now[0] += 2.0  # b has been quiet long enough: a goes on alone
    sixth_release()
    (await asyncio.wait_for(seventh, 1))()
    a_releases[4]()
    for _ in range(5):
        await asyncio.wait_for(slots.acquire("a"), 1)


async def test_a_cancelled_wait_gives_its_place_back() -> None:
    slots = KeySlots(1)
    held = await slots.acquire("a")
    other = await slots.acquire("b")
    waiting = asyncio.ensure_future(slots.acquire("a"))
    later = asyncio.ensure_future(slots.acquire("a"))
    await asyncio.sleep(0)
    waiting.cancel()
    await asyncio.gather(waiting, return_exceptions=True)
    held()
    (await asyncio.wait_for(later, 1))()
    other()


async def test_no_limit_never_waits() -> None:
    slots = KeySlots(0)
    await asyncio.wait_for(slots.acquire("b"), 1)
    for _ in range(100):
        await asyncio.wait_for(slots.acquire("a"), 1)

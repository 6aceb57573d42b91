"""Commands of one API key in progress at once (`services.api._key_slots`)."""

from __future__ import annotations

import asyncio

from services.api._key_slots import KeySlots


async def test_a_keys_commands_past_its_slots_wait_while_other_keys_go_on() -> None:
    slots = KeySlots(2)
    first = await slots.acquire("a")
    await slots.acquire("a")
    third = asyncio.ensure_future(slots.acquire("a"))
    other = await asyncio.wait_for(slots.acquire("b"), 1)  # not behind a's commands
    await asyncio.sleep(0)  # let the third reach the semaphore (no timing involved)
    assert not third.done()
    first()
    first()  # a second release changes nothing
    release_third = await asyncio.wait_for(third, 1)
    fourth = asyncio.ensure_future(slots.acquire("a"))
    await asyncio.sleep(0)
    assert not fourth.done()  # still two in progress: the second and the third
    release_third()
    (await asyncio.wait_for(fourth, 1))()
    other()


async def test_a_cancelled_wait_gives_its_place_back() -> None:
    slots = KeySlots(1)
    held = await slots.acquire("a")
    waiting = asyncio.ensure_future(slots.acquire("a"))
    await asyncio.sleep(0)
    waiting.cancel()
    await asyncio.gather(waiting, return_exceptions=True)
    held()
    (await asyncio.wait_for(slots.acquire("a"), 1))()


async def test_no_limit_never_waits() -> None:
    slots = KeySlots(0)
    for _ in range(100):
        await asyncio.wait_for(slots.acquire("a"), 1)

"""The executor's slots, shared in turn between owners (`services.executor._fair`)."""

from __future__ import annotations

import asyncio

import pytest
from prometheus_client import generate_latest

from services.executor._fair import FairSlots
from services.metrics import ExecutorJobs, ServiceMetrics
from tests.metrics._scrape import parse, value


async def _queue(
    slots: FairSlots, owner: str, order: list[str], cap: int = 0
) -> asyncio.Task[None]:
    async def job() -> None:
        await slots.acquire(owner, cap)
        order.append(owner)

    task = asyncio.create_task(job())
    await asyncio.sleep(0)  # let it reach its place in the queue (no timing involved)
    return task


async def test_an_owner_alone_takes_free_slots_at_once() -> None:
    slots = FairSlots(2)
    await asyncio.wait_for(slots.acquire("a"), 1)
    await asyncio.wait_for(slots.acquire("a"), 1)
    assert slots.running("a") == 2 and slots.waiting == 0


async def test_an_owners_jobs_start_in_submission_order() -> None:
    """Not in the order they reached this executor: the jobs of an executor that died
    come back (redelivered) after newer ones, and have waited already. In the cluster
    test they re-ran 10-24 s after the kill, behind the survivor's queue, against 10 s
    wanted."""
    slots = FairSlots(1)
    await slots.acquire("a")
    order: list[int] = []

    async def job(seq: int) -> None:
        await slots.acquire("a", seq=seq)
        order.append(seq)

    newer = [asyncio.create_task(job(seq)) for seq in range(100, 120)]
    await asyncio.sleep(0)  # let them reach their places in the queue (no timing involved)
    redelivered = [asyncio.create_task(job(seq)) for seq in (7, 3, 5)]
    await asyncio.sleep(0)
    for _ in range(5):
        slots.release("a")
        await asyncio.sleep(0)
    assert order == [3, 5, 7, 100, 101]
    newer[5].cancel()  # a job cancelled while it waits leaves the queue
    await asyncio.gather(newer[5], return_exceptions=True)
    slots.release("a")
    await asyncio.sleep(0)
    slots.release("a")
    await asyncio.sleep(0)
    assert order[-2:] == [102, 103]
    for task in [*newer, *redelivered]:
        task.cancel()
    await asyncio.gather(*newer, *redelivered, return_exceptions=True)
    assert slots.waiting == 0


async def test_another_owners_job_gets_the_next_free_slot() -> None:
    slots = FairSlots(2)
    await slots.acquire("a")
    await slots.acquire("a")
    order: list[str] = []
    tasks = [await _queue(slots, "a", order) for _ in range(50)]
    tasks.append(await _queue(slots, "b", order))
    slots.release("a")
    await asyncio.sleep(0)
    assert order == ["b"]  # not behind a's 50
    for _ in range(4):
        slots.release(order[-1])
        await asyncio.sleep(0)
    assert order == ["b", "a", "a", "a", "a"]
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    assert slots.waiting == 0


async def test_owners_with_queues_take_turns() -> None:
    slots = FairSlots(1)
    await slots.acquire("x")
    order: list[str] = []
    tasks = [await _queue(slots, owner, order) for owner in "aaaabbbbcc"]
    for _ in range(len(tasks)):
        slots.release(order[-1] if order else "x")
        await asyncio.sleep(0)
    assert order == list("abcabcabab")
    await asyncio.gather(*tasks)


async def test_an_owner_at_their_cap_waits_while_others_run() -> None:
    slots = FairSlots(4)
    await slots.acquire("a", cap=2)
    await slots.acquire("a", cap=2)
    order: list[str] = []
    capped = await _queue(slots, "a", order, cap=2)
    other = await _queue(slots, "b", order)
    assert order == ["b"] and slots.running("a") == 2
    slots.release("a")
    await asyncio.sleep(0)
    assert order == ["b", "a"]
    await asyncio.gather(capped, other)


async def test_a_cancelled_waiter_gives_up_its_place() -> None:
    slots = FairSlots(1)
    await slots.acquire("a")
    order: list[str] = []
    gone = await _queue(slots, "b", order)
    later = await _queue(slots, "c", order)
    gone.cancel()
    with pytest.raises(asyncio.CancelledError):
        await gone
    slots.release("a")
    await asyncio.sleep(0)
    assert order == ["c"] and slots.running("c") == 1
    await later


async def test_closed_slots_start_nothing() -> None:
    slots = FairSlots(1)
    await slots.acquire("a")
    order: list[str] = []
    waiting = await _queue(slots, "b", order)
    slots.close()
    slots.release("a")
    await asyncio.sleep(0)
    assert order == [] and not waiting.done()
    waiting.cancel()
    await asyncio.gather(waiting, return_exceptions=True)


async def test_the_executor_jobs_gauge_reads_waiting_and_running_from_the_slots() -> None:
    slots = FairSlots(2)
    metrics = ServiceMetrics("executor")
    ExecutorJobs(metrics, lambda: slots.waiting, lambda: slots.taken)

    def read() -> tuple[float, float]:
        samples = parse(generate_latest(metrics.registry).decode())
        return (
            value(samples, "clinai_executor_jobs", state="waiting"),
            value(samples, "clinai_executor_jobs", state="running"),
        )

    assert read() == (0, 0)
    await slots.acquire("alice")
    await slots.acquire("bob")
    third = asyncio.ensure_future(slots.acquire("alice"))
    await asyncio.sleep(0)  # let it queue (no timing: one loop turn)
    assert read() == (1, 2)
    slots.release("bob")
    await third
    assert read() == (0, 2)
    slots.release("alice")
    slots.release("alice")
    assert read() == (0, 0)

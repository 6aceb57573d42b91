"""The projector: exactly-once across crashes, one writer, standby takeover."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Sequence

import asyncpg
import msgspec
import pytest

from events import (
    BuildLogAppended,
    EventStore,
    JobRequested,
    JobSucceeded,
    StoredEvent,
    new_event_id,
    new_id,
)
from projections import Projector, queries
from projections.jobs_in_flight import JobsInFlight
from tests._events import new_event
from tests._infra import wait_until
from tests.projections._support import (
    assert_as_a_fresh_replay,
    running,
    stream_events,
    user_created,
    wait_checkpoint,
)
from tests.projections._workload import append_workload


class Boom(Exception):
    pass


def _assert_tiles(committed: list[tuple[int, int]], last: int) -> None:
    """Committed batches cover 1..last exactly once, in order."""
    expected_first = 1
    for first, end in committed:
        assert first == expected_first, committed
        expected_first = end + 1
    assert expected_first == last + 1


async def test_failure_mid_batch_then_restart_applies_each_event_once(
    database_url: str, store: EventStore, db: asyncpg.Connection
) -> None:
    last = await append_workload(store, 3000)
    committed: list[tuple[int, int]] = []
    batches = 0

    async def fail_third(events: Sequence[StoredEvent]) -> None:
        nonlocal batches
        batches += 1
        if batches == 3:  # the rows of this batch are written, the checkpoint is not
            raise Boom

    async def record(events: Sequence[StoredEvent]) -> None:
        committed.append((events[0].seq, events[-1].seq))

    crashing = Projector(
        database_url, store, max_batch=300, before_commit=fail_third, after_commit=record
    )
    with pytest.raises(Boom):
        await crashing.run(asyncio.Event())
    assert len(committed) == 2
    assert await queries.checkpoint(db) == committed[-1][1]

    async with running(Projector(database_url, store, after_commit=record)):
        await wait_checkpoint(database_url, last)
    _assert_tiles(committed, last)
    assert await queries.checkpoint(db) == last

    # Identical to a projection that never crashed.
    live = await assert_as_a_fresh_replay(database_url, store, db, last)
    appended = [
        s for s in await stream_events(store, last) if isinstance(s.event, BuildLogAppended)
    ]
    assert len(live["build_log_chunks"]) == len(appended) > 0
    assert sorted(row[3] for row in live["build_log_chunks"]) == [s.seq for s in appended]


async def test_cancel_mid_transaction_then_restart(
    database_url: str, store: EventStore, db: asyncpg.Connection
) -> None:
    last = await append_workload(store, 2000)
    committed: list[tuple[int, int]] = []
    inside = asyncio.Event()
    never = asyncio.Event()
    calls = 0

    async def hang_second(events: Sequence[StoredEvent]) -> None:
        nonlocal calls
        calls += 1
        if calls == 2:
            inside.set()
            await never.wait()  # killed here, inside the transaction

    async def record(events: Sequence[StoredEvent]) -> None:
        committed.append((events[0].seq, events[-1].seq))

    projector = Projector(
        database_url, store, max_batch=250, before_commit=hang_second, after_commit=record
    )
    task = asyncio.create_task(projector.run(asyncio.Event()))
    await asyncio.wait_for(inside.wait(), 30)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert len(committed) == 1
    assert await queries.checkpoint(db) == committed[0][1]

    async with running(Projector(database_url, store, after_commit=record)):
        await wait_checkpoint(database_url, last)
    _assert_tiles(committed, last)
    await assert_as_a_fresh_replay(database_url, store, db, last)


async def test_one_writer_and_standby_takeover(
    database_url: str, store: EventStore, db: asyncpg.Connection
) -> None:
    first_last = await append_workload(store, 500)
    written: dict[str, int] = {"a": 0, "b": 0}

    def counter(name: str):  # type: ignore[no-untyped-def]
        async def count(events: Sequence[StoredEvent]) -> None:
            written[name] += len(events)

        return count

    a = Projector(database_url, store, after_commit=counter("a"), standby_poll=0.05)
    b = Projector(database_url, store, after_commit=counter("b"), standby_poll=0.05)
    stop_a, stop_b = asyncio.Event(), asyncio.Event()
    task_a = asyncio.create_task(a.run(stop_a))
    await wait_checkpoint(database_url, first_last)
    assert a.is_leader
    task_b = asyncio.create_task(b.run(stop_b))
    second_last = await append_workload(store, 500)
    await wait_checkpoint(database_url, second_last)
    # after_commit runs just after the commit the checkpoint query already sees.
    await wait_until(lambda: written["a"] == second_last, what="a's callbacks to run")
    assert a.is_leader and not b.is_leader
    assert (written["a"], written["b"]) == (second_last, 0)

    stop_a.set()
    await asyncio.wait_for(task_a, 30)
    third_last = await append_workload(store, 500)
    await wait_checkpoint(database_url, third_last)
    await wait_until(lambda: written["b"] >= third_last - second_last, what="b's callbacks")
    assert b.is_leader
    assert written["b"] == third_last - second_last
    stop_b.set()
    await asyncio.wait_for(task_b, 30)
    assert await queries.checkpoint(db) == third_last


async def test_batches_of_several_aggregates_start_at_most_every_busy_interval(
    database_url: str, store: EventStore
) -> None:
    interval = 0.5
    loop = asyncio.get_running_loop()
    starts: list[tuple[float, int]] = []  # (when written, how many aggregates)

    async def record(events: Sequence[StoredEvent]) -> None:
        starts.append((loop.time(), len({e.event.aggregate_id for e in events})))

    projector = Projector(database_url, store, busy_interval_s=interval, before_commit=record)
    async with running(projector):
        # Started (leader, tables migrated) before anything is timed: a busy machine can
        # take longer than the intervals below for that.
        await wait_checkpoint(database_url, await store.append(user_created(), expected=None))
        # One aggregate's events, one at a time (a job run on its own): never held back.
        log = new_event(
            BuildLogAppended, new_id("ver"), actor="t", correlation_id="c", index=0, text="x"
        )
        for index in range(4):
            chunk = msgspec.structs.replace(log, id=new_event_id(), index=index)
            seq = await store.append(chunk, expected=None)
            await wait_checkpoint(database_url, seq, timeout=interval / 2)
        # Many aggregates at once: the events coming in meanwhile wait for the interval.
        seqs = await asyncio.gather(
            *(store.append(user_created(), expected=None) for _ in range(20))
        )
        await wait_checkpoint(database_url, max(seqs))
    several = [i for i, (_, aggregates) in enumerate(starts) if aggregates > 1]
    assert several, starts
    for i in several:
        assert starts[i][0] - starts[i - 1][0] >= interval - 0.1, starts


async def test_events_arriving_while_a_batch_is_held_commit_with_it(
    database_url: str, store: EventStore
) -> None:
    interval = 0.5
    loop = asyncio.get_running_loop()
    # seq -> (its batch, named by how many events were written before it; when written)
    written: dict[int, tuple[int, float]] = {}

    async def record(events: Sequence[StoredEvent]) -> None:
        batch = (len(written), loop.time())
        written.update((e.seq, batch) for e in events)

    async def several() -> int:  # events of several aggregates, stored together
        return await store.append_batch([(user_created(), None) for _ in range(3)])

    projector = Projector(database_url, store, busy_interval_s=interval, before_commit=record)
    async with running(projector):
        await wait_checkpoint(database_url, await several())  # starts an interval
        held = await several()  # held until that interval ends
        appended = loop.time()
        late = await several()  # arrives while `held` waits
        await wait_checkpoint(database_url, late)
    # Joined to the held batch: written within one interval, not after a second one.
    assert written[late] == written[held]
    assert written[late][1] - appended < interval + 0.2, written[late][1] - appended


def _job_requested(owner: str) -> JobRequested:
    job = new_id("job")
    return new_event(
        JobRequested, job, owner=owner, model_id="mdl_x", version_id="ver_x",
        input_key=f"inputs/{job}/in", input_filename="in",
    )  # fmt: skip


async def test_a_batch_ending_an_owners_only_job_in_flight_is_not_held(
    database_url: str, store: EventStore
) -> None:
    """While one owner floods, another's single job's end commits within a tenth of the
    interval (its long poll waits for it), also when it arrives while a batch is held;
    the flooding owner's ends are still held and batched."""
    interval = 0.5
    loop = asyncio.get_running_loop()
    written: dict[int, float] = {}  # seq -> when its batch was written

    async def record(events: Sequence[StoredEvent]) -> None:
        now = loop.time()
        written.update((e.seq, now) for e in events)

    flood = [_job_requested("usr_a") for _ in range(4)]
    b_job, c_job = _job_requested("usr_b"), _job_requested("usr_c")

    def ended(requested: JobRequested) -> tuple[JobSucceeded, None]:
        return new_event(JobSucceeded, requested.aggregate_id), None

    projector = Projector(database_url, store, busy_interval_s=interval, before_commit=record)
    async with running(projector):
        await wait_checkpoint(database_url, await store.append(user_created(), expected=None))
        requested = await store.append_batch([(e, None) for e in (*flood, b_job, c_job)])
        await wait_checkpoint(database_url, requested)  # several jobs: starts an interval
        appended = loop.time()
        lone = await store.append_batch([ended(flood[0]), ended(b_job)])
        await wait_checkpoint(database_url, lone)
        assert written[lone] - appended < interval / 2, written[lone] - appended
        held = await store.append_batch([ended(flood[1]), (user_created(), None)])
        await wait_checkpoint(database_url, held)
        assert written[held] - written[lone] >= interval - 0.1, written[held] - written[lone]
        # Held again, until C's only job ends: it goes soon, and the held batch with it.
        cut = await store.append_batch([ended(flood[2]), (user_created(), None)])
        appended = loop.time()
        c_end = await store.append(ended(c_job)[0], expected=None)
        await wait_checkpoint(database_url, c_end)
    assert written[cut] == written[c_end]
    assert written[c_end] - appended < interval / 2, written[c_end] - appended


async def test_a_projector_cancelled_while_it_holds_a_batch_ends_cancelled(
    database_url: str, store: EventStore
) -> None:
    """Before, the hold's pending read was left running: closing the reader then raised
    RuntimeError ('asynchronous generator is already running') in place of the
    cancellation, and the subscription lingered."""
    holding = asyncio.Event()

    class _Watched(JobsInFlight):
        def ends_a_lone_job(self, batch: Iterable[StoredEvent]) -> bool:
            batch = list(batch)
            if any(e.seq >= 3 for e in batch):
                holding.set()  # `_hold` asks first, then holds a batch of several
            return super().ends_a_lone_job(batch)

    projector = Projector(database_url, store, busy_interval_s=30)
    projector._jobs = _Watched()
    task = asyncio.create_task(projector.run(asyncio.Event()))
    await wait_checkpoint(database_url, await store.append(user_created(), expected=None))
    await store.append_batch([(user_created(), None), (user_created(), None)])
    await asyncio.wait_for(holding.wait(), 10)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, 10)

"""The bulk reader behind `EventStore.read_batches`: catch-up on its own connection, then
the hand-over to nats-py's ordered consumer, in order and without gaps or repeats."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence
from typing import Any

import pytest
from nats.aio.client import Client as NATS

import events.store
from events import (
    EventStore,
    JobStarted,
    StoredEvent,
    UndecodableEventError,
    encode_event,
    new_id,
)
from events._reader import BulkReader, open_bulk_reader
from tests._events import new_event


def _started(job_id: str, n: int) -> JobStarted:
    return new_event(JobStarted, job_id, correlation_id="corr", worker=f"w{n}")


async def _append(store: EventStore, n: int) -> list[int]:
    job = new_id("job")
    return list(
        await asyncio.gather(*(store.append(_started(job, i), expected=None) for i in range(n)))
    )


async def _take(reader: AsyncIterator[list[StoredEvent]], until: int) -> list[int]:
    seqs: list[int] = []

    async def take() -> None:
        async for batch in reader:
            seqs.extend(s.seq for s in batch)
            if seqs[-1] >= until:
                return

    await asyncio.wait_for(take(), timeout=10)
    return seqs


async def test_catches_up_in_bulk_then_follows(store: EventStore) -> None:
    first = await _append(store, 1500)
    async with contextlib.aclosing(store.read_batches(1, max_batch=400)) as reader:
        assert await _take(reader, max(first)) == list(range(1, 1501))
        more = await _append(store, 20)  # now through the ordered consumer
        assert await _take(reader, max(more)) == list(range(1501, 1521))


async def test_bulk_reader_reads_to_the_tail_and_stops(nc: NATS, store: EventStore) -> None:
    await _append(store, 700)
    bulk = await open_bulk_reader(nc, "CLINAI")
    assert bulk is not None
    try:
        seqs = [s.seq async for batch in bulk.batches(101, max_batch=250) for s in batch]
    finally:
        bulk.close()
    assert seqs == list(range(101, 701))


async def test_bulk_reader_past_the_tail_yields_nothing(nc: NATS, store: EventStore) -> None:
    await _append(store, 3)
    bulk = await open_bulk_reader(nc, "CLINAI")
    assert bulk is not None
    try:
        assert [b async for b in bulk.batches(4, max_batch=10)] == []
    finally:
        bulk.close()


async def test_without_a_bulk_reader_reads_through_nats_py(
    store: EventStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def none(*args: Any, **kwargs: Any) -> None:
        return None

    monkeypatch.setattr(events.store, "open_bulk_reader", none)
    seqs = await _append(store, 300)
    async with contextlib.aclosing(store.read_batches(51, max_batch=64)) as reader:
        assert await _take(reader, max(seqs)) == list(range(51, 301))


async def test_a_lost_bulk_connection_hands_over_where_it_stopped(
    store: EventStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = open_bulk_reader

    async def flaky(*args: Any, **kwargs: Any) -> BulkReader | None:
        bulk = await real(*args, **kwargs)
        assert bulk is not None
        batches = bulk.batches

        async def cut(start: int, *, max_batch: int) -> AsyncIterator[Sequence[StoredEvent]]:
            async for batch in batches(start, max_batch=max_batch):
                yield batch
                bulk.close()  # the connection goes after the first batch
                return

        monkeypatch.setattr(bulk, "batches", cut)
        return bulk

    monkeypatch.setattr(events.store, "open_bulk_reader", flaky)
    seqs = await _append(store, 2000)
    async with contextlib.aclosing(store.read_batches(1, max_batch=100)) as reader:
        assert await _take(reader, max(seqs)) == list(range(1, 2001))


async def test_messages_stored_without_headers_are_read(nc: NATS, store: EventStore) -> None:
    await _append(store, 2)
    await nc.jetstream().publish(
        "clinai.job.job_x.JobStarted", encode_event(_started("job_x", 9))
    )  # no Nats-Msg-Id: delivered as MSG, not HMSG
    await _append(store, 2)
    bulk = await open_bulk_reader(nc, "CLINAI")
    assert bulk is not None
    try:
        batches = [b async for b in bulk.batches(1, max_batch=10)]
    finally:
        bulk.close()
    assert [s.seq for b in batches for s in b] == [1, 2, 3, 4, 5]
    assert batches[0][2].event.aggregate_id == "job_x"


async def test_an_event_that_does_not_decode_raises(nc: NATS, store: EventStore) -> None:
    await _append(store, 5)
    await nc.jetstream().publish("clinai.job.job_x.JobStarted", b'{"type":"Nope"}')
    bulk = await open_bulk_reader(nc, "CLINAI")
    assert bulk is not None
    seqs: list[int] = []
    try:
        with pytest.raises(UndecodableEventError) as caught:
            async with asyncio.timeout(2):  # raised by the bulk reader, not after a timeout
                async for batch in bulk.batches(1, max_batch=100):
                    seqs.extend(s.seq for s in batch)
    finally:
        bulk.close()
    assert seqs == [1, 2, 3, 4, 5]  # the events before it are delivered first
    assert (caught.value.seq, caught.value.subject) == (6, "clinai.job.job_x.JobStarted")
    async with contextlib.aclosing(store.read_batches(1)) as reader:
        with pytest.raises(UndecodableEventError):
            await _take(reader, 6)

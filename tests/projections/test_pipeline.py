"""The pipelined applier (rebuild's replay) against the projector's batch-at-a-time path."""

from __future__ import annotations

import asyncpg
import pytest

from events import EventStore, StoredEvent
from projections import Projector
from projections._pipeline import CheckpointMovedError, PipelinedApplier
from projections.checkpoint import advance_checkpoint
from projections.db import connect
from projections.migrate import apply_migrations
from tests.projections._support import dump, running, stream_events, wait_checkpoint
from tests.projections._workload import append_workload


async def test_pipelined_batches_equal_the_projector(
    database_url: str, store: EventStore, db: asyncpg.Connection
) -> None:
    last = await append_workload(store, 3000, seed=3)
    async with running(Projector(database_url, store, max_batch=97)):
        await wait_checkpoint(database_url, last)
    events = await stream_events(store, last)
    conn = await connect(database_url, "piped")
    try:
        await apply_migrations(conn, "piped")
        # Odd batch sizes and a tiny row budget: rows are dropped and loaded again.
        applier = PipelinedApplier(conn, 0, max_rows=50)
        try:
            for start in range(0, len(events), 113):
                await applier.submit(events[start : start + 113])
            assert await applier.drain() == last
        finally:
            await applier.close()
    finally:
        await conn.close()
    assert await dump(db, "piped") == await dump(db, "read_model")


async def _logged_onto_empty_tables(
    store: EventStore, db: asyncpg.Connection, target_events: int, seed: int
) -> list[StoredEvent]:
    """A workload appended and read back, with the live tables made (and empty)."""
    events = await stream_events(store, await append_workload(store, target_events, seed=seed))
    await apply_migrations(db, "read_model")
    return events


async def test_a_moved_checkpoint_stops_the_applier(
    database_url: str, store: EventStore, db: asyncpg.Connection
) -> None:
    events = await _logged_onto_empty_tables(store, db, 300, seed=4)
    assert await advance_checkpoint(db, 0, 5) is None
    applier = PipelinedApplier(db, 0)
    try:
        await applier.submit(events[:100])
        with pytest.raises(CheckpointMovedError) as caught:
            await applier.drain()
        assert (caught.value.expected, caught.value.found) == (0, 5)
    finally:
        await applier.close()
    assert await db.fetchval("SELECT count(*) FROM jobs") == 0  # rolled back


async def test_batches_must_continue_in_order(
    database_url: str, store: EventStore, db: asyncpg.Connection
) -> None:
    events = await _logged_onto_empty_tables(store, db, 200, seed=5)
    applier = PipelinedApplier(db, 0)
    try:
        await applier.submit(events[:50])
        with pytest.raises(ValueError, match="already at"):
            await applier.submit(events[10:60])
        assert await applier.drain() == events[49].seq
    finally:
        await applier.close()

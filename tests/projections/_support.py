"""Helpers of the projection tests: run a projector until a sequence, dump tables."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import asyncpg

from events import EventStore, StoredEvent, UserCreated, new_id
from projections import Projector
from projections._rows import TABLES
from projections.watermark import ProjectionWatermark
from tests._events import new_event

__all__ = [
    "append_all",
    "assert_as_a_fresh_replay",
    "dump",
    "running",
    "stream_events",
    "user_created",
    "wait_checkpoint",
]


def user_created() -> UserCreated:
    """A new user's first event: an event of a fresh aggregate."""
    return new_event(UserCreated, new_id("usr"), actor="t", correlation_id="c", name="u")


async def wait_checkpoint(
    dsn: str, seq: int, *, schema: str = "read_model", timeout: float = 30
) -> None:
    async with await ProjectionWatermark.open(dsn, schema, resync_interval=0.2) as mark:
        if not await mark.wait_for(seq, timeout):
            raise AssertionError(f"projection stuck at {mark.checkpoint}, wanted {seq}")


@contextlib.asynccontextmanager
async def running(projector: Projector) -> AsyncIterator[asyncio.Task[None]]:
    """Run the projector in a task; stop it (gracefully) on exit."""
    stop = asyncio.Event()
    task = asyncio.create_task(projector.run(stop))
    try:
        yield task
    finally:
        stop.set()
        if not task.done():
            await asyncio.wait_for(task, 30)


async def dump(conn: asyncpg.Connection, schema: str) -> dict[str, list[tuple[Any, ...]]]:
    """Every read-model table's rows, sorted by key (the checkpoint included)."""
    out: dict[str, list[tuple[Any, ...]]] = {}
    for spec in TABLES:
        keys = ", ".join(f'"{k}"' for k in spec.key)
        rows = await conn.fetch(f"SELECT * FROM {schema}.{spec.name} ORDER BY {keys}")
        out[spec.name] = [tuple(r.values()) for r in rows]
    rows = await conn.fetch(f"SELECT * FROM {schema}.checkpoint")
    out["checkpoint"] = [tuple(r.values()) for r in rows]
    return out


async def assert_as_a_fresh_replay(
    dsn: str, store: EventStore, db: asyncpg.Connection, last: int
) -> dict[str, list[tuple[Any, ...]]]:
    """Checks that the live read model equals a fresh projection (schema `clean`) of the
    log up to `last`; returns the live one's dump."""
    async with running(Projector(dsn, store, schema="clean")):
        await wait_checkpoint(dsn, last, schema="clean")
    live = await dump(db, "read_model")
    assert live == await dump(db, "clean")
    return live


async def append_all(store: EventStore, events: list[Any]) -> int:
    seq = 0
    for event in events:
        seq = await store.append(event, expected=None)
    return seq


async def stream_events(store: EventStore, last: int) -> list[StoredEvent]:
    """Every event of the stream up to `last`."""
    out: list[StoredEvent] = []
    reader = store.read_batches(1)
    try:
        async for batch in reader:
            out.extend(batch)
            if out[-1].seq >= last:
                return out
    finally:
        await reader.aclose()
    return out

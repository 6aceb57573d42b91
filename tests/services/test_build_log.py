"""The build log's events (services/builder/_log.py) against a real NATS stream."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from nats.aio.client import Client as NATS

from events import BuildLogAppended, Event, EventStore, new_event_id, new_id
from services.builder._log import BuildLog
from tests._infra import wait_until


class _LateAcks(EventStore):
    """The real store, whose appends are acknowledged 0.2 s after the event is stored, as
    on a replicated stream under load (the stream leader waits for a follower)."""

    async def append(self, event: Event, *, expected: int | None) -> int:
        seq = await super().append(event, expected=expected)
        await asyncio.sleep(0.2)  # the acknowledgement on its way
        return seq


async def test_closing_the_log_while_a_flush_awaits_its_ack_ends_the_log_in_order(
    nc: NATS, tmp_path: Path
) -> None:
    """The log's timer flushed a chunk that is stored but not yet acknowledged when the
    build ends: closing the log waits for that flush, so the last chunk follows it.
    Cancelling it (as before) lost the chunk's sequence: the last append conflicted
    with the build's own chunk, the build was taken as superseded and never ended (a
    version stuck `building`, seen on the cluster's R3 stream)."""
    store = await _LateAcks.open(nc, stream="CLINAI")
    version_id = new_id("ver")

    def envelope() -> dict[str, Any]:
        return {
            "id": new_event_id(),
            "aggregate_id": version_id,
            "occurred_at": datetime.now(UTC),
            "actor": "service:builder",
            "correlation_id": "test",
        }

    async def one_stored() -> bool:
        return len((await store.read_aggregate("version", version_id)).events) == 1

    log = BuildLog(
        store,
        version_id=version_id,
        expected_seq=0,
        first_index=0,
        file=tmp_path / "build.log",
        envelope=envelope,
        flush_interval_s=0.02,
    )
    async with log:
        await log.write("one\n")
        await wait_until(one_stored, what="the timer's flush to be stored")
        await log.write("two\n")  # the build ends while that flush awaits its ack

    events = (await store.read_aggregate("version", version_id)).events
    chunks = [s.event for s in events]
    assert all(isinstance(c, BuildLogAppended) for c in chunks)
    assert [(c.index, c.text) for c in chunks] == [(0, "one\n"), (1, "two\n")]  # type: ignore[attr-defined]
    assert log.seq == events[-1].seq

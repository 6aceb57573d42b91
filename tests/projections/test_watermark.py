"""The projection watermark: read-your-writes and long polls."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime

from events import EventStore, UserCreated, new_event_id, new_id
from projections import Projector
from projections.watermark import ProjectionWatermark
from tests.projections._support import running


def _user() -> UserCreated:
    return UserCreated(
        id=new_event_id(),
        aggregate_id=new_id("usr"),
        occurred_at=datetime.now(UTC),
        actor="t",
        correlation_id="c",
        name="u",
    )


async def test_wait_for_returns_once_projected_and_times_out_otherwise(
    database_url: str, store: EventStore
) -> None:
    async with await ProjectionWatermark.open(database_url) as mark:
        assert mark.checkpoint == 0  # no schema yet
        seq = await store.append(_user(), expected=None)
        started = time.monotonic()
        assert not await mark.wait_for(seq, 0.2)  # no projector running
        assert time.monotonic() - started >= 0.2
        async with running(Projector(database_url, store)):
            assert await mark.wait_for(seq, 10)
            assert mark.checkpoint == seq
            assert await mark.wait_for(seq - 1, 0)  # already there: no wait

            # Long poll: wakes on the next change.
            waiting = asyncio.create_task(mark.wait_changed(seq, 10))
            second = await store.append(_user(), expected=None)
            assert await asyncio.wait_for(waiting, 10) == second
        assert await mark.wait_changed(second, 0.05) == second  # timeout: unchanged
        assert not await mark.wait_for(second + 1, 0.05)


async def test_a_new_watermark_reads_the_current_checkpoint(
    database_url: str, store: EventStore
) -> None:
    seq = await store.append(_user(), expected=None)
    async with running(Projector(database_url, store)):
        async with await ProjectionWatermark.open(database_url) as first:
            assert await first.wait_for(seq, 10)
    async with await ProjectionWatermark.open(database_url) as second:
        assert second.checkpoint == seq

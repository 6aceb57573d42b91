"""The projection watermark: read-your-writes and long polls."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from typing import Any

from events import EventStore, JobRequested, JobStarted, new_event_id, new_id
from projections import Projector
from projections.watermark import ProjectionWatermark
from tests.projections._support import running, user_created


async def test_wait_for_returns_once_projected_and_times_out_otherwise(
    database_url: str, store: EventStore
) -> None:
    async with await ProjectionWatermark.open(database_url) as mark:
        assert mark.checkpoint == 0  # no schema yet
        seq = await store.append(user_created(), expected=None)
        started = time.monotonic()
        assert not await mark.wait_for(seq, 0.2)  # no projector running
        assert time.monotonic() - started >= 0.2
        async with running(Projector(database_url, store)):
            assert await mark.wait_for(seq, 10)
            assert mark.checkpoint == seq
            assert await mark.wait_for(seq - 1, 0)  # already there: no wait
            waiting = asyncio.create_task(mark.wait_for(seq + 1, 10))
            second = await store.append(user_created(), expected=None)
            assert await asyncio.wait_for(waiting, 10)
        assert not await mark.wait_for(second + 1, 0.05)


async def test_a_new_watermark_reads_the_current_checkpoint(
    database_url: str, store: EventStore
) -> None:
    seq = await store.append(user_created(), expected=None)
    async with running(Projector(database_url, store)):
        async with await ProjectionWatermark.open(database_url) as first:
            assert await first.wait_for(seq, 10)
    async with await ProjectionWatermark.open(database_url) as second:
        assert second.checkpoint == seq


def _job_events(job: str) -> list[Any]:
    envelope = {
        "aggregate_id": job,
        "occurred_at": datetime.now(UTC),
        "actor": "t",
        "correlation_id": "c",
    }
    return [
        JobRequested(
            id=new_event_id(),
            **envelope,
            owner="usr_1",
            model_id="mdl_1",
            version_id="ver_1",
            input_key=f"inputs/{job}",
            input_filename="in.png",
        ),
        JobStarted(id=new_event_id(), **envelope, worker="w1"),
    ]


async def test_a_job_wait_sleeps_through_other_commits_and_wakes_on_its_jobs(
    database_url: str, store: EventStore
) -> None:
    job, other = new_id("job"), new_id("job")
    async with await ProjectionWatermark.open(database_url) as mark:
        async with running(Projector(database_url, store)):
            first = await store.append(user_created(), expected=None)
            assert await mark.wait_for(first, 10)
            seen = mark.checkpoint
            waiting = asyncio.create_task(mark.wait_job(job, seen, 10))
            other_seq = await store.append(_job_events(other)[0], expected=0)
            assert await mark.wait_for(other_seq, 10)
            await asyncio.wait({waiting}, timeout=0.2)
            assert not waiting.done()  # another job's commit
            started = time.monotonic()  # nor does a wait begun after that commit end at once
            assert await mark.wait_job(job, seen, 0.1) == other_seq
            assert time.monotonic() - started >= 0.1
            requested = await store.append(_job_events(job)[0], expected=0)
            assert await asyncio.wait_for(waiting, 10) >= requested
            # Its commit is already past `seen`: no wait.
            assert await mark.wait_job(job, seen, 10) == mark.checkpoint
            current = mark.checkpoint
            started = time.monotonic()
            assert await mark.wait_job(job, current, 0.1) == current  # timed out
            assert time.monotonic() - started >= 0.1
        mark.release_waiters()
        assert await mark.wait_job(job, current, 10) == current  # released: at once


async def test_commit_notices_say_which_jobs_moved(database_url: str, store: EventStore) -> None:
    job, other = new_id("job"), new_id("job")
    async with await ProjectionWatermark.open(database_url) as mark:
        async with running(Projector(database_url, store)):
            requested = await store.append(_job_events(job)[0], expected=0)
            assert await mark.wait_for(requested, 10)
            seen = mark.checkpoint
            assert mark.job_moved(job, seen, requested) is False  # nothing since

            other_seq = await store.append(_job_events(other)[0], expected=0)
            assert await mark.wait_for(other_seq, 10)
            assert mark.job_moved(job, seen, requested) is False  # another job moved
            assert mark.job_moved(other, seen, 0) is True

            started = await store.append(_job_events(job)[1], expected=requested)
            assert await mark.wait_for(started, 10)
            assert mark.job_moved(job, seen, requested) is True
            assert mark.job_moved(job, seen, requested, ended=True) is False  # only started
            assert mark.job_moved(job, seen, started) is False  # already seen
    async with await ProjectionWatermark.open(database_url) as fresh:
        # Started after those commits: it cannot say, so the caller reads the rows.
        assert fresh.job_moved(job, 0, requested) is None

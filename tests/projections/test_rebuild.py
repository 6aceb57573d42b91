"""Rebuild: replay into fresh tables, identical to the live ones, swapped in live."""

from __future__ import annotations

import asyncio

import asyncpg

from events import EventStore, new_id
from projections import Projector, queries
from projections.rebuild import rebuild
from tests._events import job_requested
from tests.projections._support import (
    append_all,
    assert_as_a_fresh_replay,
    dump,
    running,
    wait_checkpoint,
)
from tests.projections._workload import append_workload


async def _schemas(db: asyncpg.Connection) -> set[str]:
    rows = await db.fetch("SELECT nspname FROM pg_namespace WHERE nspname LIKE 'read_model%'")
    return {r["nspname"] for r in rows}


async def test_rebuild_equals_live(
    database_url: str, store: EventStore, db: asyncpg.Connection
) -> None:
    last = await append_workload(store, 4000, seed=1)
    projector = Projector(database_url, store)
    async with running(projector):
        await wait_checkpoint(database_url, last)
        live = await dump(db, "read_model")
        assert all(live[table] for table in live), "every table has rows"

        report = await rebuild(database_url, store)
        assert report.events == last and report.checkpoint == last
        assert report.events_per_s > 0
        assert await dump(db, "read_model") == live
        assert await _schemas(db) == {"read_model"}  # fresh renamed, backup dropped

        # The live projector writes its next batches into the swapped-in tables.
        more = await append_workload(store, 300, seed=2)
        await wait_checkpoint(database_url, more)
        assert projector.is_leader
    await assert_as_a_fresh_replay(database_url, store, db, more)


async def test_rebuild_while_events_keep_coming(
    database_url: str, store: EventStore, db: asyncpg.Connection
) -> None:
    await append_workload(store, 3000, seed=3)
    projector = Projector(database_url, store, max_batch=100)
    async with running(projector):
        appending = asyncio.create_task(append_workload(store, 2000, seed=4))
        report = await rebuild(database_url, store)
        last = await appending
        await wait_checkpoint(database_url, last)
    assert report.checkpoint > 0
    await assert_as_a_fresh_replay(database_url, store, db, last)


async def test_rebuild_without_a_live_schema(
    database_url: str, store: EventStore, db: asyncpg.Connection
) -> None:
    last = await append_workload(store, 200, seed=5)
    report = await rebuild(database_url, store)
    assert report.checkpoint == last
    assert await _schemas(db) == {"read_model"}
    await assert_as_a_fresh_replay(database_url, store, db, last)


async def test_a_jobs_input_url_is_projected_redacted_and_rebuilt(
    database_url: str, store: EventStore, db: asyncpg.Connection
) -> None:
    signed = "https://files.example/in.png?X-Amz-Signature=s3cr3t&X-Amz-Expires=600"
    shown = "https://files.example/in.png?X-Amz-Signature=***&X-Amz-Expires=***"
    by_url = job_requested(new_id("job"), "usr_a", input_key="", input_url=signed)
    uploaded = job_requested(new_id("job"), "usr_a")
    last = await append_all(store, [by_url, uploaded])

    async def input_urls() -> dict[str, str | None]:
        jobs = [await queries.get_job(db, job.aggregate_id) for job in (by_url, uploaded)]
        return {job.id: job.input_url for job in jobs if job is not None}

    async with running(Projector(database_url, store)):
        await wait_checkpoint(database_url, last)
        expected = {by_url.aggregate_id: shown, uploaded.aggregate_id: None}
        assert await input_urls() == expected
        await rebuild(database_url, store)
        assert await input_urls() == expected
    raw = await db.fetch("SELECT input_url FROM read_model.jobs")
    assert all("s3cr3t" not in (row["input_url"] or "") for row in raw)

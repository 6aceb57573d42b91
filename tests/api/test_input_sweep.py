"""The sweep of inputs whose job was never appended: it removes old inputs without a
job, and keeps young ones and those of jobs the log has (projected or not yet)."""

from __future__ import annotations

import os
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from events import EventStore, new_id
from projections.db import create_pool
from projections.queries import job_seqs
from projections.rebuild import rebuild
from services.api._input_sweep import InputSweep
from services.api._key_lock import job_held
from services.api.routes_uploads import UPLOAD_PREFIX, upload_job_id, upload_job_of_key
from services.blobstore import FileBlobStore
from services.domain import CommandContext, Commands
from tests._infra import migrate, wait_until

ADMIN = CommandContext(actor="usr_test", is_admin=True, correlation_id="test")
_HOUR = 3600.0


@pytest.fixture
async def pool(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    await migrate(database_url)
    pool = await create_pool(database_url)
    try:
        yield pool
    finally:
        await pool.close()


async def _input(blobs: FileBlobStore, key: str, age_s: float) -> None:
    await blobs.put_bytes(key, b"input", "text/plain")
    then = time.time() - age_s
    os.utime(blobs.root / "blobs" / key, (then, then))


async def _request(commands: Commands, job_id: str, key: str) -> None:
    await commands.request_job(
        ADMIN,
        job_id=job_id,
        owner=ADMIN.actor,
        model_id="mdl_x",
        version_id="ver_x",
        input_key=key,
        input_filename="in.txt",
        input_size_bytes=5,
        params={},
        timeout_s=30.0,
        webhook=None,
    )


async def test_the_sweep_removes_only_old_inputs_without_a_job(
    tmp_path: Path, store: EventStore, pool: asyncpg.Pool, database_url: str
) -> None:
    blobs = FileBlobStore(tmp_path / "blobs", "http://testserver", b"k" * 32)
    commands = Commands(store)
    await _input(blobs, "inputs/job_orphan", 2 * _HOUR)  # its append failed long ago
    await _input(blobs, "inputs/job_orphan2/in.txt", 2 * _HOUR)  # the older layout
    await _input(blobs, "inputs/job_young", 60)  # its append may still be under way
    await _input(blobs, "inputs/job_projected", 2 * _HOUR)  # in the log and projected
    await _request(commands, "job_projected", "inputs/job_projected")
    await rebuild(database_url, store)
    await _input(blobs, "inputs/job_logged", 2 * _HOUR)  # in the log, not yet projected
    await _request(commands, "job_logged", "inputs/job_logged")
    async with pool.acquire() as conn:
        assert await job_seqs(conn, ["job_projected", "job_logged"]) == {"job_projected": 1}
    await blobs.put_bytes("outputs/job_orphan/out.txt", b"out", "text/plain")

    sweep = InputSweep(blobs, store, pool, min_age_s=_HOUR, interval_s=600)
    assert await sweep.sweep() == 2
    assert await blobs.list("inputs/") == [
        "inputs/job_logged",
        "inputs/job_projected",
        "inputs/job_young",
    ]
    assert await blobs.list("outputs/") == ["outputs/job_orphan/out.txt"]  # inputs only
    assert await sweep.sweep() == 0


async def test_sweep_arguments(tmp_path: Path, store: EventStore, pool: asyncpg.Pool) -> None:
    blobs = FileBlobStore(tmp_path / "blobs", "http://testserver", b"k" * 32)
    with pytest.raises(ValueError, match="positive"):
        InputSweep(blobs, store, pool, min_age_s=0, interval_s=600)


async def test_a_failed_submissions_input_is_discarded_unless_the_log_has_the_job(
    tmp_path: Path, store: EventStore, pool: asyncpg.Pool
) -> None:
    blobs = FileBlobStore(tmp_path / "blobs", "http://testserver", b"k" * 32)
    sweep = InputSweep(blobs, store, pool, min_age_s=_HOUR, interval_s=600)
    await _input(blobs, "inputs/job_refused", 0)
    await _input(blobs, "inputs/job_landed", 0)  # its append's answer was lost, not it
    await _request(Commands(store), "job_landed", "inputs/job_landed")
    await sweep.discard("job_refused", connected=lambda: True)
    await sweep.discard("job_landed", connected=lambda: True)
    assert await blobs.list("inputs/") == ["inputs/job_landed"]

    # NATS is away: the input goes once it is back.
    nats_up = False
    await _input(blobs, "inputs/job_in_outage", 0)
    await sweep.discard("job_in_outage", connected=lambda: nats_up)
    assert await blobs.exists("inputs/job_in_outage")
    nats_up = True

    async def discarded() -> bool:
        return not await blobs.exists("inputs/job_in_outage")

    await wait_until(discarded, what="the input to be discarded", timeout_s=10)
    sweep.close()


async def test_an_unanswered_appends_input_stays_while_its_job_may_still_land(
    tmp_path: Path, store: EventStore, pool: asyncpg.Pool
) -> None:
    """An append that timed out may still be stored: on a NATS cluster the next stream
    leader commits it. The log is asked only once that is settled, so the job does not
    land without its input (it failed as `infrastructure`, input missing, after a kill
    -9 of the stream's leader in the cluster test)."""
    blobs = FileBlobStore(tmp_path / "blobs", "http://testserver", b"k" * 32)
    sweep = InputSweep(blobs, store, pool, min_age_s=_HOUR, interval_s=600, settle_s=0.5)
    await _input(blobs, "inputs/job_late", 0)
    await _input(blobs, "inputs/job_lost", 0)
    await sweep.discard("job_late", connected=lambda: True, unsettled=True)
    await sweep.discard("job_lost", connected=lambda: True, unsettled=True)
    assert await blobs.list("inputs/") == ["inputs/job_late", "inputs/job_lost"]
    await _request(Commands(store), "job_late", "inputs/job_late")  # committed late
    await wait_until(lambda: sweep.pending == 0, what="the discards to settle", timeout_s=10)
    assert await blobs.list("inputs/") == ["inputs/job_late"]  # the lost one's went
    sweep.close()


class _CountedAcquires:
    """The pool, counting the connections taken from it."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool
        self.acquired = 0

    def acquire(self) -> Any:
        self.acquired += 1
        return self._pool.acquire()


async def test_a_deferred_discard_leaves_the_input_of_a_job_a_retry_is_making(
    tmp_path: Path, store: EventStore, pool: asyncpg.Pool
) -> None:
    """A retry holds the job's id while it stores its input and appends: a discard
    deferred from the attempt before it tries while it holds it, leaves the input, and
    later finds the job in the log. (Before, it deleted the retry's input.)"""
    blobs = FileBlobStore(tmp_path / "blobs", "http://testserver", b"k" * 32)
    counted = _CountedAcquires(pool)
    sweep = InputSweep(blobs, store, counted, min_age_s=_HOUR, interval_s=600, settle_s=0.0)
    async with job_held(pool, "job_retried") as held:
        assert held
        await sweep.discard("job_retried", connected=lambda: True, unsettled=True)
        await _input(blobs, "inputs/job_retried", 0)  # the retry stores its input...
        await wait_until(lambda: counted.acquired >= 1, what="the discard to try")
        assert await blobs.exists("inputs/job_retried")
        await _request(Commands(store), "job_retried", "inputs/job_retried")  # ... appends
    await wait_until(lambda: sweep.pending == 0, what="the discard to end", timeout_s=10)
    assert await blobs.exists("inputs/job_retried")
    sweep.close()


async def test_the_upload_sweep_removes_unused_uploads_once_expired(
    tmp_path: Path, store: EventStore, pool: asyncpg.Pool
) -> None:
    blobs = FileBlobStore(tmp_path / "blobs", "http://testserver", b"k" * 32)
    used, unused, young = (new_id("upload") for _ in range(3))
    for upload_id, age in ((used, 2 * _HOUR), (unused, 2 * _HOUR), (young, 60)):
        await _input(blobs, f"uploads/{upload_id}/meta.json", age)
        await _input(blobs, f"uploads/{upload_id}/data", age)
    await _request(Commands(store), upload_job_id(used), f"uploads/{used}/data")

    sweep = InputSweep(
        blobs,
        store,
        pool,
        min_age_s=_HOUR,  # CLINAI_UPLOAD_TTL_S
        interval_s=600,
        prefix=UPLOAD_PREFIX,
        job_of=upload_job_of_key,
    )
    assert await sweep.sweep() == 2
    assert await blobs.list("uploads/") == sorted(
        f"uploads/{upload_id}/{name}"
        for upload_id in (used, young)
        for name in ("data", "meta.json")
    )

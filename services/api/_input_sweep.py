"""Inputs stored for jobs that were never appended.

A submission moves its input into the store (`inputs/<job>`), then appends the job's
`JobRequested`. When that append fails, `InputSweep.discard` removes the input unless
the log has the job (an append whose answer was lost may have been stored): at once,
or, while NATS is away (which is when appends fail), once it is back, for up to
`_RETRY_FOR_S`. What is left even so (the process stopped meanwhile), the sweep removes
later: every
`interval_s`, each API process removes the inputs older than `min_age_s` whose job
exists neither in the read models nor, asked one by one, in the log. (The read models
answer for almost every input in one query per chunk; the log has the last word, so a
lagging projection cannot cost a job its input.)

Direct uploads (`uploads/<upload>/...`) are swept the same way by a second instance:
`job_of` names the job an upload feeds, and `min_age_s` is their time to live.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

import asyncpg
import nats.errors

from events import EventStore, EventStoreError
from projections import queries
from services.api._key_lock import LOCK_UNAVAILABLE, job_held
from services.api._periodic import repeat
from services.blobstore import BlobError, BlobStore

__all__ = ["UNSETTLED", "InputSweep", "input_key"]

log = logging.getLogger("clinai.api")

_PREFIX = "inputs/"
_CHUNK = 5_000  # job ids per read-model query
_RETRY_FOR_S = 600.0  # a failed submission's input is discarded once NATS is back
_RETRY_EVERY_S = 1.0
# An append that got no answer is settled (stored or not, for good) this long after:
# a NATS cluster elects a new stream leader within seconds.
_SETTLE_S = 15.0
# Failures after which an append may still be stored.
UNSETTLED = (EventStoreError, nats.errors.Error, OSError, TimeoutError, asyncio.CancelledError)
_UNREACHABLE = (EventStoreError, nats.errors.Error, BlobError, OSError, TimeoutError)


def input_key(job_id: str, name: str | None = None) -> str:
    """Where a job's one input goes, or (`name`) one file of a typed job's."""
    return f"{_PREFIX}{job_id}" if name is None else f"{_PREFIX}{job_id}/{name}"


def _job_id(key: str) -> str:
    return key[len(_PREFIX) :].split("/", 1)[0]


async def _in_log(store: EventStore, job_id: str) -> bool:
    return bool((await store.read_aggregate("job", job_id)).events)


async def _discard(store: EventStore, blobs: BlobStore, job_id: str) -> bool:
    """Remove the job's input unless the log has the job; False if that could not be
    decided (NATS or the store unreachable)."""
    try:
        if not await _in_log(store, job_id):
            await blobs.delete(input_key(job_id))
            for key in await blobs.list(input_key(job_id) + "/"):  # a typed job's files
                await blobs.delete(key)
    except _UNREACHABLE:
        return False
    return True


class InputSweep:
    """Removes old inputs without a job; `run` repeats `sweep` until cancelled. The
    blobs swept are those under `prefix`; `job_of` names the job a key belongs to."""

    def __init__(
        self,
        blobs: BlobStore,
        store: EventStore,
        pool: asyncpg.Pool,
        *,
        min_age_s: float,
        interval_s: float,
        clock: Callable[[], float] = time.time,
        prefix: str = _PREFIX,
        job_of: Callable[[str], str] = _job_id,
        settle_s: float = _SETTLE_S,
    ) -> None:
        if min_age_s <= 0 or interval_s <= 0 or settle_s < 0:
            raise ValueError("InputSweep: min_age_s and interval_s must be positive")
        self._blobs = blobs
        self._store = store
        self._pool = pool
        self._min_age_s = min_age_s
        self._interval_s = interval_s
        self._clock = clock
        self._prefix = prefix
        self._job_of = job_of
        self._settle_s = settle_s
        self._pending: set[asyncio.Task[None]] = set()

    @property
    def pending(self) -> int:
        """Discards waiting in the background (for NATS, or for an outcome to settle)."""
        return len(self._pending)

    async def discard(
        self, job_id: str, *, connected: Callable[[], bool], unsettled: bool = False
    ) -> None:
        """After a failed append: remove the job's input unless the log has the job; if
        NATS is away now, try again in the background once it is back. `unsettled`: the
        append got no answer (timed out, connection lost), so it may still be stored: on
        a NATS cluster a new stream leader commits what the old one had replicated. The
        log is asked only `settle_s` later (in the background), not at once: else the
        job would land without its input."""
        if not unsettled and connected() and await _discard(self._store, self._blobs, job_id):
            return
        wait_s = self._settle_s if unsettled else 0.0
        task = asyncio.create_task(self._discard_later(job_id, connected, wait_s))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def _discard_later(
        self, job_id: str, connected: Callable[[], bool], wait_s: float
    ) -> None:
        await asyncio.sleep(wait_s)  # until the append's outcome is settled
        loop = asyncio.get_running_loop()
        deadline = loop.time() + _RETRY_FOR_S
        while loop.time() < deadline:
            await asyncio.sleep(_RETRY_EVERY_S)  # a polling period while NATS is away
            if connected() and await self._discard_unless_held(job_id):
                return
        # Left for the sweep.

    async def _discard_unless_held(self, job_id: str) -> bool:
        """`_discard`, unless a request is making the job now (a retry storing its
        inputs holds its id: `_key_lock`); False when it must be tried again."""
        try:
            async with job_held(self._pool, job_id) as held:
                return held and await _discard(self._store, self._blobs, job_id)
        except LOCK_UNAVAILABLE:
            return False  # Postgres is away: the next turn

    def close(self) -> None:
        """Stop the pending discards (the sweep will find their inputs)."""
        for task in self._pending:
            task.cancel()

    async def sweep(self) -> int:
        """One pass; the number of inputs removed."""
        old = await self._blobs.list_older(self._prefix, self._clock() - self._min_age_s)
        by_job: dict[str, list[str]] = {}
        for key in old:
            by_job.setdefault(self._job_of(key), []).append(key)
        orphans = await self._not_projected(list(by_job))
        removed = 0
        for job_id in orphans:
            if await _in_log(self._store, job_id):
                continue  # the projection lags; the job is real
            for key in by_job[job_id]:
                await self._blobs.delete(key)
                removed += 1
        if removed:
            log.warning(
                "removed %d blob(s) under %s older than %.0f s without a job",
                removed,
                self._prefix,
                self._min_age_s,
            )
        return removed

    async def _not_projected(self, job_ids: Sequence[str]) -> list[str]:
        missing: list[str] = []
        for start in range(0, len(job_ids), _CHUNK):
            chunk = job_ids[start : start + _CHUNK]
            async with self._pool.acquire() as conn:
                known: dict[str, Any] = await queries.job_seqs(conn, chunk)
            missing += [job_id for job_id in chunk if job_id not in known]
        return missing

    async def run(self) -> None:
        """Sweep every `interval_s` until cancelled."""
        errors = (*_UNREACHABLE, asyncpg.PostgresError, asyncpg.InterfaceError)
        await repeat(self.sweep, interval_s=self._interval_s, what="input sweep", errors=errors)

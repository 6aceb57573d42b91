"""One request at a time per job id that two requests can share, across API processes:
a Postgres advisory lock held by a transaction while a request stores the job's inputs
and appends it.

Two requests make the same job id under one Idempotency-Key, or by naming the same
upload (the job's id derives from it). A keyed request's blobs are committed so that
they never replace another's (`commit_keyed`), but a typed job also moves parts and
seals URLs into its folder with replacing writes: two requests at the same moment could
each store those before one of them was appended, and the job would run on the other's
files. Under this lock the second request waits for nothing: it is answered 409 at once,
and sent again once the first was answered it is replayed or refused from the log. A
background discard of a failed request's inputs takes the same lock, so that it never
deletes what a retry is storing.

The lock is a transaction's (`pg_try_advisory_xact_lock`): it goes with the transaction
or the session whatever happens (an error, a cancelled request, a killed API process,
Postgres restarting).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Final

import asyncpg

from services.api._unavailable import POSTGRES_DOWN
from services.api.problems import ApiError

__all__ = ["LOCK_UNAVAILABLE", "job_held", "one_request_per_job", "request_in_progress"]

_TRY_LOCK: Final = "SELECT pg_try_advisory_xact_lock(hashtextextended($1, 0))"
# Postgres away, or a connection it dropped (asyncpg's InterfaceError once it knows the
# connection is closed): taking the lock fails, and ending its transaction needs nothing,
# as the lock went with the session.
LOCK_UNAVAILABLE: Final = (*POSTGRES_DOWN, asyncpg.InterfaceError, OSError)


def request_in_progress() -> ApiError:
    return ApiError(
        409,
        "Request in progress",
        "another request for this job (under the same Idempotency-Key, or naming the same "
        "upload) is being processed; send this one again once that one is answered (or "
        "use a new key for a new request)",
    )


@contextlib.asynccontextmanager
async def job_held(pool: asyncpg.Pool, job_id: str) -> AsyncIterator[bool]:
    """Try to hold `job_id` while the block runs: True when held, False when another
    request holds it."""
    async with pool.acquire() as conn:
        transaction = conn.transaction()
        await transaction.start()
        try:
            yield bool(await conn.fetchval(_TRY_LOCK, f"job:{job_id}"))
        finally:
            with contextlib.suppress(*LOCK_UNAVAILABLE):
                await transaction.rollback()


@contextlib.asynccontextmanager
async def one_request_per_job(pool: asyncpg.Pool, job_id: str | None) -> AsyncIterator[None]:
    """Hold `job_id` while the block runs, or answer 409; nothing to hold for None (a
    fresh job id no other request can make)."""
    if job_id is None:
        yield
        return
    async with job_held(pool, job_id) as held:
        if not held:
            raise request_in_progress()
        yield

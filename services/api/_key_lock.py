"""One command at a time per Idempotency-Key, across API processes: a Postgres advisory
lock held by a transaction while the command stores its inputs and appends.

A keyed command's blobs are committed so that they never replace another request's
(`commit_keyed`), but a typed job also moves parts and seals URLs into its folder with
replacing writes: two different requests under one key at the same moment could each
store those before one of them was appended, and the job would run on the other's
files. Under this lock the second request waits for nothing: it is answered 409 at once,
and a retry after the first was answered is replayed or refused (422) from the log. The
lock is a transaction's (`pg_try_advisory_xact_lock`), so it goes with the transaction
whatever happens: an error, a cancelled request, a killed API process.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Final

import asyncpg

from events import event_id_for_key
from services.api.problems import ApiError
from services.domain.context import CommandContext

__all__ = ["one_request_per_key", "request_in_progress"]

_TRY_LOCK: Final = "SELECT pg_try_advisory_xact_lock(hashtextextended($1, 0))"


def request_in_progress() -> ApiError:
    return ApiError(
        409,
        "Request in progress",
        "another request with this Idempotency-Key is being processed; send this one "
        "again once that one is answered (or use a new key for a new request)",
    )


@contextlib.asynccontextmanager
async def one_request_per_key(pool: asyncpg.Pool, ctx: CommandContext) -> AsyncIterator[None]:
    """Hold the caller's Idempotency-Key while the block runs (nothing to hold without
    one); 409 when another request holds it."""
    if ctx.idempotency_key is None:
        yield
        return
    lock = event_id_for_key(ctx.actor, ctx.idempotency_key, "lock")
    async with pool.acquire() as conn, conn.transaction():
        if not await conn.fetchval(_TRY_LOCK, lock):
            raise request_in_progress()
        yield

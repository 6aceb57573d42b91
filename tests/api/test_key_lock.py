"""The lock on a job id two requests can make (`services.api._key_lock`), on a real
Postgres: one holder at a time, and Postgres dropping the holder's session does not
turn the request's answer into an error."""

from __future__ import annotations

import contextlib

import asyncpg
import pytest

from projections.db import create_pool
from services.api._key_lock import job_held, one_request_per_job
from services.api.problems import ApiError


async def test_a_job_id_is_held_by_one_request_at_a_time(database_url: str) -> None:
    pool = await create_pool(database_url)
    try:
        async with job_held(pool, "job_a") as first:
            assert first
            async with job_held(pool, "job_a") as second, job_held(pool, "job_b") as other:
                assert not second and other
            with pytest.raises(ApiError) as refused:
                async with one_request_per_job(pool, "job_a"):
                    pass
            assert refused.value.status == 409
        async with job_held(pool, "job_a") as again:  # let go at the block's end
            assert again
        async with one_request_per_job(pool, None):  # a fresh id: nothing held, no query
            pass
    finally:
        await pool.close()


async def _drop_the_others(url: str) -> None:
    admin = await asyncpg.connect(url)
    try:
        await admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE pid <> pg_backend_pid() AND datname = current_database()"
        )
    finally:
        await admin.close()


@pytest.mark.parametrize("answer", ["made", "refused"])
async def test_a_session_postgres_dropped_mid_request_leaves_the_answer_as_it_was(
    database_url: str, answer: str
) -> None:
    """Before, ending the transaction on the dropped connection raised asyncpg's
    InterfaceError: a 500 in place of a job made (or of the request's own 4xx)."""
    pool = await create_pool(database_url, reset_sessions=False)
    try:
        with pytest.raises(ApiError) if answer == "refused" else contextlib.nullcontext():
            async with one_request_per_job(pool, "job_a"):
                await _drop_the_others(database_url)
                if answer == "refused":
                    raise ApiError(422, "Invalid inputs", "the request's own answer")
    finally:
        await pool.close()
    pool = await create_pool(database_url)  # a new one: the old one's were all dropped
    try:
        async with job_held(pool, "job_a") as held:  # the lock went with the session
            assert held
    finally:
        await pool.close()

"""Migrations: idempotent, safe when several processes start at once."""

from __future__ import annotations

import asyncio
import re

import asyncpg
import pytest

from projections.migrate import apply_migrations, migration_files


async def test_apply_is_idempotent_and_concurrent_safe(database_url: str) -> None:
    conns = [await asyncpg.connect(database_url) for _ in range(4)]
    try:
        await asyncio.gather(*(apply_migrations(c, "read_model") for c in conns))
        await apply_migrations(conns[0], "read_model")
        applied = await conns[0].fetch(
            "SELECT name FROM read_model.schema_migrations ORDER BY name"
        )
        assert [r["name"] for r in applied] == [name for name, _ in migration_files()]
        tables = await conns[0].fetch(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'read_model' ORDER BY 1"
        )
        assert {r["tablename"] for r in tables} >= {"checkpoint", "jobs", "versions", "users"}
        # The session's search_path is left as it was.
        assert await conns[0].fetchval("SHOW search_path") == '"$user", public'
    finally:
        for conn in conns:
            await conn.close()


async def test_schema_names_are_checked(database_url: str) -> None:
    conn = await asyncpg.connect(database_url)
    try:
        with pytest.raises(ValueError, match="schema"):
            await apply_migrations(conn, "read_model; DROP TABLE x")
    finally:
        await conn.close()


async def test_no_index_of_jobs_names_what_a_jobs_end_writes(database_url: str) -> None:
    """A job's end updates its row in place (Postgres's HOT path: no index entry is
    written) only while no index, nor an index's predicate, names a column that update
    changes. Every job pays for one that does (the deadline index once named `status`)."""
    conn = await asyncpg.connect(database_url)
    try:
        await apply_migrations(conn, "read_model")
        rows = await conn.fetch(
            "SELECT indexname, indexdef FROM pg_indexes "
            "WHERE schemaname = 'read_model' AND tablename = 'jobs'"
        )
    finally:
        await conn.close()
    written_at_the_end = {
        "status", "finished_at", "result", "error_kind", "error_message", "traceback",
        "timings", "outputs", "updated_at", "last_seq", "attempt", "cancel_requested",
    }  # fmt: skip
    assert len(rows) >= 4
    for row in rows:
        named = set(re.findall(r"[a-z_]+", row["indexdef"].split(" USING ", 1)[1]))
        assert not named & written_at_the_end, (row["indexname"], named & written_at_the_end)

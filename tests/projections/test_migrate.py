"""Migrations: idempotent, safe when several processes start at once."""

from __future__ import annotations

import asyncio

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

"""Apply the plain-SQL migrations in `projections/migrations/` to one schema."""

from __future__ import annotations

from importlib import resources

import asyncpg

from projections.db import check_schema_name, lock_key

__all__ = ["apply_migrations", "migration_files"]


def migration_files() -> list[tuple[str, str]]:
    """(file name, SQL) of every migration, in name order."""
    folder = resources.files("projections") / "migrations"
    files = [f for f in folder.iterdir() if f.name.endswith(".sql")]
    return [(f.name, f.read_text(encoding="utf-8")) for f in sorted(files, key=lambda f: f.name)]


async def apply_migrations(conn: asyncpg.Connection, schema: str) -> None:
    """Create `schema` if missing and apply the migrations it lacks, in order, with
    `search_path` set to it; applied files are recorded in `<schema>.schema_migrations`.

    Idempotent; concurrent callers serialise on an advisory transaction lock."""
    schema = check_schema_name(schema)
    async with conn.transaction():
        await conn.execute(
            "SELECT pg_advisory_xact_lock(hashtextextended($1, 0))", lock_key("migrate", schema)
        )
        await conn.execute(f"CREATE SCHEMA IF NOT EXISTS {schema}")
        await conn.execute(
            f"CREATE TABLE IF NOT EXISTS {schema}.schema_migrations ("
            "name text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
        )
        applied = {
            r["name"] for r in await conn.fetch(f"SELECT name FROM {schema}.schema_migrations")
        }
        pending = [(name, sql) for name, sql in migration_files() if name not in applied]
        if not pending:
            return
        await conn.execute(f"SET LOCAL search_path TO {schema}")
        for name, sql in pending:
            await conn.execute(sql)
            await conn.execute(f"INSERT INTO {schema}.schema_migrations (name) VALUES ($1)", name)

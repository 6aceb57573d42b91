"""Connections to the read-model database: the schema name, jsonb codec, pools.

Read-model SQL names no schema: a connection's `search_path` (set as a server setting
when it is opened) picks the live schema, or a fresh one during a rebuild.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any, Final

import asyncpg
import orjson

__all__ = [
    "LIVE_SCHEMA",
    "NOTIFY_CHANNEL",
    "check_schema_name",
    "connect",
    "create_pool",
    "init_connection",
    "lock_key",
    "notify_channel",
]

LIVE_SCHEMA: Final = "read_model"
NOTIFY_CHANNEL: Final = "clinai_projection"

_SCHEMA_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")


def check_schema_name(schema: str) -> str:
    """`schema` if it is a plain lower-case identifier (it is spliced into DDL)."""
    if not _SCHEMA_NAME.fullmatch(schema):
        raise ValueError(
            f"schema must be a lower-case identifier ([a-z_][a-z0-9_]*, at most 63), got {schema!r}"
        )
    return schema


def lock_key(purpose: str, schema: str) -> str:
    """The text an advisory lock is keyed on (hashed by `hashtextextended` in SQL)."""
    return f"clinai.{purpose}.{schema}"


def notify_channel(schema: str) -> str:
    """The channel a schema's checkpoint advances are notified on (payload: the
    sequence): `clinai_projection` for the live schema, suffixed for any other."""
    if schema == LIVE_SCHEMA:
        return NOTIFY_CHANNEL
    return f"{NOTIFY_CHANNEL}_{check_schema_name(schema)}"


def _encode_jsonb(value: Any) -> bytes:
    return b"\x01" + orjson.dumps(value)


def _decode_jsonb(data: bytes) -> Any:
    return orjson.loads(data[1:])


async def init_connection(conn: asyncpg.Connection) -> None:
    """jsonb columns read and write Python values (binary format, orjson)."""
    await conn.set_type_codec(
        "jsonb",
        schema="pg_catalog",
        encoder=_encode_jsonb,
        decoder=_decode_jsonb,
        format="binary",
    )


async def connect(dsn: str, schema: str = LIVE_SCHEMA) -> asyncpg.Connection:
    """One connection with `search_path` set to `schema` and the jsonb codec."""
    conn: asyncpg.Connection = await asyncpg.connect(
        dsn, server_settings={"search_path": check_schema_name(schema)}
    )
    try:
        await init_connection(conn)
    except BaseException:
        await conn.close()
        raise
    return conn


async def _keep_session(conn: asyncpg.Connection) -> None:
    """Release without asyncpg's session reset (asyncpg still rolls back a transaction
    left open)."""


async def create_pool(
    dsn: str,
    schema: str = LIVE_SCHEMA,
    *,
    min_size: int = 2,
    max_size: int = 10,
    reset_sessions: bool = True,
    on_connect: Callable[[], None] | None = None,
) -> asyncpg.Pool:
    """The API's pool: every connection has `search_path` set to `schema` and the
    jsonb codec. Close it with `await pool.close()`.

    `reset_sessions=False` skips the reset query asyncpg sends on every release
    (advisory unlock, CLOSE ALL, UNLISTEN, RESET ALL): one round trip per query saved,
    for callers that only run plain queries and never change session state.
    `on_connect` is called for each new connection (after an outage: Postgres is back)."""

    async def init(conn: asyncpg.Connection) -> None:
        await init_connection(conn)
        if on_connect is not None:
            on_connect()

    pool = await asyncpg.create_pool(
        dsn,
        min_size=min_size,
        max_size=max_size,
        server_settings={"search_path": check_schema_name(schema)},
        init=init,
        reset=None if reset_sessions else _keep_session,
    )
    if pool is None:  # pragma: no cover - create_pool only returns None when not awaited
        raise RuntimeError("asyncpg.create_pool returned no pool")
    return pool

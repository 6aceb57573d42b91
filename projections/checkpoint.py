"""The projection's checkpoint: the last sequence applied, read and moved in the
transaction of the batch that applied the rows."""

from __future__ import annotations

import asyncpg

from projections.apply import PROJECTION

__all__ = ["advance_checkpoint", "read_checkpoint"]


async def read_checkpoint(conn: asyncpg.Connection) -> int:
    """The last applied sequence (0 before the first batch)."""
    value = await conn.fetchval("SELECT last_seq FROM checkpoint WHERE projection = $1", PROJECTION)
    return int(value or 0)


# Move the checkpoint from $3 to $2 (and NOTIFY $4 with $5), or change nothing when it is
# not at $3: the check, the write and the notice in one round trip at the end of a batch.
_FIRST_CHECKPOINT_SQL = (
    "WITH moved AS (INSERT INTO checkpoint (projection, last_seq) VALUES ($1, $2) "
    "ON CONFLICT (projection) DO UPDATE SET last_seq = EXCLUDED.last_seq "
    "WHERE checkpoint.last_seq = $3 RETURNING 1) "
)
_NEXT_CHECKPOINT_SQL = (
    "WITH moved AS (UPDATE checkpoint SET last_seq = $2 "
    "WHERE projection = $1 AND last_seq = $3 RETURNING 1) "
)


async def advance_checkpoint(
    conn: asyncpg.Connection,
    expected: int,
    last_seq: int,
    *,
    channel: str | None = None,
    notice: str = "",
) -> int | None:
    """In the batch's transaction: move the checkpoint from `expected` to `last_seq`
    and, with a `channel`, NOTIFY it with `notice` (sent when the transaction commits).
    Returns None when done, else the stored checkpoint that is not `expected` (nothing
    changed: roll back)."""
    sql = _FIRST_CHECKPOINT_SQL if expected == 0 else _NEXT_CHECKPOINT_SQL
    if channel is None:
        rows = await conn.fetch(sql + "SELECT 1 FROM moved", PROJECTION, last_seq, expected)
    else:
        rows = await conn.fetch(
            sql + "SELECT pg_notify($4, $5) FROM moved",
            PROJECTION,
            last_seq,
            expected,
            channel,
            notice,
        )
    return None if rows else await read_checkpoint(conn)

"""`clinai projections rebuild`: replay the whole stream into a fresh schema, then swap it
in for the live one atomically, while the live projector may be running.

The swap transaction takes the live schema's swap lock exclusively (the live projector
takes it shared in every batch, so it pauses), catches the fresh schema up to at least
the live checkpoint, renames live -> backup and fresh -> live, and notifies. The
projector's next batch resolves the table names again (Postgres re-plans its prepared
statements when a schema is renamed) and checks the checkpoint it continues from; the
backup is dropped afterwards.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import asyncpg
import msgspec

from events import EventStore, StoredEvent, UndecodableEventError
from projections._pipeline import PipelinedApplier
from projections.apply import PROJECTION
from projections.checkpoint import read_checkpoint
from projections.db import LIVE_SCHEMA, check_schema_name, connect, lock_key, notify_channel
from projections.migrate import apply_migrations
from projections.quarantine import UNSTORABLE, count_quarantined, isolate, skip_undecodable

__all__ = ["RebuildReport", "rebuild", "replay"]

log = logging.getLogger("clinai.rebuild")


class RebuildReport(msgspec.Struct, frozen=True, kw_only=True):
    schema: str  # the live schema, now holding the rebuilt tables
    events: int  # events replayed (bulk replay and the catch-up in the swap)
    seconds: float  # the bulk replay's wall time
    events_per_s: float
    checkpoint: int  # the live checkpoint right after the swap
    quarantined: int = 0  # events that could not be stored (see projections.quarantine)


async def replay(
    conn: asyncpg.Connection,
    store: EventStore,
    *,
    after: int,
    until: int,
    max_batch: int = 2_000,
) -> int:
    """Apply the events after sequence `after` up to `until` onto the connection's
    schema (whose checkpoint must be `after`), a transaction per batch, each batch's
    fold overlapping the previous one's write (see `projections._pipeline`); return
    the new checkpoint (`until`, or `after` when there was nothing to do). Events that
    cannot be stored are quarantined as the projector does (`projections.quarantine`)."""
    checkpoint = after
    while checkpoint < until:
        failed: int | None = None
        undecodable: UndecodableEventError | None = None
        applier = PipelinedApplier(conn, checkpoint)
        reader = store.read_batches(checkpoint + 1, max_batch=max_batch)
        try:
            try:
                async for batch in reader:
                    events = [e for e in batch if applier.submitted < e.seq <= until]
                    await applier.submit(events)
                    if applier.submitted >= until or (batch and batch[-1].seq >= until):
                        break
            except UndecodableEventError as err:
                undecodable = err  # after the events before it
            checkpoint = await applier.drain()
        except UNSTORABLE:
            failed = applier.submitted
        finally:
            await applier.close()
            await reader.aclose()
        if failed is not None:
            try:
                checkpoint = await isolate(
                    conn,
                    store,
                    after=await read_checkpoint(conn),
                    until=failed,
                    max_batch=max_batch,
                    on_quarantine=_report_quarantined,
                )
            except UndecodableEventError as err:
                undecodable = err
        if undecodable is not None and undecodable.seq <= until:
            if await skip_undecodable(conn, undecodable):
                log.error(
                    "rebuild: message seq %s (%s) is no event and is quarantined, skipped: %s",
                    undecodable.seq, undecodable.subject, undecodable.reason,
                )  # fmt: skip
            checkpoint = await read_checkpoint(conn)
        elif failed is None:
            return checkpoint
    return checkpoint


def _report_quarantined(stored: StoredEvent, error: str) -> None:
    log.error(
        "rebuild: event seq %s (%s %s) cannot be stored and is quarantined, skipped: %s",
        stored.seq, stored.event.type, stored.event.aggregate_id, error,
    )  # fmt: skip


async def rebuild(
    dsn: str,
    store: EventStore,
    schema: str = LIVE_SCHEMA,
    *,
    max_batch: int = 2_000,
    clock: Callable[[], float] = time.time,
) -> RebuildReport:
    """Replay the stream from sequence 1 into `<schema>_rebuild_<ts>`, then swap it in
    as `schema` (see the module docstring). On failure the fresh schema is dropped and
    the live one is left as it was."""
    schema = check_schema_name(schema)
    stamp = int(clock() * 1000)
    fresh = check_schema_name(f"{schema}_rebuild_{stamp}")
    backup = check_schema_name(f"{schema}_old_{stamp}")
    conn = await connect(dsn, fresh)
    try:
        await apply_migrations(conn, fresh)
        started = time.perf_counter()
        target = await store.stream_last_seq()
        checkpoint = await replay(conn, store, after=0, until=target, max_batch=max_batch)
        seconds = time.perf_counter() - started
        bulk = replayed = checkpoint
        async with conn.transaction():
            await conn.execute(
                "SELECT pg_advisory_xact_lock(hashtextextended($1, 0))", lock_key("swap", schema)
            )
            live_exists = await conn.fetchval(
                "SELECT to_regclass($1) IS NOT NULL", f"{schema}.checkpoint"
            )
            live = 0
            if live_exists:
                live = int(
                    await conn.fetchval(
                        f"SELECT coalesce(max(last_seq), 0) FROM {schema}.checkpoint "
                        "WHERE projection = $1",
                        PROJECTION,
                    )
                )
            if live > checkpoint:
                checkpoint = await replay(
                    conn, store, after=checkpoint, until=live, max_batch=max_batch
                )
                replayed = checkpoint
            if await conn.fetchval("SELECT to_regnamespace($1) IS NOT NULL", schema):
                await conn.execute(f"ALTER SCHEMA {schema} RENAME TO {backup}")
            quarantined = await count_quarantined(conn)
            await conn.execute(f"ALTER SCHEMA {fresh} RENAME TO {schema}")
            await conn.execute("SELECT pg_notify($1, $2)", notify_channel(schema), str(checkpoint))
        await conn.execute(f"DROP SCHEMA IF EXISTS {backup} CASCADE")
    except BaseException:
        if not conn.is_closed():
            await conn.execute(f"DROP SCHEMA IF EXISTS {fresh} CASCADE")
        raise
    finally:
        await conn.close()
    return RebuildReport(
        schema=schema,
        events=replayed,
        seconds=seconds,
        events_per_s=bulk / seconds if seconds > 0 else 0.0,
        checkpoint=checkpoint,
        quarantined=quarantined,
    )

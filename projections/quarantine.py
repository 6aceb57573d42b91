"""Events the read models cannot store are quarantined, never retried forever.

A batch whose transaction fails with an error that the same events would raise again
(`UNSTORABLE`: Postgres refusing a value, a constraint, text it cannot encode) would stop
the projection for everyone if it were retried. Instead its events are applied again one
per transaction (`isolate`); each one that still fails is recorded in the `quarantine`
table, in the same transaction as the checkpoint moving past it, and skipped. Its rows
stay as the events before it left them. The projector and the rebuild do the same, so a
rebuilt schema holds the same rows and the same quarantine.

A message a reader cannot decode at all (`UndecodableEventError`: a hand-made append, a
schema this version does not know) is quarantined the same way (`skip_undecodable`).

Text such events would carry is refused before it reaches the log (`events.text`); this
is what keeps the read models going when one got there all the same (an older writer, a
hand-made append, a bug).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

import asyncpg
import orjson

from events import EventStore, StoredEvent, UndecodableEventError, scrub_text
from events.subjects import PREFIX
from projections._pipeline import (
    BatchHook,
    CheckpointMovedError,
    PipelinedApplier,
    batch_transaction,
)
from projections.checkpoint import advance_checkpoint
from projections.notice import commit_notice

__all__ = ["UNSTORABLE", "OnQuarantine", "count_quarantined", "isolate", "skip_undecodable"]

# Errors that applying the same events again would raise again.
UNSTORABLE: Final = (
    asyncpg.DataError,  # SQLSTATE class 22, and asyncpg's own "invalid input for query argument"
    asyncpg.IntegrityConstraintViolationError,  # class 23
    UnicodeError,
    orjson.JSONEncodeError,
)

OnQuarantine = Callable[[StoredEvent, str], None]

_RECORD_SQL: Final = (
    "INSERT INTO quarantine (seq, subject, event_id, occurred_at, error) "
    "VALUES ($1, $2, $3, $4, $5) ON CONFLICT (seq) DO NOTHING"
)


async def isolate(
    conn: asyncpg.Connection,
    store: EventStore,
    *,
    after: int,
    until: int,
    max_batch: int = 2_000,
    swap_lock: str | None = None,
    channel: str | None = None,
    before_commit: BatchHook | None = None,
    after_commit: BatchHook | None = None,
    on_quarantine: OnQuarantine | None = None,
) -> int:
    """Apply the events after sequence `after` up to `until`, one per transaction, onto
    the connection's schema (whose checkpoint must be `after`); quarantine each one that
    cannot be stored. Returns the new checkpoint. Other errors propagate (a lost
    connection: the caller starts again from the stored checkpoint);
    CheckpointMovedError when the checkpoint is not the one expected."""
    checkpoint = after
    applier: PipelinedApplier | None = None
    reader = store.read_batches(after + 1, max_batch=max_batch)
    try:
        async for batch in reader:
            for stored in batch:
                if stored.seq <= checkpoint:
                    continue
                if stored.seq > until:
                    return checkpoint
                if applier is None:
                    applier = PipelinedApplier(
                        conn,
                        checkpoint,
                        swap_lock=swap_lock,
                        channel=channel,
                        before_commit=before_commit,
                        after_commit=after_commit,
                    )
                try:
                    await applier.submit([stored])
                    await applier.drain()
                except UNSTORABLE as err:
                    # The applier holds the event's fold: start afresh from the tables.
                    await applier.close()
                    applier = None
                    error = scrub_text(f"{type(err).__name__}: {err}")
                    await _record(conn, stored, error, checkpoint, swap_lock, channel)
                    if on_quarantine is not None:
                        on_quarantine(stored, error)
                checkpoint = stored.seq
            if checkpoint >= until:
                return checkpoint
    finally:
        if applier is not None:
            await applier.close()
        await reader.aclose()
    return checkpoint


async def _record(
    conn: asyncpg.Connection,
    stored: StoredEvent,
    error: str,
    expected: int,
    swap_lock: str | None,
    channel: str | None,
) -> None:
    """The quarantine row and the checkpoint moved past the event, in one transaction."""
    event = stored.event
    # As `events.subjects.event_subject` makes it, without refusing an odd id: it is stored.
    subject = scrub_text(f"{PREFIX}.{event.aggregate}.{event.aggregate_id}.{event.type}")
    async with batch_transaction(conn, swap_lock):
        await conn.execute(
            _RECORD_SQL, stored.seq, subject, scrub_text(event.id), event.occurred_at, error
        )
        found = await advance_checkpoint(
            conn, expected, stored.seq, channel=channel, notice=commit_notice(expected, [stored])
        )
        if found is not None:
            raise CheckpointMovedError(expected, found)


async def skip_undecodable(
    conn: asyncpg.Connection,
    bad: UndecodableEventError,
    *,
    swap_lock: str | None = None,
    channel: str | None = None,
) -> bool:
    """Quarantine the message a reader could not decode, if the checkpoint is right
    before it: True when done; False when the checkpoint is elsewhere (nothing changed:
    read on from the stored checkpoint, which leads back to it)."""
    seq = bad.seq
    async with batch_transaction(conn, swap_lock):
        found = await advance_checkpoint(
            conn, seq - 1, seq, channel=channel, notice=f"{seq} {seq - 1}"
        )
        if found is None:
            error = scrub_text(f"not an event: {bad.reason}")
            await conn.execute(_RECORD_SQL, seq, scrub_text(bad.subject), None, None, error)
    return found is None


async def count_quarantined(conn: asyncpg.Connection | asyncpg.Pool) -> int:
    """How many events the connection's schema has quarantined (0 before it exists)."""
    try:
        return int(await conn.fetchval("SELECT count(*) FROM quarantine"))
    except asyncpg.UndefinedTableError:
        return 0

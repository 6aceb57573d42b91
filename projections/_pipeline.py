"""Applying a run of batches with the fold of one overlapping the writes of those before.

Loading, folding and writing each batch inside its transaction would make Postgres wait
while Python folds and Python wait while Postgres writes. `PipelinedApplier` keeps the
rows it folded (as the batches submitted so far leave them) and folds the next batch
onto them while the previous batches' transactions run in tasks of their own (at most
`depth`, each starting once the one before committed); the fold yields to the event
loop every few events so those tasks keep Postgres busy. Only rows it neither holds nor
knows to be missing are loaded, once the transactions in flight committed (so the load
sees them): following the log, a job's later events find its row held. Each
transaction still checks the checkpoint it continues from and writes the rows and the
checkpoint together; the batches commit one at a time, in order, and nothing after a
failed one is written. One applier per connection; on any error it is done (`close()`
it).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any, Final

import asyncpg

from events import ClinaiError, StoredEvent
from projections._rows import TABLES, TableSpec
from projections._upsert import upsert_rows
from projections.apply import Tables, fold, rows_to_load
from projections.checkpoint import advance_checkpoint
from projections.notice import commit_notice

__all__ = [
    "BatchHook",
    "CheckpointMovedError",
    "PipelinedApplier",
    "batch_transaction",
]

BatchHook = Callable[[Sequence[StoredEvent]], Awaitable[None]]


@contextlib.asynccontextmanager
async def batch_transaction(conn: asyncpg.Connection, swap_lock: str | None) -> AsyncIterator[None]:
    """A batch's transaction, holding `swap_lock` shared when given. BEGIN and the lock
    go in one round trip: a simple query, so the key is a literal (lock keys are made of
    checked schema names; quoted all the same)."""
    if swap_lock is None:
        async with conn.transaction():
            yield
        return
    key = "'" + swap_lock.replace("'", "''") + "'"
    await conn.execute(f"BEGIN; SELECT pg_advisory_xact_lock_shared(hashtextextended({key}, 0))")
    try:
        yield
    except BaseException:
        if not conn.is_closed():  # else the transaction went with the session
            with contextlib.suppress(asyncpg.PostgresError, asyncpg.InterfaceError, OSError):
                await asyncio.shield(conn.execute("ROLLBACK"))
        raise
    await conn.execute("COMMIT")


_SPECS: Final = {spec.name: spec for spec in TABLES}
_FOLD_CHUNK: Final = 64  # events folded between two turns of the event loop

Writes = list[tuple[TableSpec, list[tuple[Any, ...]]]]


class CheckpointMovedError(ClinaiError):
    """The stored checkpoint is not the one the batch continues from."""

    def __init__(self, expected: int, found: int) -> None:
        super().__init__(f"expected checkpoint {expected}, found {found}")
        self.expected = expected
        self.found = found


class PipelinedApplier:
    """`submit()` batches in order (each continuing the last), then `drain()` for the
    checkpoint of the last one committed. `max_rows` bounds the rows held between
    batches (past it they are dropped and loaded again as needed).

    Each transaction takes `swap_lock` shared (when given), runs `before_commit` after
    the rows and NOTIFYs `channel` with the checkpoint (when given); `after_commit` runs
    once it committed, before the next batch's transaction starts."""

    def __init__(
        self,
        conn: asyncpg.Connection,
        checkpoint: int,
        *,
        max_rows: int = 50_000,
        depth: int = 1,
        swap_lock: str | None = None,
        channel: str | None = None,
        before_commit: BatchHook | None = None,
        after_commit: BatchHook | None = None,
    ) -> None:
        if max_rows < 1:
            raise ValueError(f"max_rows must be at least 1, got {max_rows}")
        if depth < 1:
            raise ValueError(f"depth must be at least 1, got {depth}")
        self._conn = conn
        self._max_rows = max_rows
        self._depth = depth
        self._swap_lock = swap_lock
        self._channel = channel
        self._before_commit = before_commit
        self._after_commit = after_commit
        self._tables: Tables = {}
        self._absent: dict[str, set[str]] = {}  # ids loaded and not found
        self._held = 0
        self._in_flight: list[asyncio.Task[int]] = []  # oldest first, each awaits the one before
        self.submitted = checkpoint  # the last sequence folded and sent to be written
        self.committed = checkpoint

    async def submit(self, events: Sequence[StoredEvent]) -> None:
        """Fold `events` (after `submitted`, in order) and queue their transaction
        behind the ones in flight (at most `depth`). Raises the error of a batch before."""
        if not events:
            return
        if events[0].seq <= self.submitted:
            raise ValueError(f"batch starts at {events[0].seq}, already at {self.submitted}")
        if self._held > self._max_rows:
            self._tables, self._absent, self._held = {}, {}, 0
        missing = self._missing(events)
        if missing:
            await self._settle()
            await self._load(missing)
        touched: set[tuple[str, Any]] = set()
        for start in range(0, len(events), _FOLD_CHUNK):
            touched |= fold(events[start : start + _FOLD_CHUNK], self._tables)
            await asyncio.sleep(0)
        writes = self._writes(touched)
        self._held = sum(len(rows) for rows in self._tables.values())
        await self._settle(keep=self._depth - 1)
        before = self._in_flight[-1] if self._in_flight else None
        expected, self.submitted = self.submitted, events[-1].seq
        self._in_flight.append(asyncio.ensure_future(self._write(before, events, writes, expected)))
        await asyncio.sleep(0)

    @property
    def in_flight(self) -> asyncio.Task[int] | None:
        """The last transaction queued, if any: done once every batch committed or one
        failed (to wait on along with other things)."""
        return self._in_flight[-1] if self._in_flight else None

    async def drain(self) -> int:
        """Wait for the batches in flight; return the last committed sequence."""
        await self._settle()
        return self.committed

    async def close(self) -> None:
        """Stop (cancel the transactions in flight, if any: they roll back)."""
        tasks, self._in_flight = self._in_flight, []
        for task in reversed(tasks):
            task.cancel()
        for task in tasks:
            with contextlib.suppress(BaseException):
                await task

    def _missing(self, events: Sequence[StoredEvent]) -> dict[str, list[str]]:
        missing: dict[str, list[str]] = {}
        for table, ids in rows_to_load(events).items():
            held = self._tables.get(table, {})
            absent = self._absent.get(table, ())
            wanted = [i for i in ids if i not in held and i not in absent]
            if wanted:
                missing[table] = wanted
        return missing

    async def _load(self, missing: dict[str, list[str]]) -> None:
        for table, ids in missing.items():
            records = await self._conn.fetch(_SPECS[table].load_sql, ids)
            held = self._tables.setdefault(table, {})
            for r in records:
                held[r["id"]] = dict(r.items())
            # Only this applier's writes could create them, and those it holds.
            self._absent.setdefault(table, set()).update(i for i in ids if i not in held)

    def _writes(self, touched: set[tuple[str, Any]]) -> Writes:
        by_table: dict[str, list[tuple[Any, ...]]] = {}
        for name, key in touched:
            by_table.setdefault(name, []).append(_SPECS[name].values(self._tables[name][key]))
        return [(spec, by_table[spec.name]) for spec in TABLES if spec.name in by_table]

    async def _settle(self, keep: int = 0) -> None:
        """Wait until at most `keep` transactions are in flight."""
        while len(self._in_flight) > keep:
            self.committed = await self._in_flight[0]
            del self._in_flight[0]

    async def _write(
        self,
        before: asyncio.Task[int] | None,
        events: Sequence[StoredEvent],
        writes: Writes,
        expected: int,
    ) -> int:
        if before is not None:
            await before  # its error is this one's: nothing after a failed batch is written
        conn, last = self._conn, events[-1].seq
        async with batch_transaction(conn, self._swap_lock):
            for spec, rows in writes:
                await upsert_rows(conn, spec, rows)
            if self._before_commit is not None:
                await self._before_commit(events)
            found = await advance_checkpoint(
                conn,
                expected,
                last,
                channel=self._channel,
                notice=commit_notice(expected, events),
            )
            if found is not None:
                raise CheckpointMovedError(expected, found)
        self.committed = last
        if self._after_commit is not None:
            await self._after_commit(events)
        return last

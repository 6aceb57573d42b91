"""The projector: the stream, in order, onto the read models, one batch per transaction.

Only one projector writes a schema: the leader holds a Postgres session advisory lock on
its dedicated connection; others wait as standbys and take over when it goes away. Each
batch's transaction takes a shared swap lock (a rebuild takes it exclusively to swap
schemas), checks the checkpoint is still the one it continues from (else it re-reads the
stream from the stored checkpoint), writes the rows, the checkpoint and a NOTIFY.

A transaction costs Postgres and the projector about as much for one event as for a
hundred, so while events of several aggregates come in together (concurrent jobs), a
batch starts at most every `busy_interval_s` and the events arriving while it is held
commit with it, not with the batch after it: an event waits at most one interval. A
batch of one aggregate's events (a job run on its own) is never held back, nor is a
full batch (a backlog being read). One that ends an owner's only job in flight
(`projections.jobs_in_flight`: someone waits for it while another owner floods) is held
a tenth of the interval at most, also when that end arrives while a batch is held.

A batch that fails with an error its events would raise again (Postgres refusing a
value) is applied again one event per transaction, and each event that still fails is
quarantined and skipped (`projections.quarantine`): the projector never wedges on one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Sequence
from typing import Any, Final

import asyncpg

from events import ClinaiError, EventStore, StoredEvent, UndecodableEventError
from projections._pipeline import (
    BatchHook,
    CheckpointMovedError,
    PipelinedApplier,
)
from projections.checkpoint import read_checkpoint
from projections.db import (
    LIVE_SCHEMA,
    check_schema_name,
    init_connection,
    lock_key,
    notify_channel,
)
from projections.jobs_in_flight import JobsInFlight
from projections.migrate import apply_migrations
from projections.quarantine import UNSTORABLE, isolate, skip_undecodable

__all__ = ["BatchHook", "Projector"]

log = logging.getLogger("clinai.projector")

_LOCK_SQL: Final = "SELECT pg_try_advisory_lock(hashtextextended($1, 0))"
_ASYNC_COMMIT_SQL: Final = "SET synchronous_commit TO off"
_RELEASE_SQL: Final = "SELECT pg_advisory_unlock_all(); RESET synchronous_commit"


# A batch that ends an owner's only job in flight is held this share of the interval at
# most: with many owners each running one job, most batches end one, and transactions
# still start at most 1 / (interval x share) a second.
_LONE_END_HOLD: Final = 0.1


class _Reseek(ClinaiError):
    """The stored checkpoint moved under us (a rebuild swapped schemas): re-read."""

    def __init__(self, checkpoint: int) -> None:
        super().__init__(f"checkpoint is {checkpoint}")
        self.checkpoint = checkpoint


class _Isolate(ClinaiError):
    """A batch up to `until` holds an event the read models cannot store."""

    def __init__(self, until: int) -> None:
        super().__init__(f"an event up to {until} cannot be stored")
        self.until = until


class Projector:
    """`await Projector(dsn_or_pool, store).run(stop)` until `stop` is set.

    `pool_or_dsn`: a DSN (the projector opens its own connection) or a pool (it holds one
    connection for the whole run). Hooks run inside (`before_commit`, after the rows are
    written) and after (`after_commit`) each batch's transaction; they exist for tests."""

    def __init__(
        self,
        pool_or_dsn: asyncpg.Pool | str,
        store: EventStore,
        schema: str = LIVE_SCHEMA,
        *,
        max_batch: int = 2_000,
        busy_interval_s: float = 0.02,
        standby_poll: float = 0.2,
        before_commit: BatchHook | None = None,
        after_commit: BatchHook | None = None,
    ) -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch must be at least 1, got {max_batch}")
        if busy_interval_s < 0:
            raise ValueError(f"busy_interval_s must not be negative, got {busy_interval_s}")
        if standby_poll <= 0:
            raise ValueError(f"standby_poll must be positive, got {standby_poll}")
        self._target = pool_or_dsn
        self._store = store
        self.schema = check_schema_name(schema)
        self._max_batch = max_batch
        self._busy_interval_s = busy_interval_s
        self._last_start = -busy_interval_s  # loop time the last batch was submitted
        self._jobs = JobsInFlight()
        self._standby_poll = standby_poll
        self._before_commit = before_commit
        self._after_commit = after_commit
        self._channel = notify_channel(self.schema)
        self.is_leader = False
        self.checkpoint = 0  # the last sequence this projector committed (or found)
        self.batches = 0
        self.quarantined = 0  # events this projector quarantined (see projections.quarantine)

    async def run(self, stop: asyncio.Event | None = None) -> None:
        """Wait for leadership, then project until `stop` is set (or the task is
        cancelled). Errors (a lost connection, a failing hook) propagate; the next
        `run` resumes from the checkpoint."""
        stop = stop or asyncio.Event()
        async with self._connection() as conn:
            if not await self._lead(conn, stop):
                return
            try:
                await apply_migrations(conn, self.schema)
                # The tables are derived from the log, and each batch commits its rows with
                # the checkpoint: a commit lost in a crash is re-projected from the
                # checkpoint that survived. So a commit need not wait for the WAL flush
                # (which costs an fsync per batch and competes with every other fsync).
                await conn.execute(_ASYNC_COMMIT_SQL)
                await self._project(conn, stop)
            finally:
                self.is_leader = False

    @contextlib.asynccontextmanager
    async def _connection(self) -> AsyncIterator[asyncpg.Connection]:
        if isinstance(self._target, str):
            conn: asyncpg.Connection = await asyncpg.connect(
                self._target, server_settings={"search_path": self.schema}
            )
            try:
                await init_connection(conn)
                yield conn
            finally:
                # Closing ends the session: its advisory lock and any open transaction go.
                conn.terminate()
        else:
            async with self._target.acquire() as pooled:
                await pooled.execute(f"SET search_path TO {self.schema}")
                try:
                    yield pooled
                finally:
                    with contextlib.suppress(Exception):
                        await asyncio.shield(pooled.execute(_RELEASE_SQL))

    async def _lead(self, conn: asyncpg.Connection, stop: asyncio.Event) -> bool:
        key = lock_key("projector", self.schema)
        while not stop.is_set():
            if await conn.fetchval(_LOCK_SQL, key):
                self.is_leader = True
                return True
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self._standby_poll)
        return False

    async def _project(self, conn: asyncpg.Connection, stop: asyncio.Event) -> None:
        swap_lock = lock_key("swap", self.schema)
        stopping: asyncio.Future[object] = asyncio.ensure_future(stop.wait())
        try:
            while not stop.is_set():
                self.checkpoint = await read_checkpoint(conn)
                reader: AsyncGenerator[list[StoredEvent], None] = self._store.read_batches(
                    self.checkpoint + 1, max_batch=self._max_batch
                )
                isolate_until: int | None = None
                try:
                    try:
                        await self._follow(conn, reader, stopping, swap_lock)
                    except _Reseek as reseek:
                        self.checkpoint = reseek.checkpoint
                        self._jobs = JobsInFlight()  # the ends skipped are not seen
                    except _Isolate as failed:
                        isolate_until = failed.until
                    finally:
                        await reader.aclose()
                    if isolate_until is not None:
                        await self._isolate(conn, swap_lock, isolate_until)
                except UndecodableEventError as bad:
                    await self._skip(conn, swap_lock, bad)
        finally:
            stopping.cancel()

    async def _skip(
        self, conn: asyncpg.Connection, swap_lock: str, bad: UndecodableEventError
    ) -> None:
        """Quarantine a message that is no event: every event before it is committed
        (`_follow` drained, `isolate` commits one by one)."""
        if await skip_undecodable(conn, bad, swap_lock=swap_lock, channel=self._channel):
            self._on_quarantine(bad.seq, bad.subject, f"not an event: {bad.reason}")

    async def _isolate(self, conn: asyncpg.Connection, swap_lock: str, until: int) -> None:
        """Apply the events of the failed batches one by one, quarantining what cannot
        be stored; then the next turn goes on in batches from the stored checkpoint."""
        try:
            await isolate(
                conn,
                self._store,
                after=await read_checkpoint(conn),
                until=until,
                max_batch=self._max_batch,
                swap_lock=swap_lock,
                channel=self._channel,
                before_commit=self._before_commit,
                after_commit=self._committed,
                on_quarantine=self._quarantined,
            )
        except CheckpointMovedError:
            pass  # a rebuild swapped schemas: the next turn reads the stored checkpoint

    def _quarantined(self, stored: StoredEvent, error: str) -> None:
        event = stored.event
        self._on_quarantine(stored.seq, f"{event.type} {event.aggregate_id}", error)

    def _on_quarantine(self, seq: int, what: str, error: str) -> None:
        self.checkpoint = seq
        self.quarantined += 1
        log.error(
            "projector: event seq %s (%s) cannot be stored and is quarantined, skipped: "
            "%s (see the quarantine table)",
            seq, what, error,
        )  # fmt: skip

    async def _follow(
        self,
        conn: asyncpg.Connection,
        reader: AsyncIterator[list[StoredEvent]],
        stopping: asyncio.Future[object],
        swap_lock: str,
    ) -> None:
        """Apply batches until `stopping`: each one's fold overlaps the previous one's
        transaction (`PipelinedApplier`), and rows the applier already holds are not
        loaded again (following the log, a job's later events find its row held)."""
        applier = PipelinedApplier(
            conn,
            self.checkpoint,
            swap_lock=swap_lock,
            channel=self._channel,
            before_commit=self._before_commit,
            after_commit=self._committed,
        )
        receiving: asyncio.Future[list[StoredEvent]] | None = None
        try:
            while True:
                if receiving is None:
                    receiving = asyncio.ensure_future(anext(reader))
                waiters: list[asyncio.Future[Any]] = [receiving, stopping]
                if applier.in_flight is not None:
                    waiters.append(applier.in_flight)
                await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
                if applier.in_flight is not None and applier.in_flight.done():
                    await self._pipelined(applier, applier.drain())  # surface its error now
                if not receiving.done():
                    if stopping.done():
                        break
                    continue
                if (failure := receiving.exception()) is not None:
                    # The reader ends here (a message it cannot decode): commit what it gave.
                    await self._pipelined(applier, applier.drain())
                    raise failure
                batch, receiving = receiving.result(), None
                batch, receiving = await self._hold(batch, reader, stopping)
                self._last_start = asyncio.get_running_loop().time()
                await self._pipelined(
                    applier, applier.submit([e for e in batch if e.seq > applier.submitted])
                )
            # Stopping: let the batch in flight commit.
            await self._pipelined(applier, applier.drain())
        finally:
            if receiving is not None and not receiving.done():
                receiving.cancel()
                with contextlib.suppress(asyncio.CancelledError, StopAsyncIteration):
                    await receiving
            await applier.close()

    async def _hold(
        self,
        batch: list[StoredEvent],
        reader: AsyncIterator[list[StoredEvent]],
        stopping: asyncio.Future[object],
    ) -> tuple[list[StoredEvent], asyncio.Future[list[StoredEvent]] | None]:
        """Hold a batch of several aggregates' events until `busy_interval_s` after the
        last batch started, adding what the reader hands over meanwhile (see the module
        docstring). Returns the batch, and the reader's next batch when it did not fit
        (or is still to come)."""
        lone_end = self._jobs.ends_a_lone_job(batch)
        if len(batch) >= self._max_batch or not _several_aggregates(batch):
            return batch, None
        loop = asyncio.get_running_loop()
        until = self._last_start + self._busy_interval_s
        soon = self._last_start + self._busy_interval_s * _LONE_END_HOLD
        if lone_end:
            until = soon
        while (remaining := until - loop.time()) > 0 and not stopping.done():
            receiving = asyncio.ensure_future(anext(reader))
            waiters: list[asyncio.Future[Any]] = [receiving, stopping]
            try:
                await asyncio.wait(waiters, timeout=remaining, return_when=asyncio.FIRST_COMPLETED)
            except BaseException:  # cancelled: the reader is closed next, not mid-read
                receiving.cancel()
                await asyncio.wait([receiving])
                raise
            if not receiving.done() or receiving.exception() is not None:
                return batch, receiving  # the interval is over, or the reader failed
            more = receiving.result()
            if len(batch) + len(more) > self._max_batch:
                return batch, receiving
            batch = batch + more
            if self._jobs.ends_a_lone_job(more):
                until = min(until, soon)  # someone waits for that job
        return batch, None

    async def _committed(self, events: Sequence[StoredEvent]) -> None:
        self.checkpoint = events[-1].seq
        self.batches += 1
        if self._after_commit is not None:
            await self._after_commit(events)

    @staticmethod
    async def _pipelined(applier: PipelinedApplier, step: Awaitable[object]) -> None:
        try:
            await step
        except CheckpointMovedError as moved:
            raise _Reseek(moved.found) from moved
        except UNSTORABLE as err:
            raise _Isolate(applier.submitted) from err


def _several_aggregates(batch: Sequence[StoredEvent]) -> bool:
    first = batch[0].event.aggregate_id
    return any(stored.event.aggregate_id != first for stored in batch)

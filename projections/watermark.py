"""How far the projection has got, for read-your-writes and long polls.

One LISTEN connection on the schema's notify channel keeps the current checkpoint; a
periodic re-read covers missed notifications, and a lost connection is reopened.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import heapq
import itertools
from collections.abc import Iterable
from types import TracebackType
from typing import Any

import asyncpg

from projections.apply import PROJECTION
from projections.db import LIVE_SCHEMA, check_schema_name, notify_channel
from projections.notice import Commit, parse_notice

__all__ = ["ProjectionWatermark"]

_CHECKPOINT_SQL = "SELECT last_seq FROM checkpoint WHERE projection = $1"
_COMMITS_KEPT = 4096  # recent commit notices, for `job_moved` and `changed`


class ProjectionWatermark:
    """`async with await ProjectionWatermark.open(dsn) as mark: await mark.wait_for(seq, 5)`.

    `checkpoint` is the last sequence known projected. `wait_for(seq, timeout)` is True
    once it reaches `seq`; `wait_job(job_id, after, timeout)` returns once a commit may
    have changed a job's row, for long polls. A wait is a future woken by the commit it
    waits for, not by every commit: hundreds wait at once under load."""

    def __init__(
        self, dsn: str, schema: str = LIVE_SCHEMA, *, resync_interval: float = 2.0
    ) -> None:
        if resync_interval <= 0:
            raise ValueError(f"resync_interval must be positive, got {resync_interval}")
        self._dsn = dsn
        self.schema = check_schema_name(schema)
        self._channel = notify_channel(self.schema)
        self._resync_interval = resync_interval
        self._checkpoint = 0
        self._commits: collections.deque[Commit] = collections.deque(maxlen=_COMMITS_KEPT)
        # wait_for: (seq, order, waiter) in a heap, the lowest seq first
        self._waiters: list[tuple[int, int, asyncio.Future[None]]] = []
        self._order = itertools.count()
        self._timed_out = 0  # waiters in the heap that are done with
        self._job_waiters: dict[str, set[asyncio.Future[None]]] = {}
        self._conn: asyncpg.Connection | None = None
        self._task: asyncio.Task[None] | None = None
        self._lost = asyncio.Event()
        self._released = False

    @classmethod
    async def open(
        cls, dsn: str, schema: str = LIVE_SCHEMA, *, resync_interval: float = 2.0
    ) -> ProjectionWatermark:
        mark = cls(dsn, schema, resync_interval=resync_interval)
        await mark.start()
        return mark

    @property
    def checkpoint(self) -> int:
        return self._checkpoint

    async def start(self) -> None:
        """LISTEN, read the checkpoint, and keep both fresh in a background task."""
        if self._task is not None:
            raise RuntimeError("the watermark is already started")
        await self._connect()
        self._task = asyncio.create_task(self._maintain(), name="projection-watermark")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self._disconnect()

    async def __aenter__(self) -> ProjectionWatermark:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    async def wait_for(self, seq: int, timeout: float) -> bool:
        """True as soon as the projection has reached `seq`; False after `timeout` s."""
        if self._checkpoint < seq and not self._released and timeout > 0:
            waiter = asyncio.get_running_loop().create_future()
            heapq.heappush(self._waiters, (seq, next(self._order), waiter))
            await _until(waiter, timeout)
            if self._checkpoint < seq:
                self._forget_timed_out()
        return self._checkpoint >= seq

    async def wait_job(self, job_id: str, after: int, timeout: float) -> int:
        """The checkpoint once a commit past checkpoint `after` may have changed
        `job_id`'s row (its notice names the job, or does not say which jobs it
        changed), or the current checkpoint after `timeout` s."""
        if self._released or timeout <= 0 or self.job_moved(job_id, after, 0) is not False:
            return self._checkpoint
        waiter = asyncio.get_running_loop().create_future()
        self._job_waiters.setdefault(job_id, set()).add(waiter)
        try:
            await _until(waiter, timeout)
        finally:
            waiting = self._job_waiters.get(job_id)
            if waiting is not None:
                waiting.discard(waiter)
                if not waiting:
                    del self._job_waiters[job_id]
        return self._checkpoint

    def release_waiters(self) -> None:
        """From now on every wait returns at once, as if timed out: for a stop."""
        self._released = True
        self._advance(self._checkpoint, jobs=None)
        for _, _, waiter in self._waiters:
            _wake(waiter)
        self._waiters.clear()

    def _advance(self, seq: int, jobs: Iterable[str] | None) -> None:
        """Move the checkpoint to `seq` (if it is later) and wake the waits it ends: the
        waits for the jobs in `jobs`, every job's wait when None (not said)."""
        if seq > self._checkpoint:
            self._checkpoint = seq
            while self._waiters and self._waiters[0][0] <= seq:
                _wake(heapq.heappop(self._waiters)[2])
        if not self._job_waiters:
            return
        for job_id in self._job_waiters if jobs is None else jobs:
            for waiter in self._job_waiters.get(job_id, ()):
                _wake(waiter)

    def _forget_timed_out(self) -> None:
        """Drop the waiters that timed out once they are most of the heap (the
        projection is stalled and waits keep timing out)."""
        self._timed_out += 1
        if self._timed_out > 1000 and 2 * self._timed_out > len(self._waiters):
            self._waiters = [w for w in self._waiters if not w[2].done()]
            heapq.heapify(self._waiters)
            self._timed_out = 0

    def job_moved(
        self, job_id: str, after: int, seen_seq: int, *, ended: bool = False
    ) -> bool | None:
        """Whether a commit past checkpoint `after` (up to the current checkpoint) moved
        `job_id`'s row beyond `seen_seq` (with `ended`: and ended the job). None when
        the notices since `after` do not say (one was missed, or did not list its
        jobs): read the row then."""
        commits = self._commits_since(after)
        if commits is None:
            return None
        return any(
            c.jobs.get(job_id, 0) > seen_seq and (not ended or job_id in c.ended) for c in commits
        )

    def changed(self, aggregate: str, after: int) -> bool | None:
        """Whether a commit past checkpoint `after` changed an `aggregate` (one of
        `notice.NAMED_AGGREGATES`: "model", "webhook"); None when the notices since
        `after` do not say."""
        commits = self._commits_since(after)
        return None if commits is None else any(aggregate in c.changed for c in commits)

    def _commits_since(self, after: int) -> list[Commit] | None:
        """The notices of every commit from checkpoint `after` to the current one; None
        unless they are all here and each says what it changed."""
        covered = self._checkpoint
        found: list[Commit] = []
        for commit in reversed(self._commits):
            if covered <= after:
                break
            if commit.last != covered or commit.previous is None:
                return None
            found.append(commit)
            covered = commit.previous
        return found if covered <= after else None

    def _on_notify(self, _conn: Any, _pid: int, _channel: str, payload: str) -> None:
        try:
            commit = parse_notice(payload)
        except ValueError:
            return
        follows = bool(self._commits) and commit.previous == self._commits[-1].last
        if not self._commits or commit.last > self._commits[-1].last:
            self._commits.append(commit)
        # A notice that does not say, or does not follow the last one, wakes every job's
        # wait: `job_moved` cannot tell them whether theirs moved.
        self._advance(commit.last, commit.jobs if follows else None)

    def _on_terminate(self, _conn: Any) -> None:
        self._lost.set()

    async def _connect(self) -> None:
        conn: asyncpg.Connection = await asyncpg.connect(
            self._dsn, server_settings={"search_path": self.schema}
        )
        try:
            await conn.add_listener(self._channel, self._on_notify)
            conn.add_termination_listener(self._on_terminate)
            self._conn = conn
            self._lost.clear()
            await self._resync()
        except BaseException:
            self._conn = None
            conn.terminate()
            raise

    async def _disconnect(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None and not conn.is_closed():
            conn.remove_termination_listener(self._on_terminate)
            try:
                await asyncio.wait_for(conn.close(), 5.0)
            except (TimeoutError, OSError, asyncpg.PostgresError):
                conn.terminate()

    async def _resync(self) -> None:
        if self._conn is None:
            return
        try:
            value = await self._conn.fetchval(_CHECKPOINT_SQL, PROJECTION)
        except asyncpg.UndefinedTableError:  # the projector has not migrated yet
            value = 0
        checkpoint = int(value or 0)
        # Past the last notice: commits were missed, so no job's wait can rule itself out.
        self._advance(checkpoint, None if checkpoint > self._checkpoint else ())

    async def _maintain(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._lost.wait(), self._resync_interval)
            try:
                if self._lost.is_set() or self._conn is None or self._conn.is_closed():
                    await self._disconnect()
                    await self._connect()
                else:
                    await self._resync()
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError):
                self._lost.set()  # retried after the next interval
                await asyncio.sleep(self._resync_interval)


async def _until(waiter: asyncio.Future[None], timeout: float) -> None:
    """Wait for `waiter`, at most `timeout` s (a timer: no task per wait)."""
    timer = asyncio.get_running_loop().call_later(timeout, _wake, waiter)
    try:
        await waiter
    finally:
        timer.cancel()


def _wake(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)

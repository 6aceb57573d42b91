"""How far the projection has got, for read-your-writes and long polls.

One LISTEN connection on the schema's notify channel keeps the current checkpoint; a
periodic re-read covers missed notifications, and a lost connection is reopened.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import time
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
    once it reaches `seq`; `wait_changed(after, timeout)` returns the checkpoint once it
    moves past `after` (or the current one on timeout), for long polls."""

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
        self._advanced = asyncio.Event()
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
        deadline = time.monotonic() + timeout
        while self._checkpoint < seq and not self._released:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._advanced.wait(), remaining)
        return self._checkpoint >= seq

    def release_waiters(self) -> None:
        """From now on every wait returns at once, as if timed out: for a stop."""
        self._released = True
        self._advanced.set()

    async def wait_changed(self, after: int, timeout: float) -> int:
        """The checkpoint once it is past `after`, or the current one after `timeout`."""
        await self.wait_for(after + 1, timeout)
        return self._checkpoint

    def _advance(self, seq: int) -> None:
        if seq > self._checkpoint:
            self._checkpoint = seq
            advanced, self._advanced = self._advanced, asyncio.Event()
            advanced.set()

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
        if not self._commits or commit.last > self._commits[-1].last:
            self._commits.append(commit)
        self._advance(commit.last)

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
        self._advance(int(value or 0))

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

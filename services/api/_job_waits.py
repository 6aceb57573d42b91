"""Long polls on jobs: woken by the projection's commit notices that name their job
(`ProjectionWatermark.wait_job`, `projections.notice`); when a notice does not say, one
query per projection advance for all waiting polls.

A job's long poll waits for its row to move past the `last_seq` it last saw. Waking
every waiting poll on every advance of the projection, each re-reading its whole row,
costs (waiting polls x advances) queries. Here a poll learns from the notices whether
its job moved; when they cannot say, each advance costs one small query over all the
waited-on job ids (`SELECT id, last_seq ... WHERE id = ANY(...)`), shared by every poll
that needs it. Only a poll whose job moved goes on to re-read it.
"""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import Awaitable, Callable, Collection

import asyncpg

from projections import queries
from projections.watermark import ProjectionWatermark

__all__ = ["JobWaits"]

SeqLookup = Callable[[Collection[str]], Awaitable[dict[str, int]]]


class _Lookup:
    """One query for the seqs of `ids`, answering for checkpoints up to `checkpoint`."""

    def __init__(self, checkpoint: int, ids: frozenset[str], task: asyncio.Task[dict[str, int]]):
        self.checkpoint = checkpoint
        self.ids = ids
        self.task = task


class JobWaits:
    """`await waits.wait_moved(job_id, last_seq, checkpoint, timeout)`. No I/O in the
    constructor; queries run only while someone waits."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        watermark: ProjectionWatermark,
        *,
        lookup: SeqLookup | None = None,
    ) -> None:
        self._watermark = watermark
        self._lookup_seqs: SeqLookup = lookup or (lambda ids: queries.job_seqs(pool, ids))
        self._waiting: collections.Counter[str] = collections.Counter()
        self._lookup: _Lookup | None = None
        self.queries = 0  # lookups run (for tests and benchmarks)

    @property
    def waiting(self) -> int:
        """How many long polls are waiting now."""
        return sum(self._waiting.values())

    async def wait_moved(
        self, job_id: str, last_seq: int, checkpoint: int, timeout: float, *, ended: bool = False
    ) -> None:
        """Return once the projected row of `job_id` is no longer at `last_seq` (it moved
        on or went away), or after `timeout` s. `checkpoint` is the projection's
        checkpoint from before `last_seq` was read. With `ended`, a move the commit
        notices say did not end the job does not count (when they cannot say, any
        move does)."""
        deadline = time.monotonic() + timeout
        self._waiting[job_id] += 1
        try:
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return
                current = await self._watermark.wait_job(job_id, checkpoint, remaining)
                if current <= checkpoint:
                    return  # timed out
                moved = self._watermark.job_moved(job_id, checkpoint, last_seq, ended=ended)
                checkpoint = current
                if moved is None:  # the commit notices do not say: read the rows
                    moved = (await self._seqs(job_id, checkpoint)).get(job_id) != last_seq
                if moved:
                    return
        finally:
            self._waiting[job_id] -= 1
            if self._waiting[job_id] <= 0:
                del self._waiting[job_id]

    async def _seqs(self, job_id: str, checkpoint: int) -> dict[str, int]:
        """Seqs read at a projection checkpoint of at least `checkpoint`, including
        `job_id`'s: the running or last lookup when it qualifies, else a new one."""
        lookup = self._lookup
        if lookup is None or lookup.checkpoint < checkpoint or job_id not in lookup.ids:
            ids = frozenset(self._waiting)
            started = self._watermark.checkpoint
            task = asyncio.ensure_future(self._lookup_seqs(ids))
            self.queries += 1
            lookup = self._lookup = _Lookup(started, ids, task)
            task.add_done_callback(self._forget_failed)
        # Shielded: a poll that goes away (client disconnect) does not cancel the
        # lookup other polls share.
        return await asyncio.shield(lookup.task)

    def _forget_failed(self, task: asyncio.Task[dict[str, int]]) -> None:
        if self._lookup is not None and self._lookup.task is task:
            if task.cancelled() or task.exception() is not None:
                self._lookup = None  # the next waiter tries again

"""Queued jobs past their deadline, aborted, whether or not an executor is there.

An executor aborts a job past its deadline when it takes it, and cancels a running one
at its deadline (`services.executor`). A job nobody takes in time (every executor busy,
or none running) is ended here: every `interval_s`, each API process asks the read
models for the queued jobs whose deadline passed since its last pass (less a minute, for
a projection that lags; a day back on its first pass) and aborts each
(`JobCommands.abort_overdue`): decided from the job's own events and appended with the
expected sequence, so against a start, a cancel, an executor's or another API
process's abort, exactly one terminal event is appended."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import asyncpg
import nats.errors

from events import EventStoreError
from projections import queries
from services.api._periodic import repeat
from services.domain import Commands
from services.domain.context import ConflictError

__all__ = ["ACTOR", "DeadlineSweep"]

log = logging.getLogger("clinai.api")

ACTOR = "service:api"
_BATCH = 500  # overdue jobs per query
_AT_ONCE = 32  # aborts in flight at once
# Deadlines looked at again on the next pass (a job projected late), and on the first
# one. Older misses are still ended: an executor aborts a job past its deadline when it
# takes it.
_SLACK = timedelta(minutes=1)
_FIRST_LOOKBACK = timedelta(days=1)
_UNREACHABLE = (
    EventStoreError,
    nats.errors.Error,
    OSError,
    TimeoutError,
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
)


class DeadlineSweep:
    def __init__(
        self,
        commands: Commands,
        pool: asyncpg.Pool,
        *,
        interval_s: float,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        if interval_s <= 0:
            raise ValueError(f"DeadlineSweep: interval_s must be positive, got {interval_s}")
        self._commands = commands
        self._pool = pool
        self._interval_s = interval_s
        self._clock = clock
        self._swept_to: datetime | None = None  # the `now` of the last whole pass

    async def sweep(self) -> int:
        """One pass; the number of jobs aborted."""
        now = self._clock()
        after = now - _FIRST_LOOKBACK if self._swept_to is None else self._swept_to - _SLACK
        aborted = 0
        while True:
            async with self._pool.acquire() as conn:
                due = await queries.overdue_jobs(conn, after, now, _BATCH)
            ended = 0
            for start in range(0, len(due), _AT_ONCE):
                ended += sum(await asyncio.gather(*map(self._abort, due[start : start + _AT_ONCE])))
            aborted += ended
            if len(due) < _BATCH:
                self._swept_to = now
                return aborted
            if not ended:
                return aborted  # a full batch none of which ended: the projection lags

    async def _abort(self, job_id: str) -> bool:
        try:
            return await self._commands.abort_overdue(ACTOR, job_id) is not None
        except ConflictError as err:  # it keeps changing: the next pass decides again
            log.info("job %s: not aborted at its deadline yet (%s)", job_id, err)
            return False

    async def run(self) -> None:
        """Sweep every `interval_s` until cancelled."""
        await repeat(
            self._logged, interval_s=self._interval_s, what="deadline sweep", errors=_UNREACHABLE
        )

    async def _logged(self) -> None:
        if aborted := await self.sweep():
            log.info("aborted %d queued job(s) past their deadline", aborted)

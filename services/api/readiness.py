"""`GET /readyz`: ready means a command can be appended now, a job submitted now will
be picked up, and reads are not stale.

Every check answers within `timeout_s` (they run side by side), so a busy server shows
as not ready rather than as a slow probe:

- NATS is connected and JetStream answers about the stream (which exists, not sealed):
  an append would be taken. After a restart on a long log the embedded server can be
  busy for seconds (creating a durable consumer over 640,000 events took 4.6 s on its
  one thread), and appends time out meanwhile.
- The executor's durable consumer exists: a job appended now will be delivered.
- Postgres answers (the read models' checkpoint and quarantine count are read).
- A projector is running: some session holds its leader lock. Without one, the next
  write would not be read back, even while the reads are current.
- The blob store answers (`BlobStore.check`: for S3, the bucket exists and takes the
  credentials): a job's input can be stored and its outputs read.
- The projection is not stalled: it lacks no event more than `max_lag` events behind the
  log's last one that was stored more than `stall_s` ago (the event's time in the
  stream, read by a direct get). A projector that runs but fails shows here.

`extra` of a ready answer: the projection's and the stream's last sequences, how many
events the projector quarantined (`projections.quarantine`) and the long polls waiting.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from datetime import UTC
from typing import Final, TypeVar

import asyncpg
import msgspec
import nats.errors
from nats.aio.client import Client as NATS
from nats.js.errors import NotFoundError
from starlette.requests import Request
from starlette.responses import Response

from projections import LIVE_SCHEMA
from projections.apply import PROJECTION
from projections.db import lock_key
from services.api import replies
from services.api.openapi_spec import Operation, Reply
from services.api.problems import problem_response
from services.api.wiring import json_response, services
from services.blobstore import BlobError, BlobStore
from services.durables import EXECUTOR_DURABLE
from services.settings import Settings

__all__ = ["Readiness", "ReadinessReport", "operations", "readyz"]

_T = TypeVar("_T")

_STATE_SQL: Final = (
    "SELECT (SELECT last_seq FROM checkpoint WHERE projection = $1) AS checkpoint, "
    "(SELECT count(*) FROM quarantine) AS quarantined"
)
# Whether a session holds the projector's leader lock (`projections.projector`): a
# one-key advisory lock shows in pg_locks as its high and low 32 bits.
_LEADER_SQL: Final = (
    "SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND granted "
    "AND objsubid = 1 AND ((classid::int8 << 32) | objid::int8) = hashtextextended($1, 0))"
)
_CHECKPOINT_SQL: Final = "SELECT last_seq FROM checkpoint WHERE projection = $1"
_SETTINGS_HINT: Final = "CLINAI_READY_PROJECTION_LAG / CLINAI_READY_PROJECTION_STALL_S"


class ReadinessReport(msgspec.Struct, frozen=True, kw_only=True):
    problems: tuple[str, ...]  # empty: ready
    stream_seq: int | None = None
    projection_seq: int | None = None
    quarantined_events: int | None = None


class Readiness:
    """The checks of `/readyz` (see the module docstring), wired from the API's lifespan."""

    def __init__(
        self,
        nc: NATS,
        pool: asyncpg.Pool,
        *,
        stream: str,
        blobs: BlobStore | None = None,
        max_lag: int = 0,
        stall_s: float = 15.0,
        timeout_s: float = 2.0,
        executor_durable: str = EXECUTOR_DURABLE,
        schema: str = LIVE_SCHEMA,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if max_lag < 0 or stall_s <= 0 or timeout_s <= 0:
            raise ValueError("Readiness needs max_lag >= 0, stall_s > 0 and timeout_s > 0")
        self._nc = nc
        self._js = nc.jetstream(timeout=timeout_s)
        self._pool = pool
        self._blobs = blobs
        self._stream = stream
        self._max_lag = max_lag
        self._stall_s = stall_s
        self._timeout_s = timeout_s
        self._durable = executor_durable
        self._leader_lock = lock_key("projector", schema)
        self._clock = clock

    @classmethod
    def from_settings(
        cls, settings: Settings, nc: NATS, pool: asyncpg.Pool, blobs: BlobStore | None = None
    ) -> Readiness:
        return cls(
            nc,
            pool,
            stream=settings.stream_name,
            blobs=blobs,
            max_lag=settings.ready_projection_lag,
            stall_s=settings.ready_projection_stall_s,
        )

    async def check(self) -> ReadinessReport:
        problems: list[str] = []
        stream_seq: int | None = None
        consumer_problem: str | None = None
        blobs = asyncio.ensure_future(self._blob_store())
        if not self._nc.is_connected:
            problems.append("NATS is not connected")
            database = await self._database(problems)
        else:
            stream_seq, consumer_problem, database = await asyncio.gather(
                self._stream_seq(problems), self._consumer(), self._database(problems)
            )
        if consumer_problem is not None:
            problems.append(consumer_problem)
        if (blob_problem := await blobs) is not None:
            problems.append(blob_problem)
        checkpoint, quarantined = database if database is not None else (None, None)
        if stream_seq is not None and checkpoint is not None:
            stalled = await self._stalled(checkpoint, stream_seq)
            if stalled is not None:
                problems.append(stalled)
        return ReadinessReport(
            problems=tuple(problems),
            stream_seq=stream_seq,
            projection_seq=checkpoint,
            quarantined_events=quarantined,
        )

    async def _stream_seq(self, problems: list[str]) -> int | None:
        try:
            info = await self._answer(self._js.stream_info(self._stream))
        except NotFoundError:
            problems.append(f"the stream {self._stream} does not exist yet")
            return None
        except (TimeoutError, nats.errors.Error) as err:
            problems.append(
                f"JetStream did not answer about the stream {self._stream} within "
                f"{self._timeout_s:g} s ({type(err).__name__}): appends would fail now"
            )
            return None
        if info.config.sealed:
            problems.append(f"the stream {self._stream} is sealed: it takes no appends")
        return int(info.state.last_seq)

    async def _consumer(self) -> str | None:
        try:
            await self._answer(self._js.consumer_info(self._stream, self._durable))
        except NotFoundError:
            return (
                f"the executor's durable consumer '{self._durable}' does not exist yet (no "
                "executor has started, or it is still creating it): a job would not be "
                "picked up"
            )
        except (TimeoutError, nats.errors.Error) as err:
            return (
                f"JetStream did not answer about the executor's consumer within "
                f"{self._timeout_s:g} s ({type(err).__name__})"
            )
        return None

    async def _blob_store(self) -> str | None:
        if self._blobs is None:
            return None
        try:
            await self._answer(self._blobs.check())
        except BlobError as err:
            return f"{err.message} ({err.hint})"
        except TimeoutError:
            return f"the blob store did not answer within {self._timeout_s:g} s"
        return None

    async def _database(self, problems: list[str]) -> tuple[int, int] | None:
        try:
            async with self._pool.acquire(timeout=self._timeout_s) as conn:
                if not await conn.fetchval(_LEADER_SQL, self._leader_lock):
                    problems.append(
                        "no projector is running (no session holds its lock in Postgres): "
                        "the read models would not show new writes; start one "
                        "(`clinai serve projector`) or see its log"
                    )
                try:
                    row = await conn.fetchrow(_STATE_SQL, PROJECTION, timeout=self._timeout_s)
                except asyncpg.UndefinedTableError:  # the projector has not migrated (yet)
                    try:
                        seq = await conn.fetchval(_CHECKPOINT_SQL, PROJECTION)
                    except asyncpg.UndefinedTableError:
                        seq = 0
                    return int(seq or 0), 0
        except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as err:
            problems.append(f"Postgres is not reachable: {err or type(err).__name__}")
            return None
        if row is None:  # pragma: no cover - a SELECT of two subqueries has one row
            return 0, 0
        return int(row["checkpoint"] or 0), int(row["quarantined"] or 0)

    async def _stalled(self, checkpoint: int, stream_seq: int) -> str | None:
        """Why the projection counts as stalled, or None: the first event it lacks past
        the allowed lag was stored more than `stall_s` ago."""
        first_late = checkpoint + self._max_lag + 1
        if first_late > stream_seq:
            return None
        try:
            msg = await self._answer(self._js.get_msg(self._stream, seq=first_late, direct=True))
        except (TimeoutError, nats.errors.Error):
            return None  # the stream checks say what is wrong with JetStream
        if msg.time is None:
            return None
        stored_at = msg.time if msg.time.tzinfo else msg.time.replace(tzinfo=UTC)
        age = self._clock() - stored_at.timestamp()
        if age <= self._stall_s:
            return None
        return (
            f"the read models are at sequence {checkpoint}, {stream_seq - checkpoint} events "
            f"behind the log, and have lacked sequence {first_late} for {age:.0f} s (limit "
            f"{self._stall_s:g} s, {_SETTINGS_HINT}): the projector is stopped or failing; "
            "see its log"
        )

    async def _answer(self, request: Awaitable[_T]) -> _T:
        return await asyncio.wait_for(request, self._timeout_s)


async def readyz(request: Request) -> Response:
    readiness: Readiness = request.app.state.readiness
    report = await readiness.check()
    if report.problems:
        return problem_response(
            503,
            "Not ready",
            "; ".join(report.problems),
            headers={"Retry-After": "1"},
            extra={"projection_seq": report.projection_seq, "stream_seq": report.stream_seq},
        )
    return json_response(
        replies.Ready(
            status="ready",
            projection_seq=report.projection_seq,
            stream_seq=report.stream_seq,
            quarantined_events=report.quarantined_events,
            long_polls_waiting=services(request).job_waits.waiting,
        )
    )


operations = [
    Operation(
        method="GET",
        path="/healthz",
        name="healthz",
        summary="Whether this process answers and reaches NATS and Postgres (public)",
        tag="operations",
        public=True,
        replies={200: Reply(description="Healthy", type=replies.Health)},
    ),
    Operation(
        method="GET",
        path="/readyz",
        name="readyz",
        summary="Whether a command is taken and a job picked up now (public)",
        tag="operations",
        public=True,
        replies={200: Reply(description="Ready", type=replies.Ready)},
    ),
]

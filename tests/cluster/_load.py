"""A bounded load on the cluster's APIs, and what the log says about it afterwards.

`Load` submits no-op jobs from many clients spread over every API, each command with an
`Idempotency-Key`: a client retries the same key after a 503 (following the API's
advice) or a lost connection (on the next API, as a load balancer would), so a command
lost in flight is applied once. It records every answer with its time.

`read_jobs` reads the stream itself: every job requested, its starts and its terminal
events, to check that each ends exactly once, whatever the fault.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
import uuid
from collections import Counter
from datetime import datetime

import aiohttp
import msgspec
import nats

from events import (
    EventStore,
    JobCanceled,
    JobFailed,
    JobRequested,
    JobStarted,
    JobSucceeded,
)

__all__ = ["JobLog", "Load", "read_jobs"]

_TERMINAL = (JobSucceeded, JobFailed, JobCanceled)
_RETRY_503_S = 0.2  # clients retry sooner than Retry-After asks, to see the window finely
_GIVE_UP_S = 120.0


class Answer(msgspec.Struct, frozen=True):
    at: float  # time.monotonic()
    api: int
    status: int  # 0: no answer (refused, reset, timed out)
    retry_after: str | None = None


class Load:
    """`jobs` no-op jobs from `clients` clients over `api_urls`; `await run()`."""

    def __init__(
        self,
        api_urls: list[str],
        key: str,
        version_id: str,
        *,
        jobs: int,
        clients: int,
        pace_s: float = 0.0,
        wait_s: int = 0,
    ) -> None:
        self.api_urls = api_urls
        self.version_id = version_id
        self.jobs = jobs
        self.clients = clients
        self.pace_s = pace_s  # each client's pause between its jobs
        # > 0: each submission waits for its job's end (`?wait=`): latencies are then
        # submit-to-end, and an ended job is answered 200.
        self._path = f"/v1/jobs?wait={wait_s}" if wait_s else "/v1/jobs"
        self._auth = {"Authorization": f"Bearer {key}"}
        self._numbers = itertools.count()
        self.accepted: dict[str, str] = {}  # job id -> idempotency key
        self.accepted_at: dict[str, float] = {}
        self.ids_by_key: dict[str, set[str]] = {}
        self.tries: dict[str, int] = {}  # idempotency key -> requests sent
        self.lost: set[str] = set()  # commands that lost their connection, then retried
        self.answers: list[Answer] = []
        self.unexpected: list[tuple[int, object]] = []  # (status, body): not 202/503
        self.latencies: list[float] = []  # submit to acknowledged, per job
        self.submitted = 0
        self.started_at = 0.0

    async def run(self) -> None:
        self.started_at = time.monotonic()
        timeout = aiohttp.ClientTimeout(total=15)
        async with aiohttp.ClientSession(timeout=timeout) as http:
            await asyncio.gather(*(self._client(http, i) for i in range(self.clients)))

    async def _client(self, http: aiohttp.ClientSession, index: int) -> None:
        api = index % len(self.api_urls)
        while next(self._numbers) < self.jobs:
            self.submitted += 1
            api = await self._submit(http, api)
            if self.pace_s:
                await asyncio.sleep(self.pace_s)  # a client's think time, part of the load

    async def _submit(self, http: aiohttp.ClientSession, api: int) -> int:
        """Submit one job until acknowledged; the API the client ends on."""
        key = uuid.uuid4().hex
        first = time.monotonic()
        while time.monotonic() - first < _GIVE_UP_S:
            self.tries[key] = self.tries.get(key, 0) + 1
            form = aiohttp.FormData()
            form.add_field("version", self.version_id)
            form.add_field("input", b"x", filename="in.txt")
            headers = {**self._auth, "Idempotency-Key": key}
            try:
                async with http.post(
                    f"{self.api_urls[api]}{self._path}", data=form, headers=headers
                ) as resp:
                    status = resp.status
                    body = await resp.json(content_type=None)
                    retry_after = resp.headers.get("Retry-After")
            except (aiohttp.ClientError, OSError, TimeoutError):
                self.answers.append(Answer(time.monotonic(), api, 0))
                self.lost.add(key)
                api = (api + 1) % len(self.api_urls)  # the next API, as a load balancer would
                await asyncio.sleep(0.05)  # a refused connection: do not spin
                continue
            now = time.monotonic()
            self.answers.append(Answer(now, api, status, retry_after))
            if status in (200, 202):
                job_id = str(body["id"])
                self.accepted[job_id] = key
                self.accepted_at.setdefault(job_id, now)
                self.ids_by_key.setdefault(key, set()).add(job_id)
                self.latencies.append(now - first)
                return api
            if status == 503:
                await asyncio.sleep(_RETRY_503_S)
                continue
            self.unexpected.append((status, body))
            return api
        self.unexpected.append((0, f"gave up on {key} after {_GIVE_UP_S} s"))
        return api

    # -- what the clients saw ----------------------------------------------------------

    def statuses(self) -> Counter[int]:
        return Counter(answer.status for answer in self.answers)

    def window(self, status: int, since: float = 0.0) -> float:
        """Seconds from the first to the last answer with `status` after `since`
        (0: none)."""
        times = [a.at for a in self.answers if a.status == status and a.at >= since]
        return max(times) - min(times) if times else 0.0

    def retried(self) -> int:
        """Commands acknowledged after more than one try (a 503, a lost connection)."""
        return sum(1 for tries in self.tries.values() if tries > 1)

    def percentile(self, fraction: float) -> float:
        ordered = sorted(self.latencies)
        if not ordered:
            return 0.0
        return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


class JobLog(msgspec.Struct):
    """The jobs in the log from a sequence on."""

    requested: dict[str, int] = {}  # job id -> seq
    started: dict[str, list[tuple[str, int, datetime]]] = {}  # (worker, attempt, occurred_at)
    terminal: dict[str, list[tuple[str, int]]] = {}  # job id -> [(type, seq)]
    last_seq: int = 0

    def unended(self) -> list[str]:
        return [job for job in self.requested if not self.terminal.get(job)]

    def doubly_ended(self) -> dict[str, list[tuple[str, int]]]:
        return {job: ends for job, ends in self.terminal.items() if len(ends) > 1}


async def read_jobs(nats_url: str, start_seq: int, stream: str = "CLINAI") -> JobLog:
    """Every job event from `start_seq` up to the stream's tail as it is now."""
    nc = await nats.connect(nats_url.split(","))
    log = JobLog(requested={}, started={}, terminal={})
    try:
        store = EventStore(nc, stream)
        tail = await store.stream_last_seq()
        log.last_seq = tail
        if tail < start_seq:
            return log
        reader = store.read_batches(start_seq)
        try:
            async with asyncio.timeout(60):
                async for batch in reader:
                    for stored in batch:
                        _note(log, stored.seq, stored.event)
                    if batch[-1].seq >= tail:
                        break
        finally:
            with contextlib.suppress(Exception):
                await reader.aclose()
    finally:
        await nc.drain()
    return log


def _note(log: JobLog, seq: int, event: object) -> None:
    match event:
        case JobRequested(aggregate_id=job):
            log.requested[job] = seq
        case JobStarted(aggregate_id=job, worker=worker, attempt=attempt, occurred_at=at):
            log.started.setdefault(job, []).append((worker, attempt, at))
        case (
            JobSucceeded(aggregate_id=job)
            | JobFailed(aggregate_id=job)
            | JobCanceled(aggregate_id=job)
        ):
            log.terminal.setdefault(job, []).append((type(event).__name__, seq))
        case _:
            pass

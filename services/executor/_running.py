"""The jobs running in this executor process, and the cancel requests that reach them.

Every executor subscribes (plain core NATS, not the shared durable) to
`clinai.job.*.JobCancelRequested`: whichever process runs the job hears the request
within a network round trip, and a job not running anywhere yet is handed to
`on_elsewhere` (which ends it if it has not started). The durable consumer's copy of the
same event covers whatever a process missed.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

import msgspec
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from events import JobCancelRequested, decode_event, parse_subject
from events.subjects import PREFIX

__all__ = ["CANCEL_SUBJECTS", "RunningJob", "RunningJobs"]

log = logging.getLogger("clinai.executor")

CANCEL_SUBJECTS = f"{PREFIX}.job.*.JobCancelRequested"


class RunningJob:
    def __init__(self, job_id: str, attempt: int) -> None:
        self.job_id = job_id
        self.attempt = attempt
        self.cancel = asyncio.Event()
        self.ended = asyncio.Event()  # set when it is unregistered
        self.past_deadline = False  # canceled because its deadline passed

    def deadline_passed(self) -> None:
        """The job's deadline has passed while it runs: stop it (the cancel path)."""
        self.past_deadline = True
        self.cancel.set()


class RunningJobs:
    def __init__(self) -> None:
        self._jobs: dict[str, RunningJob] = {}
        self._sub: Subscription | None = None
        self._elsewhere: set[asyncio.Future[None]] = set()

    def __contains__(self, job_id: object) -> bool:
        return job_id in self._jobs

    def register(self, job_id: str, attempt: int) -> RunningJob:
        if job_id in self._jobs:
            raise ValueError(f"job {job_id} already runs here")
        job = self._jobs[job_id] = RunningJob(job_id, attempt)
        return job

    def get(self, job_id: str) -> RunningJob | None:
        return self._jobs.get(job_id)

    def unregister(self, job: RunningJob) -> None:
        if self._jobs.get(job.job_id) is job:
            del self._jobs[job.job_id]
        job.ended.set()

    def request_cancel(self, job_id: str) -> bool:
        """Signal the job's runner; True when the job runs here."""
        job = self._jobs.get(job_id)
        if job is None:
            return False
        job.cancel.set()
        return True

    async def listen(
        self, nc: NATS, on_elsewhere: Callable[[JobCancelRequested], Awaitable[None]]
    ) -> None:
        async def on_msg(msg: Msg) -> None:
            try:
                _, job_id, _ = parse_subject(msg.subject)
            except ValueError:
                return
            if self.request_cancel(job_id):
                log.info("cancel requested for job %s, running here", job_id)
                return
            try:
                event = decode_event(msg.data)
            except (msgspec.DecodeError, msgspec.ValidationError):
                return
            if isinstance(event, JobCancelRequested):  # in a task: never hold up the others
                task = asyncio.ensure_future(on_elsewhere(event))
                self._elsewhere.add(task)
                task.add_done_callback(self._elsewhere.discard)

        self._sub = await nc.subscribe(CANCEL_SUBJECTS, cb=on_msg)

    async def close(self) -> None:
        if self._sub is not None:
            await self._sub.unsubscribe()
            self._sub = None
        for task in list(self._elsewhere):
            task.cancel()
        await asyncio.gather(*self._elsewhere, return_exceptions=True)

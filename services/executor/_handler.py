"""What the executor does with `JobRequested` and `JobCancelRequested`: decide from the
job aggregate, start an attempt with the aggregate's expected sequence (one starter per
attempt), run it on the runtime, and append exactly one terminal event.

Attempts: a job seen `running` again (its message was redelivered because the executor
running it died, or it was nak'ed after an infrastructure failure) starts attempt + 1.
A late result of an older attempt is dropped: its append conflicts, and the re-read
shows a newer attempt. `infrastructure` failures are retried up to
`max_attempts`; every other failure kind is final.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec

from events import (
    ConcurrencyConflictError,
    Event,
    EventStore,
    EventTooLargeError,
    JobAborted,
    JobCanceled,
    JobCancelRequested,
    JobFailed,
    JobRequested,
    JobStarted,
    JobSucceeded,
    JobTimings,
    new_event_id,
)
from events.text import scrub_text
from services.blobstore import BlobStore
from services.domain.aggregates import JobState, VersionState, fold_job, fold_version
from services.executor._attempt import Attempt, AttemptResult
from services.executor._claims import ResultLimits
from services.executor._input_url import UrlInputs
from services.executor._local_builds import LocalBuildError, LocalBuilds
from services.executor._running import RunningJob, RunningJobs
from services.metrics import JobMetrics
from services.packages.schema import CompiledInputs, SchemaCache
from services.runtimes.base import Artifact, FailureKind, OutputLimits, Runtime
from services.subscribers import Delivery, Poison, RetryLater, reaction_envelope

__all__ = ["ACTOR", "JobHandler"]

log = logging.getLogger("clinai.executor")

ACTOR = "service:executor"
_MAX_DECISIONS = 8
_VERSION_NOT_READY_DELAY_S = 5.0
_BUILT_VERSIONS_KEPT = 1024
# A failure's text as recorded (characters): the model's message and traceback can be
# megabytes (an exception holding its input); the event keeps the start and the end.
_MAX_MESSAGE_CHARS = 8 * 1024
_MAX_TRACEBACK_CHARS = 64 * 1024
_HEARD_READS = 5  # a cancel heard on core NATS: reads until the log shows it
_HEARD_READ_DELAY_S = 0.05

Terminal = JobSucceeded | JobFailed | JobCanceled


class JobHandler:
    def __init__(
        self,
        *,
        store: EventStore,
        blobs: BlobStore,
        runtime: Runtime,
        local: RunningJobs,
        work_dir: Path,
        worker_id: str,
        max_attempts: int,
        max_timeout_s: float,
        result_limits: ResultLimits | None = None,
        output_limits: OutputLimits | None = None,
        url_inputs: UrlInputs | None = None,
        clock: Callable[[], datetime] | None = None,
        metrics: JobMetrics | None = None,
    ) -> None:
        if max_attempts < 1:
            raise ValueError(f"max_attempts must be at least 1, got {max_attempts}")
        self._store = store
        self._blobs = blobs
        self._runtime = runtime
        self._local = local
        self._work_dir = work_dir
        self._worker_id = worker_id
        self._max_attempts = max_attempts
        self._max_timeout_s = max_timeout_s
        self._limits = result_limits or ResultLimits()
        self._output_limits = output_limits or OutputLimits()
        self._url_inputs = url_inputs
        self._clock = clock
        self._built_versions: dict[str, VersionState] = {}
        self._schemas = SchemaCache()
        self._local_builds = LocalBuilds(runtime, blobs, work_dir)
        self._metrics = metrics or JobMetrics()

    def artifact_versions(self) -> dict[str, str]:
        """The version each remembered artifact was built for (reference -> version id),
        by the reference run here (a rebuilt artifact's, see `_local_builds`)."""
        here = self._local_builds.rebuilt()
        return {
            here.get(version.built.artifact, version.built.artifact): version_id
            for version_id, version in self._built_versions.items()
            if version.built is not None
        }

    async def __call__(self, delivery: Delivery) -> None:
        match delivery.event:
            case JobRequested() as requested:
                await self._on_requested(requested, delivery)
            case JobCancelRequested() as cancel:
                await self._on_cancel(cancel, delivery.seq)
            case other:
                raise Poison(f"the executor does not handle {other.type}")

    def _envelope(self, cause: Event) -> dict[str, Any]:
        return reaction_envelope(cause, actor=ACTOR, clock=self._clock)

    def _now(self) -> datetime:
        return self._clock() if self._clock is not None else datetime.now(UTC)

    async def _read(self, job_id: str, including: int = 0) -> JobState:
        """The job's state, from a history holding event `including` at least (the
        delivered one: a replica that lags is not read from)."""
        history = await self._store.read_aggregate("job", job_id, including=including)
        state = fold_job(history.events)
        if state is None:
            raise Poison(f"job {job_id} has no JobRequested in the log")
        return state

    # -- cancel ------------------------------------------------------------------------

    async def _on_cancel(self, cancel: JobCancelRequested, seq: int = 0) -> None:
        for _ in range(_MAX_DECISIONS):
            state = await self._read(cancel.aggregate_id, seq)
            if state.terminal:
                return
            if self._local.request_cancel(cancel.aggregate_id) or state.status == "running":
                # Running here: stopped now. Elsewhere: that executor heard the same event
                # (and if it died, the redelivered JobRequested sees the cancel request).
                return
            try:
                canceled = JobCanceled(
                    **self._envelope(cancel), message="canceled before it started"
                )
                await self._store.append(canceled, expected=state.last_seq)
                self._metrics.job_ended(canceled)
                return
            except ConcurrencyConflictError:
                continue
        raise RetryLater(f"job {cancel.aggregate_id} keeps changing concurrently")

    async def on_cancel_heard(self, cancel: JobCancelRequested) -> None:
        """A cancel request heard on core NATS, for a job that does not run here. Every
        executor hears it at once, while the durable consumer's copy waits behind every
        job queued before it (for a free handler): a job not started anywhere is ended
        now. What a core subscriber hears may not be in the log (yet, or ever, if the
        append was refused): act only once a read shows the request."""
        job_id = cancel.aggregate_id
        try:
            for _ in range(_HEARD_READS):
                state = await self._read(job_id)
                if state.terminal or state.status == "running" or job_id in self._local:
                    return  # ended, or stopped by the executor that runs it
                if state.cancel_requested:
                    await self._on_cancel(cancel)
                    return
                await asyncio.sleep(_HEARD_READ_DELAY_S)
        except Exception as err:  # the durable consumer's copy still ends the job
            log.warning("job %s: could not act on its cancel request at once: %r", job_id, err)

    # -- run ---------------------------------------------------------------------------

    async def _on_requested(self, requested: JobRequested, delivery: Delivery) -> None:
        job_id = requested.aggregate_id
        running = self._local.get(job_id)
        if running is not None:
            # Acking this delivery now would lose the job if that run then fails to
            # append its end (NATS restarted under it): its nak would answer an older
            # delivery, which the server ignores. Wait for it (heartbeats keep this
            # delivery), then decide from the log.
            log.info("job %s: redelivered while it still runs here; deciding when it ends", job_id)
            await running.ended.wait()
        # On its first delivery a job is most likely just requested: decide from the
        # delivered event without reading the log. Starting it carries the expected
        # sequence of that event, so if anything happened since (a cancel request), the
        # append conflicts and the loop decides again from the aggregate.
        guess: JobState | None = None
        if not delivery.redelivered:
            guess = JobState(requested=requested, last_seq=delivery.seq)
        for _ in range(_MAX_DECISIONS):
            if guess is not None:
                state, guess = guess, None
                version = await self._version(requested.version_id)
            else:
                # The version is read alongside the job (not after it): one round trip.
                state, version = await asyncio.gather(
                    self._read(job_id, delivery.seq), self._version(requested.version_id)
                )
            if state.terminal:
                return
            try:
                if await self._refuse(state, delivery):
                    return
                artifact = await self._artifact(state, version, delivery)
                if artifact is None:
                    return
                local = self._local.register(job_id, state.attempt + 1)
                at_deadline = self._arm_deadline(requested, local)
                try:
                    started = JobStarted(
                        **self._envelope(requested),
                        worker=self._worker_id,
                        attempt=state.attempt + 1,
                    )
                    seq = await self._store.append(started, expected=state.last_seq)
                    self._metrics.started(
                        started.attempt,
                        (started.occurred_at - requested.occurred_at).total_seconds(),
                    )
                    schema = None if version is None else version.uploaded.input_schema
                    compiled = (
                        None
                        if schema is None
                        else self._schemas.get(state.requested.version_id, schema)
                    )
                    await self._run(state, started, seq, artifact, delivery, local, compiled)
                finally:
                    if at_deadline is not None:
                        at_deadline.cancel()
                    self._local.unregister(local)
            except ConcurrencyConflictError:
                continue  # another executor or a cancel moved the job on: decide again
            return
        raise RetryLater(f"job {job_id} keeps changing concurrently")

    async def _refuse(self, state: JobState, delivery: Delivery) -> bool:
        """End a job that must not start: canceled before, past its deadline, or out of
        attempts."""
        ended: JobCanceled | JobAborted | None = None
        if state.cancel_requested:
            message = "canceled before it started" if state.attempt == 0 else "canceled"
            ended = JobCanceled(**self._envelope(state.requested), message=message)
        elif state.past_deadline(self._now()):
            # Never started: aborted. Started by an executor that stopped: canceled.
            ended = (
                JobAborted(**self._envelope(state.requested))
                if state.attempt == 0
                else JobCanceled(
                    **self._envelope(state.requested),
                    message="its deadline passed before it could be retried",
                )
            )
        if ended is not None:
            await self._store.append(ended, expected=state.last_seq)
            self._metrics.job_ended(ended)
            return True
        if state.attempt >= self._max_attempts or (state.attempt and delivery.last_attempt):
            await self._fail(
                state,
                "infrastructure",
                f"the job was interrupted {state.attempt} time(s) (its executor stopped or "
                "crashed) and is not retried again; submit it again",
            )
            return True
        return False

    def _arm_deadline(self, requested: JobRequested, job: RunningJob) -> asyncio.TimerHandle | None:
        """A timer that cancels the running job at its deadline; None without one."""
        if requested.deadline is None:
            return None
        delay = max(0.0, (requested.deadline - self._now()).total_seconds())
        return asyncio.get_running_loop().call_later(delay, job.deadline_passed)

    async def _version(self, version_id: str) -> VersionState | None:
        """The version's state; a built version is remembered (a build's result never
        changes: the builder appends nothing to a version once it is built)."""
        cached = self._built_versions.get(version_id)
        if cached is not None:
            return cached
        version = fold_version((await self._store.read_aggregate("version", version_id)).events)
        if version is not None and version.status == "ready" and version.built is not None:
            if len(self._built_versions) >= _BUILT_VERSIONS_KEPT:
                self._built_versions.pop(next(iter(self._built_versions)))
            self._built_versions[version_id] = version
        return version

    async def _artifact(
        self, state: JobState, version: VersionState | None, delivery: Delivery
    ) -> Artifact | None:
        """The version's artifact; None after ending the job when there is none."""
        version_id = state.requested.version_id
        if version is None:
            await self._fail(state, "infrastructure", f"version {version_id} does not exist")
            return None
        if version.status == "failed":
            await self._fail(
                state,
                "model_error",
                f"version {version_id} failed to build; upload a fixed package and run "
                "the job on the new version",
            )
            return None
        if version.built is None:
            if delivery.last_attempt:
                await self._fail(
                    state, "infrastructure", f"version {version_id} was not built in time"
                )
                return None
            raise RetryLater(
                f"version {version_id} is {version.status}", delay_s=_VERSION_NOT_READY_DELAY_S
            )
        built = version.built
        if built.runtime != self._runtime.name:
            await self._fail(
                state,
                "infrastructure",
                f"version {version_id} was built for the {built.runtime} runtime, but this "
                f"executor runs {self._runtime.name}",
            )
            return None
        recorded = Artifact(
            runtime=built.runtime,
            reference=built.artifact,
            package_hash=built.artifact_details.get("package_hash", version.uploaded.package_hash),
            details=built.artifact_details,
        )
        try:
            return await self._local_builds.artifact(recorded, version.uploaded)
        except LocalBuildError as err:
            if not delivery.last_attempt:
                raise RetryLater(str(err)) from err
            await self._fail(state, "infrastructure", str(err))
            return None

    async def _fail(self, state: JobState, kind: FailureKind, message: str) -> None:
        """End a job that never ran in this attempt (raises ConcurrencyConflictError)."""
        event = JobFailed(
            **self._envelope(state.requested),
            kind=kind,
            message=message,
            attempts=max(state.attempt, 1),
        )
        await self._store.append(event, expected=state.last_seq)
        self._metrics.job_ended(event)

    async def _run(
        self,
        state: JobState,
        started: JobStarted,
        seq: int,
        artifact: Artifact,
        delivery: Delivery,
        local: RunningJob,
        compiled: CompiledInputs | None = None,
    ) -> None:
        requested = state.requested
        name = f"{requested.aggregate_id}-{started.attempt}-{uuid.uuid4().hex[:8]}"
        directory = self._work_dir / name
        attempt = Attempt(
            blobs=self._blobs,
            runtime=self._runtime,
            requested=requested,
            artifact=artifact,
            directory=directory,
            timeout_s=min(requested.timeout_s, self._max_timeout_s),
            limits=self._limits,
            output_limits=self._output_limits,
            url_inputs=self._url_inputs,
            compiled=compiled,
        )
        try:
            result = await attempt.run(local.cancel)
            retryable = result.kind == "infrastructure" and not result.permanent
            if retryable and started.attempt < self._max_attempts and not delivery.last_attempt:
                raise RetryLater(f"job {requested.aggregate_id}: {result.message}")
            if result.kind == "canceled" and local.past_deadline:
                result = msgspec.structs.replace(
                    result, message="canceled: its deadline passed while it ran"
                )
            await self._finish(self._terminal(requested, started, result), seq, started.attempt)
        finally:
            # After the terminal event: the attempt's scratch files are nobody's wait.
            await attempt.remove_scratch()

    def _terminal(
        self, requested: JobRequested, started: JobStarted, result: AttemptResult
    ) -> Terminal:
        envelope = self._envelope(requested)
        timings = JobTimings(
            queued_s=max(0.0, (started.occurred_at - requested.occurred_at).total_seconds()),
            setup_s=result.setup_s,
            run_s=result.run_s,
        )
        if result.kind is None:
            return JobSucceeded(
                **envelope,
                outputs=result.outputs,
                result=result.result,
                timings=timings,
                log_key=result.log_key,
                result_blob=result.result_blob,
                outputs_blob=result.outputs_blob,
            )
        if result.kind == "canceled":
            return JobCanceled(
                **envelope, message=scrub_text(result.message) or "canceled on request"
            )
        return JobFailed(
            **envelope,
            kind=result.kind,
            message=scrub_text(_clip(result.message, _MAX_MESSAGE_CHARS)),
            traceback=None
            if result.traceback is None
            else scrub_text(_clip(result.traceback, _MAX_TRACEBACK_CHARS)),
            timings=timings,
            log_key=result.log_key,
            attempts=started.attempt,
        )

    async def _finish(self, event: Terminal, expected: int, attempt: int) -> None:
        """Append the attempt's terminal event unless the job ended or moved on to a newer
        attempt meanwhile; a cancel request appended during the run does not stop it."""
        for _ in range(_MAX_DECISIONS):
            try:
                await self._store.append(event, expected=expected)
                self._metrics.job_ended(event)
                return
            except ConcurrencyConflictError:
                pass
            except EventTooLargeError as err:
                if not isinstance(event, JobSucceeded | JobFailed):
                    raise
                # Never retried (the same event never fits): the job fails, once.
                log.warning("job %s: %s", event.aggregate_id, err)
                event = _outcome_too_large(event, err, attempt)
                continue
            state = await self._read(event.aggregate_id)
            if state.terminal or state.attempt != attempt:
                log.info("job %s attempt %s: result dropped", event.aggregate_id, attempt)
                return
            expected = state.last_seq
        raise RetryLater(f"job {event.aggregate_id} keeps changing concurrently")


def _clip(text: str, limit: int) -> str:
    """`text` if it has at most `limit` characters, else its start and end around a
    note of how much was cut."""
    if len(text) <= limit:
        return text
    head = limit // 4
    tail = limit - head
    return f"{text[:head]}\n[... {len(text) - limit} characters cut ...]\n{text[-tail:]}"


def _outcome_too_large(
    event: JobSucceeded | JobFailed, err: EventTooLargeError, attempt: int
) -> JobFailed:
    """The small failure recorded instead of an outcome the event log cannot hold."""
    return JobFailed(
        id=new_event_id(),
        aggregate_id=event.aggregate_id,
        occurred_at=event.occurred_at,
        actor=event.actor,
        correlation_id=event.correlation_id,
        causation_id=event.causation_id,
        kind="output_limit",
        message=(
            f"the job's outcome is {err.size} bytes, more than the event log takes "
            f"({err.limit} bytes): return a smaller result and fewer or shorter-named outputs"
        ),
        timings=event.timings,
        log_key=event.log_key,
        attempts=attempt,
    )

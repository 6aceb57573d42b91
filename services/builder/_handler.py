"""What the builder does with one `VersionUploaded`: decide from the version aggregate,
then reuse an identical package's artifact or build, appending the build's events
with the aggregate's expected sequence."""

from __future__ import annotations

import asyncio
import logging
import shutil
import time
import uuid
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

from events import (
    TERMINAL_VERSION_STATUSES,
    BuildFailed,
    BuildStarted,
    ClinaiError,
    ConcurrencyConflictError,
    Event,
    EventStore,
    EventStoreError,
    VersionBuilt,
    VersionUploaded,
    scrub_text,
)
from services.blobstore import BlobError, BlobNotFoundError, BlobStore
from services.builder._log import BuildLog, SupersededError
from services.builder._reuse import PACKAGE_HASH_DETAIL, ArtifactIndex
from services.domain.aggregates import VersionState, fold_version
from services.infra.package_fetch import fetch_package
from services.metrics import BuildMetrics
from services.packages import PackageInvalidError
from services.runtimes.base import Artifact, BuildFailedError, Runtime, SandboxRuntimeError
from services.subscribers import Delivery, Poison, RetryLater, reaction_envelope

__all__ = ["ACTOR", "BuildHandler", "build_log_key"]

log = logging.getLogger("clinai.builder")

ACTOR = "service:builder"
_MAX_DECISIONS = 8  # re-reads after a concurrency conflict before retrying later


def build_log_key(version_id: str) -> str:
    return f"logs/builds/{version_id}.log"


class _Failure(ClinaiError):
    def __init__(self, reason: str, log_tail: str = "") -> None:
        super().__init__(reason)
        self.reason = reason
        self.log_tail = log_tail


class BuildHandler:
    def __init__(
        self,
        *,
        store: EventStore,
        blobs: BlobStore,
        runtime: Runtime,
        index: ArtifactIndex,
        work_dir: Path,
        clock: Callable[[], datetime] | None = None,
        log_flush_interval_s: float = 0.5,
        metrics: BuildMetrics | None = None,
    ) -> None:
        self._store = store
        self._blobs = blobs
        self._runtime = runtime
        self._index = index
        self._work_dir = work_dir
        self._clock = clock
        self._flush_interval = log_flush_interval_s
        self._metrics = metrics or BuildMetrics()

    async def __call__(self, delivery: Delivery) -> None:
        match delivery.event:
            case VersionUploaded() as uploaded:
                await self._on_upload(uploaded, delivery)
            case other:
                raise Poison(f"the builder does not handle {other.type}")

    def _envelope(self, cause: Event) -> dict[str, Any]:
        return reaction_envelope(cause, actor=ACTOR, clock=self._clock)

    async def _read(self, version_id: str, including: int = 0) -> VersionState:
        """The version's state, from a history holding event `including` at least (the
        delivered one: a replica that lags is not read from)."""
        history = await self._store.read_aggregate("version", version_id, including=including)
        state = fold_version(history.events)
        if state is None:
            raise Poison(f"version {version_id} has no VersionUploaded in the log")
        return state

    async def _on_upload(self, uploaded: VersionUploaded, delivery: Delivery) -> None:
        for _ in range(_MAX_DECISIONS):
            state = await self._read(uploaded.aggregate_id, delivery.seq)
            if state.status in TERMINAL_VERSION_STATUSES:
                return  # a redelivery of a finished build
            try:
                if await self._try_reuse(state):
                    return
                if state.status == "building" and delivery.last_attempt:
                    await self._append_final(
                        BuildFailed(
                            **self._envelope(state.uploaded),
                            reason=f"the build did not finish after {state.build_attempt} "
                            "attempts (the builder stopped, crashed or met an infrastructure "
                            "error each time); upload the package again to retry",
                        ),
                        state.last_seq,
                    )
                    return
                started = BuildStarted(
                    **self._envelope(state.uploaded),
                    runtime=self._runtime.name,
                    attempt=state.build_attempt + 1,
                )
                seq = await self._store.append(started, expected=state.last_seq)
            except ConcurrencyConflictError:
                continue  # another builder moved the version on: decide again
            await self._build(state, started, seq, delivery)
            return
        raise RetryLater(f"version {uploaded.aggregate_id} keeps changing concurrently")

    async def _try_reuse(self, state: VersionState) -> bool:
        uploaded = state.uploaded
        found = self._index.find(uploaded.package_hash, self._runtime.name)
        if found is None or found.version_id == uploaded.aggregate_id:
            return False
        built = VersionBuilt(
            **self._envelope(uploaded),
            runtime=found.built.runtime,
            artifact=found.built.artifact,
            duration_s=0.0,
            log_key=None,
            reused_from=found.version_id,
            artifact_details=found.built.artifact_details,
        )
        await self._store.append(built, expected=state.last_seq)
        self._metrics.ended("reused", None)
        log.info("version %s reuses the artifact of %s", uploaded.aggregate_id, found.version_id)
        return True

    async def _append_final(self, event: VersionBuilt | BuildFailed, expected: int) -> None:
        await self._store.append(event, expected=expected)
        self._metrics.ended(
            "built" if isinstance(event, VersionBuilt) else "failed", event.duration_s or None
        )
        if isinstance(event, VersionBuilt):
            package_hash = event.artifact_details.get(PACKAGE_HASH_DETAIL)
            if package_hash is not None:
                self._index.remember(package_hash, event)

    async def _build(
        self, state: VersionState, started: BuildStarted, seq: int, delivery: Delivery
    ) -> None:
        uploaded = state.uploaded
        version_id = uploaded.aggregate_id
        directory = self._work_dir / f"{version_id}-{started.attempt}-{uuid.uuid4().hex[:8]}"
        await asyncio.to_thread(directory.mkdir, parents=True)
        began = time.monotonic()
        try:
            async with BuildLog(
                self._store,
                version_id=version_id,
                expected_seq=seq,
                first_index=state.log_chunks,
                file=directory / "build.log",
                envelope=lambda: self._envelope(uploaded),
                flush_interval_s=self._flush_interval,
                # Users see paths relative to their package, never the host's layout.
                hide=((str(directory / "package"), "."), (str(self._work_dir.parent), "<data>")),
            ) as build_log:
                result: Artifact | _Failure
                try:
                    result = await self._steps(uploaded, directory, build_log)
                except _Failure as failure:
                    await build_log.write(f"build failed: {failure.reason}\n")
                    result = failure
            log_key = await self._upload_log(version_id, build_log.path)
            envelope = self._envelope(uploaded)
            duration = time.monotonic() - began
            final: VersionBuilt | BuildFailed
            if isinstance(result, _Failure):
                # Bounded, so that the event always fits in the log.
                tail = build_log.hidden(result.log_tail)[-_MAX_TAIL_CHARS:]
                final = BuildFailed(
                    **envelope,
                    reason=scrub_text(build_log.hidden(result.reason))[:_MAX_REASON_CHARS],
                    log_tail=scrub_text(tail or build_log.tail()),
                    log_key=log_key,
                    duration_s=duration,
                )
            else:
                final = VersionBuilt(
                    **envelope,
                    runtime=result.runtime,
                    artifact=result.reference,
                    duration_s=duration,
                    log_key=log_key,
                    artifact_details={**result.details, PACKAGE_HASH_DETAIL: result.package_hash},
                )
            await self._append_final(final, build_log.seq)
        except (SupersededError, ConcurrencyConflictError) as err:
            cause = err.__cause__ if isinstance(err, SupersededError) else err
            log.info(
                "build of %s attempt %s was superseded (%s)", version_id, started.attempt, cause
            )
        except _Retryable as err:
            if not delivery.last_attempt:
                raise RetryLater(f"build of {version_id}: {err}") from err
            await self._fail_for_good(version_id, f"infrastructure error: {err}")
        finally:
            await asyncio.to_thread(shutil.rmtree, directory, True)

    async def _steps(
        self, uploaded: VersionUploaded, directory: Path, build_log: BuildLog
    ) -> Artifact:
        try:
            package_dir = await fetch_package(
                self._blobs, uploaded.package_key, uploaded.size_bytes, directory, build_log.write
            )
        except BlobNotFoundError as err:
            raise _Failure(
                f"download the package: {uploaded.package_key} is missing from the blob store"
            ) from err
        except PackageInvalidError as err:
            raise _Failure(f"unpack the package: {err}") from err
        try:
            return await self._runtime.build(
                package_dir=package_dir,
                package_hash=uploaded.package_hash,
                requirements_hash=uploaded.requirements_hash,
                log=build_log.write,
            )
        except BuildFailedError as err:
            hint = f" ({err.hint})" if err.hint else ""
            raise _Failure(f"{err.message}{hint}", err.log_tail) from err

    async def _upload_log(self, version_id: str, path: Path) -> str | None:
        key = build_log_key(version_id)
        try:
            await self._blobs.put_file(key, path, "text/plain; charset=utf-8")
        except (BlobError, OSError) as err:
            log.warning("could not store the build log of %s: %s", version_id, err)
            return None
        return key

    async def _fail_for_good(self, version_id: str, reason: str) -> None:
        for _ in range(_MAX_DECISIONS):
            state = await self._read(version_id)
            if state.status in TERMINAL_VERSION_STATUSES:
                return
            event = BuildFailed(**self._envelope(state.uploaded), reason=scrub_text(reason))
            try:
                await self._store.append(event, expected=state.last_seq)
                self._metrics.ended("failed", None)
                return
            except ConcurrencyConflictError:
                continue


# Failures that may pass: retried on a later delivery (a new attempt).
_MAX_REASON_CHARS = 8 * 1024
_MAX_TAIL_CHARS = 32 * 1024
_Retryable = (BlobError, EventStoreError, SandboxRuntimeError, OSError)

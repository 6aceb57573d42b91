"""Which built artifact a new upload can reuse: package hash -> the first version built
from an identical package, read from the log itself (no read model needed).

`LogArtifactIndex` follows `clinai.version.*.VersionBuilt` with an ordered consumer from
the start of the stream, so every builder process learns about every other one's
builds; `start()` waits until it has caught up with the builds that existed when it
started. A build this process finishes is `remember`ed at once, so an identical
re-upload right after it is reused without waiting for the follower.

An artifact is only reused for the same runtime. For the process runtime the artifact
is a path under the runtime's work directory, so builders and executors share a host
(or a volume); for docker it is an image reference (a registry digest when pushed).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Protocol

import msgspec
from nats.aio.client import Client as NATS
from nats.js.errors import NotFoundError

from events import EventStore, StoredEvent, VersionBuilt, VersionUploaded
from events.subjects import PREFIX

__all__ = ["PACKAGE_HASH_DETAIL", "ArtifactIndex", "LogArtifactIndex", "ReusableArtifact"]

log = logging.getLogger("clinai.builder")

PACKAGE_HASH_DETAIL = "package_hash"  # the key in VersionBuilt.artifact_details
_BUILT_SUBJECTS = f"{PREFIX}.version.*.VersionBuilt"


class ReusableArtifact(msgspec.Struct, frozen=True, kw_only=True):
    version_id: str  # the version that built it (VersionBuilt.reused_from of the reuser)
    built: VersionBuilt


class ArtifactIndex(Protocol):
    def find(self, package_hash: str, runtime: str) -> ReusableArtifact | None: ...

    def remember(self, package_hash: str, built: VersionBuilt) -> None: ...


class LogArtifactIndex:
    def __init__(self, nc: NATS, store: EventStore) -> None:
        self._nc = nc
        self._store = store
        self._known: dict[tuple[str, str], ReusableArtifact] = {}
        self._seen_seq = 0
        self._progress = asyncio.Condition()
        self._task: asyncio.Task[None] | None = None

    def find(self, package_hash: str, runtime: str) -> ReusableArtifact | None:
        return self._known.get((runtime, package_hash))

    def remember(self, package_hash: str, built: VersionBuilt) -> None:
        origin = built.reused_from or built.aggregate_id
        self._known.setdefault(
            (built.runtime, package_hash), ReusableArtifact(version_id=origin, built=built)
        )

    async def start(self, *, catch_up_timeout_s: float = 30.0) -> None:
        """Follow the log; return once the builds recorded before now are indexed (or
        after the timeout: a miss only costs a real build)."""
        target = await self._last_built_seq()
        self._task = asyncio.create_task(self._follow())
        try:
            async with asyncio.timeout(catch_up_timeout_s), self._progress:
                await self._progress.wait_for(lambda: self._seen_seq >= target)
        except TimeoutError:
            log.warning("artifact index did not catch up within %.0f s", catch_up_timeout_s)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _last_built_seq(self) -> int:
        js = self._nc.jetstream()
        try:
            msg = await js.get_msg(self._store.stream, subject=_BUILT_SUBJECTS, direct=True)
        except NotFoundError:
            return 0
        return int(msg.seq or 0)

    async def _follow(self) -> None:
        async for stored in self._store.read_from(1, subject_filter=_BUILT_SUBJECTS):
            await self._index(stored)
            async with self._progress:
                self._seen_seq = stored.seq
                self._progress.notify_all()

    async def _index(self, stored: StoredEvent) -> None:
        if not isinstance(stored.event, VersionBuilt):
            return
        built = stored.event
        package_hash = built.artifact_details.get(PACKAGE_HASH_DETAIL)
        if package_hash is None:  # not recorded: take it from the version's upload
            history = await self._store.read_aggregate("version", built.aggregate_id)
            uploaded = next(
                (s.event for s in history.events if isinstance(s.event, VersionUploaded)), None
            )
            if uploaded is None:
                return
            package_hash = uploaded.package_hash
        self.remember(package_hash, built)

"""A version's artifact on this executor's host.

`VersionBuilt` records what the builder made on its own host: for the process runtime,
folders under the builder's runtime folder. An executor on another host (no shared
folder) has none of it, so it rebuilds the artifact from the package in the blob store
the first time it needs it: the same package, requirements and runtime give the same
environment. Each artifact is checked once per process; later jobs pay nothing.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import uuid
from pathlib import Path

from events import ClinaiError, VersionUploaded
from services.blobstore import BlobError, BlobStore
from services.infra.package_fetch import fetch_package
from services.packages import PackageInvalidError
from services.runtimes.base import Artifact, Runtime, SandboxRuntimeError

__all__ = ["LocalBuildError", "LocalBuilds"]

log = logging.getLogger("clinai.executor")

_KEPT = 1024  # artifacts remembered (reference -> the one to run here)


class LocalBuildError(ClinaiError):
    """The artifact is not on this host and could not be rebuilt here (an infrastructure
    failure: another attempt, possibly on another executor, may succeed)."""


class LocalBuilds:
    def __init__(self, runtime: Runtime, blobs: BlobStore, work_dir: Path) -> None:
        self._runtime = runtime
        self._blobs = blobs
        self._work_dir = work_dir
        self._here: dict[str, Artifact] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    def rebuilt(self) -> dict[str, str]:
        """Recorded reference -> the reference run here, for artifacts rebuilt here."""
        return {
            recorded: local.reference
            for recorded, local in self._here.items()
            if recorded != local.reference
        }

    async def artifact(self, recorded: Artifact, uploaded: VersionUploaded) -> Artifact:
        """The artifact to run on this host for `recorded`; rebuilt from the package when
        this host does not have it. Raises LocalBuildError."""
        here = self._here.get(recorded.reference)
        if here is not None:
            return here
        lock = self._locks.setdefault(recorded.reference, asyncio.Lock())
        async with lock:
            here = self._here.get(recorded.reference)
            if here is None:
                here = await self._find_or_build(recorded, uploaded)
                if len(self._here) >= _KEPT:
                    self._here.pop(next(iter(self._here)))
                self._here[recorded.reference] = here
        self._locks.pop(recorded.reference, None)
        return here

    async def _find_or_build(self, recorded: Artifact, uploaded: VersionUploaded) -> Artifact:
        try:
            if await self._runtime.has_artifact(recorded):
                return recorded
        except (SandboxRuntimeError, OSError) as err:
            raise LocalBuildError(f"checking for the version's artifact failed: {err}") from err
        version_id = uploaded.aggregate_id
        log.info("version %s: its artifact is not on this host; rebuilding it", version_id)
        directory = self._work_dir / f"rebuild-{version_id}-{uuid.uuid4().hex[:8]}"
        lines: list[str] = []

        async def keep(text: str) -> None:
            lines.append(text)
            del lines[:-50]

        try:
            await asyncio.to_thread(directory.mkdir, parents=True)
            package_dir = await fetch_package(
                self._blobs, uploaded.package_key, uploaded.size_bytes, directory, keep
            )
            artifact = await self._runtime.build(
                package_dir=package_dir,
                package_hash=uploaded.package_hash,
                requirements_hash=uploaded.requirements_hash,
                log=keep,
            )
        except (BlobError, PackageInvalidError, SandboxRuntimeError, OSError) as err:
            tail = "".join(lines)[-2000:]
            log.warning("version %s: rebuilding its artifact failed: %s\n%s", version_id, err, tail)
            raise LocalBuildError(
                f"the version's artifact is not on this executor's host and rebuilding it "
                f"from its package failed: {err}"
            ) from err
        finally:
            await asyncio.to_thread(shutil.rmtree, directory, True)
        log.info("version %s: artifact rebuilt here (%s)", version_id, artifact.reference)
        return artifact

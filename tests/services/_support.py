"""Helpers for the service tests: packages as zips, commands, waiting on the log."""

from __future__ import annotations

import io
import uuid
import zipfile
from datetime import datetime
from pathlib import Path

from events import TERMINAL_JOB_EVENTS, Event, EventStore, StoredEvent
from services.blobstore import BlobStore
from services.domain import CommandContext, Commands
from services.domain.aggregates import JobState, VersionState, fold_job, fold_version
from services.packages import inspect_package
from services.subscribers import ConsumerOptions

__all__ = [
    "FAST_CONSUMER",
    "ModelPackage",
    "events_of",
    "job_state",
    "request_job",
    "terminal_events",
    "upload_version",
    "version_state",
]

# Short timers so redelivery and stopping take seconds in tests, not minutes.
FAST_CONSUMER = ConsumerOptions(
    redelivery_s=(2.0, 2.0, 2.0, 2.0),
    heartbeat_s=0.5,
    retry_delays_s=(0.2, 0.5, 1.0),
    pull_expires_s=1.0,
    pull_heartbeat_s=0.5,
    check_s=0.5,
    stop_grace_s=2.0,
)

ADMIN = CommandContext(actor="usr_test", is_admin=True, correlation_id="test")


class ModelPackage:
    """A model package written as a zip, with its hashes as the API computes them."""

    def __init__(self, directory: Path, files: dict[str, str]) -> None:
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w") as zf:
            for name, text in sorted(files.items()):
                zf.writestr(name, text)
        directory.mkdir(parents=True, exist_ok=True)
        self.path = directory / f"{uuid.uuid4().hex}.zip"
        self.path.write_bytes(buffer.getvalue())
        self.info = inspect_package(self.path)


async def events_of(store: EventStore, aggregate: str, aggregate_id: str) -> list[Event]:
    history = await store.read_aggregate(aggregate, aggregate_id)
    return [s.event for s in history.events]


async def version_state(store: EventStore, version_id: str) -> VersionState:
    state = fold_version((await store.read_aggregate("version", version_id)).events)
    assert state is not None
    return state


async def job_state(store: EventStore, job_id: str) -> JobState:
    state = fold_job((await store.read_aggregate("job", job_id)).events)
    assert state is not None
    return state


async def upload_version(
    commands: Commands, blobs: BlobStore, package: ModelPackage, model_id: str | None = None
) -> tuple[str, str, int]:
    """Store the zip and append ModelVersionAdded + VersionUploaded the way the API does.
    Returns (model_id, version_id, seq)."""
    if model_id is None:
        model_id, _ = await commands.create_model(
            ADMIN, name=f"m-{uuid.uuid4().hex[:8]}", description="", visibility="private"
        )
    version_id = f"ver_{uuid.uuid4().hex[:20]}"
    key = f"packages/{version_id}.zip"
    await blobs.put_file(key, package.path, "application/zip")
    _, seq = await commands.add_version(
        ADMIN,
        model_id,
        version_id=version_id,
        package_key=key,
        package_hash=package.info.package_hash,
        requirements_hash=package.info.requirements_hash,
        size_bytes=package.path.stat().st_size,
        filename="package.zip",
        has_setup=package.info.has_setup,
    )
    return model_id, version_id, seq


async def request_job(
    commands: Commands,
    blobs: BlobStore,
    *,
    model_id: str,
    version_id: str,
    params: dict[str, object] | None = None,
    data: bytes = b"hello",
    timeout_s: float = 30.0,
    deadline: datetime | None = None,
) -> str:
    job_id = f"job_{uuid.uuid4().hex[:20]}"
    key = f"inputs/{job_id}/input.txt"
    await blobs.put_bytes(key, data, "text/plain")
    await commands.request_job(
        ADMIN,
        job_id=job_id,
        owner=ADMIN.actor,
        model_id=model_id,
        version_id=version_id,
        input_key=key,
        input_filename="input.txt",
        input_size_bytes=len(data),
        params=dict(params or {}),
        timeout_s=timeout_s,
        webhook=None,
        deadline=deadline,
    )
    return job_id


def terminal_events(history: list[StoredEvent]) -> list[Event]:
    return [s.event for s in history if isinstance(s.event, TERMINAL_JOB_EVENTS)]

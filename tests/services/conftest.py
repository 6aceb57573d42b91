"""Fixtures for the builder and executor tests: real NATS (per test), a file blob store,
and a real ProcessRuntime under bubblewrap whose environments are shared by the session."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import datetime
from pathlib import Path

import msgspec
import nats
import pytest
from nats.aio.client import Client as NATS

from events import Event, EventStore, JobFailed, JobRequested, JobStarted, JobSucceeded
from services.blobstore import FileBlobStore
from services.builder import run_builder
from services.domain import Commands
from services.embedded.sandbox_setup import check_bwrap
from services.executor import run_executor
from services.infra.runtime_factory import make_runtime
from services.runtimes.base import Runtime
from services.settings import Settings
from tests._infra import wait_until
from tests.services._support import (
    FAST_CONSUMER,
    ModelPackage,
    events_of,
    job_state,
    request_job,
    upload_version,
    version_state,
)

SIGNING_KEY = "k" * 40

Starter = Callable[[], Awaitable[None]]


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Shared by the session: the runtime's environments (keyed by requirements) are
    built once. Blobs and NATS are per test."""
    return tmp_path_factory.mktemp("services-data")


@pytest.fixture(scope="session")
def empty_index(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A package index with nothing in it: pip fails fast and offline on any requirement."""
    return tmp_path_factory.mktemp("empty-index").as_uri()


@pytest.fixture
def settings(nats_url: str, data_dir: Path, tmp_path: Path, empty_index: str) -> Settings:
    reason = check_bwrap()
    if reason:
        pytest.skip(reason)
    return Settings(
        data_dir=data_dir,
        nats_url=nats_url,
        blob_dir=tmp_path / "blobs",
        signing_key=SIGNING_KEY,
        pip_index_url=empty_index,
        workers_total=4,
        workers_per_version=4,
        job_max_attempts=3,
        worker_memory_mb=512,
    )


@pytest.fixture
async def nc(settings: Settings) -> AsyncIterator[NATS]:
    assert settings.nats_url is not None
    conn = await nats.connect(settings.nats_url)
    try:
        yield conn
    finally:
        await conn.drain()


@pytest.fixture
async def store(nc: NATS, settings: Settings) -> EventStore:
    return await EventStore.open(nc, stream=settings.stream_name)


@pytest.fixture
def commands(store: EventStore) -> Commands:
    return Commands(store)


@pytest.fixture
def blobs(settings: Settings) -> FileBlobStore:
    return FileBlobStore(settings.blob_root, settings.api_url, SIGNING_KEY.encode())


@pytest.fixture
async def runtime(settings: Settings) -> AsyncIterator[Runtime]:
    rt = await make_runtime(settings)
    try:
        yield rt
    finally:
        await rt.close()


class Services:
    """Builders and executors as tasks of this test, stopped (gracefully) at teardown."""

    def __init__(self, settings: Settings, runtime: Runtime) -> None:
        self._settings = settings
        self._runtime = runtime
        self._running: list[tuple[asyncio.Event, asyncio.Task[None]]] = []

    def builder(self) -> None:
        stop = asyncio.Event()
        task = asyncio.create_task(
            run_builder(self._settings, runtime=self._runtime, stop=stop, consumer=FAST_CONSUMER)
        )
        self._running.append((stop, task))

    def executor(self) -> None:
        stop = asyncio.Event()
        task = asyncio.create_task(
            run_executor(self._settings, runtime=self._runtime, stop=stop, consumer=FAST_CONSUMER)
        )
        self._running.append((stop, task))

    def check(self) -> None:
        """Fail fast when a service task died."""
        for _, task in self._running:
            if task.done():
                task.result()

    async def stop_all(self) -> None:
        for stop, _ in self._running:
            stop.set()
        for _, task in self._running:
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait_for(task, 15)


@pytest.fixture
async def services(
    settings: Settings, runtime: Runtime, store: EventStore
) -> AsyncIterator[Services]:
    running = Services(settings, runtime)
    try:
        yield running
    finally:
        await running.stop_all()


async def built_version(
    package: ModelPackage, store: EventStore, commands: Commands, blobs: FileBlobStore
) -> tuple[str, str]:
    """(model_id, version_id) of `package` uploaded and built (a builder must run)."""
    model_id, version_id, _ = await upload_version(commands, blobs, package)
    await build_ended(store, version_id)
    assert (await version_state(store, version_id)).status == "ready"
    return model_id, version_id


@contextlib.asynccontextmanager
async def running_executor(
    settings: Settings, runtime: Runtime, stop_s: float = 15.0
) -> AsyncIterator[None]:
    """An executor with settings of the test's own, stopped (gracefully) on exit."""
    stop = asyncio.Event()
    task = asyncio.create_task(
        run_executor(settings, runtime=runtime, stop=stop, consumer=FAST_CONSUMER)
    )
    try:
        yield
    finally:
        stop.set()
        await asyncio.wait_for(task, stop_s)


async def build_ended(store: EventStore, version_id: str, timeout_s: float = 60.0) -> float:
    """Waits until the build of `version_id` is ready or failed; the seconds it took."""

    async def ended() -> bool:
        return (await version_state(store, version_id)).status in ("ready", "failed")

    return await wait_until(ended, timeout_s=timeout_s, what=f"the build of {version_id}")


async def job_ended(store: EventStore, job_id: str, timeout_s: float = 30.0) -> float:
    """Waits until job `job_id` is in a terminal state; the seconds it took."""

    async def terminal() -> bool:
        return (await job_state(store, job_id)).terminal

    return await wait_until(terminal, timeout_s=timeout_s, what=f"job {job_id} to end")


class Rig(msgspec.Struct, frozen=True):
    """What a builder or executor test drives: the log, the write side, the blob store
    and the services under test."""

    store: EventStore
    commands: Commands
    blobs: FileBlobStore
    services: Services

    async def built(self, package: ModelPackage) -> tuple[str, str]:
        """(model_id, version_id) of `package`, uploaded and built by a builder started here."""
        self.services.builder()
        return await built_version(package, self.store, self.commands, self.blobs)

    async def upload(self, package: ModelPackage, model_id: str | None = None) -> tuple[str, str]:
        """(model_id, version_id) of `package`, uploaded the way the API does."""
        model_id, version_id, _ = await upload_version(self.commands, self.blobs, package, model_id)
        return model_id, version_id

    async def build(
        self, package: ModelPackage, model_id: str | None = None, wait_s: float = 60.0
    ) -> tuple[str, str, list[Event]]:
        """Uploads `package` and waits for its build to end (a builder must run):
        (model_id, version_id, the version's events)."""
        model_id, version_id = await self.upload(package, model_id)
        await build_ended(self.store, version_id, wait_s)
        return model_id, version_id, await events_of(self.store, "version", version_id)

    async def request_job(
        self,
        version: tuple[str, str],
        params: dict[str, object] | None = None,
        *,
        data: bytes = b"hello",
        timeout_s: float = 30.0,
        deadline: datetime | None = None,
    ) -> str:
        """A job of `version` (model_id, version_id), requested the way the API does."""
        model_id, version_id = version
        return await request_job(
            self.commands,
            self.blobs,
            model_id=model_id,
            version_id=version_id,
            params=params,
            data=data,
            timeout_s=timeout_s,
            deadline=deadline,
        )

    async def ended(self, job_id: str, wait_s: float = 60.0) -> list[Event]:
        """The events of job `job_id` once it has ended."""
        await job_ended(self.store, job_id, wait_s)
        return await events_of(self.store, "job", job_id)


def failed_once(events: list[Event], kind: str) -> JobFailed:
    """A job's end, checked to be a failure of `kind` on its first and only attempt."""
    assert [type(e) for e in events] == [JobRequested, JobStarted, JobFailed], events
    failed = events[-1]
    assert isinstance(failed, JobFailed) and failed.kind == kind, failed
    assert failed.attempts == 1, failed
    return failed


def succeeded_at_once(events: list[Event]) -> JobSucceeded:
    """A job's end, checked to be a success of its first attempt."""
    assert [type(e) for e in events] == [JobRequested, JobStarted, JobSucceeded], events
    done = events[-1]
    assert isinstance(done, JobSucceeded)
    return done


@pytest.fixture
def rig(store: EventStore, commands: Commands, blobs: FileBlobStore, services: Services) -> Rig:
    return Rig(store=store, commands=commands, blobs=blobs, services=services)

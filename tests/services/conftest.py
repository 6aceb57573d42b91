"""Fixtures for the builder and executor tests: real NATS (per test), a file blob store,
and a real ProcessRuntime under bubblewrap whose environments are shared by the session."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import nats
import pytest
from nats.aio.client import Client as NATS

from events import EventStore
from services.blobstore import FileBlobStore
from services.builder import run_builder
from services.domain import Commands
from services.embedded.sandbox_setup import check_bwrap
from services.executor import run_executor
from services.infra.runtime_factory import make_runtime
from services.runtimes.base import Runtime
from services.settings import Settings
from tests._infra import wait_until
from tests.services._support import FAST_CONSUMER, ModelPackage, upload_version, version_state

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

    async def ended() -> bool:
        return (await version_state(store, version_id)).status in ("ready", "failed")

    await wait_until(ended, timeout_s=60, what="the build")
    assert (await version_state(store, version_id)).status == "ready"
    return model_id, version_id

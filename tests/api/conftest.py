"""A running API for the HTTP tests: real NATS, Postgres, projector and the API under
uvicorn, each service as its own process exactly as `clinai up` runs them. One stack per
test module; tests isolate themselves by creating their own users."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator, Mapping
from pathlib import Path

import msgspec
import nats
import pytest

from events import EventStore
from projections import LIVE_SCHEMA, apply_migrations
from projections.db import connect
from services.durables import EXECUTOR_DURABLE
from services.embedded import EmbeddedNats
from services.embedded.stack import ensure_admin_key
from services.executor.service import EXECUTOR_SUBJECTS
from services.settings import Settings
from services.subscribers import ConsumerOptions, ensure_consumer
from tests._infra import create_database, drop_database, free_port, needs_bubblewrap
from tests._s3 import create_bucket, s3_env


class Stack(msgspec.Struct):
    url: str
    admin_key: str
    settings: Settings
    env: dict[str, str]
    data_dir: Path
    procs: list[subprocess.Popen[bytes]]
    other_data_dirs: tuple[Path, ...] = ()  # services given another data folder (env_for)


def wait_ready(url: str, procs: list[subprocess.Popen[bytes]], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for proc in procs:
            if proc.poll() is not None:
                raise RuntimeError(f"service exited early with {proc.returncode}")
        try:
            with urllib.request.urlopen(f"{url}/readyz", timeout=1) as resp:
                if resp.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.05)  # polling interval, not synchronisation
    raise TimeoutError(f"{url} did not become ready in {timeout}s")


def wait_key_works(url: str, key: str, timeout: float = 30.0) -> None:
    """A key authenticates once the projector has applied it: wait for that."""
    deadline = time.monotonic() + timeout
    request = urllib.request.Request(f"{url}/v1/me", headers={"Authorization": f"Bearer {key}"})
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(request, timeout=1) as resp:
                if resp.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.05)  # polling interval, not synchronisation
    raise TimeoutError(f"the admin key did not become usable in {timeout}s")


async def ensure_executor_consumer(nats_url: str) -> None:
    """The stream and the executor's durable consumer, as a running executor makes them:
    /readyz waits for it (a job must be picked up), and most stacks here run none."""
    nc = await nats.connect(nats_url)
    try:
        store = await EventStore.open(nc, stream=Settings().stream_name)
        await ensure_consumer(
            nc.jetstream(), store.stream, EXECUTOR_DURABLE, EXECUTOR_SUBJECTS, ConsumerOptions()
        )
    finally:
        await nc.drain()


def start_services(
    env: dict[str, str],
    services: list[str],
    *,
    api_log: Path | None = None,
    env_for: Mapping[str, Mapping[str, str]] | None = None,
) -> list[subprocess.Popen[bytes]]:
    """The services as processes; the API's stderr goes to `api_log` when given (to look
    for tracebacks), the others' to the test's. `env_for[name]` adds to one's `env`
    (another data folder: as if it ran on another host)."""
    procs = []
    for name in services:
        with contextlib.ExitStack() as files:
            stderr = files.enter_context(api_log.open("ab")) if api_log and name == "api" else None
            argv = [sys.executable, "-m", "services.cli", "serve", name]
            own_env = {**env, **(env_for or {}).get(name, {})}
            procs.append(subprocess.Popen(argv, env=own_env, stderr=stderr))
    return procs


def stop_services(procs: list[subprocess.Popen[bytes]]) -> None:
    for proc in procs:
        proc.terminate()
    for proc in procs:
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="module")
def stack_env(
    postgres_admin_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, str]]:
    data_dir = tmp_path_factory.mktemp("stack")
    db_name, dsn = asyncio.run(create_database(postgres_admin_url))
    nats_server = EmbeddedNats(data_dir / "nats")
    nats_url = nats_server.start_blocking()

    async def migrate() -> None:
        conn = await connect(dsn)
        try:
            await apply_migrations(conn, LIVE_SCHEMA)
        finally:
            await conn.close()
        nc = await nats.connect(nats_url)  # the stream, as the first service would make it
        try:
            await EventStore.open(nc, stream=Settings().stream_name)
        finally:
            await nc.drain()

    env = {
        **os.environ,
        "CLINAI_DATA_DIR": str(data_dir),
        "CLINAI_NATS_URL": nats_url,
        "CLINAI_DATABASE_URL": dsn,
        "CLINAI_PORT": str(free_port()),
        "CLINAI_MAX_PACKAGE_BYTES": str(2 * 1024 * 1024),
        "CLINAI_MAX_INPUT_BYTES": str(1024 * 1024),
        "CLINAI_READ_YOUR_WRITES_TIMEOUT_S": "1",
    }
    try:
        asyncio.run(migrate())
        yield env
    finally:
        nats_server.stop_blocking()
        asyncio.run(drop_database(postgres_admin_url, db_name))


@contextlib.contextmanager
def running_stack(
    env: dict[str, str],
    services: list[str],
    *,
    env_for: Mapping[str, Mapping[str, str]] | None = None,
) -> Iterator[Stack]:
    """The given services as processes, ready, with an admin key that authenticates
    (`env_for`: see `start_services`)."""
    settings = Settings.from_env(env)
    # The first stack on this data directory issues the admin key; later ones read it.
    admin_key = asyncio.run(ensure_admin_key(settings)) or (
        (settings.data_dir / "admin.key").read_text().strip()
    )
    if "executor" not in services:
        asyncio.run(ensure_executor_consumer(env["CLINAI_NATS_URL"]))
    procs = start_services(env, services, env_for=env_for)
    try:
        wait_ready(settings.api_url, procs)
        wait_key_works(settings.api_url, admin_key)
        yield Stack(
            url=settings.api_url,
            admin_key=admin_key,
            settings=settings,
            env=env,
            data_dir=settings.data_dir,
            procs=procs,
        )
    finally:
        stop_services(procs)


@pytest.fixture(scope="module")
def stack(stack_env: dict[str, str]) -> Iterator[Stack]:
    with running_stack(stack_env, ["projector", "api"]) as running:
        yield running


@pytest.fixture(scope="module", params=["file", "s3"])
def full_stack(request: pytest.FixtureRequest, stack_env: dict[str, str]) -> Iterator[Stack]:
    """Every service, on the file backend, then on S3 (uploads go to it straight)."""
    needs_bubblewrap()
    # The test's HTTP server listens on loopback, which the guard refuses unless exempt.
    env = {**stack_env, "CLINAI_INPUT_URL_ALLOW_NETWORKS": "127.0.0.0/8"}
    if request.param == "s3":
        endpoint = request.getfixturevalue("s3_endpoint")
        env.update(s3_env(endpoint, asyncio.run(create_bucket(endpoint))))
    with running_stack(env, ["projector", "api", "builder", "executor"]) as running:
        yield running

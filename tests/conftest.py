"""Shared fixtures: real NATS and Postgres, started from the wheels.

- `nats_url` (function): a fresh nats-server with JetStream per test, in its own
  tmp dir, stopped (and its process reaped) after the test.
- `postgres_admin_url` (session): one fast-mode Postgres (fsync off) for the
  session; superuser DSN to its `postgres` database.
- `database_url` (function): a fresh empty database `test_<n>` on that server,
  dropped WITH (FORCE) after the test.
- `s3_endpoint` (session): `http://127.0.0.1:PORT` of one moto S3 server for the
  session (tests make their own buckets: `tests._s3.create_bucket`).
- `nc`, `store` (function): a NATS connection to `nats_url` and the event store on it
  (the suites that configure services through `Settings` have their own).
- `receiver` (function): a webhook receiver on loopback (tests/notifier/_receiver.py),
  for the notifier's tests and the API's webhook tests.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import nats
import pytest
from nats.aio.client import Client as NATS

from events import EventStore
from services.embedded import EmbeddedNats
from tests._infra import create_database, drop_database, session_postgres
from tests._s3 import s3_server
from tests.notifier._receiver import Receiver


@pytest.fixture
def nats_url(tmp_path: Path) -> Iterator[str]:
    """`nats://127.0.0.1:PORT` of a fresh JetStream-enabled server for this test."""
    server = EmbeddedNats(tmp_path / "nats")
    url = server.start_blocking()
    try:
        yield url
    finally:
        server.stop_blocking()


@pytest.fixture
async def nc(nats_url: str) -> AsyncIterator[NATS]:
    client = await nats.connect(nats_url)
    yield client
    await client.drain()


@pytest.fixture
async def store(nc: NATS) -> EventStore:
    return await EventStore.open(nc, stream="CLINAI")


@pytest.fixture(scope="session")
def postgres_admin_url() -> Iterator[str]:
    """Superuser DSN of the session's Postgres (fast mode: fsync off)."""
    with session_postgres() as dsn:
        yield dsn


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """A real S3 server (moto's server mode) for the session."""
    with s3_server() as endpoint:
        yield endpoint


@pytest.fixture
async def database_url(postgres_admin_url: str) -> AsyncIterator[str]:
    """DSN of a fresh, empty database `test_<n>`, dropped after the test."""
    name, url = await create_database(postgres_admin_url)
    try:
        yield url
    finally:
        await drop_database(postgres_admin_url, name)


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    rx = Receiver()
    await rx.start()
    yield rx
    await rx.stop()

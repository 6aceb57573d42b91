"""An outage of Postgres or NATS is a 503 with Retry-After and a detail saying what is
down: never a 500 asking to report an incident, logged with a traceback.

This module runs its own Postgres (the session's is shared) and NATS, and stops each
while the API runs."""

from __future__ import annotations

import asyncio
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from services.embedded import EmbeddedNats, EmbeddedPostgres
from services.embedded.stack import ensure_admin_key
from services.settings import Settings
from tests._infra import migrate, short_tmp_dir, wait_until
from tests.api._client import Client
from tests.api.conftest import (
    ensure_executor_consumer,
    free_port,
    start_services,
    stop_services,
    wait_key_works,
    wait_ready,
)


class _Outage:
    def __init__(self, url: str, key: str, pg: EmbeddedPostgres, nats: EmbeddedNats, log: Path):
        self.url = url
        self.key = key
        self.postgres = pg
        self.nats = nats
        self.api_log = log


@pytest.fixture
def outage(tmp_path: Path) -> Iterator[_Outage]:
    with short_tmp_dir("clinai-pg-outage-") as pg_dir:
        postgres = EmbeddedPostgres(pg_dir, fast=True)
        dsn = postgres.start_blocking()
        nats_server = EmbeddedNats(tmp_path / "nats")
        procs: list[subprocess.Popen[bytes]] = []
        try:
            nats_url = nats_server.start_blocking()
            asyncio.run(migrate(dsn))
            env = {
                **os.environ,
                "CLINAI_DATA_DIR": str(tmp_path / "data"),
                "CLINAI_NATS_URL": nats_url,
                "CLINAI_DATABASE_URL": dsn,
                "CLINAI_PORT": str(free_port()),
            }
            settings = Settings.from_env(env)
            settings.data_dir.mkdir(parents=True)
            admin_key = asyncio.run(ensure_admin_key(settings))
            assert admin_key is not None
            asyncio.run(ensure_executor_consumer(nats_url))  # /readyz needs it
            api_log = tmp_path / "api.log"
            procs += start_services(env, ["projector", "api"], api_log=api_log)
            wait_ready(settings.api_url, procs)
            wait_key_works(settings.api_url, admin_key)
            yield _Outage(settings.api_url, admin_key, postgres, nats_server, api_log)
        finally:
            stop_services(procs)
            nats_server.stop_blocking()
            postgres.stop_blocking()


def _assert_outage(
    status: int, body: dict[str, object], headers: dict[str, str], what: str
) -> None:
    assert status == 503, body
    assert int(headers["retry-after"]) >= 1
    assert what in str(body["detail"]), body
    assert "incident" not in str(body["detail"])


async def test_postgres_down_is_503_saying_so(outage: _Outage) -> None:
    admin = Client(outage.url, outage.key)
    assert (await admin.get("/v1/models")).status == 200
    await asyncio.to_thread(outage.postgres.stop_blocking)
    for method, path in [
        ("GET", "/v1/models"),
        ("GET", "/v1/jobs"),
        ("GET", "/v1/jobs/job_0000"),
        ("GET", "/v1/webhooks"),
    ]:
        reply = await admin.request(method, path)
        _assert_outage(reply.status, reply.body, reply.headers, "Postgres")
    # Another key: the caller lookup itself needs Postgres.
    other = await Client(outage.url, "clinai_unknown-key").get("/v1/models")
    _assert_outage(other.status, other.body, other.headers, "Postgres")
    # (asyncpg's pool logs its own failures to reconnect: only requests count here.)
    log = outage.api_log.read_text()
    assert "unhandled error" not in log, log[-3000:]

    await asyncio.to_thread(outage.postgres.start_blocking)

    async def served() -> bool:
        return (await admin.get("/v1/models")).status == 200

    await wait_until(served, what="the API to serve again once Postgres is back", timeout_s=30)


async def test_nats_down_is_503_saying_so(outage: _Outage) -> None:
    admin = Client(outage.url, outage.key)
    await asyncio.to_thread(outage.nats.stop_blocking)
    reply = await admin.post("/v1/models", json={"name": "m-during-outage"})
    _assert_outage(reply.status, reply.body, reply.headers, "NATS")
    deleted = await admin.request("DELETE", "/v1/models/mdl_0000")
    _assert_outage(deleted.status, deleted.body, deleted.headers, "NATS")
    assert "unhandled error" not in outage.api_log.read_text()

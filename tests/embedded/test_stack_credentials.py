"""`clinai up`'s NATS and Postgres take no connection without the data folder's
credentials (`nats.token`, `postgres.password`, mode 0600 beside `admin.key`): not
without them, not with wrong ones. The stack still runs a job end to end, `clinai tail`
finds its NATS through the data folder, a data folder made before the credentials
existed gets them at the next `up`, and no log line nor event holds them in clear."""

from __future__ import annotations

import asyncio
import os
import stat
import subprocess
import sys
from pathlib import Path

import asyncpg
import nats
import pytest
from nats.aio.client import Client as NATS

from services.embedded import EmbeddedNats, EmbeddedPostgres
from tests._infra import short_tmp_dir, wait_until
from tests.api._client import Client
from tests.embedded.test_stack_heals import UpStack, noop_version


def _secret(data_dir: Path, name: str) -> str:
    path = data_dir / name
    assert path.is_file(), f"clinai up wrote no {name} into the data folder"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    secret = path.read_text().strip()
    assert len(secret) >= 32
    return secret


def _nats_url(data_dir: Path, userinfo: str = "") -> str:
    port = int((data_dir / "nats" / "port").read_text())
    return f"nats://{userinfo}127.0.0.1:{port}"


def _postgres_dsn(data_dir: Path, userinfo: str = "postgres") -> str:
    port = int((data_dir / "postgres" / "port").read_text())
    return f"postgresql://{userinfo}@127.0.0.1:{port}/clinai"


async def _nats_refuses(url: str) -> None:
    nc = NATS()
    try:
        with pytest.raises(nats.errors.Error, match="Authorization Violation"):
            await nc.connect(url, allow_reconnect=False, connect_timeout=5)
    finally:
        await nc.close()


async def _assert_credentials_required(data_dir: Path) -> tuple[str, str]:
    """The data folder's (token, password), after checking that NATS and Postgres
    refuse connections without them or with wrong ones, and take them."""
    await _nats_refuses(_nats_url(data_dir))
    await _nats_refuses(_nats_url(data_dir, "not-the-token@"))
    for userinfo in ("postgres", "postgres:not-the-password"):
        with pytest.raises(asyncpg.InvalidPasswordError):
            await (await asyncpg.connect(_postgres_dsn(data_dir, userinfo))).close()
    token = _secret(data_dir, "nats.token")
    password = _secret(data_dir, "postgres.password")
    assert stat.S_IMODE((data_dir / "nats" / "nats-server.conf").stat().st_mode) == 0o600
    nc = await nats.connect(_nats_url(data_dir, f"{token}@"), allow_reconnect=False)
    try:
        assert (await nc.jetstream().stream_info("CLINAI")).state.messages > 0
    finally:
        await nc.close()
    conn = await asyncpg.connect(_postgres_dsn(data_dir, f"postgres:{password}"))
    await conn.close()
    return token, password


async def _job_succeeds(admin: Client) -> None:
    version_id = await noop_version(admin)
    reply = await admin.upload("/v1/jobs?wait=5", "input", "in.txt", b"x", version=version_id)
    assert reply.status in (200, 202), reply.body
    job_id = reply.body["id"]

    async def succeeded() -> bool:
        job = (await admin.get(f"/v1/jobs/{job_id}?wait=5")).body
        assert job.get("status") not in ("failed", "canceled"), job
        return bool(job.get("status") == "succeeded")

    await wait_until(succeeded, what="the job to succeed", timeout_s=60)


def _tail(data_dir: Path) -> str:
    """`clinai tail` on the running stack, found through its data folder."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLINAI_")}
    done = subprocess.run(
        [sys.executable, "-m", "services.cli", "tail", "--data-dir", str(data_dir), "--json"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def _assert_nowhere(secrets: tuple[str, ...], up: UpStack, *texts: str) -> None:
    """No log of the stack (every service's output, the servers' logs) nor `texts`
    (the events) holds a secret."""
    logs = [up.log_path, *up.data_dir.glob("*/*.log")]
    assert len(logs) >= 3  # up.log, nats-server.log, postgres.log
    for secret in secrets:
        for log in logs:
            assert secret not in log.read_text(errors="replace"), f"{log} holds a credential"
        for text in texts:
            assert secret not in text, "an event holds a credential"


async def test_up_refuses_connections_without_the_credentials_and_runs_a_job() -> None:
    with short_tmp_dir("clinai-creds-") as tmp:
        up = UpStack(tmp / "data")
        try:
            admin = await up.wait_up()
            secrets = await _assert_credentials_required(up.data_dir)
            await _job_succeeds(admin)
            events = await asyncio.to_thread(_tail, up.data_dir)
            assert '"JobSucceeded"' in events
        finally:
            up.stop()
        _assert_nowhere(secrets, up, events)


async def test_up_gives_a_data_folder_made_before_credentials_its_credentials() -> None:
    with short_tmp_dir("clinai-creds-old-") as tmp:
        data_dir = tmp / "data"
        # A data folder as `clinai up` left it before: servers without credentials.
        async with EmbeddedNats(data_dir / "nats"):
            pass
        async with EmbeddedPostgres(data_dir / "postgres") as dsn:
            conn = await asyncpg.connect(dsn)
            try:
                await conn.execute('CREATE DATABASE "clinai"')
            finally:
                await conn.close()
            conn = await asyncpg.connect(dsn.rsplit("/", 1)[0] + "/clinai")
            try:
                await conn.execute("CREATE TABLE kept (note text)")
            finally:
                await conn.close()
        assert not (data_dir / "nats.token").exists()

        up = UpStack(data_dir)
        try:
            await up.wait_up()
            secrets = await _assert_credentials_required(data_dir)
            conn = await asyncpg.connect(_postgres_dsn(data_dir, f"postgres:{secrets[1]}"))
            try:
                assert await conn.fetchval("SELECT count(*) FROM kept") == 0  # the same cluster
            finally:
                await conn.close()
            events = await asyncio.to_thread(_tail, data_dir)
        finally:
            up.stop()
        _assert_nowhere(secrets, up, events)

"""The embedded NATS and Postgres servers, and the fixtures built on them."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import nats
import pytest

from services.embedded import AlreadyRunningError, EmbeddedNats, EmbeddedPostgres
from services.settings import Settings, SettingsError
from tests._infra import short_tmp_dir


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


async def _fetchval(dsn: str, query: str) -> object:
    """The first value of `query` on a connection of its own."""
    conn = await asyncpg.connect(dsn)
    try:
        return await conn.fetchval(query)
    finally:
        await conn.close()


def _dead_pid() -> int:
    dead = subprocess.Popen(["true"])
    dead.wait()
    return dead.pid


@pytest.fixture
def pg_dir() -> Iterator[Path]:
    with short_tmp_dir("clinai-pgt-") as path:
        yield path


# --- NATS -------------------------------------------------------------------------


async def test_nats_starts_with_jetstream_and_stop_kills_it(tmp_path: Path) -> None:
    server = EmbeddedNats(tmp_path / "nats")
    url = await server.start()
    pid = server.pid
    assert url.startswith("nats://127.0.0.1:") and pid is not None
    nc = await nats.connect(url, allow_reconnect=False)
    try:
        info = await nc.jetstream().account_info()
        assert info.streams == 0
    finally:
        await nc.close()
    await server.stop()
    assert _gone(pid)
    assert server.url is None
    await server.stop()  # idempotent


async def test_nats_second_start_is_refused(tmp_path: Path) -> None:
    async with EmbeddedNats(tmp_path / "nats") as _url:
        first_pid = None
        server = EmbeddedNats(tmp_path / "nats")
        with pytest.raises(AlreadyRunningError) as caught:
            await server.start()
        first_pid = caught.value.pid
        assert first_pid is not None and not _gone(first_pid)


async def test_nats_restart_keeps_port_and_streams(tmp_path: Path) -> None:
    server = EmbeddedNats(tmp_path / "nats")
    url = await server.start()
    with pytest.raises(AlreadyRunningError):
        await server.start()
    nc = await nats.connect(url, allow_reconnect=False)
    try:
        js = nc.jetstream()
        await js.add_stream(name="T", subjects=["t.>"])
        await js.publish("t.1", b"kept")
    finally:
        await nc.close()
    await server.stop()

    assert await server.start() == url
    try:
        nc = await nats.connect(url, allow_reconnect=False)
        try:
            msg = await nc.jetstream().get_last_msg("T", "t.1")
            assert msg.data == b"kept"
        finally:
            await nc.close()
    finally:
        await server.stop()


def _config_of(pid: int) -> str:
    argv = Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")
    return Path(argv[argv.index("--config") + 1]).read_text()


async def test_nats_fsyncs_every_append_by_default(tmp_path: Path) -> None:
    """JetStream's own default (flush every 2 minutes) loses acknowledged appends in a
    power loss: the embedded server syncs each one unless told otherwise."""
    server = EmbeddedNats(tmp_path / "durable")
    await server.start()
    try:
        assert server.pid is not None
        assert 'sync_interval: "always"' in _config_of(server.pid)
    finally:
        await server.stop()
    async with EmbeddedNats(tmp_path / "fast", sync="2m") as url:
        nc = await nats.connect(url, allow_reconnect=False)
        try:
            await nc.jetstream().account_info()
        finally:
            await nc.close()
    assert 'sync_interval: "2m"' in (tmp_path / "fast" / "nats-server.conf").read_text()


@pytest.mark.parametrize("sync", ["", "soon", "2 m", "always; x", "10"])
def test_nats_sync_must_be_always_or_a_duration(tmp_path: Path, sync: str) -> None:
    with pytest.raises(ValueError, match="always"):
        EmbeddedNats(tmp_path, sync=sync)
    with pytest.raises(SettingsError, match="CLINAI_NATS_SYNC"):
        Settings.from_env({"CLINAI_NATS_SYNC": sync or " "})


def test_nats_sync_setting() -> None:
    assert Settings.from_env({}).nats_sync == "always"
    assert Settings.from_env({"CLINAI_NATS_SYNC": "500ms"}).nats_sync == "500ms"


# --- Postgres ---------------------------------------------------------------------


async def test_postgres_select_1_and_restart_keeps_rows(pg_dir: Path) -> None:
    server = EmbeddedPostgres(pg_dir, fast=True)
    dsn = await server.start()
    assert dsn.startswith("postgresql://postgres@127.0.0.1:") and dsn.endswith("/postgres")
    pid = server.pid
    assert pid is not None
    conn = await asyncpg.connect(dsn)
    try:
        assert await conn.fetchval("select 1") == 1
        await conn.execute("create table kept (n int); insert into kept values (1), (2)")
    finally:
        await conn.close()
    await server.stop()
    assert _gone(pid)

    assert await server.start() == dsn  # same port remembered, no second initdb
    try:
        assert await _fetchval(dsn, "select sum(n) from kept") == 3
    finally:
        await server.stop()


async def test_postgres_second_start_is_refused(pg_dir: Path) -> None:
    async with EmbeddedPostgres(pg_dir, fast=True):
        with pytest.raises(AlreadyRunningError) as caught:
            await EmbeddedPostgres(pg_dir, fast=True).start()
        assert caught.value.pid is not None and not _gone(caught.value.pid)


async def test_postgres_ignores_stale_postmaster_pid(pg_dir: Path) -> None:
    server = EmbeddedPostgres(pg_dir, fast=True)
    await server.start()
    await server.stop()
    (server.pgdata / "postmaster.pid").write_text(f"{_dead_pid()}\n{server.pgdata}\n")
    dsn = await server.start()
    try:
        assert await _fetchval(dsn, "select 1") == 1
    finally:
        await server.stop()


# --- the fixtures -----------------------------------------------------------------


async def test_nats_url_fixture_has_jetstream(nats_url: str) -> None:
    nc = await nats.connect(nats_url, allow_reconnect=False)
    try:
        await nc.jetstream().account_info()
    finally:
        await nc.close()


@pytest.mark.parametrize("attempt", [1, 2])
async def test_database_url_is_fresh_per_test(database_url: str, attempt: int) -> None:
    conn = await asyncpg.connect(database_url)
    try:
        assert (await conn.fetchval("select current_database()")).startswith("test_")
        await conn.execute("create table only_here (n int)")  # fails if not fresh
    finally:
        await conn.close()

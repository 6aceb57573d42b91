"""Helpers behind the fixtures in conftest.py: embedded servers for the tests."""

from __future__ import annotations

import asyncio
import itertools
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from aiohttp import web

from projections import LIVE_SCHEMA, apply_migrations
from projections.db import connect
from services.embedded import EmbeddedPostgres
from services.embedded.sandbox_setup import check_bwrap

__all__ = [
    "create_database",
    "drop_database",
    "http_files",
    "migrate",
    "session_postgres",
    "short_tmp_dir",
]

_database_numbers = itertools.count(1)


@contextmanager
def short_tmp_dir(prefix: str) -> Iterator[Path]:
    """A fresh directory directly under the system tmp dir, removed afterwards.

    Postgres runs as another user when we are root, so its data dir must not sit
    under pytest's private (0700) basetemp; a short path also keeps the unix
    socket path under the OS limit.
    """
    path = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@contextmanager
def session_postgres() -> Iterator[str]:
    """A fast-mode Postgres in a tmp dir for the whole session; yields the admin DSN."""
    with short_tmp_dir("clinai-pg-") as data_dir:
        server = EmbeddedPostgres(data_dir, fast=True)
        dsn = server.start_blocking()
        try:
            yield dsn
        finally:
            server.stop_blocking()


def _with_database(dsn: str, name: str) -> str:
    base, _, _ = dsn.rpartition("/")
    return f"{base}/{name}"


async def create_database(admin_dsn: str) -> tuple[str, str]:
    """Create `test_<n>`; return (name, DSN)."""
    name = f"test_{next(_database_numbers)}"
    conn = await asyncpg.connect(admin_dsn)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    return name, _with_database(admin_dsn, name)


async def migrate(dsn: str) -> None:
    """Bring the live read-model schema of `dsn` up to date, as the first service would."""
    conn = await connect(dsn)
    try:
        await apply_migrations(conn, LIVE_SCHEMA)
    finally:
        await conn.close()


async def drop_database(admin_dsn: str, name: str) -> None:
    conn = await asyncpg.connect(admin_dsn)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


async def wait_until(
    predicate: Callable[[], bool | Awaitable[bool]],
    *,
    what: str,
    timeout_s: float = 15.0,
    every_s: float = 0.02,
) -> float:
    """Poll a condition (sync or async) until it holds; return the seconds it took.
    Fails with `what` past the deadline: a condition with a deadline, not a sleep."""
    start = time.monotonic()
    while True:
        value = predicate()
        if not isinstance(value, bool):
            value = await value
        if value:
            return time.monotonic() - start
        if time.monotonic() - start > timeout_s:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        await asyncio.sleep(every_s)


def outputs_written(work_root: Path, name: str) -> list[Path]:
    """Where running jobs have written `name` into their output directory. Adapters keep
    a worker's job files at <work_root>/workers/<worker>/out on the host."""
    return list(work_root.glob(f"workers/*/out/{name}"))


def needs_bubblewrap(what: str = "the process runtime") -> None:
    """Skip the test, saying why, where bubblewrap cannot sandbox a worker."""
    reason = check_bwrap()
    if reason is not None:
        pytest.skip(f"{what} needs bubblewrap: {reason}")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def serving(
    argv: list[str], port: int, *, what: str, timeout_s: float = 20.0, **popen: Any
) -> Iterator[subprocess.Popen[bytes]]:
    """Run a server process for the block, from the moment it accepts connections on
    127.0.0.1:`port`; it is stopped (terminated, else killed) after the block. Fails
    with what it printed on stderr (when piped) if it exits or does not listen in time."""
    proc = subprocess.Popen(argv, **popen)
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    proc.kill()
                    _, err = proc.communicate(timeout=5)
                    printed = err.decode(errors="replace") if err else ""
                    raise AssertionError(f"{what} did not start: {printed}") from None
                time.sleep(0.05)  # polled against the deadline above
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if proc.stderr is not None:
            proc.stderr.close()


@asynccontextmanager
async def http_files(
    handle: Callable[[web.Request], Awaitable[web.StreamResponse]], method: str = "GET"
) -> AsyncIterator[str]:
    """A real HTTP server on loopback answering every GET (or `method`) with `handle` (a
    file server as a model's inputs come from) for the block; yields its base URL."""
    app = web.Application()
    app.router.add_route(method, "/{tail:.*}", handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()

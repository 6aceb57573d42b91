"""An outage of NATS or Postgres is logged once when it starts and once when it ends,
not once per failure; /healthz answers 503 naming what is down meanwhile."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from services.embedded import EmbeddedNats, EmbeddedPostgres
from services.embedded.stack import ensure_admin_key
from services.outages import Outage, report_library_failures
from services.settings import Settings
from tests._infra import migrate, short_tmp_dir, wait_until
from tests.api._client import Client
from tests.api.conftest import free_port, stop_services, wait_key_works, wait_ready

_SERVICES = ["api", "projector", "builder", "executor", "notifier"]
_OUTAGE_S = 6.0  # nats.py reconnects every 0.5 s: a dozen attempts per service
_LINES_PER_SERVICE = 6  # down, back, and a few one-line notes (pull requests asked again)


class _Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_an_outage_is_logged_once_down_and_once_back_with_the_count(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = _Clock()
    outage = Outage("Postgres", logging.getLogger("clinai.test"), clock=clock)
    back: list[bool] = []
    outage.on_recovered(lambda: back.append(True))
    with caplog.at_level(logging.INFO, logger="clinai.test"):
        outage.recovered()  # up all along: nothing to say
        for _ in range(1000):
            outage.failed(ConnectionRefusedError(111, "Connection refused"))
        assert outage.down and outage.failures == 1000
        clock.now += 12.5
        assert outage.down_for_s == 12.5
        outage.recovered()
        outage.recovered()
    messages = [record.getMessage() for record in caplog.records]
    assert messages == [
        "Postgres is unreachable: ConnectionRefusedError: [Errno 111] Connection refused "
        "(failures are counted until it is back)",
        "Postgres is reachable again after 12.5 s; 1000 failure(s) meanwhile",
    ]
    assert all(record.exc_info is None for record in caplog.records)
    assert back == [True]
    assert not outage.down and outage.failures == 0


def test_a_librarys_retry_tracebacks_are_counted_not_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    library = logging.getLogger("clinai.test.library")
    outage = Outage("Postgres", logging.getLogger("clinai.test"))
    report_library_failures(library, Outage("Postgres", logging.getLogger("clinai.old")))
    report_library_failures(library, outage)  # replaces the earlier one
    with caplog.at_level(logging.INFO):
        for _ in range(50):
            try:
                raise ConnectionRefusedError(111, "Connection refused")
            except OSError:
                library.warning("Failed to restore the pool connection floor", exc_info=True)
        library.warning("a warning without a traceback")
    assert [(r.name, r.getMessage()[:30]) for r in caplog.records] == [
        ("clinai.test", "Postgres is unreachable: Conne"),
        ("clinai.test.library", "a warning without a traceback"),
    ]
    assert outage.failures == 50


def _health(url: str) -> tuple[int, dict]:  # type: ignore[type-arg]
    try:
        with urllib.request.urlopen(f"{url}/healthz", timeout=5) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


class _Stack:
    def __init__(self, tmp: Path) -> None:
        self.nats = EmbeddedNats(tmp / "nats")
        self.postgres = EmbeddedPostgres(tmp / "pg", fast=True)
        self.log_path = tmp / "services.log"
        self.procs: list[subprocess.Popen[bytes]] = []
        self.url = ""
        self.key = ""

    def start(self, tmp: Path) -> None:
        nats_url = self.nats.start_blocking()
        dsn = self.postgres.start_blocking()
        asyncio.run(migrate(dsn))
        env = {k: v for k, v in os.environ.items() if not k.startswith("CLINAI_")}
        env |= {
            "CLINAI_DATA_DIR": str(tmp / "data"),
            "CLINAI_NATS_URL": nats_url,
            "CLINAI_DATABASE_URL": dsn,
            "CLINAI_PORT": str(free_port()),
        }
        settings = Settings.from_env(env)
        settings.data_dir.mkdir()
        key = asyncio.run(ensure_admin_key(settings))
        assert key is not None
        self.key = key
        self.url = settings.api_url
        with open(self.log_path, "wb") as log:
            self.procs = [
                subprocess.Popen(
                    [sys.executable, "-m", "services.cli", "serve", name],
                    env=env,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
                for name in _SERVICES
            ]
        wait_ready(self.url, self.procs, timeout=60)
        wait_key_works(self.url, key)
        deadline = time.monotonic() + 60
        # Every consumer has started (an outage during a start is a failed start).
        while not all(
            any(f"clinai.{name} INFO {name}" in line and "consuming" in line for line in lines)
            for lines in [self.lines()]
            for name in ("builder", "executor", "notifier")
        ):
            if time.monotonic() > deadline:
                raise AssertionError(f"the consumers did not start: {self.lines()}")
            time.sleep(0.05)  # polling interval, not synchronisation

    def lines(self) -> list[str]:
        return self.log_path.read_text(errors="replace").splitlines()

    def stop(self) -> None:
        stop_services(self.procs)
        self.postgres.stop_blocking()
        self.nats.stop_blocking()


@pytest.fixture
def outage_stack() -> Iterator[_Stack]:
    with short_tmp_dir("clinai-outage-") as tmp:
        stack = _Stack(tmp)
        try:
            stack.start(tmp)
            yield stack
        finally:
            stack.stop()


async def _outage(stack: _Stack, server: EmbeddedNats | EmbeddedPostgres, name: str) -> None:
    port = int((server.data_dir / "port").read_text())
    assert _health(stack.url)[0] == 200
    before = len(stack.lines())
    await server.stop()
    await wait_until(
        lambda: _health(stack.url)[0] == 503, what=f"/healthz to see {name} down", timeout_s=10
    )
    status, body = _health(stack.url)
    assert status == 503 and name in body["detail"], body
    # Wait out the outage on a condition: the API has counted failures for a while.
    loop = asyncio.get_running_loop()
    deadline = loop.time() + _OUTAGE_S
    await wait_until(lambda: loop.time() >= deadline, what="the outage", timeout_s=_OUTAGE_S + 5)
    during = stack.lines()[before:]
    assert len(during) <= _LINES_PER_SERVICE * len(_SERVICES), "\n".join(during)
    assert not [line for line in during if line.startswith("Traceback")], "\n".join(during)

    server.port = port  # the services know this address
    await server.start()
    await wait_until(
        lambda: _health(stack.url)[0] == 200, what=f"/healthz to see {name} back", timeout_s=30
    )


async def test_a_nats_outage_is_logged_once_and_healthz_says_so(outage_stack: _Stack) -> None:
    await _outage(outage_stack, outage_stack.nats, "NATS")
    lines = outage_stack.lines()
    for service in _SERVICES:
        assert any(f"clinai.{service} WARNING NATS is unreachable" in line for line in lines)

        def back(service: str = service) -> bool:
            return any(
                f"clinai.{service} WARNING NATS is reachable again" in line
                for line in outage_stack.lines()
            )

        await wait_until(back, what=f"{service} to see NATS back", timeout_s=15)


async def test_a_postgres_outage_is_bounded_in_the_logs_and_healthz_says_so(
    outage_stack: _Stack,
) -> None:
    await _outage(outage_stack, outage_stack.postgres, "Postgres")
    # The pools reconnected, and said so once; the projector waited for Postgres
    # instead of exiting, and projects again.
    assert all(proc.poll() is None for proc in outage_stack.procs)
    lines = outage_stack.lines()
    for service in ("api", "notifier"):

        def back(service: str = service) -> bool:
            return any(
                f"clinai.{service} WARNING Postgres is reachable again" in line
                for line in outage_stack.lines()
            )

        await wait_until(back, what=f"{service} to see Postgres back", timeout_s=15)
        assert any(f"clinai.{service} WARNING Postgres is unreachable" in line for line in lines)
    reply = await Client(outage_stack.url, outage_stack.key).post(
        "/v1/users", json={"name": "after-the-outage"}
    )
    assert reply.status == 201, reply.body
    await asyncio.to_thread(wait_key_works, outage_stack.url, reply.body["api_key"]["secret"])

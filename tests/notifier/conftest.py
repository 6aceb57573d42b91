"""Fixtures of the notifier tests: real NATS, Postgres and the loopback webhook receiver
(tests/conftest.py), and the projector and the notifier as tasks of the test."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import msgspec
import pytest

from events import EventStore
from projections import Projector
from services.domain.destinations import DestinationPolicy
from services.domain.signing import master_key
from services.domain.webhooks import WebhookCommands
from services.notifier import run_notifier
from services.settings import Settings
from tests._infra import migrate
from tests.services._support import FAST_CONSUMER


@pytest.fixture
async def settings(tmp_path: Path, nats_url: str, database_url: str) -> Settings:
    await migrate(database_url)
    return Settings(
        data_dir=tmp_path,
        nats_url=nats_url,
        database_url=database_url,
        signing_key="s" * 40,
        webhook_key="w" * 40,
        webhook_allow_networks="127.0.0.0/8",
        webhook_timeout_s=5.0,
        webhook_retry_base_s=0.1,
        webhook_retry_max_delay_s=0.3,
        webhook_disable_after_failures=1000,
    )


@pytest.fixture
async def projector(settings: Settings, store: EventStore) -> AsyncIterator[None]:
    assert settings.database_url is not None
    stop = asyncio.Event()
    task = asyncio.create_task(Projector(settings.database_url, store).run(stop))
    yield
    stop.set()
    await asyncio.wait_for(task, 10)


class Notifiers:
    """Notifier services as tasks of the test; each started with setting overrides."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._running: list[tuple[asyncio.Event, asyncio.Task[None]]] = []

    def start(self, **overrides: Any) -> tuple[asyncio.Event, asyncio.Task[None]]:
        stop = asyncio.Event()
        settings = msgspec.structs.replace(self.settings, **overrides)
        task = asyncio.create_task(run_notifier(settings, stop=stop, consumer=FAST_CONSUMER))
        self._running.append((stop, task))
        return stop, task

    async def stop(self, which: tuple[asyncio.Event, asyncio.Task[None]]) -> None:
        stop, task = which
        stop.set()
        await asyncio.wait_for(task, 15)

    async def stop_all(self) -> None:
        for stop, _ in self._running:
            stop.set()
        for _, task in self._running:
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait_for(task, 15)


@pytest.fixture
async def notifiers(settings: Settings, projector: None) -> AsyncIterator[Notifiers]:
    running = Notifiers(settings)
    try:
        yield running
    finally:
        await running.stop_all()


@pytest.fixture
def webhooks(store: EventStore, settings: Settings) -> WebhookCommands:
    return WebhookCommands(
        store,
        master_key(settings),
        policy=DestinationPolicy.from_setting(settings.webhook_allow_networks),
        rotation_grace_s=3600,
    )

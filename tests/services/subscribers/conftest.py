"""A durable consumer to drive in the subscriber tests: `consume(handler)` starts one
(more than once: processes on the same durable) and returns the event that stops it."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable

import nats
import pytest
from nats.aio.client import Client as NATS

from services.commands import Commands
from services.settings import Settings
from services.subscribers import (
    ConsumerOptions,
    Delivery,
    Durable,
    durable_route,
    durable_router,
    subscribed,
)
from tests.services._support import ADMIN, FAST_CONSUMER

SUBJECTS = ("clinai.model.*.ModelCreated",)
DURABLE = "test"

Run = Callable[..., asyncio.Event]


@pytest.fixture
async def consume(settings: Settings) -> AsyncIterator[Run]:
    running: list[tuple[asyncio.Event, asyncio.Task[None]]] = []
    url = settings.nats_url
    assert url is not None

    async def connect() -> NATS:
        return await nats.connect(url)

    async def run(
        durable: Durable, handler: Callable[[Delivery], Awaitable[None]], stop: asyncio.Event
    ) -> None:
        router = durable_router(durable, [durable_route(handler, durable, concurrency=2)])
        async with subscribed(connect, durable, router):
            await stop.wait()

    def start(
        handler: Callable[[Delivery], Awaitable[None]], options: ConsumerOptions = FAST_CONSUMER
    ) -> asyncio.Event:
        durable = Durable(
            stream=settings.stream_name, name=DURABLE, subjects=SUBJECTS, options=options
        )
        stop = asyncio.Event()
        running.append((stop, asyncio.create_task(run(durable, handler, stop))))
        return stop

    yield start
    for stop, task in running:
        stop.set()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(task, 10)


async def create_model(commands: Commands) -> str:
    model_id, _ = await commands.create_model(
        ADMIN, name=f"m-{uuid.uuid4().hex[:8]}", description="", visibility="private"
    )
    return model_id

"""A durable consumer to drive in the subscriber tests: `consume(handler)` starts one
(more than once: processes on the same durable) and returns the event that stops it."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable

import nats
import pytest

from services.domain import Commands
from services.settings import Settings
from services.subscribers import (
    ConsumerOptions,
    Delivery,
    Durable,
    durable_route,
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

    async def run(
        durable: Durable, handler: Callable[[Delivery], Awaitable[None]], stop: asyncio.Event
    ) -> None:
        nc = await nats.connect(url)  # a process of its own
        try:
            async with subscribed(nc, durable, [durable_route(handler, durable)]):
                await stop.wait()
        finally:
            await nc.drain()

    def start(
        handler: Callable[[Delivery], Awaitable[None]],
        options: ConsumerOptions = FAST_CONSUMER,
        concurrency: int = 2,
    ) -> asyncio.Event:
        durable = Durable(
            stream=settings.stream_name,
            name=DURABLE,
            subjects=SUBJECTS,
            concurrency=concurrency,
            options=options,
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

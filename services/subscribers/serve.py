"""Running a service's durable: a FastStream broker on its own NATS connection, started
and stopped as one async context, with the durable kept in existence meanwhile."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import AsyncIterator, Awaitable, Callable

import nats.errors
from faststream.nats import NatsBroker, NatsRouter
from nats.aio.client import Client as NATS
from nats.js.errors import NotFoundError

from services.subscribers.options import ensure_consumer
from services.subscribers.route import Durable

__all__ = ["Connect", "quietly", "stop_on_signals", "subscribed"]

log = logging.getLogger("clinai.consumer")

Connect = Callable[[], Awaitable[NATS]]


class _Broker(NatsBroker):
    """A broker on a connection opened by `connect` (the services' own, which logs an
    outage once rather than a traceback per reconnect attempt)."""

    def __init__(self, connect: Connect, router: NatsRouter, grace_s: float) -> None:
        super().__init__(
            routers=[router],
            apply_types=False,  # handlers take the decoded `Delivery` as it is
            serializer=None,
            logger=None,  # `Answering` logs what goes wrong; nothing per message
            graceful_timeout=grace_s,
        )
        self._open = connect

    async def _connect(self) -> NATS:
        connection = await self._open()
        self.config.connect(connection)
        return connection


@contextlib.asynccontextmanager
async def subscribed(connect: Connect, durable: Durable, router: NatsRouter) -> AsyncIterator[None]:
    """`router`'s handlers consume `durable` inside the context. On leaving, no more
    messages are asked for, running handlers get `stop_grace_s` to finish, then they are
    cancelled and their messages nak'ed for another process."""
    broker = _Broker(connect, router, durable.options.stop_grace_s)
    nc = await broker.connect()
    try:
        js = nc.jetstream()
        await ensure_consumer(js, durable.stream, durable.name, durable.subjects, durable.options)
        await broker.start()
        keeper = asyncio.create_task(_keep(nc, durable))
        try:
            yield
        finally:
            keeper.cancel()
    finally:
        await broker.stop()


async def _keep(nc: NATS, durable: Durable) -> None:
    """Make the durable again when it is gone (deleted by an operator, lost with a
    stream): messages flow again within `check_s`."""
    js = nc.jetstream()
    options = durable.options
    while True:
        await asyncio.sleep(options.check_s)
        if not nc.is_connected:
            continue  # reconnecting: the client logs the outage
        try:
            await js.consumer_info(durable.stream, durable.name)
        except NotFoundError:
            log.warning("consumer %s: gone from the server; making it again", durable.name)
            with contextlib.suppress(nats.errors.Error, TimeoutError):
                await ensure_consumer(js, durable.stream, durable.name, durable.subjects, options)
        except (nats.errors.Error, TimeoutError) as err:
            log.warning("consumer %s: cannot reach the consumer (%r)", durable.name, err)


def stop_on_signals() -> asyncio.Event:
    """An event set on SIGTERM or SIGINT: a service's graceful stop."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    return stop


async def quietly(close: Callable[[], Awaitable[None]]) -> None:
    """`close()`, its failure ignored: for a service's lifespan, whose last steps (a
    drain on a connection already lost, say) must not hide why it stopped."""
    with contextlib.suppress(Exception):
        await close()

"""Running a service's durable: a FastStream broker on the service's NATS connection,
started and stopped as one async context, with the durable kept in existence meanwhile."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any

import nats.errors
from faststream.nats import NatsBroker, NatsRoute, NatsRouter
from nats.aio.client import Client as NATS
from nats.js.errors import NotFoundError

from services.subscribers._answer import Answering
from services.subscribers._pull import use_fast_batch_pull
from services.subscribers._standing import StandingPulls
from services.subscribers.options import ensure_consumer
from services.subscribers.route import Durable

__all__ = ["quietly", "stop_on_signals", "subscribed"]

log = logging.getLogger("clinai.consumer")


class _Broker(NatsBroker):
    """A broker on the service's own connection: FastStream's acks and pull requests
    go out with the service's appends, and the connection is the service's to close."""

    def __init__(self, nc: NATS, router: NatsRouter) -> None:
        super().__init__(
            routers=[router],
            apply_types=False,  # handlers take the decoded `Delivery` as it is
            serializer=None,
            logger=None,  # `Answering` logs what goes wrong; nothing per message
            graceful_timeout=None,  # handlers run in `Answering`'s tasks; it waits for them
        )
        self._nc = nc

    async def _connect(self) -> NATS:
        self.config.connect(self._nc)
        return self._nc

    async def stop(self, *exc_info: Any) -> None:
        self._connection = None  # not drained here: the service closes it
        await super().stop(*exc_info)


@contextlib.asynccontextmanager
async def subscribed(
    nc: NATS, durable: Durable, routes: Sequence[NatsRoute]
) -> AsyncIterator[None]:
    """`routes` (on `durable`) consume inside the context. On leaving, no more messages
    are asked for, running handlers get `stop_grace_s` to finish, then they are
    cancelled and their messages nak'ed for another process."""
    options = durable.options
    answering = Answering(durable.name, options, durable.concurrency)
    pulls = StandingPulls(
        durable=durable.name,
        next_subject=f"$JS.API.CONSUMER.MSG.NEXT.{durable.stream}.{durable.name}",
        concurrency=durable.concurrency,
        max_batch=options.pull_batch,
        expires_s=options.pull_expires_s,
        heartbeat_s=options.pull_heartbeat_s,
        room=answering.room,
    )
    answering.on_room = pulls.top_up
    router = NatsRouter(handlers=routes, middlewares=[answering])
    use_fast_batch_pull(router, pulls, options.pull_linger_s)
    broker = _Broker(nc, router)
    js = nc.jetstream()
    await ensure_consumer(js, durable.stream, durable.name, durable.subjects, durable.options)
    await broker.start()
    keeper = asyncio.create_task(_keep(nc, durable))
    try:
        yield
    finally:
        keeper.cancel()
        await broker.stop()
        await answering.close()


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

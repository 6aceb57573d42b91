"""Pull requests kept open on the server, so that messages flow in as they are appended
(what nats.go calls `Consume`): the fetching under `services.consumer.run_consumer`."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

import nats.errors
import orjson
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js.api import Header, StatusCode

__all__ = ["PullFlow"]

log = logging.getLogger("clinai.consumer")

# On a pull request's end (status 408, 409): how many of its messages it did not deliver.
_PENDING_MESSAGES = "Nats-Pending-Messages"


class PullFlow:
    """Pull requests kept open on the server, so that messages flow in as they are
    appended (what nats.go calls `Consume`).

    A request asks for as many messages as there is room for: the handlers running and
    the messages still requested stay within `concurrency`. The next request goes out
    when nothing is requested any more, or half the room is free: one request per batch
    of messages, not one per message. A request ends when the server has delivered all
    it asked for, or when it expires (status 408, with the number it did not deliver).
    While a request waits, the server sends a heartbeat (status 100) every
    `idle_heartbeat_s`; when nothing has been heard for two of those, or the client has
    reconnected, the requests are taken as lost and asked for again."""

    def __init__(
        self,
        nc: NATS,
        *,
        recreate: Callable[[], Awaitable[None]],
        next_subject: str,
        handle: Callable[[Msg], Coroutine[Any, Any, None]],
        concurrency: int,
        pull_expires_s: float,
        idle_heartbeat_s: float,
        durable: str,
    ) -> None:
        self._nc = nc
        self._recreate = recreate
        self._next_subject = next_subject
        self._handle = handle
        self._concurrency = concurrency
        self._expires_ns = int(pull_expires_s * 1e9)
        self._heartbeat_ns = int(idle_heartbeat_s * 1e9)
        self._silence_s = 2 * idle_heartbeat_s
        self._durable = durable
        self._inbox = nc.new_inbox()
        self._loop = asyncio.get_running_loop()
        self._sub: Subscription | None = None
        self._requested = 0  # messages the server may still deliver on open requests
        self._running: set[asyncio.Task[None]] = set()
        self._chores: set[asyncio.Task[None]] = set()  # requests and naks being sent
        self._heard = self._loop.time()
        self._lost = False  # a request ended in an error: recreate the consumer
        self._reconnects = nc.stats["reconnects"]
        self._closing = False

    async def start(self) -> None:
        self._sub = await self._nc.subscribe(self._inbox, cb=self._on_msg)
        self._top_up()

    async def check(self) -> None:
        """Ask again for what was requested and is presumed lost; recreate the consumer
        when a request said it was gone."""
        if not self._nc.is_connected:
            return  # the client is reconnecting (and logs the outage): nothing to ask yet
        reconnects = self._nc.stats["reconnects"]
        if reconnects != self._reconnects:  # open requests died with the old connection
            self._reconnects, self._lost = reconnects, True
        silent = self._loop.time() - self._heard > self._silence_s
        if not (self._lost or (self._requested and silent)):
            self._top_up()
            return
        log.warning("consumer %s: pull requests lost; asking again", self._durable)
        self._requested, self._lost = 0, False
        self._heard = self._loop.time()
        try:
            await self._recreate()
        except nats.errors.Error as err:  # the server is away: try again at the next check
            log.warning("consumer %s: cannot reach the consumer (%r)", self._durable, err)
            return
        self._top_up()

    async def close(self, grace_s: float) -> None:
        """Stop asking; messages still arriving are nak'ed for another process; running
        handlers get `grace_s` to finish."""
        self._closing = True
        if self._sub is not None:
            with contextlib.suppress(nats.errors.Error, TimeoutError):
                await asyncio.wait_for(self._sub.drain(), max(grace_s, 1.0))  # type: ignore[no-untyped-call]
        await _drain(self._running, grace_s)
        if self._chores:
            await asyncio.wait(set(self._chores), timeout=grace_s)

    def _top_up(self) -> None:
        free = self._concurrency - len(self._running) - self._requested
        if self._closing or free <= 0 or (self._requested and 2 * free < self._concurrency):
            return
        if not self._requested:  # nothing was open to hear from: silence until now is no loss
            self._heard = self._loop.time()
        self._requested += free
        self._chore(self._request(free))

    async def _request(self, batch: int) -> None:
        payload = orjson.dumps(
            {"batch": batch, "expires": self._expires_ns, "idle_heartbeat": self._heartbeat_ns}
        )
        try:
            await self._nc.publish(self._next_subject, payload, reply=self._inbox)
        except nats.errors.Error as err:
            self._requested = max(0, self._requested - batch)  # the next check asks again
            log.warning("consumer %s: could not ask for messages (%r)", self._durable, err)

    async def _on_msg(self, msg: Msg) -> None:
        self._heard = self._loop.time()
        status = msg.headers.get(Header.STATUS) if msg.headers and not msg.data else None
        if status is None:
            self._requested = max(0, self._requested - 1)
            if self._closing:
                self._chore(self._nak(msg))
                return
            task = self._loop.create_task(self._handle(msg))
            self._running.add(task)
            task.add_done_callback(self._handled)
        elif status != StatusCode.CONTROL_MESSAGE:  # 100: a heartbeat
            self._request_ended(msg, status)

    async def _nak(self, msg: Msg) -> None:
        try:
            await msg.nak()
        except nats.errors.Error as err:  # redelivered after ack_wait instead
            log.warning("consumer %s: could not nak a message (%r)", self._durable, err)

    def _request_ended(self, msg: Msg, status: str) -> None:
        headers = msg.headers or {}
        try:
            undelivered = int(headers.get(_PENDING_MESSAGES, ""))
        except ValueError:
            undelivered = self._requested  # not said: take all as gone
        self._requested = max(0, self._requested - undelivered)
        if status != StatusCode.REQUEST_TIMEOUT:  # 408: expired, the usual end
            self._lost = True
            log.warning(
                "consumer %s: pull request ended: %s %s",
                self._durable, status, headers.get(Header.DESCRIPTION, ""),
            )  # fmt: skip
        self._top_up()

    def _handled(self, task: asyncio.Task[None]) -> None:
        self._running.discard(task)
        self._top_up()

    def _chore(self, work: Awaitable[None]) -> None:
        task = asyncio.ensure_future(work)
        self._chores.add(task)
        task.add_done_callback(self._chores.discard)


async def _drain(running: set[asyncio.Task[None]], grace_s: float) -> None:
    if not running:
        return
    _, pending = await asyncio.wait(set(running), timeout=grace_s)
    for task in pending:
        task.cancel()
    if pending:
        await asyncio.wait(pending)

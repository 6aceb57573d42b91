"""Pull requests kept open on the server, so that messages flow in as they are appended
(what nats.go calls `Consume`): how `FastBatchPull` asks JetStream for messages."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

import nats.errors
import orjson
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.js.api import Header, StatusCode

__all__ = ["StandingPulls"]

log = logging.getLogger("clinai.consumer")

# On a pull request's end (status 408, 409): how many of its messages it did not deliver.
_PENDING_MESSAGES = "Nats-Pending-Messages"


class StandingPulls:
    """Pull requests for one durable, kept open on the server.

    A request asks for as many messages as there is room for (`room()`, the handlers'
    free slots) less those already asked for or received and not yet handed over: no
    message waits here without a handler to take it (and send its heartbeats). The next
    request goes out when nothing is asked for any more, or half of `concurrency` is
    free: one request per batch under load, and a lone message is delivered the moment
    it is appended, with no request sent for it. A request ends when the server has
    delivered all it asked for, or when it expires (status 408, with the number it did
    not deliver). While a request waits, the server sends a heartbeat (status 100) every
    `heartbeat_s`; when nothing has been heard for two of those, or the client has
    reconnected, the requests are taken as lost and asked for again."""

    def __init__(
        self,
        *,
        durable: str,
        next_subject: str,
        concurrency: int,
        max_batch: int,
        expires_s: float,
        heartbeat_s: float,
        room: Callable[[], int],
    ) -> None:
        self.durable = durable
        self._next_subject = next_subject
        self._concurrency = concurrency
        self._max_batch = max_batch
        self._expires_ns = int(expires_s * 1e9)
        self._heartbeat_ns = int(heartbeat_s * 1e9)
        self.heartbeat_s = heartbeat_s
        self._room = room
        self._nc: NATS | None = None
        self.inbox = ""
        self._arrived: list[Msg] = []
        self._wake = asyncio.Event()
        self.requested = 0  # messages the server may still deliver on open requests
        self.in_hand = 0  # received and being handed to handlers
        self._heard = 0.0
        self._lost = False  # a request ended in an error: ask afresh
        self._reconnects = 0
        self.closing = False
        self._sending: set[asyncio.Task[None]] = set()

    def attach(self, nc: NATS) -> str:
        """Bind to the connection; returns the inbox the requests are answered on."""
        self._nc = nc
        self.inbox = nc.new_inbox()
        self._reconnects = nc.stats["reconnects"]
        self._heard = asyncio.get_running_loop().time()
        return self.inbox

    async def take(self, linger_s: float) -> list[Msg]:
        """The messages received since the last call, once there is at least one (or
        none, after a heartbeat's wait, when the requests were checked). With
        `linger_s`, a batch that is not full waits that long for more."""
        if not self._arrived:
            self._wake.clear()
            try:
                await asyncio.wait_for(self._wake.wait(), self.heartbeat_s)
            except TimeoutError:
                self._check()
                return []
        if linger_s and len(self._arrived) < self._max_batch:
            await asyncio.sleep(linger_s)
        messages, self._arrived = self._arrived, []
        self.in_hand = len(messages)
        return messages

    def handed_over(self) -> None:
        """The messages of the last `take` are with their handlers (or handed back)."""
        self.in_hand = 0
        self.top_up()

    async def on_msg(self, msg: Msg) -> None:
        nc = self._nc
        if nc is None:
            return
        self._heard = asyncio.get_running_loop().time()
        headers = msg.headers
        status = headers.get(Header.STATUS) if headers and not msg.data else None
        if status is None:
            self.requested = max(0, self.requested - 1)
            if self.closing:
                await _nak(msg)
                return
            self._arrived.append(msg)
            self._wake.set()
        elif status != StatusCode.CONTROL_MESSAGE:  # 100: a heartbeat
            self._request_ended(headers or {}, status)

    def top_up(self) -> None:
        if self.closing or self._nc is None:
            return
        free = self._room() - self.requested - len(self._arrived) - self.in_hand
        if free <= 0 or (self.requested and 2 * free < self._concurrency):
            return
        if not self.requested:  # nothing was open to hear from: silence until now is no loss
            self._heard = asyncio.get_running_loop().time()
        batch = min(free, self._max_batch)
        self.requested += batch
        task = asyncio.get_running_loop().create_task(self._request(batch))
        self._sending.add(task)
        task.add_done_callback(self._sending.discard)

    def _check(self) -> None:
        """Ask again for what was requested and is presumed lost."""
        nc = self._nc
        if nc is None or not nc.is_connected:
            return  # reconnecting (the client logs the outage): nothing to ask yet
        reconnects = nc.stats["reconnects"]
        if reconnects != self._reconnects:  # open requests died with the old connection
            self._reconnects, self._lost = reconnects, True
        silent = asyncio.get_running_loop().time() - self._heard > 2 * self.heartbeat_s
        if self._lost or (self.requested and silent):
            log.warning("consumer %s: pull requests lost; asking again", self.durable)
            self.requested, self._lost = 0, False
        self.top_up()

    async def _request(self, batch: int) -> None:
        nc = self._nc
        if nc is None:
            return
        payload = orjson.dumps(
            {"batch": batch, "expires": self._expires_ns, "idle_heartbeat": self._heartbeat_ns}
        )
        try:
            await nc.publish(self._next_subject, payload, reply=self.inbox)
        except nats.errors.Error as err:
            self.requested = max(0, self.requested - batch)  # the next check asks again
            log.warning("consumer %s: could not ask for messages (%r)", self.durable, err)

    def _request_ended(self, headers: dict[str, str], status: str) -> None:
        try:
            undelivered = int(headers.get(_PENDING_MESSAGES, ""))
        except ValueError:
            undelivered = self.requested  # not said: take all as gone
        self.requested = max(0, self.requested - undelivered)
        if status != StatusCode.REQUEST_TIMEOUT:  # 408: expired, the usual end
            self._lost = True
            log.warning(
                "consumer %s: pull request ended: %s %s",
                self.durable, status, headers.get(Header.DESCRIPTION, ""),
            )  # fmt: skip
        self._wake.set()  # the consume loop asks again
        self.top_up()

    def hand_back(self) -> list[Msg]:
        """On stop: the messages received and not yet taken."""
        messages, self._arrived = self._arrived, []
        return messages


async def _nak(msg: Msg) -> None:
    try:
        await msg.nak()
    except nats.errors.Error as err:  # redelivered after ack_wait instead
        log.warning("could not nak a message (%r); it will be redelivered", err)

"""A real HTTP webhook receiver on loopback (aiohttp), as a subscriber would run one:
it verifies Standard Webhooks signatures and answers with a per-path status."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import time
from collections.abc import Callable

import msgspec
import orjson
from aiohttp import web

__all__ = ["Received", "Receiver", "standard_verify"]


class Received(msgspec.Struct, frozen=True):
    path: str
    msg_id: str
    timestamp: int
    signatures: tuple[str, ...]
    body: bytes

    @property
    def json(self) -> dict[str, object]:
        data: dict[str, object] = orjson.loads(self.body)
        return data

    @property
    def type(self) -> object:
        return self.json["type"]


def standard_verify(secret: str, received: Received, tolerance_s: float = 300) -> bool:
    """The Standard Webhooks verification, written from the spec (not our signer)."""
    if abs(time.time() - received.timestamp) > tolerance_s:
        return False
    key = base64.b64decode(secret.removeprefix("whsec_"))
    signed = f"{received.msg_id}.{received.timestamp}.".encode() + received.body
    expected = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    for candidate in received.signatures:
        version, _, value = candidate.partition(",")
        if version == "v1" and hmac.compare_digest(value, expected):
            return True
    return False


class Receiver:
    """`status[path]` is what the path answers (200 by default); a path in `hold`
    answers only once its event is set (a slow endpoint)."""

    def __init__(self) -> None:
        self.received: list[Received] = []
        self.status: dict[str, int] = {}
        self.hold: dict[str, asyncio.Event] = {}
        self._changed = asyncio.Condition()
        self._runner: web.AppRunner | None = None
        self.port = 0

    def url(self, path: str, host: str = "127.0.0.1") -> str:
        return f"http://{host}:{self.port}{path}"

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        server = site._server
        assert server is not None
        self.port = server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _handle(self, request: web.Request) -> web.Response:
        received = Received(
            path=request.path,
            msg_id=request.headers["webhook-id"],
            timestamp=int(request.headers["webhook-timestamp"]),
            signatures=tuple(request.headers["webhook-signature"].split()),
            body=await request.read(),
        )
        async with self._changed:
            self.received.append(received)
            self._changed.notify_all()
        held = self.hold.get(request.path)
        if held is not None:
            await held.wait()
        return web.Response(status=self.status.get(request.path, 200))

    def at(self, path: str) -> list[Received]:
        return [r for r in self.received if r.path == path]

    async def wait_for(
        self, condition: Callable[[list[Received]], bool], timeout: float = 15.0
    ) -> list[Received]:
        """The requests so far, once `condition` holds for them (fails past `timeout`)."""
        async with asyncio.timeout(timeout):
            async with self._changed:
                await self._changed.wait_for(lambda: condition(self.received))
        return list(self.received)

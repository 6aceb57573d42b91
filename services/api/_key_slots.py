"""Commands of one API key in progress at once, per API process.

An API process handles requests on one event loop: a key sending 32 commands at once
would have every other caller's request wait behind its 32. With at most `limit` of a
key's commands in progress (the others wait their turn here, before their bodies are
read), another key's request waits behind at most that many. A key's throughput does
not suffer: one process works on a few requests at a time either way.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from starlette.types import ASGIApp, Receive, Scope, Send

__all__ = ["SLOT_STATE", "KeySlots", "ReleaseKeySlot"]

SLOT_STATE = "command_slot"  # the release of a request's slot, in `request.state`


class KeySlots:
    def __init__(self, limit: int) -> None:
        if limit < 0:
            raise ValueError(f"limit must not be negative (0: none), got {limit}")
        self._limit = limit
        self._semaphores: dict[str, asyncio.Semaphore] = {}
        self._users: dict[str, int] = {}  # key -> requests holding or awaiting its semaphore

    async def acquire(self, key: str) -> Callable[[], None]:
        """Wait for one of `key`'s slots; returns the release, which may be called more
        than once (only the first call counts)."""
        if not self._limit:
            return _nothing
        semaphore = self._semaphores.get(key)
        if semaphore is None:
            semaphore = self._semaphores[key] = asyncio.Semaphore(self._limit)
        self._users[key] = self._users.get(key, 0) + 1
        try:
            await semaphore.acquire()
        except BaseException:
            self._leave(key)
            raise
        released = False

        def release() -> None:
            nonlocal released
            if not released:
                released = True
                semaphore.release()
                self._leave(key)

        return release

    def _leave(self, key: str) -> None:
        users = self._users[key] - 1
        if users:
            self._users[key] = users
        else:  # nobody holds or waits: forget the key
            del self._users[key]
            del self._semaphores[key]


def _nothing() -> None:
    return None


class ReleaseKeySlot:
    """ASGI middleware: a command's slot is released once its response is sent, whatever
    happened (a handler may release it sooner). Queries pass straight through."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD"):
            await self.app(scope, receive, send)
            return
        try:
            await self.app(scope, receive, send)
        finally:
            release = (scope.get("state") or {}).get(SLOT_STATE)
            if callable(release):
                release()

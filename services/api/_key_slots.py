"""Commands of one API key in progress at once, per API process, while others work.

An API process handles requests on one event loop: a key sending 32 commands at once
would have every other caller's request wait behind its 32. While other keys have
commands in progress or waiting, or sent one in the last `recent_s`, at most `limit`
of a key's commands proceed (the others wait their turn here, before their bodies are
read), so another key's request waits behind at most that many. A key alone is not
held back: its throughput needs many requests in flight (each waits on NATS and
Postgres round trips).
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable

from services.turns import wait_turn

__all__ = ["SLOT_STATE", "KeySlots"]

SLOT_STATE = "command_slot"  # the release of a request's slot, in `request.state`


_RECENT_KEPT = 1000


class KeySlots:
    def __init__(
        self, limit: int, *, recent_s: float = 1.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if limit < 0:
            raise ValueError(f"limit must not be negative (0: none), got {limit}")
        self._limit = limit
        self._recent_s = recent_s
        self._clock = clock
        self._seen: dict[str, float] = {}  # key -> when it last started a command
        self._active: dict[str, int] = {}  # key -> its commands in progress
        self._waiting: dict[str, deque[asyncio.Future[None]]] = {}

    async def acquire(self, key: str) -> Callable[[], None]:
        """Wait for `key`'s turn; returns the release, which may be called more than
        once (only the first call counts)."""
        if not self._limit:
            return _nothing
        if not self._waiting.get(key) and self._may_start(key):
            self._start(key)
        else:
            waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._waiting.setdefault(key, deque()).append(waiter)
            await wait_turn(
                waiter,
                hand_on=lambda: self._finish(key),
                forget=lambda: self._forget(key, waiter),
            )
        released = False

        def release() -> None:
            nonlocal released
            if not released:
                released = True
                self._finish(key)

        return release

    def _may_start(self, key: str) -> bool:
        if self._active.get(key, 0) < self._limit:
            return True
        if any(k != key for k in self._active) or any(k != key for k in self._waiting):
            return False
        since = self._clock() - self._recent_s
        return not any(k != key and at > since for k, at in self._seen.items())

    def _start(self, key: str) -> None:
        self._active[key] = self._active.get(key, 0) + 1
        now = self._clock()
        if key not in self._seen and len(self._seen) >= _RECENT_KEPT:
            since = now - self._recent_s
            self._seen = {k: at for k, at in self._seen.items() if at > since}
        self._seen[key] = now

    def _finish(self, key: str) -> None:
        count = self._active[key] - 1
        if count:
            self._active[key] = count
        else:
            del self._active[key]
        self._dispatch()

    def _dispatch(self) -> None:
        for key in list(self._waiting):
            queue = self._waiting[key]
            while queue and self._may_start(key):
                waiter = queue.popleft()
                if waiter.done():
                    continue
                self._start(key)
                waiter.set_result(None)
            if not queue:
                del self._waiting[key]

    def _forget(self, key: str, waiter: asyncio.Future[None]) -> None:
        queue = self._waiting.get(key)
        if queue is not None and waiter in queue:
            queue.remove(waiter)
            if not queue:
                del self._waiting[key]
                self._dispatch()  # a key over its limit may go on alone now


def _nothing() -> None:
    return None

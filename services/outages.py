"""Logging a dependency's outage once, not once per failure.

While NATS, Postgres or the blob store is away, every request and every reconnect
attempt fails; logging each (with its traceback) wrote ~820,000 lines in a 4.5-minute
outage. An `Outage` logs the first failure as one line ("Postgres is unreachable: …"),
counts the ones that follow, and logs one line when the dependency answers again
("Postgres is reachable again after 12.3 s; 417 failures meanwhile"). Each service
keeps one per dependency it uses and reports to it where it meets the failure: the
NATS client's callbacks (`nats_callbacks`), the API's exception handlers, a consumer.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import NamedTuple

from nats.aio.client import Client as NATS

__all__ = ["NatsCallbacks", "Outage", "nats_callbacks", "report_library_failures"]


class Outage:
    """The state of one dependency as this process sees it: up, or down since when and
    with how many failures. Not thread-safe; use it from the event loop."""

    def __init__(
        self,
        name: str,
        logger: logging.Logger,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.name = name
        self.log = logger
        self._clock = clock
        self._down_since: float | None = None
        self._failures = 0
        self._listeners: list[Callable[[], None]] = []
        self.reason = ""

    def on_recovered(self, listener: Callable[[], None]) -> None:
        """Call `listener` (on the event loop) each time the dependency is back."""
        self._listeners.append(listener)

    def forget(self, listener: Callable[[], None]) -> None:
        """Undo `on_recovered(listener)`."""
        self._listeners.remove(listener)

    @property
    def down(self) -> bool:
        return self._down_since is not None

    @property
    def down_for_s(self) -> float:
        """How long it has been down (0 while up)."""
        return 0.0 if self._down_since is None else self._clock() - self._down_since

    @property
    def failures(self) -> int:
        """Failures counted since it went down (0 while up)."""
        return self._failures

    def failed(self, err: BaseException | str) -> None:
        """One failure to reach it: the first of an outage is logged, the rest counted."""
        self._failures += 1
        if self._down_since is not None:
            return
        self._down_since = self._clock()
        self.reason = err if isinstance(err, str) else _describe(err)
        self.log.warning(
            "%s is unreachable: %s (failures are counted until it is back)", self.name, self.reason
        )

    def recovered(self) -> None:
        """It answered: log the end of the outage, if there was one."""
        if self._down_since is None:
            return
        self.log.warning(
            "%s is reachable again after %.1f s; %d failure(s) meanwhile",
            self.name, self._clock() - self._down_since, self._failures,
        )  # fmt: skip
        self._down_since = None
        self._failures = 0
        self.reason = ""
        for listener in self._listeners:
            listener()


class _ToOutage(logging.Filter):
    def __init__(self, outage: Outage) -> None:
        super().__init__()
        self._outage = outage

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info is not None and record.exc_info[1] is not None:
            self._outage.failed(record.exc_info[1])
            return False
        return True


def report_library_failures(logger: logging.Logger, outage: Outage) -> None:
    """Failures a library logs with a traceback at each retry (asyncpg's pool, restoring
    its connections) are counted by `outage` instead of logged. It replaces an earlier
    call's `outage` (a process that opened the service again)."""
    for earlier in [f for f in logger.filters if isinstance(f, _ToOutage)]:
        logger.removeFilter(earlier)
    logger.addFilter(_ToOutage(outage))


def _describe(err: BaseException) -> str:
    text = str(err).strip()
    return f"{type(err).__name__}: {text}" if text else type(err).__name__


class NatsCallbacks(NamedTuple):
    error_cb: Callable[[Exception], Awaitable[None]]
    disconnected_cb: Callable[[], Awaitable[None]]
    reconnected_cb: Callable[[], Awaitable[None]]


def nats_callbacks(outage: Outage, client: NATS) -> NatsCallbacks:
    """`error_cb`, `disconnected_cb` and `reconnected_cb` for `client.connect` that report
    to `outage` instead of logging a traceback per reconnect attempt (nats.py's default).
    An error while connected (a slow consumer, say) is one line; closing is no outage."""

    async def error_cb(err: Exception) -> None:
        if client.is_connected:
            outage.log.warning("%s: %s", outage.name, _describe(err))
        elif not client.is_closed:
            outage.failed(err)

    async def disconnected_cb() -> None:
        if not client.is_closed:
            outage.failed("the connection was lost")

    async def reconnected_cb() -> None:
        outage.recovered()

    return NatsCallbacks(error_cb, disconnected_cb, reconnected_cb)

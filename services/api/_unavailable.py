"""Outages of what the API depends on, answered 503 with Retry-After and a detail that
says what is down: mapped once, by exception class, in the app's exception handlers.

- Postgres: asyncpg's connection-failure classes, an operator's intervention (shutdown,
  starting up) and insufficient resources (too many connections, disk full);
- NATS: the event store's `StreamUnavailableError` and nats.py's connection and timeout
  classes;
- the blob store: its `BlobUnavailableError` (S3 unreachable, the bucket missing, the
  credentials refused; the detail logged, the answer naming only the blob store);
- an `OSError` (refused, reset, timed out, disk full) is told by where it was raised:
  inside asyncpg it is Postgres, inside nats.py NATS, inside the blob store the blob
  store. An `OSError` from anywhere else is a defect of ours, answered by the catch-all
  (500) like any other; a full disk is 503 wherever it is hit.
"""

from __future__ import annotations

import errno
import logging
import traceback
from collections.abc import Awaitable, Callable
from typing import Final

import asyncpg
import nats.errors
import nats.js.errors
from starlette.requests import Request
from starlette.responses import Response

from events import StreamUnavailableError
from services.api.problems import problem_response
from services.blobstore import BlobUnavailableError

__all__ = ["POSTGRES_DOWN", "RETRY_AFTER_S", "unavailable_handlers"]

log = logging.getLogger("clinai.api")

Handler = Callable[[Request, Exception], Awaitable[Response]]

RETRY_AFTER_S: Final = 2

_POSTGRES: Final = "Postgres (the read models)"
_NATS: Final = "NATS (the event log)"
_BLOBS: Final = "the blob store"

POSTGRES_DOWN: Final[tuple[type[Exception], ...]] = (
    asyncpg.PostgresConnectionError,
    asyncpg.exceptions.OperatorInterventionError,
    asyncpg.exceptions.InsufficientResourcesError,
    # A pooled connection left mid-operation when Postgres went away under it ("cannot
    # switch to state ..."): seen while Postgres restarted under load.
    asyncpg.InternalClientError,
)
_NATS_CLASSES: Final[tuple[type[Exception], ...]] = (
    nats.errors.TimeoutError,
    nats.errors.ConnectionClosedError,
    nats.errors.ConnectionReconnectingError,
    nats.errors.NoServersError,
    nats.errors.NoRespondersError,
    nats.errors.OutboundBufferLimitError,
    nats.errors.StaleConnectionError,
    nats.js.errors.ServiceUnavailableError,
    nats.js.errors.NoStreamResponseError,
)
# Where an OSError was raised, by the module's name: (prefix, what is down).
_ORIGINS: Final = (
    ("asyncpg", _POSTGRES),
    ("nats", _NATS),
    ("services.blobstore", _BLOBS),
    ("aiobotocore", _BLOBS),
    ("botocore", _BLOBS),
)
_DISK_FULL: Final = frozenset({errno.ENOSPC, errno.EDQUOT})


def _outage(what: str) -> Response:
    return problem_response(
        503,
        "Service unavailable",
        f"{what} cannot be reached right now: retry in {RETRY_AFTER_S} s (a command with the "
        "same Idempotency-Key, so that it is applied once)",
        headers={"Retry-After": str(RETRY_AFTER_S)},
    )


def _origin(err: BaseException) -> str | None:
    """What is down, from the innermost frame of a known client library the error
    passed through (None: it was raised by none of them)."""
    found = None
    for frame, _ in traceback.walk_tb(err.__traceback__):
        module = str(frame.f_globals.get("__name__", ""))
        for prefix, what in _ORIGINS:
            if module == prefix or module.startswith(prefix + "."):
                found = what
    return found


async def _postgres(request: Request, exc: Exception) -> Response:
    log.debug("Postgres unavailable on %s %s: %r", request.method, request.url.path, exc)
    return _outage(_POSTGRES)


async def _nats(request: Request, exc: Exception) -> Response:
    log.debug("NATS unavailable on %s %s: %r", request.method, request.url.path, exc)
    return _outage(_NATS)


async def _blobs(request: Request, exc: Exception) -> Response:
    log.warning("blob store unavailable on %s %s: %s", request.method, request.url.path, exc)
    return _outage(_BLOBS)


def _os_error(fallback: Handler) -> Handler:
    async def handler(request: Request, exc: Exception) -> Response:
        if isinstance(exc, OSError) and exc.errno in _DISK_FULL:
            log.warning("disk full on %s %s: %s", request.method, request.url.path, exc)
            return problem_response(
                503,
                "Service unavailable",
                f"the server's disk is full; retry later (Retry-After {RETRY_AFTER_S * 15} s)",
                headers={"Retry-After": str(RETRY_AFTER_S * 15)},
            )
        what = _origin(exc)
        if what is None:
            return await fallback(request, exc)  # not an outage: a defect of ours
        log.debug("%s unavailable on %s %s: %r", what, request.method, request.url.path, exc)
        return _outage(what)

    return handler


def unavailable_handlers(fallback: Handler) -> dict[type[Exception], Handler]:
    """The exception handlers for outages; `fallback` answers an `OSError` that is not
    one (the app's catch-all)."""
    handlers: dict[type[Exception], Handler] = {OSError: _os_error(fallback)}
    handlers.update(dict.fromkeys(POSTGRES_DOWN, _postgres))
    handlers.update(dict.fromkeys((*_NATS_CLASSES, StreamUnavailableError), _nats))
    handlers[BlobUnavailableError] = _blobs
    return handlers

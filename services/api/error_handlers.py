"""Every error the API answers, mapped to a problem document once, by class.

Starlette looks a raised error's handler up along its class's MRO
(`starlette/_exception_handler.py`), so routes raise the domain's errors as they are: a
subclass without an entry of its own is answered as its nearest mapped base (a new
`NotFoundError` subclass is a 404), and an error mapped nowhere reaches the catch-all,
a 500 that names an incident id and nothing of the error itself.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Awaitable, Callable, Sequence
from typing import Final

from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Match, Mount, Route
from starlette.types import Scope

from events import (
    ClinaiError,
    ConcurrencyConflictError,
    EventTooLargeError,
    IdempotencyKeyReusedError,
    UnstorableTextError,
)
from projections.queries import InvalidCursorError
from services.api._unavailable import unavailable_handlers
from services.api.problems import (
    UNSTORABLE_HINT,
    ApiError,
    handle_api_error,
    joined_detail,
    problem_response,
)
from services.domain import CommandError, ConflictError, ForbiddenError, NotFoundError
from services.domain.webhooks import InvalidWebhookError
from services.packages import PackageInvalidError

__all__ = ["exception_handlers"]

log = logging.getLogger("clinai.api")

Handler = Callable[[Request, Exception], Awaitable[Response]]

# The errors that are a caller's decision: (status, title); the detail is the error's
# message and hint.
_DECISIONS: Final[dict[type[ClinaiError], tuple[int, str]]] = {
    CommandError: (400, "Bad request"),
    NotFoundError: (404, "Not found"),
    ForbiddenError: (403, "Forbidden"),
    ConflictError: (409, "Conflict"),
    InvalidWebhookError: (422, "Invalid webhook"),
    PackageInvalidError: (422, "Invalid model package"),
    IdempotencyKeyReusedError: (422, "Idempotency-Key reused"),
}


def _decision(status: int, title: str) -> Handler:
    async def handler(request: Request, exc: Exception) -> Response:
        if not isinstance(exc, ClinaiError):  # pragma: no cover - registered for those only
            raise exc
        return problem_response(status, title, joined_detail(exc.message, exc.hint))

    return handler


def _allowed_methods(routes: Sequence[BaseRoute], scope: Scope) -> set[str]:
    """Every method the routes take on the request's path, looking into mounts (the
    dashboard's at "" matches every path). Starlette names those of the first route that
    matches the path only, where a path's methods are often several routes, and none
    when the dashboard's mount has taken the request."""
    methods: set[str] = set()
    for route in routes:
        match, child_scope = route.matches(scope)
        if match is Match.NONE:
            continue
        if isinstance(route, Route) and route.methods:
            methods |= route.methods
        elif isinstance(route, Mount):
            methods |= _allowed_methods(route.routes, {**scope, **child_scope})
    return methods


async def _http_exception(request: Request, exc: Exception) -> Response:
    if not isinstance(exc, HTTPException):  # pragma: no cover
        raise exc
    headers = dict(exc.headers or {})
    allowed = _allowed_methods(request.scope["router"].routes, request.scope)
    if exc.status_code in (404, 405) and allowed and request.method not in allowed:
        methods = sorted(allowed)
        return problem_response(
            405,
            "Method not allowed",
            f"{request.method} is not allowed on this path; use {' or '.join(methods)}",
            headers={**headers, "Allow": ", ".join(methods)},
        )
    if exc.status_code == 404:
        return problem_response(404, "Not found", "no such endpoint; see the README for the API")
    return problem_response(exc.status_code, "Request refused", str(exc.detail), headers=headers)


async def _conflict(request: Request, exc: Exception) -> Response:
    return problem_response(
        409, "Conflict", "the resource changed concurrently; re-read it and retry"
    )


async def _too_large(request: Request, exc: Exception) -> Response:
    size = exc.size if isinstance(exc, EventTooLargeError) else 0
    return problem_response(
        413,
        "Request too large",
        f"the request would record an event of {size} bytes, more than the event log "
        "takes; send shorter fields",
    )


async def _unstorable(request: Request, exc: Exception) -> Response:
    where = exc.where if isinstance(exc, UnstorableTextError) else str(exc)
    return problem_response(
        422, "Invalid text", f"{where}, which cannot be stored; {UNSTORABLE_HINT}"
    )


async def _bad_cursor(request: Request, exc: Exception) -> Response:
    return problem_response(422, "Invalid cursor", f"{exc}")


async def _client_gone(request: Request, exc: Exception) -> Response:
    # The client closed the connection before its body arrived in full (an aborted
    # upload, a timeout on its side): no one reads this answer, and it is no defect of
    # ours, so it is neither a 500 nor a traceback in the log.
    return problem_response(
        400,
        "Request incomplete",
        "the connection closed before the request's body arrived in full; send it again",
    )


async def _internal(request: Request, exc: Exception) -> Response:
    incident = str(uuid.uuid4())
    log.exception(
        "unhandled error (incident %s) on %s %s", incident, request.method, request.url.path
    )
    return problem_response(
        500,
        "Internal error",
        f"something went wrong on our side (incident {incident}); retry, and report the "
        "incident id if it persists",
    )


def exception_handlers() -> dict[type[Exception], Handler]:
    """The app's `exception_handlers`, keyed by class; `Exception` is the catch-all."""
    handlers: dict[type[Exception], Handler] = {
        cls: _decision(status, title) for cls, (status, title) in _DECISIONS.items()
    }
    handlers.update(
        {
            ApiError: handle_api_error,
            HTTPException: _http_exception,
            ConcurrencyConflictError: _conflict,
            EventTooLargeError: _too_large,
            UnstorableTextError: _unstorable,
            InvalidCursorError: _bad_cursor,
            ClientDisconnect: _client_gone,
            **unavailable_handlers(fallback=_internal),
            Exception: _internal,
        }
    )
    return handlers

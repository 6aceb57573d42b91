"""The API's errors are mapped to problems once, by class (`services.api.error_handlers`):
a subclass without a mapping of its own is answered as its nearest mapped base, and an
error mapped nowhere is a 500 problem naming an incident, never the error's text.

The handlers are served by uvicorn from a small Starlette app whose routes raise the
errors, and fetched over HTTP."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable

import asyncpg
import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from events import ClinaiError, ConcurrencyConflictError
from services.api.error_handlers import exception_handlers
from services.domain import CommandError, ConflictError, ForbiddenError, NotFoundError
from services.domain.webhooks import InvalidWebhookError
from services.packages import PackageInvalidError
from tests._infra import wait_until
from tests.api._client import Client
from tests.api.conftest import free_port

_SECRET = "postgres://admin:hunter2@db.internal/clinai"


class _GoneError(NotFoundError):
    """A NotFoundError with no mapping of its own."""


class _NewDecision(CommandError):
    """A CommandError subclass no one mapped."""


class _Unmapped(ClinaiError):
    """A project error the API maps nowhere: a defect."""


# Each route raises a new error of its path's name.
_ERRORS: dict[str, Callable[[], BaseException]] = {
    "NotFoundError": lambda: NotFoundError("model m not found", hint="check the id"),
    "_GoneError": lambda: _GoneError("model m is gone", hint="check the id"),
    "ForbiddenError": lambda: ForbiddenError("only the owner may do that"),
    "ConflictError": lambda: ConflictError("the name is taken", hint="Pick another name."),
    "_NewDecision": lambda: _NewDecision("that cannot be done", hint="do something else"),
    "InvalidWebhookError": lambda: InvalidWebhookError("not an http(s) URL"),
    "PackageInvalidError": lambda: PackageInvalidError("not a zip", "Upload a .zip file."),
    "ConcurrencyConflictError": lambda: ConcurrencyConflictError("clinai.model.m.*", 3),
    "_Unmapped": lambda: _Unmapped(f"cannot reach {_SECRET}"),
    "KeyError": lambda: KeyError(_SECRET),
    # A pooled connection Postgres went away under (seen while it restarted under load).
    "InternalClientError": lambda: asyncpg.InternalClientError(
        "cannot switch to state 12; another operation (2) is in progress"
    ),
}


async def _raise(request: Request) -> Response:
    raise _ERRORS[request.path_params["name"]]()


@pytest.fixture
async def served() -> AsyncIterator[Client]:
    app = Starlette(routes=[Route("/{name}", _raise)], exception_handlers=exception_handlers())
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="critical"))
    serving = asyncio.create_task(server.serve())
    await wait_until(lambda: server.started, what="uvicorn started")
    try:
        yield Client(f"http://127.0.0.1:{port}", None)
    finally:
        server.should_exit = True
        await serving


@pytest.mark.parametrize(
    ("path", "status", "title", "detail"),
    [
        ("NotFoundError", 404, "Not found", "model m not found: check the id"),
        ("_GoneError", 404, "Not found", "model m is gone: check the id"),  # its base's
        ("ForbiddenError", 403, "Forbidden", "only the owner may do that"),
        ("ConflictError", 409, "Conflict", "the name is taken. Pick another name."),
        ("_NewDecision", 400, "Bad request", "that cannot be done: do something else"),
        ("InvalidWebhookError", 422, "Invalid webhook", "not an http(s) URL"),
        ("PackageInvalidError", 422, "Invalid model package", "not a zip. Upload a .zip file."),
        (
            "ConcurrencyConflictError",
            409,
            "Conflict",
            "the resource changed concurrently; re-read it and retry",
        ),
        (
            "InternalClientError",
            503,
            "Service unavailable",
            "Postgres (the read models) cannot be reached right now: retry in 2 s (a command "
            "with the same Idempotency-Key, so that it is applied once)",
        ),
    ],
)
async def test_each_error_is_answered_by_its_class_or_its_nearest_mapped_base(
    served: Client, path: str, status: int, title: str, detail: str
) -> None:
    reply = await served.get(f"/{path}")
    assert reply.status == status
    assert reply.headers["content-type"] == "application/problem+json"
    assert reply.body == {"type": "about:blank", "title": title, "status": status, "detail": detail}


@pytest.mark.parametrize("path", ["_Unmapped", "KeyError"])
async def test_an_unmapped_error_is_a_500_problem_that_leaks_nothing(
    served: Client, path: str, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.ERROR, logger="clinai.api"):
        reply = await served.get(f"/{path}")
    assert reply.status == 500
    assert reply.headers["content-type"] == "application/problem+json"
    assert set(reply.body) == {"type", "title", "status", "detail"}
    assert reply.body["title"] == "Internal error"
    assert "incident" in reply.body["detail"]
    assert "hunter2" not in str(reply.body) and path not in str(reply.body)
    # The operator's log has it, under the incident id the caller was given.
    incident = reply.body["detail"].split("(incident ")[1].split(")")[0]
    assert any(incident in r.getMessage() and r.exc_info for r in caplog.records)


async def _read_body(request: Request) -> Response:
    return Response(await request.body())


async def test_a_client_gone_before_its_body_arrived_is_no_500_and_no_traceback(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """An aborted upload (curl -m, a browser tab closed) raises ClientDisconnect where the
    route reads the body: answered by class, not logged as an incident with a traceback."""
    app = Starlette(
        routes=[Route("/", _read_body, methods=["POST"])], exception_handlers=exception_handlers()
    )
    ended: list[BaseException | None] = []

    async def recorded(scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await app(scope, receive, send)
        except BaseException as err:
            ended.append(err)
            raise
        if scope["type"] == "http":
            ended.append(None)

    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(recorded, host="127.0.0.1", port=port, log_level="critical")
    )
    serving = asyncio.create_task(server.serve())
    await wait_until(lambda: server.started, what="uvicorn started")
    try:
        with caplog.at_level(logging.ERROR):
            _reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b'POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 1000\r\n\r\n{"url":')
            await writer.drain()
            writer.close()
            await wait_until(lambda: bool(ended), what="the request handled")
        assert ended == [None]
        assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    finally:
        server.should_exit = True
        await serving

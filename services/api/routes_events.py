"""The live event stream as Server-Sent Events, read from the log with an ordered
consumer positioned at the right sequence (never a scan).

- `GET /v1/events`: the caller's own events (an admin's: everyone's), filtered by
  `?type=` (globs on the event type, comma-separated), `?aggregate=` and `?id=`; starts
  after `Last-Event-ID` (header or `?last_event_id=`), else at `?from_seq=`, else with
  the next event appended.
- `GET /v1/jobs/{id}/events`, `GET /v1/versions/{id}/events`: one resource's events from
  its first (or after `Last-Event-ID`); the stream ends after a terminal event, and a
  reconnect past it is answered 204 (which stops an EventSource).

Each event is `id: <stream sequence>`, `event: <type>`, `data: <the envelope as JSON,
with seq>`; no hash of a secret (`key_hash`, `password_hash`, `token_hash`, …) is sent.
A comment line is sent every CLINAI_SSE_HEARTBEAT_S so proxies keep the connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import fnmatch
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Annotated, Any, Final

import orjson
from msgspec import Meta
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from events import (
    TERMINAL_JOB_EVENTS,
    TERMINAL_JOB_STATUSES,
    TERMINAL_VERSION_STATUSES,
    BuildFailed,
    StoredEvent,
    VersionBuilt,
    event_to_builtins,
)
from events.subjects import AGGREGATES, PREFIX, Aggregate
from projections import queries, webhook_queries
from services.api.auth import Principal
from services.api.openapi_spec import Operation, Param, Reply, path_param
from services.api.problems import ApiError
from services.api.wiring import ApiServices, checked_id, path_id, services, visible_version
from services.domain.access import can_see_event, can_see_job, event_owner

__all__ = ["event_frame", "operations", "routes"]

_TERMINAL: Final = (*TERMINAL_JOB_EVENTS, VersionBuilt, BuildFailed)
_SECRET_FIELDS: Final = frozenset({"key_hash", "password_hash", "invitation_hash", "token_hash"})
_BAD_TOKEN: Final = frozenset(".*> \t\r\n")
_OWNER_CACHE_LIMIT: Final = 100_000

Accept = Callable[[StoredEvent], Awaitable[bool]]


def event_frame(stored: StoredEvent) -> bytes:
    """One SSE message for an event (secrets' hashes dropped)."""
    body = {"seq": stored.seq, **event_to_builtins(stored.event)}
    for field in _SECRET_FIELDS:
        body.pop(field, None)
    data = orjson.dumps(body)
    return b"id: %d\nevent: %s\ndata: %s\n\n" % (stored.seq, stored.event.type.encode(), data)


class _Ownership:
    """Who owns each event's aggregate: from the event itself when it says, else the
    read models (after they have reached the event), remembered per connection."""

    def __init__(self, svc: ApiServices, caller: Principal) -> None:
        self._svc = svc
        self._user = caller.user_id
        self._owners: dict[tuple[str, str], str | None] = {}

    async def __call__(self, stored: StoredEvent) -> bool:
        event = stored.event
        key = (event.aggregate, event.aggregate_id)
        owner = event_owner(event)
        if owner is None:
            if key in self._owners:
                owner = self._owners[key]
            else:
                owner = await self._lookup(key, stored.seq)
        if len(self._owners) > _OWNER_CACHE_LIMIT:
            self._owners.clear()
        self._owners[key] = owner
        return can_see_event(owner, self._user, is_admin=False)

    async def _lookup(self, key: tuple[str, str], seq: int) -> str | None:
        pool = self._svc.pool
        owner = await webhook_queries.owner_of(pool, *key)
        if owner is None and await self._svc.watermark.wait_for(seq, 5.0):
            owner = await webhook_queries.owner_of(pool, *key)
        return owner


def _aggregate(request: Request) -> str | None:
    value = request.query_params.get("aggregate")
    if value is not None and value not in AGGREGATES:
        raise ApiError(422, "Invalid aggregate", f"aggregate is one of {', '.join(AGGREGATES)}")
    return value


def _seq_param(raw: str | None, name: str) -> int | None:
    if raw is None or not raw.strip():
        return None
    try:
        value = int(raw)
    except ValueError as err:
        raise ApiError(422, f"Invalid {name}", f"{name} must be a stream sequence") from err
    if not 0 <= value < 2**63:
        raise ApiError(422, f"Invalid {name}", f"{name} must be a stream sequence (0 or more)")
    return value


def _resume_after(request: Request) -> int | None:
    raw = request.headers.get("last-event-id") or request.query_params.get("last_event_id")
    return _seq_param(raw, "Last-Event-ID")


_SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


def _sse(
    request: Request,
    start: int,
    subject: str,
    accept: Accept | None,
    *,
    end_on_terminal: bool,
) -> Response:
    if request.method == "HEAD":  # the headers alone: a stream would never end, nor would
        # its connection, so a client's next request on it hung
        return Response(media_type="text/event-stream", headers=_SSE_HEADERS)
    svc = services(request)
    heartbeat = svc.settings.sse_heartbeat_s

    async def body() -> AsyncIterator[bytes]:
        # read_from is an async generator: close it to unsubscribe.
        reader = svc.store.read_from(start, subject_filter=subject)
        pending: asyncio.Future[StoredEvent] = asyncio.ensure_future(anext(reader))
        stopping = asyncio.ensure_future(svc.stopping.wait())
        try:
            yield b"retry: 2000\n: connected\n\n"
            while True:
                watched: set[asyncio.Future[Any]] = {pending, stopping}
                done, _ = await asyncio.wait(
                    watched, timeout=heartbeat, return_when=asyncio.FIRST_COMPLETED
                )
                if stopping in done:
                    return  # the server is stopping; the client reconnects after `retry`
                if not done:
                    yield b": keep-alive\n\n"
                    continue
                stored = pending.result()
                pending = asyncio.ensure_future(anext(reader))
                if accept is not None and not await accept(stored):
                    continue
                yield event_frame(stored)
                if end_on_terminal and isinstance(stored.event, _TERMINAL):
                    return
        finally:
            stopping.cancel()
            pending.cancel()
            with contextlib.suppress(asyncio.CancelledError, StopAsyncIteration):
                await pending
            await reader.aclose()

    return StreamingResponse(body(), media_type="text/event-stream", headers=_SSE_HEADERS)


async def events(request: Request) -> Response:
    svc = services(request)
    caller = await svc.caller(request)
    aggregate = _aggregate(request)
    raw_id = request.query_params.get("id")
    resource_id = None if raw_id is None else checked_id(raw_id, "resource")
    globs = [g.strip() for g in request.query_params.get("type", "").split(",") if g.strip()]
    literal = len(globs) == 1 and not any(c in globs[0] for c in "*?[")
    if literal and any(c in _BAD_TOKEN for c in globs[0]):
        raise ApiError(422, "Invalid type", "type is an event type or a glob such as Job*")
    subject = f"{PREFIX}.{aggregate or '*'}.{resource_id or '*'}.{globs[0] if literal else '*'}"
    resume = _resume_after(request)
    if resume is not None:
        start = resume + 1
    else:
        from_seq = _seq_param(request.query_params.get("from_seq"), "from_seq")
        start = from_seq if from_seq is not None else await svc.store.stream_last_seq() + 1
    owned = None if caller.is_admin else _Ownership(svc, caller)

    async def accept(stored: StoredEvent) -> bool:
        if globs and not any(fnmatch.fnmatchcase(stored.event.type, g) for g in globs):
            return False
        return owned is None or await owned(stored)

    return _sse(request, start, subject, accept, end_on_terminal=False)


async def _resource_events(
    request: Request, aggregate: str, row: Any, resource_id: str
) -> Response:
    resume = _resume_after(request)
    start = 1 if resume is None else resume + 1
    finished = row.status in TERMINAL_JOB_STATUSES | TERMINAL_VERSION_STATUSES
    if finished and start > row.last_seq:
        return Response(status_code=204)  # nothing more will come: stop reconnecting
    return _sse(request, start, f"{PREFIX}.{aggregate}.{resource_id}.*", None, end_on_terminal=True)


async def job_events(request: Request) -> Response:
    svc = services(request)
    caller = await svc.caller(request)
    job_id = path_id(request, "job_id")
    job = await queries.get_job(svc.pool, job_id)
    if job is None or not can_see_job(job.owner, caller.user_id, caller.is_admin):
        raise ApiError(
            404, "Not found", f"job {job_id} not found; list your jobs with GET /v1/jobs"
        )
    return await _resource_events(request, "job", job, job_id)


async def version_events(request: Request) -> Response:
    svc = services(request)
    caller = await svc.caller(request)
    version_id = path_id(request, "version_id")
    version = await visible_version(svc, version_id, caller)
    return await _resource_events(request, "version", version, version_id)


routes = [
    Route("/v1/events", events, methods=["GET"]),
    Route("/v1/jobs/{job_id}/events", job_events, methods=["GET"]),
    Route("/v1/versions/{version_id}/events", version_events, methods=["GET"]),
]

_SSE = Reply(
    description="Server-Sent Events: `id: <seq>`, `event: <type>`, `data: <the event as "
    "JSON>` (see GET /asyncapi.json for each event's fields)",
    media_type="text/event-stream",
    schema={"type": "string"},
)
_RESUME = (
    Param(name="Last-Event-ID", where="header", description="resume after this sequence"),
    Param(name="last_event_id", description="as the Last-Event-ID header"),
)
_ENDED = Reply(description="The resource has ended and its last event was sent: stop")
_TAG = "events"

operations = [
    Operation(
        method="GET",
        path="/v1/events",
        name="events",
        summary="The caller's events, live (an admin's: everyone's)",
        tag=_TAG,
        params=(
            *_RESUME,
            Param(name="type", description="event types or globs, comma-separated (Job*)"),
            Param(name="aggregate", type=Aggregate, description="one kind of resource"),
            Param(name="id", description="one resource's id"),
            Param(
                name="from_seq",
                type=Annotated[int, Meta(ge=0, le=2**63 - 1)],
                description="start at this stream sequence (else: with the next event)",
            ),
        ),
        replies={200: _SSE},
    ),
    Operation(
        method="GET",
        path="/v1/jobs/{job_id}/events",
        name="job_events",
        summary="A job's events from its first; the stream ends after its last",
        tag=_TAG,
        params=(path_param("job_id", "job"), *_RESUME),
        replies={200: _SSE, 204: _ENDED},
    ),
    Operation(
        method="GET",
        path="/v1/versions/{version_id}/events",
        name="version_events",
        summary="A version's build events from its first; the stream ends after its last",
        tag=_TAG,
        params=(path_param("version_id", "version"), *_RESUME),
        replies={200: _SSE, 204: _ENDED},
    ),
]

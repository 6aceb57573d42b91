"""Following a version's build or a job live, from the API's Server-Sent Events
(`GET /v1/versions/{id}/events`, `GET /v1/jobs/{id}/events`): each event as it is
appended, the stream ending after the resource's terminal event. A dropped connection
is resumed after the last event seen (`Last-Event-ID`), as an EventSource does; a
`204` means nothing more will come."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import msgspec

from events import BuildFailed, JobCanceled, JobFailed, JobSucceeded, VersionBuilt
from services.cli._client import Api
from services.cli._errors import CliError

__all__ = ["TERMINAL", "resource_events"]

_RECONNECTS = 5
TERMINAL = frozenset(
    t.__name__ for t in (VersionBuilt, BuildFailed, JobSucceeded, JobFailed, JobCanceled)
)


class _Message(msgspec.Struct):
    id: int | None = None
    event: str = ""
    data: dict[str, Any] = {}


async def resource_events(api: Api, path: str) -> AsyncIterator[tuple[str, dict[str, Any]]]:
    """(event type, event) of `path` (…/events) until its terminal event."""
    last: int | None = None
    for _ in range(_RECONNECTS + 1):
        headers = {} if last is None else {"Last-Event-ID": str(last)}
        async with api.stream(path, headers) as resp:
            if resp.status == 204:
                return
            try:
                async for message in _messages(resp.content):
                    if message.id is not None:
                        last = message.id
                    yield message.event, message.data
                    if message.event in TERMINAL:
                        return
            except (aiohttp.ClientPayloadError, aiohttp.ClientConnectionError):
                pass  # cut off: reconnect after the last event
            # The server ended the stream before the terminal event (it is stopping):
            # reconnect after the last event, as an EventSource does.
    raise CliError(f"lost the event stream of {path} {_RECONNECTS} times: retry")


async def _messages(content: Any) -> AsyncIterator[_Message]:
    """SSE messages (the `id`, `event` and `data` fields; comments skipped)."""
    fields: dict[str, str] = {}
    async for raw in content:
        line = raw.decode("utf-8", errors="replace").rstrip("\r\n")
        if line:
            if not line.startswith(":"):
                name, _, value = line.partition(":")
                fields[name] = value.removeprefix(" ")
            continue
        if "data" in fields:
            yield _Message(
                id=int(fields["id"]) if fields.get("id", "").isdigit() else None,
                event=fields.get("event", ""),
                data=msgspec.json.decode(fields["data"]),
            )
        fields = {}

"""Following a version's build or a job live, from the API's Server-Sent Events
(`GET /v1/versions/{id}/events`, `GET /v1/jobs/{id}/events`): each event as it is
appended, the stream ending after the resource's terminal event. A dropped connection
is resumed after the last event seen (`Last-Event-ID`), as an EventSource does; a
`204` means nothing more will come."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import msgspec

from events import TERMINAL_JOB_EVENTS, BuildFailed, VersionBuilt
from services.cli._client import Api
from services.cli._errors import ApiUnreachable

__all__ = ["TERMINAL", "resource_events"]

_RETRY_S = 2.0  # the `retry:` the API's streams ask for
_DOWN_FOR_S = 60.0  # how long a follower waits for an API that went away
TERMINAL = frozenset(t.__name__ for t in (VersionBuilt, BuildFailed, *TERMINAL_JOB_EVENTS))


class _Message(msgspec.Struct):
    id: int | None = None
    event: str = ""
    data: dict[str, Any] = {}


async def resource_events(
    api: Api, path: str, say: Callable[[str], None]
) -> AsyncIterator[tuple[str, dict[str, Any]]]:
    """(event type, event) of `path` (…/events) until its terminal event; `say` tells
    the user when the API went away and is being waited for."""
    last: int | None = None
    down_since: float | None = None
    while True:
        headers = {} if last is None else {"Last-Event-ID": str(last)}
        try:
            async with api.stream(path, headers) as resp:
                down_since = None
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
        except ApiUnreachable:
            # Down (restarting, say) after it answered once: try again as an EventSource
            # would, for a while.
            now = time.monotonic()
            down_since = down_since or now
            if last is None or now - down_since > _DOWN_FOR_S:
                raise
            say(f"{api.url} is not answering: trying again every {_RETRY_S:g} s")
        # The stream ended before the terminal event (the server is stopping), or it
        # is down: reconnect after the last event, after the server's `retry` pause.
        await asyncio.sleep(_RETRY_S)


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

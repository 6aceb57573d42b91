"""The one ASGI middleware of commands (any method but GET/HEAD): the response carries
the key's `RateLimit-*` headers (the decision in `request.state.rate_limit`, see
`_rate_limit`), the key's slot in this process is released once the response is
sent, whatever happened (a handler may release it sooner, see `_key_slots`), and a body
from which nothing arrives for `body_idle_s` is answered 408 (a stalled upload held its
key's slot, and so every other command of the key, for as long as its connection
lived). Queries pass straight through. One layer for all three: each layer wrapping
`send` or `receive` costs every command a call per message."""

from __future__ import annotations

import asyncio

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from services.api._key_slots import SLOT_STATE
from services.api._rate_limit import RATE_STATE, RateDecision
from services.api.problems import ApiError

__all__ = ["CommandEdge"]

_LIMIT_HEADER = b"ratelimit-limit"  # Starlette's responses send header names in lower case


class CommandEdge:
    def __init__(self, app: ASGIApp, *, body_idle_s: float = 60.0) -> None:
        self.app = app
        self._body_idle_s = body_idle_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD"):
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                decision = (scope.get("state") or {}).get(RATE_STATE)
                if isinstance(decision, RateDecision):
                    headers = list(message.get("headers", ()))
                    if not any(name == _LIMIT_HEADER for name, _ in headers):  # a 429 has them
                        message = {**message, "headers": headers + decision.raw_headers()}
            await send(message)

        body_done = False

        async def receive_in_time() -> Message:
            nonlocal body_done
            if body_done:  # then `receive` waits for a disconnect: no deadline on that
                return await receive()
            try:
                async with asyncio.timeout(self._body_idle_s):
                    message = await receive()
            except TimeoutError as err:
                raise _stalled(self._body_idle_s) from err
            body_done = message["type"] != "http.request" or not message.get("more_body")
            return message

        try:
            await self.app(scope, receive_in_time, send_with_headers)
        finally:
            release = (scope.get("state") or {}).get(SLOT_STATE)
            if callable(release):
                release()


def _stalled(idle_s: float) -> ApiError:
    return ApiError(
        408,
        "Request timeout",
        f"nothing of the request's body arrived for {idle_s:g} s; send the request again "
        "(the operator's setting CLINAI_BODY_IDLE_TIMEOUT_S)",
        headers={"Connection": "close"},
    )

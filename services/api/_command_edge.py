"""The one ASGI middleware of commands (any method but GET/HEAD): the response carries
the key's `RateLimit-*` headers (the decision in `request.state.rate_limit`, see
`_rate_limit`), and the key's slot in this process is released once the response is
sent, whatever happened (a handler may release it sooner, see `_key_slots`). Queries
pass straight through. One layer for both: each layer wrapping `send` costs every
command a call per message."""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from services.api._key_slots import SLOT_STATE
from services.api._rate_limit import RATE_STATE, RateDecision

__all__ = ["CommandEdge"]

_LIMIT_HEADER = b"ratelimit-limit"  # Starlette's responses send header names in lower case


class CommandEdge:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

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

        try:
            await self.app(scope, receive, send_with_headers)
        finally:
            release = (scope.get("state") or {}).get(SLOT_STATE)
            if callable(release):
                release()

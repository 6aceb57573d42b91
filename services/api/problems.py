"""Errors as `application/problem+json` (RFC 9457): each says what happened and what to do."""

from __future__ import annotations

from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

from events import ClinaiError

__all__ = ["UNSTORABLE_HINT", "ApiError", "joined_detail", "problem_response"]

# What to do about a value Postgres or orjson cannot store (`events.text`).
UNSTORABLE_HINT = (
    "change that value (remove a NUL character or lone surrogate, send a large integer as "
    "a string) and retry"
)


class ApiError(ClinaiError):
    """Raised by handlers; rendered as a problem document."""

    def __init__(
        self,
        status: int,
        title: str,
        detail: str,
        *,
        headers: dict[str, str] | None = None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.title = title
        self.detail = detail
        self.headers = headers or {}
        self.extra = extra or {}


def joined_detail(message: str, hint: str) -> str:
    """What went wrong and what to do, as one punctuated detail: a hint written as a
    sentence follows a full stop ("… not a readable zip archive. Upload a .zip file…"),
    one that is not follows a colon ("model m not found: check the id…")."""
    message, hint = message.strip(), hint.strip()
    if not hint or not message:
        return message or hint
    if message[-1] in ".!?:;":
        return f"{message} {hint}"
    return f"{message}{'. ' if hint[0].isupper() else ': '}{hint}"


def problem_response(
    status: int,
    title: str,
    detail: str,
    *,
    headers: dict[str, str] | None = None,
    extra: dict[str, Any] | None = None,
) -> Response:
    body = {"type": "about:blank", "title": title, "status": status, "detail": detail}
    if extra:
        body.update(extra)
    return Response(
        orjson.dumps(body),
        status_code=status,
        headers=headers,
        media_type="application/problem+json",
    )


async def handle_api_error(request: Request, exc: Exception) -> Response:
    if not isinstance(exc, ApiError):  # pragma: no cover - registered for ApiError only
        raise exc
    return problem_response(exc.status, exc.title, exc.detail, headers=exc.headers, extra=exc.extra)

"""Rendering a dashboard page: the templates (Jinja2, autoescaped), the security headers
every page carries, and the signed-in person of a request (or a redirect to sign in)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.templating import Jinja2Templates

from services.api.sessions import COOKIE, Session
from services.api.wiring import services

__all__ = ["SECURITY_HEADERS", "PageHandler", "Pages", "secure_cookies", "signed_in"]

_HERE = Path(__file__).parent

# No inline script or style anywhere: the pages load our own files from /static only.
# Output images may come from the blob store's signed URLs (another origin with S3).
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; "
        "img-src 'self' data: blob: http: https:; connect-src 'self'; object-src 'none'; "
        "base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


def secure_cookies(request: Request) -> bool:
    """Cookies are Secure when the page is served over HTTPS (directly, or as the
    operator's public URL says)."""
    public = services(request).settings.public_url or ""
    return request.url.scheme == "https" or public.startswith("https://")


PageHandler = Callable[[Request, Session], Awaitable[Response]]


def signed_in(handler: PageHandler) -> Callable[[Request], Awaitable[Response]]:
    """An endpoint for a page that needs a signed-in person: `handler` gets the session;
    without one, the answer is a redirect to sign in (and back here afterwards)."""

    async def endpoint(request: Request) -> Response:
        token = request.cookies.get(COOKIE)
        session = None if not token else await services(request).sessions.find(token)
        if session is None:
            target = request.url.path
            return RedirectResponse(f"/sign-in?next={quote(target)}", status_code=303)
        return await handler(request, session)

    return endpoint


class Pages:
    """The templates, built once in `dashboard_routes`."""

    def __init__(self) -> None:
        self.templates = Jinja2Templates(directory=_HERE / "templates")

    def render(
        self,
        request: Request,
        name: str,
        context: dict[str, Any],
        *,
        session: Session | None,
        status: int = 200,
    ) -> Response:
        return self.templates.TemplateResponse(
            request,
            name,
            {"session": session, **context},
            status_code=status,
            headers=SECURITY_HEADERS,
        )

"""The dashboard: ClinAI in the browser for people, served by the API itself.

Server-rendered pages (Jinja2 through Starlette's templates, autoescaped) with our own
small scripts for the live parts (Server-Sent Events, upload progress); no build step,
no third-party front-end code, nothing from a CDN. People sign in with a password
(`signin`; `services.api.sessions`, `services.api.sign_in_throttle`); the pages call
the JSON API with the session cookie and its CSRF token (`services.api.auth`)."""

from __future__ import annotations

from pathlib import Path

from starlette.routing import BaseRoute, Mount
from starlette.staticfiles import StaticFiles

from services.api.dashboard._render import Pages
from services.api.dashboard.pages import page_routes
from services.api.dashboard.signin import sign_in_routes

__all__ = ["dashboard_routes"]


def dashboard_routes() -> list[BaseRoute]:
    """The pages and their files, as one group to put last in the app's routes: HTML for
    people, apart from the JSON API that /openapi.json describes."""
    pages = Pages()
    static = StaticFiles(directory=Path(__file__).parent / "static")
    routes = [
        *sign_in_routes(pages),
        *page_routes(pages),
        Mount("/static", app=static, name="static"),
    ]
    return [Mount("", routes=routes, name="dashboard")]

"""The dashboard's pages. Each reads what it shows through the same queries and access
rules as the JSON API (a model or version the person may not see is a 404 page, as the
API's 404); the live parts and every change go through the JSON API from the page's
script, with the session's CSRF token."""

from __future__ import annotations

from datetime import UTC, date, datetime, time
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from events.ids import is_valid_id
from projections import account_queries, queries, webhook_queries
from services.api.auth import Principal
from services.api.dashboard._render import Pages, signed_in
from services.api.sessions import Session
from services.api.wiring import services, visible_model
from services.domain.event_types import WEBHOOK_TYPES
from services.domain.views import model_view, version_view

__all__ = ["page_routes"]

_STATUS_MARKS = {
    "uploaded": "○",
    "building": "◐",
    "ready": "✓",
    "failed": "✗",
    "queued": "○",
    "running": "◐",
    "succeeded": "✓",
    "canceled": "⊘",
}


_JOB_STATUSES = ("queued", "running", "succeeded", "failed", "canceled")


def _day(value: str | None) -> datetime | None:
    """A day from a date field (YYYY-MM-DD), at its start in UTC; None if not one."""
    try:
        return datetime.combine(date.fromisoformat(value or ""), time(), tzinfo=UTC)
    except ValueError:
        return None


def _principal(session: Session) -> Principal:
    return Principal(user_id=session.user_id, key_id=session.id, is_admin=session.is_admin)


class PageViews:
    def __init__(self, pages: Pages) -> None:
        self._pages = pages

    def _render(
        self, request: Request, session: Session, name: str, context: dict[str, Any]
    ) -> Response:
        return self._pages.render(
            request, name, {"marks": _STATUS_MARKS, **context}, session=session
        )

    def _not_found(self, request: Request, session: Session, what: str) -> Response:
        return self._pages.render(
            request, "not_found.html", {"what": what}, session=session, status=404
        )

    async def models(self, request: Request, session: Session) -> Response:
        svc = services(request)
        page = await queries.list_models(svc.pool, session.user_id, session.is_admin, limit=200)
        return self._render(
            request, session, "models.html", {"models": [model_view(m) for m in page.items]}
        )

    async def model(self, request: Request, session: Session) -> Response:
        svc = services(request)
        model_id = str(request.path_params["model_id"])
        model = (
            await visible_model(svc, model_id, _principal(session))
            if is_valid_id(model_id)
            else None
        )
        if model is None:
            return self._not_found(request, session, "model")
        versions = await queries.list_versions(svc.pool, model.id)
        return self._render(
            request,
            session,
            "model.html",
            {
                "model": model_view(model),
                "versions": [version_view(v) for v in reversed(versions)],
                "owned": model.owner == session.user_id or session.is_admin,
            },
        )

    async def _version(self, request: Request, session: Session) -> tuple[Any, Any] | None:
        svc = services(request)
        version_id = str(request.path_params["version_id"])
        if not is_valid_id(version_id):
            return None
        version = await queries.get_version(svc.pool, version_id)
        if version is None:
            return None
        model = await visible_model(svc, version.model_id, _principal(session))
        return None if model is None else (version, model)

    async def version(self, request: Request, session: Session) -> Response:
        found = await self._version(request, session)
        if found is None:
            return self._not_found(request, session, "version")
        version, model = found
        svc = services(request)
        jobs = await queries.list_jobs(svc.pool, owner=session.user_id, model_id=model.id)
        first = [j for j in jobs.items if j.version_id == version.id][:10]
        return self._render(
            request,
            session,
            "version.html",
            {
                "version": version_view(version),
                "model": model_view(model),
                "jobs": first,
            },
        )

    async def run(self, request: Request, session: Session) -> Response:
        found = await self._version(request, session)
        if found is None:
            return self._not_found(request, session, "version")
        version, model = found
        return self._render(
            request,
            session,
            "run.html",
            {"version": version_view(version), "model": model_view(model)},
        )

    async def keys(self, request: Request, session: Session) -> Response:
        keys = await queries.list_api_keys(services(request).pool, session.user_id)
        return self._render(request, session, "keys.html", {"keys": keys})

    async def jobs(self, request: Request, session: Session) -> Response:
        """Your jobs, newest first, by status and model."""
        svc = services(request)
        status = request.query_params.get("status") or None
        model_id = request.query_params.get("model") or None
        if status not in (None, *_JOB_STATUSES):
            status = None
        if model_id is not None and not is_valid_id(model_id):
            model_id = None
        since = _day(request.query_params.get("since"))
        page = await queries.list_jobs(
            svc.pool,
            owner=session.user_id,
            status=status,
            model_id=model_id,
            since=since,
            limit=100,
        )
        models = await queries.list_models(svc.pool, session.user_id, session.is_admin, limit=200)
        names = {m.id: m.name for m in models.items}
        return self._render(
            request,
            session,
            "jobs.html",
            {
                "jobs": page.items,
                "names": names,
                "statuses": _JOB_STATUSES,
                "status": status,
                "model_id": model_id,
                "since": since.date().isoformat() if since else "",
            },
        )

    async def webhooks(self, request: Request, session: Session) -> Response:
        hooks = await webhook_queries.list_webhooks(services(request).pool, session.user_id)
        return self._render(
            request, session, "webhooks.html", {"hooks": hooks, "types": WEBHOOK_TYPES}
        )

    async def admin(self, request: Request, session: Session) -> Response:
        if not session.is_admin:
            return self._not_found(request, session, "page")
        users = await account_queries.list_users(services(request).pool)
        return self._render(request, session, "admin.html", {"users": users})


def page_routes(pages: Pages) -> list[BaseRoute]:
    views = PageViews(pages)
    return [
        Route("/models", signed_in(views.models), methods=["GET"]),
        Route("/models/{model_id}", signed_in(views.model), methods=["GET"]),
        Route("/versions/{version_id}", signed_in(views.version), methods=["GET"]),
        Route("/versions/{version_id}/run", signed_in(views.run), methods=["GET"]),
        Route("/jobs", signed_in(views.jobs), methods=["GET"]),
        Route("/keys", signed_in(views.keys), methods=["GET"]),
        Route("/webhooks", signed_in(views.webhooks), methods=["GET"]),
        Route("/admin", signed_in(views.admin), methods=["GET"]),
    ]

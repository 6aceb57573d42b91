"""The command/query API: a Starlette app wired through its constructor and lifespan."""

from __future__ import annotations

import contextlib
import logging
import uuid
from collections.abc import AsyncIterator

import asyncpg
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from events import ConcurrencyConflictError, StreamUnavailableError
from projections.db import create_pool
from projections.queries import InvalidCursorError
from projections.watermark import ProjectionWatermark
from services.api import (
    routes_events,
    routes_jobs,
    routes_keys,
    routes_limits,
    routes_models,
    routes_webhooks,
)
from services.api._key_slots import ReleaseKeySlot
from services.api._rate_limit import RateLimitHeaders
from services.api.deps import ApiServices, json_response, services
from services.api.problems import ApiError, handle_api_error, problem_response
from services.blobstore import SIGNED_BLOB_ROUTE, BlobStore, FileBlobStore, signed_blob_endpoint
from services.notifier.commands import WebhookCommands
from services.notifier.destinations import DestinationPolicy
from services.notifier.signing import master_key
from services.resources import connect_nats, open_blob_store, open_event_store
from services.settings import Settings, SettingsError

__all__ = ["begin_stop", "create_app"]

log = logging.getLogger("clinai.api")


async def healthz(request: Request) -> Response:
    return json_response({"status": "ok"})


async def readyz(request: Request) -> Response:
    svc = services(request)
    problems = []
    if not svc.store_connected():
        problems.append("NATS is not connected")
    try:
        async with svc.pool.acquire() as conn:
            await conn.fetchval("select 1")
    except (OSError, asyncpg.PostgresError) as err:
        problems.append(f"Postgres is not reachable: {err}")
    if problems:
        return problem_response(503, "Not ready", "; ".join(problems), headers={"Retry-After": "1"})
    return json_response(
        {
            "status": "ready",
            "projection_seq": svc.watermark.checkpoint,
            "long_polls_waiting": svc.job_waits.waiting,
        }
    )


async def _http_exception(request: Request, exc: Exception) -> Response:
    if not isinstance(exc, HTTPException):  # pragma: no cover
        raise exc
    detail = {404: "no such endpoint; see the README for the API", 405: "method not allowed"}
    return problem_response(
        exc.status_code,
        "Not found" if exc.status_code == 404 else "Request refused",
        detail.get(exc.status_code, str(exc.detail)),
        headers=dict(exc.headers or {}),
    )


async def _unavailable(request: Request, exc: Exception) -> Response:
    return problem_response(
        503,
        "Event log unavailable",
        "the event log did not answer in time; retry with the same Idempotency-Key",
        headers={"Retry-After": "1"},
    )


async def _conflict(request: Request, exc: Exception) -> Response:
    return problem_response(
        409, "Conflict", "the resource changed concurrently; re-read it and retry"
    )


async def _bad_cursor(request: Request, exc: Exception) -> Response:
    return problem_response(422, "Invalid cursor", f"{exc}")


async def _internal(request: Request, exc: Exception) -> Response:
    incident = str(uuid.uuid4())
    log.exception(
        "unhandled error (incident %s) on %s %s", incident, request.method, request.url.path
    )
    return problem_response(
        500,
        "Internal error",
        f"something went wrong on our side (incident {incident}); retry, and report the "
        "incident id if it persists",
    )


def create_app(settings: Settings, *, blobs: BlobStore | None = None) -> Starlette:
    if settings.database_url is None:
        raise SettingsError("CLINAI_DATABASE_URL is not set: point it at Postgres")
    database_url = settings.database_url
    blob_store = blobs or open_blob_store(settings)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        nc = await connect_nats(settings, name="api")
        pool = await create_pool(database_url, reset_sessions=False)  # queries only
        watermark = await ProjectionWatermark.open(database_url)
        try:
            store = await open_event_store(settings, nc)
            app.state.services = ApiServices(
                settings=settings,
                store=store,
                pool=pool,
                blobs=blob_store,
                watermark=watermark,
                nc=nc,
                webhooks=WebhookCommands(
                    store,
                    master_key(settings),
                    policy=DestinationPolicy.from_setting(settings.webhook_allow_networks),
                    rotation_grace_s=settings.webhook_rotation_grace_s,
                ),
            )
            await app.state.services.rate_limiter.open()
            yield
        finally:
            await watermark.stop()
            await pool.close()
            await nc.drain()
            await blob_store.close()

    routes = [
        Route("/healthz", healthz, methods=["GET"]),
        Route("/readyz", readyz, methods=["GET"]),
        *routes_models.routes,
        *routes_jobs.routes,
        *routes_keys.routes,
        *routes_limits.routes,
        *routes_webhooks.routes,
        *routes_events.routes,
    ]
    if isinstance(blob_store, FileBlobStore):  # S3 serves its own presigned URLs
        routes.append(Route(SIGNED_BLOB_ROUTE, signed_blob_endpoint(blob_store), methods=["GET"]))
    return Starlette(
        routes=routes,
        lifespan=lifespan,
        middleware=[Middleware(ReleaseKeySlot), Middleware(RateLimitHeaders)],
        exception_handlers={
            ApiError: handle_api_error,
            HTTPException: _http_exception,
            StreamUnavailableError: _unavailable,
            ConcurrencyConflictError: _conflict,
            InvalidCursorError: _bad_cursor,
            Exception: _internal,
        },
    )


def begin_stop(app: Starlette) -> None:
    """The server is stopping: long polls answer with what they have, event streams end."""
    services: ApiServices | None = getattr(app.state, "services", None)
    if services is not None:
        services.begin_stop()

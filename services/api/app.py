"""The command/query API: a Starlette app wired through its constructor and lifespan."""

from __future__ import annotations

import asyncio
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

from events import ConcurrencyConflictError, EventTooLargeError, UnstorableTextError
from projections.db import create_pool
from projections.queries import InvalidCursorError
from projections.watermark import ProjectionWatermark
from services.api import (
    readiness,
    routes_events,
    routes_jobs,
    routes_keys,
    routes_limits,
    routes_models,
    routes_webhooks,
)
from services.api._input_sweep import InputSweep
from services.api._key_slots import ReleaseKeySlot
from services.api._rate_limit import RateLimitHeaders
from services.api._unavailable import unavailable_handlers
from services.api.deps import ApiServices, json_response, services
from services.api.problems import ApiError, handle_api_error, problem_response
from services.api.routes_blobs import blob_routes
from services.blobstore import BlobStore
from services.notifier.commands import WebhookCommands
from services.notifier.destinations import DestinationPolicy
from services.notifier.signing import master_key
from services.outages import Outage, report_library_failures
from services.resources import connect_nats, open_blob_store, open_event_store
from services.settings import Settings, SettingsError

__all__ = ["begin_stop", "create_app"]

log = logging.getLogger("clinai.api")

_HEALTH_TIMEOUT_S = 2.0


async def _dependency_problems(svc: ApiServices) -> list[str]:
    problems = []
    if not svc.store_connected():
        problems.append("NATS is not connected")
    try:
        async with asyncio.timeout(_HEALTH_TIMEOUT_S), svc.pool.acquire() as conn:
            await conn.fetchval("select 1")
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError) as err:
        problems.append(f"Postgres is not reachable: {err or type(err).__name__}")
    return problems


async def healthz(request: Request) -> Response:
    """Whether the stack can work now: this process answers and reaches NATS and
    Postgres. 503 names what is down (under `clinai up` it is restarted by itself;
    elsewhere, an operator's alert). Readiness (`/readyz`) asks more: whether a command
    will be appended and a job picked up."""
    problems = await _dependency_problems(services(request))
    if problems:
        return problem_response(503, "Unhealthy", "; ".join(problems), headers={"Retry-After": "1"})
    return json_response({"status": "ok"})


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


async def _conflict(request: Request, exc: Exception) -> Response:
    return problem_response(
        409, "Conflict", "the resource changed concurrently; re-read it and retry"
    )


async def _too_large(request: Request, exc: Exception) -> Response:
    size = exc.size if isinstance(exc, EventTooLargeError) else 0
    return problem_response(
        413,
        "Request too large",
        f"the request would record an event of {size} bytes, more than the event log "
        "takes; send shorter fields",
    )


async def _unstorable(request: Request, exc: Exception) -> Response:
    where = exc.where if isinstance(exc, UnstorableTextError) else str(exc)
    return problem_response(
        422,
        "Invalid text",
        f"{where}, which cannot be stored; remove the NUL character or lone surrogate and retry",
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
        # Each dependency's outage is logged once down and once back: exception handlers
        # report a request that failed on one with `app.state.outages[name].failed(err)`.
        nats_outage = Outage("NATS", log)
        postgres = Outage("Postgres", log)
        app.state.outages = {"NATS": nats_outage, "Postgres": postgres}
        nc = await connect_nats(settings, name="api", outage=nats_outage)
        report_library_failures(logging.getLogger("asyncpg.pool"), postgres)
        pool = await create_pool(  # queries only
            database_url, reset_sessions=False, on_connect=postgres.recovered
        )
        watermark = await ProjectionWatermark.open(database_url)
        try:
            store = await open_event_store(settings, nc)
            app.state.readiness = readiness.Readiness.from_settings(settings, nc, pool)
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
            sweep = InputSweep(
                blob_store,
                store,
                pool,
                min_age_s=settings.input_orphan_age_s,
                interval_s=settings.input_sweep_interval_s,
            )
            app.state.input_sweep = sweep
            sweeping = asyncio.create_task(sweep.run())
            await app.state.services.rate_limiter.open()
            try:
                yield
            finally:
                sweep.close()
                sweeping.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await sweeping
        finally:
            await watermark.stop()
            await pool.close()
            await nc.drain()
            await blob_store.close()

    routes = [
        Route("/healthz", healthz, methods=["GET"]),
        Route("/readyz", readiness.readyz, methods=["GET"]),
        *routes_models.routes,
        *routes_jobs.routes,
        *routes_keys.routes,
        *routes_limits.routes,
        *routes_webhooks.routes,
        *routes_events.routes,
        *blob_routes(blob_store),
    ]
    return Starlette(
        routes=routes,
        lifespan=lifespan,
        middleware=[Middleware(ReleaseKeySlot), Middleware(RateLimitHeaders)],
        exception_handlers={
            ApiError: handle_api_error,
            HTTPException: _http_exception,
            ConcurrencyConflictError: _conflict,
            EventTooLargeError: _too_large,
            UnstorableTextError: _unstorable,
            InvalidCursorError: _bad_cursor,
            **unavailable_handlers(fallback=_internal),
            Exception: _internal,
        },
    )


def begin_stop(app: Starlette) -> None:
    """The server is stopping: long polls answer with what they have, event streams end."""
    services: ApiServices | None = getattr(app.state, "services", None)
    if services is not None:
        services.begin_stop()

"""The command/query API: a Starlette app wired through its constructor and lifespan."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

import asyncpg
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from projections.db import create_pool
from projections.watermark import ProjectionWatermark
from services.api import (
    asyncapi,
    readiness,
    routes_accounts,
    routes_blobs,
    routes_docs,
    routes_events,
    routes_jobs,
    routes_keys,
    routes_limits,
    routes_metrics,
    routes_models,
    routes_uploads,
    routes_webhooks,
)
from services.api._command_edge import CommandEdge
from services.api._deadline_sweep import DeadlineSweep
from services.api._input_sweep import InputSweep
from services.api.asyncapi import asyncapi_route, clinai_version
from services.api.dashboard import dashboard_routes
from services.api.error_handlers import exception_handlers
from services.api.openapi import openapi_document
from services.api.openapi_spec import Operation
from services.api.problems import problem_response
from services.api.replies import Health
from services.api.routes_blobs import blob_routes
from services.api.routes_metrics import metrics_route
from services.api.wiring import ApiServices, json_response, services
from services.blobstore import BlobStore
from services.domain.destinations import DestinationPolicy
from services.domain.signing import master_key
from services.domain.webhooks import WebhookCommands
from services.infra.connections import (
    connect_nats,
    open_blob_store,
    open_event_store,
    report_blob_store,
)
from services.metrics import HttpMetrics, ServiceMetrics, serving_metrics
from services.outages import Outage, report_library_failures
from services.settings import Settings, SettingsError

__all__ = ["OPERATIONS", "begin_stop", "create_app"]

log = logging.getLogger("clinai.api")

_HEALTH_TIMEOUT_S = 2.0

# What /openapi.json describes: an operation for each route below (tests/api/test_openapi.py).
OPERATIONS: list[Operation] = [
    *readiness.operations,
    *routes_models.operations,
    *routes_jobs.operations,
    *routes_uploads.operations,
    *routes_keys.operations,
    *routes_accounts.operations,
    *routes_limits.operations,
    *routes_webhooks.operations,
    *routes_events.operations,
    *asyncapi.operations,
    *routes_metrics.operations,
    *routes_blobs.operations,
    *routes_docs.operations,
]


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
    return json_response(Health(status="ok"))


def create_app(settings: Settings, *, blobs: BlobStore | None = None) -> Starlette:
    if settings.database_url is None:
        raise SettingsError("CLINAI_DATABASE_URL is not set: point it at Postgres")
    database_url = settings.database_url
    blob_store = blobs or open_blob_store(settings)
    metrics = ServiceMetrics("api")

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
            await report_blob_store(blob_store, log)
            app.state.readiness = readiness.Readiness.from_settings(settings, nc, pool, blob_store)
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
            upload_sweep = InputSweep(
                blob_store,
                store,
                pool,
                min_age_s=settings.upload_ttl_s + routes_uploads.SWEEP_GRACE_S,
                interval_s=settings.input_sweep_interval_s,
                prefix=routes_uploads.UPLOAD_PREFIX,
                job_of=routes_uploads.upload_job_of_key,
            )
            deadlines = DeadlineSweep(
                app.state.services.commands, pool, interval_s=settings.deadline_sweep_interval_s
            )
            sweeping = asyncio.create_task(sweep.run())
            sweeping_uploads = asyncio.create_task(upload_sweep.run())
            rate_limiter = app.state.services.rate_limiter
            await rate_limiter.open()
            await app.state.services.sessions.open()
            await app.state.services.sign_in_throttle.open()
            giving_back = asyncio.create_task(rate_limiter.run())
            aborting = asyncio.create_task(deadlines.run())
            try:
                async with serving_metrics(metrics, settings):
                    yield
            finally:
                sweep.close()
                for task in (sweeping, sweeping_uploads, giving_back, aborting):
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await task
                await rate_limiter.close()
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
        *routes_uploads.routes,
        *routes_keys.routes,
        *routes_accounts.routes,
        *routes_limits.routes,
        *routes_webhooks.routes,
        *routes_events.routes,
        asyncapi_route(settings.stream_name),
        metrics_route(metrics),
        *blob_routes(blob_store),
        *routes_docs.docs_routes(openapi_document(OPERATIONS, version=clinai_version())),
        *dashboard_routes(),
    ]
    return Starlette(
        routes=routes,
        lifespan=lifespan,
        middleware=[
            Middleware(HttpMetrics, metrics=metrics),
            Middleware(CommandEdge, body_idle_s=settings.body_idle_timeout_s),
        ],
        exception_handlers=exception_handlers(),
    )


def begin_stop(app: Starlette) -> None:
    """The server is stopping: long polls answer with what they have, event streams end."""
    services: ApiServices | None = getattr(app.state, "services", None)
    if services is not None:
        services.begin_stop()

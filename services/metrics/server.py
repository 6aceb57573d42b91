"""`/metrics` on a port of its own (`CLINAI_METRICS_PORT`), on the service's event loop:
aiohttp's server, so probes read JetStream and Postgres with the service's own clients."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from aiohttp import web

from events import ClinaiError
from services.metrics.registry import CONTENT_TYPE, ServiceMetrics
from services.settings import Settings

__all__ = ["MetricsPortError", "metrics_server", "serving_metrics"]


class MetricsPortError(ClinaiError):
    """The metrics port cannot be listened on (taken by another process)."""


@contextlib.asynccontextmanager
async def metrics_server(metrics: ServiceMetrics, host: str, port: int) -> AsyncIterator[int]:
    """Serve `GET /metrics` on `host:port` inside the context; yields the port (the one
    chosen when `port` is 0). No authentication: bind it to a private interface."""

    async def scrape(_: web.Request) -> web.Response:
        body = await metrics.exposition()
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE})

    app = web.Application()
    app.router.add_get("/metrics", scrape)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port, reuse_address=True)
        try:
            await site.start()
        except OSError as err:
            raise MetricsPortError(
                f"{metrics.service}: cannot serve metrics on {host}:{port} ({err.strerror})",
                hint="give each process on a host its own CLINAI_METRICS_PORT, or leave it "
                "unset to serve no metrics port",
            ) from err
        addresses = runner.addresses
        yield int(addresses[0][1]) if addresses else port
    finally:
        await runner.cleanup()


@contextlib.asynccontextmanager
async def serving_metrics(metrics: ServiceMetrics, settings: Settings) -> AsyncIterator[None]:
    """`metrics_server` on `CLINAI_METRICS_HOST:CLINAI_METRICS_PORT`, or nothing when no
    metrics port is set."""
    if settings.metrics_port is None:
        yield
        return
    async with metrics_server(metrics, settings.metrics_host, settings.metrics_port):
        yield

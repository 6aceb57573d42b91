"""The builder service: a durable consumer of `VersionUploaded` that builds each
version into a runnable artifact (or reuses an identical package's artifact)."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from events.subjects import PREFIX
from services.builder._handler import BuildHandler
from services.builder._reuse import LogArtifactIndex
from services.infra.connections import (
    connect_nats,
    open_blob_store,
    open_event_store,
    report_blob_store,
)
from services.infra.runtime_factory import make_runtime, service_work_dir
from services.metrics import BuildMetrics, ConsumerProbe, ServiceMetrics, serving_metrics
from services.runtimes.base import Runtime
from services.settings import Settings
from services.subscribers import (
    ConsumerOptions,
    Durable,
    durable_route,
    quietly,
    stop_on_signals,
    subscribed,
)

__all__ = ["BUILDER_CONCURRENCY", "BUILDER_DURABLE", "BUILDER_SUBJECTS", "run_builder"]

log = logging.getLogger("clinai.builder")

BUILDER_DURABLE = "builder"
BUILDER_SUBJECTS = (f"{PREFIX}.version.*.VersionUploaded",)
BUILDER_CONCURRENCY = 2
# The executor's process runtime uses the default range (62000 + workers_total + 16).
BUILDER_SANDBOX_UID_BASE = 61000


async def run_builder(
    settings: Settings,
    *,
    runtime: Runtime | None = None,
    stop: asyncio.Event | None = None,
    consumer: ConsumerOptions | None = None,
    concurrency: int = BUILDER_CONCURRENCY,
) -> None:
    """Run until `stop` is set (or SIGTERM/SIGINT when no `stop` is given). A given
    `runtime` is used and left open; otherwise one is made from the settings and closed."""
    stop = stop or stop_on_signals()
    async with contextlib.AsyncExitStack() as stack:
        nc = await connect_nats(settings, name="builder")
        stack.push_async_callback(quietly, nc.drain)
        blobs = open_blob_store(settings)
        stack.push_async_callback(blobs.close)
        store = await open_event_store(settings, nc)
        await report_blob_store(blobs, log)
        if runtime is None:
            runtime = await make_runtime(settings, sandbox_uid_base=BUILDER_SANDBOX_UID_BASE)
            stack.push_async_callback(runtime.close)
        index = LogArtifactIndex(nc, store)
        await index.start()
        stack.push_async_callback(index.close)
        metrics = ServiceMetrics("builder")
        handler = BuildHandler(
            store=store,
            blobs=blobs,
            runtime=runtime,
            index=index,
            work_dir=service_work_dir(settings, "builder"),
            metrics=BuildMetrics(metrics),
        )
        ConsumerProbe(metrics, nc.jetstream(), settings.stream_name, BUILDER_DURABLE)
        await stack.enter_async_context(serving_metrics(metrics, settings))
        durable = Durable(
            stream=settings.stream_name,
            name=BUILDER_DURABLE,
            subjects=BUILDER_SUBJECTS,
            concurrency=concurrency,
            options=consumer or ConsumerOptions(),
        )
        await stack.enter_async_context(subscribed(nc, durable, [durable_route(handler, durable)]))
        log.info("builder consuming %s (runtime %s)", BUILDER_SUBJECTS, runtime.name)
        await stop.wait()

"""The builder service: a durable consumer of `VersionUploaded` that builds each
version into a runnable artifact (or reuses an identical package's artifact)."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from events.subjects import PREFIX
from services.builder._handler import BuildHandler
from services.builder._reuse import LogArtifactIndex
from services.consumer import ConsumerOptions, run_consumer, stop_on_signals
from services.infra.connections import (
    connect_nats,
    open_blob_store,
    open_event_store,
    report_blob_store,
)
from services.infra.runtime_factory import make_runtime, service_work_dir
from services.runtimes.base import Runtime
from services.settings import Settings

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
    nc = await connect_nats(settings, name="builder")
    own_runtime = runtime is None
    index: LogArtifactIndex | None = None
    blobs = open_blob_store(settings)
    try:
        store = await open_event_store(settings, nc)
        await report_blob_store(blobs, log)
        if runtime is None:
            runtime = await make_runtime(settings, sandbox_uid_base=BUILDER_SANDBOX_UID_BASE)
        index = LogArtifactIndex(nc, store)
        await index.start()
        handler = BuildHandler(
            store=store,
            blobs=blobs,
            runtime=runtime,
            index=index,
            work_dir=service_work_dir(settings, "builder"),
        )
        log.info("builder consuming %s (runtime %s)", BUILDER_SUBJECTS, runtime.name)
        await run_consumer(
            nc,
            stream=settings.stream_name,
            durable=BUILDER_DURABLE,
            filter_subjects=BUILDER_SUBJECTS,
            handler=handler,
            concurrency=concurrency,
            stop=stop,
            options=consumer,
        )
    finally:
        if index is not None:
            await index.close()
        if own_runtime and runtime is not None:
            await runtime.close()
        await blobs.close()
        with contextlib.suppress(Exception):
            await nc.drain()
